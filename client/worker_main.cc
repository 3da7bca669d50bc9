// SPDX-License-Identifier: Apache-2.0
// ubcp-worker: runs one work unit (or the hardware benchmark) for the donor daemon, which starts
// it at low priority with the donor's thread count and memory cap and reads its standard output
// (worker_protocol.h). The only donor-side program that loads libtorch.
//
// A unit: the signed manifest was verified by the daemon and saved in the unit directory; the
// worker checks its hash against --manifest-hash before parsing it, hash-checks the blobs
// (executor.h), resumes from <unit-dir>/checkpoint when it holds a checkpoint of this unit,
// writes a checkpoint every --checkpoint-every steps and on SIGTERM, and saves the output in the
// unit directory (unit_journal.h) before exiting 0.
#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
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

int FailUnit(const std::string& message) {
  Say({WorkerEvent::Kind::kError, 0, 0, message});
  return client::kWorkerFailed;
}

struct RunArgs {
  std::filesystem::path unit_dir, model_blob, data_blob;
  std::string manifest_hash, adversary = "honest";
  double adversary_scale = 10.0;
  int threads = 1;
  int checkpoint_every = 0;
  double checkpoint_seconds = 0;
};

int RunUnit(const RunArgs& args) {
  auto mode = client::ParseAdversaryMode(args.adversary);
  if (!mode) return FailUnit(mode.error().ToString());
  client::ExecutionRequest request;
  request.unit_dir = args.unit_dir;
  request.manifest_hash = args.manifest_hash;
  request.model_blob = args.model_blob;
  request.data_blob = args.data_blob;
  request.threads = args.threads;
  request.checkpoint_every = args.checkpoint_every;
  request.checkpoint_seconds = args.checkpoint_seconds;
  request.adversary = client::Adversary{*mode, args.adversary_scale};
  request.should_stop = [] { return g_stop != 0; };
  const client::ExecutionResult result = client::ExecuteUnitInDirectory(request, Say);
  switch (result.end) {
    case client::ExecutionEnd::kDone:
      return client::kWorkerDone;
    case client::ExecutionEnd::kStopped:
      return client::kWorkerStopped;
    case client::ExecutionEnd::kFailed:
      return FailUnit(result.message);
    case client::ExecutionEnd::kCrashed:
      break;
  }
  Say({WorkerEvent::Kind::kError, 0, 0, result.message});
  return 1;  // neither done nor final: the daemon tries again
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UBCP worker: runs one unit for ubcp-client (not meant to be run by hand)"};
  app.require_subcommand(1);
  RunArgs run;
  CLI::App* run_cmd = app.add_subcommand("run", "execute one unit from its directory");
  run_cmd->add_option("--unit-dir", run.unit_dir)->required();
  run_cmd->add_option("--manifest-hash", run.manifest_hash)->required();
  run_cmd->add_option("--model-blob", run.model_blob)->required();
  run_cmd->add_option("--data-blob", run.data_blob)->required();
  run_cmd->add_option("--threads", run.threads)->check(CLI::Range(1, 256));
  run_cmd->add_option("--checkpoint-every", run.checkpoint_every)->check(CLI::Range(0, 1000000));
  run_cmd->add_option("--checkpoint-seconds", run.checkpoint_seconds)
      ->check(CLI::Range(0.0, 86400.0));
  run_cmd->add_option("--adversary", run.adversary);
  run_cmd->add_option("--adversary-scale", run.adversary_scale)->check(CLI::PositiveNumber);
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
  if (auto s = common::InitCrypto(); !s) return FailUnit(s.error().ToString());
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
  common::SetTorchThreads(run.threads);
  return RunUnit(run);
}
