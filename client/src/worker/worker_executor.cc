// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/worker_executor.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <string>
#include <vector>

#include "ubcp/client/unit_journal.h"
#include "ubcp/client/worker_process.h"
#include "ubcp/client/worker_protocol.h"

namespace ubcp::client {
namespace {

// The process settings shared by unit workers and the benchmark worker.
WorkerSpec SpecFor(const WorkerExecutorOptions& options, std::vector<std::string> argv, int threads,
                   std::uint64_t memory_limit_bytes) {
  WorkerSpec spec;
  spec.argv = std::move(argv);
  // OpenMP must not start more threads than the donor allows either.
  spec.env_extra = {"OMP_NUM_THREADS=" + std::to_string(threads)};
  spec.nice = options.nice;
  spec.idle_io = options.idle_io;
  spec.memory_limit_bytes = memory_limit_bytes;
  return spec;
}

// What one request to a serving worker produced.
struct Heard {
  std::optional<std::int64_t> end;  // the code of its `end` line
  std::string error_line;
  bool anything = false;  // any line at all
};

class WorkerExecutor : public UnitExecutor {
 public:
  explicit WorkerExecutor(WorkerExecutorOptions options) : options_(std::move(options)) {
    if (options_.root.empty()) options_.root = "/";
  }
  ~WorkerExecutor() override { Release(); }

  ExecutionResult Execute(const ExecutionRequest& request) override {
    // A worker started under other limits, or gone while it waited (its idle time ran out,
    // someone killed it), is replaced: that is not the unit's doing.
    if (worker_ && (worker_->HasExited() || threads_ != request.threads ||
                    memory_limit_bytes_ != request.memory_limit_bytes)) {
      Release();
    }
    ExecutionRequest absolute = request;
    absolute.unit_dir = std::filesystem::absolute(request.unit_dir);
    absolute.model_blob = std::filesystem::absolute(request.model_blob);
    absolute.data_blob = std::filesystem::absolute(request.data_blob);
    const std::string line = FormatWorkerRequest(absolute);
    // A second try only for a worker that left before hearing the request (it reached its idle
    // time just as the request was sent).
    for (int attempt = 0;; ++attempt) {
      if (!worker_) {
        if (auto started = StartWorker(request); !started) {
          // No worker program (or no permission): nothing here can run units.
          ExecutionResult result;
          result.end = ExecutionEnd::kCrashed;
          result.message =
              "cannot start " + options_.worker.string() + ": " + started.error().ToString();
          return result;
        }
      }
      Heard heard;
      ExecutionResult result = RunOnWorker(line, request, heard);
      if (attempt == 0 && !heard.anything && !worker_ && result.end == ExecutionEnd::kCrashed) {
        spdlog::debug("unit {}: the worker had left before the request; starting another",
                      request.manifest != nullptr ? request.manifest->unit_id : 0);
        continue;
      }
      return result;
    }
  }

  void Release() override {
    if (!worker_) return;
    if (worker_->running()) {
      // An idle worker exits at once on SIGTERM; one that does not is killed after the grace.
      SuperviseHooks hooks;
      hooks.grace = options_.grace;
      hooks.max_line_bytes = kMaxWorkerLine;
      hooks.should_stop = [] { return true; };
      hooks.stop_poll = std::chrono::milliseconds(1);
      (void)worker_->Supervise(hooks);
    }
    worker_.reset();
  }

 private:
  common::Status StartWorker(const ExecutionRequest& request) {
    WorkerSpec spec = SpecFor(options_,
                              WorkerServeArgv(options_.worker, options_.root, request.threads,
                                              options_.idle_exit_seconds),
                              request.threads, request.memory_limit_bytes);
    spec.requests_on_stdin = true;
    UBCP_ASSIGN_OR_RETURN(WorkerProcess worker, WorkerProcess::Start(spec));
    if (spec.idle_io && !worker.idle_io_applied() && !idle_io_logged_) {
      spdlog::info("worker runs without the idle IO class: {}", worker.idle_io_error());
      idle_io_logged_ = true;
    }
    worker_.emplace(std::move(worker));
    threads_ = request.threads;
    memory_limit_bytes_ = request.memory_limit_bytes;
    return {};
  }

