// SPDX-License-Identifier: Apache-2.0
// End to end on loopback: the real coordinator (HTTPS, SQLite, blob store) and real donor
// clients running real libtorch on real data (sklearn digits).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/https_client.h"
#include "ubcp/client/runner.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/api.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/coordinator_service.h"
#include "ubcp/coordinator/http_server.h"
#include "ubcp/coordinator/store.h"

namespace ubcp {
namespace {
namespace fs = std::filesystem;

client::BenchmarkReport TinyBenchmark() {
  client::BenchmarkReport r;
  r.matmul_gflops = 1;
  r.cpu_threads = 1;
  r.torch_version = common::TorchVersion();
  return r;
}

std::string DigitsJob(int rounds) {
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
    coordinator::CoordinatorConfig config;
    config.datasets.cache_dir = dir_ / "cache";
    service_ = std::make_unique<coordinator::Coordinator>(
        *store_, *blobs_, *signing_key_, [this] { return now_.load(); }, config);
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
    ASSERT_TRUE(store_->CreateAccount("alice", common::TokenHash(token_),
                                      coordinator::Role::kRecipient, now_));
  }

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

  // A registered donor with its own state directory.
  struct Donor {
    std::unique_ptr<client::HttpsClient> http;
    std::unique_ptr<client::CoordinatorApi> api;
    std::optional<client::HostState> state;
    std::optional<common::SigningKey> key;
    client::Registration registration;
  };
  std::unique_ptr<Donor> NewDonor(const std::string& name) {
    auto d = std::make_unique<Donor>();
    d->http = NewHttp();
    d->api = std::make_unique<client::CoordinatorApi>(*d->http);
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
  std::unique_ptr<coordinator::Coordinator> service_;
  std::unique_ptr<coordinator::Api> api_;
  std::unique_ptr<coordinator::HttpsServer> server_;
  std::thread server_thread_;
  std::string token_;
};

TEST_F(LoopTest, TwoDonorsFineTuneAndAccuracyRises) {
  const std::int64_t job_id = SubmitJob(DigitsJob(3));
  ASSERT_GT(job_id, 0);
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Donor>> donors;
  std::vector<std::thread> threads;
  std::vector<client::RunSummary> summaries(2);
  for (int i = 0; i < 2; ++i) donors.push_back(NewDonor("donor-" + std::to_string(i)));
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      client::RunnerOptions options;
      options.idle_poll_s = 0.1;
      client::Runner runner(*donors[i]->api, *donors[i]->state, *donors[i]->key,
                            signing_key_->public_key(), donors[i]->registration.host_id, options);
      summaries[i] = runner.Run(stop);
    });
  }
  common::JobStatus status;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    status = Status(job_id);
  } while (status.state == "running" && std::chrono::steady_clock::now() < deadline);
  stop = true;
  for (auto& t : threads) t.join();

  ASSERT_EQ(status.state, "done");
  ASSERT_EQ(status.history.size(), 4u);  // rounds 0..2 trained, round 3 = final evaluation
  for (const auto& r : status.history) EXPECT_TRUE(r.evaluated) << "round " << r.round;
  const double before = status.history.front().eval_accuracy;
  const double after = status.history.back().eval_accuracy;
  std::cout << "accuracy before=" << before << " after=" << after << "\n";
  EXPECT_LT(before, 0.3);
  EXPECT_GT(after, 0.8);
  EXPECT_GT(after, before + 0.5);
  EXPECT_EQ(status.hosts, 2);
  EXPECT_EQ(summaries[0].units_refused + summaries[1].units_refused, 0);
  // Each unit of each round was done exactly once: 3 x (2 finetune + 1 eval) + 1 final eval.
  EXPECT_EQ(summaries[0].units_done + summaries[1].units_done, 10);
  EXPECT_GT(summaries[0].units_done, 0);
  EXPECT_GT(summaries[1].units_done, 0);

  // The recipient downloads the final model, which loads and evaluates as reported.
  auto http = NewHttp();
  auto model =
      http->Request("GET", "/v1/jobs/" + std::to_string(job_id) + "/model", {}, {}, token_);
  ASSERT_TRUE(model);
  ASSERT_EQ(model->status, 200);
  EXPECT_EQ(common::ContentId(common::AsBytes(model->body)), status.final_model);
}

// Leases one eval unit for `donor` and returns its signed manifest envelope.
common::SignedEnvelope LeaseEval(client::CoordinatorApi& api) {
  common::WorkRequest request;
  request.kinds = {"eval_batch"};
  auto work = api.RequestWork(request);
  EXPECT_TRUE(work && work->has_value());
  return **work;
}

