// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/donor_settings.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/temp_dir.h"
#include "ubcp/client/time_window.h"

namespace ubcp::client {
namespace {

using common::Errc;

void Write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

constexpr unsigned kThreads = 8;

// ---- Time windows ------------------------------------------------------------------------

struct WindowCase {
  std::string text;
  int weekday;  // 0 = Monday
  std::string clock;
  bool inside;
};

int Minute(const std::string& hhmm) {
  return std::stoi(hhmm.substr(0, 2)) * 60 + std::stoi(hhmm.substr(3, 2));
}

TEST(TimeWindowTest, MembershipAcrossMidnightAndWeekdays) {
  const std::string weekdays_evening = "Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00";
  const std::vector<WindowCase> cases = {
      {weekdays_evening, 0, "07:59", false},  // Monday morning: Sunday's window ended at 24:00
      {weekdays_evening, 0, "08:00", false},
      {weekdays_evening, 0, "17:59", false},
      {weekdays_evening, 0, "18:00", true},
      {weekdays_evening, 1, "07:59", true},  // Tuesday morning: Monday night's window
      {weekdays_evening, 1, "08:00", false},
      {weekdays_evening, 4, "23:59", true},
      {weekdays_evening, 5, "07:00", true},  // Saturday: Friday night's window and Sat's own
      {weekdays_evening, 5, "12:00", true},
      {weekdays_evening, 6, "23:59", true},
      {"Fri 22:00-02:00", 4, "21:59", false},
      {"Fri 22:00-02:00", 4, "22:00", true},
      {"Fri 22:00-02:00", 5, "01:59", true},
      {"Fri 22:00-02:00", 5, "02:00", false},
      {"Fri 22:00-02:00", 3, "23:00", false},
      {"Fri 22:00-02:00", 4, "01:00", false},  // Friday morning belongs to Thursday
      {"Sun 23:00-01:00", 0, "00:30", true},   // wraps from Sunday to Monday
      {"Sat-Mon 10:00-11:00", 0, "10:30", true},
      {"Sat-Mon 10:00-11:00", 1, "10:30", false},
      {"Mon,Wed Fri 09:00-10:00", 2, "09:30", true},
      {"Mon,Wed Fri 09:00-10:00", 1, "09:30", false},
      {"12:00-13:00", 3, "12:59", true},  // no day: every day
      {"12:00-13:00", 3, "13:00", false},
      {"", 2, "03:00", true},  // no window: always
  };
  for (const WindowCase& c : cases) {
    auto windows = ParseTimeWindows(c.text);
    ASSERT_TRUE(windows) << c.text << ": " << windows.error().message;
    EXPECT_EQ(InTimeWindows(*windows, c.weekday, Minute(c.clock)), c.inside)
        << c.text << " weekday " << c.weekday << " " << c.clock;
  }
}

TEST(TimeWindowTest, RejectsMalformedText) {
  for (const char* bad :
       {"Mon", "Mon-Fri", "Funday 10:00-11:00", "10:00", "25:00-26:00", "10:60-11:00",
        "24:00-01:00", "10:00-10:00", "10:00-", "Mon-Xyz 1:00-2:00", "10:00-11:00 Tue"}) {
    auto w = ParseTimeWindows(bad);
    ASSERT_FALSE(w) << bad;
    EXPECT_EQ(w.error().code, Errc::kInvalidArgument) << bad;
  }
}

TEST(TimeWindowTest, FormatsCanonically) {
  auto w = ParseTimeWindows("mon-FRI 18:00-08:00,sat sun 00:00-24:00, 12:00-13:00");
  ASSERT_TRUE(w);
  EXPECT_EQ(FormatTimeWindows(*w), "Mon-Fri 18:00-08:00, Sat,Sun 00:00-24:00, 12:00-13:00");
  auto again = ParseTimeWindows(FormatTimeWindows(*w));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *w);
  EXPECT_EQ(FormatTimeWindows({}), "always");
}

// ---- Loading -----------------------------------------------------------------------------

TEST(DonorSettingsTest, DefaultsFromFlagsOnly) {
  auto s = LoadDonorSettings({}, {"--coordinator", "https://c.example:8443"}, kThreads);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->coordinator, "https://c.example:8443");
  EXPECT_EQ(s->max_cores, kThreads);
  EXPECT_EQ(s->cpu_share_percent, 100u);
  EXPECT_EQ(s->memory_limit_mb, 0u);
  EXPECT_FALSE(s->run_when_idle);
  EXPECT_FALSE(s->run_on_battery);
  EXPECT_TRUE(s->time_windows.empty());
  EXPECT_EQ(s->daily_download_mb, 0u);
  EXPECT_EQ(s->daily_upload_mb, 0u);
}

