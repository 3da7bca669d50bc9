// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/wire.h"

#include <gtest/gtest.h>

#include <bit>
#include <boost/json.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ubcp/common/crypto.h"

namespace ubcp::common {
namespace {

const std::string kIdA(64, 'a');
const std::string kIdB = std::string(32, '0') + std::string(32, 'f');
const std::string kIdC = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---- sample messages ----

UnitParams SampleParams() {
  UnitParams p;
  p.local_steps = 50;
  p.batch_size = 32;
  p.lr = 0.1;
  p.momentum = 0.9;
  p.weight_decay = 1e-4;
  p.optimizer = "sgd";
  p.seed = 18446744073709551615ull;  // above INT64_MAX: must survive as uint64
  return p;
}

HostRegistration SampleRegistration() {
  HostRegistration r;
  r.public_key = kIdC;
  r.name = "lab-box \"7\" \xc3\xa9\\";  // quotes, backslash and UTF-8 survive escaping
  r.issued_at = 1700000000;
  r.benchmark.matmul_gflops = 123.456;
  r.benchmark.train = {{"catalog:mlp", 4567.25}, {"zoo:cnn:small", 1.0 / 3.0}};
  r.benchmark.cpu_threads = 16;
  r.benchmark.cuda_devices = 2;
  r.benchmark.cuda_names = {"NVIDIA H200", "NVIDIA A100"};
  r.benchmark.cuda_matmul_gflops = 98765.4321;
  r.benchmark.torch_version = "2.1.0";
  r.benchmark.gpu = GpuReport{"usable: libtorch sees 2 CUDA device(s); NVML: 2 x NVIDIA H200",
                              "550.54.15",
                              {{"NVIDIA H200", 143771}, {"NVIDIA A100 \xe2\x80\x93 80GB", 81920}}};
  r.capabilities.cpu_cores = 8;
  r.capabilities.memory_mb = 65536;
  r.capabilities.cuda = true;
  r.capabilities.client_version = "0.1.0";
  return r;
}

HostRegistered SampleRegistered() {
  HostRegistered r;
  r.host_id = 42;
  r.token = kIdB;
  return r;
}

WorkRequest SampleWorkRequest() {
  WorkRequest w;
  w.kinds = {std::string(kUnitFinetune), std::string(kUnitEval)};
  return w;
}

Manifest SampleManifest() {
  Manifest m;
  m.unit_id = 9000000000;  // beyond 32 bits
  m.job_id = 7;
  m.round = 3;
  m.attempt = 2;
  m.host_id = 42;
  m.kind = std::string(kUnitFinetune);
  m.model_spec = "zoo:mlp:784-128-10";
  m.model = {kIdA, 1234, 5678};
  m.data = {kIdB, 99, 18446744073709551615ull};
  m.params = SampleParams();
  m.update_encoding = "int8";
  m.issued_at = 1700000000;
  m.deadline = 1700000600;
  return m;
}

ResultPayload SampleResult() {
  ResultPayload p;
  p.unit_id = 9000000000;
  p.host_id = 42;
  p.attempt = 2;
  p.manifest_hash = kIdC;
  p.kind = std::string(kUnitFinetune);
  p.update = BlobRef{kIdA, 100, 400};
  p.metrics.loss = 0.3141592653589793;
  p.metrics.accuracy = 0.875;
  p.metrics.first_loss = 2.302585092994046;
  p.metrics.samples = 1600;
  p.wall_seconds = 12.5;
  return p;
}

ResultAck SampleAck() {
  ResultAck a;
  a.status = "duplicate";
  return a;
}

UnitAbandon SampleAbandon() {
  UnitAbandon a;
  a.unit_id = 9000000000;
  a.attempt = 3;
  a.manifest_hash = kIdC;
  // Quotes, a newline and UTF-8 survive escaping.
  a.reason = "unit 9000000000: \"execution failed\":\nworker used 70 MiB \xe2\x80\x93 limit";
  return a;
}

JobSpec SampleJobSpec() {
  JobSpec s;
  s.name = "fashion fedavg";
  s.model = "catalog:mlp";
  s.dataset = "fashion-mnist";
  s.rounds = 5;
  s.units_per_round = 4;
  s.eval_units = 2;
  s.params = SampleParams();
  s.params.optimizer = "adam";
  s.aggregator = "diloco";
  s.outer_lr = 0.7;
  s.outer_momentum = 0.9;
  s.robust = "multi_krum";
  s.trim_fraction = 0.1;
  s.krum_byzantine = 2;
  s.norm_bound = 2.5;
  s.update_encoding = "fp32";
  s.test_fraction = 0.2;
  s.max_train_samples = 6000;
  s.max_test_samples = 0;
  s.deadline_s = 600;
  s.publish_as = "fashion-v1";
  return s;
}

JobCreated SampleJobCreated() {
  JobCreated c;
  c.job_id = 77;
  return c;
}

RoundStatus SampleRound(int round) {
  RoundStatus r;
  r.round = round;
  r.model_blob = kIdA;
  r.units_done = 3;
  r.units_total = 4;
  r.evaluated = true;
  r.eval_loss = 0.4567;
  r.eval_accuracy = 0.8123;
  r.eval_samples = 2000;
  r.train_loss = 0.398;
  return r;
}

JobStatus SampleJobStatus() {
  JobStatus s;
  s.job_id = 77;
  s.name = "fashion fedavg";
  s.state = "running";
  s.model_spec = "zoo:mlp:784-128-10";
  s.rounds = 5;
  s.current_round = 2;
  s.history = {SampleRound(0), SampleRound(1)};
  s.history[1].model_blob = "";
  s.history[1].evaluated = false;
  s.final_model = "";
  s.hosts = 3;
  return s;
}

// ---- helpers ----

template <class T>
Status AsStatus(const Result<T>& r) {
  if (!r) return r.error();
  return {};
}

// The error code of a parse, or nullopt if it succeeded.
std::optional<Errc> CodeOf(const Status& s) {
  if (s) return std::nullopt;
  return s.error().code;
}

// Applies `edit` to the JSON object in `text` (the test side uses plain Boost.JSON).
std::string Edit(const std::string& text, const std::function<void(boost::json::object&)>& edit) {
  boost::json::value v = boost::json::parse(text);
  edit(v.as_object());
  return boost::json::serialize(v);
}

boost::json::object& At(boost::json::object& o, std::string_view key) {
  return o.at(key).as_object();
}

void ExpectSameBits(double a, double b) {
  EXPECT_EQ(std::bit_cast<std::uint64_t>(a), std::bit_cast<std::uint64_t>(b)) << a << " vs " << b;
}

// ---- generic refusal tests, run for every Parse* function ----

struct ParseCase {
  std::string name;
  std::function<Status(std::string_view)> parse;
  std::string valid;  // a serialised sample that parses
  std::size_t limit;  // size limit in bytes
  bool versioned;     // has a "protocol" field
};

std::ostream& operator<<(std::ostream& os, const ParseCase& c) { return os << c.name; }

std::vector<ParseCase> AllCases() {
  if (!InitCrypto()) std::abort();
  SigningKey key = SigningKey::Generate();
  return {
      {"Envelope", [](std::string_view s) { return AsStatus(ParseEnvelope(s)); },
       SerializeEnvelope(SignPayload(key, kDomainManifest, SerializeManifest(SampleManifest()))),
       kMaxEnvelopeJson, true},
      {"HostRegistration", [](std::string_view s) { return AsStatus(ParseHostRegistration(s)); },
       SerializeHostRegistration(SampleRegistration()), kMaxPayloadJson, true},
      // Without its one optional field, so that every field of the sample is required.
      {"HostBenchmark", [](std::string_view s) { return AsStatus(ParseHostBenchmark(s)); },
       [] {
         HostBenchmark b = SampleRegistration().benchmark;
         b.gpu.reset();
         return SerializeHostBenchmark(b);
       }(),
       kMaxPayloadJson, false},
      {"HostRegistered", [](std::string_view s) { return AsStatus(ParseHostRegistered(s)); },
       SerializeHostRegistered(SampleRegistered()), kMaxRequestJson, true},
      {"WorkRequest", [](std::string_view s) { return AsStatus(ParseWorkRequest(s)); },
       SerializeWorkRequest(SampleWorkRequest()), kMaxRequestJson, true},
      {"Manifest", [](std::string_view s) { return AsStatus(ParseManifest(s)); },
       SerializeManifest(SampleManifest()), kMaxPayloadJson, true},
      {"ResultPayload", [](std::string_view s) { return AsStatus(ParseResultPayload(s)); },
       SerializeResultPayload(SampleResult()), kMaxPayloadJson, true},
      {"ResultAck", [](std::string_view s) { return AsStatus(ParseResultAck(s)); },
       SerializeResultAck(SampleAck()), kMaxRequestJson, true},
      {"UnitAbandon", [](std::string_view s) { return AsStatus(ParseUnitAbandon(s)); },
       SerializeUnitAbandon(SampleAbandon()), kMaxRequestJson, true},
      {"UnitAbandonAck", [](std::string_view s) { return AsStatus(ParseUnitAbandonAck(s)); },
       SerializeUnitAbandonAck({kProtocolVersion, true}), kMaxRequestJson, true},
      {"JobSpec", [](std::string_view s) { return AsStatus(ParseJobSpec(s)); },
       SerializeJobSpec(SampleJobSpec()), kMaxRequestJson, true},
      {"JobCreated", [](std::string_view s) { return AsStatus(ParseJobCreated(s)); },
       SerializeJobCreated(SampleJobCreated()), kMaxRequestJson, true},
      {"JobStatus", [](std::string_view s) { return AsStatus(ParseJobStatus(s)); },
       SerializeJobStatus(SampleJobStatus()), 1024 * 1024, true},
      {"ErrorBody", [](std::string_view s) { return AsStatus(ParseErrorBody(s)); },
       SerializeError(MakeError(Errc::kConflict, "unit was re-issued")), kMaxRequestJson, false},
  };
}

class ParseRefusalTest : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseRefusalTest, ValidSampleParses) {
  const ParseCase& c = GetParam();
  Status s = c.parse(c.valid);
  EXPECT_TRUE(s) << s.error().ToString();
}

TEST_P(ParseRefusalTest, EachMissingFieldIsMalformed) {
  const ParseCase& c = GetParam();
  const boost::json::object sample = boost::json::parse(c.valid).as_object();
  ASSERT_FALSE(sample.empty());
  for (const auto& kv : sample) {
    std::string key(kv.key());
    Status s = c.parse(Edit(c.valid, [&](boost::json::object& o) { o.erase(key); }));
    EXPECT_EQ(CodeOf(s), Errc::kMalformed) << "without " << key;
  }
}

TEST_P(ParseRefusalTest, UnknownFieldIsMalformed) {
  const ParseCase& c = GetParam();
  Status s = c.parse(Edit(c.valid, [](boost::json::object& o) { o["surprise"] = 1; }));
  ASSERT_EQ(CodeOf(s), Errc::kMalformed);
  EXPECT_NE(s.error().message.find("surprise"), std::string::npos) << s.error().message;
}

TEST_P(ParseRefusalTest, EachWrongTypeIsMalformed) {
  const ParseCase& c = GetParam();
  const boost::json::object sample = boost::json::parse(c.valid).as_object();
  for (const auto& kv : sample) {
    std::string key(kv.key());
    // A value no field accepts in that place: arrays get a string, everything else an array.
    boost::json::value wrong =
        kv.value().is_array() ? boost::json::value("x") : boost::json::value(boost::json::array{1});
    Status s = c.parse(Edit(c.valid, [&](boost::json::object& o) { o[key] = wrong; }));
    EXPECT_EQ(CodeOf(s), Errc::kMalformed) << key;
    if (!s) {
      EXPECT_NE(s.error().message.find(key), std::string::npos) << s.error().message;
    }
  }
}

TEST_P(ParseRefusalTest, DuplicateKeyIsMalformed) {
  const ParseCase& c = GetParam();
  ASSERT_EQ(c.valid.back(), '}');
  const boost::json::object sample = boost::json::parse(c.valid).as_object();
  std::string first_key(sample.begin()->key());
  std::string text = c.valid.substr(0, c.valid.size() - 1) + ",\"" + first_key +
                     "\":" + boost::json::serialize(sample.begin()->value()) + "}";
  Status s = c.parse(text);
  ASSERT_EQ(CodeOf(s), Errc::kMalformed);
  EXPECT_NE(s.error().message.find("duplicate"), std::string::npos) << s.error().message;
}

TEST_P(ParseRefusalTest, OversizedBodyIsTooLargeAndLimitIsInclusive) {
  const ParseCase& c = GetParam();
  ASSERT_LT(c.valid.size(), c.limit);
  std::string at_limit = c.valid + std::string(c.limit - c.valid.size(), ' ');
  Status ok = c.parse(at_limit);
  EXPECT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(CodeOf(c.parse(at_limit + " ")), Errc::kTooLarge);
  // Refused on size alone, before any parsing.
  EXPECT_EQ(CodeOf(c.parse(std::string(c.limit + 1, '['))), Errc::kTooLarge);
}

TEST_P(ParseRefusalTest, NonJsonIsMalformed) {
  const ParseCase& c = GetParam();
  std::string trailing_comma = c.valid.substr(0, c.valid.size() - 1) + ",}";
  std::string comment = "/* hi */" + c.valid;
  std::string trailing_data = c.valid + "{}";
  for (const std::string& bad :
       {std::string(""), std::string("not json"), std::string("{"), std::string("{\"a\":}"),
        std::string("{'protocol':1}"), std::string("\x00\x01\x02", 3), trailing_comma, comment,
        trailing_data, c.valid.substr(0, c.valid.size() / 2)}) {
    EXPECT_EQ(CodeOf(c.parse(bad)), Errc::kMalformed) << bad;
  }
}

TEST_P(ParseRefusalTest, EveryTruncationIsRefused) {
  const ParseCase& c = GetParam();
  for (std::size_t n = 0; n < c.valid.size(); ++n) {
    EXPECT_FALSE(c.parse(std::string_view(c.valid).substr(0, n))) << n;
  }
}

TEST_P(ParseRefusalTest, NonObjectIsMalformed) {
  const ParseCase& c = GetParam();
  for (std::string_view bad : {"[]", "[" /**/ "1]", "1", "\"text\"", "null", "true", "-0.5"}) {
    Status s = c.parse(bad);
    ASSERT_EQ(CodeOf(s), Errc::kMalformed) << bad;
  }
  EXPECT_EQ(CodeOf(c.parse("[" + c.valid + "]")), Errc::kMalformed);
}

TEST_P(ParseRefusalTest, InvalidUtf8IsMalformed) {
  const ParseCase& c = GetParam();
  std::string text = c.valid.substr(0, c.valid.size() - 1) + ",\"k\xff\":1}";
  EXPECT_EQ(CodeOf(c.parse(text)), Errc::kMalformed);
}

TEST_P(ParseRefusalTest, WrongProtocolVersion) {
  const ParseCase& c = GetParam();
  if (!c.versioned) {
    // Not versioned: a protocol field is an unknown field.
    EXPECT_EQ(CodeOf(c.parse(Edit(c.valid, [](boost::json::object& o) { o["protocol"] = 1; }))),
              Errc::kMalformed);
    return;
  }
  for (std::int64_t version : {0LL, 2LL, -1LL, 1LL << 40}) {
    Status s = c.parse(Edit(c.valid, [&](boost::json::object& o) { o["protocol"] = version; }));
    EXPECT_EQ(CodeOf(s), Errc::kUnsupportedVersion) << version;
  }
  // Another version may have other fields: the version is reported, not the field mismatch.
  Status future = c.parse(R"({"protocol":2,"something":"new"})");
  EXPECT_EQ(CodeOf(future), Errc::kUnsupportedVersion);
  for (boost::json::value bad : {boost::json::value("1"), boost::json::value(1.0),
                                 boost::json::value(nullptr), boost::json::value(true)}) {
    Status s = c.parse(Edit(c.valid, [&](boost::json::object& o) { o["protocol"] = bad; }));
    EXPECT_EQ(CodeOf(s), Errc::kMalformed) << boost::json::serialize(bad);
  }
}

TEST_P(ParseRefusalTest, DeepNestingIsRefusedWithoutCrash) {
  const ParseCase& c = GetParam();
  const std::size_t depth = 20000;
  std::string arrays = std::string(depth, '[') + std::string(depth, ']');
  EXPECT_EQ(CodeOf(c.parse(arrays)), Errc::kMalformed);
  std::string inside = c.valid.substr(0, c.valid.size() - 1) + ",\"deep\":" + arrays + "}";
  EXPECT_EQ(CodeOf(c.parse(inside)), Errc::kMalformed);
  std::string objects;
  for (std::size_t i = 0; i < 5000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(5000, '}');
  EXPECT_EQ(CodeOf(c.parse(objects)), Errc::kMalformed);
  // Just past the depth limit, and inside an otherwise valid message.
  std::string shallow = c.valid.substr(0, c.valid.size() - 1) +
                        ",\"deep\":" + std::string(20, '[') + std::string(20, ']') + "}";
  EXPECT_EQ(CodeOf(c.parse(shallow)), Errc::kMalformed);
}

INSTANTIATE_TEST_SUITE_P(Wire, ParseRefusalTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<ParseCase>& info) {
                           return info.param.name;
                         });

// ---- round trips ----

class WireTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitCrypto()); }
};