common::SignedEnvelope EvalResult(const common::SigningKey& key, const common::SignedEnvelope& env,
                                  double accuracy) {
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

TEST_F(LoopTest, RefusedResultsLeaveTheStoreUnchanged) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  auto b = NewDonor("b");
  const common::SignedEnvelope manifest = LeaseEval(*a->api);

  // Signed by a key that is not the host's registered key.
  {
    const Snapshot before = Take(job_id);
    auto stranger = common::SigningKey::Generate();
    auto forged = EvalResult(stranger, manifest, 0.5);
    auto r =
        Post(*a->http, "/v1/results", common::SerializeEnvelope(forged), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    // Even claiming the right signer, a signature by another key fails verification.
    forged.signer = a->key->public_key().Hex();
    r = Post(*a->http, "/v1/results", common::SerializeEnvelope(forged), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    ExpectSame(before, Take(job_id));
  }

  // An oversized body is refused before it is read.
  {
    const Snapshot before = Take(job_id);
    std::string huge(common::kMaxEnvelopeJson + 1, ' ');
    auto r = Post(*a->http, "/v1/results", huge, a->registration.token);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(r->status, 413);
    ExpectSame(before, Take(job_id));
  }

  // The genuine result is accepted once; the same envelope again is a harmless duplicate.
  const common::SignedEnvelope genuine = EvalResult(*a->key, manifest, 0.5);
  {
    auto ack = a->api->PostResult(genuine);
    ASSERT_TRUE(ack) << ack.error().ToString();
    EXPECT_EQ(ack->status, "accepted");
    const Snapshot after_first = Take(job_id);
    auto again = a->api->PostResult(genuine);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, "duplicate");
    ExpectSame(after_first, Take(job_id));
  }

  // Replays: another host sending it, or a different result for the now finished unit.
  {
    const Snapshot before = Take(job_id);
    auto r =
        Post(*b->http, "/v1/results", common::SerializeEnvelope(genuine), b->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    auto changed = EvalResult(*a->key, manifest, 0.99);
    r = Post(*a->http, "/v1/results", common::SerializeEnvelope(changed), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 409) << r->body;
    ExpectSame(before, Take(job_id));
  }
}

TEST_F(LoopTest, ExpiredLeaseIsReissuedAndTheStaleResultRefused) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  auto b = NewDonor("b");
  const common::SignedEnvelope first = LeaseEval(*a->api);
  now_ += 121;  // past the 120 s lease
  const common::SignedEnvelope second = LeaseEval(*b->api);
  auto m1 = common::ParseManifest(first.payload);
  auto m2 = common::ParseManifest(second.payload);
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(m1->unit_id, m2->unit_id);
  EXPECT_EQ(m2->attempt, m1->attempt + 1);
  EXPECT_EQ(m2->host_id, b->registration.host_id);

  const Snapshot before = Take(job_id);
  auto stale = EvalResult(*a->key, first, 0.5);
  auto r = Post(*a->http, "/v1/results", common::SerializeEnvelope(stale), a->registration.token);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  ExpectSame(before, Take(job_id));
  auto ack = b->api->PostResult(EvalResult(*b->key, second, 0.5));
  ASSERT_TRUE(ack) << ack.error().ToString();
  EXPECT_EQ(ack->status, "accepted");
}

TEST_F(LoopTest, ForgedManifestIsRefusedByTheClient) {
  SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  common::SignedEnvelope manifest = LeaseEval(*a->api);
  EXPECT_TRUE(
      common::VerifyEnvelope(manifest, common::kDomainManifest, signing_key_->public_key()));
  manifest.payload[manifest.payload.size() / 2] ^= 1;
  EXPECT_FALSE(
      common::VerifyEnvelope(manifest, common::kDomainManifest, signing_key_->public_key()));
}

TEST_F(LoopTest, RecipientsSeeOnlyTheirOwnJobs) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  std::string other = common::NewToken();
  ASSERT_TRUE(
      store_->CreateAccount("bob", common::TokenHash(other), coordinator::Role::kRecipient, now_));
  auto http = NewHttp();
  auto r = http->Request("GET", "/v1/jobs/" + std::to_string(job_id), {}, {}, other);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = http->Request("GET", "/v1/jobs/" + std::to_string(job_id), {}, {}, "not-a-token");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = http->Request("POST", "/v1/jobs", DigitsJob(1), "application/json", {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

}  // namespace
}  // namespace ubcp
