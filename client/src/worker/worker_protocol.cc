// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/worker_protocol.h"

#include <unistd.h>

#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace ubcp::client {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

std::string Number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

std::optional<std::int64_t> ParseInt(std::string_view word) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
  if (ec != std::errc() || ptr != word.data() + word.size()) return std::nullopt;
  return v;
}

double Num(const boost::json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return NAN;
}

}  // namespace

std::vector<std::string> WorkerServeArgv(const fs::path& worker, const fs::path& root, int threads,
                                         double idle_exit_seconds) {
  return {worker.string(),
          "serve",
          "--root",
          root.string(),
          "--threads",
          std::to_string(threads),
          "--idle-exit-seconds",
          Number(idle_exit_seconds)};
}

std::string FormatWorkerRequest(const ExecutionRequest& r) {
  return "run " + boost::json::serialize(
                      boost::json::object{{"unit_dir", r.unit_dir.string()},
                                          {"manifest_hash", r.manifest_hash},
                                          {"model_blob", r.model_blob.string()},
                                          {"data_blob", r.data_blob.string()},
                                          {"checkpoint_every", r.checkpoint_every},
                                          {"checkpoint_seconds", r.checkpoint_seconds},
                                          {"adversary", AdversaryModeName(r.adversary.mode)},
                                          {"adversary_scale", r.adversary.scale}});
}

namespace {

// `path` when it is absolute and, normalized, inside `root` (also normalized).
common::Result<fs::path> InsideRoot(std::string_view text, const fs::path& root) {
  const fs::path path = fs::path(text).lexically_normal();
  if (text.empty() || text.size() > 4096 || text.find('\0') != std::string_view::npos ||
      !path.is_absolute()) {
    return MakeError(Errc::kForbidden, "a request path is not absolute: " + std::string(text));
  }
  const fs::path base = root.lexically_normal();
  auto p = path.begin();
  for (auto b = base.begin(); b != base.end(); ++b) {
    if (b->empty()) continue;  // the trailing "" of a root written with a final '/'
    if (p == path.end() || *p != *b) {
      return MakeError(Errc::kForbidden,
                       "a request path lies outside " + base.string() + ": " + path.string());
    }
    ++p;
  }
  for (; p != path.end(); ++p) {
    if (*p == "..") return MakeError(Errc::kForbidden, "a request path climbs out of its root");
  }
  return path;
}

}  // namespace

common::Result<ExecutionRequest> ParseWorkerRequest(std::string_view line, const fs::path& root) {
  if (line.size() > kMaxWorkerLine) return MakeError(Errc::kTooLarge, "worker request too long");
  const auto bad = [](std::string why) {
    return MakeError(Errc::kMalformed, "bad worker request: " + why);
  };
  if (line.substr(0, 4) != "run ") return bad("not a run request");
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(line.substr(4), ec);
  if (ec || !v.is_object()) return bad("not a JSON object");
  const auto& o = v.as_object();
  static constexpr std::string_view kFields[] = {
      "unit_dir",         "manifest_hash",      "model_blob", "data_blob",
      "checkpoint_every", "checkpoint_seconds", "adversary",  "adversary_scale"};
  if (o.size() != std::size(kFields)) return bad("expected exactly its eight fields");
  for (std::string_view field : kFields) {
    if (!o.contains(field)) return bad("no " + std::string(field));
  }
  const auto text = [&](std::string_view key) -> const boost::json::string* {
    return o.at(key).if_string();
  };
  for (std::string_view key :
       {"unit_dir", "manifest_hash", "model_blob", "data_blob", "adversary"}) {
    if (text(key) == nullptr) return bad(std::string(key) + " is not a string");
  }
  ExecutionRequest r;
  UBCP_ASSIGN_OR_RETURN(r.unit_dir, InsideRoot(*text("unit_dir"), root));
  UBCP_ASSIGN_OR_RETURN(r.model_blob, InsideRoot(*text("model_blob"), root));
  UBCP_ASSIGN_OR_RETURN(r.data_blob, InsideRoot(*text("data_blob"), root));
  r.manifest_hash = std::string(*text("manifest_hash"));
  if (r.manifest_hash.empty() || r.manifest_hash.size() > 256) return bad("manifest_hash");
  const boost::json::value& every = o.at("checkpoint_every");
  if (!every.is_int64() || every.get_int64() < 0 || every.get_int64() > 1'000'000) {
    return bad("checkpoint_every");
  }
  r.checkpoint_every = static_cast<int>(every.get_int64());
  r.checkpoint_seconds = Num(o.at("checkpoint_seconds"));
  if (!std::isfinite(r.checkpoint_seconds) || r.checkpoint_seconds < 0 ||
      r.checkpoint_seconds > 86400) {
    return bad("checkpoint_seconds");
  }
  auto mode = ParseAdversaryMode(*text("adversary"));
  if (!mode) return bad("adversary");
  r.adversary.mode = *mode;
  r.adversary.scale = Num(o.at("adversary_scale"));
  if (!std::isfinite(r.adversary.scale) || r.adversary.scale <= 0) return bad("adversary_scale");
  return r;
}

