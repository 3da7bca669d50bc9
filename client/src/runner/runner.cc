// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/runner.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/sysinfo.h>

#include <chrono>
#include <limits>
#include <random>
#include <thread>

#include "ubcp/client/executor.h"

namespace ubcp::client {
using common::Errc;
using common::MakeError;

namespace {

std::int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Sleeps up to `seconds`, waking early when `stop` is set.
void SleepFor(double seconds, const std::atomic<bool>& stop) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!stop && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Exponential backoff with jitter: attempt k waits uniform(cap / 2, cap), cap = min(max,
// 0.25 s * 2^k). The lower half keeps waits growing; the jitter keeps hosts out of lockstep.
class Backoff {
 public:
  explicit Backoff(double max_s) : max_s_(max_s), rng_(std::random_device{}()) {}
  double Next() {
    double cap = std::min(max_s_, 0.25 * static_cast<double>(1u << std::min(attempt_, 16)));
    ++attempt_;
    return std::uniform_real_distribution<double>(cap / 2, cap)(rng_);
  }
  void Reset() { attempt_ = 0; }

 private:
  double max_s_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

// Retries `call` while it fails with a retryable error (network, 5xx).
template <class F>
auto WithRetry(F&& call, double max_backoff_s, const std::atomic<bool>& stop, int& retries)
    -> decltype(call()) {
  Backoff backoff(max_backoff_s);
  for (;;) {
    auto r = call();
    if (r || !IsRetryable(r.error()) || stop) return r;
    ++retries;
    double wait = backoff.Next();
    spdlog::warn("{}; retrying in {:.1f}s", r.error().ToString(), wait);
    SleepFor(wait, stop);
  }
}

// The coordinator's refusal of a result: 403 (signer, signature or host) or 409 (not the unit's
// current lease). Final: the same bytes would be refused again.
bool IsRefusal(const common::Error& e) {
  return e.code == Errc::kForbidden || e.code == Errc::kBadSignature || e.code == Errc::kConflict;
}

}  // namespace

common::Result<common::PublicKey> EstablishTrust(CoordinatorApi& api, const HostState& state,
                                                 const TrustOptions& options) {
  UBCP_ASSIGN_OR_RETURN(CoordinatorInfo info, api.GetInfo());
  UBCP_ASSIGN_OR_RETURN(std::optional<common::PublicKey> stored, state.TrustedCoordinatorKey());
  std::optional<common::PublicKey> expected =
      options.coordinator_key ? options.coordinator_key : stored;
  if (expected) {
    if (!(info.signing_key == *expected)) {
      return MakeError(Errc::kForbidden, "coordinator presents key " + info.fingerprint +
                                             ", but this host trusts " +
                                             common::Fingerprint(*expected));
    }
    if (!stored) UBCP_RETURN_IF_ERROR(state.TrustCoordinatorKey(*expected));
    return *expected;
  }
  if (!options.trust_on_first_use) {
    return MakeError(Errc::kForbidden,
                     "no trusted coordinator key: pass --coordinator-key, or --trust-on-first-use "
                     "to accept " +
                         info.fingerprint);
  }
  spdlog::warn("trusting coordinator key {} on first use", info.fingerprint);
  UBCP_RETURN_IF_ERROR(state.TrustCoordinatorKey(info.signing_key));
  return info.signing_key;
}

common::HostBenchmark ToWire(const BenchmarkReport& report) {
  common::HostBenchmark b;
  b.matmul_gflops = report.matmul_gflops;
  for (const auto& t : report.train) b.train.push_back({t.model, t.samples_per_s});
  b.cpu_threads = report.cpu_threads;
  b.cuda_devices = report.cuda_devices;
  b.cuda_names = report.cuda_names;
  b.cuda_matmul_gflops = report.cuda_matmul_gflops;
  b.torch_version = report.torch_version;
  // SummarizeGpus always writes a status: an empty one means no probe ran, i.e. not reported.
  if (report.gpu.status.empty()) return b;
  // The summary holds what the driver and dlerror said; it is cut to the wire's bounds here
  // (and made valid UTF-8), since the coordinator refuses a registration that exceeds them.
  common::GpuReport gpu;
  gpu.status = common::FitUtf8(report.gpu.status, common::kMaxGpuStatus);
  gpu.driver = common::FitUtf8(report.gpu.driver_version, common::kMaxGpuDriver);
  for (const NvidiaGpu& g : report.gpu.gpus) {
    if (gpu.devices.size() == common::kMaxGpuDevices) break;
    gpu.devices.push_back({common::FitUtf8(g.name, common::kMaxStringField),
                           g.memory_total_bytes / (std::uint64_t{1} << 20)});
  }
  b.gpu = std::move(gpu);
  return b;
}

common::Result<Registration> EnsureRegistered(
    CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
    const std::string& name, const std::function<common::Result<BenchmarkReport>()>& bench) {
  UBCP_ASSIGN_OR_RETURN(std::optional<Registration> saved, state.LoadRegistration());
  if (saved) return *saved;
  UBCP_ASSIGN_OR_RETURN(BenchmarkReport report, bench());
  spdlog::info("benchmark: matmul {:.1f} GFLOPS, {} CUDA device(s)", report.matmul_gflops,
               report.cuda_devices);
  for (const auto& t : report.train) {
    spdlog::info("benchmark: {} trains {:.0f} samples/s", t.model, t.samples_per_s);
  }
  common::HostRegistration reg;
  reg.public_key = key.public_key().Hex();
  reg.name = name;
  reg.issued_at = NowSeconds();
  reg.benchmark = ToWire(report);
  struct sysinfo si {};
  if (::sysinfo(&si) == 0) reg.capabilities.memory_mb = si.totalram * si.mem_unit / (1u << 20);
  reg.capabilities.cpu_cores = static_cast<int>(std::thread::hardware_concurrency());
  reg.capabilities.cuda = report.cuda_devices > 0;
  reg.capabilities.client_version = "0.1.0";
  auto envelope =
      common::SignPayload(key, common::kDomainRegister, common::SerializeHostRegistration(reg));
  UBCP_ASSIGN_OR_RETURN(common::HostRegistered answer, api.Register(envelope));
  Registration registration{answer.host_id, answer.token};
  UBCP_RETURN_IF_ERROR(state.SaveRegistration(registration));
  spdlog::info("registered as host {}", answer.host_id);
  return registration;
}

Runner::Runner(CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
               common::PublicKey coordinator_key, std::int64_t host_id, RunnerOptions options)
    : api_(api),
      state_(state),
      key_(key),
      host_id_(host_id),
      options_(std::move(options)),
      adversary_memory_(options_.adversary),
      unit_threads_(options_.threads) {
  trusted_.online = coordinator_key;
  trusted_.expires_at = std::numeric_limits<std::int64_t>::max();
}

Runner::Runner(CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
               common::TrustedKeys rooted, std::int64_t host_id, RunnerOptions options)
    : api_(api),
      state_(state),
      key_(key),
      trusted_(std::move(rooted)),
      rooted_(true),
      host_id_(host_id),
      options_(std::move(options)),
      adversary_memory_(options_.adversary),
      unit_threads_(options_.threads) {}

common::Result<common::TrustedKeys> RefreshRootedTrust(CoordinatorApi& api, const HostState& state,
                                                       const common::PublicKey& root,
                                                       std::int64_t now) {
  UBCP_ASSIGN_OR_RETURN(common::TrustedKeys trusted, state.LoadTrustedKeys(root));
  UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope statement, api.GetKeyStatement());
  UBCP_ASSIGN_OR_RETURN(common::TrustedKeys next,
                        common::AcceptKeyStatement(trusted, statement, now));
  if (next.version != trusted.version || next.expires_at != trusted.expires_at) {
    UBCP_RETURN_IF_ERROR(state.SaveTrustedKeys(next));
    spdlog::info("coordinator key version {} accepted: {}", next.version,
                 common::Fingerprint(*next.online));
  }
  return next;
}

common::Status Runner::VerifySigner(const common::SignedEnvelope& envelope) {
  const std::int64_t now = NowSeconds();
  auto signer_ok = common::VerifyManifestSigner(trusted_, envelope, now);
  if (!signer_ok && rooted_) {
    // Perhaps the coordinator rotated its key (or our statement expired): ask for the current
    // statement, which must pass the root's rules, and check once more.
    auto refreshed = RefreshRootedTrust(api_, state_, trusted_.root, now);
    if (refreshed) {
      trusted_ = *refreshed;
      signer_ok = common::VerifyManifestSigner(trusted_, envelope, now);
    } else {
      ReportError(fmt::format("key statement refused: {}", refreshed.error().ToString()));
    }
  }
  return signer_ok;
}

common::Result<std::filesystem::path> Runner::FetchBlob(const common::BlobRef& ref,
                                                        const std::atomic<bool>& stop,
                                                        int& retries) {
  auto cached = state_.BlobPath(ref.id);
  if (!cached) return MakeError(Errc::kMalformed, "manifest names a bad blob id");
  const std::filesystem::path& path = *cached;
  // A cached file that still hashes right is used as is (nothing is fetched); a damaged one is
  // fetched again and replaced.
  auto fetched = WithRetry(
      [&]() -> common::Status {
        std::uint64_t received = 0;
        auto s = api_.DownloadBlob(ref, path, &received);  // resumes a partial download
        CountTransfer(received, 0);
        return s;
      },
      options_.max_backoff_s, stop, retries);
  if (!fetched) return fetched.error();
  state_.TouchBlob(ref.id);  // recently used: the last to be pruned
  return path;
}

void Runner::PruneBlobCache() {
  std::set<std::string> in_use;
  if (auto pending = journal_->Pending()) {
    for (const UnitRecord& record : *pending) {
      // A manifest that no longer verifies keeps nothing: its unit is given up when next run.
      if (auto held = LoadHeldManifest(record.unit_id)) {
        in_use.insert(held->manifest.model.id);
        in_use.insert(held->manifest.data.id);
      }
    }
  }
  if (const std::uint64_t removed = state_.PruneBlobs(options_.blob_cache_bytes, in_use)) {
    spdlog::info("blob cache: removed {} MiB of least recently used blobs", removed >> 20);
  }
}

Runner::Step Runner::GiveUp(std::int64_t unit_id, const std::string& message) {
  ReportError(message);
  // Read before Finish removes the unit's directory: the report names the lease by it.
  auto held = LoadHeldManifest(unit_id);
  if (auto s = journal_->Finish(unit_id, /*acknowledged=*/false, message); !s) {
    spdlog::error("unit {}: cannot record its end: {}", unit_id, s.error().ToString());
  }
  // The coordinator is told at once, so that it re-issues the unit without waiting for the
  // lease deadline. Best effort and sent once: if it is lost, the deadline still re-issues it.
  if (!held) {
    spdlog::warn("unit {}: {}; the coordinator re-issues it at its deadline", unit_id,
                 held.error().ToString());
    return Step::kRefused;
  }
  common::UnitAbandon report;
  report.unit_id = unit_id;
  report.attempt = held->manifest.attempt;
  report.manifest_hash = common::PayloadHash(held->envelope);
  report.reason = common::FitUtf8(message, common::kMaxAbandonReason);
  auto released = api_.AbandonUnit(report);
  if (!released) {
    spdlog::warn(
        "unit {}: cannot tell the coordinator it was given up ({}); it re-issues the "
        "unit at its deadline",
        unit_id, released.error().ToString());
  } else {
    spdlog::info("unit {}: the coordinator {}", unit_id,
                 *released ? "released its lease" : "no longer held it for this host");
  }
  return Step::kRefused;
}

Runner::Step Runner::RunOne(RunSummary& summary, const std::atomic<bool>& stop) {
  if (!journal_) {
    auto journal = UnitJournal::Open(state_.dir());
    if (!journal) {
      summary.fatal = journal.error();
      return Step::kFatal;
    }
    journal_.emplace(std::move(*journal));
  }
  // Units held from before (a crash, a restart, a pause) are finished before new work is asked.
  auto pending = journal_->Pending();
  if (!pending) {
    summary.fatal = pending.error();
    return Step::kFatal;
  }
  if (!pending->empty()) {
    const UnitRecord& record = pending->front();
    ++summary.units_resumed;
    spdlog::info("continuing unit {} from phase {}", record.unit_id, PhaseName(record.phase));
    auto held = LoadHeldManifest(record.unit_id);
    if (!held) {
      return GiveUp(record.unit_id,
                    fmt::format("unit {}: {}", record.unit_id, held.error().ToString()));
    }
    return ContinueUnit(record, *held, summary, stop);
  }

  common::WorkRequest request;
  request.kinds = options_.kinds;
  auto work = api_.RequestWork(request);
  if (!work) {
    if (IsRetryable(work.error())) {
      spdlog::warn("work request failed: {}", work.error().ToString());
      return Step::kRetry;
    }
    ReportError(fmt::format("work request refused: {}", work.error().ToString()));
    if (work.error().code == common::Errc::kUnauthorized ||
        work.error().code == common::Errc::kForbidden) {
      summary.fatal = work.error();
      return Step::kFatal;
    }
    return Step::kRefused;
  }
  if (!work->has_value()) return Step::kNoWork;
  const common::SignedEnvelope& envelope = **work;

  // The signature is checked before the manifest is parsed: a proxy or mirror cannot forge work.
  if (auto signer_ok = VerifySigner(envelope); !signer_ok) {
    ReportError(fmt::format("refusing manifest: {}", signer_ok.error().ToString()));
    return Step::kRefused;
  }
  auto manifest = common::ParseManifest(envelope.payload);
  if (!manifest) {
    ReportError(fmt::format("refusing manifest: {}", manifest.error().ToString()));
    return Step::kRefused;
  }
  if (manifest->host_id != host_id_) {
    ReportError(fmt::format("refusing manifest for host {}", manifest->host_id));
    return Step::kRefused;
  }
  // The lease is on disk before anything is done with it.
  if (auto begun = journal_->Begin(manifest->unit_id, envelope, NowSeconds()); !begun) {
    ReportError(fmt::format("unit {}: cannot record the lease: {}", manifest->unit_id,
                            begun.error().ToString()));
    return Step::kRefused;
  }
  tampered_ = false;
  auto record = journal_->Load(manifest->unit_id);
  if (!record) {
    return GiveUp(manifest->unit_id, fmt::format("unit {}: lease not readable: {}",
                                                 manifest->unit_id, record.error().ToString()));
  }
  // Verified above: a fresh lease is not read back (a held one is, LoadHeldManifest).
  return ContinueUnit(*record, HeldManifest{envelope, *manifest}, summary, stop);
}

common::Result<Runner::HeldManifest> Runner::LoadHeldManifest(std::int64_t unit_id) {
  UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope envelope, journal_->LoadManifest(unit_id));
  // Verified again: the file is read back from disk.
  if (auto signer_ok = VerifySigner(envelope); !signer_ok) {
    return MakeError(signer_ok.error().code,
                     "manifest no longer verifies: " + signer_ok.error().ToString());
  }
  auto parsed = common::ParseManifest(envelope.payload);
  if (!parsed || parsed->unit_id != unit_id || parsed->host_id != host_id_) {
    return MakeError(Errc::kMalformed, "stored manifest is not this unit's");
  }
  return HeldManifest{std::move(envelope), std::move(*parsed)};
}

Runner::Step Runner::ContinueUnit(UnitRecord record, const HeldManifest& held, RunSummary& summary,
                                  const std::atomic<bool>& stop) {
  const std::int64_t unit_id = record.unit_id;
  const common::Manifest& m = held.manifest;
  const std::string manifest_hash = common::PayloadHash(held.envelope);
  spdlog::info("unit {} ({} job {} round {} attempt {}): {} with {} threads", m.unit_id, m.kind,
               m.job_id, m.round, m.attempt, PhaseName(record.phase), unit_threads_);
  const std::int64_t total_steps =
      m.kind == common::kUnitFinetune ? std::max<std::int64_t>(1, m.params.local_steps) : 1;
  if (options_.control != nullptr) {
    const auto per_step = seconds_per_step_.find(m.kind);
    options_.control->BeginUnit(
        m.unit_id, m.kind, m.job_id, m.round, total_steps,
        per_step == seconds_per_step_.end() ? 0.0 : per_step->second * total_steps);
  }
  const auto advance = [&](UnitPhase next) {
    auto s = journal_->Advance(record, next);
    if (!s) spdlog::error("unit {}: cannot save phase: {}", unit_id, s.error().ToString());
    return static_cast<bool>(s);
  };

  // leased/fetched -> executed: the output is on disk.
  std::optional<UnitOutput> output;
  if (record.phase >= UnitPhase::kExecuted) output = LoadUnitOutput(journal_->Dir(unit_id));
  if (!output) {
    if (options_.control != nullptr) options_.control->SetPhase("downloading");
    auto model = FetchBlob(m.model, stop, summary.retries);
    auto data = model ? FetchBlob(m.data, stop, summary.retries)
                      : common::Result<std::filesystem::path>(model.error());
    if (!model || !data) {
      const common::Error& e = !model ? model.error() : data.error();
      if (stop || IsRetryable(e)) return Step::kStopped;
      return GiveUp(unit_id,
                    fmt::format("unit {}: cannot fetch inputs: {}", unit_id, e.ToString()));
    }
    if (record.phase == UnitPhase::kLeased && !advance(UnitPhase::kFetched)) return Step::kRetry;

    // A lazy (stale) host does no training: it answers with the update of an earlier unit.
    if (const KeptUpdate* stale = adversary_memory_.StaleUpdate(m.kind)) {
      output = UnitOutput{stale->update, stale->metrics, stale->wall_seconds};
      ++summary.stale_updates;
    } else {
      if (options_.control != nullptr) options_.control->SetPhase("executing");
      ExecutionRequest request;
      request.unit_dir = journal_->Dir(unit_id);
      request.manifest_hash = manifest_hash;
      request.manifest = &m;
      request.model_blob = *model;
      request.data_blob = *data;
      request.threads = unit_threads_;
      request.memory_limit_bytes = unit_memory_mb_ << 20;
      request.checkpoint_every = options_.checkpoint_every;
      request.checkpoint_seconds = options_.checkpoint_seconds;
      request.adversary = options_.adversary;
      if (options_.control != nullptr) {
        request.progress = [control = options_.control](std::int64_t done, std::int64_t total) {
          control->SetProgress(done, total);
        };
      }
      ControlState* const control = options_.control;
      request.should_stop = [&stop, control] {
        return stop.load() || (control != nullptr && control->paused());
      };
      ExecutionResult executed = options_.executor->Execute(request);
      switch (executed.end) {
        case ExecutionEnd::kDone:
          break;
        case ExecutionEnd::kStopped:
          ++summary.units_interrupted;
          spdlog::info("unit {}: stopped ({}); it continues from its checkpoint later", unit_id,
                       executed.message);
          return Step::kStopped;
        case ExecutionEnd::kFailed:
          return GiveUp(unit_id,
                        fmt::format("unit {}: execution failed: {}", unit_id, executed.message));
        case ExecutionEnd::kCrashed:
          // Counted on disk: a unit whose worker crashes every time is given up, even across
          // restarts of the daemon.
          ++record.worker_crashes;
          if (auto saved = journal_->Save(record); !saved) {
            spdlog::error("unit {}: cannot save its state: {}", unit_id, saved.error().ToString());
          }
          if (record.worker_crashes >= options_.max_worker_crashes) {
            return GiveUp(unit_id, fmt::format("unit {}: worker crashed {} times, last: {}",
                                               unit_id, record.worker_crashes, executed.message));
          }
          ReportError(
              fmt::format("unit {}: worker crashed ({}); trying again", unit_id, executed.message));
          return Step::kRetry;
      }
      output = std::move(executed.output);
      if (!output)
        return GiveUp(unit_id, fmt::format("unit {}: executor returned no output", unit_id));
      if (executed.resumed_from_step == 0) {
        seconds_per_step_[m.kind] = output->wall_seconds / static_cast<double>(total_steps);
      }
      if (output->update) {
        adversary_memory_.KeepUpdate(m.kind, *output->update, output->metrics,
                                     output->wall_seconds);
      }
    }
    // The stale answer is saved like any other, so a crash cannot change it.
    if (auto saved = SaveUnitOutput(journal_->Dir(unit_id), *output); !saved) {
      ReportError(
          fmt::format("unit {}: cannot save its output: {}", unit_id, saved.error().ToString()));
      return Step::kRetry;
    }
    if (!advance(UnitPhase::kExecuted)) return Step::kRetry;
  }

  // executed -> uploaded: the update is on the coordinator.
  if (options_.control != nullptr) options_.control->SetPhase("uploading");
  std::optional<common::BlobRef> update_ref;
  if (output->update) {
    const common::EncodedBlob& update = *output->update;
    update_ref =
        common::BlobRef{common::ContentId(update.bytes), update.bytes.size(), update.raw_size};
  }
  if (record.phase == UnitPhase::kExecuted) {
    if (output->update) {
      auto put = WithRetry(
          [&]() -> common::Status {
            std::uint64_t sent = 0;
            auto s = api_.UploadBlob(update_ref->id, output->update->bytes, &sent);
            CountTransfer(0, sent);
            return s;
          },
          options_.max_backoff_s, stop, summary.retries);
      if (!put) {
        if (stop || IsRetryable(put.error())) return Step::kStopped;
        return GiveUp(unit_id, fmt::format("unit {}: update upload failed: {}", unit_id,
                                           put.error().ToString()));
      }
    }
    if (!advance(UnitPhase::kUploaded)) return Step::kRetry;
  }

  // uploaded -> signed: signed once and saved; every retry sends these exact bytes, so the
  // coordinator sees a duplicate, not a second result. An honest host signs `result` itself;
  // an adversary may answer otherwise.
  if (record.phase == UnitPhase::kUploaded) {
    common::ResultPayload result;
    result.unit_id = m.unit_id;
    result.host_id = host_id_;
    result.attempt = m.attempt;
    result.manifest_hash = manifest_hash;
    result.kind = m.kind;
    result.metrics = output->metrics;
    result.wall_seconds = output->wall_seconds;
    result.update = update_ref;
    const AdversaryAnswer answer = adversary_memory_.Answer(key_, result);
    tampered_ = answer.tampered;
    if (auto saved = journal_->SaveResult(unit_id, answer.envelope); !saved) {
      ReportError(
          fmt::format("unit {}: cannot save its result: {}", unit_id, saved.error().ToString()));
      return Step::kRetry;
    }
    if (!advance(UnitPhase::kSigned)) return Step::kRetry;
  }

  // signed -> acknowledged.
  auto signed_result = journal_->LoadResult(unit_id);
  if (!signed_result) {
    return GiveUp(unit_id, fmt::format("unit {}: saved result unreadable: {}", unit_id,
                                       signed_result.error().ToString()));
  }
  ++summary.results_submitted;
  auto ack = WithRetry([&] { return api_.PostResult(*signed_result); }, options_.max_backoff_s,
                       stop, summary.retries);
  // An answer, even a refusal, means the coordinator received the envelope.
  if (ack || !IsRetryable(ack.error())) {
    CountTransfer(0, common::SerializeEnvelope(*signed_result).size());
  }
  if (!ack) {
    if (IsRetryable(ack.error())) return Step::kStopped;  // stopped while retrying: kept on disk
    const bool refused = IsRefusal(ack.error());
    if (refused) ++summary.results_rejected;
    if (tampered_ && refused) {
      spdlog::warn("unit {}: tampered result refused: {}", unit_id, ack.error().ToString());
      (void)journal_->Finish(unit_id, false, "tampered result refused");
      return Step::kTampered;
    }
    return GiveUp(unit_id,
                  fmt::format("unit {}: result refused: {}", unit_id, ack.error().ToString()));
  }
  if (ack->status == "accepted") {
    ++summary.results_accepted;
  } else {
    ++summary.results_duplicate;
  }
  if (auto finished = journal_->Finish(unit_id, /*acknowledged=*/true, ack->status); !finished) {
    // The coordinator has the result: a retry after a restart is answered "duplicate".
    spdlog::error("unit {}: acknowledged, but not recorded: {}", unit_id,
                  finished.error().ToString());
  }
  if (tampered_) {
    spdlog::warn("unit {}: tampered result answered '{}'", unit_id, ack->status);
    return Step::kTampered;
  }
  if (m.kind == common::kUnitEval) {
    ++summary.eval_units;
    spdlog::info("unit {} done: eval loss {:.4f} accuracy {:.4f} on {} samples ({})", m.unit_id,
                 output->metrics.loss, output->metrics.accuracy, output->metrics.samples,
                 ack->status);
  } else {
    ++summary.finetune_units;
    const auto& u = *output->update;
    spdlog::info(
        "unit {} done: loss {:.4f} -> {:.4f}, update {} bytes ({} as fp32, {:.1f}x), {:.2f}s ({})",
        m.unit_id, output->metrics.first_loss, output->metrics.loss, u.bytes.size(), u.fp32_size,
        static_cast<double>(u.fp32_size) / std::max<std::size_t>(1, u.bytes.size()),
        output->wall_seconds, ack->status);
  }
  return Step::kDone;
}

void Runner::ReportError(const std::string& message) {
  spdlog::error("{}", message);
  if (options_.control != nullptr) options_.control->SetLastError(message);
}

void Runner::RefreshContribution() {
  const auto now = std::chrono::steady_clock::now();
  if (contribution_at_ &&
      now - *contribution_at_ < std::chrono::duration<double>(options_.contribution_refresh_s)) {
    return;
  }
  contribution_at_ = now;  // a failure waits for the next interval too: totals are not urgent
  auto contribution = api_.GetContribution();
  if (!contribution) {
    spdlog::debug("contribution not refreshed: {}", contribution.error().ToString());
    return;
  }
  options_.control->SetContribution(*contribution);
}

Clock::time_point Runner::WallNow() const {
  return options_.clock ? options_.clock() : Clock::now();
}

common::Result<SystemState> Runner::Probe(Clock::time_point now) {
  if (options_.probe) return options_.probe(now);
  if (!system_probe_) {
    // logind is asked only where loginctl exists; the other idle methods need no command.
    system_probe_ = std::make_unique<SystemProbe>(
        "/",
        CommandInPath("loginctl") ? SpawnCommandRunner(std::chrono::seconds(2)) : CommandRunner{});
  }
  UBCP_ASSIGN_OR_RETURN(SystemProbe::Sample sample, system_probe_->Take(now));
  return sample.state;
}

TransferUsage& Runner::Usage() {
  if (!usage_) {
    auto loaded = LoadTransferUsage(state_.dir() / kTransferUsageFile);
    if (loaded) {
      usage_ = std::move(*loaded);
    } else {
      spdlog::warn("transfer counters unreadable, counting today from zero: {}",
                   loaded.error().ToString());
      usage_.emplace();
    }
  }
  return *usage_;
}

void Runner::CountTransfer(std::uint64_t downloaded, std::uint64_t uploaded) {
  if (downloaded == 0 && uploaded == 0) return;
  const Clock::time_point now = WallNow();
  const std::string day = LocalDay(now, utc_offset_ ? *utc_offset_ : LocalUtcOffset(now));
  usage_ = AddTransfer(Usage(), day, downloaded, uploaded);
  auto saved = SaveTransferUsage(state_.dir() / kTransferUsageFile, *usage_);
  if (!saved && !usage_save_failed_) {
    spdlog::warn("transfer counters not saved: {}", saved.error().ToString());
  }
  usage_save_failed_ = !saved;
}

RunDecision Runner::DecideNow() {
  if (options_.settings != nullptr) {
    auto changed = options_.settings->Poll();
    if (!changed) {
      // The watcher reports one bad content once; the previous settings stay in force.
      ReportError(fmt::format("donor settings not reloaded, the previous ones stay: {}",
                              changed.error().ToString()));
    } else if (*changed) {
      spdlog::info("donor settings reloaded");
    }
  }
  const DonorSettings& settings =
      options_.settings != nullptr ? options_.settings->current() : *options_.fixed_settings;
  const Clock::time_point now = WallNow();
  auto state = Probe(now);
  if (!state) {
    if (!probe_failed_) spdlog::error("cannot probe the machine: {}", state.error().ToString());
    probe_failed_ = true;
    RunDecision d;
    d.reason = "cannot probe the machine: " + state.error().message;
    return d;
  }
  probe_failed_ = false;
  utc_offset_ = state->utc_offset;
  RunDecision d = Decide(settings, *state, now, Usage());
  spdlog::debug("run policy: {} ({} threads, {} MiB memory)", d.reason, d.threads, d.memory_mb);
  return d;
}

RunSummary Runner::Run(const std::atomic<bool>& stop) {
  RunSummary summary;
  if (!options_.executor) {
    summary.fatal = MakeError(Errc::kInvalidArgument, "the runner has no executor");
    return summary;
  }
  Backoff backoff(options_.max_backoff_s);
  std::mt19937_64 rng(std::random_device{}());
  int idle = 0;
  ControlState* const control = options_.control;
  // Whenever no unit follows at once (paused, waiting, no work, a retry, the end), the executor
  // lets its worker go, so that an idle donor holds only the light daemon.
  UnitExecutor& executor = *options_.executor;
  struct ReleaseAtEnd {
    UnitExecutor& executor;
    ~ReleaseAtEnd() { executor.Release(); }
  } release_at_end{executor};
  while (!stop) {
    if (options_.max_units > 0 &&
        summary.units_done + summary.units_tampered >= options_.max_units) {
      break;
    }
    if (control != nullptr) {
      RefreshContribution();
      // Finish is looked at only here, between units: the unit in progress is finished and
      // reported. Pause also stops a unit in progress (ExecutionRequest::should_stop), which
      // stays on disk and continues from its checkpoint once resumed.
      if (control->finish_requested()) {
        spdlog::info("finish requested: stopping after {} units", summary.units_done);
        summary.finished_on_request = true;
        break;
      }
      if (control->paused()) {
        executor.Release();
        SleepFor(options_.pause_poll_s, stop);
        continue;
      }
    }
    if (options_.settings != nullptr || options_.fixed_settings) {
      const RunDecision decision = DecideNow();
      if (control != nullptr) control->SetAllowance(decision.threads, decision.memory_mb);
      if (!decision.run) {
        if (decision.reason != waiting_) spdlog::info("waiting: {}", decision.reason);
        waiting_ = decision.reason;
        if (control != nullptr) control->SetWaiting(waiting_);
        executor.Release();
        SleepFor(options_.policy_poll_s, stop);
        continue;
      }
      const int threads = static_cast<int>(decision.threads);
      if (!allowed_logged_ || !waiting_.empty() || threads != unit_threads_) {
        spdlog::info("may work: {} threads, {} MiB memory", threads, decision.memory_mb);
        allowed_logged_ = true;
      }
      waiting_.clear();
      if (control != nullptr) control->SetWaiting({});
      unit_threads_ = threads;
      unit_memory_mb_ = decision.memory_mb;
    }
    const Step step = RunOne(summary, stop);
    if (control != nullptr) control->EndUnit(step == Step::kDone);
    // After a unit ended (done, answered, given up): its blobs are the most recently used.
    if (step == Step::kDone || step == Step::kTampered || step == Step::kRefused) {
      if (journal_) PruneBlobCache();
    }
    if (step != Step::kDone && step != Step::kTampered) executor.Release();
    switch (step) {
      case Step::kDone:
        ++summary.units_done;
        idle = 0;
        backoff.Reset();
        break;
      case Step::kTampered:
        ++summary.units_tampered;
        idle = 0;
        break;
      case Step::kNoWork: {
        if (options_.max_idle_polls > 0 && ++idle >= options_.max_idle_polls) return summary;
        // Jittered polling so many idle hosts do not ask in lockstep.
        SleepFor(std::uniform_real_distribution<double>(0.5, 1.5)(rng) * options_.idle_poll_s,
                 stop);
        break;
      }
      case Step::kRetry:
        ++summary.retries;
        SleepFor(backoff.Next(), stop);
        break;
      case Step::kRefused:
        ++summary.units_refused;
        SleepFor(backoff.Next(), stop);
        break;
      case Step::kStopped:
        // Paused or stopping: the unit stays on disk and continues from its checkpoint. Only
        // a stop without either flag (which should not happen) is slowed down here.
        if (!stop && (control == nullptr || !control->paused())) SleepFor(backoff.Next(), stop);
        break;
      case Step::kFatal:
        return summary;
    }
  }
  return summary;
}

}  // namespace ubcp::client
