// SPDX-License-Identifier: Apache-2.0
// Validation by replication through the real coordinator and real donors (docs/SECURITY.md,
// "Replication and quorum"): replicas go to hosts of different donor accounts, agreeing results
// are paid, a cheater's results disagree with the quorum, it is caught, its credit is reversed
// and its key banned, and the job still learns.
#include "ubcp/coordinator/replication.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

class ReplicationTest : public LoopTest {
 protected:
  void Configure(coordinator::CoordinatorConfig& config) override {
    config.replication = coordinator::ReplicationPolicy{};
    config.replication.trusted_after = 1000;  // nobody becomes trusted: every work twice
    config.replication.ban_after = 2;
    config.replication.max_hosts_per_account = 2;
  }

  // Runs the donors side by side until the job ends (or the time is up); returns each
  // donor's summary.
  std::vector<client::RunSummary> RunUntilDone(std::int64_t job_id,
                                               const std::vector<std::unique_ptr<Donor>>& donors,
                                               const std::map<int, client::Adversary>& cheats) {
    std::atomic<bool> stop{false};
    std::vector<client::RunSummary> summaries(donors.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < donors.size(); ++i) {
      threads.emplace_back([&, i] {
        client::RunnerOptions options;
        options.executor = client::MakeInProcessExecutor();
        options.idle_poll_s = 0.05;
        options.max_backoff_s = 0.2;
        if (auto it = cheats.find(static_cast<int>(i)); it != cheats.end()) {
          options.adversary = it->second;
        }
        client::Runner runner(*donors[i]->api, *donors[i]->state, *donors[i]->key,
                              signing_key_->public_key(), donors[i]->registration.host_id, options);
        summaries[i] = runner.Run(stop);
      });
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < until) {
      const std::string state = store_->GetJob(job_id)->state;
      if (state != "running" && state != "queued") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop = true;
    for (auto& t : threads) t.join();
    return summaries;
  }

  std::vector<coordinator::ResultRecord> AllResults(std::int64_t job_id) {
    std::vector<coordinator::ResultRecord> out;
    const auto rounds = store_->SummarizeRounds(job_id);
    EXPECT_TRUE(rounds);
    for (const auto& round : *rounds) {
      const auto canonical = store_->ListResults(job_id, round.round, "");
      EXPECT_TRUE(canonical);
      for (const auto& c : *canonical) {
        const auto listed = store_->WorkResults(c.work_id);
        EXPECT_TRUE(listed);
        for (const auto& r : listed->first) out.push_back(r);
      }
    }
    return out;
  }
};

TEST_F(ReplicationTest, ReplicasGoToHostsOfDifferentAccountsAndAgree) {
  const std::int64_t job_id = SubmitJob(DigitsJob(2));
  // Two hosts of one account and one of another: a work's replicas can never both go to the
  // first account, so every work has one result from each account.
  std::vector<std::unique_ptr<Donor>> donors;
  donors.push_back(NewDonor("a1", "team-a"));
  donors.push_back(NewDonor("a2", "team-a"));
  donors.push_back(NewDonor("b1", "team-b"));
  RunUntilDone(job_id, donors, {});
  const common::JobStatus status = Status(job_id);
  ASSERT_EQ(status.state, "done");
  EXPECT_GT(status.history.back().eval_accuracy, 0.8);

  std::map<std::int64_t, std::string> account_of;
  account_of[donors[0]->registration.host_id] = "team-a";
  account_of[donors[1]->registration.host_id] = "team-a";
  account_of[donors[2]->registration.host_id] = "team-b";
  std::map<std::int64_t, std::set<std::string>> accounts_per_work;
  std::map<std::int64_t, int> results_per_work;
  for (const auto& r : AllResults(job_id)) {
    EXPECT_EQ(r.status, coordinator::ResultStatus::kValid) << "unit " << r.unit_id;
    accounts_per_work[r.work_id].insert(account_of[r.host_id]);
    ++results_per_work[r.work_id];
  }
  // 2 rounds x 2 finetune works + 3 evaluations, each computed twice by two accounts.
  EXPECT_EQ(results_per_work.size(), 7u);
  for (const auto& [work, n] : results_per_work) {
    EXPECT_EQ(n, 2) << "work " << work;
    EXPECT_EQ(accounts_per_work[work].size(), 2u) << "work " << work;
  }
  auto problems = store_->CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

TEST_F(ReplicationTest, ACheaterIsCaughtItsCreditReversedAndItsKeyBanned) {
  auto spec = common::ParseJobSpec(DigitsJob(3));
  ASSERT_TRUE(spec);
  spec->units_per_round = 3;
  spec->robust = "mean";  // no robust rule: replication alone must keep the cheater out
  const std::int64_t job_id = SubmitJob(common::SerializeJobSpec(*spec));
  std::vector<std::unique_ptr<Donor>> donors;
  for (int i = 0; i < 3; ++i) donors.push_back(NewDonor("honest-" + std::to_string(i)));
  donors.push_back(NewDonor("cheater"));
  const std::int64_t cheater = donors[3]->registration.host_id;
  auto summaries = RunUntilDone(job_id, donors, {{3, {client::AdversaryMode::kSignFlip, 10.0}}});

  const common::JobStatus status = Status(job_id);
  ASSERT_EQ(status.state, "done");
  std::cout << "final accuracy with a sign-flipping donor caught by replication: "
            << status.history.back().eval_accuracy << "; the cheater computed "
            << summaries[3].units_done << " units\n";
  EXPECT_GT(status.history.back().eval_accuracy, 0.8);

  auto host = store_->GetHost(cheater);
  ASSERT_TRUE(host);
  EXPECT_GE(host->offences, 1);
  // Not one result of the cheater stands, and it holds no points.
  int cheater_results = 0;
  for (const auto& r : AllResults(job_id)) {
    if (r.host_id == cheater) {
      ++cheater_results;
      EXPECT_EQ(r.status, coordinator::ResultStatus::kInvalid) << "unit " << r.unit_id;
    }
  }
  EXPECT_EQ(*store_->Balance(coordinator::DonorAccount(cheater)), 0);
  // Caught twice (ban_after = 2), or the job ended before it could offend again.
  if (host->offences >= 2) {
    EXPECT_NE(host->banned_at, 0);
    ASSERT_TRUE(summaries[3].fatal.has_value());
    EXPECT_EQ(summaries[3].fatal->code, common::Errc::kForbidden);
    auto again = donors[3]->api->RequestWork({});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, common::Errc::kForbidden);
  }
  for (int i = 0; i < 3; ++i) {
    auto honest = store_->GetHost(donors[i]->registration.host_id);
    EXPECT_EQ(honest->offences, 0);
    EXPECT_EQ(honest->banned_at, 0);
  }
  auto problems = store_->CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

TEST_F(ReplicationTest, AnAccountAttachesAtMostItsLimitOfHosts) {
  auto first = NewDonor("h1", "flood");
  auto second = NewDonor("h2", "flood");
  EXPECT_GT(second->registration.host_id, 0);
  // The third key of the same account is refused, whatever its key.
  auto http = NewHttp();
  client::CoordinatorApi api(*http);
  api.set_account_token(DonorAccountToken("flood"));
  auto dir = dir_ / "h3";
  auto state = client::HostState::Open(dir);
  ASSERT_TRUE(state);
  auto key = state->LoadOrCreateKey();
  ASSERT_TRUE(key);
  auto reg = client::EnsureRegistered(api, *state, *key, "h3", TinyBenchmark);
  ASSERT_FALSE(reg);
  EXPECT_EQ(reg.error().code, common::Errc::kForbidden) << reg.error().ToString();
  auto flood = store_->FindAccountByName("flood");
  ASSERT_TRUE(flood);
  EXPECT_EQ(store_->AccountHosts(flood->id)->size(), 2u);
  // Without a donor account's token nobody registers.
  client::CoordinatorApi anonymous(*http);
  auto walk_in = client::EnsureRegistered(anonymous, *state, *key, "h4", TinyBenchmark);
  ASSERT_FALSE(walk_in);
  EXPECT_EQ(walk_in.error().code, common::Errc::kUnauthorized);
}

}  // namespace
}  // namespace ubcp::itest
