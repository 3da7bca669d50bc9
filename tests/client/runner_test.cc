// SPDX-License-Identifier: Apache-2.0
// The donor's work loop, trust establishment and registration, driven through a scripted fake
// HttpsClient (the transport interface) so failures can be injected call by call. Units run for
// real with libtorch on a tiny model.

#include "ubcp/client/runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/donor_settings.h"
#include "ubcp/client/executor.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/https_client.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/transfer_usage.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {
namespace {
namespace fs = std::filesystem;
using common::Errc;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kHostId = 5;
constexpr char kSpec[] = "mlp-i784-h16-o10";
constexpr std::int64_t kRows = 48;
// Extra time a sleep may take on a loaded machine (SleepFor itself wakes every 50 ms).
constexpr double kSlackS = 0.4;

using Response = common::Result<ClientResponse>;

ClientResponse Answer(int status, std::string body) {
  return ClientResponse{status, "application/json", std::move(body)};
}
ClientResponse ErrorAnswer(int status, Errc code, std::string message) {
  return Answer(status, common::SerializeError(common::MakeError(code, std::move(message))));
}
Response NetworkFailure() { return common::MakeError(Errc::kNetwork, "connection reset"); }

// A scripted coordinator behind the HttpsClient interface. Single-threaded: the Runner under
// test calls it from the test thread.
class FakeCoordinator final : public HttpsClient {
 public:
  struct Call {
    std::string method;
    std::string target;
    std::string body;
    std::string token;
    Clock::time_point at;
  };

  Response Request(std::string_view method, std::string_view target, std::string_view body,
                   std::string_view, std::string_view bearer_token) override {
    calls.push_back({std::string(method), std::string(target), std::string(body),
                     std::string(bearer_token), Clock::now()});
    const Call& c = calls.back();
    if (on_call) on_call(c);
    if (c.method == "GET" && c.target == "/v1/hosts/me/contribution" && contribution) {
      return Answer(200, common::SerializeContribution(*contribution));
    }
    if (c.method == "GET" && c.target == "/v1/info") {
      return Answer(200, R"({"protocol":1,"signing_key":")" + signing_key.Hex() +
                             R"(","fingerprint":")" + common::Fingerprint(signing_key) + "\"}");
    }
    if (c.method == "POST" && c.target == "/v1/hosts") return Pop(registrations, c);
    if (c.method == "POST" && c.target == "/v1/work") {
      if (work.empty()) {
        // Script exhausted: end the run.
        if (stop != nullptr) *stop = true;
        return Answer(204, "");
      }
      return Pop(work, c);
    }
    const std::string blob_prefix = "/v1/blobs/";
    if (c.target.rfind(blob_prefix, 0) == 0) {
      const std::string id = c.target.substr(blob_prefix.size());
      if (c.method == "PUT") return Answer(201, R"({"id":")" + id + "\"}");
      if (auto it = blob_failures.find(id); it != blob_failures.end() && !it->second.empty()) {
        return Pop(it->second, c);
      }
      if (auto it = blobs.find(id); it != blobs.end()) {
        return Answer(200, std::string(common::AsString(it->second)));
      }
      return ErrorAnswer(404, Errc::kNotFound, "no such blob");
    }
    if (c.method == "POST" && c.target == "/v1/results") {
      if (!result_failures.empty()) return Pop(result_failures, c);
      return Answer(200, common::SerializeResultAck({common::kProtocolVersion, "accepted"}));
    }
    if (c.method == "POST" && c.target.starts_with("/v1/units/") &&
        c.target.ends_with("/abandon")) {
      if (!abandon_failures.empty()) return Pop(abandon_failures, c);
      return Answer(200, common::SerializeUnitAbandonAck({common::kProtocolVersion, true}));
    }
    return ErrorAnswer(404, Errc::kNotFound, "unexpected " + c.method + " " + c.target);
  }

  // The runner's transfers: a ranged download is answered with the whole blob (200, which RFC
  // 9110 allows and the client accepts) and an upload, which fits one chunk here, starts at 0.
  common::Result<ClientReply> Send(const ClientRequest& r) override {
    const std::string uploads = "/v1/uploads/";
    const std::string target(r.target);
    if (r.method == "GET" && target.rfind(uploads, 0) == 0) {
      calls.push_back({"GET", target, "", std::string(r.bearer_token), Clock::now()});
      return ClientReply{{200, "application/json",
                          R"({"id":")" + target.substr(uploads.size()) + R"(","received":0})"},
                         {}};
    }
    UBCP_ASSIGN_OR_RETURN(ClientResponse response,
                          Request(r.method, r.target, r.body, r.content_type, r.bearer_token));
    return ClientReply{std::move(response), {}};
  }

  std::vector<Call> CallsTo(std::string_view method, std::string_view target_prefix) const {
    std::vector<Call> out;
    for (const Call& c : calls) {
      if (c.method == method && c.target.rfind(target_prefix, 0) == 0) out.push_back(c);
    }
    return out;
  }

  common::PublicKey signing_key;
  std::deque<Response> registrations;
  std::deque<Response> work;
  std::map<std::string, common::Bytes> blobs;
  std::map<std::string, std::deque<Response>> blob_failures;
  std::deque<Response> result_failures;
  std::deque<Response> abandon_failures;  // answers to POST /v1/units/{id}/abandon, in order
  std::atomic<bool>* stop = nullptr;
  std::vector<Call> calls;
  std::function<void(const Call&)> on_call;  // runs on the caller's thread, before answering
  std::optional<common::Contribution> contribution;  // else the route answers 404

 private:
  static Response Pop(std::deque<Response>& script, const Call& c) {
    if (script.empty()) return ErrorAnswer(500, Errc::kInternal, "no script for " + c.target);
    Response r = std::move(script.front());
    script.pop_front();
    return r;
  }
};

