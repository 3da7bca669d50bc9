// SPDX-License-Identifier: Apache-2.0
// The donor's daemon and its worker, with the real programs (ubcp-coordinator serve, ubcp-client,
// ubcp-worker): the idle daemon stays light (no libtorch mapped, resident memory under 40 MiB);
// a unit runs in a worker at nice 19 with the donor's thread count; `ubcp-client pause` stops
// that worker, which leaves a checkpoint, and `resume` continues the unit from it; a worker above
// the donor's memory limit is stopped and its unit given up, while the daemon goes on; the
// coordinator hears of it and offers the unit again at once.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "integration/program_fixture.h"
#include "ubcp/common/wire.h"

namespace ubcp::itest {
namespace {

// A fine-tune job whose units train long enough (4000 steps) to be paused in the middle.
std::string LongJob(int local_steps) {
  common::JobSpec spec;
  spec.name = "donor-control";
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = 1;
  spec.units_per_round = 1;
  spec.eval_units = 1;
  spec.params = {local_steps, 32, 0.05, 0.9, 0.0, "sgd", 5};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  spec.deadline_s = 600;
  return common::SerializeJobSpec(spec);
}

// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat.
std::string StatField(int pid, int n) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  for (int i = 3; i <= n && rest >> field; ++i) {
  }
  return field;
}

std::int64_t VmRssKiB(int pid) {
  std::smatch m;
  const std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  return std::regex_search(status, m, std::regex(R"(VmRSS:\s+(\d+) kB)")) ? std::stoll(m[1]) : -1;
}

template <class F>
bool WaitUntil(F&& done, double seconds) {
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (Clock::now() > until) return false;
    SleepSeconds(0.05);
  }
  return true;
}

class DonorControlTest : public ProgramsTest {
 protected:
  DonorControlTest() : ProgramsTest("donor-control") {}

  void SetUp() override {
    ProgramsTest::SetUp();
    ASSERT_TRUE(StartCoordinator());
    ASSERT_TRUE(SetUpRecipient());
  }

  // Starts the donor with `extra` flags and waits until it is registered.
  void StartDonor(const std::vector<std::string>& extra) {
    std::vector<std::string> flags = {"--poll", "0.2",         "--bench-seconds",
                                      "0.2",    "--log-level", "debug"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    donors_.push_back(
        Spawn(DonorCommand(0, AddDonorAccount("donor-owner"), flags), DonorLog(0), DonorLog(0)));
    ASSERT_TRUE(WaitUntil([&] { return fs::exists(DonorState(0) / "registration.json"); }, 60))
        << Tail(ReadFile(DonorLog(0)));
  }

  Output Control(const std::string& command) {
    return RunTool({UBCP_CLIENT_BIN, command, "--state", DonorState(0).string(), "--json"});
  }

  std::string FinishedLog() { return ReadFile(DonorState(0) / "units" / "finished.log"); }
};

TEST_F(DonorControlTest, PauseStopsTheWorkerAndResumeContinuesFromItsCheckpoint) {
  StartDonor({"--max-cores", "1", "--checkpoint-every", "100"});
  // Idle: registered, polling, no unit. The daemon has not loaded libtorch.
  SleepSeconds(1.5);
  const int daemon = donors_[0].pid();
  const std::string maps = ReadFile("/proc/" + std::to_string(daemon) + "/maps");
  EXPECT_EQ(maps.find("libtorch"), std::string::npos) << "the idle daemon maps libtorch";
  const std::int64_t idle_rss_kib = VmRssKiB(daemon);
  std::cout << "idle daemon: " << idle_rss_kib / 1024.0 << " MiB resident\n";
  EXPECT_GT(idle_rss_kib, 0);
  EXPECT_LT(idle_rss_kib, 40 * 1024) << "idle daemon above 40 MiB";

  ASSERT_GT(Submit(LongJob(4000), "job.json"), 0);
  // A fine-tune unit runs and has written a checkpoint.
  const std::string state = DonorState(0).string();
  std::vector<int> workers;
  ASSERT_TRUE(WaitUntil(
      [&] {
        workers = WorkerProcesses(state);
        if (workers.empty()) return false;
        for (const auto& entry : fs::directory_iterator(DonorState(0) / "units")) {
          if (fs::exists(entry.path() / "checkpoint")) return true;
        }
        return false;
      },
      60))
      << Tail(ReadFile(DonorLog(0)));
  const int worker = workers.front();
  EXPECT_EQ(StatField(worker, 19), "19") << "the worker's nice value";
  const std::string cmdline = ReadFile("/proc/" + std::to_string(worker) + "/cmdline");
  EXPECT_NE(cmdline.find(std::string("--threads\0001", 11)), std::string::npos);
  const std::string environ_text = ReadFile("/proc/" + std::to_string(worker) + "/environ");
  EXPECT_NE(environ_text.find("OMP_NUM_THREADS=1"), std::string::npos);

  auto paused = Control("pause");
  ASSERT_TRUE(paused.ok()) << paused.out << paused.err;
  const auto pause_at = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return WorkerProcesses(state).empty(); }, 15))
      << "the worker still runs after pause";
  std::cout << "worker stopped " << std::chrono::duration<double>(Clock::now() - pause_at).count()
            << " s after pause\n";
  SleepSeconds(1.0);
  EXPECT_TRUE(WorkerProcesses(state).empty()) << "a worker started while paused";
  auto status = Control("status");
  ASSERT_TRUE(status.ok()) << status.err;
  EXPECT_NE(status.out.find(R"("state":"paused")"), std::string::npos) << status.out;
  EXPECT_EQ(FinishedLog().find("acknowledged"), std::string::npos)
      << "a unit was finished while paused";

  auto resumed = Control("resume");
  ASSERT_TRUE(resumed.ok()) << resumed.out << resumed.err;
  std::smatch m;
  std::string log;  // m points into it
  ASSERT_TRUE(WaitUntil(
      [&] {
        log = ReadFile(DonorLog(0));
        return std::regex_search(log, m,
                                 std::regex(R"(resumed from the checkpoint after step (\d+))"));
      },
      60))
      << Tail(ReadFile(DonorLog(0)));
  // Pause saved a checkpoint at the step the worker had reached: the unit goes on from exactly
  // there, the newest checkpoint logged before the resume.
  const std::int64_t resumed_step = std::stoll(m[1]);
  const std::string before_resume = log.substr(0, m.position(0));
  std::int64_t newest = 0;
  static const std::regex kCheckpoint(R"(checkpoint after step (\d+))");
  for (auto it = std::sregex_iterator(before_resume.begin(), before_resume.end(), kCheckpoint);
       it != std::sregex_iterator(); ++it) {
    newest = std::max<std::int64_t>(newest, std::stoll((*it)[1]));
  }
  std::cout << "resumed from step " << resumed_step << "; newest checkpoint before: " << newest
            << "\n";
  EXPECT_GT(resumed_step, 0);
  EXPECT_EQ(resumed_step, newest);
  // The unit ends and is acknowledged (as are the job's others), once each.
  ASSERT_TRUE(
      WaitUntil([&] { return FinishedLog().find("acknowledged") != std::string::npos; }, 120))
      << Tail(ReadFile(DonorLog(0)));
  const int st = donors_[0].Terminate(15);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeStatus(st);
}

