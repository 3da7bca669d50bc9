// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/system_probe.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>
#include <thread>

#include "ubcp/common/atomic_file.h"

extern char** environ;

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;
namespace fs = std::filesystem;

constexpr std::size_t kMaxProcFileBytes = 1 << 20;
constexpr std::size_t kMaxCommandOutput = 1 << 20;

// The first line of a small sysfs attribute, trimmed; nullopt when it cannot be read.
std::optional<std::string> ReadAttribute(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

common::Result<std::string> ReadSmallFile(const fs::path& path) {
  return common::ReadFileUpTo(path, kMaxProcFileBytes);
}

std::vector<std::string_view> SplitWords(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    std::size_t start = i;
    while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

template <class T>
std::optional<T> ParseNumber(std::string_view s) {
  T value{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

std::chrono::seconds Since(Clock::time_point then, Clock::time_point now) {
  auto d = std::chrono::duration_cast<std::chrono::seconds>(now - then);
  return std::max(d, std::chrono::seconds{0});
}

std::string Seconds(std::chrono::seconds s) { return std::to_string(s.count()) + " s"; }

}  // namespace

// ---- Power -------------------------------------------------------------------------------

PowerState ProbePower(const fs::path& root) {
  const fs::path dir = root / "sys/class/power_supply";
  std::error_code ec;
  bool any_supply = false, external_exists = false;
  std::string external_online, battery_discharging, battery_seen;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    auto type = ReadAttribute(entry.path() / "type");
    if (!type) continue;
    any_supply = true;
    if (*type == "Mains" || *type == "USB") {
      external_exists = true;
      if (ReadAttribute(entry.path() / "online").value_or("0") == "1") external_online = name;
    } else if (*type == "Battery") {
      // Peripherals (a wireless mouse's battery) report scope "Device"; only the system's own
      // battery says whether the machine runs on it.
      if (ReadAttribute(entry.path() / "scope").value_or("System") == "Device") continue;
      auto status = ReadAttribute(entry.path() / "status").value_or("Unknown");
      battery_seen = name + " " + status;
      if (status == "Discharging") battery_discharging = name;
    }
  }
  if (!any_supply) return {false, "no power supplies (desktop or virtual machine)"};
  if (!external_online.empty()) return {false, external_online + " online"};
  if (battery_seen.empty()) return {false, "no system battery"};
  if (external_exists) {
    return {true, battery_seen + ", external supplies offline"};
  }
  if (!battery_discharging.empty()) {
    return {true, battery_seen + ", no external supply listed"};
  }
  return {false, battery_seen + ", not discharging"};
}

// ---- Memory and CPUs ---------------------------------------------------------------------

common::Result<std::uint64_t> ParseMemAvailableMb(std::string_view meminfo) {
  std::map<std::string, std::uint64_t, std::less<>> kib;
  for (std::string_view line : SplitLines(meminfo)) {
    auto words = SplitWords(line);
    if (words.size() < 2 || words[0].back() != ':') continue;
    auto value = ParseNumber<std::uint64_t>(words[1]);
    if (value) kib[std::string(words[0].substr(0, words[0].size() - 1))] = *value;
  }
  if (auto it = kib.find("MemAvailable"); it != kib.end()) return it->second / 1024;
  if (kib.contains("MemFree") && kib.contains("Buffers") && kib.contains("Cached")) {
    return (kib["MemFree"] + kib["Buffers"] + kib["Cached"]) / 1024;
  }
  return MakeError(Errc::kMalformed, "meminfo: neither MemAvailable nor MemFree/Buffers/Cached");
}

unsigned UsableCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// ---- Idleness ----------------------------------------------------------------------------

std::string_view IdleMethodName(IdleMethod method) {
  switch (method) {
    case IdleMethod::kInputInterrupts:
      return "input interrupts";
    case IdleMethod::kTerminals:
      return "terminals";
    case IdleMethod::kLogind:
      return "logind";
  }
  return "unknown";
}

std::map<std::string, std::uint64_t> ParseInputInterrupts(std::string_view interrupts) {
  static constexpr std::string_view kInputNames[] = {"i8042", "hid",  "xhci",
                                                     "ehci",  "ohci", "uhci"};
  std::map<std::string, std::uint64_t> counts;
  auto lines = SplitLines(interrupts);
  if (lines.empty()) return counts;
  const std::size_t cpus = SplitWords(lines[0]).size();
  for (std::size_t i = 1; i < lines.size(); ++i) {
    auto words = SplitWords(lines[i]);
    if (words.empty() || words[0].back() != ':') continue;
    std::uint64_t total = 0;
    std::size_t w = 1;
    for (; w < words.size() && w <= cpus; ++w) {
      auto n = ParseNumber<std::uint64_t>(words[w]);
      if (!n) break;
      total += *n;
    }
    std::string description;
    for (; w < words.size(); ++w) {
      for (char c : words[w])
        description += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      description += ' ';
    }
    bool input =
        std::any_of(std::begin(kInputNames), std::end(kInputNames),
                    [&](std::string_view n) { return description.find(n) != std::string::npos; });
    if (input) counts[std::string(words[0].substr(0, words[0].size() - 1))] = total;
  }
  return counts;
}

IdleReading InputInterruptTracker::Observe(std::string_view interrupts, Clock::time_point now) {
  IdleReading r;
  r.method = IdleMethod::kInputInterrupts;
  auto counts = ParseInputInterrupts(interrupts);
  if (counts.empty()) {
    last_counts_.clear();
    last_activity_.reset();
    r.detail = "no keyboard/mouse/USB interrupt lines in /proc/interrupts";
    return r;
  }
  if (!last_activity_ || counts != last_counts_) last_activity_ = now;
  last_counts_ = std::move(counts);
  r.available = true;
  r.idle_for = Since(*last_activity_, now);
  r.detail = std::to_string(last_counts_.size()) + " input IRQ line(s), unchanged for " +
             Seconds(r.idle_for);
  return r;
}

IdleReading ProbeTerminalIdle(const fs::path& root, Clock::time_point now) {
  IdleReading r;
  r.method = IdleMethod::kTerminals;
  std::optional<Clock::time_point> newest;
  std::string newest_name;
  int count = 0;
  auto consider = [&](const fs::path& path, const std::string& label) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return;
    ++count;
    auto atime = Clock::time_point(std::chrono::duration_cast<Clock::duration>(
        std::chrono::seconds(st.st_atim.tv_sec) + std::chrono::nanoseconds(st.st_atim.tv_nsec)));
    if (!newest || atime > *newest) {
      newest = atime;
      newest_name = label;
    }
  };
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root / "dev/pts", ec)) {
    std::string name = e.path().filename().string();
    if (AllDigits(name)) consider(e.path(), "pts/" + name);
  }
  for (const auto& e : fs::directory_iterator(root / "dev", ec)) {
    std::string name = e.path().filename().string();
    if (name.starts_with("tty") && AllDigits(name.substr(3))) consider(e.path(), name);
  }
  if (!newest) {
    r.detail = "no /dev/pts/N or /dev/ttyN terminals";
    return r;
  }
  r.available = true;
  r.idle_for = Since(*newest, now);
  r.detail = std::to_string(count) + " terminal(s), newest input on " + newest_name + " " +
             Seconds(r.idle_for) + " ago";
  return r;
}

