// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/raw_db.h"
#include "store/sqlite_migrations.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {
namespace {

using common::Errc;

const std::string kFinetune(common::kUnitFinetune);
const std::string kEval(common::kUnitEval);

template <class R>
Errc CodeOf(const R& r) {
  EXPECT_FALSE(r) << "expected an error";
  return r ? Errc::kInternal : r.error().code;
}

// Returns "m-<unit>-<attempt>" and remembers the last context it saw.
struct RecordingSigner {
  std::optional<LeaseContext> last;
  Store::ManifestSigner Fn() {
    return [this](const LeaseContext& c) -> Result<std::string> {
      last = c;
      return "m-" + std::to_string(c.unit.id) + "-" + std::to_string(c.unit.attempt);
    };
  }
};

Store::ManifestSigner PlainSigner() {
  return [](const LeaseContext& c) -> Result<std::string> {
    return "m-" + std::to_string(c.unit.id) + "-" + std::to_string(c.unit.attempt);
  };
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ubcp_store_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ / "coordinator.db";
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Reopen() {
    store_.reset();
    auto store = OpenSqliteStore(path_);
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
  }

  Store& store() { return *store_; }

  std::int64_t AddHost(const std::string& key) {
    NewHost h;
    h.public_key = key;
    h.name = "host " + key;
    h.token_hash = "token-" + key;
    h.benchmark_json = "{}";
    h.capabilities_json = "{}";
    h.now = 10;
    auto id = store().CreateHost(h);
    EXPECT_TRUE(id) << id.error().ToString();
    return id ? *id : 0;
  }

  std::int64_t Account() {
    if (account_ == 0) {
      auto id = store().CreateAccount("alice", "alice-token", Role::kRecipient, 5);
      EXPECT_TRUE(id) << id.error().ToString();
      account_ = id ? *id : 0;
    }
    return account_;
  }

  void AddBlob(const std::string& id, std::uint64_t size, const std::string& kind) {
    auto s = store().RecordBlob(BlobRecord{id, size, size * 2, kind}, 1);
    ASSERT_TRUE(s) << s.error().ToString();
  }

  // A running job whose round 0 has the given units (each on shard i of its kind's shards).
  // Admits a queued job in an open period (opened here with room for everything).
  void Admit(std::int64_t job_id) {
    if (!store().CurrentPeriod()->has_value()) {
      PeriodRoll roll;
      roll.next.starts_at = 0;
      roll.next.ends_at = 1'000'000'000;
      roll.next.forecast_credits = roll.next.budget_credits = 1'000'000;
      ASSERT_TRUE(store().RollPeriod(roll));
    }
    auto admitted = store().AdmitJob(job_id, store().CurrentPeriod()->value().id, 1);
    ASSERT_TRUE(admitted) << admitted.error().ToString();
    EXPECT_TRUE(*admitted);
  }

  // A running job (created queued, then admitted).
  std::int64_t MakeJob(const std::vector<std::string>& kinds, std::int64_t lease_seconds = 600,
                       std::int64_t now = 100) {
    AddBlob("model-0", 1000, "model");
    AddBlob("train-0", 10, "data");
    AddBlob("train-1", 11, "data");
    AddBlob("test-0", 20, "data");
    AddBlob("test-1", 21, "data");
    NewJob job;
    job.account_id = Account();
    job.name = "job";
    job.spec_json = R"({"rounds":3})";
    job.model_spec = "mlp";
    job.rounds = 3;
    job.lease_seconds = lease_seconds;
    job.shards = {{ShardKind::kTrain, 0, "train-0", 100},
                  {ShardKind::kTrain, 1, "train-1", 100},
                  {ShardKind::kTest, 0, "test-0", 50},
                  {ShardKind::kTest, 1, "test-1", 50}};
    job.initial_model = "model-0";
    int ft = 0, ev = 0;
    for (const std::string& kind : kinds) {
      int index = kind == kEval ? ev++ % 2 : ft++ % 2;
      job.round0_units.push_back(UnitPlan{kind, index, 7});
    }
    job.now = now;
    auto id = store().CreateJob(job);
    EXPECT_TRUE(id) << id.error().ToString();
    if (!id) return 0;
    EXPECT_EQ(store().GetJob(*id)->state, "queued");
    Admit(*id);
    return *id;
  }

  // Leases a unit that must exist.
  LeaseContext MustLease(std::int64_t host, const std::vector<std::string>& kinds,
                         std::int64_t now) {
    auto leased = store().LeaseUnit(host, kinds, now, PlainSigner());
    EXPECT_TRUE(leased) << leased.error().ToString();
    EXPECT_TRUE(leased && leased->has_value());
    return leased && leased->has_value() ? **leased : LeaseContext{};
  }

  // Records a result and, when it is new, judges it valid at once, as the coordinator's judge
  // does for a work whose quorum is 1.
  Result<RecordOutcome> RecordValid(const ResultRecord& r) {
    auto recorded = store().RecordResult(r);
    if (!recorded || *recorded != RecordOutcome::kAccepted) return recorded;
    auto unit = store().GetUnit(r.unit_id);
    if (!unit) return unit.error();
    WorkJudgement j;
    j.work_id = unit->work_id;
    j.valid = {r.unit_id};
    j.units_seen = 1;
    j.now = r.received_at;
    if (auto judged = store().ResolveWork(j); !judged) return judged.error();
    return recorded;
  }

  static ResultRecord ResultFor(const UnitRecord& unit, const std::string& envelope,
                                double loss = 1.0, double accuracy = 0.5,
                                std::int64_t samples = 10) {
    ResultRecord r;
    r.unit_id = unit.id;
    r.host_id = unit.host_id;
    r.attempt = unit.attempt;
    r.envelope_hash = "hash-" + envelope;
    r.envelope_json = envelope;
    r.update_blob = unit.kind == kFinetune ? "update-" + envelope : "";
    r.loss = loss;
    r.accuracy = accuracy;
    r.first_loss = 2.0;
    r.samples = samples;
    r.wall_seconds = 1.5;
    r.received_at = 500;
    return r;
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  std::unique_ptr<Store> store_;
  std::int64_t account_ = 0;
};

TEST_F(SqliteStoreTest, MigratesAtOpenAndKeepsDataAcrossReopen) {
  ASSERT_GE(SqliteSchemaVersion(), 1);
  std::int64_t host = AddHost("k1");
  {
    RawDb raw(path_);
    EXPECT_EQ(raw.Query("SELECT MAX(version) FROM schema_version"),
              std::to_string(SqliteSchemaVersion()));
    EXPECT_EQ(raw.Query("SELECT COUNT(*) FROM schema_version"),
              std::to_string(SqliteSchemaVersion()));
  }
  Reopen();
  auto found = store().FindHostByTokenHash("token-k1");
  ASSERT_TRUE(found) << found.error().ToString();
  EXPECT_EQ(found->id, host);
  EXPECT_EQ(found->public_key, "k1");
  RawDb raw(path_);
  // Reopening applies nothing twice.
  EXPECT_EQ(raw.Query("SELECT COUNT(*) FROM schema_version"),
            std::to_string(SqliteSchemaVersion()));
}

TEST_F(SqliteStoreTest, UsesWriteAheadLog) {
  AddHost("k1");
  EXPECT_TRUE(std::filesystem::exists(path_.string() + "-wal"));
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("PRAGMA journal_mode"), "wal");
}

TEST_F(SqliteStoreTest, RefusesDatabaseFromNewerSchema) {
  store_.reset();
  {
    RawDb raw(path_);
    raw.Exec("INSERT INTO schema_version (version, applied_at) VALUES (9999, 0)");
  }
  auto reopened = OpenSqliteStore(path_);
  EXPECT_EQ(CodeOf(reopened), Errc::kIo);
}

TEST_F(SqliteStoreTest, OpenFailsWithIoOnBadPath) {
  auto bad = OpenSqliteStore(dir_ / "missing-dir" / "x.db");
  EXPECT_EQ(CodeOf(bad), Errc::kIo);
}

TEST_F(SqliteStoreTest, HostsConflictAndLookups) {
  std::int64_t id = AddHost("k1");
  EXPECT_GT(id, 0);

  NewHost same_key{"k1", "other", "token-other", "{}", "{}", 11};
  EXPECT_EQ(CodeOf(store().CreateHost(same_key)), Errc::kConflict);
  NewHost same_token{"k2", "other", "token-k1", "{}", "{}", 11};
  EXPECT_EQ(CodeOf(store().CreateHost(same_token)), Errc::kConflict);
  NewHost no_token{"k3", "other", "", "{}", "{}", 11};
  EXPECT_EQ(CodeOf(store().CreateHost(no_token)), Errc::kInvalidArgument);

  // Values are bound, never spliced into SQL.
  NewHost odd{"k'4", "Robert'); DROP TABLE hosts;--", "token-k4", R"({"a":"'"})", "{}", 12};
  auto odd_id = store().CreateHost(odd);
  ASSERT_TRUE(odd_id) << odd_id.error().ToString();
  auto odd_host = store().GetHost(*odd_id);
  ASSERT_TRUE(odd_host);
  EXPECT_EQ(odd_host->name, odd.name);
  EXPECT_EQ(odd_host->public_key, "k'4");
  EXPECT_EQ(odd_host->benchmark_json, odd.benchmark_json);

  EXPECT_EQ(CodeOf(store().FindHostByTokenHash("nope")), Errc::kUnauthorized);
  EXPECT_EQ(CodeOf(store().FindHostByTokenHash("")), Errc::kUnauthorized);
  EXPECT_EQ(CodeOf(store().GetHost(999)), Errc::kNotFound);

  auto host = store().GetHost(id);
  ASSERT_TRUE(host);
  EXPECT_EQ(host->registered_at, 10);
  EXPECT_EQ(host->last_seen_at, 10);
  ASSERT_TRUE(store().TouchHost(id, 77));
  EXPECT_EQ(store().GetHost(id)->last_seen_at, 77);
  EXPECT_EQ(store().GetHost(id)->registered_at, 10);
  EXPECT_EQ(CodeOf(store().TouchHost(999, 1)), Errc::kNotFound);

  auto count = store().CountHosts();
  ASSERT_TRUE(count);
  EXPECT_EQ(*count, 2);
}

TEST_F(SqliteStoreTest, AccountsConflictAndLookups) {
  auto admin = store().CreateAccount("root", "root-token", Role::kAdmin, 3);
  ASSERT_TRUE(admin) << admin.error().ToString();
  EXPECT_EQ(CodeOf(store().CreateAccount("root", "another-token", Role::kRecipient, 4)),
            Errc::kConflict);
  EXPECT_EQ(CodeOf(store().CreateAccount("", "t", Role::kRecipient, 4)), Errc::kInvalidArgument);

  auto found = store().FindAccountByTokenHash("root-token");
  ASSERT_TRUE(found) << found.error().ToString();
  EXPECT_EQ(found->id, *admin);
  EXPECT_EQ(found->name, "root");
  EXPECT_EQ(found->role, Role::kAdmin);
  EXPECT_EQ(found->created_at, 3);
  EXPECT_EQ(CodeOf(store().FindAccountByTokenHash("another-token")), Errc::kUnauthorized);
}

TEST_F(SqliteStoreTest, BlobIndexIsIdempotent) {
  BlobRecord blob{"cid-1", 100, 400, "model"};
  ASSERT_TRUE(store().RecordBlob(blob, 1));
  ASSERT_TRUE(store().RecordBlob(blob, 2));
  auto got = store().GetBlob("cid-1");
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(got->size, 100u);
  EXPECT_EQ(got->raw_size, 400u);
  EXPECT_EQ(got->kind, "model");

  // The same content id with other sizes is a caller bug.
  EXPECT_EQ(CodeOf(store().RecordBlob(BlobRecord{"cid-1", 101, 400, "model"}, 3)), Errc::kConflict);
  EXPECT_EQ(CodeOf(store().GetBlob("cid-2")), Errc::kNotFound);
  EXPECT_EQ(CodeOf(store().RecordBlob(
                BlobRecord{"huge", std::numeric_limits<std::uint64_t>::max(), 1, "data"}, 1)),
            Errc::kTooLarge);
  store_.reset();
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("SELECT COUNT(*) FROM blobs"), "1");
}

TEST_F(SqliteStoreTest, CatalogPublishConflicts) {
  CatalogEntry a{"mnist-mlp", "mlp", "blob-a", 1, "first", 10};
  ASSERT_TRUE(store().PublishModel(a));
  CatalogEntry again{"mnist-mlp", "mlp", "blob-b", 2, "second", 11};
  EXPECT_EQ(CodeOf(store().PublishModel(again)), Errc::kConflict);
  auto got = store().GetCatalogModel("mnist-mlp");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->blob_id, "blob-a");
  EXPECT_EQ(got->description, "first");
  EXPECT_EQ(CodeOf(store().GetCatalogModel("none")), Errc::kNotFound);

