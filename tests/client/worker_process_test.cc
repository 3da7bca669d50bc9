// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/worker_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/process_gone.h"
#include "support/temp_dir.h"

namespace ubcp::client {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
// Long enough to be stopped or killed first; short enough that a broken supervisor fails the
// test instead of hanging it.
constexpr const char* kLongSleep = "10000";

WorkerSpec Fake(std::vector<std::string> args) {
  WorkerSpec spec;
  spec.argv = {UBCP_FAKE_WORKER};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return spec;
}

struct Outcome {
  WorkerExit exit;
  std::vector<std::string> lines;
};

// Starts and supervises `spec` to its end, collecting its lines.
Outcome RunToEnd(const WorkerSpec& spec, SuperviseHooks hooks = {}) {
  Outcome run;
  auto worker = WorkerProcess::Start(spec);
  EXPECT_TRUE(worker) << worker.error().ToString();
  if (!worker) return run;
  hooks.on_line = [&run](std::string_view line) { run.lines.emplace_back(line); };
  auto exit = worker->Supervise(hooks);
  EXPECT_TRUE(exit) << exit.error().ToString();
  if (exit) run.exit = *exit;
  return run;
}

std::string ValueOf(const std::vector<std::string>& lines, const std::string& key) {
  for (const std::string& line : lines) {
    if (line.starts_with(key + "=")) return line.substr(key.size() + 1);
  }
  return "<missing " + key + ">";
}

int CountOpenFds() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++count;
  return count;
}

using ubcp::testing::ProcessGone;

bool GoneWithin(pid_t pid, milliseconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  while (!ProcessGone(pid)) {
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

// ---- Output, exit status, start failures -------------------------------------------------

TEST(WorkerProcessTest, LinesArriveInOrder) {
  const Outcome run = RunToEnd(Fake({"lines", "5000", "partial", "no newline at the end"}));
  ASSERT_EQ(run.lines.size(), 5001u);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(run.lines[i], "line " + std::to_string(i));
  EXPECT_EQ(run.lines.back(), "no newline at the end");
  EXPECT_EQ(run.exit.end, WorkerEnd::kExited);
  EXPECT_EQ(run.exit.exit_code, 0);
  EXPECT_EQ(run.exit.lines_cut, 0u);
}

TEST(WorkerProcessTest, LongLinesAreCutToTheLimit) {
  SuperviseHooks hooks;
  hooks.max_line_bytes = 64 << 10;
  const Outcome run =
      RunToEnd(Fake({"long", "200000", "print", "after", "long", "65536", "long", "65537"}), hooks);
  ASSERT_EQ(run.lines.size(), 4u);
  EXPECT_EQ(run.lines[0], std::string(65536, 'x'));  // cut
  EXPECT_EQ(run.lines[1], "after");                  // the rest of the long line was dropped
  EXPECT_EQ(run.lines[2], std::string(65536, 'x'));  // exactly the limit: whole
  EXPECT_EQ(run.lines[3], std::string(65536, 'x'));  // one byte over: cut
  EXPECT_EQ(run.exit.lines_cut, 2u);
}

TEST(WorkerProcessTest, ExitCodesAndSignals) {
  for (int code : {0, 3, 255}) {
    const Outcome run = RunToEnd(Fake({"exit", std::to_string(code)}));
    EXPECT_EQ(run.exit.end, WorkerEnd::kExited) << code;
    EXPECT_EQ(run.exit.exit_code, code);
    EXPECT_EQ(run.exit.term_signal, 0);
  }
  for (int sig : {SIGKILL, SIGSEGV}) {
    const Outcome run = RunToEnd(Fake({"kill-self", std::to_string(sig)}));
    EXPECT_EQ(run.exit.end, WorkerEnd::kSignaled) << sig;
    EXPECT_EQ(run.exit.term_signal, sig);
    EXPECT_EQ(run.exit.exit_code, -1);
  }
  const Outcome run = RunToEnd(Fake({"exit", "3"}));
  EXPECT_EQ(DescribeWorkerExit(run.exit).rfind("exited with code 3, peak RSS ", 0), 0u)
      << DescribeWorkerExit(run.exit);
}

TEST(WorkerProcessTest, StartFailuresAreErrors) {
  WorkerSpec missing;
  missing.argv = {"/nonexistent/ubcp-no-such-worker"};
  auto result = WorkerProcess::Start(missing);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, common::Errc::kNotFound);
  EXPECT_NE(result.error().message.find("/nonexistent/ubcp-no-such-worker"), std::string::npos)
      << result.error().message;

  testing::TempDir dir;
  const fs::path not_executable = dir.path() / "not-executable";
  std::ofstream(not_executable) << "#!/bin/sh\nexit 0\n";
  ::chmod(not_executable.c_str(), 0644);
  WorkerSpec forbidden;
  forbidden.argv = {not_executable.string()};
  result = WorkerProcess::Start(forbidden);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, common::Errc::kForbidden) << result.error().ToString();

  result = WorkerProcess::Start(WorkerSpec{});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, common::Errc::kInvalidArgument);

  WorkerSpec bad_env = Fake({});
  bad_env.env_extra = {"NO_EQUALS_SIGN"};
  result = WorkerProcess::Start(bad_env);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, common::Errc::kInvalidArgument);

  WorkerSpec bad_nice = Fake({});
  bad_nice.nice = 20;
  result = WorkerProcess::Start(bad_nice);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, common::Errc::kInvalidArgument);
}

