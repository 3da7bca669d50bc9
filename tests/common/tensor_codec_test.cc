// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/tensor_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>

#include "ubcp/common/compress.h"

namespace ubcp::common {
namespace {

NamedTensor F32(std::string name, std::vector<std::int64_t> shape, std::mt19937& rng,
                float stddev = 1.0f) {
  NamedTensor t;
  t.name = std::move(name);
  t.kind = TensorKind::kF32;
  t.shape = std::move(shape);
  std::normal_distribution<float> dist(0.0f, stddev);
  t.f32.resize(static_cast<std::size_t>(t.numel()));
  for (float& v : t.f32) v = dist(rng);
  return t;
}

NamedTensor U8(std::string name, std::vector<std::int64_t> shape) {
  NamedTensor t;
  t.name = std::move(name);
  t.kind = TensorKind::kU8;
  t.shape = std::move(shape);
  t.u8.resize(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < t.u8.size(); ++i) t.u8[i] = static_cast<std::uint8_t>(i * 31 + 7);
  return t;
}

void PutU32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void PutF32(Bytes& b, std::size_t at, float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  PutU32(b, at, bits);
}

// Byte offsets in the encoding of one tensor named "w" with shape {2, 3}.
constexpr std::size_t kCountAt = 4;
constexpr std::size_t kNameLenAt = 8;
constexpr std::size_t kNameAt = 10;
constexpr std::size_t kDtypeAt = 11;
constexpr std::size_t kNdimAt = 12;
constexpr std::size_t kDim0At = 13;
constexpr std::size_t kPayloadAt = 21;  // int8: u32 block here, then scales

TensorList SmallList() {
  std::mt19937 rng(1);
  return {F32("w", {2, 3}, rng)};
}

Errc DecodeError(const Bytes& b, const TensorLimits& limits = {}) {
  auto r = DecodeTensors(b, limits);
  EXPECT_FALSE(r) << "decoded";
  return r ? Errc::kInternal : r.error().code;
}

TEST(TensorCodecTest, Fp32RoundTripIsExact) {
  std::mt19937 rng(2);
  TensorList in = {F32("conv.weight", {4, 3, 3, 3}, rng), F32("conv.bias", {4}, rng),
                   F32("scalar", {}, rng), U8("labels", {17})};
  in[1].f32 = {-0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
               -std::numeric_limits<float>::max()};
  const Bytes enc = EncodeTensors(in, FloatEncoding::kFp32);
  ASSERT_FALSE(enc.empty());
  auto out = DecodeTensors(enc);
  ASSERT_TRUE(out) << out.error().ToString();
  ASSERT_EQ(out->size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const NamedTensor& a = in[i];
    const NamedTensor& b = (*out)[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.shape, b.shape);
    ASSERT_EQ(a.f32.size(), b.f32.size());
    EXPECT_EQ(std::memcmp(a.f32.data(), b.f32.data(), a.f32.size() * 4), 0) << a.name;
    EXPECT_EQ(a.u8, b.u8);
  }
  EXPECT_TRUE(CheckSameLayout(in, *out));
  EXPECT_EQ(out->at(2).numel(), 1);
}

TEST(TensorCodecTest, EmptyListRoundTrips) {
  const Bytes enc = EncodeTensors({}, FloatEncoding::kInt8Block);
  EXPECT_EQ(enc.size(), 8u);
  auto out = DecodeTensors(enc);
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->empty());
}

TEST(TensorCodecTest, U8RoundTripsUnderBothEncodings) {
  const TensorList in = {U8("images", {3, 28, 28}), U8("labels", {3})};
  for (FloatEncoding e : {FloatEncoding::kFp32, FloatEncoding::kInt8Block}) {
    auto out = DecodeTensors(EncodeTensors(in, e));
    ASSERT_TRUE(out);
    ASSERT_EQ(out->size(), 2u);
    EXPECT_EQ((*out)[0].kind, TensorKind::kU8);
    EXPECT_EQ((*out)[0].u8, in[0].u8);
    EXPECT_EQ((*out)[1].u8, in[1].u8);
    EXPECT_TRUE((*out)[0].f32.empty());
  }
}

TEST(TensorCodecTest, Int8ErrorIsWithinHalfAScale) {
  std::mt19937 rng(3);
  NamedTensor t = F32("fc.weight", {37, 29}, rng, 0.1f);  // 1073 elements: a partial last block
  t.f32[5] = 3.0f;                                        // an outlier dominating one block
  for (std::uint32_t block : {1u, 7u, 64u, 256u, 100000u}) {
    const Bytes enc = EncodeTensors({t}, FloatEncoding::kInt8Block, block);
    ASSERT_FALSE(enc.empty());
    EXPECT_EQ(enc[kDtypeAt + 8], 2);  // name "fc.weight" is 8 bytes longer than "w"
    auto out = DecodeTensors(enc);
    ASSERT_TRUE(out) << out.error().ToString();
    const NamedTensor& d = (*out)[0];
    EXPECT_EQ(d.kind, TensorKind::kF32);
    EXPECT_EQ(d.shape, t.shape);
    ASSERT_EQ(d.f32.size(), t.f32.size());
    for (std::size_t begin = 0; begin < t.f32.size(); begin += block) {
      const std::size_t end = std::min<std::size_t>(t.f32.size(), begin + block);
      float max_abs = 0;
      for (std::size_t i = begin; i < end; ++i) max_abs = std::max(max_abs, std::fabs(t.f32[i]));
      const float scale = max_abs / 127.0f;
      for (std::size_t i = begin; i < end; ++i) {
        // scale/2 from rounding to the grid, plus float rounding of q * scale.
        const float tol = scale / 2 + std::fabs(t.f32[i]) * 1e-6f;
        ASSERT_LE(std::fabs(d.f32[i] - t.f32[i]), tol) << "block " << block << " element " << i;
      }
    }
  }
}

TEST(TensorCodecTest, Int8AllZeroBlockHasZeroScale) {
  NamedTensor t;
  t.name = "w";
  t.shape = {2, 3};
  t.f32 = {0, 0, 0, 1.0f, -0.5f, 0.25f};
  const Bytes enc = EncodeTensors({t}, FloatEncoding::kInt8Block, 3);
  float scale0 = -1, scale1 = -1;
  std::memcpy(&scale0, enc.data() + kPayloadAt + 4, 4);
  std::memcpy(&scale1, enc.data() + kPayloadAt + 8, 4);
  EXPECT_EQ(scale0, 0.0f);
  EXPECT_FLOAT_EQ(scale1, 1.0f / 127.0f);
  auto out = DecodeTensors(enc);
  ASSERT_TRUE(out);
  EXPECT_EQ((*out)[0].f32[0], 0.0f);
  EXPECT_EQ((*out)[0].f32[2], 0.0f);
  EXPECT_FLOAT_EQ((*out)[0].f32[3], 1.0f);
  EXPECT_NEAR((*out)[0].f32[4], -0.5f, 0.5f / 127.0f);
}

TEST(TensorCodecTest, Int8BlobIsAtLeastThreeTimesSmaller) {
  std::mt19937 rng(4);
  const TensorList model = {
      F32("conv1.weight", {32, 1, 5, 5}, rng, 0.2f),   F32("conv1.bias", {32}, rng, 0.01f),
      F32("conv2.weight", {64, 32, 3, 3}, rng, 0.06f), F32("conv2.bias", {64}, rng, 0.01f),
      F32("fc1.weight", {128, 624}, rng, 0.04f),       F32("fc1.bias", {128}, rng, 0.01f),
      F32("fc2.weight", {10, 128}, rng, 0.09f),        F32("fc2.bias", {10}, rng, 0.01f),
  };
  std::int64_t params = 0;
  for (const NamedTensor& t : model) params += t.numel();
  ASSERT_GE(params, 100000);

  const EncodedBlob fp32 = EncodeTensorBlob(model, FloatEncoding::kFp32);
  const EncodedBlob int8 = EncodeTensorBlob(model, FloatEncoding::kInt8Block);
  EXPECT_EQ(fp32.raw_size, fp32.fp32_size);
  EXPECT_EQ(int8.fp32_size, fp32.fp32_size);
  EXPECT_EQ(fp32.fp32_size, EncodeTensors(model, FloatEncoding::kFp32).size());
  EXPECT_EQ(int8.raw_size, EncodeTensors(model, FloatEncoding::kInt8Block).size());
  std::cout << "[ info     ] " << params << " parameters: fp32 blob " << fp32.bytes.size()
            << " bytes, int8 blob " << int8.bytes.size() << " bytes, saved "
            << (fp32.bytes.size() - int8.bytes.size()) << " bytes ("
            << static_cast<double>(fp32.bytes.size()) / static_cast<double>(int8.bytes.size())
            << "x smaller)\n";
  EXPECT_LE(int8.bytes.size() * 3, fp32.bytes.size());
  EXPECT_LE(int8.bytes.size() * 3, fp32.fp32_size);

  auto back = DecodeTensorBlob(int8.bytes, int8.raw_size);
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_TRUE(CheckSameLayout(model, *back));
  auto exact = DecodeTensorBlob(fp32.bytes, fp32.raw_size);
  ASSERT_TRUE(exact);
  EXPECT_EQ((*exact)[4].f32, model[4].f32);
}

TEST(TensorCodecTest, BlobRespectsRawCap) {
  std::mt19937 rng(5);
  const EncodedBlob blob = EncodeTensorBlob({F32("w", {1000}, rng)}, FloatEncoding::kFp32);
  auto r = DecodeTensorBlob(blob.bytes, blob.raw_size - 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
  Bytes garbage = blob.bytes;
  garbage.push_back(1);
  auto g = DecodeTensorBlob(garbage, blob.raw_size);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, Errc::kMalformed);
  // A valid frame around something that is not a tensor encoding.
  auto n = DecodeTensorBlob(ZstdCompress(AsBytes("not tensors")), 1000);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, Errc::kMalformed);
}

