// SPDX-License-Identifier: Apache-2.0
#pragma once
// The daemon's executor: units run in an `ubcp-worker serve` process (worker_protocol.h) started
// at low priority (nice 19, idle IO class) with the donor's thread count and memory cap, and
// supervised (worker_process.h): its progress lines feed the control state, a pause or a
// shutdown stops it (SIGTERM: it saves a checkpoint and exits), and a worker over the memory
// cap is killed. One worker serves unit after unit while the donor keeps working, so a unit pays
// no process start nor libtorch load; it is ended by Release (the runner calls it whenever it
// has nothing to run next), by a change of the thread count or memory cap, and after any unit
// that did not end cleanly. The daemon itself never loads libtorch.

#include <chrono>
#include <filesystem>
#include <memory>

#include "ubcp/client/benchmark.h"
#include "ubcp/client/unit_executor.h"

namespace ubcp::client {

struct WorkerExecutorOptions {
  std::filesystem::path worker;  // the ubcp-worker executable
  // Every path of a unit lies in this directory (the daemon's state directory); the worker
  // refuses others. Empty: "/".
  std::filesystem::path root;
  int nice = 19;
  bool idle_io = true;
  std::chrono::milliseconds grace{10'000};  // SIGTERM to SIGKILL on a stop
  // A worker left waiting this long for its next unit exits by itself (0: never), in case the
  // daemon's loop is stuck somewhere without calling Release.
  double idle_exit_seconds = 600;
};

std::shared_ptr<UnitExecutor> MakeWorkerExecutor(WorkerExecutorOptions options);

// Benchmarks this machine in a worker process (`ubcp-worker benchmark`) with `threads` threads.
common::Result<BenchmarkReport> RunWorkerBenchmark(const WorkerExecutorOptions& options,
                                                   double seconds, int threads);

}  // namespace ubcp::client
