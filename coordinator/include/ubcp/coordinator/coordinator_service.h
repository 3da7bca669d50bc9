// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's use cases, one method each, independent of HTTP: register a host, hand out
// a signed work unit, accept a signed result, accept a recipient's job, report it. This is where
// decisions are made; the API layer (api.h) only maps requests and errors onto these calls, the
// Store persists, the Planner cuts jobs into units and Aggregate combines updates.
//
// Thread-safe: HTTP threads call in concurrently; the store serialises its transactions and
// round advancement is serialised here.

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ubcp/common/crypto.h"
#include "ubcp/common/datasets.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/byte_range.h"
#include "ubcp/coordinator/economy.h"
#include "ubcp/coordinator/planner.h"
#include "ubcp/coordinator/replication.h"
#include "ubcp/coordinator/result_judge.h"
#include "ubcp/coordinator/store.h"
#include "ubcp/coordinator/upload_staging.h"

namespace ubcp::coordinator {

// Unix time in seconds (Clock, economy.h) is injected so tests can move time (lease expiry,
// periods).
std::int64_t SystemClockSeconds();

struct CoordinatorConfig {
  common::DatasetPaths datasets;
  std::int64_t registration_max_age_s = 600;     // how old a signed registration may be
  std::uint64_t max_update_bytes = 64ull << 20;  // an uploaded update blob (compressed)
  std::uint64_t max_blob_download = 256ull << 20;
  // Which works are computed more than once, trust, bans and host limits (replication.h).
  ReplicationPolicy replication;
  EconomyConfig economy;
  // The offline root's statement certifying the signing key (envelope JSON, key_rotation.h),
  // served at GET /v1/keys; "" when the coordinator runs without a root key.
  std::string key_statement;
};

class Coordinator {
 public:
  Coordinator(Store& store, const BlobStore& blobs, const common::SigningKey& signing_key,
              Clock clock, CoordinatorConfig config);

  const common::PublicKey& signing_key() const { return signing_key_.public_key(); }
  const std::string& key_statement() const { return config_.key_statement; }

  // ---- authentication: bearer tokens are looked up by their hash ----
  common::Result<HostRecord> AuthenticateHost(std::string_view token);
  common::Result<AccountRecord> AuthenticateAccount(std::string_view token);

  // ---- donors ----
  // Attaches a host to the donor `account`: verifies the proof of possession (the registration
  // signed by the key it names) and its age; kForbidden once the account has its most hosts.
  common::Result<common::HostRegistered> RegisterHost(const AccountRecord& account,
                                                      std::string_view envelope_json);
  // A signed manifest for the next available unit, or nullopt when there is no work.
  common::Result<std::optional<common::SignedEnvelope>> RequestWork(
      const HostRecord& host, const common::WorkRequest& request);
  // Stores an update blob uploaded by a host; the bytes must hash to `id`.
  common::Status UploadBlob(const HostRecord& host, const std::string& id, common::ByteSpan bytes);
  common::Result<common::Bytes> ReadBlob(const std::string& id);
  // Resumable upload of an update blob (upload_staging.h): appends one chunk to what this host
  // has staged of `id`; the last one checks the bytes against `id` and stores the blob.
  // kTooLarge over max_update_bytes, kConflict when range.first is not the staged size.
  common::Result<UploadState> UploadBlobChunk(const HostRecord& host, const std::string& id,
                                              const ByteRange& range, common::ByteSpan chunk);
  // What this host has staged of `id`; the full size once the blob is stored.
  common::Result<UploadState> UploadProgress(const HostRecord& host, const std::string& id);
  // Ranged download: the blob's size, then a slice of at most max_blob_download bytes (not
  // hash-checked here: the receiver checks the assembled blob, blob_store.h).
  common::Result<std::uint64_t> BlobSize(const std::string& id);
  common::Result<common::Bytes> ReadBlobRange(const std::string& id, std::uint64_t offset,
                                              std::uint64_t length);
  // Verifies and records a signed result; a retry of the same envelope is "duplicate" and
  // changes nothing. Completing a round's updates aggregates the next model.
  common::Result<common::ResultAck> SubmitResult(const HostRecord& host,
                                                 std::string_view envelope_json);
  // The host gave up a unit it holds (POST /v1/units/{id}/abandon): releases that lease now, if
  // (unit, host, attempt, manifest hash) name the unit's current unexpired lease, so that the
  // unit is offered again at once to another host (Store::ReleaseLease). Returns whether it was
  // released; kNotFound for an unknown unit. Logs the host's reason. A unit given up by
  // kMaxUnitGiveUps hosts fails its job (as BOINC's "too many errors"): every host refusing it
  // says the job cannot run, and its unspent reservation is refunded.
  static constexpr int kMaxUnitGiveUps = 3;
  common::Result<bool> AbandonUnit(const HostRecord& host, const common::UnitAbandon& report);
  common::Status SetProfile(const HostRecord& host, const common::DonorProfile& profile);
  // The host's own validated work: total, this period, recent average (7-day half-life).
  common::Result<common::Contribution> Contribution(const HostRecord& host);
  // Public: donors who opted in, and teams, by validated work.
  common::Result<common::Leaderboard> Leaderboard();

