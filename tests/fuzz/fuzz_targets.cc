// SPDX-License-Identifier: Apache-2.0
#include "fuzz/fuzz_targets.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string_view>

#include "fuzz/scratch_dir.h"
#include "ubcp/client/unit_journal.h"
#include "ubcp/client/worker_protocol.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/key_statement.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/train_checkpoint.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/byte_range.h"

namespace ubcp::fuzz {
namespace {

namespace fs = std::filesystem;

// Aborts with the target, the broken invariant and the start of the input, so that a replay
// failure can be reproduced; libFuzzer saves the input itself.
class Checker {
 public:
  Checker(const char* target, const std::uint8_t* data, std::size_t size)
      : target_(target), data_(data), size_(size) {}
  void operator()(bool ok, const char* invariant) const {
    if (ok) return;
    std::fprintf(stderr,
                 "%s: invariant broken: %s\ninput (%zu bytes, escaped, first 512): ", target_,
                 invariant, size_);
    for (std::size_t i = 0; i < std::min<std::size_t>(size_, 512); ++i) {
      const unsigned c = data_[i];
      if (c >= 0x20 && c < 0x7f && c != '\\') {
        std::fputc(static_cast<int>(c), stderr);
      } else {
        std::fprintf(stderr, "\\x%02x", c);
      }
    }
    std::fputc('\n', stderr);
    std::abort();
  }

