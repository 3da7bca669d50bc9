// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/system_probe.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <iostream>

#include "support/temp_dir.h"

namespace ubcp::client {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

void Write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

Clock::time_point At(std::int64_t unix_seconds) { return Clock::time_point(seconds(unix_seconds)); }

void SetAtime(const fs::path& path, std::int64_t unix_seconds) {
  timespec times[2] = {{static_cast<time_t>(unix_seconds), 0}, {0, UTIME_OMIT}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

// ---- Power -------------------------------------------------------------------------------

struct Supply {
  std::string name, type, online, status, scope;  // empty: attribute absent
};

struct PowerCase {
  std::string label;
  std::vector<Supply> supplies;
  bool on_battery;
};

TEST(PowerProbeTest, FakeSysfsTrees) {
  const std::vector<PowerCase> cases = {
      {"no supplies: desktop", {}, false},
      {"laptop on AC",
       {{"AC", "Mains", "1", "", ""}, {"BAT0", "Battery", "", "Charging", ""}},
       false},
      {"laptop unplugged",
       {{"AC", "Mains", "0", "", ""}, {"BAT0", "Battery", "", "Discharging", ""}},
       true},
      {"unplugged, battery reports Unknown",
       {{"AC", "Mains", "0", "", ""}, {"BAT0", "Battery", "", "Unknown", ""}},
       true},
      {"USB-C port offline but AC online",
       {{"ucsi-source-psy-1", "USB", "0", "", ""},
        {"ADP1", "Mains", "1", "", ""},
        {"BAT1", "Battery", "", "Discharging", ""}},
       false},
      {"charging over USB-C",
       {{"ucsi-source-psy-1", "USB", "1", "", ""}, {"BAT1", "Battery", "", "Charging", ""}},
       false},
      {"no mains listed, battery discharging", {{"BAT0", "Battery", "", "Discharging", ""}}, true},
      {"no mains listed, battery full", {{"BAT0", "Battery", "", "Full", ""}}, false},
      {"desktop with a wireless mouse battery",
       {{"hidpp_battery_0", "Battery", "", "Discharging", "Device"}},
       false},
      {"mains offline, only a mouse battery",
       {{"AC", "Mains", "0", "", ""}, {"hidpp_battery_0", "Battery", "", "Discharging", "Device"}},
       false},
  };
  for (const PowerCase& c : cases) {
    testing::TempDir root;
    fs::create_directories(root.path() / "sys/class/power_supply");
    for (const Supply& s : c.supplies) {
      const fs::path dir = root.path() / "sys/class/power_supply" / s.name;
      Write(dir / "type", s.type + "\n");
      if (!s.online.empty()) Write(dir / "online", s.online + "\n");
      if (!s.status.empty()) Write(dir / "status", s.status + "\n");
      if (!s.scope.empty()) Write(dir / "scope", s.scope + "\n");
    }
    PowerState p = ProbePower(root.path());
    EXPECT_EQ(p.on_battery, c.on_battery) << c.label << ": " << p.detail;
    EXPECT_FALSE(p.detail.empty()) << c.label;
  }
}

// ---- Memory ------------------------------------------------------------------------------

TEST(MemInfoTest, ParsesAvailableOrFallsBack) {
  auto modern = ParseMemAvailableMb(
      "MemTotal:       16314624 kB\nMemFree:          912000 kB\nMemAvailable:    8388608 kB\n");
  ASSERT_TRUE(modern);
  EXPECT_EQ(*modern, 8192u);
  auto old = ParseMemAvailableMb(
      "MemTotal: 4096000 kB\nMemFree: 1024 kB\nBuffers: 1024 kB\n"
      "Cached: 2048 kB\n");
  ASSERT_TRUE(old);
  EXPECT_EQ(*old, 4u);
  EXPECT_FALSE(ParseMemAvailableMb("MemTotal: 4096000 kB\n"));
  EXPECT_FALSE(ParseMemAvailableMb(""));
}

// ---- Idle (1): input interrupts ----------------------------------------------------------

std::string Interrupts(std::uint64_t keyboard, std::uint64_t mouse, std::uint64_t disk) {
  return "           CPU0       CPU1\n"
         "  0:         40          0   IO-APIC   2-edge      timer\n"
         "  1:   " +
         std::to_string(keyboard) +
         "  3   IO-APIC   1-edge      i8042\n"
         " 12:   " +
         std::to_string(mouse) +
         "  0   IO-APIC  12-edge      i8042\n"
         " 16:   " +
         std::to_string(disk) +
         "  7   IO-APIC  16-fasteoi   ahci[0000:00:17.0]\n"
         "NMI:          0          0   Non-maskable interrupts\n"
         "ERR:          0\n";
}

TEST(InputInterruptsTest, ParsesOnlyInputLines) {
  auto counts = ParseInputInterrupts(Interrupts(100, 50, 900));
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts["1"], 103u);
  EXPECT_EQ(counts["12"], 50u);
  auto usb = ParseInputInterrupts(
      "  CPU0\n 127:  5  PCI-MSI 327680-edge  xhci_hcd\n 150: 9 IR-IO-APIC 47-fasteoi "
      "i2c_designware.1, idma64.1\n 151: 2 amd_gpio 8 ELAN0001:00 i2c_hid_acpi\n");
  EXPECT_EQ(usb.size(), 2u);
  EXPECT_TRUE(usb.contains("127"));
  EXPECT_TRUE(usb.contains("151"));
  EXPECT_TRUE(ParseInputInterrupts(
                  "  CPU0\n 26:  14  IO-APIC   4-edge  ttyS0\n 28: 0 PCI-MSIX virtio0-config\n")
                  .empty());
}

TEST(InputInterruptsTest, IdleGrowsUntilAnInputCountChanges) {
  InputInterruptTracker t;
  IdleReading first = t.Observe(Interrupts(100, 50, 900), At(1000));
  ASSERT_TRUE(first.available) << first.detail;
  EXPECT_EQ(first.idle_for, seconds(0));  // nothing known before the first sample
  // The disk's interrupts are not user activity.
  IdleReading later = t.Observe(Interrupts(100, 50, 5000), At(1400));
  EXPECT_EQ(later.idle_for, seconds(400));
  IdleReading typed = t.Observe(Interrupts(101, 50, 5000), At(1500));
  EXPECT_EQ(typed.idle_for, seconds(0));
  IdleReading moved = t.Observe(Interrupts(101, 50, 5000), At(1560));
  EXPECT_EQ(moved.idle_for, seconds(60));
  IdleReading mouse = t.Observe(Interrupts(101, 51, 5000), At(1600));
  EXPECT_EQ(mouse.idle_for, seconds(0));
}

TEST(InputInterruptsTest, NotAvailableWithoutInputLines) {
  InputInterruptTracker t;
  IdleReading r = t.Observe("  CPU0\n 26:  14  IO-APIC   4-edge  ttyS0\n", At(1000));
  EXPECT_FALSE(r.available);
  EXPECT_FALSE(r.detail.empty());
}

// ---- Idle (2): terminals -----------------------------------------------------------------

TEST(TerminalIdleTest, NewestAccessTimeOfPtsAndTty) {
  testing::TempDir root;
  Write(root.path() / "dev/pts/0", "");
  Write(root.path() / "dev/pts/3", "");
  Write(root.path() / "dev/pts/ptmx", "");  // the multiplexer is not a terminal
  Write(root.path() / "dev/tty1", "");
  Write(root.path() / "dev/tty", "");    // the controlling-terminal alias is not either
  Write(root.path() / "dev/ttyS0", "");  // nor a serial line
  SetAtime(root.path() / "dev/pts/0", 5000);
  SetAtime(root.path() / "dev/pts/3", 9000);
  SetAtime(root.path() / "dev/tty1", 7000);
  SetAtime(root.path() / "dev/pts/ptmx", 9900);
  SetAtime(root.path() / "dev/tty", 9950);
  SetAtime(root.path() / "dev/ttyS0", 9990);

  IdleReading r = ProbeTerminalIdle(root.path(), At(10000));
  ASSERT_TRUE(r.available) << r.detail;
  EXPECT_EQ(r.idle_for, seconds(1000));
  EXPECT_NE(r.detail.find("pts"), std::string::npos);  // names the terminal: "3"
  EXPECT_NE(r.detail.find("3 terminal"), std::string::npos) << r.detail;

  SetAtime(root.path() / "dev/tty1", 9990);  // someone typed on the console
  EXPECT_EQ(ProbeTerminalIdle(root.path(), At(10000)).idle_for, seconds(10));
  // A clock that went back is never negative idleness.
  EXPECT_EQ(ProbeTerminalIdle(root.path(), At(9000)).idle_for, seconds(0));
}

TEST(TerminalIdleTest, NotAvailableWithoutTerminals) {
  testing::TempDir root;
  Write(root.path() / "dev/pts/ptmx", "");
  IdleReading r = ProbeTerminalIdle(root.path(), At(10000));
  EXPECT_FALSE(r.available);
}

// ---- Idle (3): logind --------------------------------------------------------------------

TEST(LogindTest, ParsesListAndSessions) {
  EXPECT_EQ(
      ParseLoginctlSessionList("     2 1000 alice seat0 tty2\n    c1  120 gdm   seat0 tty1\n\n"),
      (std::vector<std::string>{"2", "c1"}));
  auto s = ParseLoginctlSession("2", "Class=user\nIdleHint=yes\nIdleSinceHint=1700000000000000\n");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->session_class, "user");
  EXPECT_TRUE(s->idle);
  ASSERT_TRUE(s->idle_since);
  EXPECT_EQ(*s->idle_since, At(1700000000));
  auto zero = ParseLoginctlSession("3", "IdleHint=no\nIdleSinceHint=0\nClass=user\n");
  ASSERT_TRUE(zero);
  EXPECT_FALSE(zero->idle_since);
  EXPECT_FALSE(ParseLoginctlSession("4", "Class=user\n"));
  EXPECT_FALSE(ParseLoginctlSession("5", "IdleHint=maybe\n"));
  EXPECT_FALSE(ParseLoginctlSession("6", "IdleHint=yes\nIdleSinceHint=soon\n"));
}

TEST(LogindTest, CombinesUserSessions) {
  const auto now = At(1700000600);
  LogindSession idle{"2", "user", true, At(1700000000)};
  LogindSession idle_later{"5", "user", true, At(1700000300)};
  LogindSession active{"3", "user", false, At(1699990000)};
  LogindSession greeter{"c1", "greeter", false, std::nullopt};

  IdleReading one = CombineLogindSessions({idle, greeter}, now);
  ASSERT_TRUE(one.available);
  EXPECT_EQ(one.idle_for, seconds(600));
  EXPECT_EQ(CombineLogindSessions({idle, idle_later}, now).idle_for, seconds(300));
  EXPECT_EQ(CombineLogindSessions({idle, active}, now).idle_for, seconds(0));
  EXPECT_FALSE(CombineLogindSessions({greeter}, now).available);
}

TEST(LogindTest, ProbeRunsLoginctlOnlyUnderSystemd) {
  testing::TempDir root;
  std::vector<std::vector<std::string>> calls;
  CommandRunner fake = [&](const std::vector<std::string>& argv) -> common::Result<std::string> {
    calls.push_back(argv);
    if (argv.at(1) == "list-sessions") return std::string("  7 1000 alice seat0 tty2\n");
    if (argv.at(1) == "show-session" && argv.at(2) == "7") {
      return std::string("Class=user\nIdleHint=yes\nIdleSinceHint=1700000000000000\n");
    }
    return common::MakeError(common::Errc::kNotFound, "no such session");
  };
  IdleReading off = ProbeLogindIdle(root.path(), fake, At(1700000900));
  EXPECT_FALSE(off.available);
  EXPECT_TRUE(calls.empty());

  fs::create_directories(root.path() / "run/systemd/system");
  IdleReading on = ProbeLogindIdle(root.path(), fake, At(1700000900));
  ASSERT_TRUE(on.available) << on.detail;
  EXPECT_EQ(on.idle_for, seconds(900));
  EXPECT_EQ(calls.size(), 2u);

  EXPECT_FALSE(ProbeLogindIdle(root.path(), CommandRunner{}, At(1700000900)).available);
  CommandRunner failing = [](const std::vector<std::string>&) -> common::Result<std::string> {
    return common::MakeError(common::Errc::kUnavailable, "loginctl: failed");
  };
  EXPECT_FALSE(ProbeLogindIdle(root.path(), failing, At(1700000900)).available);
}

TEST(CommandRunnerTest, RunsRealCommands) {
  CommandRunner run = SpawnCommandRunner(std::chrono::milliseconds(5000));
  auto out = run({"echo", "hello"});
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(*out, "hello\n");
  EXPECT_FALSE(run({"false"}));
  EXPECT_FALSE(run({"ubcp-no-such-command-xyz"}));
  auto slow = SpawnCommandRunner(std::chrono::milliseconds(200))({"sleep", "5"});
  ASSERT_FALSE(slow);
  EXPECT_EQ(slow.error().code, common::Errc::kUnavailable);
  EXPECT_TRUE(CommandInPath("sh"));
  EXPECT_FALSE(CommandInPath("ubcp-no-such-command-xyz"));
}

// ---- Combination and the whole probe -----------------------------------------------------

TEST(CombineIdleTest, ShortestAvailableWins) {
  IdleReading a{IdleMethod::kInputInterrupts, true, seconds(600), ""};
  IdleReading b{IdleMethod::kTerminals, true, seconds(120), ""};
  IdleReading off{IdleMethod::kLogind, false, seconds(0), "n/a"};
  EXPECT_EQ(CombineIdle({a, b, off}), seconds(120));
  EXPECT_EQ(CombineIdle({a, off}), seconds(600));
  EXPECT_EQ(CombineIdle({off}), std::nullopt);
  EXPECT_EQ(CombineIdle({}), std::nullopt);
}

TEST(SystemProbeTest, FakeTree) {
  testing::TempDir root;
  Write(root.path() / "proc/meminfo", "MemTotal: 8000000 kB\nMemAvailable: 2097152 kB\n");
  Write(root.path() / "proc/interrupts", Interrupts(10, 10, 10));
  Write(root.path() / "dev/pts/0", "");
  SetAtime(root.path() / "dev/pts/0", 1000);
  Write(root.path() / "sys/class/power_supply/AC/type", "Mains\n");
  Write(root.path() / "sys/class/power_supply/AC/online", "0\n");
  Write(root.path() / "sys/class/power_supply/BAT0/type", "Battery\n");
  Write(root.path() / "sys/class/power_supply/BAT0/status", "Discharging\n");
  SystemProbe probe(root.path());
  auto first = probe.Take(At(1300));
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->state.memory_available_mb, 2048u);
  EXPECT_TRUE(first->state.on_battery);
  EXPECT_EQ(first->state.user_idle_for, seconds(0));  // first interrupt sample
  auto second = probe.Take(At(1500));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->state.user_idle_for, seconds(200));  // interrupts 200 s, terminal 500 s
  EXPECT_GE(second->state.cpu_count, 1u);

  testing::TempDir empty;
  EXPECT_FALSE(SystemProbe(empty.path()).Take(At(1500)));
}

