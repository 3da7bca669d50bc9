// SPDX-License-Identifier: Apache-2.0
#pragma once
// Turns a recipient's job spec into stored work: resolves the model (a catalog entry or a fresh
// zoo model initialised from the job's seed), loads the data set from its package, holds out a
// test split that no donor trains on, cuts the training part into disjoint shards (one per
// finetune unit of a round) and the test part into eval batches, and writes all of them as blobs.
// Rounds: round r < rounds has units_per_round finetune_shard units (K local steps from the
// round's global model on shard i) and eval_units eval_batch units (metrics of that model);
// the last round (r == rounds) only evaluates the final model.

#include <cstdint>
#include <functional>
#include <vector>

#include "ubcp/common/datasets.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {

// kDryRun checks and sizes everything (for a price quote) but writes no blob: shard and model
// blob ids are left empty.
enum class PlanMode { kStore, kDryRun };

class Planner {
 public:
  Planner(Store& store, const BlobStore& blobs, common::DatasetPaths datasets)
      : store_(store), blobs_(blobs), datasets_(std::move(datasets)) {}

  // Called with the sized job (shard sizes known, no blob written yet); an error stops the plan
  // before anything is stored (the price check: a job nobody can pay for writes nothing).
  using Approval = std::function<common::Status(const NewJob& sized)>;

  // Validates the spec against the model and data set and writes shard and model blobs.
  // kNotFound for an unknown catalog model or a missing data-set package, kInvalidArgument for
  // an unknown data set name, a spec outside the protocol's limits (as ParseJobSpec), or a model
  // and data set that do not fit (checked on every shard); `approve`'s error as it is.
  common::Result<NewJob> PlanJob(const common::JobSpec& spec, std::int64_t account_id,
                                 std::int64_t now, PlanMode mode = PlanMode::kStore,
                                 const Approval& approve = {});

  // The units of `round` (pure).
  static std::vector<UnitPlan> PlanRound(const common::JobSpec& spec, int round);

 private:
  Store& store_;
  const BlobStore& blobs_;
  common::DatasetPaths datasets_;
};

// The rows a job trains and is tested on (pure): the package's own test set when it has one,
// else a seeded `test_fraction` held out; each side cut to max_train_samples /
// max_test_samples. Test rows index data.test_x when own_test, else data.x.
struct JobRows {
  std::vector<std::int64_t> train, test;
  bool own_test = false;
};
JobRows SelectRows(const common::JobSpec& spec, const common::Dataset& data);

// Deterministic per-unit seed from the job seed, round, kind and shard.
std::uint64_t UnitSeed(std::uint64_t job_seed, int round, std::string_view kind, int shard);

}  // namespace ubcp::coordinator
