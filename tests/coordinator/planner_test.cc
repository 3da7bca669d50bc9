// SPDX-License-Identifier: Apache-2.0
// The planner with a real SQLite store, a real blob store and the real packaged data sets.
#include "ubcp/coordinator/planner.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "support/temp_dir.h"
#include "ubcp/common/datasets.h"
#include "ubcp/common/model.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/tensor_blobs.h"

namespace ubcp::coordinator {
namespace {

namespace fs = std::filesystem;
using common::Errc;

constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::int64_t kDigitsRows = 1797;

using TempDir = ubcp::testing::TempDir;

common::JobSpec DigitsSpec() {
  common::JobSpec s;
  s.name = "digits test";
  s.model = "zoo:mlp-i784-h16-o10";
  s.dataset = "digits";
  s.rounds = 2;
  s.units_per_round = 4;
  s.eval_units = 2;
  s.params.local_steps = 5;
  s.params.batch_size = 16;
  s.params.lr = 0.05;
  s.params.momentum = 0.9;
  s.params.weight_decay = 0;
  s.params.optimizer = "sgd";
  s.params.seed = 7;
  s.aggregator = "fedavg";
  s.outer_lr = 1.0;
  s.outer_momentum = 0;
  s.update_encoding = "fp32";
  s.test_fraction = 0.2;
  s.deadline_s = 600;
  return s;
}

// One data row as bytes: the sample's pixels (or features) and its label.
std::string RowKey(const common::NamedTensor& x, const common::NamedTensor& y, std::int64_t row) {
  std::size_t per_row = 1;
  for (std::size_t i = 1; i < x.shape.size(); ++i) per_row *= static_cast<std::size_t>(x.shape[i]);
  std::string key;
  if (x.kind == common::TensorKind::kU8) {
    const auto* p = x.u8.data() + row * per_row;
    key.assign(reinterpret_cast<const char*>(p), per_row);
  } else {
    const auto* p = x.f32.data() + row * per_row;
    key.assign(reinterpret_cast<const char*>(p), per_row * sizeof(float));
  }
  key.push_back(static_cast<char>(y.u8[static_cast<std::size_t>(row)]));
  return key;
}

using RowCounts = std::unordered_map<std::string, int>;

void AddRows(const common::NamedTensor& x, const common::NamedTensor& y, RowCounts& counts) {
  for (std::int64_t r = 0; r < y.shape[0]; ++r) ++counts[RowKey(x, y, r)];
}

const common::Dataset& Digits() {
  static const common::Dataset digits = [] {
    auto d = common::LoadDataset("digits", common::DatasetPaths{});
    if (!d) throw std::runtime_error(d.error().ToString());
    return std::move(*d);
  }();
  return digits;
}

class PlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteStore(dir_.path() / "coordinator.db");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
    auto blobs = BlobStore::Open(dir_.path() / "blobs");
    ASSERT_TRUE(blobs) << blobs.error().ToString();
    blobs_.emplace(std::move(*blobs));
    planner_.emplace(*store_, *blobs_, common::DatasetPaths{});
  }

  common::Result<NewJob> Plan(const common::JobSpec& spec) {
    return planner_->PlanJob(spec, /*account_id=*/1, kNow);
  }

