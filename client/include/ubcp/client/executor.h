// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs one verified work unit with libtorch (through ubcp/common/model.h). The manifest has
// already been signature-checked; the blobs are hash-checked again here before they are
// decompressed, and their contents are checked against the manifest's model spec before they
// reach libtorch.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "ubcp/client/adversary.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

// Largest decompressed blob a client accepts, whatever a manifest declares.
inline constexpr std::uint64_t kMaxUnitBlobRaw = 512ull << 20;

struct UnitOutput {
  std::optional<common::EncodedBlob> update;  // finetune: zstd(encoded delta)
  common::ResultMetrics metrics;
  double wall_seconds = 0;
};

// Progress of one unit: `done` of `total` steps (optimizer steps of a finetune unit, evaluation
// batches of an eval unit). Called on the executing thread; must not throw.
using ProgressFn = std::function<void(std::int64_t done, std::int64_t total)>;

// Checkpoints of a finetune unit (common/train_checkpoint.h), and stopping a unit to resume it
// later.
struct CheckpointOptions {
  // Every every_steps optimizer steps but the last (0 = never), and when should_stop stops a
  // finetune unit, `save` (when set) gets the encoded checkpoint to store (atomically: a torn
  // file only costs the resume). An error from it stops the unit and ExecuteUnit returns it.
  int every_steps = 0;
  double every_seconds = 0;  // also once this long has passed since the last one (0 = never)
  std::function<common::Status(common::ByteSpan)> save;
  // Asked after each optimizer step or evaluation batch but the last (must be cheap): true
  // stops the unit, after saving a finetune unit's checkpoint; ExecuteUnit then returns an error
  // for which IsStopped holds.
  std::function<bool()> should_stop;
  // A checkpoint `save` was given earlier for this unit: the unit continues from it. One that
  // does not decode (corrupt, another binding) or does not fit the unit is logged and ignored:
  // the unit then starts from step 0, never from a wrong state.
  std::optional<common::Bytes> resume_from;
  // What the checkpoints are bound to: the unit's manifest hash.
  std::string binding;
};

// `adversary` (adversary.h) replaces a finetune update before it is encoded; honest by default.
// `progress`, when set, hears (start, total) once the inputs are verified (start: 0, or the
// resumed checkpoint's step), then (done, total) after each optimizer step or evaluation batch
// (common/model.h), and (total, total) when done. A resumed unit returns what it would have
// returned without interruption (same machine and thread count).
// True for the error ExecuteUnit returns when CheckpointOptions::should_stop stopped the unit
// (and for no other).
bool IsStopped(const common::Error& error);

common::Result<UnitOutput> ExecuteUnit(const common::Manifest& manifest,
                                       common::ByteSpan model_blob, common::ByteSpan data_blob,
                                       int threads, const Adversary& adversary = {},
                                       const ProgressFn& progress = {},
                                       const CheckpointOptions& checkpoint = {});

}  // namespace ubcp::client
