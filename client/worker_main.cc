// SPDX-License-Identifier: Apache-2.0
// ubcp-worker: runs work units (or the hardware benchmark) for the donor daemon, which starts
// it at low priority with the donor's thread count and memory cap, writes it requests and reads
// its standard output (worker_protocol.h). The only donor-side program that loads libtorch.
//
// `serve` keeps libtorch loaded and runs one unit per request line, so consecutive units do not
// pay for a process start, loading libtorch and a cold allocator each. For each unit: the signed
// manifest was verified by the daemon and saved in the unit directory; the worker checks its hash
// before parsing it, hash-checks the blobs (executor.h), resumes from <unit-dir>/checkpoint when
// it holds a checkpoint of this unit, writes checkpoints as asked and on SIGTERM, and saves the
// output in the unit directory (unit_journal.h) before its `end 0` line.
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "ubcp/client/benchmark.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/worker_protocol.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"

namespace {
using namespace ubcp;
using client::WorkerEvent;

volatile std::sig_atomic_t g_stop = 0;
void OnTerm(int) { g_stop = 1; }

void Say(const WorkerEvent& event) {
  // Progress goes out at most every 100 ms (and always at the start and the end): a line per
  // step of a fast model would cost the daemon and the worker more than the step.
  if (event.kind == WorkerEvent::Kind::kProgress) {
    static auto last = std::chrono::steady_clock::time_point{};
    const auto now = std::chrono::steady_clock::now();
    const bool edge = event.first == 0 || event.first == event.second;
    if (!edge && now - last < std::chrono::milliseconds(100)) return;
    last = now;
  }
  const std::string line = client::FormatWorkerEvent(event) + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

// Reads request lines from standard input: bounded, and waiting at most `idle_exit_seconds`
// (0: forever) for one. nullopt at the end of the input, on SIGTERM or after the idle time.
class RequestReader {
 public:
  explicit RequestReader(double idle_exit_seconds) : idle_exit_seconds_(idle_exit_seconds) {}

  std::optional<std::string> Next() {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(idle_exit_seconds_);
    for (;;) {
      if (const std::size_t newline = buffer_.find('\n'); newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      if (buffer_.size() > client::kMaxWorkerLine) {
        // No request is this long: the daemon and the worker disagree; stop serving.
        return std::nullopt;
      }
      if (g_stop != 0) return std::nullopt;
      int timeout_ms = 1000;  // SIGTERM interrupts poll; the bound only covers a lost signal
      if (idle_exit_seconds_ > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        timeout_ms = static_cast<int>(std::min<std::int64_t>(left.count(), timeout_ms));
      }
      pollfd fd{STDIN_FILENO, POLLIN, 0};
      const int ready = ::poll(&fd, 1, timeout_ms);
      if (ready <= 0) continue;  // timeout or EINTR: look at the stop flag and the clock again
      char chunk[4096];
      const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;  // the daemon closed our input (or it broke)
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  double idle_exit_seconds_;
  std::string buffer_;
};

struct ServeArgs {
  std::filesystem::path root;
  int threads = 1;
  double idle_exit_seconds = 0;
};

// Runs units until the input ends, the idle time passes or SIGTERM; see worker_protocol.h.
int Serve(const ServeArgs& args) {
  RequestReader requests(args.idle_exit_seconds);
  while (auto line = requests.Next()) {
    auto parsed = client::ParseWorkerRequest(*line, args.root);
    if (!parsed) {
      // The daemon sent what it should not: a bug on its side, not the unit's fault.
      Say({WorkerEvent::Kind::kError, 0, 0, parsed.error().ToString()});
      return client::kWorkerCrashed;
    }
    client::ExecutionRequest& request = *parsed;
    request.threads = args.threads;
    request.should_stop = [] { return g_stop != 0; };
    const client::ExecutionResult result = client::ExecuteUnitInDirectory(request, Say);
    switch (result.end) {
      case client::ExecutionEnd::kDone:
        Say({WorkerEvent::Kind::kEnd, client::kWorkerDone, 0, {}});
        break;
      case client::ExecutionEnd::kFailed:
        Say({WorkerEvent::Kind::kError, 0, 0, result.message});
        Say({WorkerEvent::Kind::kEnd, client::kWorkerFailed, 0, {}});
        break;
      case client::ExecutionEnd::kStopped:
        return client::kWorkerStopped;
      case client::ExecutionEnd::kCrashed:
        // Neither done nor final: the daemon tries again, in a fresh process.
        Say({WorkerEvent::Kind::kError, 0, 0, result.message});
        return client::kWorkerCrashed;
    }
  }
  return client::kWorkerDone;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UBCP worker: runs units for ubcp-client (not meant to be run by hand)"};
  app.require_subcommand(1);
  ServeArgs serve;
  CLI::App* serve_cmd =
      app.add_subcommand("serve", "run the units requested on standard input, one per line");
  serve_cmd->add_option("--root", serve.root, "every path of a request lies in this directory")
      ->required();
  serve_cmd->add_option("--threads", serve.threads)->check(CLI::Range(1, 256));
  serve_cmd->add_option("--idle-exit-seconds", serve.idle_exit_seconds)
      ->check(CLI::Range(0.0, 86400.0));
  double seconds = 1.0;
  int bench_threads = 1;
  CLI::App* bench_cmd = app.add_subcommand("benchmark", "benchmark this machine");
  bench_cmd->add_option("--seconds", seconds)->check(CLI::Range(0.1, 600.0));
  bench_cmd->add_option("--threads", bench_threads)->check(CLI::Range(1, 256));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return client::kWorkerUsage;
  }
  common::ConfigureAllocatorForTraining();
  if (auto s = common::InitCrypto(); !s) {
    Say({WorkerEvent::Kind::kError, 0, 0, s.error().ToString()});
    return client::kWorkerCrashed;
  }
  // Without SA_RESTART, so that a SIGTERM interrupts the wait for the next request.
  struct sigaction sa {};
  sa.sa_handler = OnTerm;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  if (*bench_cmd) {
    common::SetTorchThreads(bench_threads);
    const client::BenchmarkReport report = client::RunBenchmark(seconds);
    Say({WorkerEvent::Kind::kBenchmark, 0, 0, client::BenchmarkToJson(report)});
    return client::kWorkerDone;
  }
  common::SetTorchThreads(serve.threads);
  return Serve(serve);
}