TEST_F(DonorControlTest, AWorkerOverTheMemoryLimitIsStoppedAndItsUnitGivenUp) {
  // libtorch alone takes more than 64 MiB: every unit's worker goes over this limit.
  StartDonor({"--max-cores", "1", "--memory-limit-mb", "64"});
  ASSERT_GT(Submit(LongJob(400), "job.json"), 0);
  ASSERT_TRUE(WaitUntil([&] { return FinishedLog().find(" failed ") != std::string::npos; }, 60))
      << Tail(ReadFile(DonorLog(0)));
  EXPECT_NE(FinishedLog().find("more memory than the donor's limit (64 MiB)"), std::string::npos)
      << FinishedLog();
  // The donor told the coordinator, which released the lease at once: the unit was offered again
  // (to this donor too, the only one) long before its 600 s deadline.
  std::smatch m;
  std::string log;  // m points into it
  ASSERT_TRUE(WaitUntil(
      [&] {
        log = ReadFile(coordinator_log_);
        return std::regex_search(
            log, m, std::regex(R"(host (\d+) gave up unit (\d+) \(attempt (\d+)\): (.*))"));
      },
      30))
      << Tail(ReadFile(coordinator_log_)) << Tail(ReadFile(DonorLog(0)));
  const std::string unit = m[2], reason = m[4];
  const std::int64_t attempt = std::stoll(m[3]);
  EXPECT_NE(reason.find("more memory than the donor's limit (64 MiB)"), std::string::npos)
      << reason;
  EXPECT_EQ(reason.find("not its current lease"), std::string::npos) << reason;
  EXPECT_NE(ReadFile(DonorLog(0)).find("unit " + unit + ": the coordinator released its lease"),
            std::string::npos)
      << Tail(ReadFile(DonorLog(0)));
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  auto rows = Db(data_ / "coordinator.db")
                  .Query("SELECT attempt, lease_deadline FROM units WHERE id = " + unit);
  ASSERT_EQ(rows.size(), 1u);
  const std::int64_t attempt_now = std::stoll(rows[0][0]);
  const std::int64_t deadline_now = std::stoll(rows[0][1]);
  EXPECT_TRUE(attempt_now > attempt || deadline_now < now)
      << "unit " << unit << " still leased as given up: attempt " << attempt_now << ", deadline "
      << deadline_now << " (now " << now << ")";
  EXPECT_TRUE(donors_[0].Running())
      << "the daemon stopped: " << DescribeStatus(donors_[0].status());
}

}  // namespace
}  // namespace ubcp::itest
