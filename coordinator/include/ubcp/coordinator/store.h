// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's durable state behind one interface. SQL lives only in the backends
// (src/store/); domain code calls these methods and never touches the database. Every method is
// one transaction: it happens completely or not at all, so a crash or a retry never leaves half
// a change. Thread-safe: calls may come from several server threads.
//
// Work and units (docs/SECURITY.md, "Replication and quorum"): a work is what must be computed
// (one shard of one round of one job); its units are executions of it, each leased to one host.
// A work needs `quorum` agreeing results; it starts with one unit, and the others are added when
// it is first leased (the quorum is settled then, from the host's reputation) or when results
// disagree. Replicas of a work never go to hosts of the same donor account.
// Units move pending -> leased -> done. A leased unit whose lease deadline has passed is handed
// out again (attempt + 1); only a result that matches the unit's current lease (host, attempt,
// manifest hash) is accepted, and a unit accepts one result. Results start "pending"; judging
// them (ResolveWork) makes them "valid" (paid: spend and points) or "invalid".

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

// The GPUs of a set of hosts, as their registrations reported them (HostBenchmark).
struct GpuCounts {
  std::int64_t cuda_hosts = 0;      // hosts whose libtorch sees CUDA devices
  std::int64_t cuda_devices = 0;    // the devices it sees on them
  std::int64_t unusable_hosts = 0;  // hosts with NVIDIA GPUs (NVML) their libtorch cannot use
  std::int64_t unusable_gpus = 0;   // those GPUs
};

using common::Result;
using common::Status;

struct NewHost {
  std::string public_key;  // hex, unique
  std::string name;
  std::string token_hash;  // common::TokenHash of the bearer token, unique
  std::string benchmark_json;
  std::string capabilities_json;
  std::int64_t now = 0;
  std::int64_t account_id = 0;    // the donor account the host is attached to
  int max_hosts_per_account = 0;  // kForbidden when the account already has this many (0: none)
};
struct HostRecord {
  std::int64_t id = 0;
  std::string public_key;
  std::string name;
  std::string benchmark_json;
  std::string capabilities_json;
  std::int64_t registered_at = 0;
  std::int64_t last_seen_at = 0;
  std::int64_t account_id = 0;
  // Reputation: valid results since its last invalid one, invalid results ever, and when its
  // key was banned (0: not banned).
  int valid_streak = 0;
  int offences = 0;
  std::int64_t banned_at = 0;
};

// Recipients receive credit shares and submit jobs; donors attach hosts (any account may);
// admins see capacity and grant credits.
enum class Role { kRecipient, kAdmin, kDonor };
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

enum class WorkState { kOpen, kValid, kDropped };
struct WorkRecord {
  std::int64_t id = 0;
  std::int64_t job_id = 0;
  int round = 0;
  std::string kind;
  int shard_index = 0;
  std::uint64_t seed = 0;
  int quorum = 1;         // agreeing results needed
  bool adaptive = false;  // the quorum may drop to 1 for a trusted host (settled at first lease)
  bool settled = false;   // the first lease has settled the quorum
  WorkState state = WorkState::kOpen;
  std::int64_t canonical_unit = 0;  // the unit whose result stands for the work once valid
};

enum class UnitState { kPending, kLeased, kDone };
struct UnitRecord {
  std::int64_t id = 0;
  std::int64_t work_id = 0;
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
  UnitRecord unit;
  WorkRecord work;  // after the lease: attempt, host_id and lease_deadline are the new ones
  JobRecord job;
  BlobRecord model;  // the unit's round's global model (rounds.model_blob)
  BlobRecord data;   // the unit's shard: train shard for finetune, test shard for eval
};

enum class ResultStatus { kPending, kValid, kInvalid };
struct ResultRecord {
  std::int64_t unit_id = 0;
  std::int64_t work_id = 0;                      // set by the store from the unit
  ResultStatus status = ResultStatus::kPending;  // set by the store
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
  // reservation and credited to the donor as points when the result is judged valid.
  std::int64_t credits = 0;
};

// A planned unit (before it exists in the store).
struct UnitPlan {
  std::string kind;
  int shard_index = 0;
  std::uint64_t seed = 0;
  int quorum = 1;         // agreeing results the work needs (1..kMaxQuorum)
  bool adaptive = false;  // WorkRecord::adaptive
};
inline constexpr int kMaxQuorum = 4;

