// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs one verified work unit with libtorch (through ubcp/common/model.h). The manifest has
// already been signature-checked; the blobs are hash-checked again here before they are
// decompressed, and their contents are checked against the manifest's model spec before they
// reach libtorch.

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

// `adversary` (adversary.h) replaces a finetune update before it is encoded; honest by default.
common::Result<UnitOutput> ExecuteUnit(const common::Manifest& manifest,
                                       common::ByteSpan model_blob, common::ByteSpan data_blob,
                                       int threads, const Adversary& adversary = {});

}  // namespace ubcp::client
