// SPDX-License-Identifier: Apache-2.0
// The framework-free half of the model zoo: spec strings, parameter layouts, seeded
// initialisation, FLOP counts and data-shard checks. The libtorch modules that realise these
// layouts live in train.cc, so that no header has to include torch.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/model.h"

namespace ubcp::common {
namespace {

constexpr int kMaxDim = 4096;
// Largest model accepted, in parameters: keeps a whole weight TensorList far below the codec's
// element limit, so that every valid spec can actually be shipped.
constexpr std::int64_t kMaxParams = std::int64_t{1} << 24;
// Largest data shard accepted, in rows.
constexpr std::int64_t kMaxRows = std::int64_t{1} << 22;
constexpr int kImageSide = 28;

std::vector<std::string_view> SplitDash(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t dash = s.find('-', start);
    parts.push_back(s.substr(start, dash == std::string_view::npos ? s.npos : dash - start));
    if (dash == std::string_view::npos) break;
    start = dash + 1;
  }
  return parts;
}

// "<prefix><decimal>" with 1 <= decimal <= kMaxDim and no sign or leading zero, so that every
// accepted string is canonical.
bool ParseField(std::string_view token, char prefix, int& out) {
  if (token.size() < 2 || token.size() > 5 || token[0] != prefix) return false;
  std::string_view digits = token.substr(1);
  if (digits[0] < '1' || digits[0] > '9') return false;
  int value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return false;
  if (value < 1 || value > kMaxDim) return false;
  out = value;
  return true;
}

bool InRange(int v) { return v >= 1 && v <= kMaxDim; }

std::int64_t ParamCount(const ModelSpec& s) {
  const std::int64_t in = s.input, c1 = s.c1, c2 = s.c2, h = s.hidden, c = s.classes;
  if (s.arch == ModelSpec::Arch::kMlp) return in * h + h + h * c + c;
  return 9 * c1 + c1 + 9 * c1 * c2 + c2 + 49 * c2 * h + h + h * c + c;
}

Status ValidateSpec(const ModelSpec& s) {
  bool ok = InRange(s.hidden) && InRange(s.classes) && s.classes >= 2;
  if (s.arch == ModelSpec::Arch::kMlp) {
    ok = ok && InRange(s.input);
  } else if (s.arch == ModelSpec::Arch::kCnn28) {
    ok = ok && InRange(s.c1) && InRange(s.c2);
  } else {
    ok = false;
  }
  if (!ok) return MakeError(Errc::kInvalidArgument, "model spec has sizes out of range");
  if (ParamCount(s) > kMaxParams) {
    return MakeError(Errc::kInvalidArgument,
                     "model spec has more than " + std::to_string(kMaxParams) + " parameters");
  }
  return {};
}

struct LayerShape {
  std::string name;
  std::vector<std::int64_t> weight_shape;
  std::int64_t out = 0;
  std::int64_t fan_in = 0;
};

// Layers in named_parameters() order; each contributes "<name>.weight" then "<name>.bias".
std::vector<LayerShape> Layers(const ModelSpec& s) {
  const std::int64_t h = s.hidden, c = s.classes;
  if (s.arch == ModelSpec::Arch::kMlp) {
    const std::int64_t in = s.input;
    return {{"fc1", {h, in}, h, in}, {"fc2", {c, h}, c, h}};
  }
  const std::int64_t c1 = s.c1, c2 = s.c2, flat = c2 * 7 * 7;
  return {{"conv1", {c1, 1, 3, 3}, c1, 9},
          {"conv2", {c2, c1, 3, 3}, c2, c1 * 9},
          {"fc1", {h, flat}, h, flat},
          {"fc2", {c, h}, c, h}};
}

TensorList Layout(const ModelSpec& s) {
  TensorList out;
  for (const LayerShape& layer : Layers(s)) {
    NamedTensor w;
    w.name = layer.name + ".weight";
    w.kind = TensorKind::kF32;
    w.shape = layer.weight_shape;
    w.f32.assign(static_cast<std::size_t>(w.numel()), 0.0f);
    NamedTensor b;
    b.name = layer.name + ".bias";
    b.kind = TensorKind::kF32;
    b.shape = {layer.out};
    b.f32.assign(static_cast<std::size_t>(layer.out), 0.0f);
    out.push_back(std::move(w));
    out.push_back(std::move(b));
  }
  return out;
}

std::int64_t ForwardFlops(const ModelSpec& s) {
  const std::int64_t h = s.hidden, c = s.classes;
  if (s.arch == ModelSpec::Arch::kMlp) return 2 * (std::int64_t{s.input} * h + h * c);
  const std::int64_t c1 = s.c1, c2 = s.c2;
  const std::int64_t conv1 = 2 * 9 * c1 * 28 * 28;
  const std::int64_t conv2 = 2 * 9 * c1 * c2 * 14 * 14;
  return conv1 + conv2 + 2 * (c2 * 49 * h + h * c);
}

// Element count of `shape`, or -1 when a dimension is not positive or the product overflows
// the bound.
std::int64_t CheckedNumel(const std::vector<std::int64_t>& shape, std::int64_t bound) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d <= 0 || n > bound / d) return -1;
    n *= d;
  }
  return n;
}

}  // namespace

