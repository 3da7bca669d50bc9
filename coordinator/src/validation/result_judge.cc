// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/result_judge.h"

#include <spdlog/spdlog.h>

#include "ubcp/common/wire.h"
#include "ubcp/coordinator/tensor_blobs.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

ResultJudge::ResultJudge(Store& store, const BlobStore& blobs, ReplicationPolicy policy,
                         Clock clock)
    : store_(store), blobs_(blobs), policy_(std::move(policy)), clock_(std::move(clock)) {}

common::Result<ComparableResult> ResultJudge::Comparable(const ResultRecord& r) {
  ComparableResult c;
  c.kind = r.kind;
  c.loss = r.loss;
  c.accuracy = r.accuracy;
  c.first_loss = r.first_loss;
  c.samples = r.samples;
  if (r.kind == common::kUnitFinetune) {
    // The update's bytes were hash-checked and decoded against the model's layout when the
    // result was accepted; they are read back bounded by the recorded sizes.
    UBCP_ASSIGN_OR_RETURN(c.update, GetTensorBlob(blobs_, store_, r.update_blob));
  }
  return c;
}

common::Result<JudgementOutcome> ResultJudge::Judge(std::int64_t work_id) {
  std::lock_guard lock(mu_);
  return JudgeLocked(work_id);
}

common::Result<JudgementOutcome> ResultJudge::JudgeLocked(std::int64_t work_id) {
  UBCP_ASSIGN_OR_RETURN(WorkRecord work, store_.GetWork(work_id));
  UBCP_ASSIGN_OR_RETURN(auto listed, store_.WorkResults(work_id));
  const auto& [all, units] = listed;
  std::vector<const ResultRecord*> live;
  bool pending = false;
  for (const ResultRecord& r : all) {
    if (r.status == ResultStatus::kInvalid) continue;
    live.push_back(&r);
    pending = pending || r.status == ResultStatus::kPending;
  }
  if (!pending || work.state == WorkState::kDropped) return JudgementOutcome{};

  WorkJudgement j;
  j.work_id = work_id;
  j.units_seen = units;
  j.ban_after = policy_.ban_after;
  j.now = clock_();
  if (work.state == WorkState::kValid) {
    // A late replica of a judged work: it must agree with the canonical result.
    const ResultRecord* canonical = nullptr;
    for (const ResultRecord* r : live) {
      if (r->unit_id == work.canonical_unit) canonical = r;
    }
    if (!canonical) return MakeError(Errc::kInternal, "valid work without its canonical result");
    UBCP_ASSIGN_OR_RETURN(ComparableResult reference, Comparable(*canonical));
    for (const ResultRecord* r : live) {
      if (r->status != ResultStatus::kPending) continue;
      UBCP_ASSIGN_OR_RETURN(ComparableResult c, Comparable(*r));
      (Agree(reference, c, policy_.tolerance) ? j.valid : j.invalid).push_back(r->unit_id);
    }
    return store_.ResolveWork(j);
  }

  std::vector<ComparableResult> comparable;
  comparable.reserve(live.size());
  for (const ResultRecord* r : live) {
    UBCP_ASSIGN_OR_RETURN(ComparableResult c, Comparable(*r));
    comparable.push_back(std::move(c));
  }
  const QuorumDecision d =
      DecideQuorum(comparable, work.quorum, policy_.max_units, policy_.tolerance);
  switch (d.outcome) {
    case QuorumDecision::Outcome::kWait:
      return JudgementOutcome{};
    case QuorumDecision::Outcome::kNeedAnother:
    case QuorumDecision::Outcome::kDrop:
      // A unit still computing may settle it; otherwise one more execution, up to the limit.
      if (static_cast<std::size_t>(units) > all.size()) return JudgementOutcome{};
      j.outcome = units < policy_.max_units ? WorkJudgement::Outcome::kAnother
                                            : WorkJudgement::Outcome::kDropped;
      if (j.outcome == WorkJudgement::Outcome::kDropped) {
        spdlog::warn("work {} (job {} round {} {}): no {} of {} results agree; dropped", work_id,
                     work.job_id, work.round, work.kind, work.quorum, live.size());
      }
      return store_.ResolveWork(j);
    case QuorumDecision::Outcome::kValid:
      break;
  }
  for (std::size_t i : d.valid) j.valid.push_back(live[i]->unit_id);
  for (std::size_t i : d.invalid) j.invalid.push_back(live[i]->unit_id);
  UBCP_ASSIGN_OR_RETURN(JudgementOutcome out, store_.ResolveWork(j));
  for (std::int64_t unit_id : j.invalid) {
    for (const ResultRecord* r : live) {
      if (r->unit_id != unit_id) continue;
      spdlog::warn("work {} (job {} round {} {}): host {} disagrees with the quorum; caught",
                   work_id, work.job_id, work.round, work.kind, r->host_id);
    }
  }
  for (std::int64_t host : out.banned_hosts) spdlog::warn("host {} banned", host);
  return out;
}

void ResultJudge::JudgePending() {
  auto works = store_.WorksWithPendingResults();
  if (!works) {
    spdlog::error("judging pending results: {}", works.error().ToString());
    return;
  }
  std::lock_guard lock(mu_);
  for (std::int64_t id : *works) {
    if (auto judged = JudgeLocked(id); !judged) {
      spdlog::error("judging work {}: {}", id, judged.error().ToString());
    }
  }
}

}  // namespace ubcp::coordinator