TEST(WorkerProcessTest, SupervisingTwiceIsAConflict) {
  auto worker = WorkerProcess::Start(Fake({"exit", "0"}));
  ASSERT_TRUE(worker) << worker.error().ToString();
  ASSERT_TRUE(worker->Supervise({}));
  auto again = worker->Supervise({});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, common::Errc::kConflict);
}

// ---- What the child starts with ----------------------------------------------------------

TEST(WorkerProcessTest, ChildHasLowPriorityOwnGroupCleanFdsAndSignals) {
  // A leaked descriptor (not close-on-exec), SIGTERM ignored and blocked in the daemon: none of
  // them may reach the worker.
  const int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 0);
  struct sigaction ignore {
  }, old_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGTERM, &ignore, &old_action), 0);
  sigset_t term, old_mask;
  ::sigemptyset(&term);
  ::sigaddset(&term, SIGTERM);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &term, &old_mask), 0);

  WorkerSpec spec = Fake({"report"});
  spec.nice = 19;
  const Outcome run = RunToEnd(spec);

  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGTERM, &old_action, nullptr);
  ::close(leaked);

  EXPECT_EQ(ValueOf(run.lines, "nice"), "19");
  EXPECT_EQ(ValueOf(run.lines, "own_group"), "1");
  EXPECT_EQ(ValueOf(run.lines, "fds"), "0,1,2");
  EXPECT_EQ(ValueOf(run.lines, "sigterm"), "default");
  EXPECT_EQ(ValueOf(run.lines, "blocked"), "0");
}

TEST(WorkerProcessTest, IdleIoClassWhereTheKernelAllowsIt) {
  WorkerSpec spec = Fake({"report"});
  spec.idle_io = true;
  auto worker = WorkerProcess::Start(spec);
  ASSERT_TRUE(worker) << worker.error().ToString();
  std::vector<std::string> lines;
  SuperviseHooks hooks;
  hooks.on_line = [&lines](std::string_view line) { lines.emplace_back(line); };
  ASSERT_TRUE(worker->Supervise(hooks));
  if (!worker->idle_io_applied()) {
    EXPECT_FALSE(worker->idle_io_error().empty());
    GTEST_SKIP() << "the kernel refused the idle IO class: " << worker->idle_io_error();
  }
  EXPECT_EQ(ValueOf(lines, "ioclass"), "3");  // IOPRIO_CLASS_IDLE

  spec.idle_io = false;
  auto normal = WorkerProcess::Start(spec);
  ASSERT_TRUE(normal) << normal.error().ToString();
  EXPECT_FALSE(normal->idle_io_applied());
  EXPECT_TRUE(normal->idle_io_error().empty());
}