common::TensorList RandomShard(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  common::NamedTensor x{"x", common::TensorKind::kU8, {kRows, 1, 28, 28}, {}, {}};
  x.u8.resize(static_cast<std::size_t>(kRows * 28 * 28));
  for (std::uint8_t& v : x.u8) v = static_cast<std::uint8_t>(rng() & 0xff);
  common::NamedTensor y{"y", common::TensorKind::kU8, {kRows}, {}, {}};
  y.u8.resize(static_cast<std::size_t>(kRows));
  for (std::uint8_t& v : y.u8) v = static_cast<std::uint8_t>(rng() % 10);
  return {std::move(x), std::move(y)};
}

common::BlobRef RefOf(const common::EncodedBlob& blob) {
  return {common::ContentId(blob.bytes), blob.bytes.size(), blob.raw_size};
}

// Seconds between consecutive calls.
std::vector<double> Gaps(const std::vector<FakeCoordinator::Call>& calls) {
  std::vector<double> gaps;
  for (std::size_t i = 1; i < calls.size(); ++i) {
    gaps.push_back(std::chrono::duration<double>(calls[i].at - calls[i - 1].at).count());
  }
  return gaps;
}

std::string AsText(const common::Bytes& bytes) { return std::string(common::AsString(bytes)); }

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

class RunnerTest : public ::testing::Test {
 protected:
  // The cached blob's file as it is on disk ("" when there is none).
  std::string CachedBytes(const std::string& id) const {
    std::ifstream in(*state_->BlobPath(id), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  void SetUp() override {
    ASSERT_TRUE(common::InitCrypto());
    dir_ = fs::temp_directory_path() /
           ("ubcp-runner-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    auto state = HostState::Open(dir_);
    ASSERT_TRUE(state) << state.error().ToString();
    state_.emplace(std::move(*state));
    auto key = state_->LoadOrCreateKey();
    ASSERT_TRUE(key) << key.error().ToString();
    host_key_.emplace(std::move(*key));
    fake_.signing_key = coordinator_key_.public_key();
    fake_.stop = &stop_;

    auto spec = common::ParseModelSpec(kSpec);
    ASSERT_TRUE(spec);
    model_ = common::EncodeTensorBlob(common::InitModel(*spec, 1), common::FloatEncoding::kFp32);
    data_ = common::EncodeTensorBlob(RandomShard(3), common::FloatEncoding::kFp32);
    fake_.blobs[RefOf(model_).id] = model_.bytes;
    fake_.blobs[RefOf(data_).id] = data_.bytes;
  }

  void TearDown() override { fs::remove_all(dir_); }

  common::Manifest EvalManifest() const {
    common::Manifest m;
    m.unit_id = 11;
    m.job_id = 3;
    m.round = 1;
    m.attempt = 2;
    m.host_id = kHostId;
    m.kind = std::string(common::kUnitEval);
    m.model_spec = kSpec;
    m.model = RefOf(model_);
    m.data = RefOf(data_);
    m.issued_at = 1000;
    m.deadline = 2000;
    return m;
  }

  common::Manifest FinetuneManifest() const {
    common::Manifest m = EvalManifest();
    m.kind = std::string(common::kUnitFinetune);
    m.params = {2, 16, 0.05, 0.9, 0.0, "sgd", 7};
    m.update_encoding = "fp32";
    return m;
  }

  common::SignedEnvelope Sign(const common::Manifest& m,
                              const common::SigningKey* key = nullptr) const {
    return common::SignPayload(key ? *key : coordinator_key_, common::kDomainManifest,
                               common::SerializeManifest(m));
  }

  void OfferWork(const common::SignedEnvelope& envelope) {
    fake_.work.push_back(Answer(200, common::SerializeEnvelope(envelope)));
  }

  RunSummary RunLoop(RunnerOptions options) {
    CoordinatorApi api(fake_);
    api.set_token("host-token");
    Runner runner(api, *state_, *host_key_, coordinator_key_.public_key(), kHostId, options);
    return runner.Run(stop_);
  }

  static RunnerOptions FastOptions() {
    RunnerOptions options;
    options.executor = MakeInProcessExecutor();
    options.idle_poll_s = 0.01;
    options.max_backoff_s = 10;
    return options;
  }

  fs::path dir_;
  std::optional<HostState> state_;
  std::optional<common::SigningKey> host_key_;
  common::SigningKey coordinator_key_ = common::SigningKey::Generate();
  FakeCoordinator fake_;
  std::atomic<bool> stop_{false};
  common::EncodedBlob model_;
  common::EncodedBlob data_;
};

// ---- trust ----

TEST_F(RunnerTest, NoTrustedKeyAndNoTrustOnFirstUseIsRefused) {
  CoordinatorApi api(fake_);
  auto trusted = EstablishTrust(api, *state_, TrustOptions{});
  ASSERT_FALSE(trusted);
  EXPECT_EQ(trusted.error().code, Errc::kForbidden);
  auto stored = state_->TrustedCoordinatorKey();
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value()) << "nothing may be pinned without consent";
}

TEST_F(RunnerTest, TrustOnFirstUsePinsThePresentedKeyAndRefusesAnotherLater) {
  CoordinatorApi api(fake_);
  TrustOptions tofu;
  tofu.trust_on_first_use = true;
  auto trusted = EstablishTrust(api, *state_, tofu);
  ASSERT_TRUE(trusted) << trusted.error().ToString();
  EXPECT_EQ(*trusted, coordinator_key_.public_key());
  auto stored = state_->TrustedCoordinatorKey();
  ASSERT_TRUE(stored && stored->has_value());
  EXPECT_EQ(**stored, coordinator_key_.public_key());

  // The coordinator now presents another key: refused even with trust on first use, and the
  // pinned key stays.
  fake_.signing_key = common::SigningKey::Generate().public_key();
  auto swapped = EstablishTrust(api, *state_, tofu);
  ASSERT_FALSE(swapped);
  EXPECT_EQ(swapped.error().code, Errc::kForbidden);
  stored = state_->TrustedCoordinatorKey();
  ASSERT_TRUE(stored && stored->has_value());
  EXPECT_EQ(**stored, coordinator_key_.public_key());
}

TEST_F(RunnerTest, EnrolledKeyMustMatchThePresentedKey) {
  CoordinatorApi api(fake_);
  TrustOptions wrong;
  wrong.coordinator_key = common::SigningKey::Generate().public_key();
  wrong.trust_on_first_use = true;  // must not override an explicit key
  auto refused = EstablishTrust(api, *state_, wrong);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kForbidden);
  auto stored = state_->TrustedCoordinatorKey();
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value());

