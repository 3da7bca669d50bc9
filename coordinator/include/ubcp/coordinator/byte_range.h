// SPDX-License-Identifier: Apache-2.0
#pragma once
// Byte ranges of HTTP (RFC 9110 §14): the `Range` request header of a ranged download and the
// `Content-Range` header of a resumable upload chunk. Pure parsing and arithmetic, no I/O; both
// parsers take untrusted header values and never read past them.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ubcp/common/result.h"

namespace ubcp::coordinator {

// One range of a `Range: bytes=...` header, before the representation's length is known.
struct RangeRequest {
  // `bytes=first-last` or `bytes=first-` (last = kOpenEnd); with `suffix`, `bytes=-first`: the
  // final `first` bytes.
  static constexpr std::uint64_t kOpenEnd = UINT64_MAX;
  bool suffix = false;
  std::uint64_t first = 0;
  std::uint64_t last = kOpenEnd;
};

// An inclusive, satisfiable range of a representation of `total` bytes: first <= last < total.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t total = 0;
  std::uint64_t length() const { return last - first + 1; }
  bool operator==(const ByteRange&) const = default;
};

// The single range of a Range header value, or nullopt when the header must be ignored and the
// whole representation sent (RFC 9110 §14.2): a unit other than `bytes`, a malformed or invalid
// spec (last < first), or several ranges (multipart answers are not supported). A position too
// large for 64 bits is kept as "beyond any end": it is unsatisfiable, not malformed.
std::optional<RangeRequest> ParseRangeHeader(std::string_view value);

// The bytes `request` selects of a representation of `total` bytes, or nullopt when it is
// unsatisfiable (the answer is then 416 with UnsatisfiedContentRange): a first position at or
// past the end, a zero-length suffix, or any range of an empty representation. An end past the
// last byte is clipped to it; a suffix longer than the representation selects all of it.
std::optional<ByteRange> ResolveRange(const RangeRequest& request, std::uint64_t total);

// "bytes <first>-<last>/<total>" for a 206 answer.
std::string ContentRangeHeader(const ByteRange& range);
// "bytes */<total>" for a 416 answer.
std::string UnsatisfiedContentRange(std::uint64_t total);

// The `Content-Range: bytes <first>-<last>/<total>` of an upload chunk. kMalformed unless it has
// exactly that form with decimal numbers and first <= last < total (no `*`, no unknown total).
common::Result<ByteRange> ParseContentRange(std::string_view value);

}  // namespace ubcp::coordinator
