// SPDX-License-Identifier: Apache-2.0
// Crash recovery of the credit ledger with the real programs: a coordinator (ubcp-coordinator
// serve) that is SIGKILLed at random moments and restarted on the same port, three donor
// clients (ubcp-client) that keep working through the restarts, and jobs submitted with the
// recipient's tool (ubcp). Afterwards check-ledger passes, every result a donor was told was
// accepted (or a duplicate) is stored exactly once, and no unit is paid for twice.
//
// The random waits come from a seeded generator; the seed is printed, and UBCP_CRASH_SEED
// replays a run.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "integration/program_fixture.h"
#include "ubcp/common/wire.h"

namespace ubcp::itest {
namespace {

constexpr int kDonors = 3;
constexpr int kJobs = 6;
constexpr int kKills = 18;
constexpr int kMinKillsMidWork = 5;

// Small jobs: an MLP on sklearn's digits, five rounds of 2-3 units of 400 local steps (a fraction
// of a second each); six of them keep three donors busy through most of the kills. The 10 s
// lease (the minimum) soon re-issues a unit whose manifest was lost in a crash.
std::string CrashJob(int i) {
  common::JobSpec spec;
  spec.name = "crash-" + std::to_string(i);
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = 5;
  spec.units_per_round = 2 + i % 2;
  spec.eval_units = 1;
  spec.params = {400, 32, 0.05, 0.9, 0.0, "sgd", static_cast<std::uint64_t>(7 + i)};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  spec.deadline_s = 10;
  return common::SerializeJobSpec(spec);
}

class CrashRecoveryTest : public ProgramsTest {
 protected:
  CrashRecoveryTest() : ProgramsTest("crash") {}

