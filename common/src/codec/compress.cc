// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/compress.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <memory>
#include <string>

namespace ubcp::common {
namespace {

// First output chunk of a streaming decompression; grows geometrically up to the cap.
constexpr std::size_t kStreamChunk = std::size_t{64} << 10;
// Window log bounds for frames without a content size. The window buffer is allocated from the
// frame header before any output exists, so it is tied to the cap; 23 (8 MiB) still admits the
// windows zstd's own levels pick, 27 is zstd's default maximum.
constexpr int kMinWindowLog = 23;
constexpr int kMaxWindowLog = 27;

struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

Error ZstdError(std::size_t code) {
  if (ZSTD_getErrorCode(code) == ZSTD_error_frameParameter_windowTooLarge) {
    return MakeError(Errc::kTooLarge, "zstd: frame window exceeds the size limit");
  }
  return MakeError(Errc::kMalformed, std::string("zstd: ") + ZSTD_getErrorName(code));
}

Result<Bytes> DecompressStreaming(ByteSpan frame, std::size_t max_output) {
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return MakeError(Errc::kInternal, "zstd: cannot allocate a context");
  const int window_log =
      std::clamp(static_cast<int>(std::bit_width(max_output)), kMinWindowLog, kMaxWindowLog);
  const std::size_t set = ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, window_log);
  if (ZSTD_isError(set)) return MakeError(Errc::kInternal, "zstd: cannot set the window limit");

  // One byte past the cap is enough to tell "exactly at the cap" from "over it".
  const std::size_t hard_limit =
      max_output == std::numeric_limits<std::size_t>::max() ? max_output : max_output + 1;
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  Bytes out;
  std::size_t produced = 0;
  for (;;) {
    if (produced == out.size()) {
      if (out.size() >= hard_limit) break;
      const std::size_t grown = out.size() > hard_limit / 2 ? hard_limit : out.size() * 2;
      out.resize(std::min(hard_limit, std::max(kStreamChunk, grown)));
    }
    ZSTD_outBuffer ob{out.data(), out.size(), produced};
    const std::size_t ret = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(ret)) return ZstdError(ret);
    produced = ob.pos;
    if (produced > max_output) break;
    if (ret == 0) {
      if (in.pos != in.size) return MakeError(Errc::kMalformed, "zstd: trailing data after frame");
      out.resize(produced);
      return out;
    }
    // All input consumed, room left in the output, yet the frame is not complete: truncated.
    if (in.pos == in.size && ob.pos < ob.size) {
      return MakeError(Errc::kMalformed, "zstd: truncated frame");
    }
  }
  return MakeError(Errc::kTooLarge,
                   "zstd: output exceeds the limit of " + std::to_string(max_output) + " bytes");
}

}  // namespace

Bytes ZstdCompress(ByteSpan data, int level) {
  level = std::clamp(level, ZSTD_minCLevel(), ZSTD_maxCLevel());
  Bytes out(ZSTD_compressBound(data.size()));
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  // ZSTD_compress2 records the content size in the frame header, which is what lets the
  // receiver check the cap before allocating.
  std::size_t n = 0;
  if (cctx && !ZSTD_isError(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level))) {
    n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  }
  // With a ZSTD_compressBound buffer this fails only when zstd cannot allocate. There is no
  // error channel: an empty result is never a valid frame, so the receiver refuses it.
  if (!cctx || ZSTD_isError(n)) return {};
  out.resize(n);
  return out;
}

Result<Bytes> ZstdDecompress(ByteSpan frame, std::size_t max_output) {
  // Exactly one regular frame: skippable frames and legacy formats are refused.
  if (frame.size() < 4 || frame[0] != 0x28 || frame[1] != 0xb5 || frame[2] != 0x2f ||
      frame[3] != 0xfd) {
    return MakeError(Errc::kMalformed, "zstd: not a zstd frame");
  }
  const unsigned long long content_size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content_size == ZSTD_CONTENTSIZE_ERROR) {
    return MakeError(Errc::kMalformed, "zstd: bad frame header");
  }
  // Checked before anything is allocated: a small frame may declare an enormous size.
  if (content_size != ZSTD_CONTENTSIZE_UNKNOWN && content_size > max_output) {
    return MakeError(Errc::kTooLarge, "zstd: frame declares " + std::to_string(content_size) +
                                          " bytes, limit is " + std::to_string(max_output));
  }
  const std::size_t frame_size = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_size)) return ZstdError(frame_size);
  if (frame_size != frame.size()) {
    return MakeError(Errc::kMalformed, "zstd: trailing data after frame");
  }
  if (content_size == ZSTD_CONTENTSIZE_UNKNOWN) return DecompressStreaming(frame, max_output);

  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return MakeError(Errc::kInternal, "zstd: cannot allocate a context");
  Bytes out(static_cast<std::size_t>(content_size));
  const std::size_t n =
      ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return ZstdError(n);
  if (n != out.size()) return MakeError(Errc::kMalformed, "zstd: content size mismatch");
  return out;
}

}  // namespace ubcp::common