  ASSERT_TRUE(store().PublishModel(CatalogEntry{"a-first", "cnn", "blob-c", 3, "", 12}));
  auto list = store().ListCatalog();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a-first");
  EXPECT_EQ((*list)[1].name, "mnist-mlp");
}

TEST_F(SqliteStoreTest, CreateJobCreatesRoundZeroAndUnits) {
  std::int64_t job_id = MakeJob({kFinetune, kFinetune, kEval});
  auto job = store().GetJob(job_id);
  ASSERT_TRUE(job) << job.error().ToString();
  EXPECT_EQ(job->state, "running");
  EXPECT_EQ(job->current_round, 0);
  EXPECT_EQ(job->rounds, 3);
  EXPECT_EQ(job->lease_seconds, 600);
  EXPECT_EQ(job->account_id, Account());
  EXPECT_EQ(job->spec_json, R"({"rounds":3})");
  EXPECT_EQ(job->created_at, 100);

  auto round0 = store().GetRound(job_id, 0);
  ASSERT_TRUE(round0);
  EXPECT_EQ(round0->model_blob, "model-0");
  EXPECT_EQ(round0->momentum_blob, "");
  EXPECT_FALSE(round0->aggregated);
  EXPECT_EQ(CodeOf(store().GetRound(job_id, 1)), Errc::kNotFound);

  auto shards = store().ListShards(job_id);
  ASSERT_TRUE(shards);
  ASSERT_EQ(shards->size(), 4u);
  EXPECT_EQ((*shards)[0].kind, ShardKind::kTrain);
  EXPECT_EQ((*shards)[3].kind, ShardKind::kTest);
  EXPECT_EQ((*shards)[3].blob_id, "test-1");
  EXPECT_EQ(CodeOf(store().ListShards(job_id + 1)), Errc::kNotFound);

  auto summary = store().SummarizeRounds(job_id);
  ASSERT_TRUE(summary);
  ASSERT_EQ(summary->size(), 1u);
  EXPECT_EQ((*summary)[0].units_total, 3);
  EXPECT_EQ((*summary)[0].eval_total, 1);
  EXPECT_EQ((*summary)[0].units_done, 0);

  for (std::int64_t id = 1; id <= 3; ++id) {
    auto unit = store().GetUnit(id);
    ASSERT_TRUE(unit) << unit.error().ToString();
    EXPECT_EQ(unit->job_id, job_id);
    EXPECT_EQ(unit->state, UnitState::kPending);
    EXPECT_EQ(unit->attempt, 0);
    EXPECT_EQ(unit->seed, 7u);
  }
  EXPECT_EQ(CodeOf(store().GetUnit(4)), Errc::kNotFound);

  auto jobs = store().ListJobs(Account());
  ASSERT_TRUE(jobs);
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(store().ListJobs(Account() + 1)->empty());
  auto running = store().ListRunningJobIds();
  ASSERT_TRUE(running);
  EXPECT_EQ(*running, std::vector<std::int64_t>{job_id});
}