  // The shard's tensors, read back through the blob index like the coordinator does.
  common::TensorList Shard(const ShardRecord& shard) {
    auto list = GetTensorBlob(*blobs_, *store_, shard.blob_id);
    EXPECT_TRUE(list) << list.error().ToString();
    return list ? std::move(*list) : common::TensorList{};
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::optional<BlobStore> blobs_;
  std::optional<Planner> planner_;
};

std::vector<ShardRecord> ShardsOf(const NewJob& job, ShardKind kind) {
  std::vector<ShardRecord> out;
  for (const auto& s : job.shards) {
    if (s.kind == kind) out.push_back(s);
  }
  return out;
}

TEST_F(PlannerTest, DigitsShardsAreDisjointAndCoverTheTrainSplit) {
  const common::JobSpec spec = DigitsSpec();
  auto job = Plan(spec);
  ASSERT_TRUE(job) << job.error().ToString();
  const auto train = ShardsOf(*job, ShardKind::kTrain);
  const auto test = ShardsOf(*job, ShardKind::kTest);
  ASSERT_EQ(train.size(), 4u);
  ASSERT_EQ(test.size(), 2u);

  const std::int64_t expected_test = std::llround(spec.test_fraction * kDigitsRows);
  std::int64_t train_total = 0, test_total = 0, smallest = kDigitsRows, largest = 0;
  RowCounts remaining;  // every data row must be used exactly once, by train or test
  AddRows(Digits().x, Digits().y, remaining);
  std::set<std::string> train_keys, test_keys;
  auto take = [&](const ShardRecord& record, std::set<std::string>& keys) {
    const common::TensorList shard = Shard(record);
    ASSERT_EQ(shard.size(), 2u);
    const common::NamedTensor* x = common::FindTensor(shard, "x");
    const common::NamedTensor* y = common::FindTensor(shard, "y");
    ASSERT_NE(x, nullptr);
    ASSERT_NE(y, nullptr);
    ASSERT_EQ(x->shape, (std::vector<std::int64_t>{record.samples, 1, 28, 28}));
    ASSERT_EQ(y->shape, (std::vector<std::int64_t>{record.samples}));
    for (std::int64_t r = 0; r < record.samples; ++r) {
      const std::string key = RowKey(*x, *y, r);
      auto it = remaining.find(key);
      ASSERT_TRUE(it != remaining.end()) << "a shard row that is not in the data set";
      ASSERT_GT(it->second, 0) << "a data row used twice";
      --it->second;
      keys.insert(key);
    }
  };
  for (std::size_t i = 0; i < train.size(); ++i) {
    EXPECT_EQ(train[i].index, static_cast<int>(i));
    take(train[i], train_keys);
    train_total += train[i].samples;
    smallest = std::min(smallest, train[i].samples);
    largest = std::max(largest, train[i].samples);
  }
  for (std::size_t i = 0; i < test.size(); ++i) {
    EXPECT_EQ(test[i].index, static_cast<int>(i));
    take(test[i], test_keys);
    test_total += test[i].samples;
  }
  EXPECT_EQ(test_total, expected_test);
  EXPECT_EQ(train_total, kDigitsRows - expected_test);
  EXPECT_LE(largest - smallest, 1) << "shards should be nearly equal";
  for (const auto& [key, count] : remaining) EXPECT_EQ(count, 0);

  // No test row in a train shard (compared by content, which also catches a copied row).
  for (const auto& key : test_keys) EXPECT_EQ(train_keys.count(key), 0u);
}

TEST_F(PlannerTest, JobRecordsUnitsAndModel) {
  const common::JobSpec spec = DigitsSpec();
  auto job = Plan(spec);
  ASSERT_TRUE(job) << job.error().ToString();
  EXPECT_EQ(job->account_id, 1);
  EXPECT_EQ(job->rounds, spec.rounds);
  EXPECT_EQ(job->lease_seconds, spec.deadline_s);
  EXPECT_EQ(job->model_spec, "mlp-i784-h16-o10");
  EXPECT_EQ(job->now, kNow);
  auto parsed = common::ParseJobSpec(job->spec_json);
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->units_per_round, spec.units_per_round);

  // Round 0: one finetune unit per train shard, then the eval units, each with its own seed.
  ASSERT_EQ(job->round0_units.size(), 6u);
  std::set<std::uint64_t> seeds;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(job->round0_units[i].kind, common::kUnitFinetune);
    EXPECT_EQ(job->round0_units[i].shard_index, i);
    EXPECT_EQ(job->round0_units[i].seed, UnitSeed(7, 0, common::kUnitFinetune, i));
    seeds.insert(job->round0_units[i].seed);
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(job->round0_units[4 + i].kind, common::kUnitEval);
    EXPECT_EQ(job->round0_units[4 + i].shard_index, i);
    seeds.insert(job->round0_units[4 + i].seed);
  }
  EXPECT_EQ(seeds.size(), 6u);

  // The initial model is the seeded zoo model, recorded in the blob index.
  auto spec_parsed = common::ParseModelSpec("mlp-i784-h16-o10");
  ASSERT_TRUE(spec_parsed);
  auto weights = GetTensorBlob(*blobs_, *store_, job->initial_model);
  ASSERT_TRUE(weights) << weights.error().ToString();
  EXPECT_TRUE(common::CheckSameLayout(common::ModelLayout(*spec_parsed), *weights));
  const common::TensorList init = common::InitModel(*spec_parsed, spec.params.seed);
  ASSERT_EQ(weights->size(), init.size());
  for (std::size_t i = 0; i < init.size(); ++i) EXPECT_EQ((*weights)[i].f32, init[i].f32);
  for (const auto& shard : job->shards) {
    auto record = store_->GetBlob(shard.blob_id);
    ASSERT_TRUE(record) << record.error().ToString();
    EXPECT_EQ(record->kind, "data");
  }

  // The store takes the plan as it is.
  auto job_id = store_->CreateJob(*job);
  ASSERT_TRUE(job_id) << job_id.error().ToString();
  auto stored = store_->ListShards(*job_id);
  ASSERT_TRUE(stored) << stored.error().ToString();
  EXPECT_EQ(stored->size(), job->shards.size());
}