TEST(SystemProbeTest, RealMachineRuns) {
  CommandRunner run;
  if (CommandInPath("loginctl")) run = SpawnCommandRunner(std::chrono::milliseconds(3000));
  SystemProbe probe("/", run);
  auto first = probe.Take(Clock::now());
  ASSERT_TRUE(first) << first.error().message;
  auto sample = probe.Take(Clock::now());
  ASSERT_TRUE(sample) << sample.error().message;
  EXPECT_GT(sample->state.memory_available_mb, 0u);
  EXPECT_GE(sample->state.cpu_count, 1u);
  // What this machine says, for the record.
  std::cout << "power: " << (sample->power.on_battery ? "battery" : "not battery") << " ("
            << sample->power.detail << ")\n"
            << "memory available: " << sample->state.memory_available_mb << " MiB, cpus "
            << sample->state.cpu_count << ", utc offset " << sample->state.utc_offset.count()
            << " s\n";
  for (const IdleReading& r : sample->idle) {
    std::cout << "idle " << IdleMethodName(r.method) << ": "
              << (r.available ? "available" : "not available") << " - " << r.detail << "\n";
  }
  std::cout << "user idle: "
            << (sample->state.user_idle_for
                    ? std::to_string(sample->state.user_idle_for->count()) + " s"
                    : std::string("cannot be detected"))
            << "\n";
}

}  // namespace
}  // namespace ubcp::client