 private:
  const char* target_;
  const std::uint8_t* data_;
  std::size_t size_;
};

std::string_view AsText(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Equal up to the few units in the last place that Boost.JSON 1.81's number parsing loses; both
// infinite with the same sign also counts.
bool NearlyEqual(double a, double b) {
  if (a == b) return true;
  const double scale = std::max({std::abs(a), std::abs(b), std::numeric_limits<double>::min()});
  return std::abs(a - b) <= 1e-12 * scale;
}

// ---- byte ranges ----

std::string CanonicalRange(const coordinator::RangeRequest& r) {
  if (r.suffix) return "bytes=-" + std::to_string(r.first);
  if (r.last == coordinator::RangeRequest::kOpenEnd)
    return "bytes=" + std::to_string(r.first) + "-";
  return "bytes=" + std::to_string(r.first) + "-" + std::to_string(r.last);
}

bool SameRequest(const coordinator::RangeRequest& a, const coordinator::RangeRequest& b) {
  return a.suffix == b.suffix && a.first == b.first && a.last == b.last;
}

// A satisfiable range formats to a Content-Range that parses back to it.
void CheckContentRangeRoundTrip(const Checker& check, const coordinator::ByteRange& range) {
  check(range.first <= range.last && range.last < range.total, "a range lies inside its total");
  auto again = coordinator::ParseContentRange(coordinator::ContentRangeHeader(range));
  check(again.has_value() && *again == range, "ContentRangeHeader parses back to its range");
}

// ---- checkpoints ----

void CheckDecodedCheckpoint(const Checker& check, const common::ModelSpec& spec,
                            common::ByteSpan encoded) {
  auto decoded = common::DecodeCheckpoint(encoded, kCheckpointBinding, spec);
  if (!decoded) return;
  const common::TrainCheckpoint& c = *decoded;
  check(c.step >= 1, "an accepted checkpoint has done a step");
  check(std::isfinite(c.first_loss) && std::isfinite(c.last_loss), "its losses are finite");
  check(common::CheckSameLayout(common::ModelLayout(spec), c.weights).has_value(),
        "its weights have the model's layout");
  // The training parameters it resumes under: its optimizer, one step more, and momentum exactly
  // when SGD state is present.
  common::TrainParams params;
  params.optimizer = c.optimizer;
  params.momentum = c.optimizer == common::Optimizer::kSgd && c.optimizer_state.empty() ? 0.0 : 0.9;
  if (c.step < std::numeric_limits<int>::max()) {
    params.local_steps = c.step + 1;
    auto resumable = common::CheckCheckpoint(spec, params, c);
    check(resumable.has_value(), "an accepted checkpoint passes CheckCheckpoint for its params");
  }
  auto other = common::DecodeCheckpoint(encoded, "another binding", spec);
  check(!other && other.error().code == common::Errc::kConflict,
        "an accepted checkpoint is refused under another binding");
  // int8 tensors decode to fp32, so only the second encoding must reproduce itself exactly.
  const common::Bytes encoding = common::EncodeCheckpoint(c, kCheckpointBinding);
  check(encoding.size() <= common::MaxCheckpointSize(spec), "its encoding fits MaxCheckpointSize");
  auto again = common::DecodeCheckpoint(encoding, kCheckpointBinding, spec);
  check(again.has_value(), "its encoding decodes");
  check(again && common::EncodeCheckpoint(*again, kCheckpointBinding) == encoding,
        "encode(decode(encoding)) reproduces the encoding");
}

// ---- worker protocol ----

bool SameReport(const client::BenchmarkReport& a, const client::BenchmarkReport& b) {
  if (!NearlyEqual(a.matmul_gflops, b.matmul_gflops) || a.cpu_threads != b.cpu_threads ||
      a.cuda_devices != b.cuda_devices || a.cuda_names != b.cuda_names ||
      !NearlyEqual(a.cuda_matmul_gflops, b.cuda_matmul_gflops) ||
      a.torch_version != b.torch_version || a.gpu.use != b.gpu.use ||
      a.gpu.status != b.gpu.status || a.gpu.driver_version != b.gpu.driver_version ||
      a.train.size() != b.train.size() || a.gpu.gpus.size() != b.gpu.gpus.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.train.size(); ++i) {
    if (a.train[i].model != b.train[i].model ||
        !NearlyEqual(a.train[i].samples_per_s, b.train[i].samples_per_s)) {
      return false;
    }
  }
  for (std::size_t i = 0; i < a.gpu.gpus.size(); ++i) {
    const auto &x = a.gpu.gpus[i], &y = b.gpu.gpus[i];
    if (x.name != y.name || x.memory_total_bytes != y.memory_total_bytes ||
        x.memory_used_bytes != y.memory_used_bytes) {
      return false;
    }
  }
  return true;
}

void CheckBenchmarkReport(const Checker& check, std::string_view json) {
  auto report = client::BenchmarkFromJson(json);
  if (!report) return;
  check(std::isfinite(report->matmul_gflops) && report->matmul_gflops >= 0,
        "an accepted report has a finite, non-negative matmul_gflops");
  check(report->cpu_threads >= 0 && report->cuda_devices >= 0, "its counts are non-negative");
  for (const auto& t : report->train) {
    check(std::isfinite(t.samples_per_s) && t.samples_per_s >= 0,
          "its training throughputs are finite and non-negative");
  }
  const std::string serialized = client::BenchmarkToJson(*report);
  // Numbers may come back longer ("0" as "0E0"): a report near the size limit need not fit again.
  if (serialized.size() > client::kMaxWorkerLine) return;
  auto again = client::BenchmarkFromJson(serialized);
  check(again.has_value(), "BenchmarkToJson of an accepted report is accepted");
  check(again && SameReport(*report, *again), "it parses back to the same report");
}

// A request line the worker accepts has paths inside its root and formats back to itself.
void CheckWorkerRequest(const Checker& check, std::string_view line) {
  const std::filesystem::path root = "/var/lib/ubcp";
  auto request = client::ParseWorkerRequest(line, root);
  if (!request) return;
  for (const auto* path : {&request->unit_dir, &request->model_blob, &request->data_blob}) {
    const std::string text = path->string();
    check(text.starts_with("/var/lib/ubcp/") || text == "/var/lib/ubcp",
          "an accepted request path lies inside the root");
    check(text.find("/../") == std::string::npos, "an accepted request path does not climb");
  }
  check(request->checkpoint_every >= 0 && request->checkpoint_seconds >= 0 &&
            request->adversary.scale > 0,
        "an accepted request has values in range");
  auto back = client::ParseWorkerRequest(client::FormatWorkerRequest(*request), root);
  check(back && back->unit_dir == request->unit_dir &&
            back->manifest_hash == request->manifest_hash &&
            back->checkpoint_every == request->checkpoint_every &&
            back->checkpoint_seconds == request->checkpoint_seconds &&
            back->adversary.mode == request->adversary.mode,
        "an accepted request formats and parses back to itself");
}

void CheckWorkerLine(const Checker& check, std::string_view line) {
  CheckWorkerRequest(check, line);
  auto event = client::ParseWorkerLine(line);
  if (!event) return;
  using Kind = client::WorkerEvent::Kind;
  check(line.size() <= client::kMaxWorkerLine, "an accepted line is within kMaxWorkerLine");
  switch (event->kind) {
    case Kind::kProgress:
      check(event->first >= 0 && event->first <= event->second, "progress has 0 <= done <= total");
      break;
    case Kind::kResumed:
    case Kind::kCheckpoint:
      check(event->first >= 0, "a step is non-negative");
      break;
    case Kind::kEnd:
      check(event->first == client::kWorkerDone || event->first == client::kWorkerFailed,
            "an end line carries a final code");
      break;
    case Kind::kError:
    case Kind::kBenchmark:
      check(event->text == line.substr(line.find(' ') + 1), "the text is the rest of the line");
      break;
  }
  const std::string formatted = client::FormatWorkerEvent(*event);
  check(formatted.size() <= client::kMaxWorkerLine &&
            formatted.find_first_of("\r\n") == std::string::npos,
        "an event formats to one line within kMaxWorkerLine");
  auto again = client::ParseWorkerLine(formatted);
  check(again && again->kind == event->kind && again->first == event->first &&
            again->second == event->second,
        "a formatted event parses back to its kind and numbers");
  const bool text_kept = event->text.size() <= client::kMaxWorkerLine - 16 &&
                         event->text.find_first_of("\r\n") == std::string::npos;
  if (text_kept) check(again && again->text == event->text, "a one-line text survives formatting");
  if (event->kind == Kind::kBenchmark) CheckBenchmarkReport(check, event->text);
}

// ---- unit journal ----

std::vector<std::string_view> SplitJournalFiles(std::string_view input) {
  std::vector<std::string_view> files;
  while (files.size() < 4) {
    const std::size_t at = input.find(kJournalSeparator);
    if (at == std::string_view::npos) break;
    files.push_back(input.substr(0, at));
    input.remove_prefix(at + kJournalSeparator.size());
  }
  files.push_back(input);
  return files;
}

bool WriteFile(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  return static_cast<bool>(out);
}

bool SameRecord(const client::UnitRecord& a, const client::UnitRecord& b) {
  return a.unit_id == b.unit_id && a.attempt == b.attempt && a.phase == b.phase &&
         a.worker_crashes == b.worker_crashes && a.leased_at == b.leased_at;
}

bool SameOutput(const client::UnitOutput& a, const client::UnitOutput& b) {
  if (!NearlyEqual(a.metrics.loss, b.metrics.loss) ||
      !NearlyEqual(a.metrics.accuracy, b.metrics.accuracy) ||
      !NearlyEqual(a.metrics.first_loss, b.metrics.first_loss) ||
      a.metrics.samples != b.metrics.samples || !NearlyEqual(a.wall_seconds, b.wall_seconds) ||
      a.update.has_value() != b.update.has_value()) {
    return false;
  }
  return !a.update ||
         (a.update->bytes == b.update->bytes && a.update->raw_size == b.update->raw_size &&
          a.update->fp32_size == b.update->fp32_size);
}

}  // namespace

int FuzzWire(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace ubcp::common;
  (void)ParseEnvelope(text);
  (void)ParseHostRegistration(text);
  (void)ParseHostRegistered(text);
  (void)ParseWorkRequest(text);
  (void)ParseManifest(text);
  (void)ParseResultPayload(text);
  (void)ParseResultAck(text);
  (void)ParseUnitAbandon(text);
  (void)ParseUnitAbandonAck(text);
  (void)ParseJobSpec(text);
  (void)ParseJobCreated(text);
  (void)ParseJobQuote(text);
  (void)ParseCreditsStatus(text);
  (void)ParseGrantRequest(text);
  (void)ParseJobList(text);
  (void)ParseCapacityReport(text);
  (void)ParseDonorProfile(text);
  (void)ParseContribution(text);
  (void)ParseLeaderboard(text);
  (void)ParseCatalog(text);
  (void)ParseJobStatus(text);
  (void)ParseErrorBody(text);
  (void)ParseKeyStatement(text);
  return 0;
}

int FuzzTensorBlob(const std::uint8_t* data, std::size_t size) {
  common::TensorLimits limits;
  limits.max_tensors = 16;
  limits.max_elements = 1 << 20;
  (void)common::DecodeTensorBlob(common::ByteSpan(data, size), 8u << 20, limits);
  return 0;
}

int FuzzByteRange(const std::uint8_t* data, std::size_t size) {
  using coordinator::RangeRequest;
  const Checker check("FuzzByteRange", data, size);
  const std::string_view value = AsText(data, size);

  if (auto request = coordinator::ParseRangeHeader(value)) {
    const RangeRequest& r = *request;
    check(r.suffix || r.first <= r.last, "a parsed range has first <= last");
    auto canonical = coordinator::ParseRangeHeader(CanonicalRange(r));
    check(canonical && SameRequest(*canonical, r), "the canonical Range parses back to itself");
    const std::array<std::uint64_t, 10> totals = {
        0, 1, 2, r.first, r.first + 1, r.last, r.last + 1, 8u << 20, UINT64_MAX - 1, UINT64_MAX};
    for (const std::uint64_t total : totals) {
      auto range = coordinator::ResolveRange(r, total);
      const bool satisfiable = total != 0 && (r.suffix ? r.first != 0 : r.first < total);
      check(range.has_value() == satisfiable,
            "ResolveRange refuses exactly a first position at or past the end, a zero suffix "
            "and an empty representation");
      if (!range) {
        check(!coordinator::ParseContentRange(coordinator::UnsatisfiedContentRange(total)),
              "the 416 Content-Range is no chunk range");
        continue;
      }
      check(range->total == total, "a resolved range keeps its total");
      if (r.suffix) {
        check(range->last == total - 1 && range->length() == std::min(r.first, total),
              "a suffix selects the final min(suffix, total) bytes");
      } else {
        check(range->first == r.first && range->last == std::min(r.last, total - 1),
              "a range keeps its first position and is clipped at the last byte");
      }
      CheckContentRangeRoundTrip(check, *range);
    }
  }

  auto chunk = coordinator::ParseContentRange(value);
  if (chunk) {
    CheckContentRangeRoundTrip(check, *chunk);
  } else {
    check(chunk.error().code == common::Errc::kMalformed, "a bad Content-Range is kMalformed");
  }
  return 0;
}

int FuzzTrainCheckpoint(const std::uint8_t* data, std::size_t size) {
  const Checker check("FuzzTrainCheckpoint", data, size);
  auto spec = common::ParseModelSpec(kCheckpointSpec);
  check(spec.has_value(), "kCheckpointSpec is a model spec");
  const common::ByteSpan input(data, size);
  CheckDecodedCheckpoint(check, *spec, input);

  // The input with its trailing digest recomputed, then also with its binding digest set.
  constexpr std::size_t kDigestSize = 32;
  constexpr std::size_t kBindingAt = 4 + 2;  // after the magic and the version
  if (size < kDigestSize) return 0;
  common::Bytes body(input.begin(), input.end() - kDigestSize);
  for (bool patch_binding : {false, true}) {
    if (patch_binding) {
      const common::Digest binding = common::Blake2b256(common::AsBytes(kCheckpointBinding));
      if (body.size() < kBindingAt + binding.bytes.size()) break;
      std::copy(binding.bytes.begin(), binding.bytes.end(), body.begin() + kBindingAt);
    }
    common::Bytes sealed = body;
    const common::Digest digest = common::Blake2b256(sealed);
    sealed.insert(sealed.end(), digest.bytes.begin(), digest.bytes.end());
    CheckDecodedCheckpoint(check, *spec, sealed);
  }
  return 0;
}

int FuzzWorkerProtocol(const std::uint8_t* data, std::size_t size) {
  const Checker check("FuzzWorkerProtocol", data, size);
  std::string_view text = AsText(data, size);
  CheckWorkerLine(check, text);
  // The daemon hands the parser one line at a time, without its newline.
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    CheckWorkerLine(check, text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  CheckBenchmarkReport(check, AsText(data, size));
  return 0;
}

std::string JoinJournalFiles(const std::vector<std::string>& files) {
  std::string out;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (i > 0) out += kJournalSeparator;
    out += files[i];
  }
  return out;
}

int FuzzUnitJournal(const std::uint8_t* data, std::size_t size) {
  const Checker check("FuzzUnitJournal", data, size);
  const std::vector<std::string_view> files = SplitJournalFiles(AsText(data, size));
  const ScratchDir scratch("ubcp-fuzz-journal");
  check(!scratch.path().empty(), "a temporary directory can be created");
  auto journal = client::UnitJournal::Open(scratch.path());
  check(journal.has_value(), "a journal opens in an empty state directory");
  const fs::path dir = journal->Dir(kJournalUnitId);
  std::error_code ec;
  check(fs::create_directory(dir, ec), "the unit directory can be created");
  const std::array<fs::path, 4> paths = {dir / "state.json", dir / "output.json",
                                         dir / "update.blob", journal->root() / "finished.log"};
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (i < paths.size()) {
      check(WriteFile(paths[i], files[i]), "an input file can be written");
    } else {
      check(WriteFile(dir / "manifest.env", files[i]) && WriteFile(dir / "result.env", files[i]),
            "an input file can be written");
    }
  }

