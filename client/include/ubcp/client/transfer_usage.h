// SPDX-License-Identifier: Apache-2.0
#pragma once
// Bytes the donor downloaded and uploaded on one local day, for the daily transfer limits.
// Persisted as a small JSON file in the state directory ({"day":"2024-05-01","downloaded":N,
// "uploaded":N}), written atomically; a new local day starts from zero.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "ubcp/common/result.h"

namespace ubcp::client {

struct TransferUsage {
  std::string day;  // local date "YYYY-MM-DD"; empty: nothing recorded yet
  std::uint64_t downloaded_bytes = 0;
  std::uint64_t uploaded_bytes = 0;

  bool operator==(const TransferUsage&) const = default;
};

inline constexpr std::string_view kTransferUsageFile = "transfer-usage.json";

// The local date of `now` given the local UTC offset (system_probe.h: LocalUtcOffset).
std::string LocalDay(std::chrono::system_clock::time_point now, std::chrono::seconds utc_offset);

// `usage` when it is of `day`, else an empty usage of `day` (the reset at local midnight).
TransferUsage UsageOfDay(const TransferUsage& usage, const std::string& day);

// Adds a transfer made on `day` (resetting first when the day changed); saturates at 2^64-1.
TransferUsage AddTransfer(const TransferUsage& usage, const std::string& day,
                          std::uint64_t downloaded, std::uint64_t uploaded);

// An empty usage when the file does not exist; kMalformed when it is not the format above.
common::Result<TransferUsage> LoadTransferUsage(const std::filesystem::path& file);
// Atomically, mode 0600 (the directory must exist).
common::Status SaveTransferUsage(const std::filesystem::path& file, const TransferUsage& usage);

}  // namespace ubcp::client
