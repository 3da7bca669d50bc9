// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/wire.h"

#include <algorithm>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <exception>
#include <limits>
#include <utility>

#include "wire/json_reader.h"

namespace ubcp::common {
namespace {

using json::DoubleRange;
using json::ObjectReader;

constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();
constexpr int kMaxInt = std::numeric_limits<int>::max();
constexpr double kMaxDouble = std::numeric_limits<double>::max();

constexpr std::size_t kPublicKeyHex = 64;
constexpr std::size_t kSignatureHex = 128;
constexpr std::size_t kContentIdHex = 64;
constexpr std::size_t kTokenHex = 64;

constexpr std::size_t kMaxTrainEntries = 8;
constexpr std::size_t kMaxCudaNames = 16;
constexpr std::size_t kMaxKinds = 8;
constexpr int kMaxRounds = 1000;
constexpr int kMaxThreads = 1 << 16;
constexpr int kMaxCudaDevices = 1024;
constexpr int kMaxUnitCount = 1 << 20;
// A JobStatus carries one RoundStatus (~300 bytes) per round, up to kMaxRounds of them, which
// does not fit kMaxRequestJson; it is a response, bounded on its own.
constexpr std::size_t kMaxJobStatusJson = 1024 * 1024;
// Error messages may quote inputs and nested causes; longer ones are cut when serialised.
constexpr std::size_t kMaxErrorMessage = 1024;

constexpr DoubleRange kAnyFinite{-kMaxDouble, kMaxDouble};
constexpr DoubleRange kNonNegative{0, kMaxDouble};
constexpr DoubleRange kFraction{0, 1};

Error Malformed(const ObjectReader& r, std::string_view field, std::string_view what) {
  return MakeError(Errc::kMalformed,
                   r.path() + "." + std::string(field) + ": " + std::string(what));
}

Status CheckProtocol(ObjectReader& r) {
  UBCP_ASSIGN_OR_RETURN(std::int64_t protocol,
                        r.Int64("protocol", std::numeric_limits<std::int64_t>::min(), kMaxInt64));
  if (protocol != kProtocolVersion) {
    return MakeError(Errc::kUnsupportedVersion, r.path() + ": protocol " +
                                                    std::to_string(protocol) +
                                                    " is not supported (this build speaks " +
                                                    std::to_string(kProtocolVersion) + ")");
  }
  return {};
}

// json::ParseMessage, with the protocol check first for a versioned message.
template <class Read>
auto ParseMessage(std::string_view text, std::size_t limit, const char* what, bool versioned,
                  Read read) -> decltype(read(std::declval<ObjectReader&>())) {
  return json::ParseMessage(text, limit, what,
                            [&](ObjectReader& r) -> decltype(read(std::declval<ObjectReader&>())) {
                              if (versioned) {
                                UBCP_RETURN_IF_ERROR(CheckProtocol(r));
                              }
                              return read(r);
                            });
}

Result<std::string> ReadHex(ObjectReader& r, std::string_view key, std::size_t len) {
  UBCP_ASSIGN_OR_RETURN(std::string s, r.String(key, len));
  if (!json::IsLowerHex(s, len)) {
    return Malformed(r, key, "expected " + std::to_string(len) + " lower-case hex characters");
  }
  return s;
}

Result<std::string> ReadContentId(ObjectReader& r, std::string_view key, bool allow_empty) {
  UBCP_ASSIGN_OR_RETURN(std::string s, r.String(key, kContentIdHex));
  if (allow_empty && s.empty()) return s;
  if (!IsContentId(s)) return Malformed(r, key, "not a content id (64 lower-case hex)");
  return s;
}

Result<std::string> ReadModelSpec(ObjectReader& r, std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(std::string s, r.String(key, kMaxStringField));
  if (!s.starts_with("catalog:") && !s.starts_with("zoo:")) {
    return Malformed(r, key, "must start with \"catalog:\" or \"zoo:\"");
  }
  return s;
}

// ---- blob refs ----

boost::json::object ToJson(const BlobRef& b) {
  boost::json::object o;
  o["id"] = b.id;
  o["size"] = b.size;
  o["raw_size"] = b.raw_size;
  return o;
}

Result<BlobRef> ReadBlobRef(ObjectReader& r) {
  BlobRef b;
  UBCP_ASSIGN_OR_RETURN(b.id, ReadContentId(r, "id", false));
  UBCP_ASSIGN_OR_RETURN(b.size, r.Uint64("size"));
  UBCP_ASSIGN_OR_RETURN(b.raw_size, r.Uint64("raw_size"));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return b;
}

Result<BlobRef> ReadBlobRefField(ObjectReader& parent, std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, parent.Object(key));
  return ReadBlobRef(r);
}

// ---- unit parameters ----

boost::json::object ToJson(const UnitParams& p) {
  boost::json::object o;
  o["local_steps"] = p.local_steps;
  o["batch_size"] = p.batch_size;
  o["lr"] = p.lr;
  o["momentum"] = p.momentum;
  o["weight_decay"] = p.weight_decay;
  o["optimizer"] = p.optimizer;
  o["seed"] = p.seed;
  return o;
}

// `training`: parameters a finetune unit will run with, so every value must be usable. Otherwise
// (eval manifests) they may be zero / empty.
Result<UnitParams> ReadUnitParams(ObjectReader& parent, std::string_view key, bool training) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, parent.Object(key));
  const int min_count = training ? 1 : 0;
  UnitParams p;
  UBCP_ASSIGN_OR_RETURN(p.local_steps, r.Int("local_steps", min_count, 100000));
  UBCP_ASSIGN_OR_RETURN(p.batch_size, r.Int("batch_size", min_count, 4096));
  UBCP_ASSIGN_OR_RETURN(p.lr, r.Double("lr", DoubleRange{0, 10, training, false}));
  UBCP_ASSIGN_OR_RETURN(p.momentum, r.Double("momentum", DoubleRange{0, 1, false, true}));
  UBCP_ASSIGN_OR_RETURN(p.weight_decay, r.Double("weight_decay", kFraction));
  if (training) {
    UBCP_ASSIGN_OR_RETURN(p.optimizer, r.Enum("optimizer", {"sgd", "adam"}));
  } else {
    UBCP_ASSIGN_OR_RETURN(p.optimizer, r.Enum("optimizer", {"", "sgd", "adam"}));
  }
  UBCP_ASSIGN_OR_RETURN(p.seed, r.Uint64("seed"));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return p;
}

// ---- host registration ----

