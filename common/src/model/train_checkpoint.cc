// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/train_checkpoint.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "ubcp/common/crypto.h"

namespace ubcp::common {
namespace {

constexpr std::uint8_t kMagic[4] = {'U', 'B', 'C', 'K'};
constexpr std::uint16_t kVersion = 1;
constexpr std::size_t kDigestSize = 32;
constexpr std::uint8_t kOptimizerSgd = 1;
constexpr std::uint8_t kOptimizerAdam = 2;
// magic, version, binding digest, optimizer, step, two losses, two tensor-list lengths.
constexpr std::size_t kHeaderSize = 4 + 2 + kDigestSize + 1 + 4 + 8 + 8 + 8 + 8;
// The longest state suffix OptimizerStateLayout appends to a parameter name.
constexpr std::size_t kMaxSuffix = 16;

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  void Raw(ByteSpan b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Uint(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void F64(double v) { Uint(std::bit_cast<std::uint64_t>(v), 8); }

 private:
  Bytes& out_;
};

// Bounds-checked little-endian reader: every accessor fails instead of reading past the end.
class Reader {
 public:
  explicit Reader(ByteSpan in) : in_(in) {}
  std::size_t remaining() const { return in_.size() - pos_; }
  bool Raw(std::size_t n, ByteSpan& out) {
    if (remaining() < n) return false;
    out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool Uint(int bytes, std::uint64_t& v) {
    ByteSpan b;
    if (!Raw(static_cast<std::size_t>(bytes), b)) return false;
    v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b[static_cast<std::size_t>(i)];
    return true;
  }
  bool F64(double& v) {
    std::uint64_t bits;
    if (!Uint(8, bits)) return false;
    v = std::bit_cast<double>(bits);
    return true;
  }

 private:
  ByteSpan in_;
  std::size_t pos_ = 0;
};

Error Malformed(const std::string& what) {
  return MakeError(Errc::kMalformed, "checkpoint: " + what);
}

std::int64_t Elements(const TensorList& layout) {
  std::int64_t n = 0;
  for (const NamedTensor& t : layout) n += t.numel();
  return n;
}

// Upper bound of EncodeTensors(fp32) of `layout` with up to `copies` tensors per entry, each named
// at most kMaxSuffix longer.
std::size_t EncodedBound(const TensorList& layout, std::size_t copies) {
  std::size_t per_copy = 0;
  for (const NamedTensor& t : layout) {
    per_copy += 2 + t.name.size() + kMaxSuffix + 2 + 4 * t.shape.size() +
                4 * static_cast<std::size_t>(t.numel());
  }
  return 8 + copies * per_copy;
}

Status CheckFinite(const TensorList& tensors, std::string_view what) {
  for (const NamedTensor& t : tensors) {
    if (static_cast<std::int64_t>(t.f32.size()) != t.numel()) {
      return Malformed(std::string(what) + " '" + t.name + "' storage does not match its shape");
    }
    for (float v : t.f32) {
      if (!std::isfinite(v)) return Malformed(std::string(what) + " '" + t.name + "' not finite");
    }
  }
  return {};
}

Result<TensorList> DecodeList(Reader& r, const TensorList& layout, std::size_t copies,
                              std::string_view what) {
  std::uint64_t len;
  ByteSpan bytes;
  if (!r.Uint(8, len) || len > r.remaining() || !r.Raw(static_cast<std::size_t>(len), bytes)) {
    return Malformed(std::string(what) + " truncated");
  }
  TensorLimits limits;
  limits.max_tensors = copies * layout.size();
  limits.max_elements = static_cast<std::int64_t>(copies) * Elements(layout);
  auto tensors = DecodeTensors(bytes, limits);
  if (!tensors) return Malformed(std::string(what) + ": " + tensors.error().message);
  return std::move(*tensors);
}

}  // namespace

TensorList OptimizerStateLayout(const ModelSpec& spec, Optimizer optimizer, double momentum) {
  TensorList out;
  const TensorList params = ModelLayout(spec);
  for (const NamedTensor& p : params) {
    if (optimizer == Optimizer::kAdam) {
      for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
        NamedTensor s = p;
        s.name += suffix;
        out.push_back(std::move(s));
      }
    } else if (momentum != 0) {
      NamedTensor s = p;
      s.name += ".momentum_buffer";
      out.push_back(std::move(s));
    }
  }
  return out;
}

Status CheckCheckpoint(const ModelSpec& spec, const TrainParams& params,
                       const TrainCheckpoint& checkpoint) {
  if (checkpoint.step < 1 || checkpoint.step >= params.local_steps) {
    return MakeError(Errc::kInvalidArgument, "checkpoint step " + std::to_string(checkpoint.step) +
                                                 " is not inside the unit's " +
                                                 std::to_string(params.local_steps) + " steps");
  }
  if (checkpoint.optimizer != params.optimizer) {
    return MakeError(Errc::kInvalidArgument, "checkpoint was made with another optimizer");
  }
  if (!std::isfinite(checkpoint.first_loss) || !std::isfinite(checkpoint.last_loss)) {
    return Malformed("losses not finite");
  }
  UBCP_RETURN_IF_ERROR(CheckSameLayout(ModelLayout(spec), checkpoint.weights));
  UBCP_RETURN_IF_ERROR(CheckFinite(checkpoint.weights, "weight"));
  UBCP_RETURN_IF_ERROR(CheckSameLayout(
      OptimizerStateLayout(spec, params.optimizer, params.momentum), checkpoint.optimizer_state));
  return CheckFinite(checkpoint.optimizer_state, "optimizer state");
}

std::size_t MaxCheckpointSize(const ModelSpec& spec) {
  const TensorList layout = ModelLayout(spec);
  return kHeaderSize + EncodedBound(layout, 1) + EncodedBound(layout, 2) + kDigestSize;
}

Bytes EncodeCheckpoint(const TrainCheckpoint& checkpoint, std::string_view binding) {
  const Bytes weights = EncodeTensors(checkpoint.weights, FloatEncoding::kFp32);
  const Bytes state = EncodeTensors(checkpoint.optimizer_state, FloatEncoding::kFp32);
  Bytes out;
  out.reserve(kHeaderSize + weights.size() + state.size() + kDigestSize);
  Writer w(out);
  w.Raw(kMagic);
  w.Uint(kVersion, 2);
  w.Raw(Blake2b256(AsBytes(binding)).bytes);
  w.Uint(checkpoint.optimizer == Optimizer::kAdam ? kOptimizerAdam : kOptimizerSgd, 1);
  w.Uint(static_cast<std::uint32_t>(checkpoint.step), 4);
  w.F64(checkpoint.first_loss);
  w.F64(checkpoint.last_loss);
  w.Uint(weights.size(), 8);
  w.Raw(weights);
  w.Uint(state.size(), 8);
  w.Raw(state);
  const Digest digest = Blake2b256(out);
  w.Raw(digest.bytes);
  return out;
}

Result<TrainCheckpoint> DecodeCheckpoint(ByteSpan encoded, std::string_view binding,
                                         const ModelSpec& spec) {
  const TensorList layout = ModelLayout(spec);
  if (layout.empty()) return MakeError(Errc::kInvalidArgument, "checkpoint: invalid model spec");
  if (encoded.size() > MaxCheckpointSize(spec)) {
    return MakeError(Errc::kTooLarge, "checkpoint: larger than the model allows");
  }
  if (encoded.size() < kHeaderSize + kDigestSize) return Malformed("truncated");
  // Integrity first: nothing below reads a byte the digest has not covered.
  const ByteSpan body = encoded.first(encoded.size() - kDigestSize);
  const Digest digest = Blake2b256(body);
  if (!ConstantTimeEqual(digest.bytes, encoded.last(kDigestSize))) {
    return MakeError(Errc::kHashMismatch, "checkpoint: digest does not match its content");
  }

  Reader r(body);
  ByteSpan magic, bound_to;
  std::uint64_t version, optimizer, step;
  TrainCheckpoint out;
  if (!r.Raw(sizeof kMagic, magic) || std::memcmp(magic.data(), kMagic, sizeof kMagic) != 0) {
    return Malformed("bad magic");
  }
  if (!r.Uint(2, version)) return Malformed("truncated");
  if (version != kVersion) {
    return MakeError(Errc::kUnsupportedVersion,
                     "checkpoint: version " + std::to_string(version) + " is not understood");
  }
  if (!r.Raw(kDigestSize, bound_to)) return Malformed("truncated");
  if (!ConstantTimeEqual(bound_to, Blake2b256(AsBytes(binding)).bytes)) {
    return MakeError(Errc::kConflict, "checkpoint: written for another unit");
  }
  if (!r.Uint(1, optimizer) || !r.Uint(4, step) || !r.F64(out.first_loss) ||
      !r.F64(out.last_loss)) {
    return Malformed("truncated");
  }
  if (optimizer != kOptimizerSgd && optimizer != kOptimizerAdam) {
    return Malformed("unknown optimizer " + std::to_string(optimizer));
  }
  out.optimizer = optimizer == kOptimizerAdam ? Optimizer::kAdam : Optimizer::kSgd;
  if (step < 1 || step > static_cast<std::uint64_t>(std::numeric_limits<int>::max()))
    return Malformed("bad step");
  out.step = static_cast<int>(step);
  if (!std::isfinite(out.first_loss) || !std::isfinite(out.last_loss)) {
    return Malformed("losses not finite");
  }
  UBCP_ASSIGN_OR_RETURN(out.weights, DecodeList(r, layout, 1, "weights"));
  UBCP_ASSIGN_OR_RETURN(out.optimizer_state, DecodeList(r, layout, 2, "optimizer state"));
  if (r.remaining() != 0) return Malformed("trailing bytes");
  if (auto s = CheckSameLayout(layout, out.weights); !s) return Malformed(s.error().message);
  // SGD's state is empty without momentum; the exact layout is checked against the training
  // parameters by CheckCheckpoint.
  const bool state_fits =
      out.optimizer == Optimizer::kAdam
          ? static_cast<bool>(CheckSameLayout(OptimizerStateLayout(spec, Optimizer::kAdam, 0),
                                              out.optimizer_state))
          : out.optimizer_state.empty() ||
                static_cast<bool>(CheckSameLayout(OptimizerStateLayout(spec, Optimizer::kSgd, 1),
                                                  out.optimizer_state));
  if (!state_fits) return Malformed("optimizer state does not fit the model");
  return out;
}

}  // namespace ubcp::common
