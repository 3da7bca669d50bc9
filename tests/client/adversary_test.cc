// SPDX-License-Identifier: Apache-2.0
// The adversary modes used in robustness experiments change an update exactly as documented.
#include "ubcp/client/adversary.h"

#include <gtest/gtest.h>

#include <cmath>

namespace ubcp::client {
namespace {

common::TensorList Delta() {
  common::NamedTensor t{"w", common::TensorKind::kF32, {4}, {0.5f, -1.0f, 2.0f, 0.0f}, {}};
  return {t};
}

TEST(AdversaryTest, ModesTransformTheUpdateAsDocumented) {
  common::TensorList d = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kHonest, 10}, 1, d));
  EXPECT_EQ(d[0].f32, Delta()[0].f32);

  d = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kSignFlip, 10}, 1, d));
  EXPECT_EQ(d[0].f32, (std::vector<float>{-5.0f, 10.0f, -20.0f, 0.0f}));

  d = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kScale, 3}, 1, d));
  EXPECT_EQ(d[0].f32, (std::vector<float>{1.5f, -3.0f, 6.0f, 0.0f}));

  d = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kZeros, 1}, 1, d));
  EXPECT_EQ(d[0].f32, (std::vector<float>{0, 0, 0, 0}));

  // Noise: seeded, and far larger than the honest update with scale 100.
  common::TensorList a = Delta(), b = Delta(), c = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kNoise, 100}, 7, a));
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kNoise, 100}, 7, b));
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kNoise, 100}, 8, c));
  EXPECT_EQ(a[0].f32, b[0].f32);
  EXPECT_NE(a[0].f32, c[0].f32);
  double norm = 0;
  for (float v : a[0].f32) norm += v * v;
  EXPECT_GT(std::sqrt(norm), 10 * std::sqrt(0.25 + 1 + 4));
}

TEST(AdversaryTest, LabelFlipPoisonsOnlyTheLabels) {
  common::TensorList data = {
      common::NamedTensor{"x", common::TensorKind::kU8, {3, 1}, {}, {1, 2, 3}},
      common::NamedTensor{"y", common::TensorKind::kU8, {3}, {}, {0, 4, 9}}};
  ASSERT_TRUE(PoisonLabels({AdversaryMode::kLabelFlip, 1}, 10, data));
  EXPECT_EQ(data[1].u8, (std::vector<std::uint8_t>{9, 5, 0}));
  EXPECT_EQ(data[0].u8, (std::vector<std::uint8_t>{1, 2, 3}));
  ASSERT_TRUE(PoisonLabels({AdversaryMode::kSignFlip, 10}, 10, data));  // not a data attack
  EXPECT_EQ(data[1].u8, (std::vector<std::uint8_t>{9, 5, 0}));
  common::TensorList delta = Delta();
  ASSERT_TRUE(ApplyAdversary({AdversaryMode::kLabelFlip, 1}, 1, delta));  // honest update step
  EXPECT_EQ(delta[0].f32, Delta()[0].f32);
  EXPECT_EQ(*ParseAdversaryMode("label_flip"), AdversaryMode::kLabelFlip);
}

TEST(AdversaryTest, ParsesNamesAndRefusesBadInput) {
  EXPECT_EQ(*ParseAdversaryMode("sign_flip"), AdversaryMode::kSignFlip);
  EXPECT_EQ(*ParseAdversaryMode("honest"), AdversaryMode::kHonest);
  EXPECT_FALSE(ParseAdversaryMode("evil"));
  common::TensorList d = Delta();
  EXPECT_FALSE(ApplyAdversary({AdversaryMode::kScale, 0}, 1, d));
  EXPECT_FALSE(ApplyAdversary({AdversaryMode::kScale, NAN}, 1, d));
  EXPECT_EQ(d[0].f32, Delta()[0].f32);
}

}  // namespace
}  // namespace ubcp::client
