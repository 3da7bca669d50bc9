// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/cost_model.h"

#include <algorithm>
#include <cstdio>
#include <limits>

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

namespace {

constexpr std::int64_t kCreditFlop = 1'000'000;

common::Result<std::int64_t> Mul(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t out = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) {
    return MakeError(Errc::kInvalidArgument, std::string("cost overflows: ") + what);
  }
  return out;
}

common::Result<std::int64_t> Add(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t out = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &out)) {
    return MakeError(Errc::kInvalidArgument, std::string("cost overflows: ") + what);
  }
  return out;
}

// FLOP -> whole credits, rounded up (a unit that did any work costs at least one credit).
std::int64_t CreditsRoundedUp(std::int64_t flop) {
  return flop / kCreditFlop + (flop % kCreditFlop != 0 ? 1 : 0);
}

}  // namespace

common::Result<std::int64_t> FinetuneUnitCredits(const common::ModelSpec& model, int local_steps,
                                                 int batch_size) {
  const std::int64_t per_sample = common::TrainFlopsPerSample(model);
  if (per_sample <= 0) return MakeError(Errc::kInvalidArgument, "model has no FLOP count");
  if (local_steps < 1 || batch_size < 1) {
    return MakeError(Errc::kInvalidArgument, "local_steps and batch_size must be positive");
  }
  UBCP_ASSIGN_OR_RETURN(std::int64_t samples, Mul(local_steps, batch_size, "samples"));
  UBCP_ASSIGN_OR_RETURN(std::int64_t flop, Mul(per_sample, samples, "finetune unit"));
  return CreditsRoundedUp(flop);
}

common::Result<std::int64_t> EvalUnitCredits(const common::ModelSpec& model, std::int64_t samples) {
  const std::int64_t per_sample = common::EvalFlopsPerSample(model);
  if (per_sample <= 0) return MakeError(Errc::kInvalidArgument, "model has no FLOP count");
  if (samples < 1) return MakeError(Errc::kInvalidArgument, "an eval unit needs samples");
  UBCP_ASSIGN_OR_RETURN(std::int64_t flop, Mul(per_sample, samples, "eval unit"));
  return CreditsRoundedUp(flop);
}

common::Result<JobPrice> PriceJob(const common::ModelSpec& model, const common::JobSpec& spec,
                                  const std::vector<std::int64_t>& eval_shard_samples,
                                  std::int64_t extra_train_executions, int eval_quorum) {
  if (spec.rounds < 1 || spec.units_per_round < 1) {
    return MakeError(Errc::kInvalidArgument, "a job needs at least one round and one unit");
  }
  if (eval_quorum < 1 || eval_quorum > 16) {
    return MakeError(Errc::kInvalidArgument, "eval quorum must be 1..16");
  }
  JobPrice price;
  price.replication = eval_quorum;
  UBCP_ASSIGN_OR_RETURN(std::int64_t train_unit, FinetuneUnitCredits(model, spec.params.local_steps,
                                                                     spec.params.batch_size));
  UBCP_ASSIGN_OR_RETURN(price.train_units,
                        Mul(spec.rounds, spec.units_per_round, "finetune units"));
  if (extra_train_executions < 0 || extra_train_executions > price.train_units) {
    return MakeError(Errc::kInvalidArgument, "extra finetune executions out of range");
  }
  if (extra_train_executions > 0) price.replication = std::max(price.replication, 2);
  UBCP_ASSIGN_OR_RETURN(price.train_credits,
                        Mul(price.train_units + extra_train_executions, train_unit, "finetune"));
  // Every global model is evaluated once: the starting one and the one after each round.
  const std::int64_t evaluations = static_cast<std::int64_t>(spec.rounds) + 1;
  std::int64_t one_evaluation = 0;
  for (std::int64_t samples : eval_shard_samples) {
    UBCP_ASSIGN_OR_RETURN(std::int64_t unit, EvalUnitCredits(model, samples));
    UBCP_ASSIGN_OR_RETURN(one_evaluation, Add(one_evaluation, unit, "eval"));
  }
  UBCP_ASSIGN_OR_RETURN(
      price.eval_units,
      Mul(evaluations, static_cast<std::int64_t>(eval_shard_samples.size()), "eval units"));
  UBCP_ASSIGN_OR_RETURN(std::int64_t evaluated, Mul(evaluations, one_evaluation, "eval"));
  UBCP_ASSIGN_OR_RETURN(price.eval_credits, Mul(evaluated, eval_quorum, "eval replication"));
  UBCP_ASSIGN_OR_RETURN(price.credits, Add(price.train_credits, price.eval_credits, "job"));
  return price;
}

double CreditsToFlop(std::int64_t credits) { return static_cast<double>(credits) * kFlopPerCredit; }

std::string DescribeCredits(std::int64_t credits) {
  const double flop = CreditsToFlop(credits);
  char text[96];
  std::snprintf(text, sizeof text, "%.3g FLOP (%.3g PFLOP/s-days)", flop, flop / kFlopPerPflopsDay);
  return text;
}

}  // namespace ubcp::coordinator
