// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/replication.h"

#include <algorithm>
#include <cmath>

#include "ubcp/common/wire.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

ReplicationPolicy NoReplication() {
  ReplicationPolicy p;
  p.eval_quorum = 1;
  p.finetune_quorum = 1;
  p.finetune_replication = 0;
  p.trusted_recheck = 0;
  p.spot_check = 0;
  return p;
}

common::Status CheckPolicy(const ReplicationPolicy& p) {
  auto fraction = [](double f) { return std::isfinite(f) && f >= 0 && f <= 1; };
  if (!fraction(p.finetune_replication) || !fraction(p.spot_check) ||
      !fraction(p.trusted_recheck)) {
    return MakeError(Errc::kInvalidArgument, "replication fractions must be within [0, 1]");
  }
  for (int quorum : {p.eval_quorum, p.finetune_quorum}) {
    if (quorum < 1 || quorum > kMaxQuorum) {
      return MakeError(Errc::kInvalidArgument, "quorums must be 1.." + std::to_string(kMaxQuorum));
    }
  }
  const int needed = std::max({p.eval_quorum, p.finetune_quorum, 2});
  if (p.max_units < needed || p.max_units > 16) {
    return MakeError(Errc::kInvalidArgument,
                     "max units per work must be " + std::to_string(needed) + "..16");
  }
  if (p.trusted_after < 1 || p.ban_after < 1 || p.max_hosts_per_account < 1) {
    return MakeError(Errc::kInvalidArgument, "trust, ban and host limits must be positive");
  }
  return {};
}

void AssignQuorums(std::vector<UnitPlan>& units, const ReplicationPolicy& policy,
                   const SecretDraw& draw) {
  for (UnitPlan& unit : units) {
    if (unit.kind == common::kUnitEval) {
      unit.quorum = policy.eval_quorum;
      unit.adaptive = unit.quorum > 1;
    } else if (draw(unit.seed, "spot-check") < policy.spot_check) {
      unit.quorum = std::max(policy.finetune_quorum, 2);
      unit.adaptive = false;
    } else {
      unit.quorum = policy.finetune_quorum;
      unit.adaptive = unit.quorum > 1;
    }
  }
}

int SettleQuorum(const WorkRecord& work, const HostRecord& host, const ReplicationPolicy& policy,
                 const SecretDraw& draw) {
  if (!work.adaptive || work.quorum <= 1) return work.quorum;
  if (host.valid_streak < policy.trusted_after) return work.quorum;
  const double keep =
      work.kind == common::kUnitEval ? policy.trusted_recheck : policy.finetune_replication;
  return draw(work.seed, "recheck") < keep ? work.quorum : 1;
}

}  // namespace ubcp::coordinator
