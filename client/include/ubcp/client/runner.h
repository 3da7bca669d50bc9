// SPDX-License-Identifier: Apache-2.0
#pragma once
// The donor's work loop: ask for work, verify the manifest's signature (before parsing it)
// against the trusted coordinator key, record the lease on disk (unit_journal.h), fetch the
// blobs (resuming partial downloads), have the unit executed (unit_executor.h: a supervised
// worker process in the daemon), upload the update (resumably), sign a result that binds the
// manifest's hash, save it, and post it until the coordinator acknowledges it. Every step is
// saved before the next begins, so after a crash or a restart the loop first finishes the units
// it holds, from where they stopped. Network and server failures are retried with exponential
// backoff and jitter; a retried result is the same signed envelope, so the coordinator counts it
// once.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ubcp/client/adversary.h"
#include "ubcp/client/benchmark.h"
#include "ubcp/client/control_socket.h"
#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/donor_settings.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/run_policy.h"
#include "ubcp/client/system_probe.h"
#include "ubcp/client/transfer_usage.h"
#include "ubcp/client/unit_executor.h"
#include "ubcp/client/unit_journal.h"
#include "ubcp/common/crypto.h"

namespace ubcp::client {

struct TrustOptions {
  std::optional<common::PublicKey> coordinator_key;  // given at enrollment
  bool trust_on_first_use = false;
};
// The coordinator key to trust: the given one (which the coordinator must present), else the
// one stored earlier, else -- only with trust_on_first_use -- the one the coordinator presents
// now, which is stored. kForbidden when the coordinator presents another key.
common::Result<common::PublicKey> EstablishTrust(CoordinatorApi& api, const HostState& state,
                                                 const TrustOptions& options);
// With a pinned root key (key_statement.h): fetches the coordinator's key statement, accepts it
// against what this host accepted before (no rollback, no expired statement, no other key at the
// same version) and saves the result. Called at start and when a manifest's signer is unknown.
common::Result<common::TrustedKeys> RefreshRootedTrust(CoordinatorApi& api, const HostState& state,
                                                       const common::PublicKey& root,
                                                       std::int64_t now);

common::HostBenchmark ToWire(const BenchmarkReport& report);
// Loads the saved registration, or registers this host (proof of possession: the registration
// is signed by its key) with the given benchmark and saves the answer.
common::Result<Registration> EnsureRegistered(
    CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
    const std::string& name, const std::function<common::Result<BenchmarkReport>()>& bench);

// The machine's state at `now`, for the run policy (system_probe.h).
using ProbeFn = std::function<common::Result<SystemState>(Clock::time_point now)>;
// The wall clock the run policy and the daily transfer counters read.
using WallClockFn = std::function<Clock::time_point()>;

struct RunnerOptions {
  // Stop after this many completed units (for a protocol adversary, tampered units count too,
  // whatever the answer); 0 = run until stopped.
  int max_units = 0;
  int threads = 1;  // torch intra-op threads for execution
  // Runs the units (required): WorkerExecutor in the daemon, InProcessExecutor in tests.
  std::shared_ptr<UnitExecutor> executor;
  // Fine-tune checkpoints: every checkpoint_every steps (0: not by steps), and at most
  // checkpoint_seconds apart (0: no bound). A crash loses at most the work since the last one.
  int checkpoint_every = 0;
  double checkpoint_seconds = 30;
  // A unit whose worker crashed (killed, out of disk...) this many times is given up.
  int max_worker_crashes = 5;
  // The blob cache (<state>/blobs) is pruned to this size after each unit, least recently used
  // blobs first; the blobs of the units held are kept whatever their size.
  std::uint64_t blob_cache_bytes = std::uint64_t{2} << 30;
  std::vector<std::string> kinds;  // empty = all kinds
  double idle_poll_s = 1.0;        // wait when there is no work
  int max_idle_polls = 0;          // stop after this many empty polls in a row; 0 = never
  double max_backoff_s = 30.0;
  Adversary adversary;  // robustness experiments only (adversary.h); honest by default
  // Headless control (control_socket.h); not owned, must outlive Run; nullptr = none. With it,
  // the loop leases nothing while paused, stops before the next lease once finish is asked,
  // publishes the current unit and its progress, and refreshes the contribution totals.
  ControlState* control = nullptr;
  double pause_poll_s = 0.2;              // how often a paused loop looks at the flags
  double contribution_refresh_s = 300.0;  // how often the contribution totals are refreshed
  // The donor's limits (donor_settings.h); not owned, must outlive Run; nullptr and no
  // fixed_settings: no policy, every lease is allowed and runs with `threads`. With it, before each
  // lease the loop polls the settings file (a changed file takes effect at once; a bad one keeps
  // the old settings and is reported once), probes the machine and asks Decide (run_policy.h). "No"
  // leases nothing, publishes the reason as the control state's `waiting` and waits policy_poll_s;
  // "yes" runs the unit with the decision's thread count and memory cap.
  SettingsWatcher* settings = nullptr;
  // The same policy with settings that never change (flags only, no file to watch); used when
  // `settings` is nullptr.
  std::optional<DonorSettings> fixed_settings;
  double policy_poll_s = 30.0;
  ProbeFn probe;      // empty: a SystemProbe of this machine (/proc, /sys, loginctl)
  WallClockFn clock;  // empty: std::chrono::system_clock::now
};

struct RunSummary {
  int units_done = 0;
  int finetune_units = 0;
  int eval_units = 0;
  int units_refused = 0;  // final errors for a unit (bad manifest, conflict, ...)
  int retries = 0;
  // Result envelopes posted (a retried envelope counts once) and the coordinator's answers.
  int results_submitted = 0;
  int results_accepted = 0;   // recorded and credited
  int results_duplicate = 0;  // a copy of a result it already holds: acknowledged, not counted
  int results_rejected = 0;   // refused: 403 (signer, signature, host) or 409 (not the lease)
  // Adversaries only (adversary.h): units answered with a protocol attack (replay,
  // wrong_version, forged), whatever the answer, and finetune units answered with a stale update.
  int units_tampered = 0;
  int stale_updates = 0;
  // Units continued from an earlier run (found in the state directory at start or after a
  // pause) and units stopped before their end (pause, shutdown), to be continued.
  int units_resumed = 0;
  int units_interrupted = 0;
  // Set when the coordinator no longer accepts this host (401/403 on a work request, e.g. a
  // revoked token): the loop stops instead of polling forever.
  std::optional<common::Error> fatal;
  // The loop stopped because `finish` was asked through the control socket.
  bool finished_on_request = false;
};

class Runner {
 public:
  // Trusts one coordinator key for good (enrolled or trusted on first use).
  Runner(CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
         common::PublicKey coordinator_key, std::int64_t host_id, RunnerOptions options);
  // Trusts the online key certified by a pinned root, following its rotations.
  Runner(CoordinatorApi& api, const HostState& state, const common::SigningKey& key,
         common::TrustedKeys rooted, std::int64_t host_id, RunnerOptions options);
  // Runs until max_units, max_idle_polls or `stop`. Returns the summary of this run. A
  // protocol adversary goes on after a refused result (403/409): refusals are what it measures.
  RunSummary Run(const std::atomic<bool>& stop);

