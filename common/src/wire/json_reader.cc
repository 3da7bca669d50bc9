// SPDX-License-Identifier: Apache-2.0
#include "wire/json_reader.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/value_stack.hpp>
#include <charconv>
#include <cmath>
#include <exception>
#include <limits>
#include <optional>
#include <unordered_set>
#include <utility>

namespace ubcp::common::json {
namespace {

// Builds the DOM like boost::json::parse does, with two differences that make the codec strict and
// exact: a key repeated within one object fails the parse (so two readers of the same signed bytes
// can never disagree on which value counts), and doubles are re-read from their text with
// std::from_chars (correctly rounded) instead of Boost 1.81's approximate conversion.
class StrictHandler {
 public:
  static constexpr std::size_t max_object_size = boost::json::object::max_size();
  static constexpr std::size_t max_array_size = boost::json::array::max_size();
  static constexpr std::size_t max_key_size = boost::json::string::max_size();
  static constexpr std::size_t max_string_size = boost::json::string::max_size();

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_object_begin(boost::json::error_code&) {
    keys_.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t n, boost::json::error_code&) {
    keys_.pop_back();
    stack_.push_object(n);
    return true;
  }
  bool on_array_begin(boost::json::error_code&) { return true; }
  bool on_array_end(std::size_t n, boost::json::error_code&) {
    stack_.push_array(n);
    return true;
  }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    key_.append(s.data(), s.size());
    stack_.push_chars(s);
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code& ec) {
    key_.append(s.data(), s.size());
    if (!keys_.back().insert(key_).second) {
      duplicate_key_ = std::move(key_);
      key_.clear();
      ec = boost::json::error::syntax;
      return false;
    }
    key_.clear();
    stack_.push_key(s);
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_string(s);
    return true;
  }
  bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_uint64(u);
    return true;
  }
  bool on_double(double d, boost::json::string_view s, boost::json::error_code&) {
    number_.append(s.data(), s.size());
    double exact = 0;
    const char* end = number_.data() + number_.size();
    auto [ptr, ec] = std::from_chars(number_.data(), end, exact);
    // Out of range (overflow to infinity, underflow): keep Boost's value; the reader refuses
    // non-finite numbers and a tiny value needs no exactness.
    stack_.push_double(ec == std::errc() && ptr == end ? exact : d);
    number_.clear();
    return true;
  }
  bool on_bool(bool b, boost::json::error_code&) {
    stack_.push_bool(b);
    return true;
  }
  bool on_null(boost::json::error_code&) {
    stack_.push_null();
    return true;
  }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

  void Reset() { stack_.reset(); }
  boost::json::value Release() { return stack_.release(); }
  const std::optional<std::string>& duplicate_key() const { return duplicate_key_; }

 private:
  boost::json::value_stack stack_;
  std::vector<std::unordered_set<std::string>> keys_;
  std::string key_;
  std::string number_;
  std::optional<std::string> duplicate_key_;
};

// Keys come from the sender: keep them short and printable before they reach an error message.
std::string Printable(std::string_view s) {
  constexpr std::size_t kMax = 64;
  std::string out;
  for (char c : s.substr(0, kMax)) {
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (s.size() > kMax) out += "...";
  return out;
}

std::string FormatDouble(double d) {
  char buf[32];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  return ec == std::errc() ? std::string(buf, ptr) : std::string("?");
}

Error Malformed(const std::string& path, std::string_view what) {
  return MakeError(Errc::kMalformed, path + ": " + std::string(what));
}

}  // namespace

Result<boost::json::object> ParseObject(std::string_view text, std::size_t max_bytes,
                                        std::string_view what) {
  if (text.size() > max_bytes) {
    return MakeError(Errc::kTooLarge, std::string(what) + ": " + std::to_string(text.size()) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(max_bytes));
  }
  try {
    boost::json::parse_options options;
    options.max_depth = kMaxDepth;
    options.allow_comments = false;
    options.allow_trailing_commas = false;
    options.allow_invalid_utf8 = false;
    boost::json::basic_parser<StrictHandler> parser(options);
    parser.handler().Reset();
    boost::json::error_code ec;
    std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
    if (!ec && used < text.size()) ec = boost::json::error::extra_data;
    if (ec) {
      if (parser.handler().duplicate_key()) {
        return MakeError(Errc::kMalformed, std::string(what) + ": duplicate key \"" +
                                               Printable(*parser.handler().duplicate_key()) + "\"");
      }
      return MakeError(Errc::kMalformed, std::string(what) + ": invalid JSON near byte " +
                                             std::to_string(used) + ": " + ec.message());
    }
    boost::json::value value = parser.handler().Release();
    if (!value.is_object()) {
      return MakeError(Errc::kMalformed, std::string(what) + ": expected a JSON object");
    }
    return std::move(value.get_object());
  } catch (const std::bad_alloc&) {
    return MakeError(Errc::kTooLarge, std::string(what) + ": out of memory while parsing");
  } catch (const std::exception& e) {
    return MakeError(Errc::kMalformed, std::string(what) + ": " + e.what());
  }
}

ObjectReader::ObjectReader(const boost::json::object& object, std::string path)
    : object_(&object), path_(std::move(path)) {}

std::string ObjectReader::FieldPath(std::string_view key) const {
  return path_ + "." + std::string(key);
}

