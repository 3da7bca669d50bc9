// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/run_policy.h"

#include <algorithm>

namespace ubcp::client {
namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

std::string Mib(std::uint64_t bytes) { return std::to_string(bytes / kMiB) + " MiB"; }

// The first transfer limit reached, or an empty string.
std::string TransferLimitReason(const DonorSettings& s, const TransferUsage& usage) {
  auto reached = [](std::uint64_t used, std::uint64_t limit_mb) {
    return limit_mb != 0 && used / kMiB >= limit_mb;
  };
  if (reached(usage.downloaded_bytes, s.daily_download_mb)) {
    return "daily download limit reached (" + Mib(usage.downloaded_bytes) + " of " +
           std::to_string(s.daily_download_mb) + " MiB)";
  }
  if (reached(usage.uploaded_bytes, s.daily_upload_mb)) {
    return "daily upload limit reached (" + Mib(usage.uploaded_bytes) + " of " +
           std::to_string(s.daily_upload_mb) + " MiB)";
  }
  return {};
}

}  // namespace

RunDecision Decide(const DonorSettings& settings, const SystemState& state,
                   std::chrono::system_clock::time_point now, const TransferUsage& today) {
  RunDecision d;
  const unsigned cpus = std::max(1u, state.cpu_count);
  const unsigned by_share =
      static_cast<unsigned>(static_cast<std::uint64_t>(cpus) * settings.cpu_share_percent / 100);
  d.threads = std::max(1u, std::min(settings.max_cores, by_share));
  d.memory_mb = settings.memory_limit_mb == 0
                    ? state.memory_available_mb
                    : std::min(settings.memory_limit_mb, state.memory_available_mb);

  const auto local = now + state.utc_offset;
  const auto local_day = std::chrono::floor<std::chrono::days>(local);
  const int weekday = static_cast<int>(std::chrono::weekday{local_day}.iso_encoding()) - 1;
  const int minute =
      static_cast<int>(std::chrono::duration_cast<std::chrono::minutes>(local - local_day).count());

  if (state.on_battery && !settings.run_on_battery) {
    d.reason = "on battery";
    return d;
  }
  if (!InTimeWindows(settings.time_windows, weekday, minute)) {
    d.reason = "outside time window " + FormatTimeWindows(settings.time_windows);
    return d;
  }
  if (settings.run_when_idle) {
    if (!state.user_idle_for) {
      d.reason = "user idleness cannot be detected on this machine";
      return d;
    }
    if (*state.user_idle_for < std::chrono::minutes(settings.idle_minutes)) {
      d.reason = "user active (idle " + std::to_string(state.user_idle_for->count()) + " s of " +
                 std::to_string(settings.idle_minutes) + " min)";
      return d;
    }
  }
  std::string limit =
      TransferLimitReason(settings, UsageOfDay(today, LocalDay(now, state.utc_offset)));
  if (!limit.empty()) {
    d.reason = std::move(limit);
    return d;
  }
  d.run = true;
  d.reason = "ok";
  return d;
}

}  // namespace ubcp::client