 private:
  // kTampered: a protocol adversary's result was answered; the loop goes on at once.
  // kStopped: the unit was stopped before its end (pause, shutdown) and stays on disk.
  enum class Step { kDone, kTampered, kNoWork, kRetry, kRefused, kFatal, kStopped };
  Step RunOne(RunSummary& summary, const std::atomic<bool>& stop);
  // A held unit's manifest, read back from disk and verified again (signer, unit, host).
  struct HeldManifest {
    common::SignedEnvelope envelope;
    common::Manifest manifest;
  };
  common::Result<HeldManifest> LoadHeldManifest(std::int64_t unit_id);
  // Takes the unit recorded in `record` from its phase to its end; `held` is its verified
  // manifest (LoadHeldManifest, or the lease just verified).
  Step ContinueUnit(UnitRecord record, const HeldManifest& held, RunSummary& summary,
                    const std::atomic<bool>& stop);
  // Prunes the blob cache to options_.blob_cache_bytes, keeping the held units' blobs.
  void PruneBlobCache();
  // Ends a unit that cannot be completed: logged, its directory removed.
  Step GiveUp(std::int64_t unit_id, const std::string& message);
  // Checks the manifest's signer against the trusted keys (refreshing a rooted trust once).
  common::Status VerifySigner(const common::SignedEnvelope& envelope);
  // The blob's file in the cache, downloaded (resuming a partial download) when missing.
  common::Result<std::filesystem::path> FetchBlob(const common::BlobRef& ref,
                                                  const std::atomic<bool>& stop, int& retries);
  // Logs a unit's failure and publishes it as the control state's last error.
  void ReportError(const std::string& message);
  // Asks for the contribution totals when the last answer is older than the refresh interval.
  void RefreshContribution();
  // Polls the settings file, probes the machine and decides whether to lease now (only with
  // settings or fixed_settings).
  RunDecision DecideNow();
  Clock::time_point WallNow() const;
  common::Result<SystemState> Probe(Clock::time_point now);
  // Today's counters as last saved (a missing file: zero; an unreadable one: zero, logged).
  TransferUsage& Usage();
  // Adds a finished transfer to today's counters and saves them (state dir, atomically).
  void CountTransfer(std::uint64_t downloaded, std::uint64_t uploaded);

  CoordinatorApi& api_;
  const HostState& state_;
  const common::SigningKey& key_;
  common::TrustedKeys trusted_;
  bool rooted_ = false;  // refresh trusted_ from the coordinator's key statement when needed
  std::int64_t host_id_;
  RunnerOptions options_;
  AdversaryMemory adversary_memory_;  // kept across runs; empty for an honest host
  // Execution seconds per step of the last unit of each kind: the next unit's prediction.
  std::map<std::string, double> seconds_per_step_;
  std::optional<std::chrono::steady_clock::time_point> contribution_at_;
  // The run policy's inputs and the state they leave between leases.
  std::unique_ptr<SystemProbe> system_probe_;       // used when options_.probe is empty
  std::optional<std::chrono::seconds> utc_offset_;  // from the last probe
  std::optional<TransferUsage> usage_;              // loaded from the state dir on first use
  int unit_threads_;                                // threads for the next unit
  std::uint64_t unit_memory_mb_ = 0;                // memory cap for the next unit (0: none)
  std::optional<UnitJournal> journal_;              // opened on first use
  bool tampered_ = false;                           // the unit in hand was answered with an attack
  std::string waiting_;                             // the last reason published
  bool probe_failed_ = false;                       // the last probe failed (logged once)
  bool allowed_logged_ = false;                     // "may work" was logged at least once
  bool usage_save_failed_ = false;                  // the last save failed (logged once)
};

}  // namespace ubcp::client
