// SPDX-License-Identifier: Apache-2.0
// The Store on one SQLite database in WAL mode. One connection serves every caller: a mutex
// serializes the methods, and each method runs in a single SQLite transaction (BEGIN IMMEDIATE
// for writers, so the write lock is taken up front and a transaction never has to be upgraded
// halfway), committed only when the whole method succeeded.

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <ctime>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "store/sqlite_handle.h"
#include "store/sqlite_migrations.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {
namespace {

using common::Errc;
using common::MakeError;
using sqlite::Statement;
using sqlite::StatementRef;

constexpr int kBusyTimeoutMs = 5000;
constexpr std::size_t kMaxKinds = 16;
constexpr std::size_t kMaxUnitsPerRound = 1'000'000;
constexpr std::size_t kMaxShards = 1'000'000;
constexpr std::int64_t kMaxLeaseSeconds = 30LL * 24 * 3600;

// How each enum is spelled in the database (the schema's CHECK constraints list the same words).
template <class E>
using Spelling = std::pair<E, std::string_view>;
constexpr Spelling<UnitState> kUnitStates[] = {
    {UnitState::kPending, "pending"}, {UnitState::kLeased, "leased"}, {UnitState::kDone, "done"}};
constexpr Spelling<Role> kRoles[] = {
    {Role::kRecipient, "recipient"}, {Role::kAdmin, "admin"}, {Role::kDonor, "donor"}};
constexpr Spelling<ShardKind> kShardKinds[] = {{ShardKind::kTrain, "train"},
                                               {ShardKind::kTest, "test"}};
constexpr Spelling<WorkState> kWorkStates[] = {
    {WorkState::kOpen, "open"}, {WorkState::kValid, "valid"}, {WorkState::kDropped, "dropped"}};
constexpr Spelling<ResultStatus> kResultStatuses[] = {{ResultStatus::kPending, "pending"},
                                                      {ResultStatus::kValid, "valid"},
                                                      {ResultStatus::kInvalid, "invalid"}};

template <class E, std::size_t N>
std::string_view Spell(const Spelling<E> (&spellings)[N], E value) {
  for (const auto& [e, word] : spellings) {
    if (e == value) return word;
  }
  return "?";
}

// A word the store does not know means the database was changed behind its back: kInternal.
template <class E, std::size_t N>
Result<E> Unspell(const Spelling<E> (&spellings)[N], std::string_view word, std::string_view what) {
  for (const auto& [e, w] : spellings) {
    if (w == word) return e;
  }
  return MakeError(Errc::kInternal,
                   "store holds an unknown " + std::string(what) + ": " + std::string(word));
}

Result<UnitState> ParseUnitState(std::string_view text) {
  return Unspell(kUnitStates, text, "unit state");
}
std::string_view RoleName(Role role) { return Spell(kRoles, role); }
Result<Role> ParseRole(std::string_view text) { return Unspell(kRoles, text, "role"); }
std::string_view ShardKindName(ShardKind kind) { return Spell(kShardKinds, kind); }
Result<ShardKind> ParseShardKind(std::string_view text) {
  return Unspell(kShardKinds, text, "shard kind");
}
Result<WorkState> ParseWorkState(std::string_view text) {
  return Unspell(kWorkStates, text, "work state");
}
std::string_view ResultStatusName(ResultStatus status) { return Spell(kResultStatuses, status); }
Result<ResultStatus> ParseResultStatus(std::string_view text) {
  return Unspell(kResultStatuses, text, "result status");
}

bool IsUnitKind(std::string_view kind) {
  return kind == common::kUnitFinetune || kind == common::kUnitEval;
}

// SQLite integers are signed 64-bit; seeds keep all 64 bits by reinterpretation.
std::int64_t SeedToSql(std::uint64_t seed) { return std::bit_cast<std::int64_t>(seed); }
std::uint64_t SeedFromSql(std::int64_t value) { return std::bit_cast<std::uint64_t>(value); }

// SQLite binds a NaN as NULL; read it back as NaN so a diverged loss survives the round trip.
double RealOrNan(const Statement& stmt, int col) {
  return stmt.IsNull(col) ? std::numeric_limits<double>::quiet_NaN() : stmt.Double(col);
}

Status ValidateUnits(const std::vector<UnitPlan>& units) {
  if (units.size() > kMaxUnitsPerRound) {
    return MakeError(Errc::kTooLarge, "too many units in one round");
  }
  for (const UnitPlan& unit : units) {
    if (!IsUnitKind(unit.kind)) {
      return MakeError(Errc::kInvalidArgument, "unknown unit kind: " + unit.kind);
    }
    if (unit.shard_index < 0) return MakeError(Errc::kInvalidArgument, "negative shard index");
    if (unit.quorum < 1 || unit.quorum > kMaxQuorum) {
      return MakeError(Errc::kInvalidArgument, "quorum out of range");
    }
  }
  return {};
}

// The columns ReadHost reads, in its order (and the token hash last).
constexpr std::string_view kHostColumns =
    "SELECT id, public_key, name, benchmark_json, capabilities_json, registered_at, "
    "last_seen_at, account_id, valid_streak, offences, banned_at, token_hash FROM hosts ";

HostRecord ReadHost(const Statement& s) {
  HostRecord h;
  h.id = s.Int64(0);
  h.public_key = s.Text(1);
  h.name = s.Text(2);
  h.benchmark_json = s.Text(3);
  h.capabilities_json = s.Text(4);
  h.registered_at = s.Int64(5);
  h.last_seen_at = s.Int64(6);
  h.account_id = s.Int64(7);
  h.valid_streak = s.Int(8);
  h.offences = s.Int(9);
  h.banned_at = s.Int64(10);
  return h;
}

// The columns ReadWork reads, in its order.
constexpr std::string_view kWorkColumns =
    "SELECT id, job_id, round, kind, shard_index, seed, quorum, adaptive, settled, state, "
    "canonical_unit FROM works ";

Result<WorkRecord> ReadWork(const Statement& s) {
  WorkRecord w;
  w.id = s.Int64(0);
  w.job_id = s.Int64(1);
  w.round = s.Int(2);
  w.kind = s.Text(3);
  w.shard_index = s.Int(4);
  w.seed = SeedFromSql(s.Int64(5));
  w.quorum = s.Int(6);
  w.adaptive = s.Int(7) != 0;
  w.settled = s.Int(8) != 0;
  UBCP_ASSIGN_OR_RETURN(w.state, ParseWorkState(s.Text(9)));
  w.canonical_unit = s.Int64(10);
  return w;
}

// Tokens are found through the index on their BLAKE2b-256 hash (a timing difference there can
// reveal at most a prefix of a hash, which says nothing about the token), and the stored hash
// is then compared with the presented one in constant time.
bool SameTokenHash(const std::string& stored, const std::string& presented) {
  return common::ConstantTimeEqual(common::AsBytes(stored), common::AsBytes(presented));
}

// Rows of (id, hour, credits): calls add(id, credits x 2^(-age / half-life)), the age measured
// from the start of the hour to `now`.
template <class Add>
Status AccumulateDecayed(Statement& stmt, std::int64_t now, double half_life_s, Add add) {
  for (;;) {
    UBCP_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return {};
    const double age = std::max(0.0, static_cast<double>(now - stmt.Int64(1) * 3600));
    add(stmt.Int64(0), static_cast<double>(stmt.Int64(2)) * std::exp2(-age / half_life_s));
  }
}

// The columns ReadJob reads, in its order.
constexpr std::string_view kJobColumns =
    "SELECT id, account_id, name, spec_json, model_spec, state, rounds, current_round, "
    "lease_seconds, final_model, error, created_at, updated_at, price_credits FROM jobs ";

JobRecord ReadJob(const Statement& s) {
  JobRecord j;
  j.id = s.Int64(0);
  j.account_id = s.Int64(1);
  j.name = s.Text(2);
  j.spec_json = s.Text(3);
  j.model_spec = s.Text(4);
  j.state = s.Text(5);
  j.rounds = s.Int(6);
  j.current_round = s.Int(7);
  j.lease_seconds = s.Int64(8);
  j.final_model = s.Text(9);
  j.error = s.Text(10);
  j.created_at = s.Int64(11);
  j.updated_at = s.Int64(12);
  j.price_credits = s.Int64(13);
  return j;
}

Result<UnitRecord> ReadUnit(const Statement& s) {
  UnitRecord u;
  u.id = s.Int64(0);
  u.job_id = s.Int64(1);
  u.round = s.Int(2);
  u.kind = s.Text(3);
  u.shard_index = s.Int(4);
  UBCP_ASSIGN_OR_RETURN(u.state, ParseUnitState(s.Text(5)));
  u.attempt = s.Int(6);
  u.host_id = s.Int64(7);
  u.lease_deadline = s.Int64(8);
  u.manifest_hash = s.Text(9);
  u.seed = SeedFromSql(s.Int64(10));
  u.work_id = s.Int64(11);
  return u;
}

// The columns ReadResult reads, in its order.
constexpr std::string_view kResultColumns =
    "SELECT r.unit_id, r.job_id, r.round, r.kind, r.host_id, r.attempt, r.envelope_hash, "
    "r.envelope_json, r.update_blob, r.loss, r.accuracy, r.first_loss, r.samples, "
    "r.wall_seconds, r.received_at, r.credits, r.work_id, r.status FROM results r ";

Result<ResultRecord> ReadResult(const Statement& s) {
  ResultRecord r;
  r.unit_id = s.Int64(0);
  r.job_id = s.Int64(1);
  r.round = s.Int(2);
  r.kind = s.Text(3);
  r.host_id = s.Int64(4);
  r.attempt = s.Int(5);
  r.envelope_hash = s.Text(6);
  r.envelope_json = s.Text(7);
  r.update_blob = s.Text(8);
  r.loss = RealOrNan(s, 9);
  r.accuracy = RealOrNan(s, 10);
  r.first_loss = RealOrNan(s, 11);
  r.samples = s.Int64(12);
  r.wall_seconds = RealOrNan(s, 13);
  r.received_at = s.Int64(14);
  r.credits = s.Int64(15);
  r.work_id = s.Int64(16);
  UBCP_ASSIGN_OR_RETURN(r.status, ParseResultStatus(s.Text(17)));
  return r;
}

CatalogEntry ReadCatalog(const Statement& s) {
  CatalogEntry c;
  c.name = s.Text(0);
  c.model_spec = s.Text(1);
  c.blob_id = s.Text(2);
  c.source_job = s.Int64(3);
  c.description = s.Text(4);
  c.created_at = s.Int64(5);
  return c;
}

class SqliteStore final : public Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const std::filesystem::path& path);

  Result<std::int64_t> CreateHost(const NewHost& host) override;
  Result<HostRecord> FindHostByTokenHash(const std::string& token_hash) override;
  Result<HostRecord> GetHost(std::int64_t host_id) override;
  Status TouchHost(std::int64_t host_id, std::int64_t now) override;
  Result<std::int64_t> CountHosts() override;
  Result<std::vector<std::int64_t>> AccountHosts(std::int64_t account_id) override;
  Result<std::int64_t> CreateAccount(const std::string& name, const std::string& token_hash,
                                     Role role, std::int64_t now) override;
  Result<AccountRecord> FindAccountByTokenHash(const std::string& token_hash) override;
  Result<AccountRecord> FindAccountByName(const std::string& name) override;
  Status RecordBlob(const BlobRecord& blob, std::int64_t now) override;
  Result<BlobRecord> GetBlob(const std::string& id) override;
  Status PublishModel(const CatalogEntry& entry) override;
  Result<CatalogEntry> GetCatalogModel(const std::string& name) override;
  Result<std::vector<CatalogEntry>> ListCatalog() override;
  Result<std::int64_t> CreateJob(const NewJob& job) override;
  Result<JobRecord> GetJob(std::int64_t job_id) override;
  Result<std::vector<JobRecord>> ListJobs(std::int64_t account_id) override;
  Result<std::vector<std::int64_t>> ListRunningJobIds() override;
  Result<std::vector<JobRecord>> ListQueuedJobs() override;
  Result<bool> AdmitJob(std::int64_t job_id, std::int64_t period_id, std::int64_t now) override;
  Result<std::optional<PeriodRecord>> CurrentPeriod() override;
  Result<std::vector<PeriodRecord>> RecentPeriods(int limit) override;
  Result<std::int64_t> ValidatedCreditsBetween(std::int64_t from, std::int64_t to) override;
  Result<PeriodRecord> RollPeriod(const PeriodRoll& roll) override;
  Result<bool> IssueShare(std::int64_t account_id, std::int64_t now) override;
  Result<std::vector<RecipientUsage>> RecipientUsages(std::int64_t now,
                                                      double half_life_s) override;
  Result<LedgerTotals> TotalsBetween(std::int64_t from, std::int64_t to) override;
  Result<std::vector<JobRecord>> ListJobsAdmittedIn(std::int64_t period_id) override;
  Result<std::int64_t> CountHostsSeenSince(std::int64_t since) override;
  Result<GpuCounts> CountGpusSeenSince(std::int64_t since) override;
  Status SetHostProfile(std::int64_t host_id, const std::string& public_name,
                        const std::string& team) override;
  Result<std::vector<HostContribution>> HostContributions(std::int64_t now, double half_life_s,
                                                          std::int64_t period_start,
                                                          bool only_public) override;
  Result<std::vector<ShardRecord>> ListShards(std::int64_t job_id) override;
  Result<RoundRecord> GetRound(std::int64_t job_id, int round) override;
  Result<std::vector<RoundSummary>> SummarizeRounds(std::int64_t job_id) override;
  Result<std::int64_t> CountJobHosts(std::int64_t job_id) override;
  Result<std::optional<LeaseContext>> LeaseUnit(std::int64_t host_id,
                                                const std::vector<std::string>& kinds,
                                                std::int64_t now, const ManifestSigner& sign,
                                                const QuorumRule& settle) override;
  Result<UnitRecord> GetUnit(std::int64_t unit_id) override;
  Result<bool> ReleaseLease(std::int64_t unit_id, std::int64_t host_id, int attempt,
                            const std::string& manifest_hash, std::int64_t now) override;
  Result<int> CountGiveUps(std::int64_t unit_id) override;
  Result<RecordOutcome> RecordResult(const ResultRecord& result) override;
  Result<std::vector<ResultRecord>> ListResults(std::int64_t job_id, int round,
                                                const std::string& kind) override;
  Result<WorkRecord> GetWork(std::int64_t work_id) override;
  Result<std::pair<std::vector<ResultRecord>, int>> WorkResults(std::int64_t work_id) override;
  Result<std::vector<std::int64_t>> WorksWithPendingResults() override;
  Result<JudgementOutcome> ResolveWork(const WorkJudgement& judgement) override;
  Result<bool> AdvanceRound(const RoundAdvance& advance) override;
  Result<bool> FinishJob(std::int64_t job_id, const std::string& final_model,
                         const std::optional<CatalogEntry>& publish, std::int64_t now) override;
  Status FailJob(std::int64_t job_id, const std::string& error, std::int64_t now) override;
  Result<bool> CancelJob(std::int64_t job_id, std::int64_t now) override;

  Result<std::int64_t> Balance(const std::string& account) override;
  Result<std::int64_t> SpentByAccount(std::int64_t account_id) override;
  Result<bool> PostLedger(const LedgerTxn& txn) override;
  Result<std::vector<std::string>> CheckLedger() override;

 private:
  enum class TxKind { kRead, kWrite };

  explicit SqliteStore(sqlite::Db db) : db_(std::move(db)), statements_(db_.get()) {}

  static Status Migrate(sqlite3* db);

  // Runs `body` under the mutex inside one transaction; commits only if it returned a value,
  // rolls back on an error or an exception (which never escapes).
  template <class F>
  std::invoke_result_t<F&> Transact(TxKind kind, F&& body);
  void RollbackIfActive();

  Result<StatementRef> Sql(std::string_view sql) { return statements_.Get(sql); }
  std::int64_t Changes() { return sqlite3_changes64(db_.get()); }
  std::int64_t LastRowId() { return sqlite3_last_insert_rowid(db_.get()); }

  // Helpers that run inside a caller's transaction.
  Status RequireJob(std::int64_t job_id);
  Result<JobRecord> LoadJob(std::int64_t job_id);
  // Every job a fixed query (kJobColumns + a clause) selects, with at most one parameter.
  Result<std::vector<JobRecord>> SelectJobs(const std::string& sql,
                                            std::optional<std::int64_t> param);
  Result<UnitRecord> LoadUnit(std::int64_t unit_id);
  // `missing` is the error code when the blob is not in the index.
  Result<BlobRecord> LoadBlob(const std::string& id, Errc missing);
  Status InsertCatalog(const CatalogEntry& entry);
  Status InsertUnits(std::int64_t job_id, int round, const std::vector<UnitPlan>& units);
  Status AddUnit(std::int64_t work_id);
  Result<WorkRecord> LoadWork(std::int64_t work_id);
  Result<HostRecord> LoadHost(std::int64_t host_id);
  Result<std::vector<ResultRecord>> SelectResults(const std::string& sql, std::int64_t id);
  // Pays a result judged valid; takes back the pay of a valid result found invalid.
  Status Pay(const ResultRecord& result, std::int64_t now);
  Status Reverse(const ResultRecord& result, std::int64_t now);
  Status SetResultStatus(std::int64_t unit_id, ResultStatus status);
  // A work that lost a result gets units until the live ones (pending, leased, or with a
  // pending or valid result) can reach its quorum again.
  Status Replenish(std::int64_t work_id);
  Status CatchHost(std::int64_t host_id, std::int64_t caught_unit, const WorkJudgement& j,
                   JudgementOutcome& out);
  // Ledger helpers (inside a caller's transaction).
  Result<std::int64_t> LoadBalance(const std::string& account);
  Result<bool> Post(const LedgerTxn& txn);
  // Moves whatever job:<id> still holds back to the job's recipient.
  Status RefundRemainder(const JobRecord& job, std::int64_t now);
  Result<std::optional<PeriodRecord>> LoadOpenPeriod();
  Result<std::int64_t> LoadValidated(std::int64_t from, std::int64_t to);
  Result<bool> IssueShareIn(const PeriodRecord& period, std::int64_t account_id, std::int64_t now);

  std::mutex mu_;
  sqlite::Db db_;  // declared before statements_: statements are finalized first
  sqlite::StatementCache statements_;
};

