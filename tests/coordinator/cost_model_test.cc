// SPDX-License-Identifier: Apache-2.0
// The cost model: unit costs follow the model's FLOP count, round up to whole credits, and a
// job's price is exactly the sum of its units.
#include "ubcp/coordinator/cost_model.h"

#include <gtest/gtest.h>

namespace ubcp::coordinator {
namespace {

common::ModelSpec Mlp() { return *common::ParseModelSpec("mlp-i784-h64-o10"); }

TEST(CostModelTest, UnitCostsFollowTheFlopCount) {
  const common::ModelSpec mlp = Mlp();
  const std::int64_t train_flop = common::TrainFlopsPerSample(mlp) * 30 * 32;
  const std::int64_t expected = (train_flop + 999'999) / 1'000'000;
  EXPECT_EQ(*FinetuneUnitCredits(mlp, 30, 32), expected);
  EXPECT_EQ(*FinetuneUnitCredits(mlp, 60, 32), (2 * train_flop + 999'999) / 1'000'000);
  EXPECT_EQ(*EvalUnitCredits(mlp, 1), 1);  // any work costs at least one credit
  EXPECT_EQ(*EvalUnitCredits(mlp, 1000),
            (common::EvalFlopsPerSample(mlp) * 1000 + 999'999) / 1'000'000);
  EXPECT_FALSE(FinetuneUnitCredits(mlp, 0, 32));
  EXPECT_FALSE(FinetuneUnitCredits(mlp, 30, -1));
  EXPECT_FALSE(EvalUnitCredits(mlp, 0));
}

TEST(CostModelTest, AJobCostsTheSumOfItsUnits) {
  common::JobSpec spec;
  spec.rounds = 3;
  spec.units_per_round = 2;
  spec.eval_units = 2;
  spec.params.local_steps = 30;
  spec.params.batch_size = 32;
  const common::ModelSpec mlp = Mlp();
  auto price = PriceJob(mlp, spec, {180, 179}, 0, 1);
  ASSERT_TRUE(price) << price.error().ToString();
  const std::int64_t train = *FinetuneUnitCredits(mlp, 30, 32);
  const std::int64_t eval = *EvalUnitCredits(mlp, 180) + *EvalUnitCredits(mlp, 179);
  EXPECT_EQ(price->train_units, 6);
  EXPECT_EQ(price->eval_units, 8);  // 4 models evaluated on 2 shards
  EXPECT_EQ(price->credits, 6 * train + 4 * eval);
  // Two finetune units replicated, every evaluation run twice.
  auto replicated = PriceJob(mlp, spec, {180, 179}, 2, 2);
  ASSERT_TRUE(replicated);
  EXPECT_EQ(replicated->credits, 8 * train + 8 * eval);
  EXPECT_EQ(replicated->replication, 2);
  EXPECT_FALSE(PriceJob(mlp, spec, {180}, 0, 0));
  EXPECT_FALSE(PriceJob(mlp, spec, {180}, 7, 1));  // more replicas than units
  EXPECT_FALSE(PriceJob(mlp, spec, {180}, -1, 1));
  spec.params.local_steps = 1 << 30;
  spec.params.batch_size = 1 << 30;
  EXPECT_FALSE(PriceJob(mlp, spec, {180}, 0, 1));  // overflow is an error, not a wrap
}

TEST(CostModelTest, DescribesCreditsForPeople) {
  EXPECT_DOUBLE_EQ(CreditsToFlop(3), 3e6);
  const std::string text = DescribeCredits(86'400'000'000'000);  // 8.64e19 FLOP
  EXPECT_NE(text.find("8.64e+19 FLOP"), std::string::npos) << text;
  EXPECT_NE(text.find("(1 PFLOP/s-days)"), std::string::npos) << text;
}

}  // namespace
}  // namespace ubcp::coordinator
