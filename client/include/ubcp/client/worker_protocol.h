// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the daemon and its `ubcp-worker` processes say to each other. The daemon starts
//   ubcp-worker serve --root R --threads N [--idle-exit-seconds S]
//   ubcp-worker benchmark --seconds S --threads N
// A serving worker keeps libtorch loaded and runs unit after unit, each asked for by one line on
// its standard input (at most kMaxWorkerLine bytes):
//   run {"unit_dir":D,"manifest_hash":H,"model_blob":M,"data_blob":X,"checkpoint_every":K,
//        "checkpoint_seconds":T,"adversary":MODE,"adversary_scale":S}
// where every path lies inside R (the daemon's state directory). It answers on its standard
// output, one event per line:
//   progress <done> <total>   after an optimizer step or evaluation batch, at most every 100 ms
//                             (and always the first and the last)
//   resumed <step>            the unit continues from a checkpoint taken after <step> steps
//   checkpoint <step>         a checkpoint after <step> steps is on disk
//   error <message>           why the unit failed (before `end 3`, or before a crash's exit)
//   end <code>                the unit's last line: kWorkerDone (its output is saved in the unit
//                             directory) or kWorkerFailed (final); the worker waits for the next
//   benchmark <json>          the benchmark report (benchmark mode)
// A unit stopped by SIGTERM (pause, shutdown) is checkpointed and the worker exits with
// kWorkerStopped; anything unexpected ends the worker (an error line, exit code 1). It exits 0 at
// the end of its input, on SIGTERM while idle, or after S seconds without a request (0: never).
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
inline constexpr int kWorkerCrashed = 1;  // something unexpected: the unit is worth another try

// Longest line either side writes (an error message or a benchmark report).
inline constexpr std::size_t kMaxWorkerLine = 16 * 1024;

// `root`: the directory every path of a request must lie in; `idle_exit_seconds` 0: never.
std::vector<std::string> WorkerServeArgv(const std::filesystem::path& worker,
                                         const std::filesystem::path& root, int threads,
                                         double idle_exit_seconds);
std::vector<std::string> WorkerBenchmarkArgv(const std::filesystem::path& worker, double seconds,
                                             int threads);

// The request line for `request` ("run {...}", no newline): its unit directory, manifest hash,
// blob files, checkpoint interval and adversary. The thread count and memory cap belong to the
// worker process (its command line), not to a request.
std::string FormatWorkerRequest(const ExecutionRequest& request);
// A request line back, with those fields filled (the others are left as default-constructed):
// kTooLarge over kMaxWorkerLine; kMalformed for anything but "run " and a JSON object with
// exactly those eight fields, of their types and ranges; kForbidden for a path that is not
// absolute or, normalized, does not lie inside `root`.
common::Result<ExecutionRequest> ParseWorkerRequest(std::string_view line,
                                                    const std::filesystem::path& root);

struct WorkerEvent {
  enum class Kind { kProgress, kResumed, kCheckpoint, kError, kBenchmark, kEnd };
  Kind kind = Kind::kProgress;
  std::int64_t first = 0;   // progress: done; resumed/checkpoint: step; end: code
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
