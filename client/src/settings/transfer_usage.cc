// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/transfer_usage.h"

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "ubcp/common/atomic_file.h"

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;

std::uint64_t SaturatingAdd(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

bool IsDay(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

}  // namespace

std::string LocalDay(std::chrono::system_clock::time_point now, std::chrono::seconds utc_offset) {
  auto local = std::chrono::floor<std::chrono::days>(now + utc_offset);
  std::chrono::year_month_day ymd{local};
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  return buf;
}

TransferUsage UsageOfDay(const TransferUsage& usage, const std::string& day) {
  if (usage.day == day) return usage;
  return TransferUsage{day, 0, 0};
}

TransferUsage AddTransfer(const TransferUsage& usage, const std::string& day,
                          std::uint64_t downloaded, std::uint64_t uploaded) {
  TransferUsage u = UsageOfDay(usage, day);
  u.downloaded_bytes = SaturatingAdd(u.downloaded_bytes, downloaded);
  u.uploaded_bytes = SaturatingAdd(u.uploaded_bytes, uploaded);
  return u;
}

common::Result<TransferUsage> LoadTransferUsage(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return TransferUsage{};
  std::ifstream in(file, std::ios::binary);
  if (!in) return MakeError(Errc::kIo, "cannot read " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  boost::system::error_code jec;
  boost::json::value v = boost::json::parse(text.str(), jec);
  const auto malformed = [&] {
    return MakeError(Errc::kMalformed, file.string() +
                                           ": expected {\"day\":\"YYYY-MM-DD\",\"downloaded\":N,"
                                           "\"uploaded\":N}");
  };
  if (jec || !v.is_object()) return malformed();
  const auto& o = v.as_object();
  const auto* day = o.if_contains("day");
  const auto* down = o.if_contains("downloaded");
  const auto* up = o.if_contains("uploaded");
  if (o.size() != 3 || !day || !down || !up || !day->is_string() || !IsDay(day->as_string()) ||
      !(down->is_uint64() || (down->is_int64() && down->as_int64() >= 0)) ||
      !(up->is_uint64() || (up->is_int64() && up->as_int64() >= 0))) {
    return malformed();
  }
  auto as_u64 = [](const boost::json::value& x) {
    return x.is_uint64() ? x.as_uint64() : static_cast<std::uint64_t>(x.as_int64());
  };
  return TransferUsage{std::string(day->as_string()), as_u64(*down), as_u64(*up)};
}

common::Status SaveTransferUsage(const std::filesystem::path& file, const TransferUsage& usage) {
  boost::json::object o;
  o["day"] = usage.day;
  o["downloaded"] = usage.downloaded_bytes;
  o["uploaded"] = usage.uploaded_bytes;
  return common::WriteFileAtomically(file, boost::json::serialize(o) + "\n", 0600);
}

}  // namespace ubcp::client