std::vector<std::string> ParseLoginctlSessionList(std::string_view text) {
  std::vector<std::string> ids;
  for (std::string_view line : SplitLines(text)) {
    auto words = SplitWords(line);
    if (!words.empty()) ids.emplace_back(words[0]);
  }
  return ids;
}

common::Result<LogindSession> ParseLoginctlSession(std::string_view id, std::string_view text) {
  LogindSession s;
  s.id = std::string(id);
  bool have_hint = false;
  for (std::string_view line : SplitLines(text)) {
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "Class") {
      s.session_class = std::string(value);
    } else if (key == "IdleHint") {
      if (value != "yes" && value != "no") {
        return MakeError(Errc::kMalformed, "loginctl: IdleHint=" + std::string(value));
      }
      s.idle = value == "yes";
      have_hint = true;
    } else if (key == "IdleSinceHint") {
      auto us = ParseNumber<std::int64_t>(value);
      if (!us) return MakeError(Errc::kMalformed, "loginctl: IdleSinceHint=" + std::string(value));
      if (*us > 0) {
        s.idle_since = Clock::time_point(
            std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(*us)));
      }
    }
  }
  if (!have_hint) return MakeError(Errc::kMalformed, "loginctl: no IdleHint for session " + s.id);
  return s;
}

IdleReading CombineLogindSessions(const std::vector<LogindSession>& sessions,
                                  Clock::time_point now) {
  IdleReading r;
  r.method = IdleMethod::kLogind;
  std::optional<std::chrono::seconds> idle_for;
  int users = 0;
  for (const LogindSession& s : sessions) {
    if (s.session_class != "user") continue;
    ++users;
    // Idle without a time: idle since an unknown moment, counted as just now.
    std::chrono::seconds d{0};
    if (s.idle && s.idle_since) d = Since(*s.idle_since, now);
    idle_for = idle_for ? std::min(*idle_for, d) : d;
  }
  if (!idle_for) {
    r.detail = "no user session in logind";
    return r;
  }
  r.available = true;
  r.idle_for = *idle_for;
  r.detail = std::to_string(users) + " user session(s), idle for " + Seconds(r.idle_for);
  return r;
}