template <class F>
std::invoke_result_t<F&> SqliteStore::Transact(TxKind kind, F&& body) {
  using R = std::invoke_result_t<F&>;
  try {
    std::lock_guard lock(mu_);
    Status begin =
        sqlite::Exec(db_.get(), kind == TxKind::kWrite ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
    if (!begin) return R(begin.error());
    try {
      R result = body();
      if (!result) {
        RollbackIfActive();
        return result;
      }
      Status commit = sqlite::Exec(db_.get(), "COMMIT");
      if (!commit) {
        RollbackIfActive();
        return R(commit.error());
      }
      return result;
    } catch (...) {
      RollbackIfActive();
      throw;
    }
  } catch (const std::exception& e) {
    return R(MakeError(Errc::kInternal, std::string("store: ") + e.what()));
  } catch (...) {
    return R(MakeError(Errc::kInternal, "store: unknown exception"));
  }
}

void SqliteStore::RollbackIfActive() {
  // SQLite already rolled back by itself after some errors (e.g. disk full); a second ROLLBACK
  // would only fail.
  if (sqlite3_get_autocommit(db_.get()) == 0) (void)sqlite::Exec(db_.get(), "ROLLBACK");
}

Result<std::unique_ptr<Store>> SqliteStore::Open(const std::filesystem::path& path) {
  auto io_error = [&](const common::Error& e) {
    return MakeError(Errc::kIo, "sqlite store " + path.string() + ": " + e.message);
  };
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE, nullptr);
  sqlite::Db db(raw);  // closes the handle on every path, including a failed open
  if (rc != SQLITE_OK) return io_error(sqlite::ErrorFrom(raw, rc, "open"));
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  // Defensive mode: no writes to the schema or pages through SQL, whatever a statement says.
  sqlite3_db_config(db.get(), SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db.get(), SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);

  {
    auto stmt = Statement::Prepare(db.get(), "PRAGMA journal_mode=WAL");
    if (!stmt) return io_error(stmt.error());
    auto row = (*stmt)->Step();
    if (!row) return io_error(row.error());
    if (!*row || (*stmt)->Text(0) != "wal") {
      return MakeError(Errc::kIo, "sqlite store " + path.string() + ": WAL mode unavailable");
    }
  }
  // FULL: with WAL this syncs at every commit, so an acknowledged result survives a power loss.
  // Migrations run with foreign keys off (a migration may rebuild a table, SQLite's documented
  // procedure); each one checks them before it commits.
  if (Status s = sqlite::Exec(db.get(), "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"); !s) {
    return io_error(s.error());
  }
  if (Status s = Migrate(db.get()); !s) return io_error(s.error());
  if (Status s = sqlite::Exec(db.get(), "PRAGMA foreign_keys=ON;"); !s) return io_error(s.error());
  return std::unique_ptr<Store>(new SqliteStore(std::move(db)));
}

Status SqliteStore::Migrate(sqlite3* db) {
  UBCP_RETURN_IF_ERROR(sqlite::Exec(db,
                                    "CREATE TABLE IF NOT EXISTS schema_version ("
                                    "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"));
  for (const sqlite::Migration& migration : sqlite::kMigrations) {
    // Re-read the version inside each write transaction: another process may have migrated.
    UBCP_RETURN_IF_ERROR(sqlite::Exec(db, "BEGIN IMMEDIATE"));
    Status applied = [&]() -> Status {
      std::int64_t version = 0;
      {
        // Finished before the migration runs: a statement still open would lock the tables a
        // migration rebuilds.
        UBCP_ASSIGN_OR_RETURN(auto current, Statement::Prepare(db,
                                                               "SELECT COALESCE(MAX(version), 0) "
                                                               "FROM schema_version"));
        UBCP_ASSIGN_OR_RETURN(bool row, current->Step());
        if (!row) return MakeError(Errc::kInternal, "schema_version query returned no row");
        version = current->Int64(0);
      }
      if (version > SqliteSchemaVersion()) {
        return MakeError(Errc::kIo, "database schema version " + std::to_string(version) +
                                        " is newer than this build's " +
                                        std::to_string(SqliteSchemaVersion()));
      }
      if (version >= migration.version) return {};
      UBCP_RETURN_IF_ERROR(sqlite::Exec(db, migration.sql));
      {
        UBCP_ASSIGN_OR_RETURN(auto check, Statement::Prepare(db, "PRAGMA foreign_key_check"));
        UBCP_ASSIGN_OR_RETURN(bool violation, check->Step());
        if (violation) {
          return MakeError(Errc::kIo, "migration " + std::to_string(migration.version) +
                                          " breaks a foreign key in table " + check->Text(0));
        }
      }
      UBCP_ASSIGN_OR_RETURN(auto insert,
                            Statement::Prepare(db,
                                               "INSERT INTO schema_version "
                                               "(version, applied_at) VALUES (?1, ?2)"));
      UBCP_RETURN_IF_ERROR(
          insert->BindAll(migration.version, static_cast<std::int64_t>(std::time(nullptr))));
      return insert->Run();
    }();
    if (!applied) {
      if (sqlite3_get_autocommit(db) == 0) (void)sqlite::Exec(db, "ROLLBACK");
      return applied;
    }
    UBCP_RETURN_IF_ERROR(sqlite::Exec(db, "COMMIT"));
  }
  return {};
}

