// SPDX-License-Identifier: Apache-2.0
#pragma once
// Weekly time windows in which a donor allows work, e.g. "Mon-Fri 18:00-08:00, Sat-Sun
// 00:00-24:00".
//
// Grammar (tokens are separated by spaces and/or commas; day names are case-insensitive):
//   windows := window*            (no window at all: always allowed)
//   window  := day* HH:MM-HH:MM   (no day: every day)
//   day     := Mon|Tue|Wed|Thu|Fri|Sat|Sun | day-day (a range, may wrap: Fri-Mon)
// HH:MM is 00:00..23:59; 24:00 is allowed as an end. A window whose end is before its start
// crosses midnight: it opens on each listed day and closes on the following day, so
// "Fri 18:00-08:00" covers Friday 18:00 to Saturday 08:00. Start == end is an error.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::client {

struct TimeWindow {
  std::array<bool, 7> days{};  // index 0 = Monday ... 6 = Sunday: the days the window opens
  int start_minute = 0;        // minutes after local midnight, 0..1439
  int end_minute = 0;          // 1..1440; < start_minute when the window crosses midnight

  bool operator==(const TimeWindow&) const = default;
};

// kInvalidArgument naming the offending token.
common::Result<std::vector<TimeWindow>> ParseTimeWindows(std::string_view text);

// Canonical text of the windows ("Mon-Fri 18:00-08:00, Sat,Sun 00:00-24:00"); "always" when empty.
std::string FormatTimeWindows(const std::vector<TimeWindow>& windows);

// Whether local time (`weekday` 0 = Monday, `minute` after midnight 0..1439) lies in a window.
// Always true when `windows` is empty.
bool InTimeWindows(const std::vector<TimeWindow>& windows, int weekday, int minute);

}  // namespace ubcp::client