TEST_F(PlannerTest, LastRoundOnlyEvaluates) {
  const common::JobSpec spec = DigitsSpec();
  const auto middle = Planner::PlanRound(spec, 1);
  EXPECT_EQ(middle.size(), 6u);
  const auto last = Planner::PlanRound(spec, spec.rounds);
  ASSERT_EQ(last.size(), 2u);
  for (const auto& u : last) EXPECT_EQ(u.kind, common::kUnitEval);
  // Seeds differ between rounds.
  EXPECT_NE(Planner::PlanRound(spec, 0)[0].seed, middle[0].seed);
}

TEST_F(PlannerTest, SameSpecGivesTheSameShardsAndModel) {
  const common::JobSpec spec = DigitsSpec();
  auto first = Plan(spec);
  ASSERT_TRUE(first) << first.error().ToString();

  // A separate coordinator (fresh store and blob directory) plans the same job identically.
  TempDir other;
  auto store = OpenSqliteStore(other.path() / "coordinator.db");
  ASSERT_TRUE(store);
  auto blobs = BlobStore::Open(other.path() / "blobs");
  ASSERT_TRUE(blobs);
  Planner planner(**store, *blobs, common::DatasetPaths{});
  auto second = planner.PlanJob(spec, 1, kNow + 100);
  ASSERT_TRUE(second) << second.error().ToString();

  ASSERT_EQ(first->shards.size(), second->shards.size());
  for (std::size_t i = 0; i < first->shards.size(); ++i) {
    EXPECT_EQ(first->shards[i].blob_id, second->shards[i].blob_id);
    EXPECT_EQ(first->shards[i].samples, second->shards[i].samples);
  }
  EXPECT_EQ(first->initial_model, second->initial_model);
  ASSERT_EQ(first->round0_units.size(), second->round0_units.size());
  for (std::size_t i = 0; i < first->round0_units.size(); ++i) {
    EXPECT_EQ(first->round0_units[i].seed, second->round0_units[i].seed);
  }

  // Another seed shuffles differently.
  common::JobSpec reseeded = spec;
  reseeded.params.seed = 8;
  auto third = Plan(reseeded);
  ASSERT_TRUE(third) << third.error().ToString();
  EXPECT_NE(third->shards[0].blob_id, first->shards[0].blob_id);
  EXPECT_NE(third->initial_model, first->initial_model);
}

TEST_F(PlannerTest, MaxSamplesCapTheSplits) {
  common::JobSpec spec = DigitsSpec();
  spec.max_train_samples = 100;
  spec.max_test_samples = 30;
  auto job = Plan(spec);
  ASSERT_TRUE(job) << job.error().ToString();
  std::int64_t train = 0, test = 0;
  for (const auto& s : job->shards) (s.kind == ShardKind::kTrain ? train : test) += s.samples;
  EXPECT_EQ(train, 100);
  EXPECT_EQ(test, 30);
}

TEST_F(PlannerTest, DatasetThatDoesNotFitTheModelIsRefused) {
  common::JobSpec spec = DigitsSpec();
  spec.model = "zoo:mlp-i30-h8-o2";  // breast-cancer's shape, not digits'
  auto job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kInvalidArgument);
  EXPECT_NE(job.error().message.find("does not fit"), std::string::npos) << job.error().message;
  EXPECT_NE(job.error().message.find("digits"), std::string::npos) << job.error().message;

  common::JobSpec tabular = DigitsSpec();
  tabular.dataset = "breast-cancer";
  tabular.model = "zoo:cnn28-c4-c8-h16-o10";  // wants images
  auto refused = Plan(tabular);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kInvalidArgument);

  tabular.model = "zoo:mlp-i30-h8-o2";  // and the right model works
  auto fits = Plan(tabular);
  ASSERT_TRUE(fits) << fits.error().ToString();
}

// A model with too few classes must be refused whichever shard holds the label it cannot
// represent, not only when the first shard does.
TEST_F(PlannerTest, EveryShardIsCheckedAgainstTheModel) {
  common::JobSpec probe = DigitsSpec();
  probe.units_per_round = 2;
  probe.max_train_samples = 2;  // two one-row train shards
  // Find a seed whose first train row has a smaller label than some other shard's row.
  std::optional<int> first_label;
  for (std::uint64_t seed = 1; seed < 50 && !first_label; ++seed) {
    probe.params.seed = seed;
    auto job = Plan(probe);
    ASSERT_TRUE(job) << job.error().ToString();
    const auto train = ShardsOf(*job, ShardKind::kTrain);
    ASSERT_EQ(train.size(), 2u);
    const common::TensorList a = Shard(train[0]);
    const common::TensorList b = Shard(train[1]);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    const int label_a = a[1].u8.at(0), label_b = b[1].u8.at(0);
    if (label_a >= 1 && label_a < label_b) first_label = label_a;
  }
  ASSERT_TRUE(first_label.has_value());
  // Shard 0 fits a model with first_label + 1 classes; shard 1 (and the test split) do not.
  common::JobSpec spec = probe;
  spec.model = "zoo:mlp-i784-h16-o" + std::to_string(*first_label + 1);
  auto job = Plan(spec);
  ASSERT_FALSE(job) << "planned a job whose shards hold labels the model cannot output";
  EXPECT_EQ(job.error().code, Errc::kInvalidArgument);
}