Result<ModelThroughputMsg> ReadThroughput(const boost::json::value& v, std::string path) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, json::ObjectValue(v, std::move(path)));
  ModelThroughputMsg t;
  UBCP_ASSIGN_OR_RETURN(t.model, r.String("model", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(t.samples_per_s, r.Double("samples_per_s", kNonNegative));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return t;
}

boost::json::object ToJson(const GpuReport& g) {
  boost::json::array devices;
  for (const GpuDeviceMsg& d : g.devices) {
    devices.push_back(boost::json::object{{"name", d.name}, {"memory_mb", d.memory_mb}});
  }
  boost::json::object o;
  o["status"] = g.status;
  o["driver"] = g.driver;
  o["devices"] = std::move(devices);
  return o;
}

boost::json::object ToJson(const HostBenchmark& b) {
  boost::json::object o;
  o["matmul_gflops"] = b.matmul_gflops;
  boost::json::array train;
  for (const ModelThroughputMsg& t : b.train) {
    train.push_back(boost::json::object{{"model", t.model}, {"samples_per_s", t.samples_per_s}});
  }
  o["train"] = std::move(train);
  o["cpu_threads"] = b.cpu_threads;
  o["cuda_devices"] = b.cuda_devices;
  boost::json::array names;
  for (const std::string& n : b.cuda_names) names.push_back(boost::json::string(n));
  o["cuda_names"] = std::move(names);
  o["cuda_matmul_gflops"] = b.cuda_matmul_gflops;
  o["torch_version"] = b.torch_version;
  // Left out when not reported, so that a benchmark without it is byte-identical to one from
  // before the field existed.
  if (b.gpu) o["gpu"] = ToJson(*b.gpu);
  return o;
}

Result<GpuDeviceMsg> ReadGpuDevice(const boost::json::value& v, std::string path) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, json::ObjectValue(v, std::move(path)));
  GpuDeviceMsg d;
  UBCP_ASSIGN_OR_RETURN(d.name, r.String("name", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(d.memory_mb, r.Uint64("memory_mb"));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return d;
}

Result<GpuReport> ReadGpuReport(ObjectReader& r) {
  GpuReport g;
  UBCP_ASSIGN_OR_RETURN(g.status, r.String("status", kMaxGpuStatus));
  UBCP_ASSIGN_OR_RETURN(g.driver, r.String("driver", kMaxGpuDriver));
  UBCP_ASSIGN_OR_RETURN(const boost::json::array* devices, r.Array("devices", kMaxGpuDevices));
  for (std::size_t i = 0; i < devices->size(); ++i) {
    UBCP_ASSIGN_OR_RETURN(
        GpuDeviceMsg d,
        ReadGpuDevice((*devices)[i], r.path() + ".devices[" + std::to_string(i) + "]"));
    g.devices.push_back(std::move(d));
  }
  UBCP_RETURN_IF_ERROR(r.Finish());
  return g;
}

Result<HostBenchmark> ReadBenchmark(ObjectReader& r) {
  HostBenchmark b;
  UBCP_ASSIGN_OR_RETURN(b.matmul_gflops, r.Double("matmul_gflops", kNonNegative));
  UBCP_ASSIGN_OR_RETURN(const boost::json::array* train, r.Array("train", kMaxTrainEntries));
  for (std::size_t i = 0; i < train->size(); ++i) {
    UBCP_ASSIGN_OR_RETURN(
        ModelThroughputMsg t,
        ReadThroughput((*train)[i], r.path() + ".train[" + std::to_string(i) + "]"));
    b.train.push_back(std::move(t));
  }
  UBCP_ASSIGN_OR_RETURN(b.cpu_threads, r.Int("cpu_threads", 0, kMaxThreads));
  UBCP_ASSIGN_OR_RETURN(b.cuda_devices, r.Int("cuda_devices", 0, kMaxCudaDevices));
  UBCP_ASSIGN_OR_RETURN(const boost::json::array* names, r.Array("cuda_names", kMaxCudaNames));
  for (std::size_t i = 0; i < names->size(); ++i) {
    UBCP_ASSIGN_OR_RETURN(
        std::string name,
        json::StringValue((*names)[i], r.path() + ".cuda_names[" + std::to_string(i) + "]",
                          kMaxStringField));
    b.cuda_names.push_back(std::move(name));
  }
  UBCP_ASSIGN_OR_RETURN(b.cuda_matmul_gflops, r.Double("cuda_matmul_gflops", kNonNegative));
  UBCP_ASSIGN_OR_RETURN(b.torch_version, r.String("torch_version", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(std::optional<ObjectReader> gpu, r.OmittableObject("gpu"));
  if (gpu) {
    UBCP_ASSIGN_OR_RETURN(b.gpu, ReadGpuReport(*gpu));
  }
  UBCP_RETURN_IF_ERROR(r.Finish());
  return b;
}

Result<HostBenchmark> ReadBenchmarkField(ObjectReader& parent) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, parent.Object("benchmark"));
  return ReadBenchmark(r);
}

Result<HostCapabilities> ReadCapabilities(ObjectReader& parent) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, parent.Object("capabilities"));
  HostCapabilities c;
  UBCP_ASSIGN_OR_RETURN(c.cpu_cores, r.Int("cpu_cores", 0, kMaxThreads));
  UBCP_ASSIGN_OR_RETURN(c.memory_mb, r.Uint64("memory_mb"));
  UBCP_ASSIGN_OR_RETURN(c.cuda, r.Bool("cuda"));
  UBCP_ASSIGN_OR_RETURN(c.client_version, r.String("client_version", kMaxStringField));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return c;
}

// ---- job status ----

Result<RoundStatus> ReadRoundStatus(const boost::json::value& v, std::string path) {
  UBCP_ASSIGN_OR_RETURN(ObjectReader r, json::ObjectValue(v, std::move(path)));
  RoundStatus s;
  UBCP_ASSIGN_OR_RETURN(s.round, r.Int("round", 0, kMaxRounds));
  UBCP_ASSIGN_OR_RETURN(s.model_blob, ReadContentId(r, "model_blob", true));
  UBCP_ASSIGN_OR_RETURN(s.units_done, r.Int("units_done", 0, kMaxUnitCount));
  UBCP_ASSIGN_OR_RETURN(s.units_total, r.Int("units_total", 0, kMaxUnitCount));
  UBCP_ASSIGN_OR_RETURN(s.evaluated, r.Bool("evaluated"));
  UBCP_ASSIGN_OR_RETURN(s.eval_loss, r.Double("eval_loss", kAnyFinite));
  UBCP_ASSIGN_OR_RETURN(s.eval_accuracy, r.Double("eval_accuracy", kFraction));
  UBCP_ASSIGN_OR_RETURN(s.eval_samples, r.Int64("eval_samples", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(s.train_loss, r.Double("train_loss", kAnyFinite));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return s;
}

// Error messages may carry bytes from anywhere (paths, peer input); JSON needs valid UTF-8.
// Keeps at most `max` bytes, never splits a character, and replaces invalid bytes with '?'.
std::string SanitizeUtf8(std::string_view s, std::size_t max) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = byte(i);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    }
    bool valid = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; valid && k < len; ++k) {
      if ((byte(i + k) & 0xc0) != 0x80) valid = false;
      cp = (cp << 6) | (byte(i + k) & 0x3f);
    }
    if (valid) {
      constexpr std::uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
      valid = cp >= kMinForLength[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (!valid) len = 1;
    if (out.size() + len > max) break;
    if (valid) {
      out.append(s.substr(i, len));
    } else {
      out.push_back('?');
    }
    i += len;
  }
  return out;
}

}  // namespace

