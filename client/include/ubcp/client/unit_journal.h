// SPDX-License-Identifier: Apache-2.0
#pragma once
// The donor's record of the units it holds, on disk, so that a crash, a SIGKILL or a reboot
// loses nothing and counts nothing twice. Each leased unit has a directory
// <state>/units/<unit id>/ holding:
//   manifest.env   the signed manifest exactly as received (re-verified before it is parsed)
//   state.json     the unit's phase, saved at every transition (below)
//   checkpoint     the worker's last training checkpoint (train_checkpoint.h), if any
//   update.blob    the encoded fine-tune update, once executed
//   output.json    metrics, timing and the update's content id, once executed
//   result.env     the signed result, once signed: every retry posts these exact bytes
// A unit moves through the phases
//   leased -> fetched -> executed -> uploaded -> signed -> (acknowledged: directory removed)
// and from any phase to "failed" (directory removed). Each ending is appended to
// <state>/units/finished.log ("<unit id> acknowledged|failed attempt=<n> <reason>"), fsynced, so
// that a
// donor (and the crash test) can tell what became of every unit. Every file is written
// atomically (temp file + rename + fsync); a file that does not read back as written (size,
// hash) counts as absent, and the step that made it is done again.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/client/executor.h"
#include "ubcp/common/result.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

enum class UnitPhase { kLeased, kFetched, kExecuted, kUploaded, kSigned };
std::string_view PhaseName(UnitPhase phase);
common::Result<UnitPhase> ParsePhase(std::string_view name);

struct UnitRecord {
  std::int64_t unit_id = 0;
  int attempt = 0;  // the manifest's: a unit given up may come back as a later attempt
  UnitPhase phase = UnitPhase::kLeased;
  // Times this unit's worker crashed (a stop on pause is not a crash): a unit whose worker keeps
  // crashing is given up after a bound instead of looping forever.
  int worker_crashes = 0;
  std::int64_t leased_at = 0;  // unix seconds
};

// Writes update.blob (when there is an update) then output.json into `unit_dir`.
common::Status SaveUnitOutput(const std::filesystem::path& unit_dir, const UnitOutput& output);
// nullopt when no complete output is there (missing, unreadable, or an update.blob whose hash
// differs from output.json's): the unit must be executed (again).
std::optional<UnitOutput> LoadUnitOutput(const std::filesystem::path& unit_dir);

class UnitJournal {
 public:
  // Creates <state_dir>/units (0700) if needed.
  static common::Result<UnitJournal> Open(const std::filesystem::path& state_dir);

  // Units with a directory and a readable state, lowest id (oldest lease) first. A directory
  // without a readable state.json (a crash between mkdir and the first save) is removed: its
  // lease was never acted on.
  common::Result<std::vector<UnitRecord>> Pending() const;

  // Records a new lease: manifest.env then state.json (phase leased, the manifest's attempt).
  // kConflict when the unit already has a directory; the manifest must parse and name unit_id.
  common::Status Begin(std::int64_t unit_id, const common::SignedEnvelope& manifest,
                       std::int64_t now);
  // Saves `record` (its phase may only stay or move forward: kInvalidArgument otherwise).
  common::Status Advance(UnitRecord& record, UnitPhase next);
  common::Status Save(const UnitRecord& record) const;
  common::Result<UnitRecord> Load(std::int64_t unit_id) const;

  common::Result<common::SignedEnvelope> LoadManifest(std::int64_t unit_id) const;
  common::Status SaveResult(std::int64_t unit_id, const common::SignedEnvelope& result) const;
  common::Result<common::SignedEnvelope> LoadResult(std::int64_t unit_id) const;

  // Ends the unit: appends "<id> acknowledged|failed attempt=<n> <reason>" to finished.log
  // (fsync), then removes its directory. The log line comes first: a crash in between leaves a
  // directory whose unit and attempt are already logged, which Pending() then cleans up without
  // logging it twice.
  common::Status Finish(std::int64_t unit_id, bool acknowledged, std::string_view reason) const;
  // Unit ids logged as acknowledged / failed (in log order; for status and tests).
  common::Result<std::vector<std::int64_t>> Finished(bool acknowledged) const;

  std::filesystem::path Dir(std::int64_t unit_id) const;
  std::filesystem::path ManifestPath(std::int64_t unit_id) const;
  std::filesystem::path CheckpointPath(std::int64_t unit_id) const;
  const std::filesystem::path& root() const { return root_; }

 private:
  explicit UnitJournal(std::filesystem::path root) : root_(std::move(root)) {}
  common::Result<bool> Logged(std::int64_t unit_id, int attempt) const;
  std::filesystem::path root_;
};

}  // namespace ubcp::client