CommandRunner SpawnCommandRunner(std::chrono::milliseconds timeout) {
  return [timeout](const std::vector<std::string>& argv) -> common::Result<std::string> {
    if (argv.empty()) return MakeError(Errc::kInvalidArgument, "empty command");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return MakeError(Errc::kIo, "pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      return MakeError(Errc::kNotFound, argv[0] + ": cannot start");
    }
    std::string out;
    bool too_long = false, too_much = false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        too_long = true;
        break;
      }
      pollfd p{fds[0], POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) {
        too_long = ready == 0;
        break;
      }
      ssize_t n = ::read(fds[0], buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
      if (out.size() > kMaxCommandOutput) {
        too_much = true;
        break;
      }
    }
    ::close(fds[0]);
    if (too_long || too_much) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (too_long) return MakeError(Errc::kUnavailable, argv[0] + ": timed out");
    if (too_much) return MakeError(Errc::kTooLarge, argv[0] + ": too much output");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return MakeError(Errc::kUnavailable,
                       argv[0] + ": failed (status " + std::to_string(status) + ")");
    }
    return out;
  };
}

bool CommandInPath(std::string_view name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view dirs(path);
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string_view::npos) end = dirs.size();
    fs::path candidate = fs::path(std::string(dirs.substr(start, end - start))) / name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

IdleReading ProbeLogindIdle(const fs::path& root, const CommandRunner& run, Clock::time_point now) {
  IdleReading r;
  r.method = IdleMethod::kLogind;
  std::error_code ec;
  if (!run) {
    r.detail = "loginctl not installed";
    return r;
  }
  // loginctl without a running systemd waits for D-Bus and fails; don't ask then.
  if (!fs::is_directory(root / "run/systemd/system", ec)) {
    r.detail = "systemd is not running (no /run/systemd/system)";
    return r;
  }
  auto list = run({"loginctl", "list-sessions", "--no-legend"});
  if (!list) {
    r.detail = list.error().message;
    return r;
  }
  std::vector<LogindSession> sessions;
  for (const std::string& id : ParseLoginctlSessionList(*list)) {
    auto text = run(
        {"loginctl", "show-session", id, "-p", "Class", "-p", "IdleHint", "-p", "IdleSinceHint"});
    if (!text) continue;  // the session ended between the two calls
    auto session = ParseLoginctlSession(id, *text);
    if (!session) {
      r.detail = session.error().message;
      return r;
    }
    sessions.push_back(std::move(*session));
  }
  return CombineLogindSessions(sessions, now);
}

std::optional<std::chrono::seconds> CombineIdle(const std::vector<IdleReading>& readings) {
  std::optional<std::chrono::seconds> idle;
  for (const IdleReading& r : readings) {
    if (!r.available) continue;
    idle = idle ? std::min(*idle, r.idle_for) : r.idle_for;
  }
  return idle;
}

// ---- Everything together -----------------------------------------------------------------

std::chrono::seconds LocalUtcOffset(Clock::time_point now) {
  std::time_t t = Clock::to_time_t(now);
  std::tm local{};
  if (localtime_r(&t, &local) == nullptr) return std::chrono::seconds{0};
  return std::chrono::seconds{local.tm_gmtoff};
}

common::Result<SystemProbe::Sample> SystemProbe::Take(Clock::time_point now) {
  Sample sample;
  UBCP_ASSIGN_OR_RETURN(std::string meminfo, ReadSmallFile(root_ / "proc/meminfo"));
  UBCP_ASSIGN_OR_RETURN(sample.state.memory_available_mb, ParseMemAvailableMb(meminfo));
  sample.power = ProbePower(root_);
  sample.state.on_battery = sample.power.on_battery;

  auto interrupts = ReadSmallFile(root_ / "proc/interrupts");
  if (interrupts) {
    sample.idle.push_back(interrupts_.Observe(*interrupts, now));
  } else {
    sample.idle.push_back({IdleMethod::kInputInterrupts, false, {}, interrupts.error().message});
  }
  sample.idle.push_back(ProbeTerminalIdle(root_, now));
  sample.idle.push_back(ProbeLogindIdle(root_, run_command_, now));
  sample.state.user_idle_for = CombineIdle(sample.idle);
  sample.state.cpu_count = UsableCpuCount();
  sample.state.utc_offset = LocalUtcOffset(now);
  return sample;
}

}  // namespace ubcp::client