TEST(WorkerProcessTest, EnvironmentAndStderrFile) {
  ASSERT_EQ(::setenv("UBCP_WORKER_TEST_OVERRIDE", "old", 1), 0);
  ASSERT_EQ(::setenv("UBCP_WORKER_TEST_KEPT", "kept", 1), 0);
  testing::TempDir dir;
  WorkerSpec spec = Fake({"env", "UBCP_WORKER_TEST_OVERRIDE", "env", "UBCP_WORKER_TEST_KEPT", "env",
                          "OMP_NUM_THREADS", "stderr", "to the log"});
  spec.env_extra = {"UBCP_WORKER_TEST_OVERRIDE=new", "OMP_NUM_THREADS=3"};
  spec.stderr_file = dir.path() / "worker.log";
  const Outcome run = RunToEnd(spec);
  ::unsetenv("UBCP_WORKER_TEST_OVERRIDE");
  ::unsetenv("UBCP_WORKER_TEST_KEPT");

  EXPECT_EQ(ValueOf(run.lines, "UBCP_WORKER_TEST_OVERRIDE"), "new");
  EXPECT_EQ(ValueOf(run.lines, "UBCP_WORKER_TEST_KEPT"), "kept");
  EXPECT_EQ(ValueOf(run.lines, "OMP_NUM_THREADS"), "3");
  std::ifstream log(spec.stderr_file);
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_EQ(text.str(), "to the log\n");
  struct stat info {};
  ASSERT_EQ(::stat(spec.stderr_file.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

// ---- Stop on request ---------------------------------------------------------------------

struct StopOutcome {
  WorkerExit exit;
  milliseconds stop_to_end{0};
};

// Runs `spec`, asks it to stop once it printed "ready", and times stop request -> end.
StopOutcome RunAndStop(const WorkerSpec& spec, milliseconds grace) {
  StopOutcome result;
  auto worker = WorkerProcess::Start(spec);
  EXPECT_TRUE(worker) << worker.error().ToString();
  if (!worker) return result;
  bool ready = false;
  SteadyClock::time_point stop_requested{};
  SuperviseHooks hooks;
  hooks.grace = grace;
  hooks.on_line = [&ready](std::string_view line) { ready = ready || line == "ready"; };
  hooks.should_stop = [&] {
    if (ready && stop_requested == SteadyClock::time_point{}) stop_requested = SteadyClock::now();
    return ready;
  };
  auto exit = worker->Supervise(hooks);
  EXPECT_TRUE(exit) << exit.error().ToString();
  if (!exit) return result;
  result.exit = *exit;
  result.stop_to_end =
      std::chrono::duration_cast<milliseconds>(SteadyClock::now() - stop_requested);
  return result;
}

TEST(WorkerProcessTest, StopRequestTerminatesWithinTheGrace) {
  const milliseconds grace(5000);
  StopOutcome run = RunAndStop(Fake({"print", "ready", "sleep", kLongSleep}), grace);
  EXPECT_EQ(run.exit.end, WorkerEnd::kStoppedOnRequest);
  EXPECT_FALSE(run.exit.killed_after_grace);
  EXPECT_EQ(run.exit.term_signal, SIGTERM);
  EXPECT_LT(run.stop_to_end, grace);

  // A worker that handles SIGTERM and exits with its own code.
  run = RunAndStop(Fake({"exit-on-term", "7", "print", "ready", "sleep", kLongSleep}), grace);
  EXPECT_EQ(run.exit.end, WorkerEnd::kStoppedOnRequest);
  EXPECT_FALSE(run.exit.killed_after_grace);
  EXPECT_EQ(run.exit.exit_code, 7);
  EXPECT_EQ(run.exit.term_signal, 0);
  EXPECT_LT(run.stop_to_end, grace);
}

TEST(WorkerProcessTest, WorkerIgnoringSigtermIsKilledAfterTheGrace) {
  const milliseconds grace(500);
  const StopOutcome run =
      RunAndStop(Fake({"ignore-term", "print", "ready", "sleep", kLongSleep}), grace);
  EXPECT_EQ(run.exit.end, WorkerEnd::kStoppedOnRequest);
  EXPECT_TRUE(run.exit.killed_after_grace);
  EXPECT_EQ(run.exit.term_signal, SIGKILL);
  EXPECT_GE(run.stop_to_end, grace);
  EXPECT_LT(run.stop_to_end, grace + milliseconds(10'000)) << "the SIGKILL never came";
}

// ---- Memory cap --------------------------------------------------------------------------

TEST(WorkerProcessTest, WorkerOverTheMemoryCapIsKilled) {
  WorkerSpec spec = Fake({"alloc", "300", "print", "allocated", "sleep", kLongSleep});
  spec.memory_limit_bytes = 100 * kMiB;
  const Outcome run = RunToEnd(spec);
  EXPECT_EQ(run.exit.end, WorkerEnd::kOverMemoryCap) << DescribeWorkerExit(run.exit);
  EXPECT_EQ(run.exit.term_signal, SIGKILL);
  EXPECT_GE(run.exit.peak_rss_bytes, 100 * kMiB);
}

TEST(WorkerProcessTest, WorkerUnderTheCapRunsToItsEnd) {
  WorkerSpec spec = Fake({"alloc", "50", "sleep", "500"});
  spec.memory_limit_bytes = 100 * kMiB;
  const Outcome run = RunToEnd(spec);
  EXPECT_EQ(run.exit.end, WorkerEnd::kExited) << DescribeWorkerExit(run.exit);
  EXPECT_EQ(run.exit.exit_code, 0);
  EXPECT_GE(run.exit.peak_rss_bytes, 50 * kMiB);
  EXPECT_LT(run.exit.peak_rss_bytes, 100 * kMiB);
}

TEST(WorkerProcessTest, MemoryOfTheWholeProcessGroupCounts) {
  // The leader stays small; its child holds 150 MiB.
  WorkerSpec spec = Fake({"child-alloc", "150", "sleep", kLongSleep});
  spec.memory_limit_bytes = 100 * kMiB;
  const Outcome run = RunToEnd(spec);
  EXPECT_EQ(run.exit.end, WorkerEnd::kOverMemoryCap) << DescribeWorkerExit(run.exit);
  EXPECT_GE(run.exit.peak_rss_bytes, 100 * kMiB);
}

TEST(WorkerProcessTest, WhatTheWorkerLeftInItsGroupIsKilled) {
  const Outcome run = RunToEnd(Fake({"child-alloc", "1", "exit", "0"}));
  EXPECT_EQ(run.exit.end, WorkerEnd::kExited);
  pid_t child_pid = 0;
  for (const std::string& line : run.lines) {
    if (line.starts_with("child ")) child_pid = std::stoi(line.substr(6));
  }
  ASSERT_GT(child_pid, 0) << "the fake worker's child did not report";
  const bool gone = GoneWithin(child_pid, milliseconds(1000));
  EXPECT_TRUE(gone);
  if (!gone) ::kill(child_pid, SIGKILL);
}

// ---- Death of the daemon, destruction, descriptors ---------------------------------------

TEST(WorkerProcessTest, WorkerDiesWithASigkilledDaemon) {
  // Process tree: this test -> reaper (a subreaper, so the orphaned worker becomes its child
  // and can be waited for) -> daemon (starts the worker, then is SIGKILLed) -> worker.
  int pid_pipe[2];
  ASSERT_EQ(::pipe2(pid_pipe, O_CLOEXEC), 0);
  const pid_t reaper = ::fork();
  ASSERT_GE(reaper, 0);
  if (reaper == 0) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t daemon = ::fork();
    if (daemon < 0) ::_exit(10);
    if (daemon == 0) {
      auto worker = WorkerProcess::Start(Fake({"sleep", kLongSleep}));
      if (!worker) ::_exit(11);
      const pid_t worker_pid = worker->pid();
      if (::write(pid_pipe[1], &worker_pid, sizeof worker_pid) != sizeof worker_pid) ::_exit(12);
      for (;;) ::pause();
    }
    pid_t worker_pid = 0;
    if (::read(pid_pipe[0], &worker_pid, sizeof worker_pid) != sizeof worker_pid) ::_exit(13);
    ::kill(daemon, SIGKILL);
    ::waitpid(daemon, nullptr, 0);
    const auto deadline = SteadyClock::now() + milliseconds(1000);
    int status = 0;
    while (::waitpid(worker_pid, &status, WNOHANG) != worker_pid) {
      if (SteadyClock::now() > deadline) {
        ::kill(worker_pid, SIGKILL);
        ::waitpid(worker_pid, nullptr, 0);
        ::_exit(14);  // still running 1 s after the daemon died
      }
      ::usleep(5000);
    }
    ::_exit(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? 0 : 15);
  }
  ::close(pid_pipe[0]);
  ::close(pid_pipe[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(reaper, &status, 0), reaper);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "11: Start failed, 14: worker alive 1 s after the daemon's death, 15: not SIGKILLed";
}

TEST(WorkerProcessTest, DestroyingARunningWorkerKillsAndReapsIt) {
  pid_t pid = 0;
  {
    auto worker = WorkerProcess::Start(Fake({"sleep", kLongSleep}));
    ASSERT_TRUE(worker) << worker.error().ToString();
    pid = worker->pid();
    ASSERT_FALSE(ProcessGone(pid));
  }
  // Reaped: no longer our child (a zombie still would be).
  errno = 0;
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_TRUE(ProcessGone(pid));
}

// ---- Requests on standard input ------------------------------------------------------------

WorkerSpec Answering(int extra_lines) {
  WorkerSpec spec = Fake({"answer", std::to_string(extra_lines)});
  spec.requests_on_stdin = true;
  return spec;
}

SuperviseHooks UntilDone(std::vector<std::string>& lines) {
  SuperviseHooks hooks;
  hooks.on_line = [&lines](std::string_view line) { lines.emplace_back(line); };
  hooks.is_answer = [](std::string_view line) { return line.starts_with("done "); };
  return hooks;
}

TEST(WorkerProcessTest, OneProcessAnswersRequestAfterRequest) {
  auto worker = WorkerProcess::Start(Answering(2));
  ASSERT_TRUE(worker) << worker.error().ToString();
  const pid_t pid = worker->pid();
  for (const std::string request : {"a", "b", "c"}) {
    ASSERT_TRUE(worker->Send(request));
    std::vector<std::string> lines;
    auto answer = worker->Supervise(UntilDone(lines));
    ASSERT_TRUE(answer) << answer.error().ToString();
    EXPECT_EQ(answer->end, WorkerEnd::kAnswered);
    EXPECT_EQ(lines, (std::vector<std::string>{"heard " + request, "more " + request + " 0",
                                               "more " + request + " 1", "done " + request}));
    EXPECT_TRUE(worker->running());
    EXPECT_FALSE(worker->HasExited());
    EXPECT_EQ(worker->pid(), pid);
  }
  // A request the worker ends itself on: supervised to its end.
  ASSERT_TRUE(worker->Send("exit"));
  std::vector<std::string> lines;
  auto exit = worker->Supervise(UntilDone(lines));
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->end, WorkerEnd::kExited);
  EXPECT_EQ(exit->exit_code, 7);
  EXPECT_TRUE(lines.empty());
  EXPECT_FALSE(worker->running());
  EXPECT_EQ(worker->Send("late").error().code, common::Errc::kConflict);
}

TEST(WorkerProcessTest, WhatFollowsAnAnswerWaitsForTheNextSupervise) {
  auto worker = WorkerProcess::Start(Answering(0));
  ASSERT_TRUE(worker) << worker.error().ToString();
  // Both answers are written before the first Supervise: they arrive in one read.
  ASSERT_TRUE(worker->Send("x"));
  ASSERT_TRUE(worker->Send("y"));
  std::this_thread::sleep_for(milliseconds(200));
  std::vector<std::string> first, second;
  ASSERT_EQ(worker->Supervise(UntilDone(first))->end, WorkerEnd::kAnswered);
  ASSERT_EQ(worker->Supervise(UntilDone(second))->end, WorkerEnd::kAnswered);
  EXPECT_EQ(first, (std::vector<std::string>{"heard x", "done x"}));
  EXPECT_EQ(second, (std::vector<std::string>{"heard y", "done y"}));
}

TEST(WorkerProcessTest, RequestsNeedAnInputAndOneLine) {
  auto plain = WorkerProcess::Start(Fake({"sleep", kLongSleep}));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->Send("run").error().code, common::Errc::kConflict);
  auto worker = WorkerProcess::Start(Answering(0));
  ASSERT_TRUE(worker);
  EXPECT_EQ(worker->Send("two\nlines").error().code, common::Errc::kInvalidArgument);
}

TEST(WorkerProcessTest, AWorkerThatLeftIsSeenAndCannotBeSentTo) {
  WorkerSpec spec = Fake({"exit", "0"});
  spec.requests_on_stdin = true;
  auto worker = WorkerProcess::Start(spec);
  ASSERT_TRUE(worker) << worker.error().ToString();
  const auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  while (!worker->HasExited() && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(worker->HasExited());
  EXPECT_TRUE(worker->running());  // a zombie until supervised
  const auto sent = worker->Send("anyone?");
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, common::Errc::kUnavailable);
  auto exit = worker->Supervise({});
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->end, WorkerEnd::kExited);
  EXPECT_EQ(exit->exit_code, 0);
}

TEST(WorkerProcessTest, AStopDuringARequestEndsTheWorkerNotWithAnAnswer) {
  auto worker = WorkerProcess::Start(Answering(0));
  ASSERT_TRUE(worker);
  std::vector<std::string> lines;
  SuperviseHooks hooks = UntilDone(lines);
  hooks.should_stop = [] { return true; };
  hooks.grace = milliseconds(2000);
  // No request: the worker waits on its input until the SIGTERM ends it (default action).
  auto exit = worker->Supervise(hooks);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->end, WorkerEnd::kStoppedOnRequest);
  EXPECT_EQ(exit->term_signal, SIGTERM);
  EXPECT_FALSE(worker->running());
}

TEST(WorkerProcessTest, NoDescriptorLeaks) {
  const int before = CountOpenFds();
  for (int i = 0; i < 20; ++i) {
    auto worker = WorkerProcess::Start(Fake({"print", "hello"}));
    ASSERT_TRUE(worker) << worker.error().ToString();
    ASSERT_TRUE(worker->Supervise({}));
  }
  for (int i = 0; i < 20; ++i) {
    WorkerSpec missing;
    missing.argv = {"/nonexistent/ubcp-no-such-worker"};
    ASSERT_FALSE(WorkerProcess::Start(missing));
  }
  for (int i = 0; i < 5; ++i) {
    auto worker = WorkerProcess::Start(Fake({"sleep", kLongSleep}));
    ASSERT_TRUE(worker) << worker.error().ToString();
  }
  EXPECT_EQ(CountOpenFds(), before);
}

// ---- /proc parsing -----------------------------------------------------------------------

TEST(WorkerMemoryTest, ParsesVmRss) {
  auto rss = ParseVmRssBytes("Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t   2048 kB\nThreads: 1\n");
  ASSERT_TRUE(rss);
  EXPECT_EQ(*rss, 2048u * 1024);
  EXPECT_FALSE(ParseVmRssBytes("Name:\tzombie\nState:\tZ (zombie)\n"));
  EXPECT_FALSE(ParseVmRssBytes("VmRSS:\t  lots kB\n"));
}

TEST(WorkerMemoryTest, ParsesTheProcessGroupAfterAnOddComm) {
  auto group = ParseStatProcessGroup("4242 (a) b (c)) S 1 77 77 0 -1 4194560 100 0");
  ASSERT_TRUE(group);
  EXPECT_EQ(*group, 77);
  EXPECT_FALSE(ParseStatProcessGroup("4242 no comm"));
  EXPECT_FALSE(ParseStatProcessGroup("4242 (x) S 1"));
}

TEST(WorkerMemoryTest, SumsTheGroupInAFakeProc) {
  testing::TempDir dir;
  const auto process = [&](const std::string& pid, const std::string& pgrp, const char* rss) {
    fs::create_directories(dir.path() / pid);
    std::ofstream(dir.path() / pid / "stat") << pid << " (w) S 1 " << pgrp << " " << pgrp;
    if (rss) std::ofstream(dir.path() / pid / "status") << "Name:\tw\nVmRSS:\t" << rss << " kB\n";
  };
  process("100", "100", "1000");
  process("101", "100", "24");
  process("102", "100", nullptr);  // a zombie: no status
  process("103", "555", "99999");  // another group
  fs::create_directories(dir.path() / "self");
  auto total = GroupResidentBytes(100, dir.path());
  ASSERT_TRUE(total) << total.error().ToString();
  EXPECT_EQ(*total, 1024u * 1024);
  EXPECT_FALSE(GroupResidentBytes(100, dir.path() / "missing"));
}

}  // namespace
}  // namespace ubcp::client