  // Sends the request to the worker in hand and supervises it until the unit's `end` line or
  // the worker's exit. The worker is kept only when it answered and is still running.
  ExecutionResult RunOnWorker(const std::string& line, const ExecutionRequest& request,
                              Heard& heard) {
    ExecutionResult result;
    result.worker_pid = worker_->pid();
    const std::int64_t unit_id = request.manifest != nullptr ? request.manifest->unit_id : 0;
    if (auto sent = worker_->Send(line); !sent) {
      // It is gone or going: supervise it to its end below to learn how.
      spdlog::debug("unit {}: {}", unit_id, sent.error().ToString());
    }
    SuperviseHooks hooks;
    hooks.grace = options_.grace;
    hooks.max_line_bytes = kMaxWorkerLine;
    hooks.should_stop = request.should_stop;
    hooks.is_answer = [&heard](std::string_view) { return heard.end.has_value(); };
    hooks.on_line = [&](std::string_view text) {
      heard.anything = true;
      auto event = ParseWorkerLine(text);
      if (!event) {
        spdlog::debug("worker: {}", text);
        return;
      }
      switch (event->kind) {
        case WorkerEvent::Kind::kProgress:
          if (request.progress) request.progress(event->first, event->second);
          break;
        case WorkerEvent::Kind::kResumed:
          result.resumed_from_step = event->first;
          spdlog::info("unit {}: resumed from the checkpoint after step {}", unit_id, event->first);
          break;
        case WorkerEvent::Kind::kCheckpoint:
          spdlog::debug("unit {} checkpoint after step {}", unit_id, event->first);
          break;
        case WorkerEvent::Kind::kError:
          heard.error_line = event->text;
          break;
        case WorkerEvent::Kind::kEnd:
          heard.end = event->first;
          break;
        case WorkerEvent::Kind::kBenchmark:
          break;
      }
    };
    auto exit = worker_->Supervise(hooks);
    if (!exit) {
      worker_.reset();
      result.end = ExecutionEnd::kCrashed;
      result.message = exit.error().ToString();
      return result;
    }
    result.peak_rss_bytes = exit->peak_rss_bytes;
    if (exit->end != WorkerEnd::kAnswered) worker_.reset();
    const std::string how = DescribeWorkerExit(*exit);
    // The unit's own end line decides, also when the worker was stopped or killed just after.
    if (heard.end == kWorkerDone) {
      result.output = LoadUnitOutput(request.unit_dir);
      if (!result.output) {
        Release();
        result.end = ExecutionEnd::kCrashed;
        result.message = "the worker ended the unit without a readable output";
        return result;
      }
      result.end = ExecutionEnd::kDone;
      return result;
    }
    if (heard.end == kWorkerFailed) {
      result.end = ExecutionEnd::kFailed;
      result.message = heard.error_line.empty() ? "the worker failed the unit" : heard.error_line;
      return result;
    }
    switch (exit->end) {
      case WorkerEnd::kStoppedOnRequest:
        result.end = ExecutionEnd::kStopped;
        result.message = how;
        return result;
      case WorkerEnd::kOverMemoryCap:
        result.end = ExecutionEnd::kFailed;
        result.message = "the worker used more memory than the donor's limit (" +
                         std::to_string(request.memory_limit_bytes >> 20) + " MiB): " + how;
        return result;
      case WorkerEnd::kExited:
        if (exit->exit_code == kWorkerStopped) {
          result.end = ExecutionEnd::kStopped;
          result.message = "worker stopped after a checkpoint";
          return result;
        }
        break;
      case WorkerEnd::kSignaled:
      case WorkerEnd::kAnswered:  // an answer without an end line cannot happen
        break;
    }
    result.end = ExecutionEnd::kCrashed;
    result.message = heard.error_line.empty() ? how : how + ": " + heard.error_line;
    return result;
  }

  WorkerExecutorOptions options_;
  std::optional<WorkerProcess> worker_;  // the serving worker, between units too
  int threads_ = 0;                      // what worker_ was started with
  std::uint64_t memory_limit_bytes_ = 0;
  bool idle_io_logged_ = false;
};

}  // namespace

std::shared_ptr<UnitExecutor> MakeWorkerExecutor(WorkerExecutorOptions options) {
  return std::make_shared<WorkerExecutor>(std::move(options));
}

common::Result<BenchmarkReport> RunWorkerBenchmark(const WorkerExecutorOptions& options,
                                                   double seconds, int threads) {
  const WorkerSpec spec =
      SpecFor(options, WorkerBenchmarkArgv(options.worker, seconds, threads), threads, 0);
  UBCP_ASSIGN_OR_RETURN(WorkerProcess worker, WorkerProcess::Start(spec));
  std::optional<common::Result<BenchmarkReport>> report;
  SuperviseHooks hooks;
  hooks.max_line_bytes = kMaxWorkerLine;
  hooks.on_line = [&](std::string_view line) {
    auto event = ParseWorkerLine(line);
    if (event && event->kind == WorkerEvent::Kind::kBenchmark) {
      report = BenchmarkFromJson(event->text);
    }
  };
  UBCP_ASSIGN_OR_RETURN(WorkerExit exit, worker.Supervise(hooks));
  if (exit.end != WorkerEnd::kExited || exit.exit_code != kWorkerDone || !report) {
    return common::MakeError(
        common::Errc::kInternal,
        "the benchmark worker " + DescribeWorkerExit(exit) + (report ? "" : " without a report"));
  }
  return *report;
}

}  // namespace ubcp::client