TEST_F(WireTest, HostRegistrationRoundTrip) {
  HostRegistration in = SampleRegistration();
  std::string text = SerializeHostRegistration(in);
  auto out = ParseHostRegistration(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->protocol, kProtocolVersion);
  EXPECT_EQ(out->public_key, in.public_key);
  EXPECT_EQ(out->name, in.name);
  EXPECT_EQ(out->issued_at, in.issued_at);
  ASSERT_EQ(out->benchmark.train.size(), 2u);
  EXPECT_EQ(out->benchmark.train[1].model, "zoo:cnn:small");
  ExpectSameBits(out->benchmark.train[1].samples_per_s, 1.0 / 3.0);
  ExpectSameBits(out->benchmark.matmul_gflops, in.benchmark.matmul_gflops);
  EXPECT_EQ(out->benchmark.cpu_threads, 16);
  EXPECT_EQ(out->benchmark.cuda_devices, 2);
  EXPECT_EQ(out->benchmark.cuda_names, in.benchmark.cuda_names);
  ExpectSameBits(out->benchmark.cuda_matmul_gflops, in.benchmark.cuda_matmul_gflops);
  EXPECT_EQ(out->benchmark.torch_version, "2.1.0");
  EXPECT_EQ(out->capabilities.cpu_cores, 8);
  EXPECT_EQ(out->capabilities.memory_mb, 65536u);
  EXPECT_TRUE(out->capabilities.cuda);
  EXPECT_EQ(out->capabilities.client_version, "0.1.0");
  ASSERT_TRUE(out->benchmark.gpu.has_value());
  EXPECT_EQ(out->benchmark.gpu->status, in.benchmark.gpu->status);
  EXPECT_EQ(out->benchmark.gpu->driver, "550.54.15");
  ASSERT_EQ(out->benchmark.gpu->devices.size(), 2u);
  EXPECT_EQ(out->benchmark.gpu->devices[1].name, in.benchmark.gpu->devices[1].name);
  EXPECT_EQ(out->benchmark.gpu->devices[0].memory_mb, 143771u);
  EXPECT_EQ(out->benchmark.gpu->devices[1].memory_mb, 81920u);
  EXPECT_EQ(SerializeHostRegistration(*out), text);

  HostRegistration empty_lists = in;
  empty_lists.benchmark.train.clear();
  empty_lists.benchmark.cuda_names.clear();
  empty_lists.name = "";
  auto back = ParseHostRegistration(SerializeHostRegistration(empty_lists));
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_TRUE(back->benchmark.train.empty());
  EXPECT_TRUE(back->name.empty());
}

