// SPDX-License-Identifier: Apache-2.0
#pragma once
// How the donor's loop has a verified unit executed. The daemon (`ubcp-client`) never loads
// libtorch: it uses a WorkerExecutor (worker_executor.h), which runs each unit in a supervised
// `ubcp-worker` process. Tests and benchmarks may run units in the calling process with
// InProcessExecutor (in_process_executor.h, links libtorch). Both checkpoint fine-tune units into
// the unit's directory (unit_journal.h) and resume from the checkpoint found there.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "ubcp/client/adversary.h"
#include "ubcp/client/executor.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

struct ExecutionRequest {
  std::filesystem::path unit_dir;  // holds manifest.env; checkpoint and output go here
  std::string manifest_hash;       // PayloadHash of manifest.env: checked before parsing
  const common::Manifest* manifest = nullptr;  // the parsed, verified manifest
  std::filesystem::path model_blob;            // files holding the blobs (hash-checked again)
  std::filesystem::path data_blob;
  int threads = 1;
  std::uint64_t memory_limit_bytes = 0;  // 0: no cap
  int checkpoint_every = 0;              // optimizer steps between checkpoints; 0: none
  double checkpoint_seconds = 0;         // and at most this long between them; 0: no bound
  Adversary adversary;                   // robustness experiments only
  ProgressFn progress;                   // (done, total) steps
  // Polled while the unit runs: true stops it (pause, shutdown); a fine-tune unit saves a
  // checkpoint first, so the next execution continues from there.
  std::function<bool()> should_stop;
};

enum class ExecutionEnd {
  kDone,     // output saved in unit_dir (unit_journal.h SaveUnitOutput) and returned
  kStopped,  // should_stop: stopped early, resumable
  kFailed,   // the unit cannot be executed here (bad input, diverged, over the memory cap)
  kCrashed,  // the worker died unexpectedly: worth another try
};

struct ExecutionResult {
  ExecutionEnd end = ExecutionEnd::kFailed;
  std::optional<UnitOutput> output;    // kDone only
  std::string message;                 // why, for the other ends
  std::int64_t resumed_from_step = 0;  // > 0 when a checkpoint was used
  std::uint64_t peak_rss_bytes = 0;    // the worker's peak resident memory (0 in-process)
  int worker_pid = 0;                  // the worker process that ran it (0 in-process)
};

class UnitExecutor {
 public:
  virtual ~UnitExecutor() = default;
  virtual ExecutionResult Execute(const ExecutionRequest& request) = 0;
  // Ends what the executor keeps between units (a worker process with libtorch loaded); the
  // donor's loop calls it whenever it has no unit to run next (no work, paused, waiting, stopping),
  // so that an idle donor holds only the light daemon. The next Execute starts afresh.
  virtual void Release() {}
};

}  // namespace ubcp::client
