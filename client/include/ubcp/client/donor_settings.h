// SPDX-License-Identifier: Apache-2.0
#pragma once
// The donor's own limits on what ubcp-client may use: read from a config file (the `key = value`
// format CLI11 reads, TOML/INI-like, optionally inside a [donor] section) and from command-line
// flags, which win over the file. Every key is the long flag without its "--" (docs/DONOR.md).
// SettingsWatcher re-reads the file while the donor runs; a bad new file never replaces good
// settings.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ubcp/client/time_window.h"
#include "ubcp/common/result.h"

namespace ubcp::client {

struct DonorSettings {
  std::string coordinator;            // https://host:port
  unsigned max_cores = 1;             // 1..hardware threads (default: all of them)
  unsigned cpu_share_percent = 100;   // 1..100: share of the cores that work may use
  std::uint64_t memory_limit_mb = 0;  // MiB; 0: no limit beyond what is available
  bool run_when_idle = false;         // work only while the user has been idle ...
  unsigned idle_minutes = 5;          // ... for this many minutes (1..1440)
  bool run_on_battery = false;
  std::vector<TimeWindow> time_windows;  // empty: at any time
  std::uint64_t daily_download_mb = 0;   // MiB per local day; 0: no limit
  std::uint64_t daily_upload_mb = 0;     // MiB per local day; 0: no limit

  bool operator==(const DonorSettings&) const = default;
};

// Loads the settings from `config_file` (an empty path: no file) and `flags` (argv-style words
// without the program name, e.g. {"--max-cores", "2"}); a flag overrides the same key in the file.
// `hardware_threads` bounds max-cores. kNotFound when the file is missing; kInvalidArgument for
// an unknown key, a malformed or out-of-range value (the message names the key), or a missing
// coordinator.
common::Result<DonorSettings> LoadDonorSettings(const std::filesystem::path& config_file,
                                                const std::vector<std::string>& flags,
                                                unsigned hardware_threads);

// A commented config file with every key at its default (for `docs/DONOR.md` and packaging).
std::string DonorSettingsExample(unsigned hardware_threads);

// Notices changes of the config file by polling its content (cheap: the file is small and limited
// to 64 KiB) and reloads it with the same flags. Not thread-safe: one owner polls it.
class SettingsWatcher {
 public:
  // Loads the settings once; fails as LoadDonorSettings does (a donor must start with good ones).
  static common::Result<SettingsWatcher> Open(std::filesystem::path config_file,
                                              std::vector<std::string> flags,
                                              unsigned hardware_threads);

  // nullopt when the file has not changed since the last poll; the new settings when it changed
  // and loads (they become current()); an error when it changed and does not load, or cannot be
  // read: current() stays as it was and the same bad content is reported only once.
  common::Result<std::optional<DonorSettings>> Poll();

  const DonorSettings& current() const { return current_; }

 private:
  SettingsWatcher(std::filesystem::path config_file, std::vector<std::string> flags,
                  unsigned hardware_threads, DonorSettings current, std::string content)
      : config_file_(std::move(config_file)),
        flags_(std::move(flags)),
        hardware_threads_(hardware_threads),
        current_(std::move(current)),
        last_content_(std::move(content)) {}

  std::filesystem::path config_file_;
  std::vector<std::string> flags_;
  unsigned hardware_threads_;
  DonorSettings current_;
  std::optional<std::string> last_content_;  // nullopt after the file could not be read
};

}  // namespace ubcp::client