TEST_F(SqliteStoreTest, CreateJobIsAllOrNothing) {
  AddBlob("model-0", 1, "model");
  NewJob job;
  job.account_id = Account();
  job.name = "dup";
  job.rounds = 1;
  job.initial_model = "model-0";
  job.shards = {{ShardKind::kTrain, 0, "a", 1}, {ShardKind::kTrain, 0, "b", 1}};
  job.round0_units = {UnitPlan{kFinetune, 0, 1}};
  EXPECT_EQ(CodeOf(store().CreateJob(job)), Errc::kConflict);
  EXPECT_TRUE(store().ListJobs(Account())->empty());
  EXPECT_TRUE(store().ListRunningJobIds()->empty());

  job.shards = {{ShardKind::kTrain, 0, "a", 1}};
  job.round0_units = {UnitPlan{"mine_bitcoin", 0, 1}};
  EXPECT_EQ(CodeOf(store().CreateJob(job)), Errc::kInvalidArgument);
  job.round0_units = {UnitPlan{kFinetune, 0, 1}};
  job.lease_seconds = 0;
  EXPECT_EQ(CodeOf(store().CreateJob(job)), Errc::kInvalidArgument);
  EXPECT_TRUE(store().ListJobs(Account())->empty());
}

TEST_F(SqliteStoreTest, SeedKeepsAllSixtyFourBits) {
  AddBlob("m", 1, "model");
  NewJob job;
  job.account_id = Account();
  job.rounds = 1;
  job.initial_model = "m";
  job.shards = {{ShardKind::kTrain, 0, "m", 1}};
  job.round0_units = {UnitPlan{kFinetune, 0, 0xFFFFFFFFFFFFFFF0ull}};
  ASSERT_TRUE(store().CreateJob(job));
  EXPECT_EQ(store().GetUnit(1)->seed, 0xFFFFFFFFFFFFFFF0ull);
}

TEST_F(SqliteStoreTest, LeaseFollowsJobRoundIdOrderAndKinds) {
  std::int64_t job1 = MakeJob({kFinetune, kFinetune, kEval});  // units 1, 2, 3
  std::int64_t job2 = MakeJob({kFinetune});                    // unit 4
  std::int64_t host = AddHost("k1");

  RecordingSigner signer;
  auto eval = store().LeaseUnit(host, {kEval}, 1000, signer.Fn());
  ASSERT_TRUE(eval) << eval.error().ToString();
  ASSERT_TRUE(eval->has_value());
  const LeaseContext& c = **eval;
  EXPECT_EQ(c.unit.id, 3);
  EXPECT_EQ(c.unit.kind, kEval);
  EXPECT_EQ(c.unit.state, UnitState::kLeased);
  EXPECT_EQ(c.unit.attempt, 1);
  EXPECT_EQ(c.unit.host_id, host);
  EXPECT_EQ(c.unit.lease_deadline, 1600);
  EXPECT_EQ(c.unit.manifest_hash, "m-3-1");
  EXPECT_EQ(c.job.id, job1);
  EXPECT_EQ(c.model.id, "model-0");
  EXPECT_EQ(c.model.size, 1000u);
  EXPECT_EQ(c.data.id, "test-0");  // eval units read test shards
  EXPECT_EQ(c.data.size, 20u);
  // The signer saw the updated unit before its hash existed.
  ASSERT_TRUE(signer.last);
  EXPECT_EQ(signer.last->unit.attempt, 1);
  EXPECT_EQ(signer.last->unit.manifest_hash, "");
  EXPECT_EQ(store().GetUnit(3)->manifest_hash, "m-3-1");

  EXPECT_EQ(MustLease(host, {kEval, kFinetune}, 1000).unit.id, 1);
  LeaseContext second = MustLease(host, {kFinetune, kEval}, 1000);
  EXPECT_EQ(second.unit.id, 2);
  EXPECT_EQ(second.data.id, "train-1");
  LeaseContext fourth = MustLease(host, {kFinetune}, 1000);
  EXPECT_EQ(fourth.unit.id, 4);
  EXPECT_EQ(fourth.job.id, job2);

  for (const auto& kinds :
       std::vector<std::vector<std::string>>{{kFinetune, kEval}, {}, {"unknown_kind"}}) {
    auto none = store().LeaseUnit(host, kinds, 1000, PlainSigner());
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->has_value());
  }
}

