// SPDX-License-Identifier: Apache-2.0
// ResultJudge over a real SQLite store: results that disagree get another execution; the
// majority then decides, the odd one out is caught; a work without agreement after the most
// units it may use is dropped and nobody is paid.
#include "ubcp/coordinator/result_judge.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/ledger.h"

namespace ubcp::coordinator {
namespace {

class ResultJudgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteStore(dir_.path() / "c.db");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
    auto blobs = BlobStore::Open(dir_.path() / "blobs");
    ASSERT_TRUE(blobs);
    blobs_.emplace(std::move(*blobs));
    policy_ = ReplicationPolicy{};
    policy_.max_units = 4;
    judge_.emplace(*store_, *blobs_, policy_, [] { return std::int64_t{1000}; });

    ASSERT_TRUE(store_->RecordBlob({"model", 1, 1, "model"}, 1));
    ASSERT_TRUE(store_->RecordBlob({"test", 1, 1, "data"}, 1));
    auto account = store_->CreateAccount("alice", "th", Role::kRecipient, 1);
    ASSERT_TRUE(account);
    ASSERT_TRUE(
        store_->PostLedger(Transfer("grant:t", LedgerKind::kGrant, std::string(kIssuanceAccount),
                                    RecipientAccount(*account), 100, 1)));
    PeriodRoll roll;
    roll.next.starts_at = 0;
    roll.next.ends_at = 1'000'000;
    ASSERT_TRUE(store_->RollPeriod(roll));
    NewJob job;
    job.account_id = *account;
    job.name = "eval";
    job.spec_json = "{}";
    job.model_spec = "mlp";
    job.rounds = 0;
    job.shards = {{ShardKind::kTest, 0, "test", 100}};
    job.initial_model = "model";
    job.round0_units = {UnitPlan{std::string(common::kUnitEval), 0, 9, 2, false}};
    job.price_credits = 100;
    auto id = store_->CreateJob(job);
    ASSERT_TRUE(id) << id.error().ToString();
    job_ = *id;
    ASSERT_TRUE(store_->AdmitJob(job_, store_->CurrentPeriod()->value().id, 1));
  }

  std::int64_t Host(const std::string& key) {
    NewHost h{key, key, "token-" + key, "{}", "{}", 1};
    auto id = store_->CreateHost(h);
    EXPECT_TRUE(id) << id.error().ToString();
    return *id;
  }

  // Leases the next unit to `host` and records an eval result with `accuracy`; returns its unit.
  std::int64_t Answer(std::int64_t host, double accuracy) {
    auto leased = store_->LeaseUnit(
        host, {std::string(common::kUnitEval)}, 10,
        [](const LeaseContext&) { return common::Result<std::string>(std::string("mh")); });
    EXPECT_TRUE(leased && leased->has_value());
    const UnitRecord& unit = (*leased)->unit;
    ResultRecord r;
    r.unit_id = unit.id;
    r.host_id = host;
    r.attempt = unit.attempt;
    r.envelope_hash = "e" + std::to_string(unit.id);
    r.envelope_json = "{}";
    r.loss = 0.5;
    r.accuracy = accuracy;
    r.first_loss = 0;
    r.samples = 100;
    r.received_at = 10 + unit.id;
    r.credits = 10;
    EXPECT_TRUE(store_->RecordResult(r));
    return unit.id;
  }

  std::int64_t WorkOf(std::int64_t unit) { return store_->GetUnit(unit)->work_id; }

  testing::TempDir dir_{"ubcp-judge"};
  std::unique_ptr<Store> store_;
  std::optional<BlobStore> blobs_;
  ReplicationPolicy policy_;
  std::optional<ResultJudge> judge_;
  std::int64_t job_ = 0;
};

TEST_F(ResultJudgeTest, DisagreementAddsAnExecutionAndTheMajorityDecides) {
  const std::int64_t a = Host("a"), b = Host("b"), c = Host("c");
  const std::int64_t ua = Answer(a, 0.91);
  const std::int64_t work = WorkOf(ua);
  auto waiting = judge_->Judge(work);  // one of two results: nothing to decide
  ASSERT_TRUE(waiting);
  EXPECT_EQ(store_->WorkResults(work)->second, 2);
  const std::int64_t ub = Answer(b, 0.40);  // far outside the accuracy tolerance
  ASSERT_TRUE(judge_->Judge(work));
  EXPECT_EQ(store_->GetWork(work)->state, WorkState::kOpen);
  EXPECT_EQ(store_->WorkResults(work)->second, 3);  // a third execution
  EXPECT_EQ(*store_->Balance(DonorAccount(a)), 0);  // nobody paid yet
  const std::int64_t uc = Answer(c, 0.91);
  auto out = judge_->Judge(work);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->credited, 2);
  auto judged = store_->GetWork(work);
  EXPECT_EQ(judged->state, WorkState::kValid);
  EXPECT_EQ(judged->canonical_unit, ua);
  EXPECT_EQ(*store_->Balance(DonorAccount(a)), 10);
  EXPECT_EQ(*store_->Balance(DonorAccount(c)), 10);
  EXPECT_EQ(*store_->Balance(DonorAccount(b)), 0);
  EXPECT_EQ(store_->GetHost(b)->offences, 1);
  auto listed = store_->WorkResults(work);
  ASSERT_TRUE(listed);
  for (const ResultRecord& r : listed->first) {
    EXPECT_EQ(r.status, r.unit_id == ub ? ResultStatus::kInvalid : ResultStatus::kValid);
  }
  // Judging again changes nothing.
  auto again = judge_->Judge(work);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->credited, 0);
  (void)uc;
  auto problems = store_->CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

TEST_F(ResultJudgeTest, WithoutAgreementAfterTheLastUnitTheWorkIsDropped) {
  const std::int64_t work = WorkOf(Answer(Host("a"), 0.1));
  for (const auto& [key, accuracy] :
       std::vector<std::pair<std::string, double>>{{"b", 0.4}, {"c", 0.7}, {"d", 0.95}}) {
    ASSERT_TRUE(judge_->Judge(work));
    Answer(Host(key), accuracy);
  }
  ASSERT_TRUE(judge_->Judge(work));
  EXPECT_EQ(store_->GetWork(work)->state, WorkState::kDropped);
  EXPECT_EQ(store_->WorkResults(work)->second, 4);
  EXPECT_EQ(*store_->Balance(JobAccount(job_)), 100);  // nobody was paid
  auto summary = store_->SummarizeRounds(job_);
  ASSERT_TRUE(summary);
  EXPECT_EQ(summary->front().eval_done, 1);  // judged: the job can end
}

}  // namespace
}  // namespace ubcp::coordinator
