// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's durable state behind one interface. SQL lives only in the backends
// (src/store/); domain code calls these methods and never touches the database. Every method is
// one transaction: it happens completely or not at all, so a crash or a retry never leaves half
// a change. Thread-safe: calls may come from several server threads.
//
// Units move pending -> leased -> done. A leased unit whose lease deadline has passed is handed
// out again (attempt + 1); only a result that matches the unit's current lease (host, attempt,
// manifest hash) is accepted, and a unit accepts one result.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ubcp/common/result.h"
#include "ubcp/coordinator/ledger.h"

namespace ubcp::coordinator {

using common::Result;
using common::Status;

struct NewHost {
  std::string public_key;  // hex, unique
  std::string name;
  std::string token_hash;  // common::TokenHash of the bearer token, unique
  std::string benchmark_json;
  std::string capabilities_json;
  std::int64_t now = 0;
};
struct HostRecord {
  std::int64_t id = 0;
  std::string public_key;
  std::string name;
  std::string benchmark_json;
  std::string capabilities_json;
  std::int64_t registered_at = 0;
  std::int64_t last_seen_at = 0;
};

enum class Role { kRecipient, kAdmin };
struct AccountRecord {
  std::int64_t id = 0;
  std::string name;
  Role role = Role::kRecipient;
  std::int64_t created_at = 0;
};

struct BlobRecord {
  std::string id;  // content id
  std::uint64_t size = 0;
  std::uint64_t raw_size = 0;
  std::string kind;  // "model" | "data" | "update" | "state"
};

struct CatalogEntry {
  std::string name;
  std::string model_spec;
  std::string blob_id;
  std::int64_t source_job = 0;
  std::string description;
  std::int64_t created_at = 0;
};

enum class ShardKind { kTrain, kTest };
struct ShardRecord {
  ShardKind kind = ShardKind::kTrain;
  int index = 0;
  std::string blob_id;
  std::int64_t samples = 0;
};

struct JobRecord {
  std::int64_t id = 0;
  std::int64_t account_id = 0;
  std::string name;
  std::string spec_json;   // the JobSpec as submitted (serialized)
  std::string model_spec;  // resolved zoo spec string
  std::string state;       // "queued" | "running" | "done" | "failed" | "cancelled"
  int rounds = 0;
  int current_round = 0;  // round whose model is being trained (== rounds: final eval)
  std::int64_t lease_seconds = 600;
  std::string final_model;  // blob id once done
  std::string error;
  std::int64_t price_credits = 0;  // reserved from the recipient's credits when admitted
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

struct RoundRecord {
  std::int64_t job_id = 0;
  int round = 0;
  std::string model_blob;     // global model of this round
  std::string momentum_blob;  // outer-optimizer state after producing this model ("" if none)
  bool aggregated = false;    // the round's updates have produced round + 1
};

enum class UnitState { kPending, kLeased, kDone };
struct UnitRecord {
  std::int64_t id = 0;
  std::int64_t job_id = 0;
  int round = 0;
  std::string kind;     // common::kUnitFinetune | common::kUnitEval
  int shard_index = 0;  // train shard for finetune, test shard for eval
  UnitState state = UnitState::kPending;
  int attempt = 0;
  std::int64_t host_id = 0;
  std::int64_t lease_deadline = 0;
  std::string manifest_hash;
  std::uint64_t seed = 0;
};

// What a manifest is made of, gathered by LeaseUnit in its transaction.
struct LeaseContext {
  UnitRecord unit;  // after the lease: attempt, host_id and lease_deadline are the new ones
  JobRecord job;
  BlobRecord model;  // the unit's round's global model (rounds.model_blob)
  BlobRecord data;   // the unit's shard: train shard for finetune, test shard for eval
};

struct ResultRecord {
  std::int64_t unit_id = 0;
  std::int64_t job_id = 0;
  int round = 0;
  std::string kind;
  std::int64_t host_id = 0;
  int attempt = 0;
  std::string envelope_hash;  // BLAKE2b of the envelope as received: identifies a retry
  std::string envelope_json;
  std::string update_blob;  // "" for eval
  double loss = 0, accuracy = 0, first_loss = 0;
  std::int64_t samples = 0;
  double wall_seconds = 0;
  std::int64_t received_at = 0;
  // The unit's cost (cost_model.h), computed by the coordinator: spent from the job's
  // reservation and credited to the donor as points when the result is accepted.
  std::int64_t credits = 0;
};

// A planned unit (before it exists in the store).
struct UnitPlan {
  std::string kind;
  int shard_index = 0;
  std::uint64_t seed = 0;
};

struct NewJob {
  std::int64_t account_id = 0;
  std::string name;
  std::string spec_json;
  std::string model_spec;
  int rounds = 0;
  std::int64_t lease_seconds = 600;  // how long a host may hold a unit of this job
  std::vector<ShardRecord> shards;   // train and test shards (their blobs already recorded)
  std::string initial_model;         // blob id of round 0's model
  std::vector<UnitPlan> round0_units;
  std::int64_t price_credits = 0;  // reserved from the recipient's credits in CreateJob
  std::int64_t now = 0;
};

// Next round, written atomically when round `from_round` is aggregated.
struct RoundAdvance {
  std::int64_t job_id = 0;
  int from_round = 0;
  std::string next_model;     // blob id
  std::string next_momentum;  // blob id or ""
  std::vector<UnitPlan> next_units;
  std::int64_t now = 0;
};

enum class RecordOutcome { kAccepted, kDuplicate };

// An allocation period (docs/ECONOMY.md): its budget B = forecast - reserve, and the basic
// share every recipient receives.
struct PeriodRecord {
  std::int64_t id = 0;
  std::int64_t starts_at = 0;
  std::int64_t ends_at = 0;
  std::int64_t forecast_credits = 0;
  std::int64_t reserve_credits = 0;
  std::int64_t budget_credits = 0;
  std::int64_t share_credits = 0;
  std::int64_t recipients = 0;         // recipient accounts when it opened
  std::int64_t admitted_credits = 0;   // prices of the jobs admitted during it
  std::int64_t validated_credits = 0;  // once closed: credits of results accepted during it
  bool closed = false;
};

// Closing the open period and opening the next, in one transaction.
struct PeriodRoll {
  std::int64_t close_id = 0;  // the open period (0 when there is none yet)
  // The next period; its id, recipients, admitted, validated and closed fields are ignored.
  PeriodRecord next;
  // Before the new issue, each recipient's available credits above this cap expire.
  std::int64_t carry_cap_credits = 0;
  std::int64_t now = 0;
};

// Ledger movements by kind within [from, to), in credits.
struct LedgerTotals {
  std::int64_t issued = 0, granted = 0, reserved = 0, spent = 0, refunded = 0, expired = 0;
};

// A donor's validated work (results accepted), in credits.
struct HostContribution {
  std::int64_t host_id = 0;
  std::string name;         // the host's own label
  std::string public_name;  // "" unless it opted in to the leaderboard
  std::string team;
  std::int64_t units = 0;
  std::int64_t credits = 0;         // all validated work (= its points)
  std::int64_t period_credits = 0;  // validated since `period_start`
  double recent_credits = 0;        // each credit weighted 2^(-age / half-life)
};

struct RecipientUsage {
  std::int64_t account_id = 0;
  std::int64_t balance_credits = 0;  // available now
  double recent_usage_credits = 0;   // spent, each credit weighted 2^(-age / half-life)
};

struct RoundSummary {
  int round = 0;
  std::string model_blob;
  bool aggregated = false;
  int units_total = 0, units_done = 0;
  int eval_total = 0, eval_done = 0;
  double eval_loss = 0, eval_accuracy = 0;  // sample-weighted over done eval units
  std::int64_t eval_samples = 0;
  double train_loss = 0;  // mean of done finetune units' last loss
};

class Store {
 public:
  virtual ~Store() = default;