TEST_F(SqliteStoreTest, LeaseSkipsJobsThatAreNotRunning) {
  std::int64_t job = MakeJob({kFinetune});
  ASSERT_TRUE(store().FailJob(job, "broken", 200));
  auto none = store().LeaseUnit(AddHost("k1"), {kFinetune}, 1000, PlainSigner());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST_F(SqliteStoreTest, ExpiredLeaseIsReissuedAndStaleResultRefused) {
  MakeJob({kFinetune}, /*lease_seconds=*/100);
  std::int64_t a = AddHost("a");
  std::int64_t b = AddHost("b");
  LeaseContext first = MustLease(a, {kFinetune}, 1000);
  EXPECT_EQ(first.unit.lease_deadline, 1100);

  // At the deadline the lease still holds; only strictly after it is the unit available.
  auto held = store().LeaseUnit(b, {kFinetune}, 1100, PlainSigner());
  ASSERT_TRUE(held);
  EXPECT_FALSE(held->has_value());

  LeaseContext second = MustLease(b, {kFinetune}, 1101);
  EXPECT_EQ(second.unit.id, first.unit.id);
  EXPECT_EQ(second.unit.attempt, 2);
  EXPECT_EQ(second.unit.host_id, b);
  EXPECT_EQ(second.unit.manifest_hash, "m-1-2");

  EXPECT_EQ(CodeOf(RecordValid(ResultFor(first.unit, "stale"))), Errc::kConflict);
  auto unit = store().GetUnit(first.unit.id);
  EXPECT_EQ(unit->state, UnitState::kLeased);
  EXPECT_TRUE(store().ListResults(first.unit.job_id, 0, kFinetune)->empty());

  auto accepted = RecordValid(ResultFor(second.unit, "fresh"));
  ASSERT_TRUE(accepted) << accepted.error().ToString();
  EXPECT_EQ(*accepted, RecordOutcome::kAccepted);
}

TEST_F(SqliteStoreTest, LateResultForExpiredButNotReissuedLeaseIsAccepted) {
  MakeJob({kFinetune}, /*lease_seconds=*/100);
  LeaseContext lease = MustLease(AddHost("a"), {kFinetune}, 1000);
  auto accepted = RecordValid(ResultFor(lease.unit, "late"));
  ASSERT_TRUE(accepted) << accepted.error().ToString();
  EXPECT_EQ(*accepted, RecordOutcome::kAccepted);
}

TEST_F(SqliteStoreTest, AReleasedLeaseIsOfferedToAnotherHostAtOnce) {
  MakeJob({kFinetune}, /*lease_seconds=*/600);
  std::int64_t a = AddHost("a");
  std::int64_t b = AddHost("b");
  LeaseContext first = MustLease(a, {kFinetune}, 1000);
  ASSERT_EQ(first.unit.lease_deadline, 1600);
  // Held: nobody else gets it before the deadline.
  auto held = store().LeaseUnit(b, {kFinetune}, 1010, PlainSigner());
  ASSERT_TRUE(held);
  EXPECT_FALSE(held->has_value());

  auto released =
      store().ReleaseLease(first.unit.id, a, first.unit.attempt, first.unit.manifest_hash, 1010);
  ASSERT_TRUE(released) << released.error().ToString();
  EXPECT_TRUE(*released);
  auto unit = store().GetUnit(first.unit.id);
  ASSERT_TRUE(unit);
  EXPECT_EQ(unit->state, UnitState::kLeased);
  EXPECT_EQ(unit->host_id, a);
  EXPECT_EQ(unit->attempt, first.unit.attempt);
  EXPECT_LT(unit->lease_deadline, 1010);

  // The same report again changes nothing.
  auto again =
      store().ReleaseLease(first.unit.id, a, first.unit.attempt, first.unit.manifest_hash, 1020);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  EXPECT_EQ(store().GetUnit(first.unit.id)->lease_deadline, unit->lease_deadline);

  // Another host gets the unit in the same second, as attempt + 1.
  LeaseContext second = MustLease(b, {kFinetune}, 1010);
  EXPECT_EQ(second.unit.id, first.unit.id);
  EXPECT_EQ(second.unit.host_id, b);
  EXPECT_EQ(second.unit.attempt, first.unit.attempt + 1);
  EXPECT_EQ(second.unit.lease_deadline, 1610);

  // Now a's report is stale: refused, b's lease untouched.
  auto stale =
      store().ReleaseLease(first.unit.id, a, first.unit.attempt, first.unit.manifest_hash, 1020);
  ASSERT_TRUE(stale);
  EXPECT_FALSE(*stale);
  unit = store().GetUnit(first.unit.id);
  EXPECT_EQ(unit->host_id, b);
  EXPECT_EQ(unit->attempt, second.unit.attempt);
  EXPECT_EQ(unit->lease_deadline, 1610);
  // ... and a's late result for the released lease is refused too.
  EXPECT_EQ(CodeOf(RecordValid(ResultFor(first.unit, "given-up"))), Errc::kConflict);
}

TEST_F(SqliteStoreTest, AHostIsNeverOfferedAUnitItGaveUpAndGiveUpsAreCounted) {
  MakeJob({kFinetune}, /*lease_seconds=*/600);
  const std::int64_t a = AddHost("a");
  const std::int64_t b = AddHost("b");
  const std::int64_t c = AddHost("c");
  LeaseContext first = MustLease(a, {kFinetune}, 1000);
  EXPECT_EQ(*store().CountGiveUps(first.unit.id), 0);
  ASSERT_TRUE(
      *store().ReleaseLease(first.unit.id, a, first.unit.attempt, first.unit.manifest_hash, 1010));
  EXPECT_EQ(*store().CountGiveUps(first.unit.id), 1);
  // a asks again: not that unit (even after its old deadline).
  auto again = store().LeaseUnit(a, {kFinetune}, 5000, PlainSigner());
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->has_value() && (*again)->unit.id == first.unit.id);
  LeaseContext second = MustLease(b, {kFinetune}, 1010);
  ASSERT_EQ(second.unit.id, first.unit.id);
  ASSERT_TRUE(*store().ReleaseLease(second.unit.id, b, second.unit.attempt,
                                    second.unit.manifest_hash, 1020));
  EXPECT_EQ(*store().CountGiveUps(first.unit.id), 2);
  // A repeated report counts nothing more.
  EXPECT_FALSE(*store().ReleaseLease(second.unit.id, b, second.unit.attempt,
                                     second.unit.manifest_hash, 1030));
  EXPECT_EQ(*store().CountGiveUps(first.unit.id), 2);
  LeaseContext third = MustLease(c, {kFinetune}, 1030);
  EXPECT_EQ(third.unit.id, first.unit.id);
  EXPECT_EQ(CodeOf(store().CountGiveUps(999)), Errc::kNotFound);
}

TEST_F(SqliteStoreTest, ReleaseLeaseChangesNothingUnlessItNamesTheCurrentLease) {
  MakeJob({kFinetune});
  std::int64_t a = AddHost("a");
  std::int64_t b = AddHost("b");
  const LeaseContext lease = MustLease(a, {kFinetune}, 1000);
  const UnitRecord& u = lease.unit;
  struct Case {
    const char* what;
    std::int64_t host;
    int attempt;
    std::string hash;
  };
  for (const Case& c : {Case{"another host", b, u.attempt, u.manifest_hash},
                        Case{"an earlier attempt", a, u.attempt - 1, u.manifest_hash},
                        Case{"a later attempt", a, u.attempt + 1, u.manifest_hash},
                        Case{"another manifest", a, u.attempt, u.manifest_hash + "x"},
                        Case{"no manifest", a, u.attempt, ""}}) {
    auto released = store().ReleaseLease(u.id, c.host, c.attempt, c.hash, 1100);
    ASSERT_TRUE(released) << c.what << ": " << released.error().ToString();
    EXPECT_FALSE(*released) << c.what;
    auto unit = store().GetUnit(u.id);
    ASSERT_TRUE(unit);
    EXPECT_EQ(unit->state, UnitState::kLeased) << c.what;
    EXPECT_EQ(unit->host_id, a) << c.what;
    EXPECT_EQ(unit->attempt, u.attempt) << c.what;
    EXPECT_EQ(unit->lease_deadline, u.lease_deadline) << c.what;
    EXPECT_EQ(unit->manifest_hash, u.manifest_hash) << c.what;
  }
  auto still_held = store().LeaseUnit(b, {kFinetune}, 1100, PlainSigner());
  ASSERT_TRUE(still_held);
  EXPECT_FALSE(still_held->has_value());
  // Past its deadline the lease has expired by itself: nothing to release.
  auto expired = store().ReleaseLease(u.id, a, u.attempt, u.manifest_hash, u.lease_deadline + 1);
  ASSERT_TRUE(expired);
  EXPECT_FALSE(*expired);
  EXPECT_EQ(store().GetUnit(u.id)->lease_deadline, u.lease_deadline);

  EXPECT_EQ(CodeOf(store().ReleaseLease(999, a, 1, u.manifest_hash, 1100)), Errc::kNotFound);

  // A pending unit has no lease to release.
  MakeJob({kFinetune});
  auto pending = store().GetUnit(2);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->state, UnitState::kPending);
  auto none = store().ReleaseLease(2, a, 0, "", 1100);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  // Done: the result stands and the unit stays done.
  ASSERT_TRUE(RecordValid(ResultFor(u, "done")));
  auto done = store().ReleaseLease(u.id, a, u.attempt, u.manifest_hash, 1100);
  ASSERT_TRUE(done);
  EXPECT_FALSE(*done);
  auto unit = store().GetUnit(u.id);
  EXPECT_EQ(unit->state, UnitState::kDone);
  EXPECT_EQ(unit->lease_deadline, u.lease_deadline);
}

