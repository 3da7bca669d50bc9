// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/byte_range.h"

#include <algorithm>
#include <cctype>

namespace ubcp::coordinator {
namespace {

constexpr std::string_view kBytesUnit = "bytes";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// 1*DIGIT. nullopt when `s` is empty or holds anything else; `*overflow` is set (and the value
// is UINT64_MAX) when the number does not fit in 64 bits.
std::optional<std::uint64_t> ParseDigits(std::string_view s, bool* overflow) {
  *overflow = false;
  if (s.empty() || !std::all_of(s.begin(), s.end(), IsDigit)) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : s) {
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) {
      *overflow = true;
      return UINT64_MAX;
    }
    value = value * 10 + digit;
  }
  return value;
}

}  // namespace

std::optional<RangeRequest> ParseRangeHeader(std::string_view value) {
  value = TrimOws(value);
  const auto eq = value.find('=');
  if (eq == std::string_view::npos || !EqualsIgnoreCase(value.substr(0, eq), kBytesUnit)) {
    return std::nullopt;
  }
  const std::string_view spec = value.substr(eq + 1);
  if (spec.find(',') != std::string_view::npos) return std::nullopt;  // several ranges
  const auto dash = spec.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const std::string_view first_text = spec.substr(0, dash);
  const std::string_view last_text = spec.substr(dash + 1);
  bool overflow = false;
  RangeRequest request;
  if (first_text.empty()) {
    // A suffix: more than 2^64 final bytes is simply all of them.
    auto length = ParseDigits(last_text, &overflow);
    if (!length) return std::nullopt;
    request.suffix = true;
    request.first = *length;
    return request;
  }
  // A first position past 2^64 stays UINT64_MAX: beyond any end, hence unsatisfiable.
  auto first = ParseDigits(first_text, &overflow);
  if (!first) return std::nullopt;
  request.first = *first;
  if (!last_text.empty()) {
    auto last = ParseDigits(last_text, &overflow);
    if (!last) return std::nullopt;
    if (*last < *first) return std::nullopt;  // invalid spec: ignored, like a malformed one
    request.last = *last;
  }
  return request;
}

std::optional<ByteRange> ResolveRange(const RangeRequest& request, std::uint64_t total) {
  if (total == 0) return std::nullopt;
  if (request.suffix) {
    if (request.first == 0) return std::nullopt;
    const std::uint64_t length = std::min(request.first, total);
    return ByteRange{total - length, total - 1, total};
  }
  if (request.first >= total) return std::nullopt;
  return ByteRange{request.first, std::min(request.last, total - 1), total};
}

std::string ContentRangeHeader(const ByteRange& range) {
  return std::string(kBytesUnit) + " " + std::to_string(range.first) + "-" +
         std::to_string(range.last) + "/" + std::to_string(range.total);
}

std::string UnsatisfiedContentRange(std::uint64_t total) {
  return std::string(kBytesUnit) + " */" + std::to_string(total);
}

common::Result<ByteRange> ParseContentRange(std::string_view value) {
  auto malformed = [] {
    return common::MakeError(common::Errc::kMalformed,
                             "Content-Range must be 'bytes <first>-<last>/<total>'");
  };
  value = TrimOws(value);
  const auto space = value.find(' ');
  if (space == std::string_view::npos || !EqualsIgnoreCase(value.substr(0, space), kBytesUnit)) {
    return malformed();
  }
  const std::string_view spec = value.substr(space + 1);
  const auto dash = spec.find('-');
  const auto slash = spec.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return malformed();
  }
  bool overflow_first = false, overflow_last = false, overflow_total = false;
  auto first = ParseDigits(spec.substr(0, dash), &overflow_first);
  auto last = ParseDigits(spec.substr(dash + 1, slash - dash - 1), &overflow_last);
  auto total = ParseDigits(spec.substr(slash + 1), &overflow_total);
  if (!first || !last || !total || overflow_first || overflow_last || overflow_total) {
    return malformed();
  }
  if (*first > *last || *last >= *total) {
    return common::MakeError(common::Errc::kMalformed, "Content-Range needs first <= last < total");
  }
  return ByteRange{*first, *last, *total};
}

}  // namespace ubcp::coordinator