  auto record = journal->Load(kJournalUnitId);
  if (record) {
    check(record->unit_id == kJournalUnitId && record->worker_crashes >= 0,
          "a loaded state names its unit and counts no negative crashes");
    check(journal->Save(*record).has_value(), "a loaded state saves");
    auto again = journal->Load(kJournalUnitId);
    check(again && SameRecord(*again, *record), "a saved state loads back unchanged");
  }

  if (auto output = client::LoadUnitOutput(dir)) {
    // Boost.JSON writes a non-finite double as "Infinity" or "NaN", which no JSON parser reads:
    // only finite outputs can come back.
    const auto& m = output->metrics;
    if (std::isfinite(m.loss) && std::isfinite(m.accuracy) && std::isfinite(m.first_loss) &&
        std::isfinite(output->wall_seconds)) {
      const fs::path copy = scratch.path() / "copy";
      check(fs::create_directory(copy, ec), "a second unit directory can be created");
      check(client::SaveUnitOutput(copy, *output).has_value(), "a loaded output saves");
      auto again = client::LoadUnitOutput(copy);
      check(again && SameOutput(*again, *output), "a saved output loads back unchanged");
    }
  }

  (void)journal->LoadManifest(kJournalUnitId);
  (void)journal->LoadResult(kJournalUnitId);

