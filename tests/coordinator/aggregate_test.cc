// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/aggregate.h"

#include <gtest/gtest.h>

namespace ubcp::coordinator {
namespace {
using common::NamedTensor;
using common::TensorList;

TensorList Vec(std::vector<float> v) {
  NamedTensor t;
  t.name = "w";
  t.shape = {static_cast<std::int64_t>(v.size())};
  t.f32 = std::move(v);
  return {t};
}

TEST(Aggregate, FedAvgIsSampleWeightedMean) {
  TensorList global = Vec({1, 1});
  TensorList d1 = Vec({1, 0}), d2 = Vec({-1, 3});
  auto out = Aggregate(global, nullptr, {{&d1, 1}, {&d2, 3}}, {OuterRule::kFedAvg, 1.0, 0});
  ASSERT_TRUE(out);
  // mean = (1*[1,0] + 3*[-1,3]) / 4 = [-0.5, 2.25]
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], 0.5f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[1], 3.25f);
  EXPECT_TRUE(out->next_momentum.empty());
}

TEST(Aggregate, DiLoCoWithoutMomentumEqualsFedAvgScaled) {
  TensorList global = Vec({2, -2});
  TensorList d = Vec({0.5, 1});
  auto out = Aggregate(global, nullptr, {{&d, 1}}, {OuterRule::kDiLoCo, 0.7, 0.0});
  ASSERT_TRUE(out);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], 2 + 0.7f * 0.5f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[1], -2 + 0.7f * 1.0f);
}

TEST(Aggregate, DiLoCoNesterovMomentum) {
  TensorList global = Vec({0});
  TensorList v = Vec({2});
  TensorList d = Vec({-1});  // g = 1
  auto out = Aggregate(global, &v, {{&d, 1}}, {OuterRule::kDiLoCo, 0.5, 0.9});
  ASSERT_TRUE(out);
  // new_v = 0.9*2 + 1 = 2.8; next = 0 - 0.5 * (1 + 0.9*2.8) = -1.76
  EXPECT_FLOAT_EQ(out->next_momentum[0].f32[0], 2.8f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], -1.76f);
}

TEST(Aggregate, RefusesBadInput) {
  TensorList global = Vec({0, 0});
  TensorList wrong = Vec({1});
  TensorList ok = Vec({1, 1});
  EXPECT_FALSE(Aggregate(global, nullptr, {}, {}));
  EXPECT_EQ(Aggregate(global, nullptr, {{&wrong, 1}}, {}).error().code, common::Errc::kMalformed);
  EXPECT_FALSE(Aggregate(global, nullptr, {{&ok, 0}}, {}));
  EXPECT_FALSE(Aggregate(global, nullptr, {{&ok, -1}}, {}));
  TensorList inf = Vec({std::numeric_limits<float>::max(), 0});
  TensorList big = Vec({std::numeric_limits<float>::max(), 0});
  EXPECT_FALSE(Aggregate(inf, nullptr, {{&big, 1}}, {OuterRule::kFedAvg, 10.0, 0}));
}

}  // namespace
}  // namespace ubcp::coordinator