TEST(DonorSettingsTest, ReadsEveryKeyFromAFileWithOrWithoutSection) {
  const std::string body =
      "coordinator = \"https://c.example:8443\"\n"
      "max-cores = 3\n"
      "cpu-share = 50\n"
      "memory-limit-mb = 2048\n"
      "run-when-idle = true\n"
      "idle-minutes = 12\n"
      "run-on-battery = true\n"
      "time-windows = \"Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00\"\n"
      "daily-download-mb = 500\n"
      "daily-upload-mb = 100\n";
  testing::TempDir dir;
  for (const std::string& prefix : {std::string(), std::string("# comment\n[donor]\n")}) {
    Write(dir.path() / "donor.toml", prefix + body);
    auto s = LoadDonorSettings(dir.path() / "donor.toml", {}, kThreads);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->max_cores, 3u);
    EXPECT_EQ(s->cpu_share_percent, 50u);
    EXPECT_EQ(s->memory_limit_mb, 2048u);
    EXPECT_TRUE(s->run_when_idle);
    EXPECT_EQ(s->idle_minutes, 12u);
    EXPECT_TRUE(s->run_on_battery);
    EXPECT_EQ(FormatTimeWindows(s->time_windows), "Mon-Fri 18:00-08:00, Sat,Sun 00:00-24:00");
    EXPECT_EQ(s->daily_download_mb, 500u);
    EXPECT_EQ(s->daily_upload_mb, 100u);
  }
}

TEST(DonorSettingsTest, UnquotedAndArrayTimeWindows) {
  testing::TempDir dir;
  for (const char* value : {"Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00",
                            "[\"Mon-Fri 18:00-08:00\", \"Sat-Sun 00:00-24:00\"]"}) {
    Write(dir.path() / "d.toml",
          std::string("coordinator = https://c:1\ntime-windows = ") + value + "\n");
    auto s = LoadDonorSettings(dir.path() / "d.toml", {}, kThreads);
    ASSERT_TRUE(s) << value << ": " << s.error().message;
    EXPECT_EQ(FormatTimeWindows(s->time_windows), "Mon-Fri 18:00-08:00, Sat,Sun 00:00-24:00")
        << value;
  }
}

TEST(DonorSettingsTest, FlagsOverrideTheFile) {
  testing::TempDir dir;
  Write(dir.path() / "d.toml",
        "coordinator = https://file:1\nmax-cores = 2\nrun-when-idle = true\ncpu-share = 40\n");
  auto s = LoadDonorSettings(
      dir.path() / "d.toml",
      {"--max-cores", "5", "--coordinator", "https://flag:2", "--run-when-idle=false"}, kThreads);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->max_cores, 5u);
  EXPECT_EQ(s->coordinator, "https://flag:2");
  EXPECT_FALSE(s->run_when_idle);
  EXPECT_EQ(s->cpu_share_percent, 40u);  // not given as a flag: the file's value
}

struct BadCase {
  std::string file_line;  // appended to a valid file
  std::string key;        // the message must name it
};

TEST(DonorSettingsTest, BadKeysAndValuesAreErrorsNamingTheKey) {
  const std::vector<BadCase> cases = {
      {"colour = blue", "colour"},
      {"max-cores = 0", "max-cores"},
      {"max-cores = 9", "max-cores"},  // above kThreads
      {"max-cores = many", "max-cores"},
      {"cpu-share = 101", "cpu-share"},
      {"cpu-share = 0", "cpu-share"},
      {"idle-minutes = 0", "idle-minutes"},
      {"memory-limit-mb = -5", "memory-limit-mb"},
      {"daily-upload-mb = lots", "daily-upload-mb"},
      {"time-windows = \"Mon 25:00-26:00\"", "time-windows"},
      {"[other]\nmax-cores = 2", "other"},
  };
  testing::TempDir dir;
  for (const BadCase& c : cases) {
    Write(dir.path() / "d.toml", "coordinator = https://c:1\n" + c.file_line + "\n");
    auto s = LoadDonorSettings(dir.path() / "d.toml", {}, kThreads);
    ASSERT_FALSE(s) << c.file_line;
    EXPECT_EQ(s.error().code, Errc::kInvalidArgument) << c.file_line;
    EXPECT_NE(s.error().message.find(c.key), std::string::npos)
        << c.file_line << " -> " << s.error().message;
  }
}

