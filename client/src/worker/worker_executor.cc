// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/worker_executor.h"

#include <spdlog/spdlog.h>

#include "ubcp/client/unit_journal.h"
#include "ubcp/client/worker_process.h"
#include "ubcp/client/worker_protocol.h"

namespace ubcp::client {
namespace {

class WorkerExecutor : public UnitExecutor {
 public:
  explicit WorkerExecutor(WorkerExecutorOptions options) : options_(std::move(options)) {}

  ExecutionResult Execute(const ExecutionRequest& request) override {
    ExecutionResult result;
    WorkerSpec spec;
    spec.argv = WorkerRunArgv(options_.worker, request);
    // OpenMP must not start more threads than the donor allows either.
    spec.env_extra = {"OMP_NUM_THREADS=" + std::to_string(request.threads)};
    spec.nice = options_.nice;
    spec.idle_io = options_.idle_io;
    spec.memory_limit_bytes = request.memory_limit_bytes;
    auto worker = WorkerProcess::Start(spec);
    if (!worker) {
      // No worker program (or no permission): nothing here can run units.
      result.end = ExecutionEnd::kCrashed;
      result.message =
          "cannot start " + options_.worker.string() + ": " + worker.error().ToString();
      return result;
    }
    if (spec.idle_io && !worker->idle_io_applied() && !idle_io_logged_) {
      spdlog::info("worker runs without the idle IO class: {}", worker->idle_io_error());
      idle_io_logged_ = true;
    }
    std::string error_line;
    SuperviseHooks hooks;
    hooks.grace = options_.grace;
    hooks.max_line_bytes = kMaxWorkerLine;
    hooks.should_stop = request.should_stop;
    hooks.on_line = [&](std::string_view line) {
      auto event = ParseWorkerLine(line);
      if (!event) {
        spdlog::debug("worker: {}", line);
        return;
      }
      switch (event->kind) {
        case WorkerEvent::Kind::kProgress:
          if (request.progress) request.progress(event->first, event->second);
          break;
        case WorkerEvent::Kind::kResumed:
          result.resumed_from_step = event->first;
          spdlog::info("unit {}: resumed from the checkpoint after step {}",
                       request.manifest != nullptr ? request.manifest->unit_id : 0, event->first);
          break;
        case WorkerEvent::Kind::kCheckpoint:
          spdlog::debug("unit {} checkpoint after step {}",
                        request.manifest != nullptr ? request.manifest->unit_id : 0, event->first);
          break;
        case WorkerEvent::Kind::kError:
          error_line = event->text;
          break;
        case WorkerEvent::Kind::kBenchmark:
          break;
      }
    };
    auto exit = worker->Supervise(hooks);
    if (!exit) {
      result.end = ExecutionEnd::kCrashed;
      result.message = exit.error().ToString();
      return result;
    }
    result.peak_rss_bytes = exit->peak_rss_bytes;
    const std::string how = DescribeWorkerExit(*exit);
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
      case WorkerEnd::kSignaled:
        result.end = ExecutionEnd::kCrashed;
        result.message = how;
        return result;
      case WorkerEnd::kExited:
        break;
    }
    switch (exit->exit_code) {
      case kWorkerDone: {
        result.output = LoadUnitOutput(request.unit_dir);
        if (!result.output) {
          result.end = ExecutionEnd::kCrashed;
          result.message = "the worker exited 0 without a readable output";
          return result;
        }
        result.end = ExecutionEnd::kDone;
        return result;
      }
      case kWorkerStopped:
        result.end = ExecutionEnd::kStopped;
        result.message = "worker stopped after a checkpoint";
        return result;
      case kWorkerFailed:
        result.end = ExecutionEnd::kFailed;
        result.message = error_line.empty() ? how : error_line;
        return result;
      default:
        result.end = ExecutionEnd::kCrashed;
        result.message = error_line.empty() ? how : how + ": " + error_line;
        return result;
    }
  }

 private:
  WorkerExecutorOptions options_;
  bool idle_io_logged_ = false;
};

}  // namespace

std::shared_ptr<UnitExecutor> MakeWorkerExecutor(WorkerExecutorOptions options) {
  return std::make_shared<WorkerExecutor>(std::move(options));
}

common::Result<BenchmarkReport> RunWorkerBenchmark(const WorkerExecutorOptions& options,
                                                   double seconds, int threads) {
  WorkerSpec spec;
  spec.argv = WorkerBenchmarkArgv(options.worker, seconds, threads);
  spec.env_extra = {"OMP_NUM_THREADS=" + std::to_string(threads)};
  spec.nice = options.nice;
  spec.idle_io = options.idle_io;
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