// Judging the results of one work (validation.h decides; the store applies it in one
// transaction).
struct WorkJudgement {
  std::int64_t work_id = 0;
  enum class Outcome {
    kValid,    // `valid` agree (the first is canonical if the work is still open); `invalid` lie
    kAnother,  // no agreement yet: add one more unit
    kDropped,  // no agreement after the most units a work may use: nobody is paid
  } outcome = Outcome::kValid;
  std::vector<std::int64_t> valid;    // unit ids whose results are judged valid
  std::vector<std::int64_t> invalid;  // unit ids whose results are judged invalid
  // The number of units the work had when the judgement was made; a judgement made on an
  // older view is refused as kConflict (someone else judged first).
  int units_seen = 0;
  int ban_after = 2;  // offences after which a host's key is banned
  std::int64_t now = 0;
};
struct JudgementOutcome {
  std::int64_t credited = 0;   // results newly paid
  std::int64_t reversed = 0;   // results whose credit was taken back (caught hosts)
  std::int64_t discarded = 0;  // other unfinished results of caught hosts, thrown away
  std::vector<std::int64_t> banned_hosts;
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
  std::int64_t reversed = 0;  // taken back from caught hosts (returned to their jobs)
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
  // Works (not units): done = judged (valid or dropped).
  int units_total = 0, units_done = 0;
  int eval_total = 0, eval_done = 0;
  double eval_loss = 0, eval_accuracy = 0;  // sample-weighted over valid eval works
  std::int64_t eval_samples = 0;
  double train_loss = 0;  // mean last loss of the valid finetune works' canonical results
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
  // Ids of the hosts attached to the account.
  virtual Result<std::vector<std::int64_t>> AccountHosts(std::int64_t account_id) = 0;

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
  // A unit is not offered to a host whose account (or the host itself) already holds or held
  // another unit of the same work; a banned host gets kForbidden. On a work's first lease,
  // `settle(work, host)` (if given) returns its quorum (at most the planned one); the missing units
  // are added then.
  using ManifestSigner = std::function<Result<std::string>(const LeaseContext& context)>;
  using QuorumRule = std::function<int(const WorkRecord& work, const HostRecord& host)>;
  virtual Result<std::optional<LeaseContext>> LeaseUnit(std::int64_t host_id,
                                                        const std::vector<std::string>& kinds,
                                                        std::int64_t now,
                                                        const ManifestSigner& sign,
                                                        const QuorumRule& settle = {}) = 0;
  virtual Result<UnitRecord> GetUnit(std::int64_t unit_id) = 0;  // kNotFound
  // A host gave the unit up: if it is leased (not done) to `host_id` with this `attempt` and
  // `manifest_hash`, and the lease has not expired yet, its lease_deadline becomes now - 1, so
  // that LeaseUnit offers it again at once (attempt + 1) to any other host (never again to this
  // one: the give-up is recorded, CountGiveUps), and true is returned. Otherwise
  // nothing changes and the answer is false (a repeated report, a stale attempt, a unit done or
  // leased again, a lease already expired). One transaction; kNotFound for an unknown unit. A
  // result for the released lease is still accepted by RecordResult until the unit is leased again,
  // as after any expiry.
  // How many distinct hosts gave the unit up (ReleaseLease); kNotFound for an unknown unit.
  virtual Result<int> CountGiveUps(std::int64_t unit_id) = 0;
  virtual Result<bool> ReleaseLease(std::int64_t unit_id, std::int64_t host_id, int attempt,
                                    const std::string& manifest_hash, std::int64_t now) = 0;

  // Stores `result` as pending and marks its unit done, if the unit is leased to
  // result.host_id with the same attempt and manifest hash and its job is running. Nothing is
  // paid until the result is judged valid (ResolveWork). A result with the same envelope_hash
  // as the stored one is kDuplicate (nothing changes); any other result for a done unit, or one
  // that does not match the current lease, is kConflict; an unknown unit is kNotFound.
  virtual Result<RecordOutcome> RecordResult(const ResultRecord& result) = 0;
  // The canonical results of the round's valid works of `kind` ("" for all), by unit id.
  virtual Result<std::vector<ResultRecord>> ListResults(std::int64_t job_id, int round,
                                                        const std::string& kind) = 0;
  virtual Result<WorkRecord> GetWork(std::int64_t work_id) = 0;  // kNotFound
  // Every result of the work (any status), in arrival order, and how many units it has.
  virtual Result<std::pair<std::vector<ResultRecord>, int>> WorkResults(std::int64_t work_id) = 0;
  // Works of running jobs that hold pending results (to judge after a crash), oldest first.
  virtual Result<std::vector<std::int64_t>> WorksWithPendingResults() = 0;
  // Applies a judgement in one transaction. Valid results are paid ("spend:unit:<id>",
  // "points:unit:<id>") and their hosts' streaks grow. Each invalid result's host is caught:
  // its offence count grows, its streak resets, its key is banned at `ban_after` offences, and
  // its other results that are not final yet (works of running jobs in rounds not aggregated,
  // and evaluations) are discarded: marked invalid, their credit reversed
  // ("reverse:unit:<id>"), their works reopened with a new unit. kConflict when the work changed
  // since `units_seen` or a named result is not pending or valid.
  virtual Result<JudgementOutcome> ResolveWork(const WorkJudgement& judgement) = 0;

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
  // The GPUs of the hosts seen since `since`, from their stored benchmarks (benchmark_json).
  virtual Result<GpuCounts> CountGpusSeenSince(std::int64_t since) = 0;
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
  // negative; what was spent from each job, less reversals, equals the credits of its valid
  // results, and so do its donors' points; a job
  // that is no longer running has nothing left in its reservation; every key is used once.
  virtual Result<std::vector<std::string>> CheckLedger() = 0;
};

// Opens (creating if needed) the SQLite database at `path` in WAL mode and applies pending
// schema migrations. kIo on failure.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::filesystem::path& path);
// Current schema version after migrations (for tests and `ubcp-coordinator` diagnostics).
int SqliteSchemaVersion();

}  // namespace ubcp::coordinator