// ---- helpers inside a transaction ----

Status SqliteStore::RequireJob(std::int64_t job_id) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT 1 FROM jobs WHERE id = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kNotFound, "no job " + std::to_string(job_id));
  return {};
}

Result<JobRecord> SqliteStore::LoadJob(std::int64_t job_id) {
  static const std::string sql = std::string(kJobColumns) + "WHERE id = ?1";
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kNotFound, "no job " + std::to_string(job_id));
  return ReadJob(*stmt);
}

Result<BlobRecord> SqliteStore::LoadBlob(const std::string& id, Errc missing) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT id, size, raw_size, kind FROM blobs WHERE id = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(missing, "blob " + id + " is not in the index");
  BlobRecord b;
  b.id = stmt->Text(0);
  b.size = static_cast<std::uint64_t>(stmt->Int64(1));
  b.raw_size = static_cast<std::uint64_t>(stmt->Int64(2));
  b.kind = stmt->Text(3);
  return b;
}

Result<UnitRecord> SqliteStore::LoadUnit(std::int64_t unit_id) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT id, job_id, round, kind, shard_index, state, "
                                       "attempt, host_id, lease_deadline, manifest_hash, seed, "
                                       "work_id FROM units WHERE id = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(unit_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kNotFound, "no unit " + std::to_string(unit_id));
  return ReadUnit(*stmt);
}

Status SqliteStore::InsertCatalog(const CatalogEntry& entry) {
  if (entry.name.empty()) return MakeError(Errc::kInvalidArgument, "empty catalog name");
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO catalog (name, model_spec, blob_id, "
                                       "source_job, description, created_at) "
                                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(entry.name, entry.model_spec, entry.blob_id, entry.source_job,
                                     entry.description, entry.created_at));
  return stmt->Run();
}

// Each planned unit becomes a work with its first unit; further units come when the work is
// first leased (its quorum settled) or when its results disagree (AddUnit).
Status SqliteStore::InsertUnits(std::int64_t job_id, int round,
                                const std::vector<UnitPlan>& units) {
  for (const UnitPlan& unit : units) {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO works (job_id, round, kind, shard_index, "
                                         "seed, quorum, adaptive) "
                                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, round, unit.kind, unit.shard_index,
                                       SeedToSql(unit.seed), unit.quorum, unit.adaptive ? 1 : 0));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    UBCP_RETURN_IF_ERROR(AddUnit(LastRowId()));
  }
  return {};
}

Status SqliteStore::AddUnit(std::int64_t work_id) {
  UBCP_ASSIGN_OR_RETURN(auto stmt,
                        Sql("INSERT INTO units (job_id, round, kind, shard_index, "
                            "state, seed, work_id) SELECT job_id, round, kind, "
                            "shard_index, 'pending', seed, id FROM works WHERE id = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(work_id));
  UBCP_RETURN_IF_ERROR(stmt->Run());
  if (Changes() != 1) return MakeError(Errc::kInternal, "no work " + std::to_string(work_id));
  return {};
}

Result<WorkRecord> SqliteStore::LoadWork(std::int64_t work_id) {
  static const std::string sql = std::string(kWorkColumns) + "WHERE id = ?1";
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(work_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kNotFound, "no work " + std::to_string(work_id));
  return ReadWork(*stmt);
}

Result<HostRecord> SqliteStore::LoadHost(std::int64_t host_id) {
  static const std::string sql = std::string(kHostColumns) + "WHERE id = ?1";
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(host_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kNotFound, "no host " + std::to_string(host_id));
  return ReadHost(*stmt);
}

// ---- hosts and accounts ----

Result<std::int64_t> SqliteStore::CreateHost(const NewHost& host) {
  if (host.public_key.empty() || host.token_hash.empty()) {
    return MakeError(Errc::kInvalidArgument, "host needs a public key and a token hash");
  }
  return Transact(TxKind::kWrite, [&]() -> Result<std::int64_t> {
    if (host.max_hosts_per_account > 0) {
      // Banned hosts count too: a caught donor cannot make room by cheating with every key.
      UBCP_ASSIGN_OR_RETURN(auto count, Sql("SELECT COUNT(*) FROM hosts WHERE account_id = ?1"));
      UBCP_RETURN_IF_ERROR(count->BindAll(host.account_id));
      UBCP_ASSIGN_OR_RETURN(bool row, count->Step());
      if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
      if (count->Int64(0) >= host.max_hosts_per_account) {
        return MakeError(Errc::kForbidden, "the account already has " +
                                               std::to_string(count->Int64(0)) +
                                               " hosts, the most one account may attach");
      }
    }
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO hosts (public_key, name, token_hash, "
                                         "benchmark_json, capabilities_json, registered_at, "
                                         "last_seen_at, account_id) "
                                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(host.public_key, host.name, host.token_hash,
                                       host.benchmark_json, host.capabilities_json, host.now,
                                       host.account_id));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    return LastRowId();
  });
}

// Lookup by token hash through a unique index. The token is 256 random bits and only its
// BLAKE2b hash is stored, so neither the stored value nor any timing of the index lookup tells
// an attacker anything that helps forge a token; no constant-time comparison is needed here.
Result<HostRecord> SqliteStore::FindHostByTokenHash(const std::string& token_hash) {
  return Transact(TxKind::kRead, [&]() -> Result<HostRecord> {
    static const std::string sql = std::string(kHostColumns) + "WHERE token_hash = ?1";
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(token_hash));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row || token_hash.empty() || !SameTokenHash(stmt->Text(11), token_hash)) {
      return MakeError(Errc::kUnauthorized, "unknown host token");
    }
    return ReadHost(*stmt);
  });
}

Result<HostRecord> SqliteStore::GetHost(std::int64_t host_id) {
  return Transact(TxKind::kRead, [&]() { return LoadHost(host_id); });
}

Result<std::vector<std::int64_t>> SqliteStore::AccountHosts(std::int64_t account_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<std::int64_t>> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT id FROM hosts WHERE account_id = ?1 ORDER BY id"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(account_id));
    std::vector<std::int64_t> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) return out;
      out.push_back(stmt->Int64(0));
    }
  });
}

Status SqliteStore::TouchHost(std::int64_t host_id, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Status {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE hosts SET last_seen_at = ?2 WHERE id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(host_id, now));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    if (Changes() == 0) return MakeError(Errc::kNotFound, "no host " + std::to_string(host_id));
    return {};
  });
}

Result<std::int64_t> SqliteStore::CountHosts() {
  return Transact(TxKind::kRead, [&]() -> Result<std::int64_t> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COUNT(*) FROM hosts"));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
    return stmt->Int64(0);
  });
}

Result<std::int64_t> SqliteStore::CreateAccount(const std::string& name,
                                                const std::string& token_hash, Role role,
                                                std::int64_t now) {
  if (name.empty() || token_hash.empty()) {
    return MakeError(Errc::kInvalidArgument, "account needs a name and a token hash");
  }
  return Transact(TxKind::kWrite, [&]() -> Result<std::int64_t> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO accounts (name, token_hash, role, "
                                         "created_at) VALUES (?1, ?2, ?3, ?4)"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(name, token_hash, RoleName(role), now));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    return LastRowId();
  });
}

// Same reasoning as FindHostByTokenHash: the lookup key is the hash of a 256-bit random token.
Result<AccountRecord> SqliteStore::FindAccountByTokenHash(const std::string& token_hash) {
  return Transact(TxKind::kRead, [&]() -> Result<AccountRecord> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT id, name, role, created_at, token_hash "
                                         "FROM accounts WHERE token_hash = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(token_hash));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row || token_hash.empty() || !SameTokenHash(stmt->Text(4), token_hash)) {
      return MakeError(Errc::kUnauthorized, "unknown account token");
    }
    AccountRecord a;
    a.id = stmt->Int64(0);
    a.name = stmt->Text(1);
    UBCP_ASSIGN_OR_RETURN(a.role, ParseRole(stmt->Text(2)));
    a.created_at = stmt->Int64(3);
    return a;
  });
}

Result<AccountRecord> SqliteStore::FindAccountByName(const std::string& name) {
  return Transact(TxKind::kRead, [&]() -> Result<AccountRecord> {
    UBCP_ASSIGN_OR_RETURN(auto stmt,
                          Sql("SELECT id, name, role, created_at FROM accounts WHERE name = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(name));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kNotFound, "no account '" + name + "'");
    AccountRecord a;
    a.id = stmt->Int64(0);
    a.name = stmt->Text(1);
    UBCP_ASSIGN_OR_RETURN(a.role, ParseRole(stmt->Text(2)));
    a.created_at = stmt->Int64(3);
    return a;
  });
}

// ---- blobs ----

// Idempotent: recording a known id again changes nothing. A content id names fixed bytes, so a
// second record with other sizes means a caller bug and is refused with kConflict.
Status SqliteStore::RecordBlob(const BlobRecord& blob, std::int64_t now) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (blob.id.empty()) return MakeError(Errc::kInvalidArgument, "empty blob id");
  if (blob.size > kMax || blob.raw_size > kMax) {
    return MakeError(Errc::kTooLarge, "blob size out of range");
  }
  const auto size = static_cast<std::int64_t>(blob.size);
  const auto raw_size = static_cast<std::int64_t>(blob.raw_size);
  return Transact(TxKind::kWrite, [&]() -> Status {
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO blobs (id, size, raw_size, kind, "
                                           "created_at) VALUES (?1, ?2, ?3, ?4, ?5) "
                                           "ON CONFLICT (id) DO NOTHING"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(blob.id, size, raw_size, blob.kind, now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      if (Changes() == 1) return {};
    }
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT size, raw_size FROM blobs WHERE id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(blob.id));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "blob vanished inside a transaction");
    if (stmt->Int64(0) != size || stmt->Int64(1) != raw_size) {
      return MakeError(Errc::kConflict, "blob " + blob.id + " recorded with other sizes");
    }
    return {};
  });
}

Result<BlobRecord> SqliteStore::GetBlob(const std::string& id) {
  return Transact(TxKind::kRead,
                  [&]() -> Result<BlobRecord> { return LoadBlob(id, Errc::kNotFound); });
}

// ---- catalog ----

Status SqliteStore::PublishModel(const CatalogEntry& entry) {
  return Transact(TxKind::kWrite, [&]() -> Status { return InsertCatalog(entry); });
}

Result<CatalogEntry> SqliteStore::GetCatalogModel(const std::string& name) {
  return Transact(TxKind::kRead, [&]() -> Result<CatalogEntry> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT name, model_spec, blob_id, source_job, "
                                         "description, created_at FROM catalog WHERE name = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(name));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kNotFound, "no catalog model " + name);
    return ReadCatalog(*stmt);
  });
}

Result<std::vector<CatalogEntry>> SqliteStore::ListCatalog() {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<CatalogEntry>> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT name, model_spec, blob_id, source_job, "
                                         "description, created_at FROM catalog ORDER BY name"));
    std::vector<CatalogEntry> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      out.push_back(ReadCatalog(*stmt));
    }
    return out;
  });
}

// ---- jobs ----

