// SPDX-License-Identifier: Apache-2.0
#pragma once
// Tensor lists stored as blobs: bytes in the BlobStore, their record (size, decompressed size)
// in the Store's blob index, so that every later read is bounded by the recorded sizes.

#include <cstdint>
#include <string>

#include "ubcp/common/tensor_codec.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {

// Largest decompressed tensor blob the coordinator reads or accepts (models, shards, updates).
inline constexpr std::uint64_t kMaxTensorBlobRaw = 512ull << 20;

common::Result<BlobRecord> PutTensorBlob(const BlobStore& blobs, Store& store,
                                         const common::TensorList& tensors,
                                         common::FloatEncoding encoding, const std::string& kind,
                                         std::int64_t now);
// Reads, hash-checks, decompresses (capped by the recorded raw size) and decodes.
common::Result<common::TensorList> GetTensorBlob(const BlobStore& blobs, Store& store,
                                                 const std::string& id);

}  // namespace ubcp::coordinator
