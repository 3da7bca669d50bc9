// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/unit_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include "ubcp/common/atomic_file.h"
#include "ubcp/common/crypto.h"

namespace ubcp::client {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

constexpr std::size_t kMaxStateJson = 4096;
constexpr std::size_t kMaxOutputJson = 16 * 1024;
constexpr std::size_t kMaxFinishedLog = 64u << 20;
constexpr std::array<std::string_view, 5> kPhaseNames = {"leased", "fetched", "executed",
                                                         "uploaded", "signed"};

common::Error IoError(const std::string& what) {
  return MakeError(Errc::kIo, what + ": " + std::strerror(errno));
}

// A parsed JSON object from a bounded file; kMalformed when it is not one.
common::Result<boost::json::object> ReadJsonObject(const fs::path& path, std::size_t max) {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text, common::ReadFileAtMost(path, max));
  if (!text) return MakeError(Errc::kNotFound, path.string() + " is missing");
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(*text, ec);
  if (ec || !value.is_object()) return MakeError(Errc::kMalformed, path.string() + " is not JSON");
  return std::move(value.as_object());
}

const boost::json::value* Field(const boost::json::object& o, std::string_view name) {
  return o.if_contains(name);
}

std::optional<double> NumberField(const boost::json::object& o, std::string_view name) {
  const auto* v = Field(o, name);
  if (v == nullptr) return std::nullopt;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  return std::nullopt;
}

std::optional<std::int64_t> IntField(const boost::json::object& o, std::string_view name) {
  const auto* v = Field(o, name);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  return std::nullopt;
}

std::optional<std::string> StringField(const boost::json::object& o, std::string_view name) {
  const auto* v = Field(o, name);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->get_string());
}

struct FinishedLine {
  std::int64_t unit_id = 0;
  bool acknowledged = false;
  int attempt = -1;  // -1: "attempt=?" (the state was unreadable when the unit ended)
};

// One line of finished.log, "<id> acknowledged|failed attempt=<n|?> <reason>", read strictly:
// anything else (a damaged line) is nullopt.
std::optional<FinishedLine> ParseFinishedLine(std::string_view line) {
  auto word = [&line]() {
    const std::size_t space = line.find(' ');
    std::string_view w = line.substr(0, space);
    line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    return w;
  };
  const std::string_view id_text = word(), ending = word(), attempt_text = word();
  FinishedLine out;
  auto [ptr, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), out.unit_id);
  if (ec != std::errc() || ptr != id_text.data() + id_text.size() || out.unit_id <= 0) {
    return std::nullopt;
  }
  if (ending != "acknowledged" && ending != "failed") return std::nullopt;
  out.acknowledged = ending == "acknowledged";
  constexpr std::string_view kTag = "attempt=";
  if (attempt_text.substr(0, kTag.size()) != kTag) return std::nullopt;
  const std::string_view n = attempt_text.substr(kTag.size());
  if (n != "?") {
    auto [p2, ec2] = std::from_chars(n.data(), n.data() + n.size(), out.attempt);
    if (ec2 != std::errc() || p2 != n.data() + n.size() || out.attempt < 0) return std::nullopt;
  }
  return out;
}

// The complete (newline-terminated, so fsynced) lines of finished.log, parsed; damaged ones are
// skipped. A torn last line was never fsynced: it is ignored.
template <class F>
void ForEachFinished(std::string_view text, F&& f) {
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    if (end == std::string_view::npos) break;
    if (auto line = ParseFinishedLine(text.substr(0, end))) f(*line);
    text.remove_prefix(end + 1);
  }
}

}  // namespace

std::string_view PhaseName(UnitPhase phase) { return kPhaseNames[static_cast<int>(phase)]; }

common::Result<UnitPhase> ParsePhase(std::string_view name) {
  for (std::size_t i = 0; i < kPhaseNames.size(); ++i) {
    if (kPhaseNames[i] == name) return static_cast<UnitPhase>(i);
  }
  return MakeError(Errc::kMalformed, "unknown unit phase '" + std::string(name) + "'");
}

common::Status SaveUnitOutput(const fs::path& unit_dir, const UnitOutput& output) {
  // JSON has no NaN or infinity: such an output could never be read back.
  for (double v : {output.metrics.loss, output.metrics.accuracy, output.metrics.first_loss,
                   output.wall_seconds}) {
    if (!std::isfinite(v)) return MakeError(Errc::kInvalidArgument, "the output is not finite");
  }
  boost::json::object o{{"loss", output.metrics.loss},
                        {"accuracy", output.metrics.accuracy},
                        {"first_loss", output.metrics.first_loss},
                        {"samples", output.metrics.samples},
                        {"wall_seconds", output.wall_seconds}};
  if (output.update) {
    const common::EncodedBlob& u = *output.update;
    UBCP_RETURN_IF_ERROR(
        common::WriteFileAtomically(unit_dir / "update.blob", common::AsString(u.bytes), 0600));
    o["update"] = boost::json::object{{"id", common::ContentId(u.bytes)},
                                      {"size", u.bytes.size()},
                                      {"raw_size", u.raw_size},
                                      {"fp32_size", u.fp32_size}};
  }
  return common::WriteFileAtomically(unit_dir / "output.json", boost::json::serialize(o), 0600);
}