Result<std::int64_t> SqliteStore::CreateJob(const NewJob& job) {
  if (job.rounds < 0) return MakeError(Errc::kInvalidArgument, "negative round count");
  if (job.lease_seconds <= 0 || job.lease_seconds > kMaxLeaseSeconds) {
    return MakeError(Errc::kInvalidArgument, "lease_seconds out of range");
  }
  if (job.shards.size() > kMaxShards) return MakeError(Errc::kTooLarge, "too many shards");
  for (const ShardRecord& shard : job.shards) {
    if (shard.index < 0 || shard.samples < 0) {
      return MakeError(Errc::kInvalidArgument, "negative shard index or sample count");
    }
  }
  UBCP_RETURN_IF_ERROR(ValidateUnits(job.round0_units));
  if (job.price_credits < 0) return MakeError(Errc::kInvalidArgument, "negative price");
  return Transact(TxKind::kWrite, [&]() -> Result<std::int64_t> {
    std::int64_t job_id = 0;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("INSERT INTO jobs (account_id, name, spec_json, model_spec, "
                                "state, rounds, current_round, lease_seconds, created_at, "
                                "updated_at, price_credits) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, "
                                "0, ?6, ?7, ?7, ?8)"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job.account_id, job.name, job.spec_json, job.model_spec,
                                         job.rounds, job.lease_seconds, job.now,
                                         job.price_credits));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      job_id = LastRowId();
    }
    for (const ShardRecord& shard : job.shards) {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO job_shards (job_id, kind, shard_index, "
                                           "blob_id, samples) VALUES (?1, ?2, ?3, ?4, ?5)"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, ShardKindName(shard.kind), shard.index,
                                         shard.blob_id, shard.samples));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO rounds (job_id, round, model_blob, "
                                           "created_at) VALUES (?1, 0, ?2, ?3)"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, job.initial_model, job.now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    UBCP_RETURN_IF_ERROR(InsertUnits(job_id, 0, job.round0_units));
    return job_id;
  });
}

Result<JobRecord> SqliteStore::GetJob(std::int64_t job_id) {
  return Transact(TxKind::kRead, [&]() -> Result<JobRecord> { return LoadJob(job_id); });
}

Result<std::vector<JobRecord>> SqliteStore::SelectJobs(const std::string& sql,
                                                       std::optional<std::int64_t> param) {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<JobRecord>> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
    if (param) UBCP_RETURN_IF_ERROR(stmt->BindAll(*param));
    std::vector<JobRecord> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      out.push_back(ReadJob(*stmt));
    }
    return out;
  });
}

Result<std::vector<JobRecord>> SqliteStore::ListJobs(std::int64_t account_id) {
  static const std::string sql = std::string(kJobColumns) + "WHERE account_id = ?1 ORDER BY id";
  return SelectJobs(sql, account_id);
}

Result<std::vector<std::int64_t>> SqliteStore::ListRunningJobIds() {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<std::int64_t>> {
    UBCP_ASSIGN_OR_RETURN(auto stmt,
                          Sql("SELECT id FROM jobs WHERE state = 'running' ORDER BY id"));
    std::vector<std::int64_t> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      out.push_back(stmt->Int64(0));
    }
    return out;
  });
}

// Train shards first, then test shards, each by index. kNotFound for an unknown job.
Result<std::vector<ShardRecord>> SqliteStore::ListShards(std::int64_t job_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<ShardRecord>> {
    UBCP_RETURN_IF_ERROR(RequireJob(job_id));
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT kind, shard_index, blob_id, samples "
                                         "FROM job_shards WHERE job_id = ?1 "
                                         "ORDER BY kind = 'test', shard_index"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id));
    std::vector<ShardRecord> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      ShardRecord shard;
      UBCP_ASSIGN_OR_RETURN(shard.kind, ParseShardKind(stmt->Text(0)));
      shard.index = stmt->Int(1);
      shard.blob_id = stmt->Text(2);
      shard.samples = stmt->Int64(3);
      out.push_back(std::move(shard));
    }
    return out;
  });
}

Result<RoundRecord> SqliteStore::GetRound(std::int64_t job_id, int round) {
  return Transact(TxKind::kRead, [&]() -> Result<RoundRecord> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT model_blob, momentum_blob, aggregated "
                                         "FROM rounds WHERE job_id = ?1 AND round = ?2"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, round));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) {
      return MakeError(Errc::kNotFound,
                       "no round " + std::to_string(round) + " of job " + std::to_string(job_id));
    }
    RoundRecord r;
    r.job_id = job_id;
    r.round = round;
    r.model_blob = stmt->Text(0);
    r.momentum_blob = stmt->Text(1);
    r.aggregated = stmt->Int(2) != 0;
    return r;
  });
}

// A NaN loss or accuracy (stored as NULL) in any contributing result makes the figure NaN rather
// than silently dropping the diverged unit from the mean. kNotFound for an unknown job.
Result<std::vector<RoundSummary>> SqliteStore::SummarizeRounds(std::int64_t job_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<RoundSummary>> {
    UBCP_RETURN_IF_ERROR(RequireJob(job_id));
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT r.round, r.model_blob, r.aggregated,
       COALESCE(u.total, 0), COALESCE(u.done, 0), COALESCE(u.eval_total, 0),
       COALESCE(u.eval_done, 0),
       COALESCE(e.samples, 0), e.loss_w, e.acc_w, COALESCE(e.nan_count, 0),
       t.results, t.mean_loss, COALESCE(t.nan_count, 0)
FROM rounds r
LEFT JOIN (SELECT round, COUNT(*) AS total, SUM(state != 'open') AS done,
                  SUM(kind = ?2) AS eval_total, SUM(kind = ?2 AND state != 'open') AS eval_done
           FROM works WHERE job_id = ?1 GROUP BY round) u ON u.round = r.round
LEFT JOIN (SELECT x.round, SUM(x.samples) AS samples, SUM(x.loss * x.samples) AS loss_w,
                  SUM(x.accuracy * x.samples) AS acc_w,
                  SUM(x.samples > 0 AND (x.loss IS NULL OR x.accuracy IS NULL)) AS nan_count
           FROM results x JOIN works w ON w.canonical_unit = x.unit_id AND w.state = 'valid'
           WHERE x.job_id = ?1 AND x.kind = ?2 GROUP BY x.round) e ON e.round = r.round
LEFT JOIN (SELECT x.round, COUNT(*) AS results, AVG(x.loss) AS mean_loss,
                  SUM(x.loss IS NULL) AS nan_count
           FROM results x JOIN works w ON w.canonical_unit = x.unit_id AND w.state = 'valid'
           WHERE x.job_id = ?1 AND x.kind = ?3 GROUP BY x.round) t ON t.round = r.round
WHERE r.job_id = ?1
ORDER BY r.round)sql"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, common::kUnitEval, common::kUnitFinetune));
    constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
    std::vector<RoundSummary> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      RoundSummary s;
      s.round = stmt->Int(0);
      s.model_blob = stmt->Text(1);
      s.aggregated = stmt->Int(2) != 0;
      s.units_total = stmt->Int(3);
      s.units_done = stmt->Int(4);
      s.eval_total = stmt->Int(5);
      s.eval_done = stmt->Int(6);
      s.eval_samples = stmt->Int64(7);
      if (s.eval_samples > 0) {
        bool nan = stmt->Int64(10) > 0;
        s.eval_loss = nan ? kNan : stmt->Double(8) / static_cast<double>(s.eval_samples);
        s.eval_accuracy = nan ? kNan : stmt->Double(9) / static_cast<double>(s.eval_samples);
      }
      if (!stmt->IsNull(11)) s.train_loss = stmt->Int64(13) > 0 ? kNan : stmt->Double(12);
      out.push_back(std::move(s));
    }
    return out;
  });
}

Result<std::int64_t> SqliteStore::CountJobHosts(std::int64_t job_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::int64_t> {
    UBCP_RETURN_IF_ERROR(RequireJob(job_id));
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COUNT(DISTINCT host_id) FROM results "
                                         "WHERE job_id = ?1 AND status = 'valid'"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
    return stmt->Int64(0);
  });
}

// ---- work ----

// `sign` runs inside the transaction with the store's mutex held, so it must not call the store.
// A unit whose deadline equals `now` is still leased: expiry is strictly lease_deadline < now.
// A round model or shard missing from the blob index is an invariant violation (kInternal).
Result<std::optional<LeaseContext>> SqliteStore::LeaseUnit(std::int64_t host_id,
                                                           const std::vector<std::string>& kinds,
                                                           std::int64_t now,
                                                           const ManifestSigner& sign,
                                                           const QuorumRule& settle) {
  if (!sign) return MakeError(Errc::kInvalidArgument, "LeaseUnit needs a signer");
  if (kinds.size() > kMaxKinds) return MakeError(Errc::kTooLarge, "too many unit kinds");
  return Transact(TxKind::kWrite, [&]() -> Result<std::optional<LeaseContext>> {
    const std::set<std::string> wanted(kinds.begin(), kinds.end());
    UBCP_ASSIGN_OR_RETURN(HostRecord host, LoadHost(host_id));
    if (host.banned_at != 0) {
      return MakeError(Errc::kForbidden, "host " + std::to_string(host_id) + " is banned");
    }
    const std::int64_t account_id = host.account_id;
    // One indexed query per kind keeps the SQL fixed (no IN list assembled at run time); the
    // oldest candidate over all kinds wins.
    std::optional<std::tuple<std::int64_t, std::int64_t, std::int64_t>> best;  // job, round, id
    for (const std::string& kind : wanted) {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT u.job_id, u.round, u.id
FROM units u JOIN jobs j ON j.id = u.job_id JOIN works w ON w.id = u.work_id
WHERE u.kind = ?1 AND j.state = 'running' AND w.state = 'open'
  AND (u.state = 'pending' OR (u.state = 'leased' AND u.lease_deadline < ?2))
  AND NOT EXISTS (SELECT 1 FROM units s JOIN hosts h ON h.id = s.host_id
                  WHERE s.work_id = u.work_id AND s.id != u.id
                    AND (h.id = ?3 OR (?4 != 0 AND h.account_id = ?4)))
  AND NOT EXISTS (SELECT 1 FROM unit_giveups g WHERE g.unit_id = u.id AND g.host_id = ?3)
ORDER BY u.job_id, u.round, u.id
LIMIT 1)sql"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(kind, now, host_id, account_id));
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) continue;
      auto candidate = std::make_tuple(stmt->Int64(0), stmt->Int64(1), stmt->Int64(2));
      if (!best || candidate < *best) best = candidate;
    }
    if (!best) return std::optional<LeaseContext>();
    const std::int64_t unit_id = std::get<2>(*best);

    LeaseContext context;
    UBCP_ASSIGN_OR_RETURN(context.job, LoadJob(std::get<0>(*best)));
    std::int64_t deadline = 0;
    if (__builtin_add_overflow(now, context.job.lease_seconds, &deadline)) {
      return MakeError(Errc::kInvalidArgument, "lease deadline overflows");
    }
    {
      // The previous manifest (if any) no longer describes the lease, so its hash is cleared
      // before the signer sees the unit.
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE units SET state = 'leased', host_id = ?2, "
                                           "attempt = attempt + 1, lease_deadline = ?3, "
                                           "manifest_hash = '' WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(unit_id, host_id, deadline));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    UBCP_ASSIGN_OR_RETURN(context.unit, LoadUnit(unit_id));
    UBCP_ASSIGN_OR_RETURN(context.work, LoadWork(context.unit.work_id));
    if (!context.work.settled) {
      // The first lease settles how many agreeing results the work needs, from this host's
      // record; the other units exist from now on, so replicas run in parallel.
      int quorum = context.work.quorum;
      if (settle) quorum = std::clamp(settle(context.work, host), 1, context.work.quorum);
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("UPDATE works SET quorum = ?2, settled = 1 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(context.work.id, quorum));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      for (int i = 1; i < quorum; ++i) UBCP_RETURN_IF_ERROR(AddUnit(context.work.id));
      context.work.quorum = quorum;
      context.work.settled = true;
    }
    std::string model_blob;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT model_blob FROM rounds "
                                           "WHERE job_id = ?1 AND round = ?2"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(context.unit.job_id, context.unit.round));
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) return MakeError(Errc::kInternal, "unit without its round");
      model_blob = stmt->Text(0);
    }
    std::string data_blob;
    {
      const ShardKind shard_kind =
          context.unit.kind == common::kUnitEval ? ShardKind::kTest : ShardKind::kTrain;
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT blob_id FROM job_shards WHERE job_id = ?1 "
                                           "AND kind = ?2 AND shard_index = ?3"));
      UBCP_RETURN_IF_ERROR(
          stmt->BindAll(context.unit.job_id, ShardKindName(shard_kind), context.unit.shard_index));
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) {
        return MakeError(Errc::kInternal,
                         "unit " + std::to_string(unit_id) + " names a shard the job lacks");
      }
      data_blob = stmt->Text(0);
    }
    UBCP_ASSIGN_OR_RETURN(context.model, LoadBlob(model_blob, Errc::kInternal));
    UBCP_ASSIGN_OR_RETURN(context.data, LoadBlob(data_blob, Errc::kInternal));

    UBCP_ASSIGN_OR_RETURN(std::string manifest_hash, sign(context));
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE units SET manifest_hash = ?2 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(unit_id, manifest_hash));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    context.unit.manifest_hash = std::move(manifest_hash);
    return std::optional<LeaseContext>(std::move(context));
  });
}

