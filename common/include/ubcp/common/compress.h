// SPDX-License-Identifier: Apache-2.0
#pragma once
// zstd frames with a hard cap on the decompressed size (decompression bombs are refused before
// any large allocation).

#include "ubcp/common/bytes.h"
#include "ubcp/common/result.h"

namespace ubcp::common {

Bytes ZstdCompress(ByteSpan data, int level = 3);

// Decompresses one zstd frame. kTooLarge if the output would exceed `max_output` bytes (checked
// against the frame header first, and enforced while streaming when the header has no size);
// kMalformed for anything that is not exactly one valid frame.
Result<Bytes> ZstdDecompress(ByteSpan frame, std::size_t max_output);

}  // namespace ubcp::common
