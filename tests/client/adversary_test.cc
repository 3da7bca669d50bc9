// SPDX-License-Identifier: Apache-2.0
// The adversary modes used in robustness experiments change an update, or the signed result,
// exactly as documented.
#include "ubcp/client/adversary.h"

#include <gtest/gtest.h>

#include <cmath>

#include "ubcp/common/crypto.h"
#include "ubcp/common/wire.h"

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

TEST(AdversaryTest, ParsesTheStaleAndProtocolModes) {
  EXPECT_EQ(*ParseAdversaryMode("stale"), AdversaryMode::kStale);
  EXPECT_EQ(*ParseAdversaryMode("replay"), AdversaryMode::kReplay);
  EXPECT_EQ(*ParseAdversaryMode("wrong_version"), AdversaryMode::kWrongVersion);
  EXPECT_EQ(*ParseAdversaryMode("forged"), AdversaryMode::kForged);
  EXPECT_FALSE(ParseAdversaryMode("wrong-version"));
  EXPECT_FALSE(ParseAdversaryMode("Forged"));
  EXPECT_TRUE(IsProtocolAttack(AdversaryMode::kReplay));
  EXPECT_TRUE(IsProtocolAttack(AdversaryMode::kWrongVersion));
  EXPECT_TRUE(IsProtocolAttack(AdversaryMode::kForged));
  for (AdversaryMode content : {AdversaryMode::kHonest, AdversaryMode::kSignFlip,
                                AdversaryMode::kScale, AdversaryMode::kNoise, AdversaryMode::kZeros,
                                AdversaryMode::kLabelFlip, AdversaryMode::kStale}) {
    EXPECT_FALSE(IsProtocolAttack(content));
  }
}

TEST(AdversaryTest, StaleAndProtocolModesLeaveTheUpdateAndLabelsAlone) {
  for (AdversaryMode mode : {AdversaryMode::kStale, AdversaryMode::kReplay,
                             AdversaryMode::kWrongVersion, AdversaryMode::kForged}) {
    common::TensorList d = Delta();
    ASSERT_TRUE(ApplyAdversary({mode, 10}, 1, d));
    EXPECT_EQ(d[0].f32, Delta()[0].f32);
    common::TensorList data = {common::NamedTensor{"y", common::TensorKind::kU8, {2}, {}, {0, 4}}};
    ASSERT_TRUE(PoisonLabels({mode, 10}, 10, data));
    EXPECT_EQ(data[0].u8, (std::vector<std::uint8_t>{0, 4}));
  }
}

// A manifest hash as the coordinator would send it (a content id).
std::string Hash(int manifest) {
  return common::ContentId(common::AsBytes("manifest " + std::to_string(manifest)));
}

class AdversaryMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(common::InitCrypto()); }

  // The honest answer to unit `unit` of manifest `hash`, attempt `attempt`.
  static common::ResultPayload Result(std::int64_t unit, const std::string& hash, int attempt) {
    common::ResultPayload r;
    r.unit_id = unit;
    r.host_id = 7;
    r.attempt = attempt;
    r.manifest_hash = hash;
    r.kind = std::string(common::kUnitEval);
    r.metrics.loss = 0.5;
    r.metrics.accuracy = 0.9;
    r.metrics.samples = 10;
    return r;
  }
  common::SignedEnvelope Honest(const common::ResultPayload& r) const {
    return common::SignPayload(key_, common::kDomainResult, common::SerializeResultPayload(r));
  }
  bool Verifies(const common::SignedEnvelope& env) const {
    return static_cast<bool>(common::VerifyEnvelope(env, common::kDomainResult, key_.public_key()));
  }

  common::SigningKey key_ = common::SigningKey::Generate();
};

bool SameEnvelope(const common::SignedEnvelope& a, const common::SignedEnvelope& b) {
  return a.payload == b.payload && a.signer == b.signer && a.signature == b.signature;
}

TEST_F(AdversaryMemoryTest, HonestAndContentModesSignTheHonestResult) {
  for (AdversaryMode mode : {AdversaryMode::kHonest, AdversaryMode::kSignFlip,
                             AdversaryMode::kLabelFlip, AdversaryMode::kStale}) {
    AdversaryMemory memory({mode, 10});
    for (int unit = 1; unit <= 3; ++unit) {
      const common::ResultPayload r = Result(unit, Hash(unit), 1);
      const AdversaryAnswer answer = memory.Answer(key_, r);
      EXPECT_FALSE(answer.tampered);
      EXPECT_TRUE(SameEnvelope(answer.envelope, Honest(r)));
      EXPECT_TRUE(Verifies(answer.envelope));
    }
  }
}

TEST_F(AdversaryMemoryTest, ReplayPostsTheEarlierEnvelopeUnchanged) {
  AdversaryMemory memory({AdversaryMode::kReplay, 10});
  const common::ResultPayload first = Result(1, Hash(1), 1);
  const AdversaryAnswer a = memory.Answer(key_, first);
  EXPECT_FALSE(a.tampered);  // nothing to replay yet: honest
  EXPECT_TRUE(SameEnvelope(a.envelope, Honest(first)));
  for (int unit = 2; unit <= 4; ++unit) {
    const AdversaryAnswer b = memory.Answer(key_, Result(unit, Hash(unit), 1));
    EXPECT_TRUE(b.tampered);
    EXPECT_TRUE(SameEnvelope(b.envelope, a.envelope)) << "unit " << unit;
  }
}