Result<UnitRecord> SqliteStore::GetUnit(std::int64_t unit_id) {
  return Transact(TxKind::kRead, [&]() -> Result<UnitRecord> { return LoadUnit(unit_id); });
}

// The lease is matched on everything that names it, in the UPDATE's WHERE clause. Expiry is
// strictly lease_deadline < now (LeaseUnit), hence now - 1. A lease already expired (released
// before, or past its deadline) is left as it is and answers false: nothing changed, and
// whoever asks next can lease it anyway.
Result<bool> SqliteStore::ReleaseLease(std::int64_t unit_id, std::int64_t host_id, int attempt,
                                       const std::string& manifest_hash, std::int64_t now) {
  if (now <= std::numeric_limits<std::int64_t>::min()) {
    return MakeError(Errc::kInvalidArgument, "release time out of range");
  }
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    UBCP_ASSIGN_OR_RETURN(UnitRecord unit, LoadUnit(unit_id));  // kNotFound
    if (manifest_hash.empty()) return false;  // only LeaseUnit's own transaction sees one empty
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE units SET lease_deadline = ?5 "
                                         "WHERE id = ?1 AND state = 'leased' AND host_id = ?2 "
                                         "AND attempt = ?3 AND manifest_hash = ?4 "
                                         "AND lease_deadline > ?5"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(unit.id, host_id, attempt, manifest_hash, now - 1));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    if (Changes() != 1) return false;
    UBCP_ASSIGN_OR_RETURN(auto record, Sql("INSERT OR IGNORE INTO unit_giveups (unit_id, host_id, "
                                           "at) VALUES (?1, ?2, ?3)"));
    UBCP_RETURN_IF_ERROR(record->BindAll(unit.id, host_id, now));
    UBCP_RETURN_IF_ERROR(record->Run());
    return true;
  });
}

Result<int> SqliteStore::CountGiveUps(std::int64_t unit_id) {
  return Transact(TxKind::kRead, [&]() -> Result<int> {
    UBCP_RETURN_IF_ERROR(LoadUnit(unit_id));  // kNotFound
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COUNT(*) FROM unit_giveups WHERE unit_id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(unit_id));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    return row ? static_cast<int>(stmt->Int64(0)) : 0;
  });
}

// ResultRecord carries no manifest hash, so the lease is matched on (unit, host, attempt). That
// pair names exactly one issued manifest: every committed lease increments the attempt, and the
// manifest hash is stored in the same transaction. The caller has verified that the envelope
// answers the coordinator-signed manifest for that unit, host and attempt.
//
// A result that arrives after its lease expired is accepted as long as the unit was not
// re-issued (still leased to the same host and attempt): the work is valid and nobody else holds
// the unit. Once re-issued, the attempt differs and the late result is a kConflict.
Result<RecordOutcome> SqliteStore::RecordResult(const ResultRecord& result) {
  if (result.samples < 0) return MakeError(Errc::kInvalidArgument, "negative sample count");
  return Transact(TxKind::kWrite, [&]() -> Result<RecordOutcome> {
    UBCP_ASSIGN_OR_RETURN(UnitRecord unit, LoadUnit(result.unit_id));
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT envelope_hash FROM results WHERE unit_id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(result.unit_id));
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (row) {
        if (stmt->Text(0) == result.envelope_hash) return RecordOutcome::kDuplicate;
        return MakeError(Errc::kConflict,
                         "unit " + std::to_string(unit.id) + " already has another result");
      }
    }
    if (unit.state != UnitState::kLeased || unit.host_id != result.host_id ||
        unit.attempt != result.attempt) {
      return MakeError(Errc::kConflict, "result does not match the current lease of unit " +
                                            std::to_string(unit.id));
    }
    if (result.credits < 0) return MakeError(Errc::kInvalidArgument, "negative unit credits");
    UBCP_ASSIGN_OR_RETURN(JobRecord job, LoadJob(unit.job_id));
    if (job.state != "running") {
      return MakeError(Errc::kConflict, "job " + std::to_string(job.id) + " is " + job.state);
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("INSERT INTO results (unit_id, job_id, round, kind, host_id, "
                                "attempt, envelope_hash, envelope_json, update_blob, loss, "
                                "accuracy, first_loss, samples, wall_seconds, received_at, "
                                "credits, work_id, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                                "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, 'pending')"));
      // job, round, kind and work come from the unit, never from the submitted record.
      UBCP_RETURN_IF_ERROR(
          stmt->BindAll(unit.id, unit.job_id, unit.round, unit.kind, result.host_id, result.attempt,
                        result.envelope_hash, result.envelope_json, result.update_blob, result.loss,
                        result.accuracy, result.first_loss, result.samples, result.wall_seconds,
                        result.received_at, result.credits, unit.work_id));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE units SET state = 'done' WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(unit.id));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    return RecordOutcome::kAccepted;
  });
}

Result<std::vector<ResultRecord>> SqliteStore::SelectResults(const std::string& sql,
                                                             std::int64_t id) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(id));
  std::vector<ResultRecord> out;
  for (;;) {
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return out;
    UBCP_ASSIGN_OR_RETURN(ResultRecord r, ReadResult(*stmt));
    out.push_back(std::move(r));
  }
}

// An empty `kind` lists the results of every kind. Ordered by unit id.
Result<std::vector<ResultRecord>> SqliteStore::ListResults(std::int64_t job_id, int round,
                                                           const std::string& kind) {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<ResultRecord>> {
    static const std::string sql =
        std::string(kResultColumns) +
        "JOIN works w ON w.canonical_unit = r.unit_id AND w.state = 'valid' "
        "WHERE r.job_id = ?1 AND r.round = ?2 AND (?3 = '' OR r.kind = ?3) ORDER BY r.unit_id";
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, round, kind));
    std::vector<ResultRecord> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) return out;
      UBCP_ASSIGN_OR_RETURN(ResultRecord r, ReadResult(*stmt));
      out.push_back(std::move(r));
    }
  });
}

Result<WorkRecord> SqliteStore::GetWork(std::int64_t work_id) {
  return Transact(TxKind::kRead, [&]() { return LoadWork(work_id); });
}

Result<std::pair<std::vector<ResultRecord>, int>> SqliteStore::WorkResults(std::int64_t work_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::pair<std::vector<ResultRecord>, int>> {
    static const std::string sql =
        std::string(kResultColumns) + "WHERE r.work_id = ?1 ORDER BY r.received_at, r.unit_id";
    UBCP_ASSIGN_OR_RETURN(std::vector<ResultRecord> results, SelectResults(sql, work_id));
    UBCP_ASSIGN_OR_RETURN(auto count, Sql("SELECT COUNT(*) FROM units WHERE work_id = ?1"));
    UBCP_RETURN_IF_ERROR(count->BindAll(work_id));
    UBCP_ASSIGN_OR_RETURN(bool row, count->Step());
    if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
    return std::make_pair(std::move(results), count->Int(0));
  });
}

Result<std::vector<std::int64_t>> SqliteStore::WorksWithPendingResults() {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<std::int64_t>> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT DISTINCT r.work_id FROM results r "
                                         "JOIN jobs j ON j.id = r.job_id "
                                         "WHERE r.status = 'pending' AND j.state = 'running' "
                                         "ORDER BY r.work_id"));
    std::vector<std::int64_t> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) return out;
      out.push_back(stmt->Int64(0));
    }
  });
}

Status SqliteStore::SetResultStatus(std::int64_t unit_id, ResultStatus status) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE results SET status = ?2 WHERE unit_id = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(unit_id, ResultStatusName(status)));
  UBCP_RETURN_IF_ERROR(stmt->Run());
  if (Changes() != 1) return MakeError(Errc::kInternal, "no result " + std::to_string(unit_id));
  return {};
}

Status SqliteStore::Pay(const ResultRecord& result, std::int64_t now) {
  if (result.credits <= 0) return {};
  const std::string unit_key = "unit:" + std::to_string(result.unit_id);
  LedgerTxn spend = Transfer("spend:" + unit_key, LedgerKind::kSpend, JobAccount(result.job_id),
                             std::string(kSpentAccount), result.credits, now);
  spend.job_id = result.job_id;
  spend.host_id = result.host_id;
  UBCP_RETURN_IF_ERROR(Post(spend));
  LedgerTxn points =
      Transfer("points:" + unit_key, LedgerKind::kPoints, std::string(kPointsAccount),
               DonorAccount(result.host_id), result.credits, now);
  points.job_id = result.job_id;
  points.host_id = result.host_id;
  UBCP_RETURN_IF_ERROR(Post(points));
  return {};
}

// Both legs of the pay go back in one transaction: the job's reservation gets the credits to pay
// for the work again, and the donor loses the points.
Status SqliteStore::Reverse(const ResultRecord& result, std::int64_t now) {
  if (result.credits <= 0) return {};
  LedgerTxn txn;
  txn.key = "reverse:unit:" + std::to_string(result.unit_id);
  txn.kind = LedgerKind::kReverse;
  txn.postings = {{std::string(kSpentAccount), -result.credits},
                  {JobAccount(result.job_id), result.credits},
                  {DonorAccount(result.host_id), -result.credits},
                  {std::string(kPointsAccount), result.credits}};
  txn.job_id = result.job_id;
  txn.host_id = result.host_id;
  txn.memo = "result of unit " + std::to_string(result.unit_id) + " found invalid";
  txn.at = now;
  UBCP_RETURN_IF_ERROR(Post(txn));
  return {};
}

Status SqliteStore::Replenish(std::int64_t work_id) {
  UBCP_ASSIGN_OR_RETURN(WorkRecord work, LoadWork(work_id));
  if (work.state != WorkState::kOpen) return {};
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT COUNT(*) FROM units u LEFT JOIN results r ON r.unit_id = u.id
WHERE u.work_id = ?1 AND (u.state != 'done' OR r.status IN ('pending', 'valid')))sql"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(work_id));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
  for (std::int64_t live = stmt->Int64(0); live < work.quorum; ++live) {
    UBCP_RETURN_IF_ERROR(AddUnit(work_id));
  }
  return {};
}