  // What the coordinator is in the middle of: running jobs, and units leased to donors.
  std::pair<std::int64_t, std::int64_t> WorkInProgress() {
    Db db(data_ / "coordinator.db");
    return {db.Int("SELECT COUNT(*) FROM jobs WHERE state = 'running'"),
            db.Int("SELECT COUNT(*) FROM units WHERE state = 'leased'")};
  }
};

TEST_F(CrashRecoveryTest, KilledCoordinatorLosesAndDoublesNothing) {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("UBCP_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "crash-recovery seed " << seed << " (UBCP_CRASH_SEED=" << seed
            << " replays the waits)\n";
  std::mt19937_64 rng(seed);
  const auto started = Clock::now();

  ASSERT_TRUE(StartCoordinator());
  ASSERT_TRUE(SetUpRecipient());

  for (int i = 0; i < kDonors; ++i) {
    // Each donor attaches to its own donor account, so replicas can go to any two of them.
    const std::string donor_token = AddDonorAccount("donor-owner-" + std::to_string(i));
    donors_.push_back(Spawn(
        DonorCommand(i, donor_token, {"--threads", "1", "--poll", "0.2", "--bench-seconds", "0.2"}),
        DonorLog(i), DonorLog(i)));
  }
  // A donor that cannot reach the coordinator while it registers gives up: no kill before every
  // donor is registered.
  const std::map<std::int64_t, int> donor_of_host = WaitForRegistrations(30);
  ASSERT_EQ(donor_of_host.size(), static_cast<std::size_t>(kDonors));

  std::vector<std::int64_t> jobs;
  for (int i = 0; i < kJobs; ++i) {
    jobs.push_back(Submit(CrashJob(i), "job-" + std::to_string(i) + ".json"));
    ASSERT_GT(jobs.back(), 0);
  }
  std::cout << "submitted " << kJobs << " jobs after "
            << std::chrono::duration<double>(Clock::now() - started).count() << " s\n";

  // The kill loop: SIGKILL at a random moment, restart at once on the same port.
  std::uniform_real_distribution<double> pause(0.2, 2.5);
  int kills_mid_work = 0;
  std::int64_t leases_at_kills = 0;
  double restart_s = 0;
  for (int k = 0; k < kKills; ++k) {
    SleepSeconds(pause(rng));
    ASSERT_TRUE(coordinator_.Running())
        << "the coordinator died by itself (" << DescribeStatus(coordinator_.status()) << ")";
    const auto [running, leased] = WorkInProgress();
    if (running > 0) ++kills_mid_work;
    leases_at_kills += leased;
    coordinator_.Kill();
    ASSERT_TRUE(WIFSIGNALED(coordinator_.status()) && WTERMSIG(coordinator_.status()) == SIGKILL)
        << DescribeStatus(coordinator_.status());
    const auto t0 = Clock::now();
    ASSERT_TRUE(StartCoordinator()) << "restart " << k + 1;
    restart_s += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  Db live(data_ / "coordinator.db");
  std::cout << kKills << " SIGKILLs, " << kills_mid_work << " of them while a job was running, "
            << leases_at_kills << " units leased in all at those moments; mean restart "
            << restart_s / kKills << " s; results stored so far "
            << live.Int("SELECT COUNT(*) FROM results") << "\n";
  EXPECT_GE(kills_mid_work, kMinKillsMidWork)
      << "the jobs finished too early for the kills to test recovery";

  // The jobs go on after the last restart and finish.
  const std::string job_list = [&] {
    std::string s;
    for (auto id : jobs) s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
  }();
  const auto finish_by = Clock::now() + std::chrono::seconds(200);
  while (live.Int("SELECT COUNT(*) FROM jobs WHERE id IN (" + job_list +
                  ") AND state IN ('queued', 'running')") > 0 &&
         Clock::now() < finish_by) {
    SleepSeconds(0.25);
  }
  for (const Row& row : live.Query("SELECT id, state, current_round, rounds, error FROM jobs")) {
    EXPECT_EQ(row[1], "done") << "job " << row[0] << " round " << row[2] << "/" << row[3] << " "
                              << row[4];
  }

  // Every stored result was answered to its donor, though maybe only after a restart: wait for
  // the donors' last retries to land before stopping them.
  const std::int64_t stored = live.Int("SELECT COUNT(*) FROM results");
  auto count_acks = [&] {
    std::size_t n = 0;
    for (int i = 0; i < kDonors; ++i) n += AcknowledgedUnits(ReadFile(DonorLog(i))).size();
    return n;
  };
  const auto acked_by = Clock::now() + std::chrono::seconds(30);
  while (static_cast<std::int64_t>(count_acks()) < stored && Clock::now() < acked_by) {
    SleepSeconds(0.25);
  }
  for (int i = 0; i < kDonors; ++i) {
    EXPECT_TRUE(donors_[i].Running())
        << "donor " << i << " stopped by itself: " << DescribeStatus(donors_[i].status());
  }
  // 1. The ledger's own invariants.
  StopAllAndCheckLedger();

  Db db(data_ / "coordinator.db");
  // 2. Every result acknowledged to a donor is stored once, as that donor's.
  std::map<std::int64_t, std::int64_t> result_host;  // unit -> host
  for (const Row& row : db.Query("SELECT unit_id, host_id FROM results")) {
    result_host[std::stoll(row[0])] = std::stoll(row[1]);
  }
  std::set<std::int64_t> acked;
  int duplicates = 0;
  for (const auto& [host, donor] : donor_of_host) {
    for (const auto& [unit, status] : AcknowledgedUnits(ReadFile(DonorLog(donor)))) {
      EXPECT_TRUE(acked.insert(unit).second) << "unit " << unit << " acknowledged to two donors";
      duplicates += status == "duplicate";
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE unit_id = " + std::to_string(unit)), 1)
          << "unit " << unit << " was acknowledged (" << status << ") to donor " << donor;
      auto it = result_host.find(unit);
      if (it != result_host.end()) {
        EXPECT_EQ(it->second, host) << "unit " << unit << " is stored as another host's result";
      }
    }
  }
  // ... and nothing was stored that its donor never heard of.
  for (const auto& [unit, host] : result_host) {
    EXPECT_TRUE(acked.count(unit))
        << "unit " << unit << " of host " << host << " is stored but its donor was never answered";
  }
  std::cout << acked.size() << " results acknowledged (" << duplicates
            << " as duplicates of a result stored before a crash), " << result_host.size()
            << " stored\n";
  EXPECT_GT(acked.size(), 0u);

  // 3. Nothing counted twice: per job, one spend and one points transaction per valid result
  //    that costs credits, for exactly that result's credits, and the job's price is exactly
  //    what it spent plus what was refunded (adaptive replication computes fewer replicas than
  //    priced once donors are trusted). Every donor here is honest: no result is invalid.
  for (std::int64_t job : jobs) {
    const std::string j = std::to_string(job);
    SCOPED_TRACE("job " + j);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM jobs WHERE id = " + j + " AND state = 'done'"), 1);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM units WHERE job_id = " + j + " AND state != 'done'"), 0);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j),
              db.Int("SELECT COUNT(*) FROM units WHERE job_id = " + j));
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j + " AND status != 'valid'"),
              0);
    const std::int64_t paid =
        db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j + " AND credits > 0");
    EXPECT_GT(paid, 0);
    for (const std::string kind : {"spend", "points"}) {
      SCOPED_TRACE(kind);
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM ledger_txns WHERE job_id = " + j + " AND kind = '" +
                       kind + "'"),
                paid);
      // Keys are "<kind>:unit:<id>" (unique in the ledger): with the count above, every paid
      // result has its own transaction, for its credits and its host, and there is no other.
      const std::string account =
          kind == "spend" ? "e.account = 'spent'" : "e.account = 'donor:' || r.host_id";
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results r JOIN ledger_txns t ON t.key = '" + kind +
                       ":unit:' || r.unit_id JOIN ledger_entries e ON e.txn_key = t.key AND " +
                       account + " AND e.amount = r.credits WHERE r.job_id = " + j +
                       " AND r.credits > 0 AND t.job_id = r.job_id"),
                paid);
    }
    EXPECT_EQ(db.Int("SELECT COALESCE(SUM(credits), 0) FROM results WHERE job_id = " + j) +
                  db.Int("SELECT COALESCE(SUM(e.amount), 0) FROM ledger_txns t JOIN "
                         "ledger_entries e ON e.txn_key = t.key WHERE t.kind = 'refund' AND "
                         "t.job_id = " +
                         j + " AND e.amount > 0"),
              db.Int("SELECT price_credits FROM jobs WHERE id = " + j));
    EXPECT_EQ(db.Int("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account = 'job:" +
                     j + "'"),
              0);
  }
  std::cout << "finished in " << std::chrono::duration<double>(Clock::now() - started).count()
            << " s\n";
}

}  // namespace
}  // namespace ubcp::itest