TEST_F(SqliteStoreTest, SignFailureRollsBackTheLease) {
  MakeJob({kFinetune});
  std::int64_t host = AddHost("a");
  auto failed = store().LeaseUnit(host, {kFinetune}, 1000, [](const LeaseContext&) {
    return Result<std::string>(common::MakeError(Errc::kUnavailable, "signer offline"));
  });
  EXPECT_EQ(CodeOf(failed), Errc::kUnavailable);
  auto threw = store().LeaseUnit(
      host, {kFinetune}, 1000,
      [](const LeaseContext&) -> Result<std::string> { throw std::runtime_error("boom"); });
  EXPECT_EQ(CodeOf(threw), Errc::kInternal);

  auto unit = store().GetUnit(1);
  ASSERT_TRUE(unit);
  EXPECT_EQ(unit->state, UnitState::kPending);
  EXPECT_EQ(unit->attempt, 0);
  EXPECT_EQ(unit->host_id, 0);
  EXPECT_EQ(unit->lease_deadline, 0);
  EXPECT_EQ(unit->manifest_hash, "");

  EXPECT_EQ(MustLease(host, {kFinetune}, 1000).unit.attempt, 1);
}

TEST_F(SqliteStoreTest, LeaseFailsCleanlyWhenModelBlobIsUnknown) {
  AddBlob("train", 1, "data");
  NewJob job;
  job.account_id = Account();
  job.rounds = 1;
  job.initial_model = "never-recorded";
  job.shards = {{ShardKind::kTrain, 0, "train", 1}};
  job.round0_units = {UnitPlan{kFinetune, 0, 1}};
  auto id = store().CreateJob(job);
  ASSERT_TRUE(id);
  Admit(*id);
  EXPECT_EQ(CodeOf(store().LeaseUnit(AddHost("k"), {kFinetune}, 1000, PlainSigner())),
            Errc::kInternal);
  EXPECT_EQ(store().GetUnit(1)->state, UnitState::kPending);
}

TEST_F(SqliteStoreTest, RecordResultAcceptedDuplicateConflictAndWrongLease) {
  std::int64_t job = MakeJob({kFinetune, kFinetune});
  std::int64_t a = AddHost("a");
  std::int64_t b = AddHost("b");

  ResultRecord unknown;
  unknown.unit_id = 99;
  EXPECT_EQ(CodeOf(RecordValid(unknown)), Errc::kNotFound);

  // Unit 2 was never leased.
  auto pending = store().GetUnit(2);
  EXPECT_EQ(CodeOf(RecordValid(ResultFor(*pending, "x"))), Errc::kConflict);

  LeaseContext lease = MustLease(a, {kFinetune}, 1000);
  ResultRecord wrong_host = ResultFor(lease.unit, "wrong-host");
  wrong_host.host_id = b;
  EXPECT_EQ(CodeOf(RecordValid(wrong_host)), Errc::kConflict);
  ResultRecord wrong_attempt = ResultFor(lease.unit, "wrong-attempt");
  wrong_attempt.attempt = 2;
  EXPECT_EQ(CodeOf(RecordValid(wrong_attempt)), Errc::kConflict);
  EXPECT_EQ(store().GetUnit(lease.unit.id)->state, UnitState::kLeased);

  ResultRecord good = ResultFor(lease.unit, "good", 0.25, 0.9, 64);
  // What the caller claims about job, round and kind is ignored.
  good.job_id = 12345;
  good.round = 7;
  good.kind = kEval;
  auto accepted = RecordValid(good);
  ASSERT_TRUE(accepted) << accepted.error().ToString();
  EXPECT_EQ(*accepted, RecordOutcome::kAccepted);
  EXPECT_EQ(store().GetUnit(lease.unit.id)->state, UnitState::kDone);

  auto dup = RecordValid(good);
  ASSERT_TRUE(dup) << dup.error().ToString();
  EXPECT_EQ(*dup, RecordOutcome::kDuplicate);

  ResultRecord other = ResultFor(lease.unit, "other", 9.0);
  EXPECT_EQ(CodeOf(RecordValid(other)), Errc::kConflict);

  auto results = store().ListResults(job, 0, kFinetune);
  ASSERT_TRUE(results);
  ASSERT_EQ(results->size(), 1u);
  const ResultRecord& stored = (*results)[0];
  EXPECT_EQ(stored.unit_id, lease.unit.id);
  EXPECT_EQ(stored.job_id, job);
  EXPECT_EQ(stored.round, 0);
  EXPECT_EQ(stored.kind, kFinetune);
  EXPECT_EQ(stored.host_id, a);
  EXPECT_EQ(stored.attempt, 1);
  EXPECT_EQ(stored.envelope_hash, "hash-good");
  EXPECT_EQ(stored.envelope_json, "good");
  EXPECT_EQ(stored.update_blob, "update-good");
  EXPECT_DOUBLE_EQ(stored.loss, 0.25);
  EXPECT_DOUBLE_EQ(stored.accuracy, 0.9);
  EXPECT_DOUBLE_EQ(stored.first_loss, 2.0);
  EXPECT_EQ(stored.samples, 64);
  EXPECT_DOUBLE_EQ(stored.wall_seconds, 1.5);
  EXPECT_EQ(stored.received_at, 500);
  EXPECT_TRUE(store().ListResults(job, 0, kEval)->empty());
  EXPECT_EQ(store().ListResults(job, 0, "")->size(), 1u);

  store_.reset();
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("SELECT COUNT(*) FROM results"), "1");
}

TEST_F(SqliteStoreTest, NanLossSurvivesTheRoundTripAndPoisonsTheMean) {
  std::int64_t job = MakeJob({kFinetune, kFinetune});
  std::int64_t host = AddHost("a");
  LeaseContext l1 = MustLease(host, {kFinetune}, 1000);
  LeaseContext l2 = MustLease(host, {kFinetune}, 1000);
  ASSERT_TRUE(RecordValid(ResultFor(l1.unit, "e1", 1.0)));
  ASSERT_TRUE(RecordValid(ResultFor(l2.unit, "e2", std::numeric_limits<double>::quiet_NaN())));
  auto results = store().ListResults(job, 0, kFinetune);
  ASSERT_EQ(results->size(), 2u);
  EXPECT_TRUE(std::isnan((*results)[1].loss));
  auto summary = store().SummarizeRounds(job);
  ASSERT_TRUE(summary);
  EXPECT_TRUE(std::isnan((*summary)[0].train_loss));
}

