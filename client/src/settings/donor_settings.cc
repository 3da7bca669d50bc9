// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/donor_settings.h"

#include <CLI/CLI.hpp>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;

constexpr std::uintmax_t kMaxConfigBytes = 64 * 1024;
constexpr std::string_view kSection = "donor";

common::Result<std::string> ReadConfig(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return MakeError(ec == std::errc::no_such_file_or_directory ? Errc::kNotFound : Errc::kIo,
                     "config file " + path.string() + ": " + ec.message());
  }
  if (size > kMaxConfigBytes) {
    return MakeError(Errc::kTooLarge, "config file " + path.string() + " is larger than " +
                                          std::to_string(kMaxConfigBytes) + " bytes");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(Errc::kIo, "config file " + path.string() + ": cannot open");
  std::string content(kMaxConfigBytes + 1, '\0');
  in.read(content.data(), static_cast<std::streamsize>(content.size()));
  content.resize(static_cast<std::size_t>(in.gcount()));
  if (content.size() > kMaxConfigBytes) {
    return MakeError(Errc::kTooLarge, "config file " + path.string() + " grew past the limit");
  }
  return content;
}

// CLI11's TOML/INI reader over content already read (so that what was compared by the watcher is
// exactly what is parsed), with the keys of an optional [donor] section lifted to the top level
// and every key checked against the options, so an unknown key is an error that names it.
class DonorConfigFormat : public CLI::ConfigTOML {
 public:
  DonorConfigFormat(std::string content, std::set<std::string> known)
      : content_(std::move(content)), known_(std::move(known)) {}

  std::vector<CLI::ConfigItem> from_config(std::istream& /*ignored*/) const override {
    std::istringstream input(content_);
    std::vector<CLI::ConfigItem> parsed = CLI::ConfigTOML::from_config(input);
    std::vector<CLI::ConfigItem> items;
    for (CLI::ConfigItem& item : parsed) {
      if (!item.parents.empty()) {
        if (item.parents.size() != 1 || item.parents[0] != kSection) {
          throw CLI::ConfigError("unknown section [" + CLI::detail::join(item.parents, ".") +
                                 "] (only [" + std::string(kSection) + "] is read)");
        }
        if (item.name == "++" || item.name == "--") continue;  // section open/close markers
        item.parents.clear();
      }
      if (!known_.contains(item.name)) {
        throw CLI::ConfigError("unknown key '" + item.name + "' in the config file");
      }
      items.push_back(std::move(item));
    }
    return items;
  }

 private:
  std::string content_;
  std::set<std::string> known_;
};

std::string Join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

// `content` is the config file's text when `config_file` is not empty.
common::Result<DonorSettings> Load(const std::filesystem::path& config_file,
                                   const std::string& content,
                                   const std::vector<std::string>& flags,
                                   unsigned hardware_threads) {
  if (hardware_threads == 0) {
    return MakeError(Errc::kInvalidArgument, "hardware thread count must be at least 1");
  }
  DonorSettings s;
  s.max_cores = hardware_threads;
  std::vector<std::string> windows;

  CLI::App app{"donor settings"};
  app.set_help_flag();
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.add_option("--coordinator", s.coordinator, "https://host:port of the coordinator");
  app.add_option("--max-cores", s.max_cores, "most cores work may use")
      ->check(CLI::Range(1u, hardware_threads));
  app.add_option("--cpu-share", s.cpu_share_percent, "percent of the cores work may use")
      ->check(CLI::Range(1u, 100u));
  app.add_option("--memory-limit-mb", s.memory_limit_mb, "MiB work may use (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--run-when-idle", s.run_when_idle, "work only while the user is idle");
  app.add_option("--idle-minutes", s.idle_minutes, "minutes without user activity")
      ->check(CLI::Range(1u, 24u * 60u));
  app.add_flag("--run-on-battery", s.run_on_battery, "also work on battery power");
  app.add_option("--time-windows", windows, "e.g. \"Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00\"");
  app.add_option("--daily-download-mb", s.daily_download_mb, "MiB per day (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--daily-upload-mb", s.daily_upload_mb, "MiB per day (0: no limit)")
      ->check(CLI::NonNegativeNumber);

  if (!config_file.empty()) {
    std::set<std::string> known;
    for (const CLI::Option* opt : app.get_options()) {
      for (const std::string& name : opt->get_lnames()) known.insert(name);
    }
    app.set_config("--config", config_file.string(), "config file", /*config_required=*/true);
    app.config_formatter(std::make_shared<DonorConfigFormat>(content, std::move(known)));
  }

  try {
    // CLI11 parses the reversed words (it pops from the back).
    std::vector<std::string> args(flags.rbegin(), flags.rend());
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    std::string where = config_file.empty() ? "flags" : config_file.string() + " / flags";
    return MakeError(Errc::kInvalidArgument, "donor settings (" + where + "): " + e.what());
  }

  if (s.coordinator.empty()) {
    return MakeError(Errc::kInvalidArgument, "coordinator: missing (https://host:port)");
  }
  if (!s.coordinator.starts_with("https://")) {
    return MakeError(Errc::kInvalidArgument,
                     "coordinator: '" + s.coordinator + "' does not start with https://");
  }
  auto parsed = ParseTimeWindows(Join(windows));
  if (!parsed) {
    return MakeError(Errc::kInvalidArgument, "time-windows: " + parsed.error().message);
  }
  s.time_windows = std::move(*parsed);
  return s;
}

}  // namespace

