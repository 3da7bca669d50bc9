// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the donor's machine is doing, for the run policy (run_policy.h): power source, user
// idleness, available memory, usable CPUs. Every file is read under an injectable root (tests
// use a fake /sys, /proc and /dev tree) and the one command (loginctl) goes through an
// injectable runner. How each idle method works and what it misses: docs/DONOR.md.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::client {

using Clock = std::chrono::system_clock;

// ---- Power -------------------------------------------------------------------------------

struct PowerState {
  bool on_battery = false;
  std::string detail;  // e.g. "AC online", "BAT0 Discharging, no external supply online"
};

// Reads <root>/sys/class/power_supply/*/{type,online,status,scope}. On battery when a system
// battery exists (scope "Device", e.g. a wireless mouse, is ignored), no Mains/USB supply is
// online, and either an external supply exists (offline) or the battery is Discharging. No
// supplies at all (a desktop or a VM) is not on battery.
PowerState ProbePower(const std::filesystem::path& root);

// ---- Memory and CPUs ---------------------------------------------------------------------

// MemAvailable of a /proc/meminfo text in MiB (MemFree + Buffers + Cached on kernels before
// 3.14). kMalformed when neither is there.
common::Result<std::uint64_t> ParseMemAvailableMb(std::string_view meminfo);

// The CPUs this process may run on (sched_getaffinity), else the hardware thread count; >= 1.
unsigned UsableCpuCount();

// ---- Idleness ----------------------------------------------------------------------------

enum class IdleMethod { kInputInterrupts, kTerminals, kLogind };
std::string_view IdleMethodName(IdleMethod method);

struct IdleReading {
  IdleMethod method = IdleMethod::kInputInterrupts;
  bool available = false;            // false: the method sees nothing on this machine
  std::chrono::seconds idle_for{0};  // since the last activity it saw (when available)
  std::string detail;                // what it saw, or why it is not available
};

// (1) Keyboard and mouse interrupts: the counts of /proc/interrupts lines whose description
// names an input device (i8042, *hid*) or a USB host controller (xhci/ehci/ohci/uhci, which
// also counts other USB traffic: that errs towards "active"). Activity = a count changed
// between two samples, so the first sample counts as activity. Not thread-safe.
class InputInterruptTracker {
 public:
  // `interrupts` is the text of /proc/interrupts taken at `now`.
  IdleReading Observe(std::string_view interrupts, Clock::time_point now);

 private:
  std::map<std::string, std::uint64_t> last_counts_;
  std::optional<Clock::time_point> last_activity_;
};

// The IRQ lines of a /proc/interrupts text that belong to input devices, with their total
// count over all CPUs, keyed by IRQ number/name ("1", "12", "NMI"...).
std::map<std::string, std::uint64_t> ParseInputInterrupts(std::string_view interrupts);

// (2) Terminal input: the newest access time of <root>/dev/pts/<n> and <root>/dev/tty<n>,
// which the tty layer updates when a user types (what `w` shows as IDLE). Not available when no
// such device exists.
IdleReading ProbeTerminalIdle(const std::filesystem::path& root, Clock::time_point now);

// (3) systemd-logind: IdleHint / IdleSinceHint of each user session, as printed by
// `loginctl show-session <id> -p Class -p IdleHint -p IdleSinceHint`. A session that is not
// idle makes the user active; the user is idle since the latest IdleSinceHint.
struct LogindSession {
  std::string id;
  std::string session_class;  // "user", "greeter", "manager", ...
  bool idle = false;
  std::optional<Clock::time_point> idle_since;  // nullopt when 0 / absent
};
// Session ids from `loginctl list-sessions --no-legend` (first column of each line).
std::vector<std::string> ParseLoginctlSessionList(std::string_view text);
common::Result<LogindSession> ParseLoginctlSession(std::string_view id, std::string_view text);
// Combines the sessions of class "user": not available when there is none.
IdleReading CombineLogindSessions(const std::vector<LogindSession>& sessions,
                                  Clock::time_point now);

// Runs argv (argv[0] searched in PATH) and returns its standard output, or an error when it
// cannot start, fails, runs too long or prints too much.
using CommandRunner =
    std::function<common::Result<std::string>(const std::vector<std::string>& argv)>;
// The real runner: posix_spawnp, stdout limited to 1 MiB, killed after `timeout`.
CommandRunner SpawnCommandRunner(std::chrono::milliseconds timeout);
// Whether `name` is an executable in PATH.
bool CommandInPath(std::string_view name);

// Asks logind through `run` when <root>/run/systemd/system exists (systemd is running);
// not available otherwise or when loginctl fails.
IdleReading ProbeLogindIdle(const std::filesystem::path& root, const CommandRunner& run,
                            Clock::time_point now);

// The user's idle time: the shortest idle_for among available methods ("idle when every
// available method says idle"); nullopt when no method is available.
std::optional<std::chrono::seconds> CombineIdle(const std::vector<IdleReading>& readings);

// ---- Everything together -----------------------------------------------------------------

struct SystemState {
  bool on_battery = false;
  std::optional<std::chrono::seconds> user_idle_for;  // nullopt: cannot be detected here
  std::uint64_t memory_available_mb = 0;
  unsigned cpu_count = 1;
  std::chrono::seconds utc_offset{0};  // local time = UTC + utc_offset (at sampling time)
};

// Samples every probe. Keeps the interrupt counts between samples, so one object is used for
// the donor's lifetime. Not thread-safe.
class SystemProbe {
 public:
  // `run_command` may be empty: the logind method is then not available.
  explicit SystemProbe(std::filesystem::path root = "/", CommandRunner run_command = {})
      : root_(std::move(root)), run_command_(std::move(run_command)) {}

  struct Sample {
    SystemState state;
    PowerState power;
    std::vector<IdleReading> idle;
  };
  // kIo / kMalformed when <root>/proc/meminfo cannot be read; other probes degrade to
  // "not available" instead of failing.
  common::Result<Sample> Take(Clock::time_point now);

 private:
  std::filesystem::path root_;
  CommandRunner run_command_;
  InputInterruptTracker interrupts_;
};

// The local UTC offset at `now` (localtime_r: TZ and /etc/localtime).
std::chrono::seconds LocalUtcOffset(Clock::time_point now);

}  // namespace ubcp::client