TEST(TensorCodecTest, EveryTruncationFailsCleanly) {
  std::mt19937 rng(6);
  const TensorList in = {F32("a", {3, 5}, rng), U8("b", {4}), F32("c", {}, rng)};
  for (FloatEncoding e : {FloatEncoding::kFp32, FloatEncoding::kInt8Block}) {
    const Bytes enc = EncodeTensors(in, e, 4);
    ASSERT_TRUE(DecodeTensors(enc));
    for (std::size_t len = 0; len < enc.size(); ++len) {
      auto r = DecodeTensors(ByteSpan(enc.data(), len));
      ASSERT_FALSE(r) << FloatEncodingName(e) << " prefix " << len;
      EXPECT_EQ(r.error().code, Errc::kMalformed) << FloatEncodingName(e) << " prefix " << len;
    }
    Bytes longer = enc;
    longer.push_back(0);
    EXPECT_EQ(DecodeError(longer), Errc::kMalformed);
  }
}

TEST(TensorCodecTest, BadMagicIsMalformed) {
  Bytes enc = EncodeTensors(SmallList(), FloatEncoding::kFp32);
  enc[3] = '2';
  EXPECT_EQ(DecodeError(enc), Errc::kMalformed);
}

TEST(TensorCodecTest, FlippedDtypeIsMalformed) {
  const Bytes enc = EncodeTensors(SmallList(), FloatEncoding::kFp32);
  ASSERT_EQ(enc[kDtypeAt], 1);
  // 2 and 3 are known dtypes, but then the payload length no longer matches.
  for (std::uint8_t dtype : {0, 2, 3, 4, 255}) {
    Bytes bad = enc;
    bad[kDtypeAt] = dtype;
    EXPECT_EQ(DecodeError(bad), Errc::kMalformed) << int{dtype};
  }
}