std::vector<std::string> WorkerBenchmarkArgv(const fs::path& worker, double seconds, int threads) {
  return {worker.string(), "benchmark", "--seconds",
          Number(seconds), "--threads", std::to_string(threads)};
}

std::optional<WorkerEvent> ParseWorkerLine(std::string_view line) {
  if (line.size() > kMaxWorkerLine) return std::nullopt;
  const std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const std::string_view word = line.substr(0, space);
  const std::string_view rest = line.substr(space + 1);
  WorkerEvent e;
  if (word == "error" || word == "benchmark") {
    e.kind = word == "error" ? WorkerEvent::Kind::kError : WorkerEvent::Kind::kBenchmark;
    e.text = std::string(rest);
    return e;
  }
  if (word == "progress") {
    const std::size_t gap = rest.find(' ');
    if (gap == std::string_view::npos) return std::nullopt;
    auto done = ParseInt(rest.substr(0, gap));
    auto total = ParseInt(rest.substr(gap + 1));
    if (!done || !total || *done < 0 || *total < 0 || *done > *total) return std::nullopt;
    e.kind = WorkerEvent::Kind::kProgress;
    e.first = *done;
    e.second = *total;
    return e;
  }
  if (word == "resumed" || word == "checkpoint") {
    auto step = ParseInt(rest);
    if (!step || *step < 0) return std::nullopt;
    e.kind = word == "resumed" ? WorkerEvent::Kind::kResumed : WorkerEvent::Kind::kCheckpoint;
    e.first = *step;
    return e;
  }
  if (word == "end") {
    auto code = ParseInt(rest);
    if (!code || (*code != kWorkerDone && *code != kWorkerFailed)) return std::nullopt;
    e.kind = WorkerEvent::Kind::kEnd;
    e.first = *code;
    return e;
  }
  return std::nullopt;
}

std::string FormatWorkerEvent(const WorkerEvent& e) {
  auto one_line = [](std::string text) {
    for (char& c : text) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    if (text.size() > kMaxWorkerLine - 16) text.resize(kMaxWorkerLine - 16);
    return text;
  };
  switch (e.kind) {
    case WorkerEvent::Kind::kProgress:
      return "progress " + std::to_string(e.first) + " " + std::to_string(e.second);
    case WorkerEvent::Kind::kResumed:
      return "resumed " + std::to_string(e.first);
    case WorkerEvent::Kind::kCheckpoint:
      return "checkpoint " + std::to_string(e.first);
    case WorkerEvent::Kind::kError:
      return "error " + one_line(e.text);
    case WorkerEvent::Kind::kBenchmark:
      return "benchmark " + one_line(e.text);
    case WorkerEvent::Kind::kEnd:
      return "end " + std::to_string(e.first);
  }
  return {};
}