  TrustOptions right;
  right.coordinator_key = coordinator_key_.public_key();
  auto trusted = EstablishTrust(api, *state_, right);
  ASSERT_TRUE(trusted) << trusted.error().ToString();
  stored = state_->TrustedCoordinatorKey();
  ASSERT_TRUE(stored && stored->has_value());
  EXPECT_EQ(**stored, coordinator_key_.public_key());
}

// ---- registration ----

BenchmarkReport FixedBenchmark() {
  BenchmarkReport r;
  r.matmul_gflops = 12.5;
  r.train = {{kSpec, 300}};
  r.cpu_threads = 1;
  r.torch_version = "test";
  return r;
}

TEST_F(RunnerTest, RegistrationIsSignedByTheHostKeyAndSaved) {
  const std::string token = common::NewToken();
  fake_.registrations.push_back(
      Answer(201, common::SerializeHostRegistered({common::kProtocolVersion, 77, token})));
  CoordinatorApi api(fake_);
  int benchmarks = 0;
  auto bench = [&] {
    ++benchmarks;
    return FixedBenchmark();
  };
  auto reg = EnsureRegistered(api, *state_, *host_key_, "donor-a", bench);
  ASSERT_TRUE(reg) << reg.error().ToString();
  EXPECT_EQ(reg->host_id, 77);
  EXPECT_EQ(reg->token, token);
  EXPECT_EQ(benchmarks, 1);

  auto posts = fake_.CallsTo("POST", "/v1/hosts");
  ASSERT_EQ(posts.size(), 1u);
  auto envelope = common::ParseEnvelope(posts[0].body);
  ASSERT_TRUE(envelope) << envelope.error().ToString();
  // Proof of possession: signed by the key it registers, in the register domain.
  EXPECT_TRUE(common::VerifyEnvelope(*envelope, common::kDomainRegister, host_key_->public_key()));
  auto registration = common::ParseHostRegistration(envelope->payload);
  ASSERT_TRUE(registration) << registration.error().ToString();
  EXPECT_EQ(registration->public_key, host_key_->public_key().Hex());
  EXPECT_EQ(registration->name, "donor-a");
  EXPECT_DOUBLE_EQ(registration->benchmark.matmul_gflops, 12.5);
  ASSERT_EQ(registration->benchmark.train.size(), 1u);
  EXPECT_EQ(registration->benchmark.train[0].model, kSpec);

  auto saved = state_->LoadRegistration();
  ASSERT_TRUE(saved && saved->has_value());
  EXPECT_EQ((*saved)->host_id, 77);

  // A restart uses the saved registration: no benchmark, no request.
  const std::size_t calls_before = fake_.calls.size();
  auto again = EnsureRegistered(api, *state_, *host_key_, "donor-a", bench);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->host_id, 77);
  EXPECT_EQ(benchmarks, 1);
  EXPECT_EQ(fake_.calls.size(), calls_before);
}

TEST_F(RunnerTest, RefusedRegistrationSavesNothing) {
  fake_.registrations.push_back(ErrorAnswer(409, Errc::kConflict, "key already registered"));
  CoordinatorApi api(fake_);
  auto reg = EnsureRegistered(api, *state_, *host_key_, "donor-a", FixedBenchmark);
  ASSERT_FALSE(reg);
  EXPECT_EQ(reg.error().code, Errc::kConflict);
  auto saved = state_->LoadRegistration();
  ASSERT_TRUE(saved);
  EXPECT_FALSE(saved->has_value());
}

// ---- the work loop ----

