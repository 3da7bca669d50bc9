// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the daemon and its `ubcp-worker` processes say to each other. The daemon starts
//   ubcp-worker run --unit-dir D --manifest-hash H --model-blob M --data-blob X --threads N
//                   [--checkpoint-every K] [--checkpoint-seconds T]
//                   [--adversary MODE --adversary-scale S]
//   ubcp-worker benchmark --seconds S --threads N
// and reads the worker's standard output, one event per line:
//   progress <done> <total>   after an optimizer step or evaluation batch, at most every 100 ms
//                             (and always the first and the last)
//   resumed <step>            the unit continues from a checkpoint taken after <step> steps
//   checkpoint <step>         a checkpoint after <step> steps is on disk
//   error <message>           why the unit failed (before exit code kWorkerFailed)
//   benchmark <json>          the benchmark report (benchmark mode)
// The unit's output is read from the unit directory (unit_journal.h), never from the pipe.
// Torch-free: both sides link it.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/client/benchmark.h"
#include "ubcp/client/unit_executor.h"
#include "ubcp/common/result.h"

namespace ubcp::client {

// Exit codes of `ubcp-worker`. Anything else (a signal, another code) is a crash.
inline constexpr int kWorkerDone = 0;
inline constexpr int kWorkerUsage = 2;    // bad command line: a bug in the daemon
inline constexpr int kWorkerFailed = 3;   // the unit cannot be executed (final)
inline constexpr int kWorkerStopped = 4;  // stopped on SIGTERM after saving a checkpoint

// Longest line either side writes (an error message or a benchmark report).
inline constexpr std::size_t kMaxWorkerLine = 16 * 1024;

std::vector<std::string> WorkerRunArgv(const std::filesystem::path& worker,
                                       const ExecutionRequest& request);
std::vector<std::string> WorkerBenchmarkArgv(const std::filesystem::path& worker, double seconds,
                                             int threads);

struct WorkerEvent {
  enum class Kind { kProgress, kResumed, kCheckpoint, kError, kBenchmark };
  Kind kind = Kind::kProgress;
  std::int64_t first = 0;   // progress: done; resumed/checkpoint: step
  std::int64_t second = 0;  // progress: total
  std::string text;         // error message, benchmark JSON
};
// nullopt for a line that is none of the above (a worker's log line on stdout, say).
std::optional<WorkerEvent> ParseWorkerLine(std::string_view line);
std::string FormatWorkerEvent(const WorkerEvent& event);

// The benchmark report as one line of JSON and back (bounded; kMalformed on anything else).
std::string BenchmarkToJson(const BenchmarkReport& report);
common::Result<BenchmarkReport> BenchmarkFromJson(std::string_view json);

// The `ubcp-worker` next to the running executable (/proc/self/exe), else "ubcp-worker" on PATH.
std::filesystem::path DefaultWorkerPath();

}  // namespace ubcp::client
