// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/compress.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <random>

namespace ubcp::common {
namespace {

Bytes Pattern(std::size_t n) {
  Bytes out(n);
  std::mt19937 rng(42);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>((i % 97) ^ (rng() & 3));
  return out;
}

// A frame without a content size in its header, as a streaming compressor writes it, so the
// cap has to be enforced while decompressing.
Bytes CompressWithoutSize(ByteSpan data) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  Bytes out(ZSTD_compressBound(data.size()) + 64);
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  // Streaming with ZSTD_e_continue first so the size is not known when the header is written.
  ZSTD_compressStream2(cctx, &ob, &in, ZSTD_e_continue);
  while (ZSTD_compressStream2(cctx, &ob, &in, ZSTD_e_end) != 0) {
  }
  ZSTD_freeCCtx(cctx);
  out.resize(ob.pos);
  return out;
}

TEST(CompressTest, RoundTrip) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{300000}}) {
    const Bytes data = Pattern(n);
    const Bytes frame = ZstdCompress(data);
    ASSERT_FALSE(frame.empty());
    auto back = ZstdDecompress(frame, n);
    ASSERT_TRUE(back) << n << ": " << back.error().ToString();
    EXPECT_EQ(*back, data);
  }
}

TEST(CompressTest, LevelsRoundTripAndAreClamped) {
  const Bytes data = Pattern(50000);
  for (int level : {-1000, 1, 19, 1000}) {
    auto back = ZstdDecompress(ZstdCompress(data, level), data.size());
    ASSERT_TRUE(back) << level;
    EXPECT_EQ(*back, data);
  }
}

TEST(CompressTest, ExactCapIsAllowedOneByteLessIsNot) {
  const Bytes data = Pattern(4096);
  const Bytes frame = ZstdCompress(data);
  EXPECT_TRUE(ZstdDecompress(frame, 4096));
  auto r = ZstdDecompress(frame, 4095);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

TEST(CompressTest, BombIsRefusedFromHeader) {
  const Bytes zeros(10 << 20, 0);
  const Bytes frame = ZstdCompress(zeros);
  ASSERT_LT(frame.size(), 2000u);
  auto r = ZstdDecompress(frame, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

TEST(CompressTest, BombWithoutSizeIsRefusedWhileStreaming) {
  const Bytes zeros(10 << 20, 0);
  const Bytes frame = CompressWithoutSize(zeros);
  ASSERT_FALSE(frame.empty());
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  auto r = ZstdDecompress(frame, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

TEST(CompressTest, StreamingFrameWithinCapRoundTrips) {
  for (std::size_t n : {std::size_t{0}, std::size_t{10}, std::size_t{200000}}) {
    const Bytes data = Pattern(n);
    const Bytes frame = CompressWithoutSize(data);
    ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
    auto exact = ZstdDecompress(frame, n);
    ASSERT_TRUE(exact) << n << ": " << exact.error().ToString();
    EXPECT_EQ(*exact, data);
    auto roomy = ZstdDecompress(frame, n + 12345);
    ASSERT_TRUE(roomy);
    EXPECT_EQ(*roomy, data);
    if (n > 0) {
      auto tight = ZstdDecompress(frame, n - 1);
      ASSERT_FALSE(tight);
      EXPECT_EQ(tight.error().code, Errc::kTooLarge);
    }
  }
}

TEST(CompressTest, GarbageIsMalformed) {
  const Bytes inputs[] = {
      {},
      {0x28, 0xb5, 0x2f},
      {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'},
      {0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
      Pattern(1000),
  };
  for (const Bytes& in : inputs) {
    auto r = ZstdDecompress(in, 1 << 20);
    ASSERT_FALSE(r) << in.size();
    EXPECT_EQ(r.error().code, Errc::kMalformed) << in.size();
  }
}

TEST(CompressTest, EveryTruncationIsMalformed) {
  const Bytes data = Pattern(20000);
  for (const Bytes& frame : {ZstdCompress(data), CompressWithoutSize(data)}) {
    for (std::size_t len = 0; len < frame.size(); ++len) {
      auto r = ZstdDecompress(ByteSpan(frame.data(), len), data.size());
      ASSERT_FALSE(r) << "prefix " << len;
      EXPECT_EQ(r.error().code, Errc::kMalformed) << "prefix " << len;
    }
  }
}

TEST(CompressTest, TrailingDataIsMalformed) {
  const Bytes data = Pattern(5000);
  for (Bytes frame : {ZstdCompress(data), CompressWithoutSize(data)}) {
    Bytes junk = frame;
    junk.push_back(0);
    auto r = ZstdDecompress(junk, 1 << 20);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::kMalformed);

    // Two valid frames back to back are not "exactly one frame" either.
    Bytes twice = frame;
    twice.insert(twice.end(), frame.begin(), frame.end());
    auto r2 = ZstdDecompress(twice, 1 << 20);
    ASSERT_FALSE(r2);
    EXPECT_EQ(r2.error().code, Errc::kMalformed);
  }
}

TEST(CompressTest, SkippableFrameIsMalformed) {
  Bytes skippable = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
  auto r = ZstdDecompress(skippable, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kMalformed);
}

TEST(CompressTest, CorruptedFrameIsRefused) {
  const Bytes data = Pattern(20000);
  const Bytes frame = ZstdCompress(data);
  int refused = 0;
  for (std::size_t i = 4; i < frame.size(); i += 7) {
    Bytes bad = frame;
    bad[i] ^= 0x5a;
    auto r = ZstdDecompress(bad, data.size());
    // Without a checksum a flip in literals may still decode to other bytes; it must never
    // decode to the original data, and every failure is a clean error value.
    if (r) {
      EXPECT_NE(*r, data) << i;
    } else {
      ++refused;
      EXPECT_TRUE(r.error().code == Errc::kMalformed || r.error().code == Errc::kTooLarge);
    }
  }
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace ubcp::common