TEST_F(WireTest, HostRegisteredRoundTrip) {
  std::string text = SerializeHostRegistered(SampleRegistered());
  auto out = ParseHostRegistered(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->host_id, 42);
  EXPECT_EQ(out->token, kIdB);
  EXPECT_EQ(SerializeHostRegistered(*out), text);
}

TEST_F(WireTest, WorkRequestRoundTrip) {
  std::string text = SerializeWorkRequest(SampleWorkRequest());
  auto out = ParseWorkRequest(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->kinds, SampleWorkRequest().kinds);
  EXPECT_EQ(SerializeWorkRequest(*out), text);
}

TEST_F(WireTest, ManifestRoundTrip) {
  Manifest in = SampleManifest();
  std::string text = SerializeManifest(in);
  auto out = ParseManifest(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->unit_id, 9000000000);
  EXPECT_EQ(out->job_id, 7);
  EXPECT_EQ(out->round, 3);
  EXPECT_EQ(out->attempt, 2);
  EXPECT_EQ(out->host_id, 42);
  EXPECT_EQ(out->kind, kUnitFinetune);
  EXPECT_EQ(out->model_spec, in.model_spec);
  EXPECT_EQ(out->model.id, kIdA);
  EXPECT_EQ(out->model.size, 1234u);
  EXPECT_EQ(out->model.raw_size, 5678u);
  EXPECT_EQ(out->data.id, kIdB);
  EXPECT_EQ(out->data.raw_size, 18446744073709551615ull);
  EXPECT_EQ(out->params.local_steps, 50);
  EXPECT_EQ(out->params.batch_size, 32);
  ExpectSameBits(out->params.lr, 0.1);
  ExpectSameBits(out->params.momentum, 0.9);
  ExpectSameBits(out->params.weight_decay, 1e-4);
  EXPECT_EQ(out->params.optimizer, "sgd");
  EXPECT_EQ(out->params.seed, 18446744073709551615ull);
  EXPECT_EQ(out->update_encoding, "int8");
  EXPECT_EQ(out->issued_at, 1700000000);
  EXPECT_EQ(out->deadline, 1700000600);
  EXPECT_EQ(SerializeManifest(*out), text);
}

TEST_F(WireTest, EvalManifestMayHaveZeroParams) {
  Manifest in = SampleManifest();
  in.kind = std::string(kUnitEval);
  in.params = UnitParams{};
  in.update_encoding = "";
  auto out = ParseManifest(SerializeManifest(in));
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->kind, kUnitEval);
  EXPECT_EQ(out->params.local_steps, 0);
  EXPECT_EQ(out->params.optimizer, "");
  EXPECT_EQ(out->update_encoding, "");

  // The same parameters on a finetune unit are unusable.
  in.kind = std::string(kUnitFinetune);
  EXPECT_EQ(CodeOf(AsStatus(ParseManifest(SerializeManifest(in)))), Errc::kMalformed);
}

TEST_F(WireTest, ResultPayloadRoundTrip) {
  ResultPayload in = SampleResult();
  std::string text = SerializeResultPayload(in);
  auto out = ParseResultPayload(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->unit_id, in.unit_id);
  EXPECT_EQ(out->host_id, 42);
  EXPECT_EQ(out->attempt, 2);
  EXPECT_EQ(out->manifest_hash, kIdC);
  EXPECT_EQ(out->kind, kUnitFinetune);
  ASSERT_TRUE(out->update.has_value());
  EXPECT_EQ(out->update->id, kIdA);
  EXPECT_EQ(out->update->size, 100u);
  EXPECT_EQ(out->update->raw_size, 400u);
  ExpectSameBits(out->metrics.loss, in.metrics.loss);
  ExpectSameBits(out->metrics.accuracy, 0.875);
  ExpectSameBits(out->metrics.first_loss, in.metrics.first_loss);
  EXPECT_EQ(out->metrics.samples, 1600);
  ExpectSameBits(out->wall_seconds, 12.5);
  EXPECT_EQ(SerializeResultPayload(*out), text);

  in.update.reset();
  in.kind = std::string(kUnitEval);
  std::string no_update = SerializeResultPayload(in);
  EXPECT_NE(no_update.find("\"update\":null"), std::string::npos) << no_update;
  auto eval = ParseResultPayload(no_update);
  ASSERT_TRUE(eval) << eval.error().ToString();
  EXPECT_FALSE(eval->update.has_value());
  EXPECT_EQ(SerializeResultPayload(*eval), no_update);
}

TEST_F(WireTest, ResultAckRoundTrip) {
  for (const char* status : {"accepted", "duplicate"}) {
    ResultAck in;
    in.status = status;
    auto out = ParseResultAck(SerializeResultAck(in));
    ASSERT_TRUE(out) << out.error().ToString();
    EXPECT_EQ(out->status, status);
  }
}

TEST_F(WireTest, JobSpecRoundTrip) {
  JobSpec in = SampleJobSpec();
  std::string text = SerializeJobSpec(in);
  auto out = ParseJobSpec(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->name, in.name);
  EXPECT_EQ(out->model, "catalog:mlp");
  EXPECT_EQ(out->dataset, "fashion-mnist");
  EXPECT_EQ(out->rounds, 5);
  EXPECT_EQ(out->units_per_round, 4);
  EXPECT_EQ(out->eval_units, 2);
  EXPECT_EQ(out->params.optimizer, "adam");
  EXPECT_EQ(out->params.seed, in.params.seed);
  EXPECT_EQ(out->aggregator, "diloco");
  ExpectSameBits(out->outer_lr, 0.7);
  ExpectSameBits(out->outer_momentum, 0.9);
  EXPECT_EQ(out->robust, "multi_krum");
  ExpectSameBits(out->trim_fraction, 0.1);
  EXPECT_EQ(out->krum_byzantine, 2);
  ExpectSameBits(out->norm_bound, 2.5);
  EXPECT_EQ(out->update_encoding, "fp32");
  ExpectSameBits(out->test_fraction, 0.2);
  EXPECT_EQ(out->max_train_samples, 6000);
  EXPECT_EQ(out->max_test_samples, 0);
  EXPECT_EQ(out->deadline_s, 600);
  EXPECT_EQ(out->publish_as, "fashion-v1");
  EXPECT_EQ(SerializeJobSpec(*out), text);
}

TEST_F(WireTest, JobSpecRobustDefaults) {
  // A spec built in code without naming a rule gets the recommended one (docs/SECURITY.md).
  JobSpec d;
  EXPECT_EQ(d.robust, "centered_clip");
  EXPECT_EQ(d.norm_bound, 3.0);
  EXPECT_EQ(d.trim_fraction, 0.2);
  EXPECT_EQ(d.krum_byzantine, 1);
  JobSpec in = SampleJobSpec();
  in.robust = d.robust;
  in.norm_bound = d.norm_bound;
  in.trim_fraction = d.trim_fraction;
  in.krum_byzantine = d.krum_byzantine;
  auto out = ParseJobSpec(SerializeJobSpec(in));
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->robust, "centered_clip");
  EXPECT_EQ(out->norm_bound, 3.0);
}

// The demo's job files (scripts/jobs) are what `ubcp submit` sends: they must stay valid specs.
TEST_F(WireTest, DemoJobFilesParse) {
  namespace fs = std::filesystem;
  fs::path root;
  if (const char* env = std::getenv("UBCP_SOURCE_DIR")) root = env;
  for (fs::path p = fs::current_path(); root.empty() && !p.empty(); p = p.parent_path()) {
    if (fs::exists(p / "scripts" / "jobs")) root = p;
    if (p == p.parent_path()) break;
  }
  ASSERT_FALSE(root.empty()) << "set UBCP_SOURCE_DIR to the source tree";
  int files = 0;
  for (const auto& entry : fs::directory_iterator(root / "scripts" / "jobs")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    auto spec = ParseJobSpec(text.str());
    ASSERT_TRUE(spec) << entry.path() << ": " << spec.error().ToString();
    EXPECT_EQ(spec->robust, "centered_clip") << entry.path();
    ++files;
  }
  EXPECT_GE(files, 2);
}

TEST_F(WireTest, JobCreatedRoundTrip) {
  auto out = ParseJobCreated(SerializeJobCreated(SampleJobCreated()));
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->job_id, 77);
}

TEST_F(WireTest, JobStatusRoundTrip) {
  JobStatus in = SampleJobStatus();
  std::string text = SerializeJobStatus(in);
  auto out = ParseJobStatus(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->job_id, 77);
  EXPECT_EQ(out->name, in.name);
  EXPECT_EQ(out->state, "running");
  EXPECT_EQ(out->model_spec, in.model_spec);
  EXPECT_EQ(out->rounds, 5);
  EXPECT_EQ(out->current_round, 2);
  ASSERT_EQ(out->history.size(), 2u);
  EXPECT_EQ(out->history[0].round, 0);
  EXPECT_EQ(out->history[0].model_blob, kIdA);
  EXPECT_EQ(out->history[0].units_done, 3);
  EXPECT_EQ(out->history[0].units_total, 4);
  EXPECT_TRUE(out->history[0].evaluated);
  ExpectSameBits(out->history[0].eval_loss, 0.4567);
  ExpectSameBits(out->history[0].eval_accuracy, 0.8123);
  EXPECT_EQ(out->history[0].eval_samples, 2000);
  ExpectSameBits(out->history[0].train_loss, 0.398);
  EXPECT_EQ(out->history[1].model_blob, "");
  EXPECT_FALSE(out->history[1].evaluated);
  EXPECT_EQ(out->final_model, "");
  EXPECT_EQ(out->hosts, 3);
  EXPECT_EQ(SerializeJobStatus(*out), text);
}

