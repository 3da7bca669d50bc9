// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/planner.h"

#include <algorithm>

#include "ubcp/common/model.h"
#include "ubcp/coordinator/tensor_blobs.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

namespace {

std::uint64_t SplitMix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct ResolvedModel {
  common::ModelSpec spec;
  std::string blob_id;  // "" : initialise from the seed
};

}  // namespace

std::uint64_t UnitSeed(std::uint64_t job_seed, int round, std::string_view kind, int shard) {
  std::uint64_t h = SplitMix(job_seed);
  h = SplitMix(h ^ static_cast<std::uint64_t>(round));
  h = SplitMix(h ^ (kind == common::kUnitFinetune ? 1u : 2u));
  return SplitMix(h ^ static_cast<std::uint64_t>(shard));
}

std::vector<UnitPlan> Planner::PlanRound(const common::JobSpec& spec, int round) {
  std::vector<UnitPlan> units;
  if (round < spec.rounds) {
    for (int i = 0; i < spec.units_per_round; ++i) {
      units.push_back({std::string(common::kUnitFinetune), i,
                       UnitSeed(spec.params.seed, round, common::kUnitFinetune, i)});
    }
  }
  for (int i = 0; i < spec.eval_units; ++i) {
    units.push_back({std::string(common::kUnitEval), i,
                     UnitSeed(spec.params.seed, round, common::kUnitEval, i)});
  }
  return units;
}

JobRows SelectRows(const common::JobSpec& spec, const common::Dataset& data) {
  JobRows rows;
  rows.own_test = data.test_size() > 0;
  if (rows.own_test) {
    rows.train = common::SplitIndices(data.size(), 0.0, spec.params.seed).train;
    rows.test = common::SplitIndices(data.test_size(), 0.0, spec.params.seed + 1).train;
  } else {
    common::Split split = common::SplitIndices(data.size(), spec.test_fraction, spec.params.seed);
    rows.train = std::move(split.train);
    rows.test = std::move(split.test);
  }
  if (spec.max_train_samples > 0 &&
      static_cast<std::int64_t>(rows.train.size()) > spec.max_train_samples) {
    rows.train.resize(static_cast<std::size_t>(spec.max_train_samples));
  }
  if (spec.max_test_samples > 0 &&
      static_cast<std::int64_t>(rows.test.size()) > spec.max_test_samples) {
    rows.test.resize(static_cast<std::size_t>(spec.max_test_samples));
  }
  return rows;
}

common::Result<NewJob> Planner::PlanJob(const common::JobSpec& spec, std::int64_t account_id,
                                        std::int64_t now, PlanMode mode, const Approval& approve) {
  const bool store = mode == PlanMode::kStore;
  // The API hands over specs it parsed, but the planner does not rely on its caller for the
  // protocol's limits (rounds, units, lease): going through the same parser keeps them defined
  // in one place.
  if (auto checked = common::ParseJobSpec(common::SerializeJobSpec(spec)); !checked) {
    return MakeError(Errc::kInvalidArgument, "job spec refused: " + checked.error().message);
  }

  // Model: "catalog:<name>" (a model this system trained) or "zoo:<spec>" (fresh weights).
  ResolvedModel model;
  if (spec.model.starts_with("catalog:")) {
    auto entry = store_.GetCatalogModel(spec.model.substr(8));
    if (!entry)
      return MakeError(Errc::kNotFound, "no catalog model '" + spec.model.substr(8) + "'");
    UBCP_ASSIGN_OR_RETURN(model.spec, common::ParseModelSpec(entry->model_spec));
    model.blob_id = entry->blob_id;
  } else if (spec.model.starts_with("zoo:")) {
    UBCP_ASSIGN_OR_RETURN(model.spec, common::ParseModelSpec(spec.model.substr(4)));
  } else {
    return MakeError(Errc::kInvalidArgument, "model must be catalog:<name> or zoo:<spec>");
  }

  auto dataset = common::LoadDataset(spec.dataset, datasets_);
  if (!dataset) return dataset.error();
  const common::Dataset& data = *dataset;

  // Hold out the test split before anything else: no train shard may contain a test row.
  const JobRows rows = SelectRows(spec, data);
  const std::vector<std::int64_t>& train_rows = rows.train;
  const std::vector<std::int64_t>& test_rows = rows.test;
  const bool own_test = rows.own_test;
  if (static_cast<std::int64_t>(train_rows.size()) < spec.units_per_round ||
      static_cast<std::int64_t>(test_rows.size()) < spec.eval_units) {
    return MakeError(Errc::kInvalidArgument, "data set too small for the requested shards");
  }

  NewJob job;
  job.account_id = account_id;
  job.name = spec.name;
  job.spec_json = common::SerializeJobSpec(spec);
  job.model_spec = model.spec.ToString();
  job.rounds = spec.rounds;
  job.lease_seconds = spec.deadline_s;
  job.now = now;

  const auto train_parts = common::Partition(train_rows, spec.units_per_round);
  const auto test_parts = common::Partition(test_rows, spec.eval_units);
  const common::NamedTensor& test_x = own_test ? data.test_x : data.x;
  const common::NamedTensor& test_y = own_test ? data.test_y : data.y;
  // Every shard, train and test: a label the model cannot output may sit in any of them, and a
  // donor would only find out after downloading it.
  auto check_fits = [&](const common::TensorList& shard) -> common::Status {
    if (auto fits = common::CheckDataShard(model.spec, shard); !fits) {
      return MakeError(Errc::kInvalidArgument, "data set '" + spec.dataset +
                                                   "' does not fit model " + job.model_spec + ": " +
                                                   fits.error().message);
    }
    return {};
  };
  // Sized and checked first, one shard at a time; stored only once approved.
  for (std::size_t i = 0; i < train_parts.size(); ++i) {
    UBCP_RETURN_IF_ERROR(check_fits(common::TakeRows(data.x, data.y, train_parts[i])));
    job.shards.push_back({ShardKind::kTrain, static_cast<int>(i), "",
                          static_cast<std::int64_t>(train_parts[i].size())});
  }
  for (std::size_t i = 0; i < test_parts.size(); ++i) {
    UBCP_RETURN_IF_ERROR(check_fits(common::TakeRows(test_x, test_y, test_parts[i])));
    job.shards.push_back({ShardKind::kTest, static_cast<int>(i), "",
                          static_cast<std::int64_t>(test_parts[i].size())});
  }
  job.round0_units = PlanRound(spec, 0);
  if (approve) UBCP_RETURN_IF_ERROR(approve(job));
  if (store) {
    for (ShardRecord& shard : job.shards) {
      const auto i = static_cast<std::size_t>(shard.index);
      common::TensorList rows = shard.kind == ShardKind::kTrain
                                    ? common::TakeRows(data.x, data.y, train_parts[i])
                                    : common::TakeRows(test_x, test_y, test_parts[i]);
      UBCP_ASSIGN_OR_RETURN(
          BlobRecord blob,
          PutTensorBlob(blobs_, store_, rows, common::FloatEncoding::kFp32, "data", now));
      shard.blob_id = blob.id;
    }
  }

  if (!store) {
    job.initial_model = model.blob_id;
  } else if (model.blob_id.empty()) {
    common::TensorList weights = common::InitModel(model.spec, spec.params.seed);
    UBCP_ASSIGN_OR_RETURN(
        BlobRecord blob,
        PutTensorBlob(blobs_, store_, weights, common::FloatEncoding::kFp32, "model", now));
    job.initial_model = blob.id;
  } else {
    job.initial_model = model.blob_id;
  }
  return job;
}

}  // namespace ubcp::coordinator