  // ---- recipients ----
  // The price of a job spec (cost_model.h) and whether the account's credits cover it; writes
  // nothing.
  common::Result<common::JobQuote> QuoteJob(const AccountRecord& account,
                                            std::string_view spec_json);
  // Plans the job and reserves its price from the account's credits in the same transaction
  // as the job is created; kInsufficientCredits (nothing stored) when they do not cover it.
  common::Result<common::JobCreated> SubmitJob(const AccountRecord& account,
                                               std::string_view spec_json);
  common::Result<common::JobList> ListJobs(const AccountRecord& account);
  // Stops a queued or running job and refunds what it did not use.
  common::Result<common::JobStatus> CancelJob(const AccountRecord& account, std::int64_t job_id);
  common::Result<common::CreditsStatus> Credits(const AccountRecord& account);

  // ---- admins ----
  // Credits `request.credits` to the named account (issuance -> recipient:<id>), once per key.
  common::Result<common::CreditsStatus> Grant(const AccountRecord& admin,
                                              const common::GrantRequest& request);
  // Donors online, validated work, the budget B and the current period's allocation.
  common::Result<common::CapacityReport> Capacity(const AccountRecord& admin);
  common::Result<common::JobStatus> GetJobStatus(const AccountRecord& account, std::int64_t job_id);
  // The final model's blob bytes and its spec string (only for the job's owner, once done).
  common::Result<std::pair<std::string, common::Bytes>> DownloadModel(const AccountRecord& account,
                                                                      std::int64_t job_id);
  common::Result<std::vector<CatalogEntry>> Catalog();

  // Finishes what a crash may have interrupted: aggregates every running job's round whose
  // updates are all in, and finishes jobs whose work is all done. Safe to call at any time.
  void Reconcile();
  // Rolls allocation periods that have ended and admits queued jobs (economy.h); called by a
  // timer in ubcp-coordinator, after each submission and after each finished job.
  common::Status Tick();
  Economy& economy() { return economy_; }

 private:
  common::Result<std::string> SignManifest(const LeaseContext& context,
                                           common::SignedEnvelope* out);
  common::Status ValidateResult(const common::ResultPayload& payload, const UnitRecord& unit,
                                const JobRecord& job);
  // Aggregates the job's current round if all its updates are in; finishes the job when all
  // units are done. Idempotent.
  common::Status Advance(std::int64_t job_id);
  common::Result<JobRecord> OwnedJob(const AccountRecord& account, std::int64_t job_id);
  // The credits one unit costs (cost_model.h), from what the coordinator signed for it.
  common::Result<std::int64_t> UnitCredits(const UnitRecord& unit, const JobRecord& job);
  common::Result<common::JobQuote> Quote(const AccountRecord& account, const NewJob& planned,
                                         const common::JobSpec& spec);
  // A number in [0, 1) fixed by (seed, purpose) that only the holder of the signing key can
  // compute: which works are replicated stays secret from donors (replication.h).
  double SecretDraw(std::uint64_t seed, std::string_view purpose) const;
  // Round `round`'s units with their quorums.
  std::vector<UnitPlan> PlanRound(const common::JobSpec& spec, int round) const;

  Store& store_;
  const BlobStore& blobs_;
  const common::SigningKey& signing_key_;
  Clock clock_;
  CoordinatorConfig config_;
  Planner planner_;
  Economy economy_;
  ResultJudge judge_;
  UploadStaging uploads_;  // under the blob store's root, limited to max_update_bytes
  std::mutex advance_mu_;  // one round advancement at a time (the store makes it atomic)
};

}  // namespace ubcp::coordinator
