// SPDX-License-Identifier: Apache-2.0
#pragma once
// Expected failures as values: every fallible operation returns Result<T> (or Status) carrying
// an Error with a category code and a human-readable message. Exceptions are reserved for bugs.

#include <boost/system/result.hpp>
#include <string>
#include <string_view>

namespace ubcp::common {

enum class Errc {
  kInvalidArgument,     // caller passed something unusable
  kMalformed,           // input could not be parsed / fails its schema
  kTooLarge,            // a size limit was exceeded
  kUnsupportedVersion,  // protocol or format version not understood
  kBadSignature,        // signature verification failed
  kHashMismatch,        // content does not match its declared hash
  kNotFound,
  kConflict,             // state does not allow the operation (e.g. result for a re-issued unit)
  kUnauthorized,         // missing or unknown credentials
  kForbidden,            // known credentials, operation not allowed
  kIo,                   // file system failure
  kNetwork,              // transport failure (connect, TLS, timeout)
  kUnavailable,          // temporarily cannot serve, retry later
  kInsufficientCredits,  // the account's credits do not cover the price
  kInternal,             // an invariant broke; a bug
};

std::string_view ErrcName(Errc code);

struct Error {
  Errc code = Errc::kInternal;
  std::string message;

  std::string ToString() const;  // "<code name>: <message>"
};

inline Error MakeError(Errc code, std::string message) { return Error{code, std::move(message)}; }

// Called by boost::system::result<T, Error>::value() when it holds an error: that is a bug in
// the caller, so it throws std::runtime_error with the error text.
[[noreturn]] void throw_exception_from_error(Error const& e, boost::source_location const& loc);

template <class T>
using Result = boost::system::result<T, Error>;
using Status = Result<void>;

inline Status Ok() { return {}; }

}  // namespace ubcp::common

// Propagates an error from an expression yielding Result<T>/Status; evaluates to nothing.
#define UBCP_RETURN_IF_ERROR(expr)                             \
  do {                                                         \
    auto&& ubcp_status_ = (expr);                              \
    if (!ubcp_status_) return std::move(ubcp_status_).error(); \
  } while (0)

// Assigns the value of a Result<T> expression to `lhs`, or returns its error.
#define UBCP_ASSIGN_OR_RETURN(lhs, expr) \
  UBCP_ASSIGN_OR_RETURN_IMPL_(UBCP_CONCAT_(ubcp_r_, __LINE__), lhs, expr)
#define UBCP_CONCAT_INNER_(a, b) a##b
#define UBCP_CONCAT_(a, b) UBCP_CONCAT_INNER_(a, b)
#define UBCP_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp) return std::move(tmp).error();          \
  lhs = std::move(*tmp)