TEST_F(WireTest, JobStatusWithThousandRoundsFits) {
  JobStatus in = SampleJobStatus();
  in.state = "done";
  in.rounds = 1000;
  in.current_round = 1000;
  in.final_model = kIdC;
  in.history.clear();
  for (int i = 0; i < 1000; ++i) in.history.push_back(SampleRound(i));
  std::string text = SerializeJobStatus(in);
  EXPECT_GT(text.size(), kMaxRequestJson);
  auto out = ParseJobStatus(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->history.size(), 1000u);
  EXPECT_EQ(out->final_model, kIdC);

  in.history.push_back(SampleRound(1000));
  EXPECT_EQ(CodeOf(AsStatus(ParseJobStatus(SerializeJobStatus(in)))), Errc::kMalformed);
}

TEST_F(WireTest, ErrorBodyRoundTripsEveryCode) {
  for (int c = static_cast<int>(Errc::kInvalidArgument); c <= static_cast<int>(Errc::kInternal);
       ++c) {
    Error in = MakeError(static_cast<Errc>(c), "message " + std::to_string(c));
    std::string text = SerializeError(in);
    EXPECT_NE(text.find("\"error\":\"" + std::string(ErrcName(in.code)) + "\""), std::string::npos)
        << text;
    auto out = ParseErrorBody(text);
    ASSERT_TRUE(out) << out.error().ToString();
    EXPECT_EQ(out->code, in.code);
    EXPECT_EQ(out->message, in.message);
  }
}

TEST_F(WireTest, ErrorBodyRefusesUnknownCode) {
  EXPECT_EQ(CodeOf(AsStatus(ParseErrorBody(R"({"error":"teapot","message":"x"})"))),
            Errc::kMalformed);
  EXPECT_EQ(CodeOf(AsStatus(ParseErrorBody(R"({"error":"","message":"x"})"))), Errc::kMalformed);
}

TEST_F(WireTest, SerializeErrorAlwaysProducesParseableJson) {
  // Invalid UTF-8 (stray continuation, truncated sequence, surrogate, overlong) and a message far
  // longer than the wire allows.
  std::string nasty = "bad \x80 \xe2\x82 \xed\xa0\x80 \xc0\xaf ok \xe2\x82\xac";
  auto out = ParseErrorBody(SerializeError(MakeError(Errc::kIo, nasty)));
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->code, Errc::kIo);
  EXPECT_EQ(out->message.substr(0, 4), "bad ");
  EXPECT_NE(out->message.find("ok \xe2\x82\xac"), std::string::npos);
  EXPECT_EQ(out->message.find('\x80'), std::string::npos);

  std::string huge;
  for (int i = 0; i < 5000; ++i) huge += "\xc3\xa9";  // two bytes each
  auto cut = ParseErrorBody(SerializeError(MakeError(Errc::kInternal, huge)));
  ASSERT_TRUE(cut) << cut.error().ToString();
  EXPECT_LE(cut->message.size(), 1024u);
  EXPECT_GE(cut->message.size(), 1000u);
  EXPECT_EQ(cut->message.size() % 2, 0u);  // never split a character
}

TEST_F(WireTest, DoublesRoundTripBitExact) {
  // Boost 1.81's own parser misreads about one double in ten by an ulp; the codec must not.
  std::mt19937_64 rng(12345);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < 20000; ++i) {
    ResultPayload in = SampleResult();
    double any = 0;
    do {
      any = std::bit_cast<double>(rng());
    } while (!std::isfinite(any));
    in.metrics.loss = any;
    in.metrics.first_loss = unit(rng) * 10;
    in.metrics.accuracy = unit(rng);
    in.wall_seconds = std::abs(any) < 1e300 ? std::abs(any) : unit(rng);
    auto out = ParseResultPayload(SerializeResultPayload(in));
    ASSERT_TRUE(out) << out.error().ToString();
    ASSERT_EQ(std::bit_cast<std::uint64_t>(out->metrics.loss),
              std::bit_cast<std::uint64_t>(in.metrics.loss))
        << in.metrics.loss;
    ASSERT_EQ(std::bit_cast<std::uint64_t>(out->metrics.first_loss),
              std::bit_cast<std::uint64_t>(in.metrics.first_loss));
    ASSERT_EQ(std::bit_cast<std::uint64_t>(out->metrics.accuracy),
              std::bit_cast<std::uint64_t>(in.metrics.accuracy));
    ASSERT_EQ(std::bit_cast<std::uint64_t>(out->wall_seconds),
              std::bit_cast<std::uint64_t>(in.wall_seconds));
  }
  // Extremes: smallest subnormal, largest finite, negative zero.
  ResultPayload in = SampleResult();
  in.metrics.loss = std::numeric_limits<double>::denorm_min();
  in.metrics.first_loss = -std::numeric_limits<double>::max();
  in.wall_seconds = std::numeric_limits<double>::max();
  in.metrics.accuracy = -0.0;
  auto out = ParseResultPayload(SerializeResultPayload(in));
  ASSERT_TRUE(out) << out.error().ToString();
  ExpectSameBits(out->metrics.loss, in.metrics.loss);
  ExpectSameBits(out->metrics.first_loss, in.metrics.first_loss);
  ExpectSameBits(out->wall_seconds, in.wall_seconds);
  ExpectSameBits(out->metrics.accuracy, -0.0);
}

// ---- field checks ----

struct FieldCase {
  const char* what;
  std::function<void(boost::json::object&)> edit;
};

void ExpectAll(const std::string& valid, const std::function<Status(std::string_view)>& parse,
               const std::vector<FieldCase>& cases, std::optional<Errc> expected) {
  for (const FieldCase& c : cases) {
    Status s = parse(Edit(valid, c.edit));
    EXPECT_EQ(CodeOf(s), expected) << c.what << (s ? "" : ": " + s.error().message);
  }
}

std::string Repeat(char c, std::size_t n) { return std::string(n, c); }

TEST_F(WireTest, UnitAbandonRoundTripsAndIsBounded) {
  const UnitAbandon in = SampleAbandon();
  const std::string text = SerializeUnitAbandon(in);
  auto out = ParseUnitAbandon(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_EQ(out->unit_id, in.unit_id);
  EXPECT_EQ(out->attempt, 3);
  EXPECT_EQ(out->manifest_hash, kIdC);
  EXPECT_EQ(out->reason, in.reason);
  EXPECT_EQ(SerializeUnitAbandon(*out), text);

  // The longest reason, every byte of it escaped six-fold, still fits the body limit; one byte
  // more is refused.
  UnitAbandon longest = in;
  longest.reason = std::string(kMaxAbandonReason, '\x01');
  const std::string longest_text = SerializeUnitAbandon(longest);
  EXPECT_GT(longest_text.size(), 6 * kMaxAbandonReason);
  EXPECT_LE(longest_text.size(), kMaxRequestJson);
  auto parsed = ParseUnitAbandon(longest_text);
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->reason, longest.reason);

  // A reason cut by the sender with FitUtf8 fits, whatever text it started from.
  UnitAbandon cut = in;
  cut.reason =
      FitUtf8(std::string(kMaxAbandonReason, 'x') + "\xc3\xa9 and more", kMaxAbandonReason);
  EXPECT_TRUE(ParseUnitAbandon(SerializeUnitAbandon(cut)));

  const std::string valid = SerializeUnitAbandon(in);
  auto parse = [](std::string_view s) { return AsStatus(ParseUnitAbandon(s)); };
  using O = boost::json::object;
  ExpectAll(valid, parse,
            {
                {"reason too long", [](O& o) { o["reason"] = Repeat('r', kMaxAbandonReason + 1); }},
                {"reason null", [](O& o) { o["reason"] = nullptr; }},
                {"reason number", [](O& o) { o["reason"] = 1; }},
                {"manifest_hash short", [](O& o) { o["manifest_hash"] = "abc"; }},
                {"manifest_hash empty", [](O& o) { o["manifest_hash"] = ""; }},
                {"manifest_hash upper", [](O& o) { o["manifest_hash"] = Repeat('A', 64); }},
                {"manifest_hash too long", [](O& o) { o["manifest_hash"] = Repeat('a', 65); }},
                {"unit_id -1", [](O& o) { o["unit_id"] = -1; }},
                {"unit_id 1.5", [](O& o) { o["unit_id"] = 1.5; }},
                {"unit_id string", [](O& o) { o["unit_id"] = "7"; }},
                {"attempt -1", [](O& o) { o["attempt"] = -1; }},
                {"attempt 2^31", [](O& o) { o["attempt"] = 2147483648LL; }},
                {"attempt bool", [](O& o) { o["attempt"] = true; }},
            },
            Errc::kMalformed);
  ExpectAll(valid, parse, {{"empty reason", [](O& o) { o["reason"] = ""; }}}, std::nullopt);
  // Over the body limit: refused before parsing.
  const std::string padded =
      valid.substr(0, valid.size() - 1) + R"(,"pad":")" + Repeat('p', kMaxRequestJson) + "\"}";
  EXPECT_EQ(CodeOf(parse(padded)), Errc::kTooLarge);
}

