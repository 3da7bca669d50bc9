// SPDX-License-Identifier: Apache-2.0
#pragma once
// Strict JSON reading for the wire codec: one parse entry point and a reader that takes the
// fields of an object one by one, with type and range checks, and refuses whatever is left over.
// Internal to ubcp::common (Boost.JSON never appears in a public header).

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::common::json {

// Deepest nesting accepted anywhere; every wire message is far shallower. Bounded so that hostile
// input cannot recurse deeply in the parser or in anything that walks the value.
inline constexpr std::size_t kMaxDepth = 16;

// Parses `text` as a single JSON object. Refuses: more than `max_bytes` bytes (kTooLarge, checked
// before parsing), anything that is not strict RFC 8259 JSON (comments, trailing commas, invalid
// UTF-8, trailing garbage), nesting deeper than kMaxDepth, duplicate keys in any object, and a top
// level that is not an object (all kMalformed). `what` names the message in errors.
// Doubles are read with correct rounding, so a value written by boost::json::serialize comes
// back bit-identical (Boost 1.81's own parser is off by one ulp for about a tenth of doubles).
// Never throws.
Result<boost::json::object> ParseObject(std::string_view text, std::size_t max_bytes,
                                        std::string_view what);

// Closed-or-open interval for double fields; NaN and infinities are always refused.
struct DoubleRange {
  double min = 0;
  double max = 0;
  bool min_open = false;
  bool max_open = false;
};

// Reads the fields of one object. Every getter requires its key to be present and marks it as
// consumed; Finish() then refuses any key that no getter asked for. All errors are kMalformed and
// name the field by its path (e.g. "manifest.params.lr"). The object must outlive the reader.
class ObjectReader {
 public:
  ObjectReader(const boost::json::object& object, std::string path);

  const std::string& path() const { return path_; }

  // Integers must be JSON integers (no fraction or exponent) within [min, max].
  Result<std::int64_t> Int64(std::string_view key, std::int64_t min, std::int64_t max);
  Result<int> Int(std::string_view key, int min, int max);
  Result<std::uint64_t> Uint64(std::string_view key);
  // Accepts any JSON number (an integer is converted) that is finite and inside `range`.
  Result<double> Double(std::string_view key, const DoubleRange& range);
  Result<bool> Bool(std::string_view key);
  // A string of at most `max_len` bytes.
  Result<std::string> String(std::string_view key, std::size_t max_len);
  // A string equal to one of `allowed`.
  Result<std::string> Enum(std::string_view key, std::initializer_list<std::string_view> allowed);
  // An array of at most `max_items` elements. The pointer stays valid as long as the object.
  Result<const boost::json::array*> Array(std::string_view key, std::size_t max_items);
  // A nested object, read with its own reader (whose Finish() the caller must call).
  Result<ObjectReader> Object(std::string_view key);
  // A nested object or JSON null (std::nullopt).
  Result<std::optional<ObjectReader>> OptionalObject(std::string_view key);
  // Like OptionalObject, but an absent key is also std::nullopt: for fields added to a message
  // after it was first published, which older senders leave out.
  Result<std::optional<ObjectReader>> OmittableObject(std::string_view key);

  // kMalformed naming the first key that was not consumed.
  Status Finish() const;

 private:
  Result<const boost::json::value*> Take(std::string_view key);
  std::string FieldPath(std::string_view key) const;

  const boost::json::object* object_;
  std::string path_;
  std::vector<std::string> consumed_;
};

// Element checks for arrays; `path` names the element, e.g. "job.history[3]".
Result<std::string> StringValue(const boost::json::value& v, const std::string& path,
                                std::size_t max_len);
Result<ObjectReader> ObjectValue(const boost::json::value& v, std::string path);

// Lower-case hex of exactly `len` characters.
bool IsLowerHex(std::string_view s, std::size_t len);

// One message: size check and strict parse (ParseObject), `read` takes its fields, then
// Finish() refuses leftovers. Catches anything a library might throw, so that no exception
// leaves a Parse* function: out of memory is kTooLarge, anything else kInternal.
template <class Read>
auto ParseMessage(std::string_view text, std::size_t limit, const char* what, Read read)
    -> decltype(read(std::declval<ObjectReader&>())) {
  try {
    UBCP_ASSIGN_OR_RETURN(boost::json::object object, ParseObject(text, limit, what));
    ObjectReader r(object, what);
    UBCP_ASSIGN_OR_RETURN(auto message, read(r));
    UBCP_RETURN_IF_ERROR(r.Finish());
    return message;
  } catch (const std::bad_alloc&) {
    return MakeError(Errc::kTooLarge, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return MakeError(Errc::kInternal, std::string(what) + ": " + e.what());
  }
}

}  // namespace ubcp::common::json