TEST_F(PlannerTest, TooManyUnitsForTheDataAreRefused) {
  common::JobSpec spec = DigitsSpec();
  spec.max_train_samples = 10;
  spec.units_per_round = 11;
  auto job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kInvalidArgument);

  spec = DigitsSpec();
  spec.max_test_samples = 3;
  spec.eval_units = 4;
  job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kInvalidArgument);
}

TEST_F(PlannerTest, CountsOutsideTheProtocolLimitsAreRefused) {
  struct Case {
    const char* what;
    void (*change)(common::JobSpec&);
  };
  const Case cases[] = {
      {"rounds 0", [](common::JobSpec& s) { s.rounds = 0; }},
      {"rounds 1001", [](common::JobSpec& s) { s.rounds = 1001; }},
      {"units_per_round 0", [](common::JobSpec& s) { s.units_per_round = 0; }},
      {"units_per_round 1025", [](common::JobSpec& s) { s.units_per_round = 1025; }},
      {"units_per_round -1", [](common::JobSpec& s) { s.units_per_round = -1; }},
      {"eval_units 0", [](common::JobSpec& s) { s.eval_units = 0; }},
      {"eval_units 65", [](common::JobSpec& s) { s.eval_units = 65; }},
      {"deadline_s 5", [](common::JobSpec& s) { s.deadline_s = 5; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    common::JobSpec spec = DigitsSpec();
    c.change(spec);
    // Refused on the wire ...
    EXPECT_FALSE(common::ParseJobSpec(common::SerializeJobSpec(spec)));
    // ... and by the planner itself, whoever calls it.
    auto job = Plan(spec);
    ASSERT_FALSE(job);
    EXPECT_EQ(job.error().code, Errc::kInvalidArgument);
  }
}

TEST_F(PlannerTest, UnknownModelOrDatasetIsRefused) {
  common::JobSpec spec = DigitsSpec();
  spec.model = "catalog:no-such-model";
  auto job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kNotFound);

  spec.model = "mlp-i784-h16-o10";  // neither catalog: nor zoo:
  job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kInvalidArgument);

  spec = DigitsSpec();
  spec.dataset = "imagenet";
  job = Plan(spec);
  ASSERT_FALSE(job);
  EXPECT_NE(job.error().message.find("imagenet"), std::string::npos) << job.error().message;
}

TEST_F(PlannerTest, MissingDatasetPackageIsNotFound) {
  common::DatasetPaths paths;
  paths.sklearn_data_dir = dir_.path() / "no-sklearn-here";
  Planner planner(*store_, *blobs_, paths);
  auto job = planner.PlanJob(DigitsSpec(), 1, kNow);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, Errc::kNotFound);
}

TEST_F(PlannerTest, FashionMnistUsesItsOfficialTestSet) {
  auto data = common::LoadDataset("fashion-mnist", common::DatasetPaths{});
  ASSERT_TRUE(data) << data.error().ToString();
  common::JobSpec spec = DigitsSpec();
  spec.dataset = "fashion-mnist";
  spec.test_fraction = 0.5;  // ignored: the package has its own test split
  spec.max_train_samples = 1000;
  auto job = Plan(spec);
  ASSERT_TRUE(job) << job.error().ToString();

  RowCounts official_test;
  AddRows(data->test_x, data->test_y, official_test);
  RowCounts official_train;
  AddRows(data->x, data->y, official_train);
  std::int64_t train_total = 0, test_total = 0;
  for (const auto& record : job->shards) {
    const common::TensorList shard = Shard(record);
    ASSERT_EQ(shard.size(), 2u);
    RowCounts& pool = record.kind == ShardKind::kTest ? official_test : official_train;
    for (std::int64_t r = 0; r < record.samples; ++r) {
      auto it = pool.find(RowKey(shard[0], shard[1], r));
      ASSERT_TRUE(it != pool.end()) << (record.kind == ShardKind::kTest ? "test" : "train")
                                    << " shard row not from its official split";
      ASSERT_GT(it->second, 0) << "row used twice";
      --it->second;
    }
    (record.kind == ShardKind::kTest ? test_total : train_total) += record.samples;
  }
  EXPECT_EQ(train_total, 1000);
  // The whole official test set, exactly once.
  EXPECT_EQ(test_total, 10000);
  for (const auto& [key, count] : official_test) EXPECT_EQ(count, 0);
}

}  // namespace
}  // namespace ubcp::coordinator
