// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/bytes.h"

namespace ubcp::common {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// -1 for anything but [0-9a-f]: upper case is refused so that every byte string has exactly one
// accepted spelling (ids and keys are compared as text elsewhere).
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::string HexEncode(ByteSpan bytes) {
  std::string out;
  out.resize(bytes.size() * 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHexDigits[bytes[i] >> 4];
    out[2 * i + 1] = kHexDigits[bytes[i] & 0x0f];
  }
  return out;
}

Result<Bytes> HexDecode(std::string_view hex, std::size_t expected_len) {
  if (hex.size() % 2 != 0) return MakeError(Errc::kMalformed, "hex: odd length");
  if (expected_len != 0 && hex.size() / 2 != expected_len) {
    return MakeError(Errc::kMalformed, "hex: expected " + std::to_string(expected_len) +
                                           " bytes, got " + std::to_string(hex.size() / 2));
  }
  Bytes out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    // The offending character is not echoed: the input may be secret key material.
    if (hi < 0 || lo < 0) {
      return MakeError(Errc::kMalformed, "hex: invalid character at offset " +
                                             std::to_string(hi < 0 ? 2 * i : 2 * i + 1));
    }
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

}  // namespace ubcp::common