std::string BenchmarkToJson(const BenchmarkReport& r) {
  boost::json::array train;
  for (const auto& t : r.train) {
    train.push_back(boost::json::object{{"model", t.model}, {"samples_per_s", t.samples_per_s}});
  }
  boost::json::array cuda_names;
  for (const auto& n : r.cuda_names) cuda_names.push_back(boost::json::string(n));
  boost::json::array gpus;
  for (const auto& g : r.gpu.gpus) {
    gpus.push_back(boost::json::object{{"name", g.name},
                                       {"memory_total_bytes", g.memory_total_bytes},
                                       {"memory_used_bytes", g.memory_used_bytes}});
  }
  return boost::json::serialize(boost::json::object{{"matmul_gflops", r.matmul_gflops},
                                                    {"train", std::move(train)},
                                                    {"cpu_threads", r.cpu_threads},
                                                    {"cuda_devices", r.cuda_devices},
                                                    {"cuda_names", std::move(cuda_names)},
                                                    {"cuda_matmul_gflops", r.cuda_matmul_gflops},
                                                    {"torch_version", r.torch_version},
                                                    {"gpu_use", static_cast<int>(r.gpu.use)},
                                                    {"gpu_status", r.gpu.status},
                                                    {"gpu_driver", r.gpu.driver_version},
                                                    {"gpus", std::move(gpus)}});
}

common::Result<BenchmarkReport> BenchmarkFromJson(std::string_view json) {
  if (json.size() > kMaxWorkerLine) return MakeError(Errc::kTooLarge, "benchmark report too large");
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(json, ec);
  const auto bad = [] {
    return MakeError(Errc::kMalformed, "bad benchmark report from the worker");
  };
  if (ec || !v.is_object()) return bad();
  const auto& o = v.as_object();
  BenchmarkReport r;
  try {
    r.matmul_gflops = Num(o.at("matmul_gflops"));
    for (const auto& t : o.at("train").as_array()) {
      const auto& to = t.as_object();
      r.train.push_back({std::string(to.at("model").as_string()), Num(to.at("samples_per_s"))});
    }
    const auto cpu_threads = o.at("cpu_threads").to_number<std::int64_t>();
    const auto cuda_devices = o.at("cuda_devices").to_number<std::int64_t>();
    if (cpu_threads < 0 || cpu_threads > 4096 || cuda_devices < 0 || cuda_devices > 64) {
      return bad();
    }
    r.cpu_threads = static_cast<int>(cpu_threads);
    r.cuda_devices = static_cast<int>(cuda_devices);
    for (const auto& n : o.at("cuda_names").as_array()) {
      r.cuda_names.emplace_back(n.as_string());
    }
    r.cuda_matmul_gflops = Num(o.at("cuda_matmul_gflops"));
    r.torch_version = std::string(o.at("torch_version").as_string());
    const auto use = o.at("gpu_use").to_number<std::int64_t>();
    if (use < 0 || use > static_cast<int>(GpuUse::kUsable)) return bad();
    r.gpu.use = static_cast<GpuUse>(use);
    r.gpu.status = std::string(o.at("gpu_status").as_string());
    r.gpu.driver_version = std::string(o.at("gpu_driver").as_string());
    for (const auto& g : o.at("gpus").as_array()) {
      const auto& go = g.as_object();
      NvidiaGpu gpu;
      gpu.name = std::string(go.at("name").as_string());
      gpu.memory_total_bytes = go.at("memory_total_bytes").to_number<std::uint64_t>();
      gpu.memory_used_bytes = go.at("memory_used_bytes").to_number<std::uint64_t>();
      r.gpu.gpus.push_back(std::move(gpu));
    }
  } catch (const std::exception&) {  // a missing field or a wrong type
    return bad();
  }
  if (!std::isfinite(r.matmul_gflops) || r.matmul_gflops < 0 ||
      !std::isfinite(r.cuda_matmul_gflops) || r.cuda_matmul_gflops < 0) {
    return bad();
  }
  for (const auto& t : r.train) {
    if (!std::isfinite(t.samples_per_s) || t.samples_per_s < 0) return bad();
  }
  return r;
}

fs::path DefaultWorkerPath() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path sibling = self.parent_path() / "ubcp-worker";
    if (::access(sibling.c_str(), X_OK) == 0) return sibling;
  }
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      const fs::path candidate = fs::path(rest.substr(0, colon)) / "ubcp-worker";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  return "ubcp-worker";
}

}  // namespace ubcp::client
