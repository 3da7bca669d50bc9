// SPDX-License-Identifier: Apache-2.0
#pragma once
// The daemon's executor: each unit runs in an `ubcp-worker` process (worker_protocol.h) started
// at low priority (nice 19, idle IO class) with the donor's thread count and memory cap, and
// supervised (worker_process.h): its progress lines feed the control state, a pause or a
// shutdown stops it (SIGTERM: it saves a checkpoint and exits), and a worker over the memory
// cap is killed. The daemon itself never loads libtorch.

#include <chrono>
#include <filesystem>
#include <memory>

#include "ubcp/client/benchmark.h"
#include "ubcp/client/unit_executor.h"

namespace ubcp::client {

struct WorkerExecutorOptions {
  std::filesystem::path worker;  // the ubcp-worker executable
  int nice = 19;
  bool idle_io = true;
  std::chrono::milliseconds grace{10'000};  // SIGTERM to SIGKILL on a stop
};

std::shared_ptr<UnitExecutor> MakeWorkerExecutor(WorkerExecutorOptions options);

// Benchmarks this machine in a worker process (`ubcp-worker benchmark`) with `threads` threads.
common::Result<BenchmarkReport> RunWorkerBenchmark(const WorkerExecutorOptions& options,
                                                   double seconds, int threads);

}  // namespace ubcp::client
