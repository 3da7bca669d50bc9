// SPDX-License-Identifier: Apache-2.0
#pragma once
// Where results are judged (docs/SECURITY.md, "Replication and quorum"): for one work, its
// results are compared (result_compare.h) and the quorum decides; the store then pays the valid
// ones, catches the hosts of invalid ones (reversal, discarded results, bans) and adds a unit
// when results disagree. Judgements are serialized; each is applied in one store transaction,
// and one made on a stale view is refused by the store and simply made again later.

#include <cstdint>
#include <mutex>

#include "ubcp/common/result.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/economy.h"
#include "ubcp/coordinator/replication.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {

class ResultJudge {
 public:
  ResultJudge(Store& store, const BlobStore& blobs, ReplicationPolicy policy, Clock clock);

  // Judges the work's pending results as far as they allow. A work still waiting for results
  // changes nothing (an empty outcome).
  common::Result<JudgementOutcome> Judge(std::int64_t work_id);
  // Judges every work of a running job that holds pending results (after a restart).
  void JudgePending();

  const ReplicationPolicy& policy() const { return policy_; }

 private:
  common::Result<ComparableResult> Comparable(const ResultRecord& result);
  common::Result<JudgementOutcome> JudgeLocked(std::int64_t work_id);

  Store& store_;
  const BlobStore& blobs_;
  ReplicationPolicy policy_;
  Clock clock_;
  std::mutex mu_;
};

}  // namespace ubcp::coordinator