Status SqliteStore::CatchHost(std::int64_t host_id, std::int64_t caught_unit,
                              const WorkJudgement& j, JudgementOutcome& out) {
  {
    UBCP_ASSIGN_OR_RETURN(auto stmt,
                          Sql("UPDATE hosts SET offences = offences + 1, valid_streak = 0, "
                              "banned_at = CASE WHEN banned_at = 0 AND offences + 1 >= ?2 "
                              "THEN ?3 ELSE banned_at END WHERE id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(host_id, j.ban_after, j.now));
    UBCP_RETURN_IF_ERROR(stmt->Run());
  }
  UBCP_ASSIGN_OR_RETURN(HostRecord host, LoadHost(host_id));
  if (host.banned_at == j.now) {
    out.banned_hosts.push_back(host_id);
    // A banned host can answer nothing: what it holds goes back to the others at once instead
    // of waiting for its leases to expire (a late result would not match the next lease).
    UBCP_ASSIGN_OR_RETURN(auto release, Sql("UPDATE units SET state = 'pending', "
                                            "lease_deadline = 0, manifest_hash = '' "
                                            "WHERE host_id = ?1 AND state = 'leased'"));
    UBCP_RETURN_IF_ERROR(release->BindAll(host_id));
    UBCP_RETURN_IF_ERROR(release->Run());
  }
  // Its other results that nothing final rests on yet: discarded, their pay taken back, their
  // works computed again by someone else.
  static const std::string sql = std::string(kResultColumns) + R"sql(
JOIN jobs jb ON jb.id = r.job_id JOIN rounds rd ON rd.job_id = r.job_id AND rd.round = r.round
WHERE r.host_id = ?1 AND r.status IN ('pending', 'valid') AND jb.state = 'running'
  AND (rd.aggregated = 0 OR r.kind = 'eval_batch')
ORDER BY r.unit_id)sql";
  UBCP_ASSIGN_OR_RETURN(std::vector<ResultRecord> unfinished, SelectResults(sql, host_id));
  for (const ResultRecord& r : unfinished) {
    if (r.unit_id == caught_unit) continue;
    if (r.status == ResultStatus::kValid) {
      UBCP_RETURN_IF_ERROR(Reverse(r, j.now));
      ++out.reversed;
    }
    UBCP_RETURN_IF_ERROR(SetResultStatus(r.unit_id, ResultStatus::kInvalid));
    ++out.discarded;
    UBCP_ASSIGN_OR_RETURN(auto reopen, Sql("UPDATE works SET state = 'open', canonical_unit = 0 "
                                           "WHERE id = ?1 AND canonical_unit = ?2"));
    UBCP_RETURN_IF_ERROR(reopen->BindAll(r.work_id, r.unit_id));
    UBCP_RETURN_IF_ERROR(reopen->Run());
    UBCP_RETURN_IF_ERROR(Replenish(r.work_id));
  }
  return {};
}

Result<JudgementOutcome> SqliteStore::ResolveWork(const WorkJudgement& j) {
  return Transact(TxKind::kWrite, [&]() -> Result<JudgementOutcome> {
    UBCP_ASSIGN_OR_RETURN(WorkRecord work, LoadWork(j.work_id));
    static const std::string sql =
        std::string(kResultColumns) + "WHERE r.work_id = ?1 ORDER BY r.received_at, r.unit_id";
    UBCP_ASSIGN_OR_RETURN(std::vector<ResultRecord> results, SelectResults(sql, j.work_id));
    {
      UBCP_ASSIGN_OR_RETURN(auto count, Sql("SELECT COUNT(*) FROM units WHERE work_id = ?1"));
      UBCP_RETURN_IF_ERROR(count->BindAll(j.work_id));
      UBCP_ASSIGN_OR_RETURN(bool row, count->Step());
      if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
      if (count->Int(0) != j.units_seen) {
        return MakeError(Errc::kConflict, "work " + std::to_string(j.work_id) + " changed");
      }
    }
    auto find = [&](std::int64_t unit_id) -> const ResultRecord* {
      for (const ResultRecord& r : results) {
        if (r.unit_id == unit_id && r.status != ResultStatus::kInvalid) return &r;
      }
      return nullptr;
    };
    for (std::int64_t id : j.valid) {
      if (!find(id))
        return MakeError(Errc::kConflict, "no live result for unit " + std::to_string(id));
    }
    for (std::int64_t id : j.invalid) {
      if (!find(id))
        return MakeError(Errc::kConflict, "no live result for unit " + std::to_string(id));
    }
    JudgementOutcome out;
    switch (j.outcome) {
      case WorkJudgement::Outcome::kAnother:
        if (work.state != WorkState::kOpen) {
          return MakeError(Errc::kConflict, "work " + std::to_string(j.work_id) + " is judged");
        }
        UBCP_RETURN_IF_ERROR(AddUnit(j.work_id));
        return out;
      case WorkJudgement::Outcome::kDropped: {
        if (work.state != WorkState::kOpen) {
          return MakeError(Errc::kConflict, "work " + std::to_string(j.work_id) + " is judged");
        }
        UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE works SET state = 'dropped' WHERE id = ?1"));
        UBCP_RETURN_IF_ERROR(stmt->BindAll(j.work_id));
        UBCP_RETURN_IF_ERROR(stmt->Run());
        return out;
      }
      case WorkJudgement::Outcome::kValid:
        break;
    }
    if (j.valid.empty() && work.state == WorkState::kOpen) {
      return MakeError(Errc::kInvalidArgument, "a valid judgement names no valid result");
    }
    for (std::int64_t id : j.valid) {
      const ResultRecord& r = *find(id);
      if (r.status == ResultStatus::kPending) {
        UBCP_RETURN_IF_ERROR(SetResultStatus(id, ResultStatus::kValid));
        UBCP_RETURN_IF_ERROR(Pay(r, j.now));
        ++out.credited;
        UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE hosts SET valid_streak = valid_streak + 1 "
                                             "WHERE id = ?1"));
        UBCP_RETURN_IF_ERROR(stmt->BindAll(r.host_id));
        UBCP_RETURN_IF_ERROR(stmt->Run());
      }
    }
    if (work.state == WorkState::kOpen) {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE works SET state = 'valid', canonical_unit = ?2 "
                                           "WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(j.work_id, j.valid.front()));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    for (std::int64_t id : j.invalid) {
      const ResultRecord r = *find(id);
      if (r.status == ResultStatus::kValid) {
        UBCP_RETURN_IF_ERROR(Reverse(r, j.now));
        ++out.reversed;
      }
      UBCP_RETURN_IF_ERROR(SetResultStatus(id, ResultStatus::kInvalid));
      UBCP_RETURN_IF_ERROR(CatchHost(r.host_id, id, j, out));
    }
    return out;
  });
}

// false (nothing changed) when round `from_round` does not exist or is already aggregated.
Result<bool> SqliteStore::AdvanceRound(const RoundAdvance& advance) {
  if (advance.from_round < 0 || advance.from_round == INT_MAX) {
    return MakeError(Errc::kInvalidArgument, "round out of range");
  }
  UBCP_RETURN_IF_ERROR(ValidateUnits(advance.next_units));
  const int next = advance.from_round + 1;
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE rounds SET aggregated = 1 WHERE job_id = ?1 "
                                           "AND round = ?2 AND aggregated = 0"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(advance.job_id, advance.from_round));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      if (Changes() == 0) return false;
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO rounds (job_id, round, model_blob, "
                                           "momentum_blob, created_at) "
                                           "VALUES (?1, ?2, ?3, ?4, ?5)"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(advance.job_id, next, advance.next_model,
                                         advance.next_momentum, advance.now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    UBCP_RETURN_IF_ERROR(InsertUnits(advance.job_id, next, advance.next_units));
    UBCP_ASSIGN_OR_RETURN(auto stmt,
                          Sql("UPDATE jobs SET current_round = ?2, updated_at = ?3 WHERE id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(advance.job_id, next, advance.now));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    return true;
  });
}

// kNotFound for an unknown job; false (nothing changed) for one that is not running.
Result<bool> SqliteStore::FinishJob(std::int64_t job_id, const std::string& final_model,
                                    const std::optional<CatalogEntry>& publish, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    UBCP_RETURN_IF_ERROR(RequireJob(job_id));
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE jobs SET state = 'done', final_model = ?2, "
                                           "updated_at = ?3 WHERE id = ?1 AND state = 'running'"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, final_model, now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      if (Changes() == 0) return false;
    }
    if (publish) UBCP_RETURN_IF_ERROR(InsertCatalog(*publish));
    UBCP_ASSIGN_OR_RETURN(JobRecord job, LoadJob(job_id));
    UBCP_RETURN_IF_ERROR(RefundRemainder(job, now));
    return true;
  });
}

// A running job becomes "failed"; failing a failed job again keeps its first error; a done job
// cannot fail (kConflict); an unknown job is kNotFound.
Status SqliteStore::FailJob(std::int64_t job_id, const std::string& error, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Status {
    std::string state;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT state FROM jobs WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id));
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) return MakeError(Errc::kNotFound, "no job " + std::to_string(job_id));
      state = stmt->Text(0);
    }
    if (state == "failed") return {};
    if (state != "running") {
      return MakeError(Errc::kConflict, "job " + std::to_string(job_id) + " is " + state);
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE jobs SET state = 'failed', error = ?2, "
                                           "updated_at = ?3 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, error, now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    UBCP_ASSIGN_OR_RETURN(JobRecord job, LoadJob(job_id));
    return RefundRemainder(job, now);
  });
}

Result<bool> SqliteStore::CancelJob(std::int64_t job_id, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    UBCP_ASSIGN_OR_RETURN(JobRecord job, LoadJob(job_id));
    if (job.state == "cancelled") return false;
    if (job.state != "running" && job.state != "queued") {
      return MakeError(Errc::kConflict, "job " + std::to_string(job_id) + " is " + job.state);
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE jobs SET state = 'cancelled', "
                                           "updated_at = ?2 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    UBCP_RETURN_IF_ERROR(RefundRemainder(job, now));
    return true;
  });
}

Result<std::vector<JobRecord>> SqliteStore::ListQueuedJobs() {
  static const std::string sql =
      std::string(kJobColumns) + "WHERE state = 'queued' ORDER BY created_at, id";
  return SelectJobs(sql, std::nullopt);
}

Result<bool> SqliteStore::AdmitJob(std::int64_t job_id, std::int64_t period_id, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    UBCP_ASSIGN_OR_RETURN(JobRecord job, LoadJob(job_id));
    if (job.state != "queued") return false;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE jobs SET state = 'running', "
                                           "admitted_period = ?2, updated_at = ?3 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(job_id, period_id, now));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE periods SET admitted_credits = "
                                           "admitted_credits + ?2 WHERE id = ?1 AND closed = 0"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(period_id, job.price_credits));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      if (Changes() != 1) {
        return MakeError(Errc::kConflict, "period " + std::to_string(period_id) + " is not open");
      }
    }
    if (job.price_credits > 0) {
      LedgerTxn reserve =
          Transfer("reserve:job:" + std::to_string(job_id), LedgerKind::kReserve,
                   RecipientAccount(job.account_id), JobAccount(job_id), job.price_credits, now);
      reserve.job_id = job_id;
      reserve.memo = job.name;
      UBCP_ASSIGN_OR_RETURN(bool posted, Post(reserve));
      if (!posted) {
        return MakeError(Errc::kInternal, "job " + std::to_string(job_id) + " reserved twice");
      }
    }
    return true;
  });
}