TEST(TensorCodecTest, FlippedDimsAreMalformed) {
  const Bytes enc = EncodeTensors(SmallList(), FloatEncoding::kFp32);
  ASSERT_EQ(enc[kNdimAt], 2);
  for (std::uint32_t dim : {0u, 1u, 3u, 1000u, 0x80000000u, 0xffffffffu}) {
    Bytes bad = enc;
    PutU32(bad, kDim0At, dim);
    EXPECT_NE(DecodeTensors(bad).has_value(), true) << dim;
  }
  Bytes zero = enc;
  PutU32(zero, kDim0At, 0);
  EXPECT_EQ(DecodeError(zero), Errc::kMalformed);
  Bytes bigger = enc;
  PutU32(bigger, kDim0At, 3);
  EXPECT_EQ(DecodeError(bigger), Errc::kMalformed);
  for (std::uint8_t ndim : {0, 1}) {
    Bytes bad = enc;
    bad[kNdimAt] = ndim;
    EXPECT_EQ(DecodeError(bad), Errc::kMalformed) << int{ndim};
  }
  // A third dim is read from the payload: a float bit pattern, far past the element limit.
  Bytes rank3 = enc;
  rank3[kNdimAt] = 3;
  PutF32(rank3, kPayloadAt, 0.5f);
  EXPECT_EQ(DecodeError(rank3), Errc::kTooLarge);
}