TEST_F(WireTest, UnitAbandonAckRoundTripsAndIsStrict) {
  for (bool released : {true, false}) {
    auto out = ParseUnitAbandonAck(SerializeUnitAbandonAck({kProtocolVersion, released}));
    ASSERT_TRUE(out) << out.error().ToString();
    EXPECT_EQ(out->released, released);
  }
  auto parse = [](std::string_view s) { return AsStatus(ParseUnitAbandonAck(s)); };
  using O = boost::json::object;
  ExpectAll(SerializeUnitAbandonAck({kProtocolVersion, true}), parse,
            {
                {"released string", [](O& o) { o["released"] = "true"; }},
                {"released 1", [](O& o) { o["released"] = 1; }},
                {"released null", [](O& o) { o["released"] = nullptr; }},
            },
            Errc::kMalformed);
}

TEST_F(WireTest, JobSpecRanges) {
  const std::string valid = SerializeJobSpec(SampleJobSpec());
  auto parse = [](std::string_view s) { return AsStatus(ParseJobSpec(s)); };
  using O = boost::json::object;
  auto params = [](O& o) -> O& { return At(o, "params"); };
  ExpectAll(
      valid, parse,
      {
          {"rounds 0", [](O& o) { o["rounds"] = 0; }},
          {"rounds 1001", [](O& o) { o["rounds"] = 1001; }},
          {"rounds 2.0", [](O& o) { o["rounds"] = 2.0; }},
          {"rounds 2^63", [](O& o) { o["rounds"] = 9223372036854775808ull; }},
          {"units_per_round 0", [](O& o) { o["units_per_round"] = 0; }},
          {"units_per_round 1025", [](O& o) { o["units_per_round"] = 1025; }},
          {"eval_units 0", [](O& o) { o["eval_units"] = 0; }},
          {"eval_units 65", [](O& o) { o["eval_units"] = 65; }},
          {"local_steps 0", [&](O& o) { params(o)["local_steps"] = 0; }},
          {"local_steps 100001", [&](O& o) { params(o)["local_steps"] = 100001; }},
          {"batch_size 0", [&](O& o) { params(o)["batch_size"] = 0; }},
          {"batch_size 4097", [&](O& o) { params(o)["batch_size"] = 4097; }},
          {"lr 0", [&](O& o) { params(o)["lr"] = 0.0; }},
          {"lr -0.1", [&](O& o) { params(o)["lr"] = -0.1; }},
          {"lr 10.5", [&](O& o) { params(o)["lr"] = 10.5; }},
          {"lr string", [&](O& o) { params(o)["lr"] = "0.1"; }},
          {"momentum 1", [&](O& o) { params(o)["momentum"] = 1.0; }},
          {"momentum -0.1", [&](O& o) { params(o)["momentum"] = -0.1; }},
          {"weight_decay -1", [&](O& o) { params(o)["weight_decay"] = -1.0; }},
          {"optimizer rmsprop", [&](O& o) { params(o)["optimizer"] = "rmsprop"; }},
          {"seed -1", [&](O& o) { params(o)["seed"] = -1; }},
          {"seed 1.5", [&](O& o) { params(o)["seed"] = 1.5; }},
          {"params unknown", [&](O& o) { params(o)["nesterov"] = true; }},
          {"params missing lr", [&](O& o) { params(o).erase("lr"); }},
          {"outer_lr 0", [](O& o) { o["outer_lr"] = 0; }},
          {"outer_lr 11", [](O& o) { o["outer_lr"] = 11; }},
          {"outer_momentum 1", [](O& o) { o["outer_momentum"] = 1; }},
          {"outer_momentum -0.5", [](O& o) { o["outer_momentum"] = -0.5; }},
          {"test_fraction 0", [](O& o) { o["test_fraction"] = 0; }},
          {"test_fraction 0.95", [](O& o) { o["test_fraction"] = 0.95; }},
          {"deadline_s 9", [](O& o) { o["deadline_s"] = 9; }},
          {"deadline_s 86401", [](O& o) { o["deadline_s"] = 86401; }},
          {"model prefix", [](O& o) { o["model"] = "hf:bert"; }},
          {"model empty", [](O& o) { o["model"] = ""; }},
          {"aggregator", [](O& o) { o["aggregator"] = "fedsgd"; }},
          {"robust krum", [](O& o) { o["robust"] = "krum"; }},
          {"robust empty", [](O& o) { o["robust"] = ""; }},
          {"trim_fraction 0.46", [](O& o) { o["trim_fraction"] = 0.46; }},
          {"trim_fraction -0.01", [](O& o) { o["trim_fraction"] = -0.01; }},
          {"krum_byzantine -1", [](O& o) { o["krum_byzantine"] = -1; }},
          {"krum_byzantine 65", [](O& o) { o["krum_byzantine"] = 65; }},
          {"krum_byzantine 1.5", [](O& o) { o["krum_byzantine"] = 1.5; }},
          {"norm_bound 0.99", [](O& o) { o["norm_bound"] = 0.99; }},
          {"norm_bound 0", [](O& o) { o["norm_bound"] = 0; }},
          {"norm_bound 1000.5", [](O& o) { o["norm_bound"] = 1000.5; }},
          {"update_encoding", [](O& o) { o["update_encoding"] = "fp16"; }},
          {"max_train_samples -1", [](O& o) { o["max_train_samples"] = -1; }},
          {"max_test_samples -1", [](O& o) { o["max_test_samples"] = -1; }},
          {"dataset empty", [](O& o) { o["dataset"] = ""; }},
          {"name too long", [](O& o) { o["name"] = Repeat('n', kMaxStringField + 1); }},
          {"publish_as too long", [](O& o) { o["publish_as"] = Repeat('p', kMaxStringField + 1); }},
          {"model too long", [](O& o) { o["model"] = "zoo:" + Repeat('m', kMaxStringField); }},
      },
      Errc::kMalformed);
  // Boundaries are inside.
  ExpectAll(valid, parse,
            {
                {"rounds 1", [](O& o) { o["rounds"] = 1; }},
                {"rounds 1000", [](O& o) { o["rounds"] = 1000; }},
                {"units_per_round 1024", [](O& o) { o["units_per_round"] = 1024; }},
                {"eval_units 64", [](O& o) { o["eval_units"] = 64; }},
                {"local_steps 100000", [&](O& o) { params(o)["local_steps"] = 100000; }},
                {"batch_size 4096", [&](O& o) { params(o)["batch_size"] = 4096; }},
                {"lr 10", [&](O& o) { params(o)["lr"] = 10.0; }},
                {"lr integer 1", [&](O& o) { params(o)["lr"] = 1; }},
                {"momentum 0", [&](O& o) { params(o)["momentum"] = 0.0; }},
                {"outer_lr 10", [](O& o) { o["outer_lr"] = 10.0; }},
                {"outer_momentum 0", [](O& o) { o["outer_momentum"] = 0.0; }},
                {"test_fraction 0.9", [](O& o) { o["test_fraction"] = 0.9; }},
                {"deadline_s 10", [](O& o) { o["deadline_s"] = 10; }},
                {"deadline_s 86400", [](O& o) { o["deadline_s"] = 86400; }},
                {"model zoo", [](O& o) { o["model"] = "zoo:mlp:784-10"; }},
                {"aggregator fedavg", [](O& o) { o["aggregator"] = "fedavg"; }},
                {"robust mean", [](O& o) { o["robust"] = "mean"; }},
                {"robust median", [](O& o) { o["robust"] = "median"; }},
                {"robust trimmed_mean", [](O& o) { o["robust"] = "trimmed_mean"; }},
                {"robust centered_clip", [](O& o) { o["robust"] = "centered_clip"; }},
                {"trim_fraction 0", [](O& o) { o["trim_fraction"] = 0; }},
                {"trim_fraction 0.45", [](O& o) { o["trim_fraction"] = 0.45; }},
                {"krum_byzantine 0", [](O& o) { o["krum_byzantine"] = 0; }},
                {"krum_byzantine 64", [](O& o) { o["krum_byzantine"] = 64; }},
                {"norm_bound 1", [](O& o) { o["norm_bound"] = 1; }},
                {"norm_bound 1000", [](O& o) { o["norm_bound"] = 1000.0; }},
                {"sgd int8",
                 [&](O& o) {
                   params(o)["optimizer"] = "sgd";
                   o["update_encoding"] = "int8";
                 }},
                {"name at limit", [](O& o) { o["name"] = Repeat('n', kMaxStringField); }},
                {"empty name and publish_as",
                 [](O& o) {
                   o["name"] = "";
                   o["publish_as"] = "";
                 }},
            },
            std::nullopt);
  // A number too large for a double is refused, not turned into infinity.
  std::string inf = valid;
  std::string key = "\"outer_lr\":";
  std::size_t at = inf.find(key);
  ASSERT_NE(at, std::string::npos);
  std::size_t end = inf.find(',', at);
  inf.replace(at + key.size(), end - at - key.size(), "1e400");
  EXPECT_EQ(CodeOf(parse(inf)), Errc::kMalformed);
}

TEST_F(WireTest, ManifestFieldChecks) {
  const std::string valid = SerializeManifest(SampleManifest());
  auto parse = [](std::string_view s) { return AsStatus(ParseManifest(s)); };
  using O = boost::json::object;
  ExpectAll(
      valid, parse,
      {
          {"kind", [](O& o) { o["kind"] = "train"; }},
          {"unit_id -1", [](O& o) { o["unit_id"] = -1; }},
          {"round 1001", [](O& o) { o["round"] = 1001; }},
          {"attempt -1", [](O& o) { o["attempt"] = -1; }},
          {"attempt > int", [](O& o) { o["attempt"] = 1LL << 31; }},
          {"model id short", [](O& o) { At(o, "model")["id"] = Repeat('a', 63); }},
          {"model id upper", [](O& o) { At(o, "model")["id"] = Repeat('A', 64); }},
          {"model id path", [](O& o) { At(o, "model")["id"] = "../" + Repeat('a', 61); }},
          {"data size negative", [](O& o) { At(o, "data")["size"] = -5; }},
          {"data extra field", [](O& o) { At(o, "data")["url"] = "http://x"; }},
          {"data missing raw_size", [](O& o) { At(o, "data").erase("raw_size"); }},
          {"model not object", [](O& o) { o["model"] = kIdA; }},
          {"finetune without encoding", [](O& o) { o["update_encoding"] = ""; }},
          {"finetune without optimizer", [](O& o) { At(o, "params")["optimizer"] = ""; }},
          {"model_spec too long", [](O& o) { o["model_spec"] = Repeat('z', kMaxStringField + 1); }},
          {"deadline negative", [](O& o) { o["deadline"] = -1; }},
          {"host_id string", [](O& o) { o["host_id"] = "42"; }},
      },
      Errc::kMalformed);
}

