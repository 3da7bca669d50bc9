// SPDX-License-Identifier: Apache-2.0
#pragma once
// Framework-free named tensors and their binary codec. Model weights, updates (pseudo-gradients)
// and data shards all travel as an encoded TensorList inside a zstd frame. Nothing here depends
// on libtorch; ubcp/common/model.h converts.
//
// Encoding (little endian):
//   "UBT1" | u32 count | count x { u16 name_len | name | u8 dtype | u8 ndim | ndim x u32 dim |
//                                  payload }
//   dtype 1 = fp32: 4 bytes per element
//   dtype 2 = int8 block-quantized fp32: u32 block | ceil(n/block) x fp32 scale | n x int8,
//             value = int8 * scale, scale = max|x| / 127 of the block
//   dtype 3 = u8 raw bytes (images, labels)

#include <cstdint>
#include <string>
#include <vector>

#include "ubcp/common/bytes.h"
#include "ubcp/common/result.h"

namespace ubcp::common {

enum class TensorKind : std::uint8_t { kF32 = 1, kU8 = 3 };

// Exactly one of f32 / u8 holds the data, matching kind; size = product of shape.
struct NamedTensor {
  std::string name;
  TensorKind kind = TensorKind::kF32;
  std::vector<std::int64_t> shape;
  std::vector<float> f32;
  std::vector<std::uint8_t> u8;

  std::int64_t numel() const;
};
using TensorList = std::vector<NamedTensor>;

// How fp32 tensors are written. u8 tensors are always raw.
enum class FloatEncoding { kFp32, kInt8Block };
std::string_view FloatEncodingName(FloatEncoding e);  // "fp32" / "int8"
Result<FloatEncoding> ParseFloatEncoding(std::string_view name);

struct TensorLimits {
  std::size_t max_tensors = 256;
  std::int64_t max_elements = std::int64_t{64} << 20;  // over all tensors
  std::size_t max_name = 128;
  std::size_t max_ndim = 6;
};

inline constexpr std::uint32_t kDefaultQuantBlock = 256;

Bytes EncodeTensors(const TensorList& tensors, FloatEncoding encoding,
                    std::uint32_t block = kDefaultQuantBlock);
// Strict: kMalformed on bad magic, truncation, trailing bytes, bad dtype, zero/negative dims,
// non-finite scales or values, duplicate names; kTooLarge past `limits`. Decoded int8 tensors
// come back as kF32.
Result<TensorList> DecodeTensors(ByteSpan encoded, const TensorLimits& limits = {});

// Blob form: zstd(EncodeTensors(...)).
struct EncodedBlob {
  Bytes bytes;                // the zstd frame: what is stored, hashed and sent
  std::size_t raw_size = 0;   // size of the uncompressed encoding
  std::size_t fp32_size = 0;  // what plain fp32 without compression would take
};
EncodedBlob EncodeTensorBlob(const TensorList& tensors, FloatEncoding encoding);
// Decompresses (refusing more than max_raw bytes) then decodes.
Result<TensorList> DecodeTensorBlob(ByteSpan blob, std::size_t max_raw,
                                    const TensorLimits& limits = {});

// Finds a tensor by name, or nullptr.
const NamedTensor* FindTensor(const TensorList& tensors, std::string_view name);
// kMalformed unless `tensors` has exactly the names, kinds and shapes of `expected` (in order).
Status CheckSameLayout(const TensorList& expected, const TensorList& tensors);

}  // namespace ubcp::common
