// SPDX-License-Identifier: Apache-2.0
// Which works are replicated (replication.h): the plan per kind, the adaptive settlement at the
// first lease, and the policy's own checks.
#include <gtest/gtest.h>

#include <random>

#include "ubcp/common/wire.h"
#include "ubcp/coordinator/replication.h"

namespace ubcp::coordinator {
namespace {

// A draw that is fixed per (seed, purpose) and uniform over many seeds, like the coordinator's
// secret one.
double TestDraw(std::uint64_t seed, std::string_view purpose) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(std::hash<std::string_view>{}(purpose))};
  std::mt19937_64 rng(seq);
  return std::uniform_real_distribution<double>(0, 1)(rng);
}

std::vector<UnitPlan> Plan(int finetune, int eval) {
  std::vector<UnitPlan> units;
  for (int i = 0; i < finetune; ++i) {
    units.push_back({std::string(common::kUnitFinetune), i, static_cast<std::uint64_t>(i + 1)});
  }
  for (int i = 0; i < eval; ++i) {
    units.push_back({std::string(common::kUnitEval), i, static_cast<std::uint64_t>(1000 + i)});
  }
  return units;
}

TEST(ReplicationPolicyTest, EveryWorkIsPlannedTwiceAndAFractionIsASpotCheck) {
  ReplicationPolicy policy;
  policy.spot_check = 0.05;
  auto units = Plan(10'000, 50);
  AssignQuorums(units, policy, TestDraw);
  int spot = 0;
  for (const UnitPlan& u : units) {
    EXPECT_EQ(u.quorum, 2);
    if (u.kind == common::kUnitEval) {
      EXPECT_TRUE(u.adaptive);
      continue;
    }
    spot += !u.adaptive;  // a spot check stays replicated whoever computes it
  }
  EXPECT_NEAR(spot / 10'000.0, 0.05, 0.01);
  // The same draw gives the same plan.
  auto again = Plan(10'000, 50);
  AssignQuorums(again, policy, TestDraw);
  for (std::size_t i = 0; i < units.size(); ++i) EXPECT_EQ(units[i].quorum, again[i].quorum);
}

TEST(ReplicationPolicyTest, NoReplicationComputesEveryWorkOnce) {
  auto units = Plan(100, 10);
  AssignQuorums(units, NoReplication(), TestDraw);
  for (const UnitPlan& u : units) EXPECT_EQ(u.quorum, 1);
}

TEST(ReplicationPolicyTest, TrustedHostsAreReplicatedLessAndSpotChecksStay) {
  ReplicationPolicy policy;
  policy.trusted_after = 10;
  policy.finetune_replication = 0.1;
  policy.trusted_recheck = 0.3;
  HostRecord fresh, trusted, caught;
  fresh.valid_streak = 3;
  trusted.valid_streak = 10;
  caught.valid_streak = 0;  // an invalid result resets the streak
  caught.offences = 1;
  int kept = 0, evals_kept = 0;
  for (std::uint64_t seed = 1; seed <= 2000; ++seed) {
    WorkRecord adaptive;
    adaptive.kind = common::kUnitFinetune;
    adaptive.quorum = 2;
    adaptive.adaptive = true;
    adaptive.seed = seed;
    // Untrusted hosts, and a host caught once, are replicated fully.
    EXPECT_EQ(SettleQuorum(adaptive, fresh, policy, TestDraw), 2);
    EXPECT_EQ(SettleQuorum(adaptive, caught, policy, TestDraw), 2);
    kept += SettleQuorum(adaptive, trusted, policy, TestDraw) == 2;
    WorkRecord eval = adaptive;
    eval.kind = common::kUnitEval;
    evals_kept += SettleQuorum(eval, trusted, policy, TestDraw) == 2;
    WorkRecord spot = adaptive;
    spot.adaptive = false;
    EXPECT_EQ(SettleQuorum(spot, trusted, policy, TestDraw), 2);
    WorkRecord single = adaptive;
    single.quorum = 1;
    EXPECT_EQ(SettleQuorum(single, fresh, policy, TestDraw), 1);
  }
  EXPECT_NEAR(kept / 2000.0, 0.1, 0.02);
  EXPECT_NEAR(evals_kept / 2000.0, 0.3, 0.03);
}

TEST(ReplicationPolicyTest, BadPoliciesAreRefused) {
  EXPECT_TRUE(CheckPolicy(ReplicationPolicy{}));
  EXPECT_TRUE(CheckPolicy(NoReplication()));
  auto bad = [](auto change) {
    ReplicationPolicy p;
    change(p);
    return !CheckPolicy(p);
  };
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.finetune_replication = 1.5; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.spot_check = -0.1; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.trusted_recheck = std::nan(""); }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.eval_quorum = 0; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.eval_quorum = kMaxQuorum + 1; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.finetune_quorum = 0; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.max_units = 1; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.ban_after = 0; }));
  EXPECT_TRUE(bad([](ReplicationPolicy& p) { p.max_hosts_per_account = 0; }));
}

}  // namespace
}  // namespace ubcp::coordinator