  // ---- hosts and accounts ----
  // kConflict if the public key (or token hash) is already registered.
  virtual Result<std::int64_t> CreateHost(const NewHost& host) = 0;
  // kUnauthorized when no host has this token hash.
  virtual Result<HostRecord> FindHostByTokenHash(const std::string& token_hash) = 0;
  virtual Result<HostRecord> GetHost(std::int64_t host_id) = 0;  // kNotFound
  virtual Status TouchHost(std::int64_t host_id, std::int64_t now) = 0;
  virtual Result<std::int64_t> CountHosts() = 0;

  // kConflict if the name exists.
  virtual Result<std::int64_t> CreateAccount(const std::string& name, const std::string& token_hash,
                                             Role role, std::int64_t now) = 0;
  virtual Result<AccountRecord> FindAccountByTokenHash(const std::string& token_hash) = 0;
  virtual Result<AccountRecord> FindAccountByName(const std::string& name) = 0;  // kNotFound

  // ---- blob index (the bytes live in the BlobStore) ----
  virtual Status RecordBlob(const BlobRecord& blob, std::int64_t now) = 0;  // idempotent
  virtual Result<BlobRecord> GetBlob(const std::string& id) = 0;            // kNotFound

  // ---- catalog ----
  virtual Status PublishModel(const CatalogEntry& entry) = 0;  // kConflict if the name exists
  virtual Result<CatalogEntry> GetCatalogModel(const std::string& name) = 0;  // kNotFound
  virtual Result<std::vector<CatalogEntry>> ListCatalog() = 0;