TEST_F(SqliteStoreTest, AdvanceRoundOnlyOnce) {
  std::int64_t job = MakeJob({kFinetune});
  RoundAdvance advance;
  advance.job_id = job;
  advance.from_round = 0;
  advance.next_model = "model-1";
  advance.next_momentum = "momentum-1";
  advance.next_units = {UnitPlan{kFinetune, 0, 11}, UnitPlan{kEval, 1, 12}};
  advance.now = 300;

  auto bad = advance;
  bad.next_units.push_back(UnitPlan{"bogus", 0, 0});
  EXPECT_EQ(CodeOf(store().AdvanceRound(bad)), Errc::kInvalidArgument);
  EXPECT_FALSE(store().GetRound(job, 0)->aggregated);

  auto first = store().AdvanceRound(advance);
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_TRUE(*first);
  auto again = store().AdvanceRound(advance);
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_FALSE(*again);

  auto missing = advance;
  missing.from_round = 5;
  EXPECT_FALSE(*store().AdvanceRound(missing));

  EXPECT_TRUE(store().GetRound(job, 0)->aggregated);
  auto round1 = store().GetRound(job, 1);
  ASSERT_TRUE(round1);
  EXPECT_EQ(round1->model_blob, "model-1");
  EXPECT_EQ(round1->momentum_blob, "momentum-1");
  EXPECT_FALSE(round1->aggregated);
  EXPECT_EQ(CodeOf(store().GetRound(job, 2)), Errc::kNotFound);
  auto record = store().GetJob(job);
  EXPECT_EQ(record->current_round, 1);
  EXPECT_EQ(record->updated_at, 300);

  auto summary = store().SummarizeRounds(job);
  ASSERT_TRUE(summary);
  ASSERT_EQ(summary->size(), 2u);
  EXPECT_EQ((*summary)[1].round, 1);
  EXPECT_EQ((*summary)[1].units_total, 2);
  EXPECT_EQ((*summary)[1].eval_total, 1);
  auto unit = store().GetUnit(3);
  ASSERT_TRUE(unit);
  EXPECT_EQ(unit->round, 1);
  EXPECT_EQ(unit->seed, 12u);
  EXPECT_EQ(CodeOf(store().GetUnit(4)), Errc::kNotFound);
}

TEST_F(SqliteStoreTest, SummarizeRoundsComputesFigures) {
  std::int64_t job = MakeJob({kFinetune, kFinetune, kEval, kEval});
  std::int64_t a = AddHost("a");
  std::int64_t b = AddHost("b");
  LeaseContext ft1 = MustLease(a, {kFinetune}, 1000);
  LeaseContext ft2 = MustLease(b, {kFinetune}, 1000);
  LeaseContext ev1 = MustLease(a, {kEval}, 1000);
  LeaseContext ev2 = MustLease(a, {kEval}, 1000);
  ASSERT_TRUE(RecordValid(ResultFor(ft1.unit, "f1", 1.0, 0, 100)));
  ASSERT_TRUE(RecordValid(ResultFor(ev1.unit, "e1", 0.5, 0.8, 100)));

  auto partial = store().SummarizeRounds(job);
  ASSERT_TRUE(partial) << partial.error().ToString();
  ASSERT_EQ(partial->size(), 1u);
  EXPECT_EQ((*partial)[0].units_done, 2);
  EXPECT_EQ((*partial)[0].eval_done, 1);
  EXPECT_DOUBLE_EQ((*partial)[0].eval_loss, 0.5);
  EXPECT_DOUBLE_EQ((*partial)[0].train_loss, 1.0);

  ASSERT_TRUE(RecordValid(ResultFor(ft2.unit, "f2", 3.0, 0, 100)));
  ASSERT_TRUE(RecordValid(ResultFor(ev2.unit, "e2", 1.0, 0.5, 300)));
  auto summary = store().SummarizeRounds(job);
  ASSERT_TRUE(summary);
  ASSERT_EQ(summary->size(), 1u);
  const RoundSummary& s = (*summary)[0];
  EXPECT_EQ(s.round, 0);
  EXPECT_EQ(s.model_blob, "model-0");
  EXPECT_FALSE(s.aggregated);
  EXPECT_EQ(s.units_total, 4);
  EXPECT_EQ(s.units_done, 4);
  EXPECT_EQ(s.eval_total, 2);
  EXPECT_EQ(s.eval_done, 2);
  EXPECT_EQ(s.eval_samples, 400);
  EXPECT_DOUBLE_EQ(s.eval_loss, (0.5 * 100 + 1.0 * 300) / 400);
  EXPECT_DOUBLE_EQ(s.eval_accuracy, (0.8 * 100 + 0.5 * 300) / 400);
  EXPECT_DOUBLE_EQ(s.train_loss, 2.0);

  auto hosts = store().CountJobHosts(job);
  ASSERT_TRUE(hosts);
  EXPECT_EQ(*hosts, 2);
  EXPECT_EQ(CodeOf(store().SummarizeRounds(job + 1)), Errc::kNotFound);
}

TEST_F(SqliteStoreTest, FinishJobPublishesAtomically) {
  std::int64_t job = MakeJob({kFinetune});
  ASSERT_TRUE(store().PublishModel(CatalogEntry{"taken", "mlp", "x", 0, "", 1}));

  auto clash =
      store().FinishJob(job, "final", CatalogEntry{"taken", "mlp", "final", job, "", 9}, 900);
  EXPECT_EQ(CodeOf(clash), Errc::kConflict);
  auto still = store().GetJob(job);
  EXPECT_EQ(still->state, "running");
  EXPECT_EQ(still->final_model, "");
  EXPECT_EQ(store().GetCatalogModel("taken")->blob_id, "x");

  auto done =
      store().FinishJob(job, "final", CatalogEntry{"fresh", "mlp", "final", job, "d", 9}, 900);
  ASSERT_TRUE(done) << done.error().ToString();
  EXPECT_TRUE(*done);
  auto finished = store().GetJob(job);
  EXPECT_EQ(finished->state, "done");
  EXPECT_EQ(finished->final_model, "final");
  EXPECT_EQ(finished->updated_at, 900);
  EXPECT_EQ(store().GetCatalogModel("fresh")->source_job, job);
  EXPECT_TRUE(store().ListRunningJobIds()->empty());

  auto twice = store().FinishJob(job, "other", std::nullopt, 901);
  ASSERT_TRUE(twice);
  EXPECT_FALSE(*twice);
  EXPECT_EQ(store().GetJob(job)->final_model, "final");
  EXPECT_EQ(CodeOf(store().FinishJob(job + 1, "x", std::nullopt, 1)), Errc::kNotFound);
  EXPECT_EQ(CodeOf(store().FailJob(job, "too late", 950)), Errc::kConflict);
}

TEST_F(SqliteStoreTest, FailJob) {
  std::int64_t job = MakeJob({kFinetune});
  ASSERT_TRUE(store().FailJob(job, "diverged", 400));
  ASSERT_TRUE(store().FailJob(job, "again", 401));
  auto failed = store().GetJob(job);
  EXPECT_EQ(failed->state, "failed");
  EXPECT_EQ(failed->error, "diverged");
  EXPECT_EQ(failed->updated_at, 400);
  EXPECT_FALSE(*store().FinishJob(job, "m", std::nullopt, 500));
  EXPECT_EQ(CodeOf(store().FailJob(job + 1, "x", 1)), Errc::kNotFound);
}

