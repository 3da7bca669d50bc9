// SPDX-License-Identifier: Apache-2.0
#pragma once
// Which work is computed more than once, and by how many hosts (docs/SECURITY.md,
// "Replication and quorum"). Pure decisions; the store applies them (store.h: works and units).
//
//   eval_batch      needs `eval_quorum` agreeing results (2 by default)
//   finetune_shard  needs `finetune_quorum` agreeing results (2 by default)
//   adaptive        a host with `trusted_after` valid results in a row (and no invalid one since)
//                   is trusted: a work it leases first is still replicated only with probability
//                   `finetune_replication` (fine-tunes) or `trusted_recheck` (evaluations);
//                   one invalid result resets its streak to 0, so it is replicated fully again
//   spot checks     a `spot_check` fraction of the fine-tune works is replicated whoever
//                   computes it, trusted or not
//
// Which works are replicated is drawn from a secret only the coordinator holds (SecretDraw), so
// a donor cannot tell from a manifest whether its result will be compared with another's.

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "ubcp/coordinator/result_compare.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {

struct ReplicationPolicy {
  int eval_quorum = 2;
  int finetune_quorum = 2;
  double finetune_replication = 0.1;  // of a trusted host's fine-tune works
  double trusted_recheck = 0.1;       // of a trusted host's evaluations
  double spot_check = 0.05;           // of all fine-tune works, whoever computes them
  int trusted_after = 10;
  int max_units = 4;  // the most units one work may use; without agreement by then it is dropped
  int ban_after = 2;  // invalid results after which a host's key is banned
  int max_hosts_per_account = 32;
  Tolerance tolerance = DefaultTolerance();
};

// Every work computed once: no validation by replication (tests of other parts, tiny setups).
ReplicationPolicy NoReplication();

// kInvalidArgument for fractions outside [0, 1], quorums outside 1..kMaxQuorum, a max_units
// below a quorum, or non-positive limits.
common::Status CheckPolicy(const ReplicationPolicy& policy);

// A number in [0, 1) that only the coordinator can compute, fixed for (seed, purpose).
using SecretDraw = std::function<double(std::uint64_t seed, std::string_view purpose)>;

// Sets each planned unit's quorum and whether it is adaptive.
void AssignQuorums(std::vector<UnitPlan>& units, const ReplicationPolicy& policy,
                   const SecretDraw& draw);

// The quorum of `work` once `host` leases it first (at most the planned one).
int SettleQuorum(const WorkRecord& work, const HostRecord& host, const ReplicationPolicy& policy,
                 const SecretDraw& draw);

}  // namespace ubcp::coordinator