  // ---- jobs ----
  // Creates the job in state "queued" with its price, its shards, round 0 and round 0's units.
  // Nothing is leased and nothing is reserved until AdmitJob.
  virtual Result<std::int64_t> CreateJob(const NewJob& job) = 0;
  virtual Result<JobRecord> GetJob(std::int64_t job_id) = 0;  // kNotFound
  virtual Result<std::vector<JobRecord>> ListJobs(std::int64_t account_id) = 0;
  virtual Result<std::vector<std::int64_t>> ListRunningJobIds() = 0;
  virtual Result<std::vector<JobRecord>> ListQueuedJobs() = 0;  // oldest first
  // queued -> running: reserves the price (recipient:<account> -> job:<id>, "reserve:job:<id>")
  // and adds it to the period's admitted credits, in one transaction. false (nothing changes)
  // if the job is not queued; kInsufficientCredits if the balance does not cover the price.
  virtual Result<bool> AdmitJob(std::int64_t job_id, std::int64_t period_id, std::int64_t now) = 0;
  virtual Result<std::vector<ShardRecord>> ListShards(std::int64_t job_id) = 0;
  virtual Result<RoundRecord> GetRound(std::int64_t job_id, int round) = 0;  // kNotFound
  virtual Result<std::vector<RoundSummary>> SummarizeRounds(std::int64_t job_id) = 0;
  virtual Result<std::int64_t> CountJobHosts(std::int64_t job_id) = 0;  // distinct result hosts

  // ---- work ----
  // Leases the oldest available unit (pending, or leased with lease_deadline < now) of a running
  // job whose kind is in `kinds`: sets host, attempt + 1, lease_deadline = now + the job's
  // lease_seconds, then calls `sign(context)` with the updated unit and everything a manifest
  // needs (read in the same transaction, so `sign` must not call the store), which returns the
  // manifest hash to store; if `sign` fails, nothing changes. nullopt when no unit is available.
  using ManifestSigner = std::function<Result<std::string>(const LeaseContext& context)>;
  virtual Result<std::optional<LeaseContext>> LeaseUnit(std::int64_t host_id,
                                                        const std::vector<std::string>& kinds,
                                                        std::int64_t now,
                                                        const ManifestSigner& sign) = 0;
  virtual Result<UnitRecord> GetUnit(std::int64_t unit_id) = 0;  // kNotFound

  // Stores `result` and marks its unit done, if the unit is leased to result.host_id with the
  // same attempt and manifest hash and its job is running. In the same transaction, the unit's
  // credits are spent from the job's reservation ("spend:unit:<id>") and credited to the
  // donor ("points:unit:<id>"). A result with the same envelope_hash as the stored one is
  // kDuplicate (nothing changes); any other result for a done unit, or one that does not match
  // the current lease, is kConflict; an unknown unit is kNotFound.
  virtual Result<RecordOutcome> RecordResult(const ResultRecord& result) = 0;
  virtual Result<std::vector<ResultRecord>> ListResults(std::int64_t job_id, int round,
                                                        const std::string& kind) = 0;

