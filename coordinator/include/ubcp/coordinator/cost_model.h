// SPDX-License-Identifier: Apache-2.0
#pragma once
// What work costs, in FLOP, computed by the coordinator from what it signs (the model spec, the
// local steps, the batch size, the shard sizes) — never from a time or a figure a client reports.
// The same functions price a job before it is queued and count the work of each accepted unit,
// so a job that completes spends exactly its price.
//
// Ledger amounts are whole credits of 1 MFLOP (10^6 FLOP). Each unit's cost is rounded up to
// whole credits on its own, and a job's price is the sum of its units' costs.

#include <cstdint>
#include <string>
#include <vector>

#include "ubcp/common/model.h"
#include "ubcp/common/result.h"
#include "ubcp/common/wire.h"

namespace ubcp::coordinator {

inline constexpr double kFlopPerCredit = 1e6;
// 1 PFLOP/s sustained for one day.
inline constexpr double kFlopPerPflopsDay = 1e15 * 86400.0;

// Credits of one finetune_shard unit: forward + backward + step of `batch_size` samples,
// `local_steps` times.
common::Result<std::int64_t> FinetuneUnitCredits(const common::ModelSpec& model, int local_steps,
                                                 int batch_size);
// Credits of one eval_batch unit over `samples` held-out samples (forward only).
common::Result<std::int64_t> EvalUnitCredits(const common::ModelSpec& model, std::int64_t samples);

struct JobPrice {
  std::int64_t credits = 0;  // train_credits + eval_credits
  std::int64_t train_units = 0;
  std::int64_t eval_units = 0;
  std::int64_t train_credits = 0;  // every finetune unit, and its planned replicas
  std::int64_t eval_credits = 0;   // every eval unit, eval_quorum times
  int replication = 1;             // the most executions one unit is planned for
};

// The price of a job: `spec.rounds` rounds of `spec.units_per_round` finetune units, of which
// `extra_train_executions` units are planned to run twice (replication and spot checks,
// validation.h), and one evaluation of each of the rounds + 1 global models over the held-out
// shards whose sizes are `eval_shard_samples`, each run `eval_quorum` times. The price covers
// the planned replicas; what adaptive replication saves is refunded when the job ends.
// kInvalidArgument on overflow or bad input.
common::Result<JobPrice> PriceJob(const common::ModelSpec& model, const common::JobSpec& spec,
                                  const std::vector<std::int64_t>& eval_shard_samples,
                                  std::int64_t extra_train_executions, int eval_quorum);

double CreditsToFlop(std::int64_t credits);
// "1.23e+15 FLOP (0.0000142 PFLOP/s-days)"
std::string DescribeCredits(std::int64_t credits);

}  // namespace ubcp::coordinator
