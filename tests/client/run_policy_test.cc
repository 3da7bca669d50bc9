// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/run_policy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "support/temp_dir.h"
#include "ubcp/client/transfer_usage.h"

namespace ubcp::client {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

constexpr std::uint64_t kMiB = 1024 * 1024;

// 2024-05-06 was a Monday.
system_clock::time_point Utc(int day_of_may, int hour, int minute) {
  return sys_days{2024y / May / day_of_may} + hours(hour) + minutes(minute);
}

DonorSettings Settings() {
  DonorSettings s;
  s.coordinator = "https://c:1";
  s.max_cores = 8;
  return s;
}

SystemState State() {
  SystemState st;
  st.cpu_count = 8;
  st.memory_available_mb = 4096;
  st.user_idle_for = 3600s;
  return st;
}

struct Case {
  std::string label;
  std::function<void(DonorSettings&, SystemState&, TransferUsage&)> change;
  system_clock::time_point now;
  bool run;
  std::string reason;  // a prefix of the expected reason
};

TEST(RunPolicyTest, Decisions) {
  const auto monday_noon = Utc(6, 12, 0);
  auto windows = [](DonorSettings& s, const char* text) {
    s.time_windows = *ParseTimeWindows(text);
  };
  const std::vector<Case> cases = {
      {"defaults", [](auto&, auto&, auto&) {}, monday_noon, true, "ok"},
      {"on battery", [](auto&, SystemState& st, auto&) { st.on_battery = true; }, monday_noon,
       false, "on battery"},
      {"on battery, allowed",
       [](DonorSettings& s, SystemState& st, auto&) {
         st.on_battery = true;
         s.run_on_battery = true;
       },
       monday_noon, true, "ok"},
      {"outside the evening window",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Mon-Fri 18:00-08:00"); }, monday_noon,
       false, "outside time window Mon-Fri 18:00-08:00"},
      {"inside the evening window",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Mon-Fri 18:00-08:00"); }, Utc(6, 18, 30),
       true, "ok"},
      {"Tuesday 07:00 is Monday night's window",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Mon 18:00-08:00"); }, Utc(7, 7, 0), true,
       "ok"},
      {"Monday 07:00 is not (Sunday has no window)",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Mon 18:00-08:00"); }, Utc(6, 7, 0), false,
       "outside time window"},
      {"weekend window on Saturday",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Sat-Sun 00:00-24:00"); }, Utc(11, 15, 0),
       true, "ok"},
      {"local time, not UTC: 23:30 UTC is Tuesday 01:30 at UTC+2",
       [&](DonorSettings& s, SystemState& st, auto&) {
         windows(s, "Tue 01:00-02:00");
         st.utc_offset = 2h;
       },
       Utc(6, 23, 30), true, "ok"},
      {"same instant at UTC is outside",
       [&](DonorSettings& s, auto&, auto&) { windows(s, "Tue 01:00-02:00"); }, Utc(6, 23, 30),
       false, "outside time window"},
      {"user active",
       [](DonorSettings& s, SystemState& st, auto&) {
         s.run_when_idle = true;
         s.idle_minutes = 10;
         st.user_idle_for = 599s;
       },
       monday_noon, false, "user active"},
      {"user idle long enough",
       [](DonorSettings& s, SystemState& st, auto&) {
         s.run_when_idle = true;
         s.idle_minutes = 10;
         st.user_idle_for = 600s;
       },
       monday_noon, true, "ok"},
      {"idleness unknown",
       [](DonorSettings& s, SystemState& st, auto&) {
         s.run_when_idle = true;
         st.user_idle_for.reset();
       },
       monday_noon, false, "user idleness cannot be detected"},
      {"activity ignored when not asked",
       [](auto&, SystemState& st, auto&) { st.user_idle_for = 0s; }, monday_noon, true, "ok"},
      {"download limit reached",
       [](DonorSettings& s, auto&, TransferUsage& u) {
         s.daily_download_mb = 100;
         u = {"2024-05-06", 100 * kMiB, 0};
       },
       monday_noon, false, "daily download limit reached (100 MiB of 100 MiB)"},
      {"download just under the limit",
       [](DonorSettings& s, auto&, TransferUsage& u) {
         s.daily_download_mb = 100;
         u = {"2024-05-06", 100 * kMiB - 1, 0};
       },
       monday_noon, true, "ok"},
      {"yesterday's downloads do not count",
       [](DonorSettings& s, auto&, TransferUsage& u) {
         s.daily_download_mb = 100;
         u = {"2024-05-05", 500 * kMiB, 0};
       },
       monday_noon, true, "ok"},
      {"upload limit reached",
       [](DonorSettings& s, auto&, TransferUsage& u) {
         s.daily_upload_mb = 10;
         u = {"2024-05-06", 0, 11 * kMiB};
       },
       monday_noon, false, "daily upload limit reached (11 MiB of 10 MiB)"},
      {"no limit",
       [](auto&, auto&, TransferUsage& u) {
         u = {"2024-05-06", ~0ull, ~0ull};
       },
       monday_noon, true, "ok"},
      {"battery is reported before the window",
       [&](DonorSettings& s, SystemState& st, auto&) {
         st.on_battery = true;
         windows(s, "Sat 00:00-01:00");
       },
       monday_noon, false, "on battery"},
  };
  for (const Case& c : cases) {
    DonorSettings s = Settings();
    SystemState st = State();
    TransferUsage u;
    c.change(s, st, u);
    RunDecision d = Decide(s, st, c.now, u);
    EXPECT_EQ(d.run, c.run) << c.label << ": " << d.reason;
    EXPECT_TRUE(d.reason.starts_with(c.reason)) << c.label << ": " << d.reason;
  }
}

TEST(RunPolicyTest, ThreadsAndMemory) {
  struct ThreadCase {
    unsigned max_cores, share, cpus, threads;
  };
  for (const ThreadCase& c : std::vector<ThreadCase>{{8, 100, 8, 8},
                                                     {4, 100, 8, 4},
                                                     {8, 50, 8, 4},
                                                     {8, 30, 8, 2},  // 2.4 rounds down
                                                     {2, 50, 8, 2},
                                                     {8, 10, 4, 1},  // 0.4: at least one
                                                     {1, 1, 1, 1}}) {
    DonorSettings s = Settings();
    s.max_cores = c.max_cores;
    s.cpu_share_percent = c.share;
    SystemState st = State();
    st.cpu_count = c.cpus;
    EXPECT_EQ(Decide(s, st, Utc(6, 12, 0), {}).threads, c.threads)
        << c.max_cores << " " << c.share << " " << c.cpus;
  }
  DonorSettings s = Settings();
  SystemState st = State();
  EXPECT_EQ(Decide(s, st, Utc(6, 12, 0), {}).memory_mb, 4096u);
  s.memory_limit_mb = 1000;
  EXPECT_EQ(Decide(s, st, Utc(6, 12, 0), {}).memory_mb, 1000u);
  s.memory_limit_mb = 9000;
  EXPECT_EQ(Decide(s, st, Utc(6, 12, 0), {}).memory_mb, 4096u);
}

TEST(TransferUsageTest, LocalDayAndReset) {
  EXPECT_EQ(LocalDay(Utc(6, 23, 30), 0s), "2024-05-06");
  EXPECT_EQ(LocalDay(Utc(6, 23, 30), 1h), "2024-05-07");
  EXPECT_EQ(LocalDay(Utc(6, 0, 30), -1h), "2024-05-05");
  TransferUsage u = AddTransfer({}, "2024-05-06", 10, 20);
  u = AddTransfer(u, "2024-05-06", 5, 1);
  EXPECT_EQ(u, (TransferUsage{"2024-05-06", 15, 21}));
  u = AddTransfer(u, "2024-05-07", 1, 0);  // local midnight passed
  EXPECT_EQ(u, (TransferUsage{"2024-05-07", 1, 0}));
  EXPECT_EQ(AddTransfer({"2024-05-07", ~0ull - 1, 0}, "2024-05-07", 10, 0).downloaded_bytes, ~0ull);
  EXPECT_EQ(UsageOfDay(u, "2024-05-08"), (TransferUsage{"2024-05-08", 0, 0}));
}

TEST(TransferUsageTest, SavesAndLoadsAtomically) {
  testing::TempDir dir;
  const auto file = dir.path() / kTransferUsageFile;
  auto empty = LoadTransferUsage(file);
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, TransferUsage{});
  const TransferUsage u{"2024-05-06", 123456789012ull, 42};
  ASSERT_TRUE(SaveTransferUsage(file, u));
  auto back = LoadTransferUsage(file);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, u);
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);

  for (const char* bad : {"", "[]", "{\"day\":\"2024-05-06\",\"downloaded\":1}",
                          "{\"day\":\"yesterday\",\"downloaded\":1,\"uploaded\":2}",
                          "{\"day\":\"2024-05-06\",\"downloaded\":-1,\"uploaded\":2}",
                          "{\"day\":\"2024-05-06\",\"downloaded\":1,\"uploaded\":2,\"x\":3}"}) {
    std::ofstream(file, std::ios::trunc) << bad;
    auto r = LoadTransferUsage(file);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, common::Errc::kMalformed) << bad;
  }
}

}  // namespace
}  // namespace ubcp::client