TEST(TensorCodecTest, TooManyTensors) {
  std::mt19937 rng(7);
  TensorList in;
  for (int i = 0; i < 5; ++i) in.push_back(F32("t" + std::to_string(i), {2}, rng));
  const Bytes enc = EncodeTensors(in, FloatEncoding::kFp32);
  TensorLimits limits;
  limits.max_tensors = 4;
  EXPECT_EQ(DecodeError(enc, limits), Errc::kTooLarge);
  limits.max_tensors = 5;
  EXPECT_TRUE(DecodeTensors(enc, limits));
  // A huge declared count is refused before anything is reserved for it.
  Bytes huge = enc;
  PutU32(huge, kCountAt, 0xffffffffu);
  EXPECT_EQ(DecodeError(huge), Errc::kTooLarge);
}

TEST(TensorCodecTest, TooManyElements) {
  std::mt19937 rng(8);
  const TensorList in = {F32("a", {10, 10}, rng), U8("b", {50})};
  const Bytes enc = EncodeTensors(in, FloatEncoding::kInt8Block);
  TensorLimits limits;
  limits.max_elements = 149;  // the limit is over all tensors together
  EXPECT_EQ(DecodeError(enc, limits), Errc::kTooLarge);
  limits.max_elements = 150;
  EXPECT_TRUE(DecodeTensors(enc, limits));
  limits.max_elements = 99;
  EXPECT_EQ(DecodeError(enc, limits), Errc::kTooLarge);

  // Six maximal dims would overflow any naive product; it is a limit error, not a crash.
  Bytes big = {'U', 'B', 'T', '1', 1, 0, 0, 0, 1, 0, 'x', 1, 6};
  for (int i = 0; i < 6; ++i) big.insert(big.end(), {0xff, 0xff, 0xff, 0xff});
  EXPECT_EQ(DecodeError(big), Errc::kTooLarge);
  // Within the element limit but far larger than the input: truncated, nothing allocated.
  Bytes claims = {'U', 'B', 'T', '1', 1, 0, 0, 0, 1, 0, 'x', 1, 1, 0, 0, 0, 1};
  EXPECT_EQ(DecodeError(claims), Errc::kMalformed);
}

TEST(TensorCodecTest, NameAndRankLimits) {
  std::mt19937 rng(9);
  const Bytes long_name =
      EncodeTensors({F32(std::string(40, 'n'), {2}, rng)}, FloatEncoding::kFp32);
  TensorLimits limits;
  limits.max_name = 39;
  EXPECT_EQ(DecodeError(long_name, limits), Errc::kTooLarge);
  limits.max_name = 40;
  EXPECT_TRUE(DecodeTensors(long_name, limits));

  const Bytes rank7 = EncodeTensors({F32("r", {1, 1, 1, 1, 1, 1, 2}, rng)}, FloatEncoding::kFp32);
  ASSERT_FALSE(rank7.empty());
  EXPECT_EQ(DecodeError(rank7), Errc::kTooLarge);
  limits = {};
  limits.max_ndim = 7;
  EXPECT_TRUE(DecodeTensors(rank7, limits));
}

