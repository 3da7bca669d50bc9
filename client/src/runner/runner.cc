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
  return b;
}

common::Result<Registration> EnsureRegistered(CoordinatorApi& api, const HostState& state,
                                              const common::SigningKey& key,
                                              const std::string& name,
                                              const std::function<BenchmarkReport()>& bench) {
  UBCP_ASSIGN_OR_RETURN(std::optional<Registration> saved, state.LoadRegistration());
  if (saved) return *saved;
  BenchmarkReport report = bench();
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

common::Result<common::Bytes> Runner::FetchBlob(const common::BlobRef& ref) {
  if (auto cached = state_.CachedBlob(ref.id); cached && cached->size() == ref.size) {
    return std::move(*cached);
  }
  UBCP_ASSIGN_OR_RETURN(common::Bytes bytes, api_.GetBlob(ref));  // size and hash checked
  CountTransfer(bytes.size(), 0);
  state_.CacheBlob(ref.id, bytes);
  return bytes;
}

Runner::Step Runner::RunOne(RunSummary& summary, const std::atomic<bool>& stop) {
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
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
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
  if (!signer_ok) {
    ReportError(fmt::format("refusing manifest: {}", signer_ok.error().ToString()));
    return Step::kRefused;
  }
  auto manifest = common::ParseManifest(envelope.payload);
  if (!manifest) {
    ReportError(fmt::format("refusing manifest: {}", manifest.error().ToString()));
    return Step::kRefused;
  }
  const common::Manifest& m = *manifest;
  if (m.host_id != host_id_) {
    ReportError(fmt::format("refusing manifest for host {}", m.host_id));
    return Step::kRefused;
  }
  spdlog::info("unit {} ({} job {} round {} attempt {}) with {} threads", m.unit_id, m.kind,
               m.job_id, m.round, m.attempt, unit_threads_);
  const std::int64_t total_steps =
      m.kind == common::kUnitFinetune ? std::max<std::int64_t>(1, m.params.local_steps) : 1;
  if (options_.control != nullptr) {
    const auto per_step = seconds_per_step_.find(m.kind);
    options_.control->BeginUnit(
        m.unit_id, m.kind, m.job_id, m.round, total_steps,
        per_step == seconds_per_step_.end() ? 0.0 : per_step->second * total_steps);
  }

  auto model =
      WithRetry([&] { return FetchBlob(m.model); }, options_.max_backoff_s, stop, summary.retries);
  auto data = model ? WithRetry([&] { return FetchBlob(m.data); }, options_.max_backoff_s, stop,
                                summary.retries)
                    : common::Result<common::Bytes>(model.error());
  if (!model || !data) {
    ReportError(fmt::format("unit {}: cannot fetch inputs: {}", m.unit_id,
                            (!model ? model.error() : data.error()).ToString()));
    return Step::kRefused;
  }
  // A lazy (stale) host does no training: it answers with the update of an earlier unit.
  const KeptUpdate* stale = adversary_memory_.StaleUpdate(m.kind);
  ProgressFn progress;
  if (options_.control != nullptr) {
    options_.control->SetPhase("executing");
    progress = [control = options_.control](std::int64_t done, std::int64_t total) {
      control->SetProgress(done, total);
    };
  }
  auto output = stale ? common::Result<UnitOutput>(
                            UnitOutput{stale->update, stale->metrics, stale->wall_seconds})
                      : ExecuteUnit(m, *model, *data, unit_threads_, options_.adversary, progress);
  if (!output) {
    ReportError(fmt::format("unit {}: execution failed: {}", m.unit_id, output.error().ToString()));
    return Step::kRefused;
  }
  if (stale) {
    ++summary.stale_updates;
  } else {
    seconds_per_step_[m.kind] = output->wall_seconds / static_cast<double>(total_steps);
    if (output->update) {
      adversary_memory_.KeepUpdate(m.kind, *output->update, output->metrics, output->wall_seconds);
    }
  }
  if (options_.control != nullptr) options_.control->SetPhase("uploading");

  common::ResultPayload result;
  result.unit_id = m.unit_id;
  result.host_id = host_id_;
  result.attempt = m.attempt;
  result.manifest_hash = common::PayloadHash(envelope);
  result.kind = m.kind;
  result.metrics = output->metrics;
  result.wall_seconds = output->wall_seconds;
  if (output->update) {
    const common::EncodedBlob& update = *output->update;
    std::string id = common::ContentId(update.bytes);
    auto put = WithRetry([&] { return api_.PutBlob(id, update.bytes); }, options_.max_backoff_s,
                         stop, summary.retries);
    if (!put) {
      ReportError(
          fmt::format("unit {}: update upload failed: {}", m.unit_id, put.error().ToString()));
      return Step::kRefused;
    }
    CountTransfer(0, update.bytes.size());
    result.update = common::BlobRef{id, update.bytes.size(), update.raw_size};
  }
  // Signed once; every retry sends these exact bytes, so the coordinator sees a duplicate, not
  // a second result. An honest host signs `result` itself; an adversary may answer otherwise.
  const AdversaryAnswer answer = adversary_memory_.Answer(key_, result);
  const common::SignedEnvelope& signed_result = answer.envelope;
  ++summary.results_submitted;
  auto ack = WithRetry([&] { return api_.PostResult(signed_result); }, options_.max_backoff_s, stop,
                       summary.retries);
  // An answer, even a refusal, means the coordinator received the envelope.
  if (ack || !IsRetryable(ack.error())) {
    CountTransfer(0, common::SerializeEnvelope(signed_result).size());
  }
  if (!ack) {
    const bool refused = IsRefusal(ack.error());
    if (refused) ++summary.results_rejected;
    if (answer.tampered && refused) {
      spdlog::warn("unit {}: tampered result refused: {}", m.unit_id, ack.error().ToString());
      return Step::kTampered;
    }
    ReportError(fmt::format("unit {}: result refused: {}", m.unit_id, ack.error().ToString()));
    return Step::kRefused;
  }
  if (ack->status == "accepted") {
    ++summary.results_accepted;
  } else {
    ++summary.results_duplicate;
  }
  if (answer.tampered) {
    spdlog::warn("unit {}: tampered result answered '{}'", m.unit_id, ack->status);
    return Step::kTampered;
  }
  if (m.kind == common::kUnitEval) {
    ++summary.eval_units;
    spdlog::info("unit {} done: eval loss {:.4f} accuracy {:.4f} on {} samples ({})", m.unit_id,
                 result.metrics.loss, result.metrics.accuracy, result.metrics.samples, ack->status);
  } else {
    ++summary.finetune_units;
    const auto& u = *output->update;
    spdlog::info(
        "unit {} done: loss {:.4f} -> {:.4f}, update {} bytes ({} as fp32, {:.1f}x), {:.2f}s ({})",
        m.unit_id, result.metrics.first_loss, result.metrics.loss, u.bytes.size(), u.fp32_size,
        static_cast<double>(u.fp32_size) / std::max<std::size_t>(1, u.bytes.size()),
        result.wall_seconds, ack->status);
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
  Backoff backoff(options_.max_backoff_s);
  std::mt19937_64 rng(std::random_device{}());
  int idle = 0;
  ControlState* const control = options_.control;
  while (!stop) {
    if (options_.max_units > 0 &&
        summary.units_done + summary.units_tampered >= options_.max_units) {
      break;
    }
    if (control != nullptr) {
      RefreshContribution();
      // Both flags are looked at only here, between units: a unit in progress is always
      // finished and reported, so its lease is never abandoned.
      if (control->finish_requested()) {
        spdlog::info("finish requested: stopping after {} units", summary.units_done);
        summary.finished_on_request = true;
        break;
      }
      if (control->paused()) {
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
        SleepFor(options_.policy_poll_s, stop);
        continue;
      }
      const int threads = static_cast<int>(decision.threads);
      if (!allowed_logged_ || !waiting_.empty() || threads != unit_threads_) {
        // Memory is reported, not enforced: that needs a separate worker process.
        spdlog::info("may work: {} threads, {} MiB memory", threads, decision.memory_mb);
        allowed_logged_ = true;
      }
      waiting_.clear();
      if (control != nullptr) control->SetWaiting({});
      unit_threads_ = threads;
    }
    const Step step = RunOne(summary, stop);
    if (control != nullptr) control->EndUnit(step == Step::kDone);
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
      case Step::kFatal:
        return summary;
    }
  }
  return summary;
}

}  // namespace ubcp::client
