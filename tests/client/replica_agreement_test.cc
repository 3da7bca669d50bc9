// SPDX-License-Identifier: Apache-2.0
// Replicated execution end to end on the donor side: the real executor runs one digits-MLP unit
// (the integration tests' job) with 1 and 2 torch threads, and DefaultTolerance() must accept
// these honest replicas while refusing every adversary of client/adversary.h and stale results.
// A small version of tests/bench/tolerance_bench.cc, which measured the tolerance.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/replica_unit.h"
#include "ubcp/client/adversary.h"
#include "ubcp/client/executor.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/datasets.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/result_compare.h"

namespace ubcp::client {
namespace {
using coordinator::Agree;
using coordinator::ComparableResult;
using coordinator::DecideQuorum;
using coordinator::QuorumDecision;

constexpr char kSpec[] = "mlp-i784-h64-o10";
constexpr std::uint64_t kSeed = 5;

using testing::ReplicaUnit;
using Unit = ReplicaUnit;

// The integration tests' digits job: 30 SGD steps of 32 samples, int8 updates.
Unit MakeUnit(std::string_view kind, const common::TensorList& weights,
              const common::TensorList& shard) {
  return testing::MakeReplicaUnit(kind, kSpec, weights, shard,
                                  {30, 32, 0.05, 0.9, 0.0, "sgd", kSeed}, "int8");
}

ComparableResult Execute(const Unit& unit, int threads, const Adversary& adversary = {}) {
  auto r = testing::RunReplica(unit, threads, adversary);
  EXPECT_TRUE(r) << r.error().ToString();
  return r ? std::move(*r) : ComparableResult{};
}

// The integration tests' digits job, cut as the planner cuts it: 20% held out, two training
// shards; loaded once for the whole suite.
struct Digits {
  std::string error;  // empty when loaded
  std::vector<common::TensorList> shards;
  common::TensorList test;
  common::TensorList test_half;  // the first half of the held-out rows
  common::TensorList model;      // the job's initial model
};

Digits LoadDigits() {
  Digits d;
  if (auto ok = common::InitCrypto(); !ok) {
    d.error = ok.error().ToString();
    return d;
  }
  auto data = common::LoadDataset("digits", common::DatasetPaths{});
  if (!data) {
    d.error = data.error().ToString();
    return d;
  }
  const common::Split split = common::SplitIndices(data->size(), 0.2, kSeed);
  for (const auto& rows : common::Partition(split.train, 2)) {
    d.shards.push_back(common::TakeRows(data->x, data->y, rows));
  }
  d.test = common::TakeRows(data->x, data->y, split.test);
  d.test_half = common::TakeRows(data->x, data->y, common::Partition(split.test, 2)[0]);
  d.model = common::InitModel(*common::ParseModelSpec(kSpec), kSeed);
  return d;
}

class ReplicaAgreementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static const Digits loaded = LoadDigits();
    ASSERT_TRUE(loaded.error.empty()) << loaded.error;
    ASSERT_EQ(loaded.shards.size(), 2u);
    d_ = &loaded;
  }

  const Digits* d_ = nullptr;
  const coordinator::Tolerance tolerance_ = coordinator::DefaultTolerance();
};

TEST_F(ReplicaAgreementTest, HonestReplicasAgreeAcrossThreadCounts) {
  const Unit unit = MakeUnit(common::kUnitFinetune, d_->model, d_->shards[0]);
  const ComparableResult one = Execute(unit, 1);
  const ComparableResult two = Execute(unit, 2);
  const ComparableResult again = Execute(unit, 1);
  ASSERT_FALSE(one.update.empty());
  EXPECT_TRUE(Agree(one, two, tolerance_))
      << "distance " << coordinator::UpdateDistance(one.update, two.update) << ", losses "
      << one.loss << " / " << two.loss;
  EXPECT_TRUE(Agree(one, again, tolerance_));
  const QuorumDecision d = DecideQuorum({one, two}, 2, 4, tolerance_);
  EXPECT_EQ(d.outcome, QuorumDecision::Outcome::kValid);
  EXPECT_EQ(d.valid, (std::vector<std::size_t>{0, 1}));
}

