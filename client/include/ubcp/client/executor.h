// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs one verified work unit with libtorch (through ubcp/common/model.h). The manifest has
// already been signature-checked; the blobs are hash-checked again here before they are
// decompressed, and their contents are checked against the manifest's model spec before they
// reach libtorch.

#include <cstdint>
#include <functional>
#include <optional>

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

// `adversary` (adversary.h) replaces a finetune update before it is encoded; honest by default.
// `progress`, when set, hears (0, total) once the inputs are verified, then (done, total) after
// each optimizer step or evaluation batch (common/model.h), and (total, total) when done.
common::Result<UnitOutput> ExecuteUnit(const common::Manifest& manifest,
                                       common::ByteSpan model_blob, common::ByteSpan data_blob,
                                       int threads, const Adversary& adversary = {},
                                       const ProgressFn& progress = {});

}  // namespace ubcp::client