TEST_F(WireTest, ResultPayloadFieldChecks) {
  const std::string valid = SerializeResultPayload(SampleResult());
  auto parse = [](std::string_view s) { return AsStatus(ParseResultPayload(s)); };
  using O = boost::json::object;
  ExpectAll(valid, parse,
            {
                {"update string", [](O& o) { o["update"] = "none"; }},
                {"update empty object", [](O& o) { o["update"] = O{}; }},
                {"update bad id", [](O& o) { At(o, "update")["id"] = "x"; }},
                {"manifest_hash short", [](O& o) { o["manifest_hash"] = "abc"; }},
                {"manifest_hash empty", [](O& o) { o["manifest_hash"] = ""; }},
                {"kind", [](O& o) { o["kind"] = "mine_bitcoin"; }},
                {"accuracy 1.5", [](O& o) { At(o, "metrics")["accuracy"] = 1.5; }},
                {"samples -1", [](O& o) { At(o, "metrics")["samples"] = -1; }},
                {"metrics extra", [](O& o) { At(o, "metrics")["f1"] = 0.5; }},
                {"metrics missing loss", [](O& o) { At(o, "metrics").erase("loss"); }},
                {"wall_seconds -1", [](O& o) { o["wall_seconds"] = -1.0; }},
                {"wall_seconds bool", [](O& o) { o["wall_seconds"] = true; }},
            },
            Errc::kMalformed);
  ExpectAll(valid, parse, {{"update null", [](O& o) { o["update"] = nullptr; }}}, std::nullopt);
}

TEST_F(WireTest, HostMessageFieldChecks) {
  const std::string reg = SerializeHostRegistration(SampleRegistration());
  auto parse_reg = [](std::string_view s) { return AsStatus(ParseHostRegistration(s)); };
  using O = boost::json::object;
  auto bench = [](O& o) -> O& { return At(o, "benchmark"); };
  ExpectAll(
      reg, parse_reg,
      {
          {"public_key short", [](O& o) { o["public_key"] = Repeat('a', 62); }},
          {"public_key upper", [](O& o) { o["public_key"] = Repeat('F', 64); }},
          {"public_key not hex", [](O& o) { o["public_key"] = Repeat('g', 64); }},
          {"name too long", [](O& o) { o["name"] = Repeat('n', kMaxStringField + 1); }},
          {"issued_at negative", [](O& o) { o["issued_at"] = -1; }},
          {"9 train entries",
           [&](O& o) {
             boost::json::array a;
             for (int i = 0; i < 9; ++i) a.push_back(O{{"model", "m"}, {"samples_per_s", 1}});
             bench(o)["train"] = a;
           }},
          {"train entry not object", [&](O& o) { bench(o)["train"] = boost::json::array{"m"}; }},
          {"train entry extra",
           [&](O& o) {
             bench(o)["train"] =
                 boost::json::array{O{{"model", "m"}, {"samples_per_s", 1}, {"x", 1}}};
           }},
          {"train negative",
           [&](O& o) {
             bench(o)["train"] = boost::json::array{O{{"model", "m"}, {"samples_per_s", -1}}};
           }},
          {"17 cuda names",
           [&](O& o) {
             boost::json::array a;
             for (int i = 0; i < 17; ++i) a.push_back("gpu");
             bench(o)["cuda_names"] = a;
           }},
          {"cuda name not string", [&](O& o) { bench(o)["cuda_names"] = boost::json::array{1}; }},
          {"cuda name too long",
           [&](O& o) {
             bench(o)["cuda_names"] = boost::json::array{Repeat('g', kMaxStringField + 1)};
           }},
          {"cpu_threads -1", [&](O& o) { bench(o)["cpu_threads"] = -1; }},
          {"cuda bool as int", [](O& o) { At(o, "capabilities")["cuda"] = 1; }},
          {"memory negative", [](O& o) { At(o, "capabilities")["memory_mb"] = -1; }},
          {"capabilities extra", [](O& o) { At(o, "capabilities")["tpu"] = false; }},
          {"torch_version too long",
           [&](O& o) { bench(o)["torch_version"] = Repeat('1', kMaxStringField + 1); }},
      },
      Errc::kMalformed);

  const std::string registered = SerializeHostRegistered(SampleRegistered());
  auto parse_registered = [](std::string_view s) { return AsStatus(ParseHostRegistered(s)); };
  ExpectAll(registered, parse_registered,
            {
                {"token not hex", [](O& o) { o["token"] = "secret"; }},
                {"host_id negative", [](O& o) { o["host_id"] = -3; }},
            },
            Errc::kMalformed);

  const std::string work = SerializeWorkRequest(SampleWorkRequest());
  auto parse_work = [](std::string_view s) { return AsStatus(ParseWorkRequest(s)); };
  ExpectAll(work, parse_work,
            {
                {"unknown kind", [](O& o) { o["kinds"] = boost::json::array{"bogus"}; }},
                {"kind not string", [](O& o) { o["kinds"] = boost::json::array{1}; }},
                {"too many kinds",
                 [](O& o) {
                   boost::json::array a;
                   for (int i = 0; i < 9; ++i) a.push_back("eval_batch");
                   o["kinds"] = a;
                 }},
            },
            Errc::kMalformed);
  ExpectAll(work, parse_work, {{"no kinds", [](O& o) { o["kinds"] = boost::json::array{}; }}},
            std::nullopt);

  auto parse_ack = [](std::string_view s) { return AsStatus(ParseResultAck(s)); };
  ExpectAll(SerializeResultAck(SampleAck()), parse_ack,
            {{"status", [](O& o) { o["status"] = "ok"; }}}, Errc::kMalformed);

  auto parse_created = [](std::string_view s) { return AsStatus(ParseJobCreated(s)); };
  ExpectAll(SerializeJobCreated(SampleJobCreated()), parse_created,
            {{"job_id -1", [](O& o) { o["job_id"] = -1; }},
             {"job_id 1.0", [](O& o) { o["job_id"] = 1.0; }}},
            Errc::kMalformed);
}

TEST_F(WireTest, HostRegistrationWithoutGpuIsUnchangedAndStillParses) {
  HostRegistration in = SampleRegistration();
  in.benchmark.gpu.reset();
  const std::string text = SerializeHostRegistration(in);
  // Not reported: the key is left out, so the message is what clients sent before the field.
  EXPECT_EQ(text.find("\"gpu\""), std::string::npos) << text;
  auto out = ParseHostRegistration(text);
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_FALSE(out->benchmark.gpu.has_value());
  EXPECT_EQ(SerializeHostRegistration(*out), text);

  // An older client's registration (no "gpu") and an explicit null both mean "not reported".
  using O = boost::json::object;
  const std::string with_gpu = SerializeHostRegistration(SampleRegistration());
  for (const auto& edit :
       std::vector<std::function<void(O&)>>{[](O& o) { At(o, "benchmark").erase("gpu"); },
                                            [](O& o) { At(o, "benchmark")["gpu"] = nullptr; }}) {
    auto parsed = ParseHostRegistration(Edit(with_gpu, edit));
    ASSERT_TRUE(parsed) << parsed.error().ToString();
    EXPECT_FALSE(parsed->benchmark.gpu.has_value());
  }

  // Present with nothing seen: a host whose probe found no NVIDIA GPU.
  in.benchmark.gpu = GpuReport{"none: NVML not present", "", {}};
  auto none = ParseHostRegistration(SerializeHostRegistration(in));
  ASSERT_TRUE(none) << none.error().ToString();
  ASSERT_TRUE(none->benchmark.gpu.has_value());
  EXPECT_EQ(none->benchmark.gpu->status, "none: NVML not present");
  EXPECT_TRUE(none->benchmark.gpu->driver.empty());
  EXPECT_TRUE(none->benchmark.gpu->devices.empty());
}