TEST_F(ReplicaAgreementTest, EveryAdversaryDisagreesWithTheHonestReplicas) {
  const Unit unit = MakeUnit(common::kUnitFinetune, d_->model, d_->shards[0]);
  const ComparableResult honest = Execute(unit, 1);
  const ComparableResult other_threads = Execute(unit, 2);
  struct Case {
    const char* name;
    Adversary adversary;
  };
  // The client's default factor, and a mild one: a scale of 2 is 50% away from honest.
  const std::vector<Case> cases = {
      {"sign_flip", {AdversaryMode::kSignFlip, Adversary{}.scale}},
      {"sign_flip x1", {AdversaryMode::kSignFlip, 1}},
      {"scale", {AdversaryMode::kScale, Adversary{}.scale}},
      {"scale x2", {AdversaryMode::kScale, 2}},
      {"noise", {AdversaryMode::kNoise, Adversary{}.scale}},
      {"zeros", {AdversaryMode::kZeros, 1}},
      {"label_flip", {AdversaryMode::kLabelFlip, 1}},
  };
  for (const Case& c : cases) {
    const ComparableResult cheat = Execute(unit, 2, c.adversary);
    EXPECT_FALSE(Agree(honest, cheat, tolerance_))
        << c.name << ": distance " << coordinator::UpdateDistance(honest.update, cheat.update);
    // The cheat arrives between two honest replicas: the honest pair wins, the cheat is invalid.
    const QuorumDecision d = DecideQuorum({honest, cheat, other_threads}, 2, 4, tolerance_);
    EXPECT_EQ(d.outcome, QuorumDecision::Outcome::kValid) << c.name;
    EXPECT_EQ(d.valid, (std::vector<std::size_t>{0, 2})) << c.name;
    EXPECT_EQ(d.invalid, (std::vector<std::size_t>{1})) << c.name;
  }
}

TEST_F(ReplicaAgreementTest, StaleUpdatesDisagree) {
  const Unit unit = MakeUnit(common::kUnitFinetune, d_->model, d_->shards[0]);
  const ComparableResult honest = Execute(unit, 1);
  // Another shard's result for the same model.
  const ComparableResult other_shard =
      Execute(MakeUnit(common::kUnitFinetune, d_->model, d_->shards[1]), 1);
  EXPECT_FALSE(Agree(honest, other_shard, tolerance_));
  // The next round's unit on the same shard, answered with this round's result.
  common::TensorList next = d_->model;
  for (std::size_t i = 0; i < next.size(); ++i) {
    for (std::size_t j = 0; j < next[i].f32.size(); ++j) next[i].f32[j] += honest.update[i].f32[j];
  }
  const ComparableResult next_round =
      Execute(MakeUnit(common::kUnitFinetune, next, d_->shards[0]), 2);
  EXPECT_FALSE(Agree(next_round, honest, tolerance_));
}

TEST_F(ReplicaAgreementTest, EvalReplicasAgreeAndOtherModelsOrBatchesDoNot) {
  const ComparableResult one = Execute(MakeUnit(common::kUnitEval, d_->model, d_->test), 1);
  const ComparableResult two = Execute(MakeUnit(common::kUnitEval, d_->model, d_->test), 2);
  EXPECT_TRUE(Agree(one, two, tolerance_));
  // A model trained for one unit, evaluated in place of the one asked for.
  const ComparableResult trained =
      Execute(MakeUnit(common::kUnitFinetune, d_->model, d_->shards[0]), 1);
  common::TensorList other_model = d_->model;
  for (std::size_t i = 0; i < other_model.size(); ++i) {
    for (std::size_t j = 0; j < other_model[i].f32.size(); ++j) {
      other_model[i].f32[j] += trained.update[i].f32[j];
    }
  }
  EXPECT_FALSE(
      Agree(one, Execute(MakeUnit(common::kUnitEval, other_model, d_->test), 2), tolerance_));
  // Half the batch.
  EXPECT_FALSE(
      Agree(one, Execute(MakeUnit(common::kUnitEval, d_->model, d_->test_half), 2), tolerance_));
}

}  // namespace
}  // namespace ubcp::client