TEST_F(AdversaryMemoryTest, WrongVersionBindsThePreviousManifest) {
  AdversaryMemory memory({AdversaryMode::kWrongVersion, 10});
  const common::ResultPayload first = Result(1, Hash(1), 2);
  const AdversaryAnswer a = memory.Answer(key_, first);
  EXPECT_FALSE(a.tampered);
  EXPECT_TRUE(SameEnvelope(a.envelope, Honest(first)));

  const AdversaryAnswer b = memory.Answer(key_, Result(5, Hash(5), 1));
  EXPECT_TRUE(b.tampered);
  EXPECT_TRUE(Verifies(b.envelope));  // signed correctly: only the version is wrong
  auto payload = common::ParseResultPayload(b.envelope.payload);
  ASSERT_TRUE(payload) << payload.error().ToString();
  EXPECT_EQ(payload->unit_id, 5);
  EXPECT_EQ(payload->manifest_hash, Hash(1));
  EXPECT_EQ(payload->attempt, 2);

  // One version behind each time: the next answer names manifest 5, not manifest 1.
  const AdversaryAnswer c = memory.Answer(key_, Result(6, Hash(6), 3));
  payload = common::ParseResultPayload(c.envelope.payload);
  ASSERT_TRUE(payload);
  EXPECT_EQ(payload->unit_id, 6);
  EXPECT_EQ(payload->manifest_hash, Hash(5));
  EXPECT_EQ(payload->attempt, 1);

  // The same manifest again is answered honestly: there is no other version to name.
  const common::ResultPayload again = Result(6, Hash(6), 3);
  const AdversaryAnswer d = memory.Answer(key_, again);
  EXPECT_FALSE(d.tampered);
  EXPECT_TRUE(SameEnvelope(d.envelope, Honest(again)));
}

TEST_F(AdversaryMemoryTest, ForgedNamesTheHostKeyButDoesNotVerify) {
  AdversaryMemory memory({AdversaryMode::kForged, 10});
  for (int unit = 1; unit <= 3; ++unit) {
    const common::ResultPayload r = Result(unit, Hash(unit), 1);
    const AdversaryAnswer answer = memory.Answer(key_, r);
    EXPECT_TRUE(answer.tampered);
    EXPECT_EQ(answer.envelope.signer, key_.public_key().Hex());
    EXPECT_EQ(answer.envelope.payload, common::SerializeResultPayload(r));
    EXPECT_FALSE(Verifies(answer.envelope));
    EXPECT_NE(answer.envelope.signature, Honest(r).signature);
  }
  // ForgeResult on its own: a fresh key each time.
  const std::string payload = common::SerializeResultPayload(Result(9, Hash(9), 1));
  EXPECT_NE(ForgeResult(key_, payload).signature, ForgeResult(key_, payload).signature);
}

TEST_F(AdversaryMemoryTest, StaleKeepsTheFirstFinetuneUpdateOnly) {
  const common::EncodedBlob first{{1, 2, 3}, 30, 40};
  const common::EncodedBlob second{{4, 5}, 20, 40};
  common::ResultMetrics metrics;
  metrics.loss = 0.25;
  metrics.first_loss = 2.0;
  metrics.samples = 64;

  AdversaryMemory stale({AdversaryMode::kStale, 10});
  EXPECT_EQ(stale.StaleUpdate(common::kUnitFinetune), nullptr);  // the first unit is honest
  stale.KeepUpdate(common::kUnitEval, first, metrics, 1.0);      // not an update
  EXPECT_EQ(stale.StaleUpdate(common::kUnitFinetune), nullptr);
  stale.KeepUpdate(common::kUnitFinetune, first, metrics, 1.5);
  stale.KeepUpdate(common::kUnitFinetune, second, {}, 0.1);
  const KeptUpdate* kept = stale.StaleUpdate(common::kUnitFinetune);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->update.bytes, first.bytes);
  EXPECT_EQ(kept->update.raw_size, first.raw_size);
  EXPECT_EQ(kept->metrics.samples, 64);
  EXPECT_DOUBLE_EQ(kept->metrics.loss, 0.25);
  EXPECT_DOUBLE_EQ(kept->wall_seconds, 1.5);
  EXPECT_EQ(stale.StaleUpdate(common::kUnitEval), nullptr);  // evaluations are still computed

  for (AdversaryMode mode :
       {AdversaryMode::kHonest, AdversaryMode::kReplay, AdversaryMode::kZeros}) {
    AdversaryMemory other({mode, 10});
    other.KeepUpdate(common::kUnitFinetune, first, metrics, 1.5);
    EXPECT_EQ(other.StaleUpdate(common::kUnitFinetune), nullptr);
  }
}

}  // namespace
}  // namespace ubcp::client