std::optional<UnitOutput> LoadUnitOutput(const fs::path& unit_dir) {
  auto o = ReadJsonObject(unit_dir / "output.json", kMaxOutputJson);
  if (!o) return std::nullopt;
  UnitOutput out;
  auto loss = NumberField(*o, "loss"), accuracy = NumberField(*o, "accuracy"),
       first_loss = NumberField(*o, "first_loss"), wall = NumberField(*o, "wall_seconds");
  auto samples = IntField(*o, "samples");
  if (!loss || !accuracy || !first_loss || !wall || !samples) return std::nullopt;
  out.metrics.loss = *loss;
  out.metrics.accuracy = *accuracy;
  out.metrics.first_loss = *first_loss;
  out.metrics.samples = *samples;
  out.wall_seconds = *wall;
  if (const auto* u = Field(*o, "update"); u != nullptr) {
    if (!u->is_object()) return std::nullopt;
    const auto& uo = u->get_object();
    auto id = StringField(uo, "id");
    auto size = IntField(uo, "size"), raw = IntField(uo, "raw_size"),
         fp32 = IntField(uo, "fp32_size");
    if (!id || !size || !raw || !fp32 || *size < 0 || *raw < 0 || *fp32 < 0) return std::nullopt;
    auto bytes = common::ReadFileAtMost(unit_dir / "update.blob", static_cast<std::size_t>(*size));
    if (!bytes || !*bytes || (*bytes)->size() != static_cast<std::size_t>(*size)) {
      return std::nullopt;
    }
    common::EncodedBlob blob;
    blob.bytes.assign((*bytes)->begin(), (*bytes)->end());
    if (common::ContentId(blob.bytes) != *id) return std::nullopt;
    blob.raw_size = static_cast<std::size_t>(*raw);
    blob.fp32_size = static_cast<std::size_t>(*fp32);
    out.update = std::move(blob);
  }
  return out;
}

common::Result<UnitJournal> UnitJournal::Open(const fs::path& state_dir) {
  const fs::path root = state_dir / "units";
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return MakeError(Errc::kIo, "cannot create " + root.string() + ": " + ec.message());
  fs::permissions(root, fs::perms::owner_all, fs::perm_options::replace, ec);
  return UnitJournal(root);
}

fs::path UnitJournal::Dir(std::int64_t unit_id) const { return root_ / std::to_string(unit_id); }
fs::path UnitJournal::ManifestPath(std::int64_t unit_id) const {
  return Dir(unit_id) / "manifest.env";
}
fs::path UnitJournal::CheckpointPath(std::int64_t unit_id) const {
  return Dir(unit_id) / "checkpoint";
}

common::Status UnitJournal::Save(const UnitRecord& record) const {
  boost::json::object o{{"unit_id", record.unit_id},
                        {"phase", PhaseName(record.phase)},
                        {"attempt", record.attempt},
                        {"worker_crashes", record.worker_crashes},
                        {"leased_at", record.leased_at}};
  return common::WriteFileAtomically(Dir(record.unit_id) / "state.json", boost::json::serialize(o),
                                     0600);
}

common::Result<UnitRecord> UnitJournal::Load(std::int64_t unit_id) const {
  UBCP_ASSIGN_OR_RETURN(boost::json::object o,
                        ReadJsonObject(Dir(unit_id) / "state.json", kMaxStateJson));
  auto id = IntField(o, "unit_id"), attempt = IntField(o, "attempt"),
       starts = IntField(o, "worker_crashes"), leased_at = IntField(o, "leased_at");
  auto phase_name = StringField(o, "phase");
  if (!id || *id != unit_id || !attempt || *attempt < 0 || *attempt > 1'000'000'000 || !starts ||
      *starts < 0 || *starts > 1'000'000 || !leased_at || !phase_name) {
    return MakeError(Errc::kMalformed, "bad state.json for unit " + std::to_string(unit_id));
  }
  UBCP_ASSIGN_OR_RETURN(UnitPhase phase, ParsePhase(*phase_name));
  return UnitRecord{unit_id, static_cast<int>(*attempt), phase, static_cast<int>(*starts),
                    *leased_at};
}

common::Status UnitJournal::Begin(std::int64_t unit_id, const common::SignedEnvelope& manifest,
                                  std::int64_t now) {
  // The manifest was verified by the caller; the journal keeps which attempt of the unit it is,
  // since a unit given up may come back to this host as a later attempt.
  UBCP_ASSIGN_OR_RETURN(common::Manifest parsed, common::ParseManifest(manifest.payload));
  if (parsed.unit_id != unit_id) {
    return MakeError(Errc::kInvalidArgument, "manifest is not unit " + std::to_string(unit_id));
  }
  const fs::path dir = Dir(unit_id);
  std::error_code ec;
  if (!fs::create_directory(dir, ec)) {
    if (ec) return MakeError(Errc::kIo, "cannot create " + dir.string() + ": " + ec.message());
    return MakeError(Errc::kConflict, "unit " + std::to_string(unit_id) + " is already held");
  }
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  UBCP_RETURN_IF_ERROR(common::WriteFileAtomically(ManifestPath(unit_id),
                                                   common::SerializeEnvelope(manifest), 0600));
  return Save(UnitRecord{unit_id, parsed.attempt, UnitPhase::kLeased, 0, now});
}