  auto acknowledged = journal->Finished(true);
  auto failed = journal->Finished(false);
  check(acknowledged && failed, "a small finished.log is read");
  const std::string_view log = files.size() > 3 ? files[3] : std::string_view();
  check(acknowledged->size() + failed->size() <=
            static_cast<std::size_t>(std::count(log.begin(), log.end(), '\n')),
        "finished.log yields at most one unit per complete line");
  const auto lists = [](const std::vector<std::int64_t>& ids) {
    return std::find(ids.begin(), ids.end(), kJournalUnitId) != ids.end();
  };
  const bool logged = lists(*acknowledged) || lists(*failed);

  // Pending keeps a unit with a readable state whose attempt has not ended (finished.log names
  // attempts, which Finished does not return: a logged unit may be pending as a later attempt).
  auto pending = journal->Pending();
  check(pending.has_value(), "Pending lists a readable units directory");
  if (record && !logged) {
    check(pending->size() == 1 && SameRecord(pending->front(), *record),
          "a unit with a readable state and no ending is pending");
  } else if (!record) {
    check(pending->empty() && !fs::exists(dir), "a unit without a readable state is removed");
  } else {
    check(pending->empty() ? !fs::exists(dir)
                           : pending->size() == 1 && SameRecord(pending->front(), *record),
          "a logged unit is either removed or pending with its state");
  }
  return 0;
}

}  // namespace ubcp::fuzz