// ---- periods ----

namespace {
constexpr std::string_view kPeriodColumns =
    "SELECT id, starts_at, ends_at, forecast_credits, reserve_credits, budget_credits, "
    "share_credits, recipients, admitted_credits, validated_credits, closed FROM periods ";

PeriodRecord ReadPeriod(const Statement& s) {
  PeriodRecord p;
  p.id = s.Int64(0);
  p.starts_at = s.Int64(1);
  p.ends_at = s.Int64(2);
  p.forecast_credits = s.Int64(3);
  p.reserve_credits = s.Int64(4);
  p.budget_credits = s.Int64(5);
  p.share_credits = s.Int64(6);
  p.recipients = s.Int64(7);
  p.admitted_credits = s.Int64(8);
  p.validated_credits = s.Int64(9);
  p.closed = s.Int64(10) != 0;
  return p;
}
}  // namespace

Result<std::optional<PeriodRecord>> SqliteStore::LoadOpenPeriod() {
  static const std::string sql =
      std::string(kPeriodColumns) + "WHERE closed = 0 ORDER BY id DESC LIMIT 1";
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return std::optional<PeriodRecord>();
  return std::optional<PeriodRecord>(ReadPeriod(*stmt));
}

Result<std::optional<PeriodRecord>> SqliteStore::CurrentPeriod() {
  return Transact(TxKind::kRead, [&]() { return LoadOpenPeriod(); });
}

Result<std::vector<PeriodRecord>> SqliteStore::RecentPeriods(int limit) {
  if (limit < 1 || limit > 10000) return MakeError(Errc::kInvalidArgument, "limit out of range");
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<PeriodRecord>> {
    static const std::string sql = std::string(kPeriodColumns) + "ORDER BY id DESC LIMIT ?1";
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(limit));
    std::vector<PeriodRecord> out;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      out.push_back(ReadPeriod(*stmt));
    }
    return out;
  });
}

Result<std::int64_t> SqliteStore::LoadValidated(std::int64_t from, std::int64_t to) {
  UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COALESCE(SUM(credits), 0) FROM results "
                                       "WHERE received_at >= ?1 AND received_at < ?2 "
                                       "AND status = 'valid'"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(from, to));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kInternal, "SUM returned no row");
  return stmt->Int64(0);
}

Result<std::int64_t> SqliteStore::ValidatedCreditsBetween(std::int64_t from, std::int64_t to) {
  return Transact(TxKind::kRead, [&]() { return LoadValidated(from, to); });
}

Result<bool> SqliteStore::IssueShareIn(const PeriodRecord& period, std::int64_t account_id,
                                       std::int64_t now) {
  if (period.share_credits <= 0) return false;
  LedgerTxn issue = Transfer(
      "issue:" + std::to_string(period.id) + ":" + std::to_string(account_id), LedgerKind::kIssue,
      std::string(kIssuanceAccount), RecipientAccount(account_id), period.share_credits, now);
  issue.memo = "basic share of period " + std::to_string(period.id);
  return Post(issue);
}

Result<PeriodRecord> SqliteStore::RollPeriod(const PeriodRoll& roll) {
  const PeriodRecord& n = roll.next;
  if (n.ends_at <= n.starts_at || n.forecast_credits < 0 || n.reserve_credits < 0 ||
      n.budget_credits < 0 || n.share_credits < 0 || roll.carry_cap_credits < 0) {
    return MakeError(Errc::kInvalidArgument, "period figures out of range");
  }
  return Transact(TxKind::kWrite, [&]() -> Result<PeriodRecord> {
    UBCP_ASSIGN_OR_RETURN(std::optional<PeriodRecord> open, LoadOpenPeriod());
    const std::int64_t open_id = open ? open->id : 0;
    if (open_id != roll.close_id) {
      return MakeError(Errc::kConflict,
                       "period " + std::to_string(roll.close_id) + " is not the open period");
    }
    std::vector<std::int64_t> recipients;  // every recipient account: expiry and the new issue
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("SELECT id FROM accounts WHERE role = 'recipient' ORDER BY id"));
      for (;;) {
        UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
        if (!row) break;
        recipients.push_back(stmt->Int64(0));
      }
    }
    if (open) {
      UBCP_ASSIGN_OR_RETURN(std::int64_t validated, LoadValidated(open->starts_at, open->ends_at));
      {
        UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("UPDATE periods SET closed = 1, "
                                             "validated_credits = ?2 WHERE id = ?1"));
        UBCP_RETURN_IF_ERROR(stmt->BindAll(open->id, validated));
        UBCP_RETURN_IF_ERROR(stmt->Run());
      }
      for (std::int64_t account : recipients) {
        UBCP_ASSIGN_OR_RETURN(std::int64_t balance, LoadBalance(RecipientAccount(account)));
        if (balance <= roll.carry_cap_credits) continue;
        LedgerTxn expire =
            Transfer("expire:" + std::to_string(open->id) + ":" + std::to_string(account),
                     LedgerKind::kExpire, RecipientAccount(account), std::string(kExpiredAccount),
                     balance - roll.carry_cap_credits, roll.now);
        expire.memo = "above the carry-over cap at the end of period " + std::to_string(open->id);
        UBCP_RETURN_IF_ERROR(Post(expire));
      }
    }
    PeriodRecord next = n;
    next.recipients = static_cast<std::int64_t>(recipients.size());
    next.admitted_credits = 0;
    next.validated_credits = 0;
    next.closed = false;
    {
      UBCP_ASSIGN_OR_RETURN(
          auto stmt,
          Sql("INSERT INTO periods (starts_at, ends_at, forecast_credits, reserve_credits, "
              "budget_credits, share_credits, recipients) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(next.starts_at, next.ends_at, next.forecast_credits,
                                         next.reserve_credits, next.budget_credits,
                                         next.share_credits, next.recipients));
      UBCP_RETURN_IF_ERROR(stmt->Run());
      next.id = LastRowId();
    }
    for (std::int64_t account : recipients) {
      UBCP_RETURN_IF_ERROR(IssueShareIn(next, account, roll.now));
    }
    return next;
  });
}

Result<bool> SqliteStore::IssueShare(std::int64_t account_id, std::int64_t now) {
  return Transact(TxKind::kWrite, [&]() -> Result<bool> {
    UBCP_ASSIGN_OR_RETURN(std::optional<PeriodRecord> open, LoadOpenPeriod());
    if (!open) return false;
    UBCP_ASSIGN_OR_RETURN(bool issued, IssueShareIn(*open, account_id, now));
    if (issued) {
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("UPDATE periods SET recipients = recipients + 1 WHERE id = ?1"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(open->id));
      UBCP_RETURN_IF_ERROR(stmt->Run());
    }
    return issued;
  });
}

Result<std::vector<RecipientUsage>> SqliteStore::RecipientUsages(std::int64_t now,
                                                                 double half_life_s) {
  if (!(half_life_s > 0)) return MakeError(Errc::kInvalidArgument, "half-life must be positive");
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<RecipientUsage>> {
    std::vector<RecipientUsage> out;
    std::map<std::int64_t, std::size_t> index;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt,
                            Sql("SELECT id FROM accounts WHERE role = 'recipient' ORDER BY id"));
      for (;;) {
        UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
        if (!row) break;
        index[stmt->Int64(0)] = out.size();
        out.push_back({stmt->Int64(0), 0, 0.0});
      }
    }
    for (auto& u : out) {
      UBCP_ASSIGN_OR_RETURN(u.balance_credits, LoadBalance(RecipientAccount(u.account_id)));
    }
    // Spending per account and hour; older hours count for less (2^(-age / half-life)).
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT j.account_id, t.at / 3600, SUM(e.amount)
FROM ledger_txns t JOIN ledger_entries e ON e.txn_key = t.key JOIN jobs j ON j.id = t.job_id
WHERE t.kind = 'spend' AND e.account = 'spent'
GROUP BY j.account_id, t.at / 3600)sql"));
    UBCP_RETURN_IF_ERROR(AccumulateDecayed(*stmt, now, half_life_s, [&](std::int64_t id, double v) {
      if (auto it = index.find(id); it != index.end()) out[it->second].recent_usage_credits += v;
    }));
    return out;
  });
}

Result<LedgerTotals> SqliteStore::TotalsBetween(std::int64_t from, std::int64_t to) {
  return Transact(TxKind::kRead, [&]() -> Result<LedgerTotals> {
    // Each movement counted once: by its positive leg.
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT t.kind, COALESCE(SUM(e.amount), 0) "
                                         "FROM ledger_txns t JOIN ledger_entries e "
                                         "ON e.txn_key = t.key WHERE e.amount > 0 "
                                         "AND t.at >= ?1 AND t.at < ?2 GROUP BY t.kind"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(from, to));
    LedgerTotals totals;
    for (;;) {
      UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
      if (!row) break;
      const std::string kind = stmt->Text(0);
      const std::int64_t sum = stmt->Int64(1);
      if (kind == "issue") totals.issued = sum;
      if (kind == "grant") totals.granted = sum;
      if (kind == "reserve") totals.reserved = sum;
      if (kind == "spend") totals.spent = sum;
      if (kind == "refund") totals.refunded = sum;
      if (kind == "expire") totals.expired = sum;
      // A reversal has two positive legs of the same amount (job:<id> and points).
      if (kind == "reverse") totals.reversed = sum / 2;
    }
    return totals;
  });
}

Result<std::vector<JobRecord>> SqliteStore::ListJobsAdmittedIn(std::int64_t period_id) {
  static const std::string sql =
      std::string(kJobColumns) + "WHERE admitted_period = ?1 ORDER BY id";
  return SelectJobs(sql, period_id);
}

// One pass over the hosts seen, reading each stored benchmark with SQLite's JSON functions:
// cuda_devices (what libtorch sees) and gpu.devices (what NVML lists; absent for old clients).
Result<GpuCounts> SqliteStore::CountGpusSeenSince(std::int64_t since) {
  return Transact(TxKind::kRead, [&]() -> Result<GpuCounts> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT COALESCE(SUM(cuda > 0), 0), COALESCE(SUM(MAX(cuda, 0)), 0),
       COALESCE(SUM(cuda <= 0 AND nvml > 0), 0), COALESCE(SUM(CASE WHEN cuda <= 0 THEN nvml END), 0)
FROM (SELECT COALESCE(json_extract(benchmark_json, '$.cuda_devices'), 0) AS cuda,
             COALESCE(json_array_length(benchmark_json, '$.gpu.devices'), 0) AS nvml
      FROM hosts WHERE last_seen_at >= ?1 AND json_valid(benchmark_json)))sql"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(since));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "SUM returned no row");
    return GpuCounts{stmt->Int64(0), stmt->Int64(1), stmt->Int64(2), stmt->Int64(3)};
  });
}

Result<std::int64_t> SqliteStore::CountHostsSeenSince(std::int64_t since) {
  return Transact(TxKind::kRead, [&]() -> Result<std::int64_t> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COUNT(*) FROM hosts WHERE last_seen_at >= ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(since));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "COUNT returned no row");
    return stmt->Int64(0);
  });
}

