// SPDX-License-Identifier: Apache-2.0
// The economy's clockwork on a real SQLite store: the budget forecast, periods that roll,
// shares issued and expired, and queued jobs admitted by the allocator within B(t) and each
// recipient's credits, light users first.
#include "ubcp/coordinator/economy.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "ubcp/coordinator/ledger.h"

namespace ubcp::coordinator {
namespace {

PeriodRecord Closed(std::int64_t validated) {
  PeriodRecord p;
  p.validated_credits = validated;
  p.closed = true;
  return p;
}

TEST(ForecastBudgetTest, BootstrapThenExponentiallyWeightedValidatedWork) {
  EconomyConfig config;
  config.period_seconds = 600;
  config.reserve_fraction = 0.1;
  config.forecast_alpha = 0.5;
  config.bootstrap_forecast_credits = 1000;
  PeriodRecord first = ForecastBudget({}, 4, 100, config);
  EXPECT_EQ(first.starts_at, 100);
  EXPECT_EQ(first.ends_at, 700);
  EXPECT_EQ(first.forecast_credits, 1000);
  EXPECT_EQ(first.reserve_credits, 100);
  EXPECT_EQ(first.budget_credits, 900);
  EXPECT_EQ(first.share_credits, 225);

  // Newest first: 8000 (newest), 4000, 2000 -> ewma = 2000, 3000, 5500.
  PeriodRecord later = ForecastBudget({Closed(8000), Closed(4000), Closed(2000)}, 3, 0, config);
  EXPECT_EQ(later.forecast_credits, 5500);
  EXPECT_EQ(later.reserve_credits, 550);
  EXPECT_EQ(later.budget_credits, 4950);
  EXPECT_EQ(later.share_credits, 1650);

  // A quiet period cannot pull the forecast below the floor.
  EXPECT_EQ(ForecastBudget({Closed(0)}, 1, 0, config).forecast_credits, 1000);
  // No recipient yet: the share is the whole budget.
  EXPECT_EQ(ForecastBudget({}, 0, 0, config).share_credits, 900);
  config.carry_over_shares = 2;
  EXPECT_EQ(CarryOverCap(first, config), 450);
}

class EconomyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ubcp_economy_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto store = OpenSqliteStore(dir_ / "coordinator.db");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
    config_.period_seconds = 1000;
    config_.reserve_fraction = 0.1;
    config_.bootstrap_forecast_credits = 1000;  // B = 900
    config_.carry_over_shares = 1;
    economy_.emplace(*store_, config_, [this] { return now_; });
  }
  void TearDown() override {
    economy_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::int64_t Recipient(const std::string& name) {
    auto id = store_->CreateAccount(name, "token-" + name, Role::kRecipient, now_);
    EXPECT_TRUE(id);
    return *id;
  }
  std::int64_t Job(std::int64_t account, std::int64_t price) {
    NewJob job;
    job.account_id = account;
    job.name = "job";
    job.spec_json = "{}";
    job.model_spec = "mlp-i4-h4-o2";
    job.rounds = 1;
    job.initial_model = std::string(64, 'a');
    job.price_credits = price;
    job.now = now_++;
    auto id = store_->CreateJob(job);
    EXPECT_TRUE(id) << id.error().ToString();
    return *id;
  }
  std::string State(std::int64_t job) { return store_->GetJob(job)->state; }
  std::int64_t Balance(std::int64_t account) { return *store_->Balance(RecipientAccount(account)); }
  void ExpectLedgerSound() {
    auto problems = store_->CheckLedger();
    ASSERT_TRUE(problems);
    for (const auto& p : *problems) ADD_FAILURE() << p;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
  EconomyConfig config_;
  std::optional<Economy> economy_;
  std::int64_t now_ = 10'000;
};

TEST_F(EconomyStoreTest, PeriodsOpenIssueSharesAndRoll) {
  const std::int64_t a = Recipient("a");
  const std::int64_t b = Recipient("b");
  ASSERT_TRUE(economy_->Tick());
  auto first = store_->CurrentPeriod();
  ASSERT_TRUE(first && first->has_value());
  EXPECT_EQ((*first)->id, 1);
  EXPECT_EQ((*first)->budget_credits, 900);
  EXPECT_EQ((*first)->share_credits, 450);
  EXPECT_EQ(Balance(a), 450);
  EXPECT_EQ(Balance(b), 450);
  ASSERT_TRUE(economy_->Tick());  // nothing is due: nothing changes
  EXPECT_EQ(Balance(a), 450);

  // b spends nothing; a grant lifts a above the carry-over cap (one share).
  ASSERT_TRUE(store_->PostLedger(
      Transfer("grant:x", LedgerKind::kGrant, "issuance", RecipientAccount(a), 1000, now_)));
  now_ += 1000;  // period 1 is over
  ASSERT_TRUE(economy_->Tick());
  auto periods = store_->RecentPeriods(10);
  ASSERT_TRUE(periods);
  ASSERT_EQ(periods->size(), 2u);
  EXPECT_TRUE((*periods)[1].closed);
  EXPECT_EQ((*periods)[0].starts_at, (*periods)[1].ends_at);  // no gap
  EXPECT_EQ(Balance(a), 450 + 450);  // capped at one share, then the new share
  EXPECT_EQ(Balance(b), 450 + 450);
  EXPECT_EQ(*store_->Balance(std::string(kExpiredAccount)), 1000);

  // Three periods later (the coordinator was down), every missed period is rolled in order.
  now_ += 3000;
  ASSERT_TRUE(economy_->Tick());
  EXPECT_EQ(store_->RecentPeriods(10)->size(), 5u);
  EXPECT_EQ(Balance(a), 900);
  ExpectLedgerSound();
}

TEST_F(EconomyStoreTest, AdmitsWithinTheBudgetAndTheCreditsLightUsersFirst) {
  const std::int64_t light = Recipient("light");
  const std::int64_t heavy = Recipient("heavy");
  ASSERT_TRUE(store_->PostLedger(
      Transfer("grant:h", LedgerKind::kGrant, "issuance", RecipientAccount(heavy), 5000, now_)));
  ASSERT_TRUE(economy_->Tick());  // period 1: B = 900, 450 each
  // heavy has used compute recently: a job of theirs ran and spent credits.
  const std::int64_t past = Job(heavy, 300);
  ASSERT_TRUE(economy_->AdmitQueued());
  ASSERT_EQ(State(past), "running");
  LedgerTxn spend =
      Transfer("spend:unit:1", LedgerKind::kSpend, JobAccount(past), "spent", 300, now_);
  spend.job_id = past;
  ASSERT_TRUE(store_->PostLedger(spend));

  // 600 of budget left; two jobs of 400 each cannot both run. The light user's goes first even
  // though the heavy user queued earlier.
  const std::int64_t heavy_job = Job(heavy, 400);
  const std::int64_t light_job = Job(light, 400);
  ASSERT_TRUE(economy_->AdmitQueued());
  EXPECT_EQ(State(light_job), "running");
  EXPECT_EQ(State(heavy_job), "queued");
  EXPECT_EQ(store_->CurrentPeriod()->value().admitted_credits, 700);
  EXPECT_EQ(Balance(light), 50);

  // A job the recipient's credits cannot cover stays queued, whatever the budget.
  const std::int64_t too_big = Job(light, 100);
  ASSERT_TRUE(economy_->AdmitQueued());
  EXPECT_EQ(State(too_big), "queued");

  // Next period: a fresh budget; the heavy user's job now runs.
  now_ += 1000;
  ASSERT_TRUE(economy_->Tick());
  EXPECT_EQ(State(heavy_job), "running");
  // The ledger balances; the only complaint is the spend this test wrote without a result.
  auto problems = store_->CheckLedger();
  ASSERT_TRUE(problems);
  ASSERT_EQ(problems->size(), 1u);
  EXPECT_NE((*problems)[0].find("job 1 spent 300"), std::string::npos) << (*problems)[0];
}

}  // namespace
}  // namespace ubcp::coordinator