TEST_F(SqliteStoreTest, ParallelLeasesNeverShareAUnit) {
  constexpr int kUnits = 200;
  constexpr int kThreads = 4;
  std::vector<std::string> kinds(kUnits, kFinetune);
  kinds[7] = kEval;
  MakeJob(kinds);
  std::vector<std::int64_t> hosts;
  for (int t = 0; t < kThreads; ++t) hosts.push_back(AddHost("h" + std::to_string(t)));

  std::mutex mu;
  std::vector<std::int64_t> leased;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (;;) {
        auto got = store().LeaseUnit(hosts[t], {kFinetune, kEval}, 1000, PlainSigner());
        std::lock_guard lock(mu);
        if (!got) {
          errors.push_back(got.error().ToString());
          return;
        }
        if (!got->has_value()) return;
        EXPECT_EQ((*got)->unit.host_id, hosts[t]);
        leased.push_back((*got)->unit.id);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(leased.size(), static_cast<std::size_t>(kUnits));
  EXPECT_EQ(std::set<std::int64_t>(leased.begin(), leased.end()).size(),
            static_cast<std::size_t>(kUnits));
  for (std::int64_t id : {std::int64_t{1}, std::int64_t{kUnits}}) {
    auto unit = store().GetUnit(id);
    ASSERT_TRUE(unit);
    EXPECT_EQ(unit->attempt, 1);
  }
}

}  // namespace
}  // namespace ubcp::coordinator

namespace ubcp::coordinator {
namespace {

// Validation by replication in the store: a work settles its quorum at its first lease, its
// replicas avoid hosts that already hold one, and a caught host loses its unfinished results
// and their credit.
class ReplicationStoreTest : public SqliteStoreTest {
 protected:
  // A running job with the given works (train shards 0/1 alternate), priced `price` credits.
  std::int64_t MakeWorks(const std::vector<UnitPlan>& units, std::int64_t price) {
    AddBlob("model-0", 1000, "model");
    AddBlob("train-0", 10, "data");
    AddBlob("train-1", 11, "data");
    NewJob job;
    job.account_id = Account();
    job.name = "replicated";
    job.spec_json = "{}";
    job.model_spec = "mlp";
    job.rounds = 1;
    job.shards = {{ShardKind::kTrain, 0, "train-0", 100}, {ShardKind::kTrain, 1, "train-1", 100}};
    job.initial_model = "model-0";
    job.round0_units = units;
    job.price_credits = price;
    job.now = 100;
    EXPECT_TRUE(
        store().PostLedger(Transfer("grant:t", LedgerKind::kGrant, std::string(kIssuanceAccount),
                                    RecipientAccount(Account()), price, 50)));
    auto id = store().CreateJob(job);
    EXPECT_TRUE(id) << id.error().ToString();
    Admit(*id);
    return *id;
  }
  static ResultRecord Paid(const UnitRecord& unit, const std::string& envelope) {
    ResultRecord r = ResultFor(unit, envelope);
    r.credits = 10;
    return r;
  }
};

TEST_F(ReplicationStoreTest, TheFirstLeaseSettlesTheQuorumAndReplicasAvoidItsHost) {
  const std::int64_t job = MakeWorks({UnitPlan{kFinetune, 0, 1, 2, true}}, 100);
  const std::int64_t a = AddHost("a"), b = AddHost("b");
  // A trusted host would settle the quorum to 1; the rule asked says 2 stays.
  int asked = 0;
  auto first = store().LeaseUnit(a, {kFinetune}, 1000, PlainSigner(),
                                 [&](const WorkRecord& work, const HostRecord& host) {
                                   ++asked;
                                   EXPECT_EQ(host.id, a);
                                   EXPECT_EQ(work.quorum, 2);
                                   return 5;  // more than planned: clamped to the plan
                                 });
  ASSERT_TRUE(first && first->has_value());
  EXPECT_EQ(asked, 1);
  EXPECT_EQ((*first)->work.quorum, 2);
  EXPECT_TRUE((*first)->work.settled);
  // The replica exists now, but not for the host that holds the first unit.
  auto again = store().LeaseUnit(a, {kFinetune}, 1000, PlainSigner());
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->has_value());
  auto replica = store().LeaseUnit(b, {kFinetune}, 1000, PlainSigner());
  ASSERT_TRUE(replica && replica->has_value());
  EXPECT_EQ((*replica)->unit.work_id, (*first)->unit.work_id);
  EXPECT_NE((*replica)->unit.id, (*first)->unit.id);
  EXPECT_EQ(asked, 1);  // settled once
  (void)job;
}

TEST_F(ReplicationStoreTest, AFirstLeaseByATrustedHostCanDropTheReplica) {
  MakeWorks({UnitPlan{kFinetune, 0, 1, 2, true}}, 100);
  const std::int64_t a = AddHost("a"), b = AddHost("b");
  auto first = store().LeaseUnit(a, {kFinetune}, 1000, PlainSigner(),
                                 [](const WorkRecord&, const HostRecord&) { return 1; });
  ASSERT_TRUE(first && first->has_value());
  EXPECT_EQ((*first)->work.quorum, 1);
  auto none = store().LeaseUnit(b, {kFinetune}, 1000, PlainSigner());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST_F(ReplicationStoreTest, ACaughtHostLosesItsUnfinishedResultsAndTheirCredit) {
  const std::int64_t job =
      MakeWorks({UnitPlan{kFinetune, 0, 1, 1, false}, UnitPlan{kFinetune, 1, 2, 2, false},
                 UnitPlan{kFinetune, 0, 3, 1, false}},
                100);
  const std::int64_t cheat = AddHost("cheat"), h1 = AddHost("h1"), h2 = AddHost("h2");

  // The cheater's first result stands alone (quorum 1): valid and paid at once.
  const LeaseContext w1 = MustLease(cheat, {kFinetune}, 1000);
  ASSERT_TRUE(RecordValid(Paid(w1.unit, "w1-cheat")));
  EXPECT_EQ(*store().Balance(DonorAccount(cheat)), 10);
  // Its second disagrees with an honest replica.
  const LeaseContext w2 = MustLease(cheat, {kFinetune}, 1000);
  // It also holds a third unit when it is caught.
  const LeaseContext w3 = MustLease(cheat, {kFinetune}, 1000);
  const LeaseContext w2b = MustLease(h1, {kFinetune}, 1000);
  ASSERT_EQ(w2.unit.work_id, w2b.unit.work_id);
  ASSERT_TRUE(store().RecordResult(Paid(w2.unit, "w2-cheat")));
  ASSERT_TRUE(store().RecordResult(Paid(w2b.unit, "w2-honest")));
  EXPECT_EQ(*store().Balance(DonorAccount(cheat)), 10);  // pending results are not paid
  EXPECT_EQ(*store().Balance(DonorAccount(h1)), 0);

  WorkJudgement j;
  j.work_id = w2.unit.work_id;
  j.valid = {w2b.unit.id};
  j.invalid = {w2.unit.id};
  j.units_seen = 2;
  j.ban_after = 1;
  j.now = 2000;
  auto out = store().ResolveWork(j);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->credited, 1);
  EXPECT_EQ(out->reversed, 1);
  EXPECT_EQ(out->discarded, 1);
  EXPECT_EQ(out->banned_hosts, std::vector<std::int64_t>{cheat});
  // The same judgement again is refused: the results it names are judged.
  EXPECT_EQ(CodeOf(store().ResolveWork(j)), Errc::kConflict);

  // The reversal took the points back and returned the spend to the job.
  EXPECT_EQ(*store().Balance(DonorAccount(cheat)), 0);
  EXPECT_EQ(*store().Balance(DonorAccount(h1)), 10);
  EXPECT_EQ(*store().Balance(JobAccount(job)), 90);
  auto host = store().GetHost(cheat);
  EXPECT_EQ(host->offences, 1);
  EXPECT_EQ(host->banned_at, 2000);
  EXPECT_EQ(host->valid_streak, 0);
  EXPECT_EQ(store().GetHost(h1)->valid_streak, 1);
  // Work 1 is open again with a fresh unit, which the cheater can never get back.
  auto w1_work = store().GetWork(w1.unit.work_id);
  EXPECT_EQ(w1_work->state, WorkState::kOpen);
  EXPECT_EQ(w1_work->canonical_unit, 0);
  auto listed = store().WorkResults(w1.unit.work_id);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->second, 2);
  EXPECT_EQ(listed->first.at(0).status, ResultStatus::kInvalid);
  EXPECT_EQ(CodeOf(store().LeaseUnit(cheat, {kFinetune}, 1000, PlainSigner())), Errc::kForbidden);
  // What the banned host held is released at once, before its lease would expire.
  EXPECT_EQ(store().GetUnit(w3.unit.id)->state, UnitState::kPending);
  const LeaseContext released = MustLease(h2, {kFinetune}, 1000);
  EXPECT_EQ(released.unit.id, w3.unit.id);
  const LeaseContext redo = MustLease(h2, {kFinetune}, 1000);
  EXPECT_EQ(redo.unit.work_id, w1.unit.work_id);
  EXPECT_NE(redo.unit.id, w1.unit.id);
  // Only work 2's canonical result counts for aggregation now.
  auto canonical = store().ListResults(job, 0, kFinetune);
  ASSERT_TRUE(canonical);
  ASSERT_EQ(canonical->size(), 1u);
  EXPECT_EQ(canonical->front().unit_id, w2b.unit.id);