TEST_F(WireTest, GpuReportIsParsedStrictlyAndBounded) {
  const std::string reg = SerializeHostRegistration(SampleRegistration());
  auto parse = [](std::string_view s) { return AsStatus(ParseHostRegistration(s)); };
  using O = boost::json::object;
  auto gpu = [](O& o) -> O& { return At(At(o, "benchmark"), "gpu"); };
  auto devices = [](std::size_t n, std::size_t name_len) {
    boost::json::array a;
    for (std::size_t i = 0; i < n; ++i) {
      a.push_back(O{{"name", Repeat('g', name_len)}, {"memory_mb", 1024}});
    }
    return a;
  };
  ExpectAll(
      reg, parse,
      {
          {"gpu not object", [](O& o) { At(o, "benchmark")["gpu"] = "H200"; }},
          {"gpu empty object", [](O& o) { At(o, "benchmark")["gpu"] = O{}; }},
          {"gpu unknown key", [&](O& o) { gpu(o)["usable"] = true; }},
          {"status missing", [&](O& o) { gpu(o).erase("status"); }},
          {"driver missing", [&](O& o) { gpu(o).erase("driver"); }},
          {"devices missing", [&](O& o) { gpu(o).erase("devices"); }},
          {"status null", [&](O& o) { gpu(o)["status"] = nullptr; }},
          {"status too long", [&](O& o) { gpu(o)["status"] = Repeat('s', kMaxGpuStatus + 1); }},
          {"driver too long", [&](O& o) { gpu(o)["driver"] = Repeat('9', kMaxGpuDriver + 1); }},
          {"17 devices", [&](O& o) { gpu(o)["devices"] = devices(kMaxGpuDevices + 1, 4); }},
          {"devices not array", [&](O& o) { gpu(o)["devices"] = O{}; }},
          {"device not object", [&](O& o) { gpu(o)["devices"] = boost::json::array{"H200"}; }},
          {"device name too long",
           [&](O& o) { gpu(o)["devices"] = devices(1, kMaxStringField + 1); }},
          {"device unknown key",
           [&](O& o) {
             gpu(o)["devices"] =
                 boost::json::array{O{{"name", "H200"}, {"memory_mb", 1}, {"usable", true}}};
           }},
          {"device memory missing",
           [&](O& o) {
             gpu(o)["devices"] = boost::json::array{O{{"name", "H200"}}};
           }},
          {"device memory negative",
           [&](O& o) {
             gpu(o)["devices"] = boost::json::array{O{{"name", "H200"}, {"memory_mb", -1}}};
           }},
          {"device memory fraction",
           [&](O& o) {
             gpu(o)["devices"] = boost::json::array{O{{"name", "H200"}, {"memory_mb", 1.5}}};
           }},
      },
      Errc::kMalformed);
  // Every bound is inclusive.
  ExpectAll(reg, parse,
            {
                {"status at limit", [&](O& o) { gpu(o)["status"] = Repeat('s', kMaxGpuStatus); }},
                {"driver at limit", [&](O& o) { gpu(o)["driver"] = Repeat('9', kMaxGpuDriver); }},
                {"16 devices with longest names",
                 [&](O& o) { gpu(o)["devices"] = devices(kMaxGpuDevices, kMaxStringField); }},
                {"no devices", [&](O& o) { gpu(o)["devices"] = boost::json::array{}; }},
            },
            std::nullopt);
}

TEST_F(WireTest, HostBenchmarkAloneRoundTripsAsInsideARegistration) {
  const HostRegistration reg = SampleRegistration();
  const std::string text = SerializeHostBenchmark(reg.benchmark);
  // The same object as the registration's "benchmark", so stored benchmarks read back alike.
  EXPECT_EQ(boost::json::parse(text),
            boost::json::parse(SerializeHostRegistration(reg)).as_object().at("benchmark"));
  auto out = ParseHostBenchmark(text);
  ASSERT_TRUE(out) << out.error().ToString();
  ASSERT_TRUE(out->gpu.has_value());
  EXPECT_EQ(out->gpu->devices.size(), 2u);
  EXPECT_EQ(SerializeHostBenchmark(*out), text);

  HostBenchmark no_gpu = reg.benchmark;
  no_gpu.gpu.reset();
  auto back = ParseHostBenchmark(SerializeHostBenchmark(no_gpu));
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_FALSE(back->gpu.has_value());

  using O = boost::json::object;
  auto parse = [](std::string_view s) { return AsStatus(ParseHostBenchmark(s)); };
  ExpectAll(text, parse,
            {
                {"protocol field", [](O& o) { o["protocol"] = kProtocolVersion; }},
                {"unknown field", [](O& o) { o["tpu"] = 1; }},
                {"gpu status too long",
                 [](O& o) { At(o, "gpu")["status"] = Repeat('s', kMaxGpuStatus + 1); }},
                {"cuda_devices missing", [](O& o) { o.erase("cuda_devices"); }},
            },
            Errc::kMalformed);
  EXPECT_EQ(CodeOf(parse(text + std::string(kMaxPayloadJson, ' '))), Errc::kTooLarge);
}

TEST_F(WireTest, FitUtf8CutsAtCharacterBoundariesAndRepairsBytes) {
  EXPECT_EQ(FitUtf8("NVIDIA H200", 256), "NVIDIA H200");
  EXPECT_EQ(FitUtf8("abcdef", 4), "abcd");
  // "\xc3\xa9" is one two-byte character: a cut inside it drops it whole.
  EXPECT_EQ(FitUtf8("ab\xc3\xa9", 3), "ab");
  EXPECT_EQ(FitUtf8("ab\xc3\xa9", 4), "ab\xc3\xa9");
  EXPECT_EQ(FitUtf8("a\xff\xc3z", 16), "a??z");
  EXPECT_EQ(FitUtf8("", 0), "");
  // Whatever it returns is accepted where the bound is the field's limit.
  HostRegistration r = SampleRegistration();
  r.benchmark.gpu->status = FitUtf8(std::string(300, '\xe2'), kMaxGpuStatus);
  r.benchmark.gpu->driver = FitUtf8(std::string(40, 'x') + std::string(40, '\xa9'), kMaxGpuDriver);
  auto parsed = ParseHostRegistration(SerializeHostRegistration(r));
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->benchmark.gpu->status, std::string(kMaxGpuStatus, '?'));
  EXPECT_EQ(parsed->benchmark.gpu->driver.size(), kMaxGpuDriver);
}

TEST_F(WireTest, JobStatusFieldChecks) {
  const std::string valid = SerializeJobStatus(SampleJobStatus());
  auto parse = [](std::string_view s) { return AsStatus(ParseJobStatus(s)); };
  using O = boost::json::object;
  auto round0 = [](O& o) -> O& { return o.at("history").as_array()[0].as_object(); };
  ExpectAll(valid, parse,
            {
                {"state", [](O& o) { o["state"] = "paused"; }},
                {"final_model", [](O& o) { o["final_model"] = "abc"; }},
                {"rounds 1001", [](O& o) { o["rounds"] = 1001; }},
                {"history not array", [](O& o) { o["history"] = O{}; }},
                {"history entry extra", [&](O& o) { round0(o)["extra"] = 1; }},
                {"history model_blob", [&](O& o) { round0(o)["model_blob"] = "zz"; }},
                {"history accuracy", [&](O& o) { round0(o)["eval_accuracy"] = 2.0; }},
                {"history evaluated", [&](O& o) { round0(o)["evaluated"] = "yes"; }},
                {"history missing round", [&](O& o) { round0(o).erase("round"); }},
                {"hosts -1", [](O& o) { o["hosts"] = -1; }},
            },
            Errc::kMalformed);
}

// ---- envelope ----

TEST_F(WireTest, EnvelopeRoundTripAndVerify) {
  SigningKey key = SigningKey::Generate();
  const std::string payload = SerializeManifest(SampleManifest());
  SignedEnvelope env = SignPayload(key, kDomainManifest, payload);
  EXPECT_EQ(env.payload, payload);
  EXPECT_EQ(env.signer, key.public_key().Hex());
  EXPECT_EQ(env.signature.size(), 128u);
  ASSERT_TRUE(VerifyEnvelope(env, kDomainManifest, key.public_key()));

  auto parsed = ParseEnvelope(SerializeEnvelope(env));
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->payload, payload);
  EXPECT_EQ(parsed->signer, env.signer);
  EXPECT_EQ(parsed->signature, env.signature);
  EXPECT_TRUE(VerifyEnvelope(*parsed, kDomainManifest, key.public_key()));
  auto manifest = ParseManifest(parsed->payload);
  ASSERT_TRUE(manifest) << manifest.error().ToString();
  EXPECT_EQ(manifest->unit_id, SampleManifest().unit_id);
}

TEST_F(WireTest, EnvelopeTamperingIsBadSignature) {
  SigningKey key = SigningKey::Generate();
  SigningKey other = SigningKey::Generate();
  const SignedEnvelope env =
      SignPayload(key, kDomainResult, SerializeResultPayload(SampleResult()));
  ASSERT_TRUE(VerifyEnvelope(env, kDomainResult, key.public_key()));

  for (std::size_t i : {std::size_t{0}, env.payload.size() / 2, env.payload.size() - 1}) {
    SignedEnvelope t = env;
    t.payload[i] ^= 0x01;
    EXPECT_EQ(CodeOf(VerifyEnvelope(t, kDomainResult, key.public_key())), Errc::kBadSignature)
        << "payload byte " << i;
  }
  SignedEnvelope appended = env;
  appended.payload += " ";
  EXPECT_EQ(CodeOf(VerifyEnvelope(appended, kDomainResult, key.public_key())), Errc::kBadSignature);

  for (std::size_t i : {std::size_t{0}, std::size_t{63}, std::size_t{64}, std::size_t{127}}) {
    SignedEnvelope t = env;
    t.signature[i] = t.signature[i] == '0' ? '1' : '0';
    EXPECT_EQ(CodeOf(VerifyEnvelope(t, kDomainResult, key.public_key())), Errc::kBadSignature)
        << "signature char " << i;
  }
  SignedEnvelope bad_hex = env;
  bad_hex.signature = "zz";
  EXPECT_EQ(CodeOf(VerifyEnvelope(bad_hex, kDomainResult, key.public_key())), Errc::kBadSignature);

  // Signed by another key: refused whether the envelope names that key or claims ours.
  const SignedEnvelope forged = SignPayload(other, kDomainResult, env.payload);
  EXPECT_EQ(CodeOf(VerifyEnvelope(forged, kDomainResult, key.public_key())), Errc::kBadSignature);
  SignedEnvelope claimed = forged;
  claimed.signer = key.public_key().Hex();
  EXPECT_EQ(CodeOf(VerifyEnvelope(claimed, kDomainResult, key.public_key())), Errc::kBadSignature);
  // A genuine envelope checked against a different expected key.
  EXPECT_EQ(CodeOf(VerifyEnvelope(env, kDomainResult, other.public_key())), Errc::kBadSignature);
  SignedEnvelope bad_signer = env;
  bad_signer.signer = "nothex";
  EXPECT_EQ(CodeOf(VerifyEnvelope(bad_signer, kDomainResult, key.public_key())),
            Errc::kBadSignature);

  // The same bytes signed for one purpose do not verify for another.
  EXPECT_EQ(CodeOf(VerifyEnvelope(env, kDomainManifest, key.public_key())), Errc::kBadSignature);
  EXPECT_EQ(CodeOf(VerifyEnvelope(env, kDomainRegister, key.public_key())), Errc::kBadSignature);
}