Result<const boost::json::value*> ObjectReader::Take(std::string_view key) {
  consumed_.emplace_back(key);
  const boost::json::value* v = object_->if_contains(key);
  if (v == nullptr) return Malformed(FieldPath(key), "missing required field");
  return v;
}

Result<std::int64_t> ObjectReader::Int64(std::string_view key, std::int64_t min, std::int64_t max) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  std::string range = "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
  if (v->is_uint64()) return Malformed(FieldPath(key), "out of range " + range);
  if (!v->is_int64()) return Malformed(FieldPath(key), "expected an integer");
  std::int64_t i = v->get_int64();
  if (i < min || i > max) return Malformed(FieldPath(key), "out of range " + range);
  return i;
}

Result<int> ObjectReader::Int(std::string_view key, int min, int max) {
  UBCP_ASSIGN_OR_RETURN(std::int64_t i, Int64(key, min, max));
  return static_cast<int>(i);
}

Result<std::uint64_t> ObjectReader::Uint64(std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  if (v->is_uint64()) return v->get_uint64();
  if (!v->is_int64()) return Malformed(FieldPath(key), "expected an unsigned integer");
  if (v->get_int64() < 0) return Malformed(FieldPath(key), "must not be negative");
  return static_cast<std::uint64_t>(v->get_int64());
}

Result<double> ObjectReader::Double(std::string_view key, const DoubleRange& range) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  double d = 0;
  if (v->is_double()) {
    d = v->get_double();
  } else if (v->is_int64()) {
    d = static_cast<double>(v->get_int64());
  } else if (v->is_uint64()) {
    d = static_cast<double>(v->get_uint64());
  } else {
    return Malformed(FieldPath(key), "expected a number");
  }
  if (!std::isfinite(d)) return Malformed(FieldPath(key), "must be finite");
  bool below = range.min_open ? !(d > range.min) : !(d >= range.min);
  bool above = range.max_open ? !(d < range.max) : !(d <= range.max);
  if (below || above) {
    return Malformed(FieldPath(key), "out of range " + std::string(range.min_open ? "(" : "[") +
                                         FormatDouble(range.min) + ", " + FormatDouble(range.max) +
                                         (range.max_open ? ")" : "]"));
  }
  return d;
}

Result<bool> ObjectReader::Bool(std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  if (!v->is_bool()) return Malformed(FieldPath(key), "expected a boolean");
  return v->get_bool();
}

Result<std::string> ObjectReader::String(std::string_view key, std::size_t max_len) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  return StringValue(*v, FieldPath(key), max_len);
}

Result<std::string> ObjectReader::Enum(std::string_view key,
                                       std::initializer_list<std::string_view> allowed) {
  constexpr std::size_t kMaxEnum = 64;
  UBCP_ASSIGN_OR_RETURN(std::string s, String(key, kMaxEnum));
  std::string choices;
  for (std::string_view a : allowed) {
    if (s == a) return s;
    choices += choices.empty() ? "" : ", ";
    choices += a;
  }
  return Malformed(FieldPath(key), "\"" + Printable(s) + "\" is not one of: " + choices);
}

Result<const boost::json::array*> ObjectReader::Array(std::string_view key, std::size_t max_items) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  if (!v->is_array()) return Malformed(FieldPath(key), "expected an array");
  if (v->get_array().size() > max_items) {
    return Malformed(FieldPath(key), "more than " + std::to_string(max_items) + " items");
  }
  return &v->get_array();
}

Result<ObjectReader> ObjectReader::Object(std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  return ObjectValue(*v, FieldPath(key));
}

Result<std::optional<ObjectReader>> ObjectReader::OptionalObject(std::string_view key) {
  UBCP_ASSIGN_OR_RETURN(const boost::json::value* v, Take(key));
  if (v->is_null()) return std::optional<ObjectReader>();
  UBCP_ASSIGN_OR_RETURN(ObjectReader reader, ObjectValue(*v, FieldPath(key)));
  return std::optional<ObjectReader>(std::move(reader));
}

Result<std::optional<ObjectReader>> ObjectReader::OmittableObject(std::string_view key) {
  if (!object_->contains(key)) return std::optional<ObjectReader>();
  return OptionalObject(key);
}

Status ObjectReader::Finish() const {
  for (const auto& kv : *object_) {
    std::string_view key(kv.key().data(), kv.key().size());
    bool known = false;
    for (const std::string& c : consumed_) {
      if (c == key) {
        known = true;
        break;
      }
    }
    // Unknown fields are refused rather than ignored: a sender that believes a field has an
    // effect must learn that this version does not implement it.
    if (!known) return Malformed(path_, "unknown field \"" + Printable(key) + "\"");
  }
  return {};
}

Result<std::string> StringValue(const boost::json::value& v, const std::string& path,
                                std::size_t max_len) {
  if (!v.is_string()) return Malformed(path, "expected a string");
  const boost::json::string& s = v.get_string();
  if (s.size() > max_len) {
    return Malformed(path, "longer than " + std::to_string(max_len) + " bytes");
  }
  return std::string(s.data(), s.size());
}

Result<ObjectReader> ObjectValue(const boost::json::value& v, std::string path) {
  if (!v.is_object()) return Malformed(path, "expected an object");
  return ObjectReader(v.get_object(), std::move(path));
}

bool IsLowerHex(std::string_view s, std::size_t len) {
  if (s.size() != len) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace ubcp::common::json