TEST_F(RunnerTest, EvalUnitResultIsRetriedWithTheSameSignedBytes) {
  const common::SignedEnvelope manifest = Sign(EvalManifest());
  OfferWork(manifest);
  fake_.result_failures.push_back(ErrorAnswer(503, Errc::kUnavailable, "busy"));
  fake_.result_failures.push_back(NetworkFailure());
  RunnerOptions options = FastOptions();
  options.max_units = 1;
  const RunSummary summary = RunLoop(options);

  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(summary.eval_units, 1);
  EXPECT_EQ(summary.finetune_units, 0);
  EXPECT_EQ(summary.units_refused, 0);
  EXPECT_EQ(summary.retries, 2);

  auto posts = fake_.CallsTo("POST", "/v1/results");
  ASSERT_EQ(posts.size(), 3u);
  EXPECT_EQ(posts[1].body, posts[0].body) << "a retry must resend the exact signed envelope";
  EXPECT_EQ(posts[2].body, posts[0].body);
  for (const auto& c : fake_.calls) EXPECT_EQ(c.token, "host-token") << c.target;
  EXPECT_TRUE(fake_.CallsTo("PUT", "/v1/blobs/").empty()) << "eval units upload no update";

  auto envelope = common::ParseEnvelope(posts[0].body);
  ASSERT_TRUE(envelope);
  EXPECT_TRUE(common::VerifyEnvelope(*envelope, common::kDomainResult, host_key_->public_key()));
  auto result = common::ParseResultPayload(envelope->payload);
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result->unit_id, 11);
  EXPECT_EQ(result->host_id, kHostId);
  EXPECT_EQ(result->attempt, 2);
  EXPECT_EQ(result->manifest_hash, common::PayloadHash(manifest));
  EXPECT_EQ(result->kind, common::kUnitEval);
  EXPECT_FALSE(result->update.has_value());
  EXPECT_EQ(result->metrics.samples, kRows);
  EXPECT_GT(result->metrics.loss, 0);
  EXPECT_GE(result->metrics.accuracy, 0);
  EXPECT_LE(result->metrics.accuracy, 1);

  // Inputs were cached for the next unit.
  EXPECT_EQ(CachedBytes(RefOf(model_).id), AsText(model_.bytes));
  EXPECT_EQ(CachedBytes(RefOf(data_).id), AsText(data_.bytes));
}

TEST_F(RunnerTest, FinetuneUploadsTheUpdateBeforeTheResult) {
  OfferWork(Sign(FinetuneManifest()));
  RunnerOptions options = FastOptions();
  options.max_units = 1;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(summary.finetune_units, 1);

  std::size_t put_index = 0, result_index = 0;
  for (std::size_t i = 0; i < fake_.calls.size(); ++i) {
    if (fake_.calls[i].method == "PUT") put_index = i;
    if (fake_.calls[i].target == "/v1/results") result_index = i;
  }
  ASSERT_GT(put_index, 0u);
  ASSERT_GT(result_index, put_index) << "the update must exist before the result names it";
  const auto& put = fake_.calls[put_index];
  const std::string put_id = put.target.substr(std::string("/v1/blobs/").size());
  EXPECT_EQ(put_id, common::ContentId(common::AsBytes(put.body)));

  auto envelope = common::ParseEnvelope(fake_.calls[result_index].body);
  ASSERT_TRUE(envelope);
  auto result = common::ParseResultPayload(envelope->payload);
  ASSERT_TRUE(result) << result.error().ToString();
  ASSERT_TRUE(result->update.has_value());
  EXPECT_EQ(result->update->id, put_id);
  EXPECT_EQ(result->update->size, put.body.size());
  EXPECT_GT(result->metrics.samples, 0);

  // The update is a delta with exactly the model's layout.
  auto delta = common::DecodeTensorBlob(common::AsBytes(put.body), result->update->raw_size);
  ASSERT_TRUE(delta) << delta.error().ToString();
  EXPECT_TRUE(common::CheckSameLayout(common::ModelLayout(*common::ParseModelSpec(kSpec)), *delta));
}

TEST_F(RunnerTest, CachedBlobsAreUsedAndTamperedOnesFetchedAgain) {
  WriteFile(*state_->BlobPath(RefOf(model_).id), AsText(model_.bytes));
  // A corrupted cached data blob: it must be fetched from the coordinator instead.
  WriteFile(*state_->BlobPath(RefOf(data_).id), "corrupted");
  OfferWork(Sign(EvalManifest()));
  RunnerOptions options = FastOptions();
  options.max_units = 1;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_done, 1);
  auto gets = fake_.CallsTo("GET", "/v1/blobs/");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0].target, "/v1/blobs/" + RefOf(data_).id);
  EXPECT_EQ(CachedBytes(RefOf(data_).id), AsText(data_.bytes));
}

TEST_F(RunnerTest, TheBlobCacheIsPrunedAfterEachUnitKeepingTheNewestBlobs) {
  // An old blob of another job fills the cache beyond its bound.
  const std::string old_content(4096, 'o');
  const std::string old_id = common::ContentId(common::AsBytes(old_content));
  WriteFile(*state_->BlobPath(old_id), old_content);
  fs::last_write_time(*state_->BlobPath(old_id),
                      fs::file_time_type::clock::now() - std::chrono::hours(1));
  OfferWork(Sign(EvalManifest()));
  RunnerOptions options = FastOptions();
  options.max_units = 1;
  options.blob_cache_bytes = model_.bytes.size() + data_.bytes.size();
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_FALSE(fs::exists(*state_->BlobPath(old_id))) << "the least recently used blob stays";
  EXPECT_EQ(CachedBytes(RefOf(model_).id), AsText(model_.bytes));
  EXPECT_EQ(CachedBytes(RefOf(data_).id), AsText(data_.bytes));
}

