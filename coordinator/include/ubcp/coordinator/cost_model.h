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
  std::int64_t credits = 0;  // everything below, times replication
  std::int64_t train_units = 0;
  std::int64_t eval_units = 0;
  std::int64_t train_credits = 0;  // one copy of every finetune unit
  std::int64_t eval_credits = 0;   // one copy of every eval unit
  int replication = 1;             // copies of each unit (validation by replication)
};

// The price of a job: `spec.rounds` rounds of `spec.units_per_round` finetune units, and one
// evaluation of each of the rounds + 1 global models over the held-out shards whose sizes are
// `eval_shard_samples`, each unit run `replication` times. kInvalidArgument on overflow or bad
// input.
common::Result<JobPrice> PriceJob(const common::ModelSpec& model, const common::JobSpec& spec,
                                  const std::vector<std::int64_t>& eval_shard_samples,
                                  int replication);

double CreditsToFlop(std::int64_t credits);
// "1.23e+15 FLOP (0.0000142 PFLOP/s-days)"
std::string DescribeCredits(std::int64_t credits);

}  // namespace ubcp::coordinator