TEST(TensorCodecTest, BadNamesAreMalformed) {
  Bytes enc = EncodeTensors(SmallList(), FloatEncoding::kFp32);
  for (std::uint8_t c : {0x00, 0x20, 0x0a, 0x7f, 0xc3}) {
    Bytes bad = enc;
    bad[kNameAt] = c;
    EXPECT_EQ(DecodeError(bad), Errc::kMalformed) << int{c};
  }
  // Empty name: drop the name byte and fix the length.
  Bytes empty = enc;
  empty.erase(empty.begin() + kNameAt);
  empty[kNameLenAt] = 0;
  EXPECT_EQ(DecodeError(empty), Errc::kMalformed);
}

TEST(TensorCodecTest, DuplicateNamesAreMalformed) {
  std::mt19937 rng(10);
  Bytes enc = EncodeTensors({F32("p1", {2}, rng), F32("p2", {2}, rng)}, FloatEncoding::kFp32);
  ASSERT_TRUE(DecodeTensors(enc));
  // Second record starts after 8 + (2 + 2 + 1 + 1 + 4 + 8) bytes; its name's last char is at +3.
  const std::size_t second_name_last = 8 + 18 + 3;
  ASSERT_EQ(enc[second_name_last], '2');
  enc[second_name_last] = '1';
  EXPECT_EQ(DecodeError(enc), Errc::kMalformed);

  // The encoder refuses to produce such a list at all.
  EXPECT_TRUE(
      EncodeTensors({F32("p", {2}, rng), F32("p", {2}, rng)}, FloatEncoding::kFp32).empty());
}

TEST(TensorCodecTest, NonFiniteScalesAndValuesAreRejected) {
  const Bytes enc = EncodeTensors(SmallList(), FloatEncoding::kInt8Block);
  ASSERT_EQ(enc[kDtypeAt], 2);
  ASSERT_TRUE(DecodeTensors(enc));
  const std::size_t scale_at = kPayloadAt + 4;
  for (float bad_scale :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f,
        std::numeric_limits<float>::max()}) {
    Bytes bad = enc;
    PutF32(bad, scale_at, bad_scale);
    EXPECT_EQ(DecodeError(bad), Errc::kMalformed) << bad_scale;
  }
  Bytes zero_block = enc;
  PutU32(zero_block, kPayloadAt, 0);
  EXPECT_EQ(DecodeError(zero_block), Errc::kMalformed);
  Bytes minus128 = enc;
  minus128[scale_at + 4] = 0x80;
  EXPECT_EQ(DecodeError(minus128), Errc::kMalformed);

  Bytes fp32 = EncodeTensors(SmallList(), FloatEncoding::kFp32);
  for (float v :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    Bytes bad = fp32;
    PutF32(bad, kPayloadAt + 8, v);
    EXPECT_EQ(DecodeError(bad), Errc::kMalformed) << v;
  }

  // A diverged update (NaN inside) does not survive quantization as plausible numbers.
  TensorList nan_list = SmallList();
  nan_list[0].f32[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(DecodeError(EncodeTensors(nan_list, FloatEncoding::kInt8Block)), Errc::kMalformed);
  EXPECT_EQ(DecodeError(EncodeTensors(nan_list, FloatEncoding::kFp32)), Errc::kMalformed);
}