TEST_F(WireTest, PayloadHashBindsPayloadBytes) {
  SigningKey key = SigningKey::Generate();
  SignedEnvelope a = SignPayload(key, kDomainManifest, SerializeManifest(SampleManifest()));
  Manifest changed = SampleManifest();
  changed.attempt += 1;
  SignedEnvelope b = SignPayload(key, kDomainManifest, SerializeManifest(changed));
  const std::string ha = PayloadHash(a);
  EXPECT_TRUE(IsContentId(ha)) << ha;
  EXPECT_EQ(ha, ContentId(AsBytes(a.payload)));
  EXPECT_NE(ha, PayloadHash(b));
  // Only the payload is hashed: the signature and signer do not change it.
  SignedEnvelope resigned = SignPayload(SigningKey::Generate(), kDomainManifest, a.payload);
  EXPECT_EQ(PayloadHash(resigned), ha);
  SignedEnvelope one_byte = a;
  one_byte.payload.back() = ' ';
  EXPECT_NE(PayloadHash(one_byte), ha);
}

TEST_F(WireTest, EnvelopeFieldChecks) {
  SigningKey key = SigningKey::Generate();
  const std::string valid = SerializeEnvelope(SignPayload(key, kDomainRegister, "{}"));
  auto parse = [](std::string_view s) { return AsStatus(ParseEnvelope(s)); };
  using O = boost::json::object;
  ExpectAll(valid, parse,
            {
                {"signer short", [](O& o) { o["signer"] = Repeat('a', 63); }},
                {"signer upper", [](O& o) { o["signer"] = Repeat('A', 64); }},
                {"signature short", [](O& o) { o["signature"] = Repeat('a', 126); }},
                {"signature long", [](O& o) { o["signature"] = Repeat('a', 130); }},
                {"signature not hex", [](O& o) { o["signature"] = Repeat('x', 128); }},
                {"payload not string", [](O& o) { o["payload"] = O{}; }},
                {"payload too long", [](O& o) { o["payload"] = Repeat(' ', kMaxPayloadJson + 1); }},
            },
            Errc::kMalformed);
  ExpectAll(valid, parse,
            {{"payload at limit", [](O& o) { o["payload"] = Repeat(' ', kMaxPayloadJson); }}},
            std::nullopt);
}

TEST_F(WireTest, CatalogRoundTripsAndRefusesBadEntries) {
  Catalog c;
  c.models.push_back({"fmnist-cnn", "cnn28-c16-c32-h64-o10", kIdC, 3, "trained by job 3", 1700});
  auto back = ParseCatalog(SerializeCatalog(c));
  ASSERT_TRUE(back) << back.error().ToString();
  ASSERT_EQ(back->models.size(), 1u);
  EXPECT_EQ(back->models[0].name, "fmnist-cnn");
  EXPECT_EQ(back->models[0].blob, kIdC);
  EXPECT_EQ(back->models[0].source_job, 3);
  EXPECT_EQ(back->models[0].created_at, 1700);

  c.models[0].blob = "../../etc/passwd";
  auto bad_blob = ParseCatalog(SerializeCatalog(c));
  ASSERT_FALSE(bad_blob);
  EXPECT_EQ(bad_blob.error().code, Errc::kMalformed);

  auto extra = ParseCatalog(R"({"protocol":1,"models":[],"surprise":1})");
  ASSERT_FALSE(extra);
  auto not_array = ParseCatalog(R"({"protocol":1,"models":{}})");
  ASSERT_FALSE(not_array);
}

TEST_F(WireTest, EconomyMessagesRoundTripAndRefuseBadInput) {
  JobQuote q;
  q.price_credits = 1234;
  q.flop = 1.234e9;
  q.pflops_days = 1.4e-11;
  q.train_units = 6;
  q.eval_units = 4;
  q.replication = 2;
  q.balance_credits = 99;
  q.affordable = false;
  auto q2 = ParseJobQuote(SerializeJobQuote(q));
  ASSERT_TRUE(q2) << q2.error().ToString();
  EXPECT_EQ(q2->price_credits, 1234);
  EXPECT_EQ(q2->replication, 2);
  EXPECT_FALSE(q2->affordable);
  q.replication = 0;
  EXPECT_FALSE(ParseJobQuote(SerializeJobQuote(q)));

  CreditsStatus c{kProtocolVersion, "alice", 10, 20, 30};
  auto c2 = ParseCreditsStatus(SerializeCreditsStatus(c));
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->account, "alice");
  EXPECT_EQ(c2->reserved_credits, 20);
  c.balance_credits = -1;
  EXPECT_FALSE(ParseCreditsStatus(SerializeCreditsStatus(c)));

  GrantRequest g{kProtocolVersion, "alice", 500, "pilot:2026-11", "class"};
  auto g2 = ParseGrantRequest(SerializeGrantRequest(g));
  ASSERT_TRUE(g2) << g2.error().ToString();
  EXPECT_EQ(g2->key, "pilot:2026-11");
  for (const std::string& key :
       std::vector<std::string>{"", "has space", "slash/no", std::string(65, 'k')}) {
    g.key = key;
    EXPECT_FALSE(ParseGrantRequest(SerializeGrantRequest(g))) << key;
  }
  g.key = "ok";
  for (std::int64_t credits : {0LL, -5LL, 1'000'000'000'000'001LL}) {
    g.credits = credits;
    EXPECT_FALSE(ParseGrantRequest(SerializeGrantRequest(g))) << credits;
  }

  JobList l;
  l.jobs.push_back({7, "job", "cancelled", 3, 1, 42});
  auto l2 = ParseJobList(SerializeJobList(l));
  ASSERT_TRUE(l2) << l2.error().ToString();
  ASSERT_EQ(l2->jobs.size(), 1u);
  EXPECT_EQ(l2->jobs[0].state, "cancelled");
  EXPECT_EQ(l2->jobs[0].price_credits, 42);
  l.jobs[0].state = "paused";
  EXPECT_FALSE(ParseJobList(SerializeJobList(l)));
}

TEST_F(WireTest, DonorAndCapacityMessagesRoundTripAndRefuseBadInput) {
  DonorProfile profile{kProtocolVersion, "Ann", "Physics"};
  auto p2 = ParseDonorProfile(SerializeDonorProfile(profile));
  ASSERT_TRUE(p2);
  EXPECT_EQ(p2->public_name, "Ann");
  profile.public_name = std::string(65, 'a');
  EXPECT_FALSE(ParseDonorProfile(SerializeDonorProfile(profile)));
  profile.public_name = "tab\there";
  EXPECT_FALSE(ParseDonorProfile(SerializeDonorProfile(profile)));

  Contribution c{7, "Ann", "Physics", 1000, 3, 400, 12.5};
  auto c2 = ParseContribution(SerializeContribution(c));
  ASSERT_TRUE(c2) << c2.error().ToString();
  EXPECT_EQ(c2->points_credits, 1000);
  EXPECT_DOUBLE_EQ(c2->recent_credits_per_day, 12.5);
  c.recent_credits_per_day = -1;
  EXPECT_FALSE(ParseContribution(SerializeContribution(c)));

  Leaderboard board;
  board.donors.push_back({7, "Ann", "Physics", 1000, 3, 400, 12.5});
  board.teams.push_back({"Physics", 1, 1000, 12.5});
  auto b2 = ParseLeaderboard(SerializeLeaderboard(board));
  ASSERT_TRUE(b2) << b2.error().ToString();
  ASSERT_EQ(b2->teams.size(), 1u);
  EXPECT_EQ(b2->teams[0].donors, 1);

  CapacityReport report;
  report.now = 100;
  report.hosts_registered = 3;
  report.hosts_online = 2;
  report.period.id = 4;
  report.period.ends_at = 200;
  report.period.budget_credits = 900;
  report.admitted.push_back({1, "job", "running", 3, 1, 300});
  report.history.push_back(report.period);
  auto r2 = ParseCapacityReport(SerializeCapacityReport(report));
  ASSERT_TRUE(r2) << r2.error().ToString();
  EXPECT_EQ(r2->period.budget_credits, 900);
  ASSERT_EQ(r2->admitted.size(), 1u);
  EXPECT_EQ(r2->admitted[0].price_credits, 300);
  EXPECT_FALSE(r2->gpus.has_value());  // an older coordinator's report has none
  report.gpus = GpuCapacity{1, 8, 2, 3};
  auto r3 = ParseCapacityReport(SerializeCapacityReport(report));
  ASSERT_TRUE(r3) << r3.error().ToString();
  ASSERT_TRUE(r3->gpus.has_value());
  EXPECT_EQ(r3->gpus->cuda_devices, 8);
  EXPECT_EQ(r3->gpus->unusable_gpus, 3);
  std::string extra = SerializeCapacityReport(report);
  extra.replace(extra.find("\"cuda_hosts\""), 0, "\"tpus\":1,");
  EXPECT_FALSE(ParseCapacityReport(extra)) << "an unknown key in gpus is refused";
  report.history.assign(13, report.period);  // more history than the message allows
  EXPECT_FALSE(ParseCapacityReport(SerializeCapacityReport(report)));
}

}  // namespace
}  // namespace ubcp::common