Status SqliteStore::SetHostProfile(std::int64_t host_id, const std::string& public_name,
                                   const std::string& team) {
  return Transact(TxKind::kWrite, [&]() -> Status {
    UBCP_ASSIGN_OR_RETURN(auto stmt,
                          Sql("UPDATE hosts SET public_name = ?2, team = ?3 WHERE id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(host_id, public_name, team));
    UBCP_RETURN_IF_ERROR(stmt->Run());
    if (Changes() != 1) return MakeError(Errc::kNotFound, "no host " + std::to_string(host_id));
    return {};
  });
}

Result<std::vector<HostContribution>> SqliteStore::HostContributions(std::int64_t now,
                                                                     double half_life_s,
                                                                     std::int64_t period_start,
                                                                     bool only_public) {
  if (!(half_life_s > 0)) return MakeError(Errc::kInvalidArgument, "half-life must be positive");
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<HostContribution>> {
    std::vector<HostContribution> out;
    std::map<std::int64_t, std::size_t> index;
    {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(R"sql(
SELECT h.id, h.name, h.public_name, h.team, COUNT(r.unit_id), COALESCE(SUM(r.credits), 0),
  COALESCE(SUM(CASE WHEN r.received_at >= ?1 THEN r.credits ELSE 0 END), 0)
FROM hosts h LEFT JOIN results r ON r.host_id = h.id AND r.status = 'valid'
WHERE ?2 = 0 OR h.public_name != ''
GROUP BY h.id)sql"));
      UBCP_RETURN_IF_ERROR(stmt->BindAll(period_start, only_public ? 1 : 0));
      for (;;) {
        UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
        if (!row) break;
        HostContribution c;
        c.host_id = stmt->Int64(0);
        c.name = stmt->Text(1);
        c.public_name = stmt->Text(2);
        c.team = stmt->Text(3);
        c.units = stmt->Int64(4);
        c.credits = stmt->Int64(5);
        c.period_credits = stmt->Int64(6);
        index[c.host_id] = out.size();
        out.push_back(std::move(c));
      }
    }
    // Validated work per host and hour; older hours count for less.
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT host_id, received_at / 3600, SUM(credits) "
                                         "FROM results WHERE status = 'valid' "
                                         "GROUP BY host_id, received_at / 3600"));
    UBCP_RETURN_IF_ERROR(AccumulateDecayed(*stmt, now, half_life_s, [&](std::int64_t id, double v) {
      if (auto it = index.find(id); it != index.end()) out[it->second].recent_credits += v;
    }));
    std::sort(out.begin(), out.end(), [](const HostContribution& a, const HostContribution& b) {
      return a.credits != b.credits ? a.credits > b.credits : a.host_id < b.host_id;
    });
    return out;
  });
}

// ---- ledger ----

Result<std::int64_t> SqliteStore::LoadBalance(const std::string& account) {
  UBCP_ASSIGN_OR_RETURN(
      auto stmt, Sql("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account = ?1"));
  UBCP_RETURN_IF_ERROR(stmt->BindAll(account));
  UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return MakeError(Errc::kInternal, "SUM returned no row");
  return stmt->Int64(0);
}

Result<bool> SqliteStore::Post(const LedgerTxn& txn) {
  UBCP_RETURN_IF_ERROR(ValidateTxn(txn));
  {
    // Idempotency: a key already in the ledger is the same movement written before (a retry),
    // unless its content differs, which is a bug in the caller.
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT kind, job_id, host_id FROM ledger_txns "
                                         "WHERE key = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(txn.key));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (row) {
      if (stmt->Text(0) != LedgerKindName(txn.kind) || stmt->Int64(1) != txn.job_id ||
          stmt->Int64(2) != txn.host_id) {
        return MakeError(Errc::kConflict, "ledger key " + txn.key + " is used for another entry");
      }
      UBCP_ASSIGN_OR_RETURN(auto entries, Sql("SELECT account, amount FROM ledger_entries "
                                              "WHERE txn_key = ?1 ORDER BY account"));
      UBCP_RETURN_IF_ERROR(entries->BindAll(txn.key));
      std::vector<std::pair<std::string, std::int64_t>> stored, wanted;
      for (;;) {
        UBCP_ASSIGN_OR_RETURN(bool more, entries->Step());
        if (!more) break;
        stored.emplace_back(entries->Text(0), entries->Int64(1));
      }
      for (const Posting& p : txn.postings) wanted.emplace_back(p.account, p.amount);
      std::sort(wanted.begin(), wanted.end());
      if (stored != wanted) {
        return MakeError(Errc::kConflict, "ledger key " + txn.key + " is used for another entry");
      }
      return false;
    }
  }
  {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO ledger_txns (key, kind, job_id, host_id, "
                                         "memo, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(txn.key, LedgerKindName(txn.kind), txn.job_id, txn.host_id,
                                       txn.memo, txn.at));
    UBCP_RETURN_IF_ERROR(stmt->Run());
  }
  for (const Posting& p : txn.postings) {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("INSERT INTO ledger_entries (txn_key, account, amount) "
                                         "VALUES (?1, ?2, ?3)"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(txn.key, p.account, p.amount));
    UBCP_RETURN_IF_ERROR(stmt->Run());
  }
  for (const Posting& p : txn.postings) {
    if (p.amount >= 0 || !MustStayNonNegative(p.account)) continue;
    UBCP_ASSIGN_OR_RETURN(std::int64_t balance, LoadBalance(p.account));
    if (balance < 0) {
      // The caller's transaction rolls back: nothing of this movement, or of the state change
      // it pays for, is kept.
      return MakeError(Errc::kInsufficientCredits,
                       p.account + " holds " + std::to_string(balance - p.amount) + " credits, " +
                           std::to_string(-p.amount) + " needed");
    }
  }
  return true;
}

Status SqliteStore::RefundRemainder(const JobRecord& job, std::int64_t now) {
  UBCP_ASSIGN_OR_RETURN(std::int64_t left, LoadBalance(JobAccount(job.id)));
  if (left < 0) return MakeError(Errc::kInternal, JobAccount(job.id) + " is negative");
  if (left == 0) return {};
  LedgerTxn refund = Transfer("refund:job:" + std::to_string(job.id), LedgerKind::kRefund,
                              JobAccount(job.id), RecipientAccount(job.account_id), left, now);
  refund.job_id = job.id;
  UBCP_ASSIGN_OR_RETURN(bool posted, Post(refund));
  if (!posted)
    return MakeError(Errc::kInternal, "job " + std::to_string(job.id) + " refunded twice");
  return {};
}

Result<std::int64_t> SqliteStore::Balance(const std::string& account) {
  return Transact(TxKind::kRead, [&]() { return LoadBalance(account); });
}

Result<std::int64_t> SqliteStore::SpentByAccount(std::int64_t account_id) {
  return Transact(TxKind::kRead, [&]() -> Result<std::int64_t> {
    UBCP_ASSIGN_OR_RETURN(auto stmt, Sql("SELECT COALESCE(SUM(e.amount), 0) FROM ledger_txns t "
                                         "JOIN ledger_entries e ON e.txn_key = t.key "
                                         "JOIN jobs j ON j.id = t.job_id "
                                         "WHERE t.kind = 'spend' AND e.account = 'spent' "
                                         "AND j.account_id = ?1"));
    UBCP_RETURN_IF_ERROR(stmt->BindAll(account_id));
    UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return MakeError(Errc::kInternal, "SUM returned no row");
    return stmt->Int64(0);
  });
}

Result<bool> SqliteStore::PostLedger(const LedgerTxn& txn) {
  return Transact(TxKind::kWrite, [&]() { return Post(txn); });
}

Result<std::vector<std::string>> SqliteStore::CheckLedger() {
  return Transact(TxKind::kRead, [&]() -> Result<std::vector<std::string>> {
    std::vector<std::string> problems;
    auto each_row = [&](const char* sql, auto&& report) -> Status {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Sql(sql));
      for (;;) {
        UBCP_ASSIGN_OR_RETURN(bool row, stmt->Step());
        if (!row) return {};
        report(*stmt);
      }
    };
    UBCP_RETURN_IF_ERROR(
        each_row("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries", [&](const Statement& s) {
          if (s.Int64(0) != 0) {
            problems.push_back("all entries sum to " + std::to_string(s.Int64(0)) + ", not 0");
          }
        }));
    UBCP_RETURN_IF_ERROR(each_row(
        "SELECT t.key, COALESCE(SUM(e.amount), 0), COUNT(e.id) FROM ledger_txns t "
        "LEFT JOIN ledger_entries e ON e.txn_key = t.key GROUP BY t.key "
        "HAVING COALESCE(SUM(e.amount), 0) != 0 OR COUNT(e.id) < 2",
        [&](const Statement& s) {
          problems.push_back("transaction " + s.Text(0) + " sums to " + std::to_string(s.Int64(1)) +
                             " over " + std::to_string(s.Int64(2)) + " entries");
        }));
    UBCP_RETURN_IF_ERROR(each_row(
        "SELECT e.txn_key FROM ledger_entries e LEFT JOIN ledger_txns t ON t.key = e.txn_key "
        "WHERE t.key IS NULL GROUP BY e.txn_key",
        [&](const Statement& s) {
          problems.push_back("entries of unknown transaction " + s.Text(0));
        }));
    UBCP_RETURN_IF_ERROR(
        each_row("SELECT key, COUNT(*) FROM ledger_txns GROUP BY key HAVING COUNT(*) > 1",
                 [&](const Statement& s) { problems.push_back("key used twice: " + s.Text(0)); }));
    UBCP_RETURN_IF_ERROR(each_row(
        "SELECT account, SUM(amount) FROM ledger_entries "
        "WHERE account LIKE 'recipient:%' OR account LIKE 'job:%' OR account LIKE 'donor:%' "
        "GROUP BY account HAVING SUM(amount) < 0",
        [&](const Statement& s) {
          problems.push_back(s.Text(0) + " is negative: " + std::to_string(s.Int64(1)));
        }));
    // What each job spent (less what was reversed) equals the credits of its valid results, and
    // donors were credited exactly that.
    UBCP_RETURN_IF_ERROR(each_row(
        R"sql(
SELECT j.id,
  (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_txns t JOIN ledger_entries e
     ON e.txn_key = t.key WHERE t.kind IN ('spend', 'reverse') AND t.job_id = j.id
     AND e.account = 'spent'),
  (SELECT COALESCE(SUM(r.credits), 0) FROM results r WHERE r.job_id = j.id AND r.status = 'valid'),
  (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_txns t JOIN ledger_entries e
     ON e.txn_key = t.key WHERE t.kind IN ('points', 'reverse') AND t.job_id = j.id
     AND e.account LIKE 'donor:%')
FROM jobs j)sql",
        [&](const Statement& s) {
          if (s.Int64(1) != s.Int64(2) || s.Int64(2) != s.Int64(3)) {
            problems.push_back("job " + std::to_string(s.Int64(0)) + " spent " +
                               std::to_string(s.Int64(1)) + " credits, its valid results " +
                               "cost " + std::to_string(s.Int64(2)) + ", donors got " +
                               std::to_string(s.Int64(3)));
          }
        }));
    UBCP_RETURN_IF_ERROR(each_row(
        "SELECT j.id, j.state, COALESCE(SUM(e.amount), 0) FROM jobs j LEFT JOIN ledger_entries e "
        "ON e.account = 'job:' || j.id WHERE j.state != 'running' "
        "GROUP BY j.id HAVING COALESCE(SUM(e.amount), 0) != 0",
        [&](const Statement& s) {
          problems.push_back("job " + std::to_string(s.Int64(0)) + " is " + s.Text(1) +
                             " but still holds " + std::to_string(s.Int64(2)) + " credits");
        }));
    return problems;
  });
}

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::filesystem::path& path) {
  try {
    return SqliteStore::Open(path);
  } catch (const std::exception& e) {
    return MakeError(Errc::kIo, std::string("sqlite store: ") + e.what());
  }
}

int SqliteSchemaVersion() { return sqlite::kMigrations.back().version; }

}  // namespace ubcp::coordinator