TEST(TensorCodecTest, InconsistentTensorsEncodeToNothing) {
  std::mt19937 rng(11);
  NamedTensor short_data = F32("w", {2, 3}, rng);
  short_data.f32.pop_back();
  NamedTensor zero_dim = F32("w", {2, 3}, rng);
  zero_dim.shape = {0, 3};
  zero_dim.f32.clear();
  NamedTensor negative = F32("w", {2}, rng);
  negative.shape = {-2};
  NamedTensor wrong_kind = U8("w", {4});
  wrong_kind.kind = TensorKind::kF32;
  NamedTensor both = F32("w", {2}, rng);
  both.u8 = {1, 2};
  NamedTensor bad_name = F32("has space", {2}, rng);
  NamedTensor no_name = F32("", {2}, rng);
  for (const NamedTensor& t :
       {short_data, zero_dim, negative, wrong_kind, both, bad_name, no_name}) {
    EXPECT_TRUE(EncodeTensors({t}, FloatEncoding::kFp32).empty()) << t.name;
    EXPECT_TRUE(EncodeTensors({t}, FloatEncoding::kInt8Block).empty()) << t.name;
  }
  EXPECT_TRUE(EncodeTensors(SmallList(), FloatEncoding::kInt8Block, 0).empty());
  // An empty encoding is refused by the decoder, so the mistake cannot pass silently.
  EXPECT_EQ(DecodeError(Bytes{}), Errc::kMalformed);
  const EncodedBlob blob = EncodeTensorBlob({short_data}, FloatEncoding::kFp32);
  EXPECT_FALSE(DecodeTensorBlob(blob.bytes, 1 << 20));
}

TEST(TensorCodecTest, CheckSameLayoutMismatches) {
  std::mt19937 rng(12);
  const TensorList expected = {F32("a", {2, 3}, rng), U8("b", {4})};
  TensorList same = {F32("a", {2, 3}, rng), U8("b", {4})};
  EXPECT_TRUE(CheckSameLayout(expected, same));

  auto expect_mismatch = [&](const TensorList& other, const char* what) {
    auto st = CheckSameLayout(expected, other);
    ASSERT_FALSE(st) << what;
    EXPECT_EQ(st.error().code, Errc::kMalformed) << what;
  };
  expect_mismatch({expected[0]}, "missing tensor");
  expect_mismatch({expected[0], expected[1], F32("c", {1}, rng)}, "extra tensor");
  expect_mismatch({expected[1], expected[0]}, "swapped order");
  TensorList renamed = same;
  renamed[0].name = "z";
  expect_mismatch(renamed, "renamed");
  TensorList reshaped = same;
  reshaped[0].shape = {3, 2};
  expect_mismatch(reshaped, "transposed shape");
  TensorList flattened = same;
  flattened[0].shape = {6};
  expect_mismatch(flattened, "flattened shape");
  TensorList rekinded = same;
  rekinded[1] = F32("b", {4}, rng);
  expect_mismatch(rekinded, "kind");
  TensorList short_data = same;
  short_data[0].f32.pop_back();
  expect_mismatch(short_data, "data shorter than shape");
  expect_mismatch({}, "empty");
  EXPECT_TRUE(CheckSameLayout({}, {}));
}

TEST(TensorCodecTest, FindTensorAndEncodingNames) {
  std::mt19937 rng(13);
  const TensorList list = {F32("a", {1}, rng), U8("b", {1})};
  ASSERT_NE(FindTensor(list, "b"), nullptr);
  EXPECT_EQ(FindTensor(list, "b")->kind, TensorKind::kU8);
  EXPECT_EQ(FindTensor(list, "c"), nullptr);

  EXPECT_EQ(FloatEncodingName(FloatEncoding::kFp32), "fp32");
  EXPECT_EQ(FloatEncodingName(FloatEncoding::kInt8Block), "int8");
  for (FloatEncoding e : {FloatEncoding::kFp32, FloatEncoding::kInt8Block}) {
    auto parsed = ParseFloatEncoding(FloatEncodingName(e));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_FALSE(ParseFloatEncoding("FP32"));
  EXPECT_FALSE(ParseFloatEncoding("int4"));
  EXPECT_FALSE(ParseFloatEncoding(""));
}

TEST(TensorCodecTest, Numel) {
  NamedTensor t;
  EXPECT_EQ(t.numel(), 1);
  t.shape = {2, 3, 4};
  EXPECT_EQ(t.numel(), 24);
  t.shape = {2, 0};
  EXPECT_EQ(t.numel(), 0);
}

}  // namespace
}  // namespace ubcp::common
