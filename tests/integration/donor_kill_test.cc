// SPDX-License-Identifier: Apache-2.0
// Nothing lost, nothing counted twice, when a donor's client is killed: two real donors
// (ubcp-client with its ubcp-worker processes) are SIGKILLed at random moments -- while leasing,
// downloading, training, uploading or posting -- and restarted at once on the same state
// directory, while a real coordinator (ubcp-coordinator serve) runs a replicated fine-tuning job.
// Afterwards: the job is done and every result valid (a resumed unit returns what an
// uninterrupted one returns, so replicas still agree); every unit a donor finished is
// acknowledged to it exactly once and stored exactly once as its result; nothing is stored that a
// donor was not acknowledged; check-ledger passes; no worker outlives its killed daemon; and a
// unit resumed after a kill continues from its last checkpoint, never from an earlier one.
//
// The random waits come from a seeded generator; the seed is printed, and UBCP_KILL_SEED
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
#include <sstream>
#include <string>
#include <vector>

#include "integration/program_fixture.h"
#include "ubcp/common/wire.h"

namespace ubcp::itest {
namespace {

constexpr int kDonors = 2;
constexpr int kKills = 16;
constexpr int kCheckpointEvery = 100;

// One job of fine-tune units long enough (1500 local steps, about a second of training) that
// most kills land in the middle of one, with checkpoints every kCheckpointEvery steps.
std::string KillJob() {
  common::JobSpec spec;
  spec.name = "donor-kill";
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = 8;
  spec.units_per_round = 2;
  spec.eval_units = 1;
  spec.params = {1500, 32, 0.05, 0.9, 0.0, "sgd", 11};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  spec.deadline_s = 10;
  return common::SerializeJobSpec(spec);
}

// Unit ids in a donor's units/finished.log with the given ending ("acknowledged" or "failed"),
// with how often each appears.
std::map<std::int64_t, int> FinishedUnits(const fs::path& state, const std::string& ending) {
  std::map<std::int64_t, int> ids;
  std::istringstream in(ReadFile(state / "units" / "finished.log"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::int64_t id = 0;
    std::string word;
    if (words >> id >> word && word == ending) ++ids[id];
  }
  return ids;
}

class DonorKillTest : public ProgramsTest {
 protected:
  DonorKillTest() : ProgramsTest("donor-kill") {}

  // Starts (or restarts) donor i and waits until it has written its first log line: from then
  // on its signal handlers are in place, so the SIGTERM that ends the test stops it cleanly (a
  // program stopped before its main has run dies by the signal, whatever it does).
  void StartDonor(std::size_t i) {
    std::ofstream(DonorLog(i), std::ios::app) << "=== test: starting donor " << i << "\n";
    const auto marked = fs::file_size(DonorLog(i));
    Child child = Spawn(DonorCommand(i, donor_tokens_[i],
                                     {"--threads", "1", "--poll", "0.2", "--bench-seconds", "0.2",
                                      "--checkpoint-every", std::to_string(kCheckpointEvery),
                                      "--checkpoint-seconds", "0", "--log-level", "debug"}),
                        DonorLog(i), DonorLog(i));
    if (i < donors_.size()) {
      donors_[i] = std::move(child);
    } else {
      donors_.push_back(std::move(child));
    }
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (fs::file_size(DonorLog(i)) == marked && donors_[i].Running() && Clock::now() < until) {
      SleepSeconds(0.01);
    }
  }

  std::vector<std::string> donor_tokens_;
};

TEST_F(DonorKillTest, KilledDonorsLoseNothingAndCountNothingTwice) {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("UBCP_KILL_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "donor-kill seed " << seed << " (UBCP_KILL_SEED=" << seed << " replays the waits)\n";
  std::mt19937_64 rng(seed);
  const auto started = Clock::now();

  ASSERT_TRUE(StartCoordinator());
  ASSERT_TRUE(SetUpRecipient());
  for (int i = 0; i < kDonors; ++i) {
    donor_tokens_.push_back(AddDonorAccount("donor-owner-" + std::to_string(i)));
    StartDonor(i);
  }
  const std::map<std::int64_t, int> donor_of_host = WaitForRegistrations(60);
  ASSERT_EQ(donor_of_host.size(), static_cast<std::size_t>(kDonors));
  std::smatch m;
  const std::int64_t job = Submit(KillJob(), "job.json");
  ASSERT_GT(job, 0);
  Db live(data_ / "coordinator.db");
  const std::string job_done = "SELECT COUNT(*) FROM jobs WHERE id = " + std::to_string(job) +
                               " AND state IN ('queued', 'running')";

  // The kill loop: SIGKILL one donor at a random moment, check its worker went with it, restart.
  std::uniform_real_distribution<double> pause(0.3, 2.0);
  std::uniform_int_distribution<int> which(0, kDonors - 1);
  int kills = 0, kills_mid_unit = 0;
  for (int k = 0; k < kKills && live.Int(job_done) > 0; ++k) {
    SleepSeconds(pause(rng));
    const int i = which(rng);
    ASSERT_TRUE(donors_[i].Running())
        << "donor " << i << " stopped by itself: " << DescribeStatus(donors_[i].status());
    const bool mid_unit = !WorkerProcesses(DonorState(i).string()).empty();
    donors_[i].Kill();
    ++kills;
    kills_mid_unit += mid_unit;
    // The worker dies with its daemon (PR_SET_PDEATHSIG), so it cannot write after the restart.
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (!WorkerProcesses(DonorState(i).string()).empty() && Clock::now() < until) {
      SleepSeconds(0.02);
    }
    ASSERT_TRUE(WorkerProcesses(DonorState(i).string()).empty())
        << "a worker of donor " << i << " outlived its daemon";
    StartDonor(i);
  }
  std::cout << kills << " SIGKILLs of a donor, " << kills_mid_unit
            << " of them while it had a worker (running a unit or waiting for the next)\n";
  EXPECT_GE(kills_mid_unit, 3) << "too few kills landed while a worker was there";

  const auto finish_by = Clock::now() + std::chrono::seconds(180);
  while (live.Int(job_done) > 0 && Clock::now() < finish_by) SleepSeconds(0.25);
  ASSERT_EQ(live.Int(job_done), 0) << "the job did not finish";
  // The donors' last results may still be on their way: wait until every stored result of a
  // donor is in its finished.log, then stop them.
  const auto all_acked = [&] {
    for (const auto& [host, i] : donor_of_host) {
      const auto acked = FinishedUnits(DonorState(i), "acknowledged");
      for (const Row& row :
           live.Query("SELECT unit_id FROM results WHERE host_id = " + std::to_string(host))) {
        if (!acked.count(std::stoll(row[0]))) return false;
      }
    }
    return true;
  };
  const auto acked_by = Clock::now() + std::chrono::seconds(30);
  while (!all_acked() && Clock::now() < acked_by) SleepSeconds(0.25);
  StopAllAndCheckLedger();

  Db db(data_ / "coordinator.db");
  const std::string j = std::to_string(job);
  EXPECT_EQ(db.Int("SELECT COUNT(*) FROM jobs WHERE id = " + j + " AND state = 'done'"), 1);
  EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j + " AND status != 'valid'"),
            0)
      << "a resumed unit disagreed with its replica";
  int acknowledged = 0, resumed = 0, continued = 0;
  for (const auto& [host, i] : donor_of_host) {
    SCOPED_TRACE("donor " + std::to_string(i));
    const auto acked = FinishedUnits(DonorState(i), "acknowledged");
    std::set<std::int64_t> stored;
    for (const Row& row :
         db.Query("SELECT unit_id FROM results WHERE host_id = " + std::to_string(host))) {
      stored.insert(std::stoll(row[0]));
    }
    // Every unit finished is acknowledged once and stored once, as this host's result ...
    for (const auto& [unit, times] : acked) {
      EXPECT_EQ(times, 1) << "unit " << unit << " acknowledged " << times << " times";
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE unit_id = " + std::to_string(unit) +
                       " AND host_id = " + std::to_string(host)),
                1)
          << "unit " << unit;
    }
    // ... and nothing is stored that the donor was not acknowledged.
    for (std::int64_t unit : stored) EXPECT_EQ(acked.count(unit), 1u) << "unit " << unit;
    acknowledged += static_cast<int>(acked.size());
    // Nothing left half done on disk.
    for (const auto& entry : fs::directory_iterator(DonorState(i) / "units")) {
      EXPECT_FALSE(entry.is_directory()) << "unit left in " << entry.path();
    }