  // Marks round `from_round` aggregated, inserts round from_round + 1 with its units and moves
  // the job's current_round. Returns false (changing nothing) if the round was already
  // aggregated: a second aggregation of the same round is a no-op.
  virtual Result<bool> AdvanceRound(const RoundAdvance& advance) = 0;
  // Sets state "done" and final_model (and publishes `publish` in the catalog in the same
  // transaction when given), and refunds what the job's reservation has left. Returns false if
  // the job was not running.
  virtual Result<bool> FinishJob(std::int64_t job_id, const std::string& final_model,
                                 const std::optional<CatalogEntry>& publish, std::int64_t now) = 0;
  // Failing (or cancelling) a job refunds what its reservation has left ("refund:job:<id>").
  virtual Status FailJob(std::int64_t job_id, const std::string& error, std::int64_t now) = 0;
  // A running job becomes "cancelled": its units are no longer handed out and results for them
  // are refused. kConflict if the job is done or failed; cancelling twice is a no-op (false).
  virtual Result<bool> CancelJob(std::int64_t job_id, std::int64_t now) = 0;

  // ---- periods ----
  virtual Result<std::optional<PeriodRecord>> CurrentPeriod() = 0;         // the open one
  virtual Result<std::vector<PeriodRecord>> RecentPeriods(int limit) = 0;  // newest first
  // Credits of the results accepted in [from, to).
  virtual Result<std::int64_t> ValidatedCreditsBetween(std::int64_t from, std::int64_t to) = 0;
  // Closes roll.close_id (recording its validated credits), expires what each recipient holds
  // above the cap ("expire:<period>:<account>"), opens the next period and issues its share to
  // every recipient ("issue:<period>:<account>"). kConflict (nothing changes) when close_id is
  // not the open period: another caller rolled first.
  virtual Result<PeriodRecord> RollPeriod(const PeriodRoll& roll) = 0;
  // Issues the open period's share to a recipient that has none for it yet (an account created
  // during the period). false when already issued or when there is no open period.
  virtual Result<bool> IssueShare(std::int64_t account_id, std::int64_t now) = 0;
  virtual Result<std::vector<RecipientUsage>> RecipientUsages(std::int64_t now,
                                                              double half_life_s) = 0;
  virtual Result<LedgerTotals> TotalsBetween(std::int64_t from, std::int64_t to) = 0;
  virtual Result<std::vector<JobRecord>> ListJobsAdmittedIn(std::int64_t period_id) = 0;
  virtual Result<std::int64_t> CountHostsSeenSince(std::int64_t since) = 0;
  virtual Status SetHostProfile(std::int64_t host_id, const std::string& public_name,
                                const std::string& team) = 0;
  // Every host (or only those with a public name), most validated work first.
  virtual Result<std::vector<HostContribution>> HostContributions(std::int64_t now,
                                                                  double half_life_s,
                                                                  std::int64_t period_start,
                                                                  bool only_public) = 0;

  // ---- ledger (ledger.h) ----
  virtual Result<std::int64_t> Balance(const std::string& account) = 0;
  // Credits spent on accepted units of the account's jobs.
  virtual Result<std::int64_t> SpentByAccount(std::int64_t account_id) = 0;
  // Writes one transaction on its own. false (nothing changes) when its key is already in the
  // ledger with the same content; kConflict when the key was used for something else;
  // kInsufficientCredits when an account that must stay non-negative would go below zero.
  virtual Result<bool> PostLedger(const LedgerTxn& txn) = 0;
  // Every violated invariant, one line each; empty when the ledger is sound. Checks: all
  // entries sum to zero, and so does each transaction; no recipient:, job: or donor: account is
  // negative; what was spent from each job equals the credits of its accepted results; a job
  // that is no longer running has nothing left in its reservation; every key is used once.
  virtual Result<std::vector<std::string>> CheckLedger() = 0;
};

// Opens (creating if needed) the SQLite database at `path` in WAL mode and applies pending
// schema migrations. kIo on failure.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::filesystem::path& path);
// Current schema version after migrations (for tests and `ubcp-coordinator` diagnostics).
int SqliteSchemaVersion();

}  // namespace ubcp::coordinator