  auto problems = store().CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
  EXPECT_EQ(store().TotalsBetween(0, 10000)->reversed, 10);
}

}  // namespace
}  // namespace ubcp::coordinator

namespace ubcp::coordinator {
namespace {

// A database written by the previous release (schema version 2) keeps its data across the
// migration to works, pending results and the wider ledger: each old unit becomes a work of
// quorum 1, an old result a valid canonical one, and the ledger stays sound.
TEST(SqliteMigrationTest, AVersionTwoDatabaseMigratesWithItsData) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ubcp-migrate-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto path = dir / "coordinator.db";
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
    auto exec = [&](const char* sql) {
      char* err = nullptr;
      EXPECT_EQ(sqlite3_exec(raw, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
      sqlite3_free(err);
    };
    exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
    for (const auto& m : sqlite::kMigrations) {
      if (m.version > 2) continue;
      exec(m.sql);
      exec(("INSERT INTO schema_version VALUES (" + std::to_string(m.version) + ", 0)").c_str());
    }
    exec(R"sql(
INSERT INTO accounts (id, name, token_hash, role, created_at) VALUES (1, 'alice', 'th', 'recipient', 1);
INSERT INTO hosts (id, public_key, name, token_hash, benchmark_json, capabilities_json,
                   registered_at, last_seen_at) VALUES (1, 'pk', 'h', 'ht', '{}', '{}', 1, 1);
INSERT INTO jobs (id, account_id, name, spec_json, model_spec, state, rounds, current_round,
                  lease_seconds, created_at, updated_at, price_credits)
  VALUES (1, 1, 'j', '{}', 'mlp', 'running', 1, 0, 600, 1, 1, 30);
INSERT INTO rounds (job_id, round, model_blob, created_at) VALUES (1, 0, 'm', 1);
INSERT INTO blobs (id, size, raw_size, kind, created_at) VALUES ('m', 1, 1, 'model', 1),
  ('s1', 1, 1, 'data', 1);
INSERT INTO job_shards (job_id, kind, shard_index, blob_id, samples) VALUES (1, 'train', 1, 's1', 10);
INSERT INTO units (id, job_id, round, kind, shard_index, state, attempt, host_id, seed)
  VALUES (1, 1, 0, 'finetune_shard', 0, 'done', 1, 1, 5),
         (2, 1, 0, 'finetune_shard', 1, 'pending', 0, 0, 6);
INSERT INTO results (unit_id, job_id, round, kind, host_id, attempt, envelope_hash,
                     envelope_json, update_blob, loss, accuracy, first_loss, samples,
                     wall_seconds, received_at, credits)
  VALUES (1, 1, 0, 'finetune_shard', 1, 1, 'eh', '{}', 'u', 1.0, 0, 2.0, 10, 1.0, 5, 10);
INSERT INTO ledger_txns (key, kind, job_id, host_id, at) VALUES
  ('grant:g', 'grant', 0, 0, 1), ('reserve:job:1', 'reserve', 1, 0, 2),
  ('spend:unit:1', 'spend', 1, 1, 5), ('points:unit:1', 'points', 1, 1, 5);
INSERT INTO ledger_entries (txn_key, account, amount) VALUES
  ('grant:g', 'issuance', -100), ('grant:g', 'recipient:1', 100),
  ('reserve:job:1', 'recipient:1', -30), ('reserve:job:1', 'job:1', 30),
  ('spend:unit:1', 'job:1', -10), ('spend:unit:1', 'spent', 10),
  ('points:unit:1', 'points', -10), ('points:unit:1', 'donor:1', 10);
)sql");
    sqlite3_close(raw);
  }
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store) << store.error().ToString();
  Store& s = **store;
  auto done = s.GetWork(1);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->state, WorkState::kValid);
  EXPECT_EQ(done->canonical_unit, 1);
  EXPECT_EQ(done->quorum, 1);
  EXPECT_EQ(s.GetWork(2)->state, WorkState::kOpen);
  EXPECT_EQ(s.GetUnit(2)->work_id, 2);
  auto results = s.ListResults(1, 0, "finetune_shard");
  ASSERT_TRUE(results);
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ(results->front().status, ResultStatus::kValid);
  EXPECT_EQ(*s.Balance("job:1"), 20);
  EXPECT_EQ(*s.Balance("donor:1"), 10);
  auto problems = s.CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
  // The old host belongs to no account yet; it keeps working.
  EXPECT_EQ(s.GetHost(1)->account_id, 0);
  auto leased = s.LeaseUnit(1, {"finetune_shard"}, 10, [](const LeaseContext&) {
    return Result<std::string>(std::string("mh"));
  });
  ASSERT_TRUE(leased) << leased.error().ToString();
  ASSERT_TRUE(leased->has_value());
  EXPECT_EQ((*leased)->unit.id, 2);
  EXPECT_EQ((*leased)->work.quorum, 1);
  store->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ubcp::coordinator