common::Result<DonorSettings> LoadDonorSettings(const std::filesystem::path& config_file,
                                                const std::vector<std::string>& flags,
                                                unsigned hardware_threads) {
  std::string content;
  if (!config_file.empty()) {
    UBCP_ASSIGN_OR_RETURN(content, ReadConfig(config_file));
  }
  return Load(config_file, content, flags, hardware_threads);
}

std::string DonorSettingsExample(unsigned hardware_threads) {
  return "# ubcp-client donor settings; every key is also a flag (--key value), which wins.\n"
         "# This file is re-read while the client runs; a bad edit is reported and ignored.\n"
         "[donor]\n"
         "coordinator = \"https://ubcp.example.org:8443\"\n"
         "max-cores = " +
         std::to_string(hardware_threads) +
         "          # 1..hardware threads\n"
         "cpu-share = 100         # percent of the cores, 1..100\n"
         "memory-limit-mb = 0     # MiB, 0: no limit\n"
         "run-when-idle = false\n"
         "idle-minutes = 5        # 1..1440\n"
         "run-on-battery = false\n"
         "time-windows = \"\"       # e.g. \"Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00\"; empty: "
         "always\n"
         "daily-download-mb = 0   # MiB per local day, 0: no limit\n"
         "daily-upload-mb = 0     # MiB per local day, 0: no limit\n";
}

common::Result<SettingsWatcher> SettingsWatcher::Open(std::filesystem::path config_file,
                                                      std::vector<std::string> flags,
                                                      unsigned hardware_threads) {
  UBCP_ASSIGN_OR_RETURN(std::string content, ReadConfig(config_file));
  UBCP_ASSIGN_OR_RETURN(DonorSettings settings,
                        Load(config_file, content, flags, hardware_threads));
  return SettingsWatcher(std::move(config_file), std::move(flags), hardware_threads,
                         std::move(settings), std::move(content));
}

common::Result<std::optional<DonorSettings>> SettingsWatcher::Poll() {
  auto content = ReadConfig(config_file_);
  if (!content) {
    // Reported once; the next successful read counts as a change.
    if (!last_content_) return std::optional<DonorSettings>{};
    last_content_.reset();
    return MakeError(content.error().code,
                     content.error().message + " (keeping the previous settings)");
  }
  if (last_content_ == *content) return std::optional<DonorSettings>{};
  last_content_ = *content;
  auto loaded = Load(config_file_, *content, flags_, hardware_threads_);
  if (!loaded) {
    return MakeError(loaded.error().code,
                     loaded.error().message + " (keeping the previous settings)");
  }
  current_ = *loaded;
  return std::optional<DonorSettings>(std::move(*loaded));
}

}  // namespace ubcp::client