TEST_F(RunnerTest, ManifestsThatFailVerificationAreRefusedBeforeAnyDownload) {
  const common::SigningKey stranger = common::SigningKey::Generate();
  OfferWork(Sign(EvalManifest(), &stranger));  // signed by another key
  common::SignedEnvelope claimed = Sign(EvalManifest(), &stranger);
  claimed.signer = coordinator_key_.public_key().Hex();  // claims the right signer
  OfferWork(claimed);
  common::SignedEnvelope altered = Sign(EvalManifest());
  const std::string from = "\"attempt\":2";
  ASSERT_NE(altered.payload.find(from), std::string::npos) << altered.payload;
  altered.payload.replace(altered.payload.find(from), from.size(), "\"attempt\":3");
  OfferWork(altered);  // payload changed after signing
  common::Manifest other_host = EvalManifest();
  other_host.host_id = kHostId + 1;
  OfferWork(Sign(other_host));  // genuine, but for another host
  fake_.work.push_back(Answer(200, "{not an envelope"));

  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.01;  // refusals back off too; keep the test short
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 5);
  EXPECT_EQ(summary.units_done, 0);
  EXPECT_TRUE(fake_.CallsTo("GET", "/v1/blobs/").empty());
  EXPECT_TRUE(fake_.CallsTo("POST", "/v1/results").empty());
}

TEST_F(RunnerTest, NonRetryableErrorsAreNotRetried) {
  // The coordinator does not have the model (404): final, requested exactly once.
  common::Manifest missing = EvalManifest();
  fake_.blobs.erase(missing.model.id);
  OfferWork(Sign(missing));
  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.01;
  RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);
  EXPECT_EQ(summary.retries, 0);
  EXPECT_EQ(fake_.CallsTo("GET", "/v1/blobs/" + missing.model.id).size(), 1u);
  EXPECT_TRUE(fake_.CallsTo("POST", "/v1/results").empty());
}

TEST_F(RunnerTest, HashMismatchAndConflictAreFinal) {
  fake_.blob_failures[RefOf(data_).id].push_back(Answer(200, std::string(data_.bytes.size(), 'z')));
  OfferWork(Sign(EvalManifest()));
  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.01;
  RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);
  EXPECT_EQ(summary.retries, 0);
  EXPECT_EQ(fake_.CallsTo("GET", "/v1/blobs/" + RefOf(data_).id).size(), 1u);
  EXPECT_EQ(CachedBytes(RefOf(data_).id), "") << "bad bytes must not be cached";

  fake_.calls.clear();
  stop_ = false;
  fake_.result_failures.push_back(ErrorAnswer(409, Errc::kConflict, "lease re-issued"));
  OfferWork(Sign(EvalManifest()));
  summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);
  EXPECT_EQ(summary.units_done, 0);
  EXPECT_EQ(summary.retries, 0);
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/results").size(), 1u);
}

TEST_F(RunnerTest, RetryableFetchErrorsBackOffExponentiallyWithJitter) {
  const std::string model_id = RefOf(model_).id;
  fake_.blob_failures[model_id] = {ErrorAnswer(503, Errc::kUnavailable, "busy"), NetworkFailure(),
                                   ErrorAnswer(500, Errc::kInternal, "oops")};
  OfferWork(Sign(EvalManifest()));
  RunnerOptions options = FastOptions();
  options.max_units = 1;
  options.max_backoff_s = 10;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(summary.retries, 3);

  const auto gets = fake_.CallsTo("GET", "/v1/blobs/" + model_id);
  ASSERT_EQ(gets.size(), 4u);
  // Attempt k waits between half of and the full min(max, 0.25 s * 2^k).
  const std::vector<double> gaps = Gaps(gets);
  for (std::size_t k = 0; k < gaps.size(); ++k) {
    const double cap = 0.25 * static_cast<double>(1u << k);
    EXPECT_GE(gaps[k], cap / 2) << "attempt " << k;
    EXPECT_LE(gaps[k], cap + kSlackS) << "attempt " << k;
  }
}

TEST_F(RunnerTest, BackoffNeverExceedsTheConfiguredMaximum) {
  for (int i = 0; i < 4; ++i) fake_.work.push_back(NetworkFailure());
  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.2;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.retries, 4);
  EXPECT_EQ(summary.units_refused, 0);
  const auto polls = fake_.CallsTo("POST", "/v1/work");
  ASSERT_EQ(polls.size(), 5u);  // four failures, then the empty answer that stops the run
  for (double gap : Gaps(polls)) {
    // Uncapped, the fourth wait alone would be at least 1 s.
    EXPECT_GE(gap, 0.1);
    EXPECT_LE(gap, 0.2 + kSlackS);
  }
}

TEST_F(RunnerTest, RevokedTokenEndsTheRunWithAnError) {
  fake_.stop = nullptr;  // the run must end by itself
  fake_.work.push_back(ErrorAnswer(401, Errc::kUnauthorized, "unknown token"));
  const RunSummary summary = RunLoop(FastOptions());
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/work").size(), 1u);
  ASSERT_TRUE(summary.fatal.has_value());
  EXPECT_EQ(summary.fatal->code, Errc::kUnauthorized);
  EXPECT_EQ(summary.units_refused, 0);
  EXPECT_FALSE(stop_);
}