TEST(DonorSettingsTest, CoordinatorIsRequiredAndMustBeHttps) {
  auto missing = LoadDonorSettings({}, {}, kThreads);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("coordinator"), std::string::npos);
  auto plain = LoadDonorSettings({}, {"--coordinator", "http://c:1"}, kThreads);
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message.find("https://"), std::string::npos);
  auto unknown_flag = LoadDonorSettings({}, {"--coordinator", "https://c:1", "--bogus"}, kThreads);
  EXPECT_FALSE(unknown_flag);
}

TEST(DonorSettingsTest, MissingFileIsNotFound) {
  testing::TempDir dir;
  auto s = LoadDonorSettings(dir.path() / "absent.toml", {}, kThreads);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kNotFound);
}

TEST(DonorSettingsTest, TheExampleLoadsToTheDefaults) {
  testing::TempDir dir;
  Write(dir.path() / "example.toml", DonorSettingsExample(kThreads));
  auto from_file = LoadDonorSettings(dir.path() / "example.toml", {}, kThreads);
  ASSERT_TRUE(from_file) << from_file.error().message;
  auto defaults = LoadDonorSettings({}, {"--coordinator", from_file->coordinator}, kThreads);
  ASSERT_TRUE(defaults);
  EXPECT_EQ(*from_file, *defaults);
}

// ---- Reloading ---------------------------------------------------------------------------

TEST(SettingsWatcherTest, SeesChangesAndKeepsGoodSettingsOnABadFile) {
  testing::TempDir dir;
  const auto file = dir.path() / "d.toml";
  Write(file, "coordinator = https://c:1\nmax-cores = 2\n");
  auto watcher = SettingsWatcher::Open(file, {"--cpu-share", "50"}, kThreads);
  ASSERT_TRUE(watcher) << watcher.error().message;
  EXPECT_EQ(watcher->current().max_cores, 2u);

  auto unchanged = watcher->Poll();
  ASSERT_TRUE(unchanged);
  EXPECT_FALSE(unchanged->has_value());

  // Same size as before: the content, not the size or the mtime, tells the change.
  Write(file, "coordinator = https://c:1\nmax-cores = 4\n");
  auto changed = watcher->Poll();
  ASSERT_TRUE(changed) << changed.error().message;
  ASSERT_TRUE(changed->has_value());
  EXPECT_EQ((*changed)->max_cores, 4u);
  EXPECT_EQ((*changed)->cpu_share_percent, 50u);  // the flags still apply
  EXPECT_EQ(watcher->current().max_cores, 4u);

  Write(file, "coordinator = https://c:1\nmax-cores = 4\nfrobnicate = 1\n");
  auto broken = watcher->Poll();
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message.find("frobnicate"), std::string::npos);
  EXPECT_NE(broken.error().message.find("keeping the previous settings"), std::string::npos);
  EXPECT_EQ(watcher->current().max_cores, 4u);
  auto still_broken = watcher->Poll();  // reported once
  ASSERT_TRUE(still_broken);
  EXPECT_FALSE(still_broken->has_value());

  std::filesystem::remove(file);
  auto gone = watcher->Poll();
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::kNotFound);
  EXPECT_EQ(watcher->current().max_cores, 4u);

  Write(file, "coordinator = https://c:1\nmax-cores = 1\n");
  auto fixed = watcher->Poll();
  ASSERT_TRUE(fixed) << fixed.error().message;
  ASSERT_TRUE(fixed->has_value());
  EXPECT_EQ(watcher->current().max_cores, 1u);
}

TEST(SettingsWatcherTest, OpenFailsOnABadFirstFile) {
  testing::TempDir dir;
  Write(dir.path() / "d.toml", "coordinator = https://c:1\nmax-cores = 0\n");
  EXPECT_FALSE(SettingsWatcher::Open(dir.path() / "d.toml", {}, kThreads));
}

}  // namespace
}  // namespace ubcp::client