// ---- signed envelope ----

std::string SerializeEnvelope(const SignedEnvelope& env) {
  boost::json::object o;
  o["protocol"] = kProtocolVersion;
  o["payload"] = env.payload;
  o["signer"] = env.signer;
  o["signature"] = env.signature;
  return boost::json::serialize(o);
}

Result<SignedEnvelope> ParseEnvelope(std::string_view json) {
  return ParseMessage(
      json, kMaxEnvelopeJson, "envelope", true, [](ObjectReader& r) -> Result<SignedEnvelope> {
        SignedEnvelope env;
        UBCP_ASSIGN_OR_RETURN(env.payload, r.String("payload", kMaxPayloadJson));
        UBCP_ASSIGN_OR_RETURN(env.signer, ReadHex(r, "signer", kPublicKeyHex));
        UBCP_ASSIGN_OR_RETURN(env.signature, ReadHex(r, "signature", kSignatureHex));
        return env;
      });
}

SignedEnvelope SignPayload(const SigningKey& key, std::string_view domain, std::string payload) {
  SignedEnvelope env;
  env.signature = SignatureHex(key.Sign(domain, AsBytes(payload)));
  env.signer = key.public_key().Hex();
  env.payload = std::move(payload);
  return env;
}

Status VerifyEnvelope(const SignedEnvelope& env, std::string_view domain,
                      const PublicKey& expected) {
  // Signer and signature are checked against the key the caller already trusts, never against
  // a key taken from the envelope itself: a self-signed envelope proves nothing.
  auto signer = PublicKey::FromHex(env.signer);
  if (!signer || !(*signer == expected)) {
    return MakeError(Errc::kBadSignature, "envelope: signer is not the expected key");
  }
  auto signature = SignatureFromHex(env.signature);
  if (!signature) return MakeError(Errc::kBadSignature, "envelope: malformed signature");
  auto verified = Verify(expected, domain, AsBytes(env.payload), *signature);
  if (!verified) {
    return MakeError(Errc::kBadSignature,
                     "envelope: signature does not verify (" + std::string(domain) + ")");
  }
  return {};
}

std::string PayloadHash(const SignedEnvelope& env) {
  return Blake2b256(AsBytes(env.payload)).Hex();
}

// ---- host registration ----

std::string SerializeHostBenchmark(const HostBenchmark& b) {
  return boost::json::serialize(ToJson(b));
}

Result<HostBenchmark> ParseHostBenchmark(std::string_view json) {
  return ParseMessage(json, kMaxPayloadJson, "benchmark", false, ReadBenchmark);
}

std::string FitUtf8(std::string_view s, std::size_t max_bytes) {
  return SanitizeUtf8(s, max_bytes);
}

std::string SerializeHostRegistration(const HostRegistration& r) {
  boost::json::object caps;
  caps["cpu_cores"] = r.capabilities.cpu_cores;
  caps["memory_mb"] = r.capabilities.memory_mb;
  caps["cuda"] = r.capabilities.cuda;
  caps["client_version"] = r.capabilities.client_version;

  boost::json::object o;
  o["protocol"] = r.protocol;
  o["public_key"] = r.public_key;
  o["name"] = r.name;
  o["issued_at"] = r.issued_at;
  o["benchmark"] = ToJson(r.benchmark);
  o["capabilities"] = std::move(caps);
  return boost::json::serialize(o);
}

Result<HostRegistration> ParseHostRegistration(std::string_view json) {
  return ParseMessage(json, kMaxPayloadJson, "host_registration", true,
                      [](ObjectReader& r) -> Result<HostRegistration> {
                        HostRegistration h;
                        UBCP_ASSIGN_OR_RETURN(h.public_key,
                                              ReadHex(r, "public_key", kPublicKeyHex));
                        UBCP_ASSIGN_OR_RETURN(h.name, r.String("name", kMaxStringField));
                        UBCP_ASSIGN_OR_RETURN(h.issued_at, r.Int64("issued_at", 0, kMaxInt64));
                        UBCP_ASSIGN_OR_RETURN(h.benchmark, ReadBenchmarkField(r));
                        UBCP_ASSIGN_OR_RETURN(h.capabilities, ReadCapabilities(r));
                        return h;
                      });
}

std::string SerializeHostRegistered(const HostRegistered& r) {
  boost::json::object o;
  o["protocol"] = r.protocol;
  o["host_id"] = r.host_id;
  o["token"] = r.token;
  return boost::json::serialize(o);
}

Result<HostRegistered> ParseHostRegistered(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "host_registered", true,
                      [](ObjectReader& r) -> Result<HostRegistered> {
                        HostRegistered h;
                        UBCP_ASSIGN_OR_RETURN(h.host_id, r.Int64("host_id", 0, kMaxInt64));
                        UBCP_ASSIGN_OR_RETURN(h.token, ReadHex(r, "token", kTokenHex));
                        return h;
                      });
}

// ---- work ----

std::string SerializeWorkRequest(const WorkRequest& r) {
  boost::json::object o;
  o["protocol"] = r.protocol;
  boost::json::array kinds;
  for (const std::string& k : r.kinds) kinds.push_back(boost::json::string(k));
  o["kinds"] = std::move(kinds);
  return boost::json::serialize(o);
}

Result<WorkRequest> ParseWorkRequest(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "work_request", true, [](ObjectReader& r) -> Result<WorkRequest> {
        WorkRequest w;
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* kinds, r.Array("kinds", kMaxKinds));
        for (std::size_t i = 0; i < kinds->size(); ++i) {
          std::string path = r.path() + ".kinds[" + std::to_string(i) + "]";
          UBCP_ASSIGN_OR_RETURN(std::string kind,
                                json::StringValue((*kinds)[i], path, kMaxStringField));
          if (kind != kUnitFinetune && kind != kUnitEval) {
            return MakeError(Errc::kMalformed, path + ": unknown unit kind");
          }
          w.kinds.push_back(std::move(kind));
        }
        return w;
      });
}