std::string ModelSpec::ToString() const {
  if (arch == Arch::kCnn28) {
    return "cnn28-c" + std::to_string(c1) + "-c" + std::to_string(c2) + "-h" +
           std::to_string(hidden) + "-o" + std::to_string(classes);
  }
  return "mlp-i" + std::to_string(input) + "-h" + std::to_string(hidden) + "-o" +
         std::to_string(classes);
}

Result<ModelSpec> ParseModelSpec(std::string_view spec) {
  auto bad = [&] {
    return MakeError(Errc::kInvalidArgument,
                     "unknown model spec '" + std::string(spec.substr(0, 64)) + "'");
  };
  if (spec.size() > 64) return bad();
  std::vector<std::string_view> t = SplitDash(spec);
  ModelSpec s;
  if (t.size() == 4 && t[0] == "mlp") {
    s.arch = ModelSpec::Arch::kMlp;
    if (!ParseField(t[1], 'i', s.input) || !ParseField(t[2], 'h', s.hidden) ||
        !ParseField(t[3], 'o', s.classes)) {
      return bad();
    }
  } else if (t.size() == 5 && t[0] == "cnn28") {
    s.arch = ModelSpec::Arch::kCnn28;
    if (!ParseField(t[1], 'c', s.c1) || !ParseField(t[2], 'c', s.c2) ||
        !ParseField(t[3], 'h', s.hidden) || !ParseField(t[4], 'o', s.classes)) {
      return bad();
    }
  } else {
    return bad();
  }
  UBCP_RETURN_IF_ERROR(ValidateSpec(s));
  return s;
}

TensorList ModelLayout(const ModelSpec& spec) {
  if (!ValidateSpec(spec)) return {};
  return Layout(spec);
}

// Values follow torch's default Linear/Conv2d initialisation (kaiming_uniform with a = sqrt(5)
// for weights, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for biases), but
// are drawn from our own mt19937_64 stream with exact integer-to-float arithmetic, so they are
// bit-identical on every platform and libtorch version.
TensorList InitModel(const ModelSpec& spec, std::uint64_t seed) {
  if (!ValidateSpec(spec)) return {};
  TensorList out = Layout(spec);
  std::vector<LayerShape> layers = Layers(spec);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(layers[i / 2].fan_in));
    for (float& v : out[i].f32) {
      const double u = static_cast<double>(rng() >> 40) * 0x1p-24;  // [0, 1), 24 bits
      v = static_cast<float>((2.0 * u - 1.0) * bound);
    }
  }
  return out;
}

std::int64_t TrainFlopsPerSample(const ModelSpec& spec) {
  if (!ValidateSpec(spec)) return 0;
  return 3 * ForwardFlops(spec);
}

std::int64_t EvalFlopsPerSample(const ModelSpec& spec) {
  if (!ValidateSpec(spec)) return 0;
  return ForwardFlops(spec);
}

Status CheckDataShard(const ModelSpec& spec, const TensorList& data) {
  UBCP_RETURN_IF_ERROR(ValidateSpec(spec));
  const NamedTensor* x = FindTensor(data, "x");
  const NamedTensor* y = FindTensor(data, "y");
  if (data.size() != 2 || x == nullptr || y == nullptr) {
    return MakeError(Errc::kMalformed, "data shard must hold exactly the tensors 'x' and 'y'");
  }
  if (y->kind != TensorKind::kU8 || y->shape.size() != 1 || y->shape[0] < 1 ||
      y->shape[0] > kMaxRows || static_cast<std::int64_t>(y->u8.size()) != y->shape[0]) {
    return MakeError(Errc::kMalformed,
                     "data shard 'y' must be u8 [N] with 1 <= N <= " + std::to_string(kMaxRows));
  }
  const std::int64_t rows = y->shape[0];
  if (x->shape.size() < 2 || x->shape[0] != rows) {
    return MakeError(Errc::kMalformed, "data shard 'x' must be [N, ...] with N rows of 'y'");
  }
  const std::int64_t numel = CheckedNumel(x->shape, std::numeric_limits<std::int32_t>::max());
  if (numel < 0) return MakeError(Errc::kMalformed, "data shard 'x' has a bad shape");
  const std::size_t stored = x->kind == TensorKind::kU8 ? x->u8.size() : x->f32.size();
  if ((x->kind != TensorKind::kU8 && x->kind != TensorKind::kF32) ||
      static_cast<std::int64_t>(stored) != numel) {
    return MakeError(Errc::kMalformed, "data shard 'x' storage does not match its shape");
  }
  const std::int64_t per_sample = numel / rows;
  if (spec.arch == ModelSpec::Arch::kMlp) {
    if (per_sample != spec.input) {
      return MakeError(Errc::kMalformed, "data shard 'x' has " + std::to_string(per_sample) +
                                             " features per sample, model expects " +
                                             std::to_string(spec.input));
    }
  } else if (x->shape != std::vector<std::int64_t>{rows, 1, kImageSide, kImageSide}) {
    return MakeError(Errc::kMalformed, "data shard 'x' must be [N,1,28,28] for cnn28");
  }
  if (x->kind == TensorKind::kF32) {
    for (float v : x->f32) {
      if (!std::isfinite(v)) return MakeError(Errc::kMalformed, "data shard 'x' is not finite");
    }
  }
  for (std::uint8_t label : y->u8) {
    if (label >= spec.classes) {
      return MakeError(Errc::kMalformed, "data shard label " + std::to_string(label) +
                                             " is not below " + std::to_string(spec.classes));
    }
  }
  return {};
}

}  // namespace ubcp::common
