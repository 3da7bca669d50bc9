// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/time_window.h"

#include <cctype>
#include <optional>

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;

constexpr std::array<std::string_view, 7> kDayNames = {"Mon", "Tue", "Wed", "Thu",
                                                       "Fri", "Sat", "Sun"};
constexpr int kMinutesPerDay = 24 * 60;

std::optional<int> DayIndex(std::string_view name) {
  if (name.size() != 3) return std::nullopt;
  for (int i = 0; i < 7; ++i) {
    bool same = true;
    for (int c = 0; c < 3; ++c) {
      if (std::tolower(static_cast<unsigned char>(name[c])) !=
          std::tolower(static_cast<unsigned char>(kDayNames[i][c]))) {
        same = false;
      }
    }
    if (same) return i;
  }
  return std::nullopt;
}

// "HH:MM" -> minutes; 24:00 only when `allow_end_of_day`.
std::optional<int> ParseClock(std::string_view s, bool allow_end_of_day) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (int i : {0, 1, 3, 4}) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
  }
  int h = (s[0] - '0') * 10 + (s[1] - '0');
  int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m >= 60) return std::nullopt;
  if (h == 24 && m == 0 && allow_end_of_day) return kMinutesPerDay;
  if (h >= 24) return std::nullopt;
  return h * 60 + m;
}

bool IsTimeRange(std::string_view token) {
  return token.size() > 2 && std::isdigit(static_cast<unsigned char>(token[0]));
}

std::vector<std::string_view> Tokenize(std::string_view text) {
  std::vector<std::string_view> tokens;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ',' || std::isspace(static_cast<unsigned char>(text[i]))))
      ++i;
    std::size_t start = i;
    while (i < text.size() && text[i] != ',' && !std::isspace(static_cast<unsigned char>(text[i])))
      ++i;
    if (i > start) tokens.push_back(text.substr(start, i - start));
  }
  return tokens;
}

common::Status AddDays(std::string_view token, std::array<bool, 7>& days) {
  auto dash = token.find('-');
  auto bad = [&] {
    return MakeError(Errc::kInvalidArgument,
                     "time window: '" + std::string(token) + "' is not a day (Mon..Sun) or range");
  };
  if (dash == std::string_view::npos) {
    auto d = DayIndex(token);
    if (!d) return bad();
    days[*d] = true;
    return common::Ok();
  }
  auto first = DayIndex(token.substr(0, dash));
  auto last = DayIndex(token.substr(dash + 1));
  if (!first || !last) return bad();
  for (int d = *first;; d = (d + 1) % 7) {
    days[d] = true;
    if (d == *last) break;
  }
  return common::Ok();
}

std::string FormatClock(int minutes) {
  std::string s(5, '0');
  s[0] = static_cast<char>('0' + minutes / 600);
  s[1] = static_cast<char>('0' + (minutes / 60) % 10);
  s[2] = ':';
  s[3] = static_cast<char>('0' + (minutes % 60) / 10);
  s[4] = static_cast<char>('0' + minutes % 10);
  return s;
}

std::string FormatDays(const std::array<bool, 7>& days) {
  std::string out;
  int d = 0;
  while (d < 7) {
    if (!days[d]) {
      ++d;
      continue;
    }
    int run_end = d;
    while (run_end + 1 < 7 && days[run_end + 1]) ++run_end;
    if (!out.empty()) out += ',';
    out += kDayNames[d];
    if (run_end == d + 1) {
      out += ',';
      out += kDayNames[run_end];
    } else if (run_end > d + 1) {
      out += '-';
      out += kDayNames[run_end];
    }
    d = run_end + 1;
  }
  return out;
}

}  // namespace

common::Result<std::vector<TimeWindow>> ParseTimeWindows(std::string_view text) {
  std::vector<TimeWindow> windows;
  TimeWindow current;
  bool have_days = false;
  for (std::string_view token : Tokenize(text)) {
    if (!IsTimeRange(token)) {
      UBCP_RETURN_IF_ERROR(AddDays(token, current.days));
      have_days = true;
      continue;
    }
    auto dash = token.find('-');
    std::optional<int> start, end;
    if (dash != std::string_view::npos) {
      start = ParseClock(token.substr(0, dash), false);
      end = ParseClock(token.substr(dash + 1), true);
    }
    if (!start || !end) {
      return MakeError(Errc::kInvalidArgument,
                       "time window: '" + std::string(token) + "' is not HH:MM-HH:MM");
    }
    if (*start == *end) {
      return MakeError(Errc::kInvalidArgument,
                       "time window: '" + std::string(token) + "' is empty (start == end)");
    }
    if (!have_days) current.days.fill(true);
    current.start_minute = *start;
    current.end_minute = *end;
    windows.push_back(current);
    current = TimeWindow{};
    have_days = false;
  }
  if (have_days) {
    return MakeError(Errc::kInvalidArgument, "time window: days without a time range at the end");
  }
  return windows;
}

std::string FormatTimeWindows(const std::vector<TimeWindow>& windows) {
  if (windows.empty()) return "always";
  std::string out;
  for (const TimeWindow& w : windows) {
    if (!out.empty()) out += ", ";
    bool every_day = true;
    for (bool d : w.days) every_day = every_day && d;
    if (!every_day) out += FormatDays(w.days) + ' ';
    out += FormatClock(w.start_minute) + '-' + FormatClock(w.end_minute);
  }
  return out;
}

bool InTimeWindows(const std::vector<TimeWindow>& windows, int weekday, int minute) {
  if (windows.empty()) return true;
  const int yesterday = (weekday + 6) % 7;
  for (const TimeWindow& w : windows) {
    if (w.start_minute < w.end_minute) {
      if (w.days[weekday] && minute >= w.start_minute && minute < w.end_minute) return true;
    } else {
      // Crosses midnight: the evening part belongs to the day it opens, the morning part to the
      // day before.
      if (w.days[weekday] && minute >= w.start_minute) return true;
      if (w.days[yesterday] && minute < w.end_minute) return true;
    }
  }
  return false;
}

}  // namespace ubcp::client