TEST_F(RunnerTest, RefusedWorkRequestIsNotCountedAsARetry) {
  fake_.work.push_back(ErrorAnswer(400, Errc::kInvalidArgument, "unknown unit kind"));
  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.01;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);
  EXPECT_EQ(summary.retries, 0);
}

TEST_F(RunnerTest, StopsAfterMaxIdlePolls) {
  fake_.stop = nullptr;  // the run must end by itself
  for (int i = 0; i < 3; ++i) fake_.work.push_back(Answer(204, ""));
  RunnerOptions options = FastOptions();
  options.max_idle_polls = 3;
  const RunSummary summary = RunLoop(options);
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/work").size(), 3u);
  EXPECT_EQ(summary.units_done, 0);
  EXPECT_EQ(summary.retries, 0);
  EXPECT_FALSE(stop_);
}

TEST_F(RunnerTest, StopEndsTheRunBeforeAnyRequest) {
  stop_ = true;
  const RunSummary summary = RunLoop(FastOptions());
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_EQ(summary.units_done, 0);
}

// ---- headless control (control_socket.h) ----

TEST_F(RunnerTest, PauseStopsLeasingUntilResumed) {
  OfferWork(Sign(EvalManifest()));
  ControlState control;
  control.SetPaused(true);
  RunnerOptions options = FastOptions();
  options.control = &control;
  options.pause_poll_s = 0.01;
  RunSummary summary;
  // The fake is touched only by the runner's thread until join.
  std::thread loop([&] { summary = RunLoop(options); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Clock::time_point resumed_at = Clock::now();
  control.SetPaused(false);
  loop.join();

  const auto leases = fake_.CallsTo("POST", "/v1/work");
  ASSERT_FALSE(leases.empty());
  for (const auto& lease : leases) {
    EXPECT_GE(lease.at, resumed_at) << "a paused client leased a unit";
  }
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_FALSE(summary.finished_on_request);
  EXPECT_EQ(control.Snapshot().units_done, 1);
  EXPECT_FALSE(control.Snapshot().in_unit);
}

TEST_F(RunnerTest, FinishStopsAfterTheCurrentUnitAndItsProgressIsPublished) {
  common::Manifest first = FinetuneManifest();
  common::Manifest second = FinetuneManifest();
  second.unit_id = 12;
  OfferWork(Sign(first));
  OfferWork(Sign(second));
  common::Contribution totals;
  totals.host_id = kHostId;
  totals.units = 9;
  totals.points_credits = 321;
  fake_.contribution = totals;
  ControlState control;
  std::optional<ControlSnapshot> while_uploading;
  // Finish is asked while the first unit is being reported, i.e. during the unit.
  fake_.on_call = [&](const FakeCoordinator::Call& c) {
    if (c.method == "POST" && c.target == "/v1/results") {
      while_uploading = control.Snapshot();
      control.RequestFinish();
    }
  };
  RunnerOptions options = FastOptions();
  options.control = &control;
  RunSummary summary = RunLoop(options);

  EXPECT_TRUE(summary.finished_on_request);
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/work").size(), 1u) << "no unit leased after finish";
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/results").size(), 1u) << "the current unit is reported";
  EXPECT_EQ(fake_.work.size(), 1u);
  ASSERT_TRUE(while_uploading);
  EXPECT_TRUE(while_uploading->in_unit);
  EXPECT_EQ(while_uploading->unit_id, first.unit_id);
  EXPECT_EQ(while_uploading->kind, common::kUnitFinetune);
  EXPECT_EQ(while_uploading->job_id, first.job_id);
  EXPECT_EQ(while_uploading->phase, "uploading");
  EXPECT_EQ(while_uploading->steps_total, first.params.local_steps);
  EXPECT_EQ(while_uploading->steps_done, first.params.local_steps);
  const ControlSnapshot after = control.Snapshot();
  EXPECT_EQ(after.units_done, 1);
  ASSERT_TRUE(after.contribution);
  EXPECT_EQ(after.contribution->points_credits, 321);
  EXPECT_EQ(after.contribution->units, 9);
}

TEST_F(RunnerTest, ExecutionReportsEveryStepAndEvalBatch) {
  std::vector<std::pair<std::int64_t, std::int64_t>> heard;
  const ProgressFn progress = [&heard](std::int64_t done, std::int64_t total) {
    heard.emplace_back(done, total);
  };
  common::Manifest finetune = FinetuneManifest();
  finetune.params.local_steps = 3;
  auto trained = ExecuteUnit(finetune, model_.bytes, data_.bytes, 1, {}, progress);
  ASSERT_TRUE(trained) << trained.error().ToString();
  const std::vector<std::pair<std::int64_t, std::int64_t>> steps = {
      {0, 3}, {1, 3}, {2, 3}, {3, 3}, {3, 3}};
  EXPECT_EQ(heard, steps);

  heard.clear();
  auto evaluated = ExecuteUnit(EvalManifest(), model_.bytes, data_.bytes, 1, {}, progress);
  ASSERT_TRUE(evaluated) << evaluated.error().ToString();
  // kRows samples fit one evaluation batch.
  const std::vector<std::pair<std::int64_t, std::int64_t>> batches = {{0, 1}, {1, 1}, {1, 1}};
  EXPECT_EQ(heard, batches);
}

// ---- donor settings and the run policy (donor_settings.h, run_policy.h) ----

// Replaces `file` at once, so the watcher never reads half a file.
void WriteAtomically(const fs::path& file, const std::string& text) {
  const fs::path tmp = file.string() + ".tmp";
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << text;
  fs::rename(tmp, file);
}

// Waits up to 20 s for `done`, polling.
bool WaitFor(const std::function<bool()>& done) {
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class RunPolicyLoopTest : public RunnerTest {
 protected:
  // Wednesday 2024-05-01 12:00 UTC, a fixed wall clock.
  static std::chrono::system_clock::time_point Noon() {
    return std::chrono::sys_days{std::chrono::year{2024} / 5 / 1} + std::chrono::hours(12);
  }
  static constexpr char kDay[] = "2024-05-01";

  SettingsWatcher OpenSettings(const std::string& text) {
    settings_file_ = dir_ / "settings.conf";
    WriteAtomically(settings_file_, text);
    auto watcher =
        SettingsWatcher::Open(settings_file_, {"--coordinator", "https://ubcp.test:8443"}, 8);
    EXPECT_TRUE(watcher) << watcher.error().ToString();
    return std::move(*watcher);
  }

  // A machine with 4 CPUs, 2 GiB available and `on_battery`, at the fixed clock.
  RunnerOptions PolicyOptions(SettingsWatcher& settings, ControlState& control,
                              bool on_battery) const {
    RunnerOptions options = FastOptions();
    options.settings = &settings;
    options.control = &control;
    options.policy_poll_s = 0.01;
    options.clock = [] { return Noon(); };
    options.probe = [on_battery](std::chrono::system_clock::time_point) {
      SystemState state;
      state.on_battery = on_battery;
      state.cpu_count = 4;
      state.memory_available_mb = 2048;
      return common::Result<SystemState>(state);
    };
    return options;
  }

  fs::path settings_file_;
};

TEST_F(RunPolicyLoopTest, OnBatteryNothingIsLeasedUntilTheChangedFileAllowsIt) {
  OfferWork(Sign(FinetuneManifest()));
  SettingsWatcher settings = OpenSettings("[donor]\nmax-cores = 3\n");
  ControlState control;
  std::optional<ControlSnapshot> while_uploading;
  fake_.on_call = [&](const FakeCoordinator::Call& c) {
    if (c.method == "POST" && c.target == "/v1/results") while_uploading = control.Snapshot();
  };
  RunSummary summary;
  // The fake is touched only by the runner's thread until join.
  std::thread loop([&] { summary = RunLoop(PolicyOptions(settings, control, true)); });
  const bool waited = WaitFor([&] { return control.Snapshot().waiting == "on battery"; });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // many polls of the policy
  const boost::json::object status = HandleControlLine("status", control);
  const Clock::time_point allowed_at = Clock::now();
  WriteAtomically(settings_file_, "[donor]\nmax-cores = 3\nrun-on-battery = true\n");
  loop.join();

  ASSERT_TRUE(waited) << "the loop never published why it waits";
  EXPECT_EQ(status.at("state").as_string(), "waiting");
  const std::string text = FormatStatus(status);
  EXPECT_NE(text.find("waiting: on battery"), std::string::npos) << text;
  EXPECT_NE(text.find("allowed: 3 threads, 2048 MiB memory"), std::string::npos) << text;
  const auto leases = fake_.CallsTo("POST", "/v1/work");
  ASSERT_FALSE(leases.empty());
  for (const auto& lease : leases) {
    EXPECT_GE(lease.at, allowed_at) << "a unit was leased on battery";
  }
  EXPECT_EQ(summary.units_done, 1);
  ASSERT_TRUE(while_uploading);
  EXPECT_EQ(while_uploading->allowed_threads, 3);  // min(max-cores 3, 100% of 4 CPUs)
  EXPECT_EQ(while_uploading->allowed_memory_mb, 2048u);
  EXPECT_TRUE(while_uploading->waiting.empty());
  EXPECT_EQ(control.Snapshot().units_done, 1);
}

TEST_F(RunPolicyLoopTest, TransfersAreCountedAndTheDailyLimitStopsLeasing) {
  const std::uint64_t mib = 1 << 20;
  const std::uint64_t unit_download = model_.bytes.size() + data_.bytes.size();
  ASSERT_LT(unit_download, mib);
  // One unit's download crosses the 1 MiB limit.
  const TransferUsage before{kDay, mib - unit_download / 2, 5};
  ASSERT_TRUE(SaveTransferUsage(dir_ / kTransferUsageFile, before));
  common::Manifest second = FinetuneManifest();
  second.unit_id = 12;
  OfferWork(Sign(FinetuneManifest()));
  OfferWork(Sign(second));
  SettingsWatcher settings = OpenSettings("daily-download-mb = 1\ncpu-share = 50\n");
  ControlState control;
  RunSummary summary;
  std::thread loop([&] { summary = RunLoop(PolicyOptions(settings, control, false)); });
  const bool stopped_leasing = WaitFor([&] {
    const ControlSnapshot s = control.Snapshot();
    return s.units_done == 1 && !s.waiting.empty();
  });
  stop_ = true;
  loop.join();

  ASSERT_TRUE(stopped_leasing);
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(fake_.CallsTo("POST", "/v1/work").size(), 1u) << "leased beyond the daily limit";
  EXPECT_EQ(fake_.work.size(), 1u);
  const ControlSnapshot after = control.Snapshot();
  EXPECT_EQ(after.waiting.rfind("daily download limit reached", 0), 0u) << after.waiting;
  EXPECT_EQ(after.allowed_threads, 2);  // 50% of 4 CPUs

  const auto puts = fake_.CallsTo("PUT", "/v1/blobs/");
  const auto results = fake_.CallsTo("POST", "/v1/results");
  ASSERT_EQ(puts.size(), 1u);
  ASSERT_EQ(results.size(), 1u);
  auto usage = LoadTransferUsage(dir_ / kTransferUsageFile);
  ASSERT_TRUE(usage) << usage.error().ToString();
  EXPECT_EQ(usage->day, kDay);
  EXPECT_EQ(usage->downloaded_bytes, before.downloaded_bytes + unit_download);
  EXPECT_EQ(usage->uploaded_bytes,
            before.uploaded_bytes + puts[0].body.size() + results[0].body.size());
}

TEST_F(RunPolicyLoopTest, ABadSettingsFileKeepsThePreviousSettings) {
  OfferWork(Sign(EvalManifest()));
  SettingsWatcher settings = OpenSettings("max-cores = 2\n");
  WriteAtomically(settings_file_, "max-cores = 0\n");  // out of range
  ControlState control;
  const RunSummary summary = RunLoop(PolicyOptions(settings, control, false));
  EXPECT_EQ(summary.units_done, 1);
  EXPECT_EQ(settings.current().max_cores, 2u);
  const ControlSnapshot after = control.Snapshot();
  EXPECT_EQ(after.allowed_threads, 2);
  EXPECT_NE(after.last_error.find("max-cores"), std::string::npos) << after.last_error;
}

TEST(IsRetryableTest, OnlyTransientFailuresAreRetryable) {
  for (Errc code : {Errc::kNetwork, Errc::kUnavailable, Errc::kInternal, Errc::kIo}) {
    EXPECT_TRUE(IsRetryable(common::MakeError(code, ""))) << common::ErrcName(code);
  }
  for (Errc code : {Errc::kInvalidArgument, Errc::kMalformed, Errc::kTooLarge,
                    Errc::kUnsupportedVersion, Errc::kBadSignature, Errc::kHashMismatch,
                    Errc::kNotFound, Errc::kConflict, Errc::kUnauthorized, Errc::kForbidden}) {
    EXPECT_FALSE(IsRetryable(common::MakeError(code, ""))) << common::ErrcName(code);
  }
}

TEST_F(RunnerTest, AGivenUpUnitIsReportedToTheCoordinatorOnceAfterItsEndIsRecorded) {
  // The coordinator does not have the model (404): the unit is given up ("cannot fetch inputs").
  common::Manifest missing = EvalManifest();
  fake_.blobs.erase(missing.model.id);
  const common::SignedEnvelope manifest = Sign(missing);
  OfferWork(manifest);
  const fs::path units = dir_ / "units";
  std::string finished_at_report;
  bool dir_left_at_report = true;
  fake_.on_call = [&](const FakeCoordinator::Call& c) {
    if (!c.target.ends_with("/abandon")) return;
    std::ifstream in(units / "finished.log");
    finished_at_report.assign(std::istreambuf_iterator<char>(in), {});
    dir_left_at_report = fs::exists(units / std::to_string(missing.unit_id));
  };
  RunnerOptions options = FastOptions();
  options.max_backoff_s = 0.01;
  RunSummary summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);

  auto reports = fake_.CallsTo("POST", "/v1/units/");
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].target, "/v1/units/" + std::to_string(missing.unit_id) + "/abandon");
  EXPECT_EQ(reports[0].token, "host-token");
  auto report = common::ParseUnitAbandon(reports[0].body);
  ASSERT_TRUE(report) << report.error().ToString();
  EXPECT_EQ(report->unit_id, missing.unit_id);
  EXPECT_EQ(report->attempt, missing.attempt);
  EXPECT_EQ(report->manifest_hash, common::PayloadHash(manifest));
  EXPECT_NE(report->reason.find("cannot fetch inputs"), std::string::npos) << report->reason;
  // Sent once the end is recorded locally (and the unit's directory gone).
  EXPECT_NE(finished_at_report.find(std::to_string(missing.unit_id) +
                                    " failed attempt=" + std::to_string(missing.attempt)),
            std::string::npos)
      << finished_at_report;
  EXPECT_FALSE(dir_left_at_report);

  // A report that fails is not retried: the lease deadline is the fallback.
  fake_.calls.clear();
  fake_.on_call = nullptr;
  stop_ = false;
  fake_.abandon_failures.push_back(ErrorAnswer(503, Errc::kUnavailable, "busy"));
  common::Manifest again = missing;
  again.unit_id = missing.unit_id + 1;
  OfferWork(Sign(again));
  summary = RunLoop(options);
  EXPECT_EQ(summary.units_refused, 1);
  EXPECT_EQ(summary.retries, 0);
  reports = fake_.CallsTo("POST", "/v1/units/");
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].target, "/v1/units/" + std::to_string(again.unit_id) + "/abandon");
  EXPECT_TRUE(fake_.abandon_failures.empty());
}

}  // namespace
}  // namespace ubcp::client
