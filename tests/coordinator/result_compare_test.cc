// SPDX-License-Identifier: Apache-2.0
// Comparing replicated results: the relative distance of updates, when two results agree, and
// every branch of the quorum decision.
#include "ubcp/coordinator/result_compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ubcp/common/wire.h"

namespace ubcp::coordinator {
namespace {
using Outcome = QuorumDecision::Outcome;
using Idx = std::vector<std::size_t>;

constexpr double kInf = std::numeric_limits<double>::infinity();

// A tolerance with round figures, so that the expectations below do not move when the measured
// DefaultTolerance() does.
Tolerance TestTolerance() { return {0.05, 0.01, 1e-4, 0.01}; }

common::TensorList Update(std::vector<float> w, std::vector<float> b = {0.5f}) {
  const auto nw = static_cast<std::int64_t>(w.size());
  const auto nb = static_cast<std::int64_t>(b.size());
  return {common::NamedTensor{"w", common::TensorKind::kF32, {nw}, std::move(w), {}},
          common::NamedTensor{"b", common::TensorKind::kF32, {nb}, std::move(b), {}}};
}

common::TensorList Scaled(common::TensorList u, float s) {
  for (auto& t : u) {
    for (float& v : t.f32) v *= s;
  }
  return u;
}

ComparableResult Finetune(common::TensorList update, double loss = 1.0) {
  ComparableResult r;
  r.kind = std::string(common::kUnitFinetune);
  r.loss = loss;
  r.first_loss = 2.0;
  r.samples = 64;
  r.update = std::move(update);
  return r;
}

ComparableResult Eval(double loss, double accuracy, std::int64_t samples = 100) {
  ComparableResult r;
  r.kind = std::string(common::kUnitEval);
  r.loss = loss;
  r.accuracy = accuracy;
  r.samples = samples;
  return r;
}

const common::TensorList kHonest = Update({1.0f, -2.0f, 3.0f, 0.25f});

TEST(UpdateDistanceTest, IsRelativeToTheLargerNorm) {
  EXPECT_EQ(UpdateDistance(kHonest, kHonest), 0.0);
  // b = 2a: ||a - b|| = ||a||, the larger norm is ||b|| = 2||a||.
  EXPECT_NEAR(UpdateDistance(kHonest, Scaled(kHonest, 2)), 0.5, 1e-12);
  EXPECT_NEAR(UpdateDistance(Scaled(kHonest, 2), kHonest), 0.5, 1e-12);
  EXPECT_NEAR(UpdateDistance(kHonest, Scaled(kHonest, -1)), 2.0, 1e-12);
  EXPECT_NEAR(UpdateDistance(kHonest, Scaled(kHonest, 0)), 1.0, 1e-12);
  EXPECT_EQ(UpdateDistance(Scaled(kHonest, 0), Scaled(kHonest, 0)), 0.0);
  // Over all tensors together: one element of "w" off by 0.1.
  common::TensorList near = kHonest;
  near[0].f32[2] += 0.1f;
  double norm2 = 0;
  for (const auto& t : near) {
    for (float v : t.f32) norm2 += double{v} * v;
  }
  EXPECT_NEAR(UpdateDistance(kHonest, near), 0.1 / std::sqrt(norm2), 1e-6);
}

TEST(UpdateDistanceTest, DifferentLayoutsOrNonFiniteValuesAreInfinitelyFar) {
  struct Case {
    const char* what;
    common::TensorList other;
  };
  common::TensorList renamed = kHonest;
  renamed[1].name = "bias";
  common::TensorList reshaped = kHonest;
  reshaped[0].shape = {2, 2};
  common::TensorList reordered = {kHonest[1], kHonest[0]};
  common::TensorList bytes = kHonest;
  bytes[1] = common::NamedTensor{"b", common::TensorKind::kU8, {1}, {}, {1}};
  common::TensorList nan = kHonest;
  nan[0].f32[0] = std::numeric_limits<float>::quiet_NaN();
  common::TensorList inf = kHonest;
  inf[1].f32[0] = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {"one tensor fewer", {kHonest[0]}},
      {"empty", {}},
      {"renamed", renamed},
      {"reshaped", reshaped},
      {"reordered", reordered},
      {"u8 tensor", bytes},
      {"NaN", nan},
      {"infinity", inf},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(UpdateDistance(kHonest, c.other), kInf) << c.what;
    EXPECT_EQ(UpdateDistance(c.other, kHonest), kInf) << c.what;
  }
}

TEST(AgreeTest, FinetuneResults) {
  const Tolerance t = TestTolerance();
  struct Case {
    const char* what;
    ComparableResult other;
    bool agree;
  };
  ComparableResult more_samples = Finetune(kHonest);
  more_samples.samples = 65;
  ComparableResult other_first_loss = Finetune(kHonest);
  other_first_loss.first_loss = 2.1;
  ComparableResult other_first_loss_close = Finetune(kHonest);
  other_first_loss_close.first_loss = 2.01;
  ComparableResult eval_kind = Finetune(kHonest);
  eval_kind.kind = std::string(common::kUnitEval);
  ComparableResult unknown_kind = Finetune(kHonest);
  unknown_kind.kind = "mine_bitcoin";
  const std::vector<Case> cases = {
      {"identical", Finetune(kHonest), true},
      {"update 1% off", Finetune(Scaled(kHonest, 1.01f)), true},
      // The last batch's loss follows the trajectory, which honest replicas do not share.
      {"last loss 50% off", Finetune(kHonest, 1.5), true},
      {"first loss 0.5% off", other_first_loss_close, true},
      {"update scaled x1.2", Finetune(Scaled(kHonest, 1.2f)), false},
      {"sign flipped", Finetune(Scaled(kHonest, -1)), false},
      {"all zero", Finetune(Scaled(kHonest, 0)), false},
      {"no update", Finetune({}), false},
      {"other layout", Finetune(Update({1.0f, -2.0f, 3.0f})), false},
      {"NaN last loss", Finetune(kHonest, std::nan("")), false},
      {"infinite last loss", Finetune(kHonest, kInf), false},
      {"first loss 5% off", other_first_loss, false},
      {"other sample count", more_samples, false},
      {"other kind", eval_kind, false},
      {"unknown kind", unknown_kind, false},
  };
  const ComparableResult honest = Finetune(kHonest);
  for (const Case& c : cases) {
    EXPECT_EQ(Agree(honest, c.other, t), c.agree) << c.what;
    EXPECT_EQ(Agree(c.other, honest, t), c.agree) << c.what << " (swapped)";
  }
  EXPECT_FALSE(Agree(unknown_kind, unknown_kind, t));
}

TEST(AgreeTest, EvalResults) {
  const Tolerance t = TestTolerance();
  struct Case {
    const char* what;
    ComparableResult other;
    bool agree;
  };
  const std::vector<Case> cases = {
      {"identical", Eval(0.5, 0.9), true},
      {"accuracy 0.5 points off", Eval(0.5, 0.905), true},
      {"loss within loss_rel", Eval(0.504, 0.9), true},
      {"accuracy 2 points off", Eval(0.5, 0.92), false},
      {"loss 10% off", Eval(0.55, 0.9), false},
      {"NaN accuracy", Eval(0.5, std::nan("")), false},
      // Same metrics on a different number of samples: not the same batch.
      {"one sample more", Eval(0.5, 0.9, 101), false},
      {"half the samples", Eval(0.5, 0.9, 50), false},
  };
  const ComparableResult honest = Eval(0.5, 0.9);
  for (const Case& c : cases) {
    EXPECT_EQ(Agree(honest, c.other, t), c.agree) << c.what;
    EXPECT_EQ(Agree(c.other, honest, t), c.agree) << c.what << " (swapped)";
  }
}

TEST(AgreeTest, LossAbsoluteToleranceCoversLossesNearZero) {
  Tolerance t = TestTolerance();
  EXPECT_TRUE(Agree(Eval(0.0, 1.0), Eval(5e-5, 1.0), t));
  EXPECT_FALSE(Agree(Eval(0.0, 1.0), Eval(5e-4, 1.0), t));
  t.loss_abs = 1e-3;
  EXPECT_TRUE(Agree(Eval(0.0, 1.0), Eval(5e-4, 1.0), t));
}

TEST(DecideQuorumTest, EveryBranch) {
  const Tolerance t = TestTolerance();
  const ComparableResult honest = Finetune(kHonest);
  const ComparableResult close = Finetune(Scaled(kHonest, 1.01f));
  const ComparableResult flipped = Finetune(Scaled(kHonest, -1));
  const ComparableResult zeros = Finetune(Scaled(kHonest, 0));
  const ComparableResult scaled = Finetune(Scaled(kHonest, 3));
  const ComparableResult broken = Finetune(kHonest, std::nan(""));
  struct Case {
    const char* what;
    std::vector<ComparableResult> results;
    int quorum;
    int max_results;
    Outcome outcome;
    Idx valid;
    Idx invalid;
  };
  const std::vector<Case> cases = {
      {"nothing yet", {}, 2, 4, Outcome::kWait, {}, {}},
      {"one of two", {honest}, 2, 4, Outcome::kWait, {}, {}},
      {"quorum 1, one result", {honest}, 1, 4, Outcome::kValid, {0}, {}},
      {"quorum 1, one unusable result", {broken}, 1, 2, Outcome::kNeedAnother, {}, {}},
      {"quorum 0 counts as 1", {honest}, 0, 4, Outcome::kValid, {0}, {}},
      {"nothing yet with quorum 0", {}, 0, 4, Outcome::kWait, {}, {}},
      {"two agree", {honest, close}, 2, 4, Outcome::kValid, {0, 1}, {}},
      {"two disagree", {honest, flipped}, 2, 4, Outcome::kNeedAnother, {}, {}},
      {"two honest, one flipped", {honest, close, flipped}, 2, 4, Outcome::kValid, {0, 1}, {2}},
      {"flipped first", {flipped, honest, close}, 2, 4, Outcome::kValid, {1, 2}, {0}},
      {"one honest among three cheats at the limit",
       {honest, flipped, zeros, scaled},
       2,
       4,
       Outcome::kDrop,
       {},
       {}},
      {"three disagree below the limit",
       {honest, flipped, zeros},
       2,
       4,
       Outcome::kNeedAnother,
       {},
       {}},
      {"max below quorum counts as quorum", {honest, flipped}, 2, 1, Outcome::kDrop, {}, {}},
      {"past the limit", {honest, flipped, zeros, scaled, broken}, 2, 4, Outcome::kDrop, {}, {}},
      {"unusable results never count",
       {broken, broken, honest, close},
       2,
       4,
       Outcome::kValid,
       {2, 3},
       {0, 1}},
      {"largest group wins over an earlier pair",
       {flipped, Finetune(Scaled(kHonest, -1.01f)), honest, close, honest},
       2,
       6,
       Outcome::kValid,
       {2, 3, 4},
       {0, 1}},
      {"equal groups: the earliest canonical wins",
       {flipped, honest, Finetune(Scaled(kHonest, -1.01f)), close},
       2,
       4,
       Outcome::kValid,
       {0, 2},
       {1, 3}},
      // Agreement is with the canonical result, not pairwise: 1.0 agrees with 0.96 and 1.04,
      // which are 8% apart, so the group of the middle one is the largest.
      {"the middle result is canonical",
       {Finetune(Scaled(kHonest, 0.96f)), honest, Finetune(Scaled(kHonest, 1.04f))},
       3,
       4,
       Outcome::kValid,
       {1, 0, 2},
       {}},
  };
  for (const Case& c : cases) {
    const QuorumDecision d = DecideQuorum(c.results, c.quorum, c.max_results, t);
    EXPECT_EQ(d.outcome, c.outcome) << c.what;
    EXPECT_EQ(d.valid, c.valid) << c.what;
    EXPECT_EQ(d.invalid, c.invalid) << c.what;
  }
}

TEST(DecideQuorumTest, EvalResultsOnDifferentSampleCountsNeverAgree) {
  const std::vector<ComparableResult> results = {Eval(0.5, 0.9, 100), Eval(0.5, 0.9, 99),
                                                 Eval(0.5, 0.9, 101)};
  Tolerance loose = {1e9, 1e9, 1e9, 1e9};
  EXPECT_EQ(DecideQuorum(results, 2, 4, loose).outcome, Outcome::kNeedAnother);
  EXPECT_EQ(DecideQuorum(results, 2, 3, loose).outcome, Outcome::kDrop);
}

TEST(DecideQuorumTest, DefaultToleranceSeparatesHonestFromSignFlipped) {
  const Tolerance t = DefaultTolerance();
  ASSERT_GT(t.update_rel_l2, 0);
  ASSERT_LT(t.update_rel_l2, 1);
  common::TensorList nudged = kHonest;
  nudged[0].f32[1] *= static_cast<float>(1 + t.update_rel_l2 / 10);
  const std::vector<ComparableResult> results = {Finetune(kHonest), Finetune(Scaled(kHonest, -1)),
                                                 Finetune(nudged)};
  const QuorumDecision d = DecideQuorum(results, 2, 4, t);
  EXPECT_EQ(d.outcome, Outcome::kValid);
  EXPECT_EQ(d.valid, (Idx{0, 2}));
  EXPECT_EQ(d.invalid, (Idx{1}));
}

}  // namespace
}  // namespace ubcp::coordinator
