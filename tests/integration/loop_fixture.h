// SPDX-License-Identifier: Apache-2.0
#pragma once
// The integration tests' fixture: a real coordinator (SQLite store, blob store, service, API)
// behind the real HTTPS server on 127.0.0.1, a clock the test can move, a recipient account with
// credits, and real donors (key, trust, registration) made on demand.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/https_client.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/runner.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/api.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/coordinator_service.h"
#include "ubcp/coordinator/http_server.h"
#include "ubcp/coordinator/ledger.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::itest {
namespace fs = std::filesystem;

inline client::BenchmarkReport TinyBenchmark() {
  client::BenchmarkReport r;
  r.matmul_gflops = 1;
  r.cpu_threads = 1;
  r.torch_version = common::TorchVersion();
  return r;
}

inline std::string DigitsJob(int rounds) {
  common::JobSpec spec;
  spec.name = "digits mlp";
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = rounds;
  spec.units_per_round = 2;
  spec.eval_units = 1;
  spec.params = {30, 32, 0.05, 0.9, 0.0, "sgd", 5};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  spec.deadline_s = 120;
  return common::SerializeJobSpec(spec);
}

// A coordinator on 127.0.0.1 with a clock the test can move forward.
class LoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::InitCrypto());
    dir_ = fs::temp_directory_path() /
           ("ubcp-loop-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto store = coordinator::OpenSqliteStore(dir_ / "coordinator.db");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
    auto blobs = coordinator::BlobStore::Open(dir_ / "blobs");
    ASSERT_TRUE(blobs);
    blobs_.emplace(std::move(*blobs));
    signing_key_.emplace(common::SigningKey::Generate());
    now_ = coordinator::SystemClockSeconds();
    config_.datasets.cache_dir = dir_ / "cache";
    config_.economy.period_seconds = 3600;
    config_.economy.bootstrap_forecast_credits = 2'000'000'000;
    // Every work computed once unless a test asks for replication (Configure).
    config_.replication = coordinator::NoReplication();
    Configure(config_);
    service_ = std::make_unique<coordinator::Coordinator>(
        *store_, *blobs_, *signing_key_, [this] { return now_.load(); }, config_);
    api_ = std::make_unique<coordinator::Api>(*service_, 1 << 20);
    ASSERT_TRUE(coordinator::EnsureSelfSignedCertificate(dir_ / "cert.pem", dir_ / "key.pem"));
    coordinator::ServerOptions options;
    options.cert_file = dir_ / "cert.pem";
    options.key_file = dir_ / "key.pem";
    auto server = coordinator::HttpsServer::Create(
        options, [this](const coordinator::HttpRequest& r) { return api_->Handle(r); },
        [this](std::string_view m, std::string_view t) { return api_->BodyLimit(m, t); });
    ASSERT_TRUE(server) << server.error().ToString();
    server_ = std::move(*server);
    server_thread_ = std::thread([this] { server_->Run(false); });
    token_ = common::NewToken();
    auto alice = store_->CreateAccount("alice", common::TokenHash(token_),
                                       coordinator::Role::kRecipient, now_);
    ASSERT_TRUE(alice);
    alice_id_ = *alice;
    // Enough credits for every job these tests run (the economy has its own tests).
    ASSERT_TRUE(store_->PostLedger(coordinator::Transfer(
        "grant:test", coordinator::LedgerKind::kGrant, std::string(coordinator::kIssuanceAccount),
        coordinator::RecipientAccount(alice_id_), kAliceCredits, now_)));
    // The first allocation period opens and issues alice's basic share.
    ASSERT_TRUE(service_->Tick());
    alice_start_ = *store_->Balance(coordinator::RecipientAccount(alice_id_));
    ASSERT_GT(alice_start_, kAliceCredits);
  }

  // Called before the coordinator is made: a test's own settings.
  virtual void Configure(coordinator::CoordinatorConfig& config) { (void)config; }

  void TearDown() override {
    if (server_) server_->Stop();
    if (server_thread_.joinable()) server_thread_.join();
    fs::remove_all(dir_);
  }

  std::unique_ptr<client::HttpsClient> NewHttp() {
    auto http = client::HttpsClient::Create(
        {{"127.0.0.1", server_->port()}, dir_ / "cert.pem", false, std::chrono::seconds(60)});
    EXPECT_TRUE(http);
    return std::move(*http);
  }

  // A donor account's token (made on first use): hosts attach to it when they register.
  std::string DonorAccountToken(const std::string& account) {
    auto it = donor_tokens_.find(account);
    if (it != donor_tokens_.end()) return it->second;
    std::string token = common::NewToken();
    auto id =
        store_->CreateAccount(account, common::TokenHash(token), coordinator::Role::kDonor, now_);
    EXPECT_TRUE(id) << id.error().ToString();
    donor_tokens_[account] = token;
    return token;
  }

  // A registered donor with its own state directory, attached to the donor account `account`
  // (by default one account per donor).
  struct Donor {
    std::unique_ptr<client::HttpsClient> http;
    std::unique_ptr<client::CoordinatorApi> api;
    std::optional<client::HostState> state;
    std::optional<common::SigningKey> key;
    client::Registration registration;
  };
  std::unique_ptr<Donor> NewDonor(const std::string& name, const std::string& account = "") {
    auto d = std::make_unique<Donor>();
    d->http = NewHttp();
    d->api = std::make_unique<client::CoordinatorApi>(*d->http);
    d->api->set_account_token(DonorAccountToken(account.empty() ? "owner-of-" + name : account));
    d->state.emplace(*client::HostState::Open(dir_ / name));
    d->key.emplace(*d->state->LoadOrCreateKey());
    client::TrustOptions trust;
    trust.coordinator_key = signing_key_->public_key();
    auto trusted = client::EstablishTrust(*d->api, *d->state, trust);
    EXPECT_TRUE(trusted) << trusted.error().ToString();
    auto reg = client::EnsureRegistered(*d->api, *d->state, *d->key, name, TinyBenchmark);
    EXPECT_TRUE(reg) << reg.error().ToString();
    d->registration = *reg;
    d->api->set_token(reg->token);
    return d;
  }

  common::Result<client::ClientResponse> Post(client::HttpsClient& http, const std::string& target,
                                              const std::string& body, const std::string& token) {
    return http.Request("POST", target, body, "application/json", token);
  }

  std::int64_t SubmitJob(const std::string& spec_json) {
    auto http = NewHttp();
    auto r = Post(*http, "/v1/jobs", spec_json, token_);
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 201) << r->body;
    auto created = common::ParseJobCreated(r->body);
    EXPECT_TRUE(created);
    return created ? created->job_id : 0;
  }

  common::JobStatus Status(std::int64_t job_id) {
    auto http = NewHttp();
    auto r = http->Request("GET", "/v1/jobs/" + std::to_string(job_id), {}, {}, token_);
    EXPECT_TRUE(r && r->status == 200);
    auto s = common::ParseJobStatus(r->body);
    EXPECT_TRUE(s) << r->body;
    return *s;
  }

  // Everything that a refused request must not change.
  struct Snapshot {
    std::vector<coordinator::RoundSummary> rounds;
    std::size_t results = 0;
  };
  Snapshot Take(std::int64_t job_id) {
    Snapshot s;
    s.rounds = *store_->SummarizeRounds(job_id);
    for (const auto& r : s.rounds) {
      s.results += store_->ListResults(job_id, r.round, "eval_batch")->size();
      s.results += store_->ListResults(job_id, r.round, "finetune_shard")->size();
    }
    return s;
  }
  static void ExpectSame(const Snapshot& a, const Snapshot& b) {
    ASSERT_EQ(a.rounds.size(), b.rounds.size());
    EXPECT_EQ(a.results, b.results);
    for (std::size_t i = 0; i < a.rounds.size(); ++i) {
      EXPECT_EQ(a.rounds[i].units_done, b.rounds[i].units_done);
      EXPECT_EQ(a.rounds[i].aggregated, b.rounds[i].aggregated);
    }
  }

  fs::path dir_;
  std::unique_ptr<coordinator::Store> store_;
  std::optional<coordinator::BlobStore> blobs_;
  std::optional<common::SigningKey> signing_key_;
  std::atomic<std::int64_t> now_{0};
  coordinator::CoordinatorConfig config_;
  std::unique_ptr<coordinator::Coordinator> service_;
  std::unique_ptr<coordinator::Api> api_;
  std::unique_ptr<coordinator::HttpsServer> server_;
  std::thread server_thread_;
  std::string token_;
  std::map<std::string, std::string> donor_tokens_;
  std::int64_t alice_id_ = 0;
  static constexpr std::int64_t kAliceCredits = 1'000'000'000;
  std::int64_t alice_start_ = 0;  // the grant plus the first period's share
};

// Leases one eval unit for `donor` and returns its signed manifest envelope.
inline common::SignedEnvelope LeaseEval(client::CoordinatorApi& api) {
  common::WorkRequest request;
  request.kinds = {"eval_batch"};
  auto work = api.RequestWork(request);
  EXPECT_TRUE(work && work->has_value());
  return **work;
}

inline common::SignedEnvelope EvalResult(const common::SigningKey& key,
                                         const common::SignedEnvelope& env, double accuracy) {
  auto m = common::ParseManifest(env.payload);
  common::ResultPayload r;
  r.unit_id = m->unit_id;
  r.host_id = m->host_id;
  r.attempt = m->attempt;
  r.manifest_hash = common::PayloadHash(env);
  r.kind = m->kind;
  r.metrics.loss = 2.3;
  r.metrics.accuracy = accuracy;
  r.metrics.samples = 100;
  return common::SignPayload(key, common::kDomainResult, common::SerializeResultPayload(r));
}

}  // namespace ubcp::itest
