// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/result.h"

#include <stdexcept>

namespace ubcp::common {

std::string_view ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid_argument";
    case Errc::kMalformed:
      return "malformed";
    case Errc::kTooLarge:
      return "too_large";
    case Errc::kUnsupportedVersion:
      return "unsupported_version";
    case Errc::kBadSignature:
      return "bad_signature";
    case Errc::kHashMismatch:
      return "hash_mismatch";
    case Errc::kNotFound:
      return "not_found";
    case Errc::kConflict:
      return "conflict";
    case Errc::kUnauthorized:
      return "unauthorized";
    case Errc::kForbidden:
      return "forbidden";
    case Errc::kIo:
      return "io";
    case Errc::kNetwork:
      return "network";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kInsufficientCredits:
      return "insufficient_credits";
    case Errc::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Error::ToString() const { return std::string(ErrcName(code)) + ": " + message; }

void throw_exception_from_error(Error const& e, boost::source_location const&) {
  throw std::runtime_error(e.ToString());
}

}  // namespace ubcp::common
