// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/tensor_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include "ubcp/common/compress.h"

namespace ubcp::common {
namespace {

constexpr std::uint8_t kMagic[4] = {'U', 'B', 'T', '1'};
constexpr std::uint8_t kDtypeF32 = 1;
constexpr std::uint8_t kDtypeInt8Block = 2;
constexpr std::uint8_t kDtypeU8 = 3;
constexpr int kQuantMax = 127;
constexpr std::size_t kMaxEncodableName = std::numeric_limits<std::uint16_t>::max();
constexpr std::size_t kMaxEncodableNdim = std::numeric_limits<std::uint8_t>::max();
constexpr std::int64_t kMaxDim = std::numeric_limits<std::uint32_t>::max();

// Names end up in logs, JSON and error messages: printable ASCII without spaces only.
bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

std::uint64_t CeilDiv(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  void U8(std::uint8_t v) { out_.push_back(v); }
  void U16(std::uint16_t v) {
    for (int i = 0; i < 2; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void U32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void Raw(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    out_.insert(out_.end(), p, p + n);
  }
  void F32s(const float* data, std::size_t n) {
    if constexpr (std::endian::native == std::endian::little) {
      Raw(data, n * sizeof(float));
    } else {
      for (std::size_t i = 0; i < n; ++i) U32(std::bit_cast<std::uint32_t>(data[i]));
    }
  }

 private:
  Bytes& out_;
};

// Bounds-checked little-endian reader; every accessor fails instead of reading past the end.
class Reader {
 public:
  explicit Reader(ByteSpan in) : in_(in) {}
  std::size_t remaining() const { return in_.size() - pos_; }
  bool U8(std::uint8_t& v) {
    if (remaining() < 1) return false;
    v = in_[pos_++];
    return true;
  }
  bool U16(std::uint16_t& v) {
    if (remaining() < 2) return false;
    v = static_cast<std::uint16_t>(in_[pos_] | (in_[pos_ + 1] << 8));
    pos_ += 2;
    return true;
  }
  bool U32(std::uint32_t& v) {
    if (remaining() < 4) return false;
    v = static_cast<std::uint32_t>(in_[pos_]) | (static_cast<std::uint32_t>(in_[pos_ + 1]) << 8) |
        (static_cast<std::uint32_t>(in_[pos_ + 2]) << 16) |
        (static_cast<std::uint32_t>(in_[pos_ + 3]) << 24);
    pos_ += 4;
    return true;
  }
  bool Take(std::size_t n, ByteSpan& out) {
    if (remaining() < n) return false;
    out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }

 private:
  ByteSpan in_;
  std::size_t pos_ = 0;
};

float LoadF32(const std::uint8_t* p) {
  const std::uint32_t bits =
      static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
      (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
  return std::bit_cast<float>(bits);
}

Error Truncated(std::string_view what) {
  return MakeError(Errc::kMalformed, "tensor codec: truncated " + std::string(what));
}

// The encoder has no error channel, so it only writes tensors it can describe exactly.
bool Encodable(const NamedTensor& t) {
  if (!ValidName(t.name) || t.name.size() > kMaxEncodableName) return false;
  if (t.shape.size() > kMaxEncodableNdim) return false;
  for (std::int64_t d : t.shape) {
    if (d < 1 || d > kMaxDim) return false;
  }
  const std::int64_t n = t.numel();
  if (n < 1) return false;
  const auto un = static_cast<std::uint64_t>(n);
  switch (t.kind) {
    case TensorKind::kF32:
      return t.f32.size() == un && t.u8.empty();
    case TensorKind::kU8:
      return t.u8.size() == un && t.f32.empty();
  }
  return false;
}

void EncodeInt8Blocks(Writer& w, const std::vector<float>& x, std::uint32_t block) {
  const std::size_t n = x.size();
  const std::size_t blocks = CeilDiv(n, block);
  std::vector<float> scales(blocks);
  Bytes q(n);
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t begin = b * block;
    const std::size_t end = std::min(n, begin + block);
    float max_abs = 0.0f;
    bool finite = true;
    for (std::size_t i = begin; i < end; ++i) {
      if (!std::isfinite(x[i])) finite = false;
      max_abs = std::max(max_abs, std::fabs(x[i]));
    }
    // A non-finite input gets a NaN scale, which DecodeTensors refuses: a diverged update must
    // not arrive as plausible numbers.
    const float scale =
        !finite ? std::numeric_limits<float>::quiet_NaN() : max_abs / static_cast<float>(kQuantMax);
    scales[b] = scale;
    for (std::size_t i = begin; i < end; ++i) {
      long r = 0;
      if (finite && scale > 0.0f) {
        r = std::lround(static_cast<double>(x[i]) / static_cast<double>(scale));
        r = std::clamp<long>(r, -kQuantMax, kQuantMax);
      }
      q[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(r));
    }
  }
  w.U32(block);
  w.F32s(scales.data(), scales.size());
  w.Raw(q.data(), q.size());
}

// Bytes of a tensor record before its payload.
std::size_t HeaderSize(const NamedTensor& t) {
  return 2 + t.name.size() + 1 + 1 + 4 * t.shape.size();
}

Result<NamedTensor> DecodeOne(Reader& r, const TensorLimits& limits, std::int64_t& elements_left) {
  NamedTensor t;
  std::uint16_t name_len = 0;
  if (!r.U16(name_len)) return Truncated("name length");
  if (name_len > limits.max_name) {
    return MakeError(Errc::kTooLarge, "tensor codec: name of " + std::to_string(name_len) +
                                          " bytes exceeds " + std::to_string(limits.max_name));
  }
  ByteSpan name;
  if (!r.Take(name_len, name)) return Truncated("name");
  t.name.assign(AsString(name));
  if (!ValidName(t.name)) return MakeError(Errc::kMalformed, "tensor codec: invalid tensor name");

  std::uint8_t dtype = 0;
  std::uint8_t ndim = 0;
  if (!r.U8(dtype) || !r.U8(ndim)) return Truncated("tensor header of '" + t.name + "'");
  if (dtype != kDtypeF32 && dtype != kDtypeInt8Block && dtype != kDtypeU8) {
    return MakeError(Errc::kMalformed, "tensor codec: unknown dtype " + std::to_string(dtype) +
                                           " for '" + t.name + "'");
  }
  if (ndim > limits.max_ndim) {
    return MakeError(Errc::kTooLarge,
                     "tensor codec: '" + t.name + "' has " + std::to_string(ndim) + " dimensions");
  }
  // numel stays <= elements_left <= max_elements, so no product below can overflow.
  std::int64_t n = 1;
  t.shape.reserve(ndim);
  for (int i = 0; i < ndim; ++i) {
    std::uint32_t d = 0;
    if (!r.U32(d)) return Truncated("shape of '" + t.name + "'");
    if (d == 0)
      return MakeError(Errc::kMalformed, "tensor codec: zero dimension in '" + t.name + "'");
    if (static_cast<std::int64_t>(d) > elements_left / n) {
      return MakeError(Errc::kTooLarge, "tensor codec: element limit exceeded at '" + t.name + "'");
    }
    n *= d;
    t.shape.push_back(d);
  }
  if (n > elements_left) {
    return MakeError(Errc::kTooLarge, "tensor codec: element limit exceeded at '" + t.name + "'");
  }
  elements_left -= n;
  const auto un = static_cast<std::size_t>(n);

  // Every payload length is checked against the remaining input before allocating, so memory
  // use is bounded by the input size, not by what the header claims.
  ByteSpan payload;
  switch (dtype) {
    case kDtypeF32: {
      if (un > r.remaining() / 4 || !r.Take(un * 4, payload)) return Truncated("fp32 data");
      t.kind = TensorKind::kF32;
      t.f32.resize(un);
      if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(t.f32.data(), payload.data(), payload.size());
      } else {
        for (std::size_t i = 0; i < un; ++i) t.f32[i] = LoadF32(payload.data() + 4 * i);
      }
      for (float v : t.f32) {
        if (!std::isfinite(v)) {
          return MakeError(Errc::kMalformed, "tensor codec: non-finite value in '" + t.name + "'");
        }
      }
      break;
    }
    case kDtypeInt8Block: {
      std::uint32_t block = 0;
      if (!r.U32(block)) return Truncated("quantization block");
      if (block == 0) return MakeError(Errc::kMalformed, "tensor codec: zero quantization block");
      const std::uint64_t blocks = CeilDiv(un, block);
      ByteSpan scales;
      if (blocks > r.remaining() / 4 || !r.Take(blocks * 4, scales)) return Truncated("scales");
      if (!r.Take(un, payload)) return Truncated("int8 data");
      t.kind = TensorKind::kF32;
      t.f32.resize(un);
      for (std::uint64_t b = 0; b < blocks; ++b) {
        const float scale = LoadF32(scales.data() + 4 * b);
        if (!std::isfinite(scale) || scale < 0.0f) {
          return MakeError(Errc::kMalformed, "tensor codec: bad scale in '" + t.name + "'");
        }
        const std::size_t begin = b * block;
        const std::size_t end = std::min<std::uint64_t>(un, begin + std::uint64_t{block});
        for (std::size_t i = begin; i < end; ++i) {
          const auto q = static_cast<std::int8_t>(payload[i]);
          // The encoder never writes -128; accepting it would break |value| <= 127 * scale.
          if (q < -kQuantMax) {
            return MakeError(Errc::kMalformed, "tensor codec: int8 value -128 in '" + t.name + "'");
          }
          const float v = static_cast<float>(q) * scale;
          if (!std::isfinite(v)) {
            return MakeError(Errc::kMalformed,
                             "tensor codec: non-finite value in '" + t.name + "'");
          }
          t.f32[i] = v;
        }
      }
      break;
    }
    case kDtypeU8: {
      if (!r.Take(un, payload)) return Truncated("u8 data");
      t.kind = TensorKind::kU8;
      t.u8.assign(payload.begin(), payload.end());
      break;
    }
  }
  return t;
}

}  // namespace

std::int64_t NamedTensor::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

std::string_view FloatEncodingName(FloatEncoding e) {
  switch (e) {
    case FloatEncoding::kFp32:
      return "fp32";
    case FloatEncoding::kInt8Block:
      return "int8";
  }
  return "unknown";
}

Result<FloatEncoding> ParseFloatEncoding(std::string_view name) {
  if (name == "fp32") return FloatEncoding::kFp32;
  if (name == "int8") return FloatEncoding::kInt8Block;
  return MakeError(Errc::kInvalidArgument, "unknown float encoding '" + std::string(name) + "'");
}

Bytes EncodeTensors(const TensorList& tensors, FloatEncoding encoding, std::uint32_t block) {
  // Inconsistent input (data size != product of shape, bad names or dims, duplicates, a zero
  // block) is a caller bug. There is no error channel, so the result is empty, which every
  // decoder refuses: the mistake surfaces at the first decode instead of as wrong weights.
  if (tensors.size() > std::numeric_limits<std::uint32_t>::max() || block == 0) return {};
  std::set<std::string_view> names;
  for (const NamedTensor& t : tensors) {
    if (!Encodable(t) || !names.insert(t.name).second) return {};
  }

  Bytes out;
  Writer w(out);
  w.Raw(kMagic, sizeof(kMagic));
  w.U32(static_cast<std::uint32_t>(tensors.size()));
  for (const NamedTensor& t : tensors) {
    w.U16(static_cast<std::uint16_t>(t.name.size()));
    w.Raw(t.name.data(), t.name.size());
    const bool quantize = t.kind == TensorKind::kF32 && encoding == FloatEncoding::kInt8Block;
    w.U8(t.kind == TensorKind::kU8 ? kDtypeU8 : quantize ? kDtypeInt8Block : kDtypeF32);
    w.U8(static_cast<std::uint8_t>(t.shape.size()));
    for (std::int64_t d : t.shape) w.U32(static_cast<std::uint32_t>(d));
    if (t.kind == TensorKind::kU8) {
      w.Raw(t.u8.data(), t.u8.size());
    } else if (quantize) {
      EncodeInt8Blocks(w, t.f32, block);
    } else {
      w.F32s(t.f32.data(), t.f32.size());
    }
  }
  return out;
}

Result<TensorList> DecodeTensors(ByteSpan encoded, const TensorLimits& limits) {
  Reader r(encoded);
  ByteSpan magic;
  if (!r.Take(sizeof(kMagic), magic)) return Truncated("magic");
  if (std::memcmp(magic.data(), kMagic, sizeof(kMagic)) != 0) {
    return MakeError(Errc::kMalformed, "tensor codec: bad magic");
  }
  std::uint32_t count = 0;
  if (!r.U32(count)) return Truncated("tensor count");
  if (count > limits.max_tensors) {
    return MakeError(Errc::kTooLarge, "tensor codec: " + std::to_string(count) +
                                          " tensors exceed the limit of " +
                                          std::to_string(limits.max_tensors));
  }
  TensorList tensors;
  tensors.reserve(count);
  std::set<std::string, std::less<>> names;
  std::int64_t elements_left = std::max<std::int64_t>(limits.max_elements, 0);
  for (std::uint32_t i = 0; i < count; ++i) {
    UBCP_ASSIGN_OR_RETURN(NamedTensor t, DecodeOne(r, limits, elements_left));
    if (!names.insert(t.name).second) {
      return MakeError(Errc::kMalformed, "tensor codec: duplicate tensor '" + t.name + "'");
    }
    tensors.push_back(std::move(t));
  }
  if (r.remaining() != 0) {
    return MakeError(Errc::kMalformed,
                     "tensor codec: " + std::to_string(r.remaining()) + " trailing bytes");
  }
  return tensors;
}

EncodedBlob EncodeTensorBlob(const TensorList& tensors, FloatEncoding encoding) {
  EncodedBlob blob;
  const Bytes raw = EncodeTensors(tensors, encoding);
  blob.raw_size = raw.size();
  blob.fp32_size = sizeof(kMagic) + 4;
  for (const NamedTensor& t : tensors) {
    const std::size_t n = t.kind == TensorKind::kU8 ? t.u8.size() : t.f32.size() * 4;
    blob.fp32_size += HeaderSize(t) + n;
  }
  blob.bytes = ZstdCompress(raw);
  return blob;
}

Result<TensorList> DecodeTensorBlob(ByteSpan blob, std::size_t max_raw,
                                    const TensorLimits& limits) {
  UBCP_ASSIGN_OR_RETURN(Bytes raw, ZstdDecompress(blob, max_raw));
  return DecodeTensors(raw, limits);
}

const NamedTensor* FindTensor(const TensorList& tensors, std::string_view name) {
  for (const NamedTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Status CheckSameLayout(const TensorList& expected, const TensorList& tensors) {
  if (expected.size() != tensors.size()) {
    return MakeError(Errc::kMalformed, "layout: expected " + std::to_string(expected.size()) +
                                           " tensors, got " + std::to_string(tensors.size()));
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const NamedTensor& e = expected[i];
    const NamedTensor& t = tensors[i];
    if (e.name != t.name) {
      return MakeError(Errc::kMalformed, "layout: tensor " + std::to_string(i) + " is '" + t.name +
                                             "', expected '" + e.name + "'");
    }
    if (e.kind != t.kind) {
      return MakeError(Errc::kMalformed, "layout: '" + t.name + "' has the wrong kind");
    }
    if (e.shape != t.shape) {
      return MakeError(Errc::kMalformed, "layout: '" + t.name + "' has the wrong shape");
    }
    // Callers index the data by the expected shape, so data that disagrees with its own shape
    // does not have that layout either.
    const std::size_t data_size = t.kind == TensorKind::kU8 ? t.u8.size() : t.f32.size();
    const std::size_t other_size = t.kind == TensorKind::kU8 ? t.f32.size() : t.u8.size();
    if (t.numel() < 0 || data_size != static_cast<std::size_t>(t.numel()) || other_size != 0) {
      return MakeError(Errc::kMalformed, "layout: '" + t.name + "' data does not match its shape");
    }
  }
  return {};
}

}  // namespace ubcp::common