common::Status UnitJournal::Advance(UnitRecord& record, UnitPhase next) {
  if (static_cast<int>(next) < static_cast<int>(record.phase)) {
    return MakeError(Errc::kInvalidArgument, "unit " + std::to_string(record.unit_id) +
                                                 " cannot go back from " +
                                                 std::string(PhaseName(record.phase)) + " to " +
                                                 std::string(PhaseName(next)));
  }
  UnitRecord updated = record;
  updated.phase = next;
  UBCP_RETURN_IF_ERROR(Save(updated));
  record = updated;
  return {};
}

common::Result<common::SignedEnvelope> UnitJournal::LoadManifest(std::int64_t unit_id) const {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(ManifestPath(unit_id), common::kMaxEnvelopeJson));
  if (!text)
    return MakeError(Errc::kNotFound, "unit " + std::to_string(unit_id) + " has no manifest");
  return common::ParseEnvelope(*text);
}

common::Status UnitJournal::SaveResult(std::int64_t unit_id,
                                       const common::SignedEnvelope& result) const {
  return common::WriteFileAtomically(Dir(unit_id) / "result.env", common::SerializeEnvelope(result),
                                     0600);
}

common::Result<common::SignedEnvelope> UnitJournal::LoadResult(std::int64_t unit_id) const {
  UBCP_ASSIGN_OR_RETURN(
      std::optional<std::string> text,
      common::ReadFileAtMost(Dir(unit_id) / "result.env", common::kMaxEnvelopeJson));
  if (!text)
    return MakeError(Errc::kNotFound, "unit " + std::to_string(unit_id) + " has no result");
  return common::ParseEnvelope(*text);
}

common::Result<bool> UnitJournal::Logged(std::int64_t unit_id, int attempt) const {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(root_ / "finished.log", kMaxFinishedLog));
  bool logged = false;
  if (text) {
    ForEachFinished(*text, [&](const FinishedLine& line) {
      logged = logged || (line.unit_id == unit_id && line.attempt == attempt);
    });
  }
  return logged;
}

common::Status UnitJournal::Finish(std::int64_t unit_id, bool acknowledged,
                                   std::string_view reason) const {
  // The attempt tells this ending from an earlier attempt's of the same unit (Pending()).
  auto record = Load(unit_id);
  std::string line = std::to_string(unit_id) + (acknowledged ? " acknowledged" : " failed") +
                     " attempt=" + (record ? std::to_string(record->attempt) : "?") + " ";
  for (char c : reason.substr(0, 200)) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  const fs::path log = root_ / "finished.log";
  const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return IoError("open " + log.string());
  const ssize_t written = ::write(fd, line.data(), line.size());
  const int write_errno = errno;
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (written != static_cast<ssize_t>(line.size())) {
    errno = write_errno;
    return IoError("append to " + log.string());
  }
  if (!synced) return IoError("fsync " + log.string());
  std::error_code ec;
  fs::remove_all(Dir(unit_id), ec);
  if (ec)
    return MakeError(Errc::kIo, "cannot remove " + Dir(unit_id).string() + ": " + ec.message());
  return {};
}

common::Result<std::vector<std::int64_t>> UnitJournal::Finished(bool acknowledged) const {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(root_ / "finished.log", kMaxFinishedLog));
  std::vector<std::int64_t> ids;
  if (text) {
    ForEachFinished(*text, [&](const FinishedLine& line) {
      if (line.acknowledged == acknowledged) ids.push_back(line.unit_id);
    });
  }
  return ids;
}

common::Result<std::vector<UnitRecord>> UnitJournal::Pending() const {
  std::vector<UnitRecord> pending;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(root_, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    std::int64_t id = 0;
    auto [ptr, parse_ec] = std::from_chars(name.data(), name.data() + name.size(), id);
    if (parse_ec != std::errc() || ptr != name.data() + name.size() || id <= 0) continue;
    auto record = Load(id);
    bool logged = false;
    if (record) {
      UBCP_ASSIGN_OR_RETURN(logged, Logged(id, record->attempt));
    }
    if (logged || !record) {
      // Ended before the crash (logged), or never recorded as leased (no state): nothing to do.
      fs::remove_all(entry.path(), ec);
      continue;
    }
    pending.push_back(*record);
  }
  if (ec) return MakeError(Errc::kIo, "cannot list " + root_.string() + ": " + ec.message());
  std::sort(pending.begin(), pending.end(),
            [](const UnitRecord& a, const UnitRecord& b) { return a.unit_id < b.unit_id; });
  return pending;
}

}  // namespace ubcp::client