std::string SerializeManifest(const Manifest& m) {
  boost::json::object o;
  o["protocol"] = m.protocol;
  o["unit_id"] = m.unit_id;
  o["job_id"] = m.job_id;
  o["round"] = m.round;
  o["attempt"] = m.attempt;
  o["host_id"] = m.host_id;
  o["kind"] = m.kind;
  o["model_spec"] = m.model_spec;
  o["model"] = ToJson(m.model);
  o["data"] = ToJson(m.data);
  o["params"] = ToJson(m.params);
  o["update_encoding"] = m.update_encoding;
  o["issued_at"] = m.issued_at;
  o["deadline"] = m.deadline;
  return boost::json::serialize(o);
}

Result<Manifest> ParseManifest(std::string_view json) {
  return ParseMessage(
      json, kMaxPayloadJson, "manifest", true, [](ObjectReader& r) -> Result<Manifest> {
        Manifest m;
        UBCP_ASSIGN_OR_RETURN(m.unit_id, r.Int64("unit_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(m.job_id, r.Int64("job_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(m.round, r.Int("round", 0, kMaxRounds));
        UBCP_ASSIGN_OR_RETURN(m.attempt, r.Int("attempt", 0, kMaxInt));
        UBCP_ASSIGN_OR_RETURN(m.host_id, r.Int64("host_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(m.kind, r.Enum("kind", {kUnitFinetune, kUnitEval}));
        const bool training = m.kind == kUnitFinetune;
        UBCP_ASSIGN_OR_RETURN(m.model_spec, r.String("model_spec", kMaxStringField));
        UBCP_ASSIGN_OR_RETURN(m.model, ReadBlobRefField(r, "model"));
        UBCP_ASSIGN_OR_RETURN(m.data, ReadBlobRefField(r, "data"));
        UBCP_ASSIGN_OR_RETURN(m.params, ReadUnitParams(r, "params", training));
        if (training) {
          UBCP_ASSIGN_OR_RETURN(m.update_encoding, r.Enum("update_encoding", {"fp32", "int8"}));
        } else {
          UBCP_ASSIGN_OR_RETURN(m.update_encoding, r.Enum("update_encoding", {"", "fp32", "int8"}));
        }
        UBCP_ASSIGN_OR_RETURN(m.issued_at, r.Int64("issued_at", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(m.deadline, r.Int64("deadline", 0, kMaxInt64));
        return m;
      });
}

// ---- results ----

std::string SerializeResultPayload(const ResultPayload& p) {
  boost::json::object metrics;
  metrics["loss"] = p.metrics.loss;
  metrics["accuracy"] = p.metrics.accuracy;
  metrics["first_loss"] = p.metrics.first_loss;
  metrics["samples"] = p.metrics.samples;

  boost::json::object o;
  o["protocol"] = p.protocol;
  o["unit_id"] = p.unit_id;
  o["host_id"] = p.host_id;
  o["attempt"] = p.attempt;
  o["manifest_hash"] = p.manifest_hash;
  o["kind"] = p.kind;
  if (p.update) {
    o["update"] = ToJson(*p.update);
  } else {
    o["update"] = nullptr;
  }
  o["metrics"] = std::move(metrics);
  o["wall_seconds"] = p.wall_seconds;
  return boost::json::serialize(o);
}

Result<ResultPayload> ParseResultPayload(std::string_view json) {
  return ParseMessage(
      json, kMaxPayloadJson, "result", true, [](ObjectReader& r) -> Result<ResultPayload> {
        ResultPayload p;
        UBCP_ASSIGN_OR_RETURN(p.unit_id, r.Int64("unit_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(p.host_id, r.Int64("host_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(p.attempt, r.Int("attempt", 0, kMaxInt));
        UBCP_ASSIGN_OR_RETURN(p.manifest_hash, ReadContentId(r, "manifest_hash", false));
        UBCP_ASSIGN_OR_RETURN(p.kind, r.Enum("kind", {kUnitFinetune, kUnitEval}));
        UBCP_ASSIGN_OR_RETURN(std::optional<ObjectReader> update, r.OptionalObject("update"));
        if (update) {
          UBCP_ASSIGN_OR_RETURN(p.update, ReadBlobRef(*update));
        }
        UBCP_ASSIGN_OR_RETURN(ObjectReader metrics, r.Object("metrics"));
        UBCP_ASSIGN_OR_RETURN(p.metrics.loss, metrics.Double("loss", kAnyFinite));
        UBCP_ASSIGN_OR_RETURN(p.metrics.accuracy, metrics.Double("accuracy", kFraction));
        UBCP_ASSIGN_OR_RETURN(p.metrics.first_loss, metrics.Double("first_loss", kAnyFinite));
        UBCP_ASSIGN_OR_RETURN(p.metrics.samples, metrics.Int64("samples", 0, kMaxInt64));
        UBCP_RETURN_IF_ERROR(metrics.Finish());
        UBCP_ASSIGN_OR_RETURN(p.wall_seconds, r.Double("wall_seconds", kNonNegative));
        return p;
      });
}

std::string SerializeResultAck(const ResultAck& a) {
  boost::json::object o;
  o["protocol"] = a.protocol;
  o["status"] = a.status;
  return boost::json::serialize(o);
}

Result<ResultAck> ParseResultAck(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "result_ack", true, [](ObjectReader& r) -> Result<ResultAck> {
        ResultAck a;
        UBCP_ASSIGN_OR_RETURN(a.status, r.Enum("status", {"accepted", "duplicate"}));
        return a;
      });
}

// ---- giving a unit up ----

std::string SerializeUnitAbandon(const UnitAbandon& a) {
  boost::json::object o;
  o["protocol"] = a.protocol;
  o["unit_id"] = a.unit_id;
  o["attempt"] = a.attempt;
  o["manifest_hash"] = a.manifest_hash;
  o["reason"] = a.reason;
  return boost::json::serialize(o);
}

Result<UnitAbandon> ParseUnitAbandon(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "unit_abandon", true, [](ObjectReader& r) -> Result<UnitAbandon> {
        UnitAbandon a;
        UBCP_ASSIGN_OR_RETURN(a.unit_id, r.Int64("unit_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(a.attempt, r.Int("attempt", 0, kMaxInt));
        UBCP_ASSIGN_OR_RETURN(a.manifest_hash, ReadContentId(r, "manifest_hash", false));
        UBCP_ASSIGN_OR_RETURN(a.reason, r.String("reason", kMaxAbandonReason));
        return a;
      });
}

std::string SerializeUnitAbandonAck(const UnitAbandonAck& a) {
  boost::json::object o;
  o["protocol"] = a.protocol;
  o["released"] = a.released;
  return boost::json::serialize(o);
}

Result<UnitAbandonAck> ParseUnitAbandonAck(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "unit_abandon_ack", true,
                      [](ObjectReader& r) -> Result<UnitAbandonAck> {
                        UnitAbandonAck a;
                        UBCP_ASSIGN_OR_RETURN(a.released, r.Bool("released"));
                        return a;
                      });
}

// ---- jobs ----

std::string SerializeJobSpec(const JobSpec& s) {
  boost::json::object o;
  o["protocol"] = s.protocol;
  o["name"] = s.name;
  o["model"] = s.model;
  o["dataset"] = s.dataset;
  o["rounds"] = s.rounds;
  o["units_per_round"] = s.units_per_round;
  o["eval_units"] = s.eval_units;
  o["params"] = ToJson(s.params);
  o["aggregator"] = s.aggregator;
  o["outer_lr"] = s.outer_lr;
  o["outer_momentum"] = s.outer_momentum;
  o["robust"] = s.robust;
  o["trim_fraction"] = s.trim_fraction;
  o["krum_byzantine"] = s.krum_byzantine;
  o["norm_bound"] = s.norm_bound;
  o["update_encoding"] = s.update_encoding;
  o["test_fraction"] = s.test_fraction;
  o["max_train_samples"] = s.max_train_samples;
  o["max_test_samples"] = s.max_test_samples;
  o["deadline_s"] = s.deadline_s;
  o["publish_as"] = s.publish_as;
  return boost::json::serialize(o);
}

Result<JobSpec> ParseJobSpec(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "job", true, [](ObjectReader& r) -> Result<JobSpec> {
    JobSpec s;
    UBCP_ASSIGN_OR_RETURN(s.name, r.String("name", kMaxStringField));
    UBCP_ASSIGN_OR_RETURN(s.model, ReadModelSpec(r, "model"));
    UBCP_ASSIGN_OR_RETURN(s.dataset, r.String("dataset", kMaxStringField));
    if (s.dataset.empty()) return Malformed(r, "dataset", "must not be empty");
    UBCP_ASSIGN_OR_RETURN(s.rounds, r.Int("rounds", 1, kMaxRounds));
    UBCP_ASSIGN_OR_RETURN(s.units_per_round, r.Int("units_per_round", 1, 1024));
    UBCP_ASSIGN_OR_RETURN(s.eval_units, r.Int("eval_units", 1, 64));
    UBCP_ASSIGN_OR_RETURN(s.params, ReadUnitParams(r, "params", true));
    UBCP_ASSIGN_OR_RETURN(s.aggregator, r.Enum("aggregator", {"fedavg", "diloco"}));
    UBCP_ASSIGN_OR_RETURN(s.outer_lr, r.Double("outer_lr", DoubleRange{0, 10, true, false}));
    UBCP_ASSIGN_OR_RETURN(s.outer_momentum,
                          r.Double("outer_momentum", DoubleRange{0, 1, false, true}));
    UBCP_ASSIGN_OR_RETURN(s.robust, r.Enum("robust", {"mean", "median", "trimmed_mean",
                                                      "multi_krum", "centered_clip"}));
    UBCP_ASSIGN_OR_RETURN(s.trim_fraction, r.Double("trim_fraction", DoubleRange{0, 0.45}));
    UBCP_ASSIGN_OR_RETURN(s.krum_byzantine, r.Int("krum_byzantine", 0, 64));
    UBCP_ASSIGN_OR_RETURN(s.norm_bound, r.Double("norm_bound", DoubleRange{1, 1000}));
    UBCP_ASSIGN_OR_RETURN(s.update_encoding, r.Enum("update_encoding", {"fp32", "int8"}));
    UBCP_ASSIGN_OR_RETURN(s.test_fraction,
                          r.Double("test_fraction", DoubleRange{0, 0.9, true, false}));
    UBCP_ASSIGN_OR_RETURN(s.max_train_samples, r.Int64("max_train_samples", 0, kMaxInt64));
    UBCP_ASSIGN_OR_RETURN(s.max_test_samples, r.Int64("max_test_samples", 0, kMaxInt64));
    UBCP_ASSIGN_OR_RETURN(s.deadline_s, r.Int("deadline_s", 10, 86400));
    UBCP_ASSIGN_OR_RETURN(s.publish_as, r.String("publish_as", kMaxStringField));
    return s;
  });
}

std::string SerializeJobCreated(const JobCreated& c) {
  boost::json::object o;
  o["protocol"] = c.protocol;
  o["job_id"] = c.job_id;
  return boost::json::serialize(o);
}

Result<JobCreated> ParseJobCreated(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "job_created", true,
                      [](ObjectReader& r) -> Result<JobCreated> {
                        JobCreated c;
                        UBCP_ASSIGN_OR_RETURN(c.job_id, r.Int64("job_id", 0, kMaxInt64));
                        return c;
                      });
}

std::string SerializeJobStatus(const JobStatus& s) {
  boost::json::array history;
  for (const RoundStatus& h : s.history) {
    boost::json::object o;
    o["round"] = h.round;
    o["model_blob"] = h.model_blob;
    o["units_done"] = h.units_done;
    o["units_total"] = h.units_total;
    o["evaluated"] = h.evaluated;
    o["eval_loss"] = h.eval_loss;
    o["eval_accuracy"] = h.eval_accuracy;
    o["eval_samples"] = h.eval_samples;
    o["train_loss"] = h.train_loss;
    history.push_back(std::move(o));
  }
  boost::json::object o;
  o["protocol"] = s.protocol;
  o["job_id"] = s.job_id;
  o["name"] = s.name;
  o["state"] = s.state;
  o["model_spec"] = s.model_spec;
  o["rounds"] = s.rounds;
  o["current_round"] = s.current_round;
  o["history"] = std::move(history);
  o["final_model"] = s.final_model;
  o["hosts"] = s.hosts;
  return boost::json::serialize(o);
}

Result<JobStatus> ParseJobStatus(std::string_view json) {
  return ParseMessage(
      json, kMaxJobStatusJson, "job_status", true, [](ObjectReader& r) -> Result<JobStatus> {
        JobStatus s;
        UBCP_ASSIGN_OR_RETURN(s.job_id, r.Int64("job_id", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(s.name, r.String("name", kMaxStringField));
        UBCP_ASSIGN_OR_RETURN(
            s.state, r.Enum("state", {"queued", "running", "done", "failed", "cancelled"}));
        UBCP_ASSIGN_OR_RETURN(s.model_spec, r.String("model_spec", kMaxStringField));
        UBCP_ASSIGN_OR_RETURN(s.rounds, r.Int("rounds", 0, kMaxRounds));
        UBCP_ASSIGN_OR_RETURN(s.current_round, r.Int("current_round", 0, kMaxRounds));
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* history,
                              r.Array("history", static_cast<std::size_t>(kMaxRounds)));
        for (std::size_t i = 0; i < history->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              RoundStatus round,
              ReadRoundStatus((*history)[i], r.path() + ".history[" + std::to_string(i) + "]"));
          s.history.push_back(std::move(round));
        }
        UBCP_ASSIGN_OR_RETURN(s.final_model, ReadContentId(r, "final_model", true));
        UBCP_ASSIGN_OR_RETURN(s.hosts, r.Int64("hosts", 0, kMaxInt64));
        return s;
      });
}

// ---- economy ----

namespace {
constexpr std::int64_t kMaxCredits = 1'000'000'000'000'000'000;  // 10^18 MFLOP

bool GrantKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}
}  // namespace

namespace {

boost::json::object PeriodJson(const PeriodSummary& p) {
  boost::json::object o;
  o["id"] = p.id;
  o["starts_at"] = p.starts_at;
  o["ends_at"] = p.ends_at;
  o["forecast_credits"] = p.forecast_credits;
  o["reserve_credits"] = p.reserve_credits;
  o["budget_credits"] = p.budget_credits;
  o["share_credits"] = p.share_credits;
  o["recipients"] = p.recipients;
  o["admitted_credits"] = p.admitted_credits;
  o["validated_credits"] = p.validated_credits;
  o["issued_credits"] = p.issued_credits;
  o["spent_credits"] = p.spent_credits;
  o["expired_credits"] = p.expired_credits;
  o["closed"] = p.closed;
  return o;
}

boost::json::object JobSummaryJson(const JobSummary& j) {
  boost::json::object o;
  o["job_id"] = j.job_id;
  o["name"] = j.name;
  o["state"] = j.state;
  o["rounds"] = j.rounds;
  o["current_round"] = j.current_round;
  o["price_credits"] = j.price_credits;
  return o;
}

Result<PeriodSummary> ReadPeriodSummary(ObjectReader& r) {
  PeriodSummary p;
  UBCP_ASSIGN_OR_RETURN(p.id, r.Int64("id", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(p.starts_at, r.Int64("starts_at", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(p.ends_at, r.Int64("ends_at", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(p.forecast_credits, r.Int64("forecast_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.reserve_credits, r.Int64("reserve_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.budget_credits, r.Int64("budget_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.share_credits, r.Int64("share_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.recipients, r.Int64("recipients", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(p.admitted_credits, r.Int64("admitted_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.validated_credits, r.Int64("validated_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.issued_credits, r.Int64("issued_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.spent_credits, r.Int64("spent_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.expired_credits, r.Int64("expired_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(p.closed, r.Bool("closed"));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return p;
}

Result<JobSummary> ReadJobSummary(ObjectReader& j) {
  JobSummary s;
  UBCP_ASSIGN_OR_RETURN(s.job_id, j.Int64("job_id", 1, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(s.name, j.String("name", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(s.state,
                        j.Enum("state", {"queued", "running", "done", "failed", "cancelled"}));
  UBCP_ASSIGN_OR_RETURN(s.rounds, j.Int("rounds", 0, kMaxRounds));
  UBCP_ASSIGN_OR_RETURN(s.current_round, j.Int("current_round", 0, kMaxRounds));
  UBCP_ASSIGN_OR_RETURN(s.price_credits, j.Int64("price_credits", 0, kMaxCredits));
  UBCP_RETURN_IF_ERROR(j.Finish());
  return s;
}

}  // namespace

std::string SerializeJobQuote(const JobQuote& q) {
  boost::json::object o;
  o["protocol"] = q.protocol;
  o["price_credits"] = q.price_credits;
  o["flop"] = q.flop;
  o["pflops_days"] = q.pflops_days;
  o["train_units"] = q.train_units;
  o["eval_units"] = q.eval_units;
  o["replication"] = q.replication;
  o["balance_credits"] = q.balance_credits;
  o["affordable"] = q.affordable;
  return boost::json::serialize(o);
}

Result<JobQuote> ParseJobQuote(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "job_quote", true, [](ObjectReader& r) -> Result<JobQuote> {
        JobQuote q;
        UBCP_ASSIGN_OR_RETURN(q.price_credits, r.Int64("price_credits", 0, kMaxCredits));
        UBCP_ASSIGN_OR_RETURN(q.flop, r.Double("flop", kNonNegative));
        UBCP_ASSIGN_OR_RETURN(q.pflops_days, r.Double("pflops_days", kNonNegative));
        UBCP_ASSIGN_OR_RETURN(q.train_units, r.Int64("train_units", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(q.eval_units, r.Int64("eval_units", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(q.replication, r.Int("replication", 1, 16));
        UBCP_ASSIGN_OR_RETURN(q.balance_credits, r.Int64("balance_credits", 0, kMaxCredits));
        UBCP_ASSIGN_OR_RETURN(q.affordable, r.Bool("affordable"));
        return q;
      });
}

std::string SerializeCreditsStatus(const CreditsStatus& c) {
  boost::json::object o;
  o["protocol"] = c.protocol;
  o["account"] = c.account;
  o["balance_credits"] = c.balance_credits;
  o["reserved_credits"] = c.reserved_credits;
  o["spent_credits"] = c.spent_credits;
  return boost::json::serialize(o);
}

Result<CreditsStatus> ParseCreditsStatus(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "credits", true, [](ObjectReader& r) -> Result<CreditsStatus> {
        CreditsStatus c;
        UBCP_ASSIGN_OR_RETURN(c.account, r.String("account", kMaxStringField));
        UBCP_ASSIGN_OR_RETURN(c.balance_credits, r.Int64("balance_credits", 0, kMaxCredits));
        UBCP_ASSIGN_OR_RETURN(c.reserved_credits, r.Int64("reserved_credits", 0, kMaxCredits));
        UBCP_ASSIGN_OR_RETURN(c.spent_credits, r.Int64("spent_credits", 0, kMaxCredits));
        return c;
      });
}

std::string SerializeGrantRequest(const GrantRequest& g) {
  boost::json::object o;
  o["protocol"] = g.protocol;
  o["account"] = g.account;
  o["credits"] = g.credits;
  o["key"] = g.key;
  o["memo"] = g.memo;
  return boost::json::serialize(o);
}

Result<GrantRequest> ParseGrantRequest(std::string_view json) {
  return ParseMessage(
      json, kMaxRequestJson, "grant", true, [](ObjectReader& r) -> Result<GrantRequest> {
        GrantRequest g;
        UBCP_ASSIGN_OR_RETURN(g.account, r.String("account", kMaxStringField));
        if (g.account.empty()) return Malformed(r, "account", "must not be empty");
        UBCP_ASSIGN_OR_RETURN(g.credits, r.Int64("credits", 1, 1'000'000'000'000'000));
        UBCP_ASSIGN_OR_RETURN(g.key, r.String("key", 64));
        if (g.key.empty() || !std::all_of(g.key.begin(), g.key.end(), GrantKeyChar)) {
          return Malformed(r, "key", "must be 1..64 of [A-Za-z0-9._:-]");
        }
        UBCP_ASSIGN_OR_RETURN(g.memo, r.String("memo", kMaxStringField));
        return g;
      });
}

std::string SerializeJobList(const JobList& l) {
  boost::json::array jobs;
  for (const JobSummary& j : l.jobs) jobs.push_back(JobSummaryJson(j));
  boost::json::object o;
  o["protocol"] = l.protocol;
  o["jobs"] = std::move(jobs);
  return boost::json::serialize(o);
}

Result<JobList> ParseJobList(std::string_view json) {
  return ParseMessage(
      json, kMaxJobStatusJson * 4, "job_list", true, [](ObjectReader& r) -> Result<JobList> {
        JobList l;
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* jobs, r.Array("jobs", kMaxListedJobs));
        for (std::size_t i = 0; i < jobs->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader j,
              json::ObjectValue((*jobs)[i], r.path() + ".jobs[" + std::to_string(i) + "]"));
          UBCP_ASSIGN_OR_RETURN(JobSummary s, ReadJobSummary(j));
          l.jobs.push_back(std::move(s));
        }
        return l;
      });
}

std::string SerializeCapacityReport(const CapacityReport& r) {
  boost::json::array admitted, history;
  for (const JobSummary& j : r.admitted) admitted.push_back(JobSummaryJson(j));
  for (const PeriodSummary& p : r.history) history.push_back(PeriodJson(p));
  boost::json::object o;
  o["protocol"] = r.protocol;
  o["now"] = r.now;
  o["hosts_registered"] = r.hosts_registered;
  o["hosts_online"] = r.hosts_online;
  if (r.gpus) {
    o["gpus"] = boost::json::object{{"cuda_hosts", r.gpus->cuda_hosts},
                                    {"cuda_devices", r.gpus->cuda_devices},
                                    {"unusable_hosts", r.gpus->unusable_hosts},
                                    {"unusable_gpus", r.gpus->unusable_gpus}};
  }
  o["validated_total_credits"] = r.validated_total_credits;
  o["queue_length"] = r.queue_length;
  o["period"] = PeriodJson(r.period);
  o["admitted"] = std::move(admitted);
  o["history"] = std::move(history);
  return boost::json::serialize(o);
}

Result<CapacityReport> ParseCapacityReport(std::string_view json) {
  return ParseMessage(
      json, kMaxJobStatusJson * 4, "capacity", true, [](ObjectReader& r) -> Result<CapacityReport> {
        CapacityReport c;
        UBCP_ASSIGN_OR_RETURN(c.now, r.Int64("now", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(c.hosts_registered, r.Int64("hosts_registered", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(c.hosts_online, r.Int64("hosts_online", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(std::optional<ObjectReader> gpus, r.OmittableObject("gpus"));
        if (gpus) {
          GpuCapacity g;
          UBCP_ASSIGN_OR_RETURN(g.cuda_hosts, gpus->Int64("cuda_hosts", 0, kMaxInt64));
          UBCP_ASSIGN_OR_RETURN(g.cuda_devices, gpus->Int64("cuda_devices", 0, kMaxInt64));
          UBCP_ASSIGN_OR_RETURN(g.unusable_hosts, gpus->Int64("unusable_hosts", 0, kMaxInt64));
          UBCP_ASSIGN_OR_RETURN(g.unusable_gpus, gpus->Int64("unusable_gpus", 0, kMaxInt64));
          UBCP_RETURN_IF_ERROR(gpus->Finish());
          c.gpus = g;
        }
        UBCP_ASSIGN_OR_RETURN(c.validated_total_credits,
                              r.Int64("validated_total_credits", 0, kMaxCredits));
        UBCP_ASSIGN_OR_RETURN(c.queue_length, r.Int64("queue_length", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(ObjectReader period, r.Object("period"));
        UBCP_ASSIGN_OR_RETURN(c.period, ReadPeriodSummary(period));
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* admitted,
                              r.Array("admitted", kMaxListedJobs));
        for (std::size_t i = 0; i < admitted->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader j,
              json::ObjectValue((*admitted)[i], r.path() + ".admitted[" + std::to_string(i) + "]"));
          UBCP_ASSIGN_OR_RETURN(JobSummary s, ReadJobSummary(j));
          c.admitted.push_back(std::move(s));
        }
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* history, r.Array("history", 12));
        for (std::size_t i = 0; i < history->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader p,
              json::ObjectValue((*history)[i], r.path() + ".history[" + std::to_string(i) + "]"));
          UBCP_ASSIGN_OR_RETURN(PeriodSummary s, ReadPeriodSummary(p));
          c.history.push_back(std::move(s));
        }
        return c;
      });
}

// ---- donors' contribution ----

namespace {

bool PrintableName(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

boost::json::object ContributionJson(const Contribution& c) {
  boost::json::object o;
  o["host_id"] = c.host_id;
  o["name"] = c.name;
  o["team"] = c.team;
  o["points_credits"] = c.points_credits;
  o["units"] = c.units;
  o["period_credits"] = c.period_credits;
  o["recent_credits_per_day"] = c.recent_credits_per_day;
  return o;
}

Result<Contribution> ReadContribution(ObjectReader& r) {
  Contribution c;
  UBCP_ASSIGN_OR_RETURN(c.host_id, r.Int64("host_id", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(c.name, r.String("name", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(c.team, r.String("team", kMaxStringField));
  UBCP_ASSIGN_OR_RETURN(c.points_credits, r.Int64("points_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(c.units, r.Int64("units", 0, kMaxInt64));
  UBCP_ASSIGN_OR_RETURN(c.period_credits, r.Int64("period_credits", 0, kMaxCredits));
  UBCP_ASSIGN_OR_RETURN(c.recent_credits_per_day, r.Double("recent_credits_per_day", kNonNegative));
  UBCP_RETURN_IF_ERROR(r.Finish());
  return c;
}

}  // namespace

std::string SerializeDonorProfile(const DonorProfile& p) {
  boost::json::object o;
  o["protocol"] = p.protocol;
  o["public_name"] = p.public_name;
  o["team"] = p.team;
  return boost::json::serialize(o);
}

Result<DonorProfile> ParseDonorProfile(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "donor_profile", true,
                      [](ObjectReader& r) -> Result<DonorProfile> {
                        DonorProfile p;
                        UBCP_ASSIGN_OR_RETURN(p.public_name, r.String("public_name", 64));
                        UBCP_ASSIGN_OR_RETURN(p.team, r.String("team", 64));
                        if (!PrintableName(p.public_name)) {
                          return Malformed(r, "public_name", "must be printable");
                        }
                        if (!PrintableName(p.team))
                          return Malformed(r, "team", "must be printable");
                        return p;
                      });
}

std::string SerializeContribution(const Contribution& c) {
  boost::json::object o = ContributionJson(c);
  o["protocol"] = kProtocolVersion;
  return boost::json::serialize(o);
}

Result<Contribution> ParseContribution(std::string_view json) {
  return ParseMessage(json, kMaxRequestJson, "contribution", true,
                      [](ObjectReader& r) { return ReadContribution(r); });
}

std::string SerializeLeaderboard(const Leaderboard& l) {
  boost::json::array donors, teams;
  for (const Contribution& c : l.donors) donors.push_back(ContributionJson(c));
  for (const TeamStanding& t : l.teams) {
    boost::json::object o;
    o["team"] = t.team;
    o["donors"] = t.donors;
    o["points_credits"] = t.points_credits;
    o["recent_credits_per_day"] = t.recent_credits_per_day;
    teams.push_back(std::move(o));
  }
  boost::json::object o;
  o["protocol"] = l.protocol;
  o["donors"] = std::move(donors);
  o["teams"] = std::move(teams);
  return boost::json::serialize(o);
}

Result<Leaderboard> ParseLeaderboard(std::string_view json) {
  return ParseMessage(
      json, kMaxJobStatusJson, "leaderboard", true, [](ObjectReader& r) -> Result<Leaderboard> {
        Leaderboard l;
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* donors,
                              r.Array("donors", kMaxLeaderboardRows));
        for (std::size_t i = 0; i < donors->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader d,
              json::ObjectValue((*donors)[i], r.path() + ".donors[" + std::to_string(i) + "]"));
          UBCP_ASSIGN_OR_RETURN(Contribution c, ReadContribution(d));
          l.donors.push_back(std::move(c));
        }
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* teams,
                              r.Array("teams", kMaxLeaderboardRows));
        for (std::size_t i = 0; i < teams->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader t,
              json::ObjectValue((*teams)[i], r.path() + ".teams[" + std::to_string(i) + "]"));
          TeamStanding s;
          UBCP_ASSIGN_OR_RETURN(s.team, t.String("team", kMaxStringField));
          UBCP_ASSIGN_OR_RETURN(s.donors, t.Int64("donors", 0, kMaxInt64));
          UBCP_ASSIGN_OR_RETURN(s.points_credits, t.Int64("points_credits", 0, kMaxCredits));
          UBCP_ASSIGN_OR_RETURN(s.recent_credits_per_day,
                                t.Double("recent_credits_per_day", kNonNegative));
          UBCP_RETURN_IF_ERROR(t.Finish());
          l.teams.push_back(std::move(s));
        }
        return l;
      });
}

// ---- catalog ----

std::string SerializeCatalog(const Catalog& c) {
  boost::json::array models;
  for (const CatalogModel& m : c.models) {
    boost::json::object o;
    o["name"] = m.name;
    o["model_spec"] = m.model_spec;
    o["blob"] = m.blob;
    o["source_job"] = m.source_job;
    o["description"] = m.description;
    o["created_at"] = m.created_at;
    models.push_back(std::move(o));
  }
  boost::json::object o;
  o["protocol"] = c.protocol;
  o["models"] = std::move(models);
  return boost::json::serialize(o);
}

Result<Catalog> ParseCatalog(std::string_view json) {
  return ParseMessage(
      json, kMaxJobStatusJson, "catalog", true, [](ObjectReader& r) -> Result<Catalog> {
        Catalog c;
        UBCP_ASSIGN_OR_RETURN(const boost::json::array* models,
                              r.Array("models", kMaxCatalogModels));
        for (std::size_t i = 0; i < models->size(); ++i) {
          UBCP_ASSIGN_OR_RETURN(
              ObjectReader m,
              json::ObjectValue((*models)[i], r.path() + ".models[" + std::to_string(i) + "]"));
          CatalogModel model;
          UBCP_ASSIGN_OR_RETURN(model.name, m.String("name", kMaxStringField));
          UBCP_ASSIGN_OR_RETURN(model.model_spec, m.String("model_spec", kMaxStringField));
          UBCP_ASSIGN_OR_RETURN(model.blob, ReadContentId(m, "blob", false));
          UBCP_ASSIGN_OR_RETURN(model.source_job, m.Int64("source_job", 0, kMaxInt64));
          UBCP_ASSIGN_OR_RETURN(model.description, m.String("description", kMaxStringField * 4));
          UBCP_ASSIGN_OR_RETURN(model.created_at, m.Int64("created_at", 0, kMaxInt64));
          UBCP_RETURN_IF_ERROR(m.Finish());
          c.models.push_back(std::move(model));
        }
        return c;
      });
}

// ---- errors ----

std::string SerializeError(const Error& e) {
  boost::json::object o;
  o["error"] = ErrcName(e.code);
  o["message"] = SanitizeUtf8(e.message, kMaxErrorMessage);
  return boost::json::serialize(o);
}

Result<Error> ParseErrorBody(std::string_view json) {
  // Read as a distinct type: Result<Error> cannot be built implicitly from an Error (value and
  // error types coincide), so the ParseMessage machinery works on ErrorBody.
  struct ErrorBody {
    Errc code;
    std::string message;
  };
  // The error body has no protocol field (its shape is fixed for every version), so it is not
  // version checked.
  Result<ErrorBody> body =
      ParseMessage(json, kMaxRequestJson, "error", false, [](ObjectReader& r) -> Result<ErrorBody> {
        UBCP_ASSIGN_OR_RETURN(std::string name, r.String("error", kMaxStringField));
        UBCP_ASSIGN_OR_RETURN(std::string message, r.String("message", kMaxErrorMessage));
        for (int c = static_cast<int>(Errc::kInvalidArgument);
             c <= static_cast<int>(Errc::kInternal); ++c) {
          if (ErrcName(static_cast<Errc>(c)) == name) {
            return ErrorBody{static_cast<Errc>(c), std::move(message)};
          }
        }
        return Malformed(r, "error", "unknown error code");
      });
  if (!body) return Result<Error>(boost::system::in_place_error, std::move(body).error());
  return Result<Error>(boost::system::in_place_value, Error{body->code, std::move(body->message)});
}

}  // namespace ubcp::common