    // A resumed unit continues from its newest checkpoint: never before a checkpoint the worker
    // reported saved.
    static const std::regex kCheckpoint(R"(unit (\d+) checkpoint after step (\d+))");
    static const std::regex kResumed(R"(unit (\d+): resumed from the checkpoint after step (\d+))");
    std::map<std::int64_t, std::int64_t> newest;
    std::istringstream log(ReadFile(DonorLog(i)));
    std::string line;
    while (std::getline(log, line)) {
      if (std::regex_search(line, m, kCheckpoint)) {
        auto& step = newest[std::stoll(m[1])];
        step = std::max<std::int64_t>(step, std::stoll(m[2]));
      } else if (std::regex_search(line, m, kResumed)) {
        ++resumed;
        EXPECT_GE(std::stoll(m[2]), newest[std::stoll(m[1])]) << line;
        EXPECT_EQ(std::stoll(m[2]) % kCheckpointEvery, 0) << line;
      } else if (line.find("continuing unit") != std::string::npos) {
        ++continued;
      }
    }
  }
  std::cout << acknowledged << " units acknowledged, " << continued
            << " units continued after a restart, " << resumed
            << " of them from a training checkpoint; "
            << std::chrono::duration<double>(Clock::now() - started).count() << " s\n";
  EXPECT_GT(acknowledged, 0);
  EXPECT_GE(continued, 1) << "no kill left a unit to continue";
  EXPECT_GE(resumed, 1) << "no unit was resumed from a checkpoint";
}

}  // namespace
}  // namespace ubcp::itest
