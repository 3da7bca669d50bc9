// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::common {

using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;

inline ByteSpan AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsString(ByteSpan b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Lower-case hex.
std::string HexEncode(ByteSpan bytes);
// Strict: even length, [0-9a-f] only (lower case), and exactly `expected_len` bytes when it is
// non-zero. Errors are kMalformed.
Result<Bytes> HexDecode(std::string_view hex, std::size_t expected_len = 0);

}  // namespace ubcp::common
