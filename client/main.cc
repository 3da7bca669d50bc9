// SPDX-License-Identifier: Apache-2.0
// ubcp-client: the donor's client, a light daemon that never loads libtorch. Parses options and
// wires state, trust, registration and the work loop together; every unit (and the benchmark)
// runs in a supervised `ubcp-worker` process (worker_executor.h).

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "ubcp/client/control_socket.h"
#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/donor_settings.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/https_client.h"
#include "ubcp/client/runner.h"
#include "ubcp/client/worker_executor.h"
#include "ubcp/client/worker_protocol.h"

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int Fail(const ubcp::common::Error& e) {
  std::cerr << "ubcp-client: " << e.ToString() << "\n";
  return 1;
}

bool IsControlCommand(std::string_view arg) {
  return arg == "status" || arg == "pause" || arg == "resume" || arg == "finish";
}

// The donor settings given as flags (or in the --config file), kept as text and handed to
// LoadDonorSettings, which checks them and lets them override the settings file.
class DonorFlags {
 public:
  void AddOption(CLI::App& app, const std::string& name, const std::string& help) {
    options_.push_back({name, app.add_option("--" + name, values_[name], help)});
  }
  void AddFlag(CLI::App& app, const std::string& name, const std::string& help) {
    options_.push_back({name, app.add_flag("--" + name, flags_[name], help)});
  }
  // The words given, e.g. {"--max-cores=2", "--run-on-battery=true"}.
  std::vector<std::string> Words() const {
    std::vector<std::string> words;
    for (const auto& [name, option] : options_) {
      if (option->count() == 0) continue;
      if (auto flag = flags_.find(name); flag != flags_.end()) {
        words.push_back("--" + name + (flag->second ? "=true" : "=false"));
      } else {
        words.push_back("--" + name + "=" + values_.at(name));
      }
    }
    return words;
  }
  bool Given(const std::string& name) const {
    for (const auto& [n, option] : options_) {
      if (n == name) return option->count() > 0;
    }
    return false;
  }

 private:
  std::vector<std::pair<std::string, CLI::Option*>> options_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> flags_;
};

// `ubcp-client status|pause|resume|finish [--state DIR]`: one request to the running client's
// control socket. Exit 0 ok, 1 error, 2 no client running.
int ControlMain(int argc, char** argv) {
  using namespace ubcp;
  const std::string command = argv[1];
  CLI::App app{"Controls the ubcp-client running on a state directory"};
  app.name("ubcp-client " + command);
  std::filesystem::path state_dir;
  bool raw_json = false;
  app.add_option("--state", state_dir, "the running client's state directory (or $UBCP_STATE)")
      ->envname("UBCP_STATE")
      ->required();
  app.add_flag("--json", raw_json, "print the client's answer as JSON");
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const std::filesystem::path socket = client::ControlSocketPath(state_dir);
  auto answer = client::SendControl(socket, command);
  if (!answer) {
    if (answer.error().code == common::Errc::kUnavailable) {
      std::cerr << "ubcp-client: no running client answers on " << socket.string()
                << " (start one with --state " << state_dir.string() << ")\n";
      return 2;
    }
    return Fail(answer.error());
  }
  const boost::json::value* ok = answer->if_contains("ok");
  if (ok == nullptr || !ok->is_bool() || !ok->get_bool()) {
    const boost::json::value* error = answer->if_contains("error");
    std::cerr << "ubcp-client: " << command << " refused: "
              << (error != nullptr && error->is_string() ? std::string(error->get_string())
                                                         : std::string("no reason given"))
              << "\n";
    return 1;
  }
  if (raw_json) {
    std::cout << boost::json::serialize(*answer) << "\n";
  } else if (command == "status") {
    std::cout << client::FormatStatus(*answer) << "\n";
  } else if (command == "pause") {
    std::cout << "paused: the unit in progress is stopped after a checkpoint and no new unit is "
                 "leased; resume continues it\n";
  } else if (command == "resume") {
    std::cout << "resumed\n";
  } else {
    std::cout << "finishing: the client stops after the current unit\n";
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace ubcp;
  if (argc > 1 && IsControlCommand(argv[1])) return ControlMain(argc, argv);
  // First, so that a SIGTERM at any moment (a service manager stopping a client that has just
  // started) ends the client cleanly: the work loop sees it before leasing anything.
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (auto s = common::InitCrypto(); !s) return Fail(s.error());
  CLI::App app{"UBCP donor client: runs signed training and evaluation work units"};
  app.set_config("--config", "", "read options from this INI/TOML file (flags override it)");
  std::string url, coordinator_key_hex, name, account_token, log_level = "info";
  std::filesystem::path ca_file, state_dir;
  bool insecure = false, tofu = false;
  client::RunnerOptions options;
  double bench_seconds = 1.0;
  app.add_option("--coordinator", url, "https://host:port of the coordinator")->required();
  app.add_option("--account-token", account_token,
                 "the donor account's token, needed once to attach this host to the account "
                 "(or $UBCP_ACCOUNT_TOKEN)")
      ->envname("UBCP_ACCOUNT_TOKEN");
  app.add_option("--state", state_dir, "state directory (key, registration, blob cache)")
      ->required();
  app.add_option("--ca-file", ca_file, "PEM certificate(s) to trust for TLS");
  app.add_flag("--insecure-tls", insecure,
               "do not verify the TLS certificate (work is still signature-checked)");
  app.add_option("--coordinator-key", coordinator_key_hex,
                 "hex Ed25519 signing key of the coordinator, given at enrollment");
  app.add_flag("--trust-on-first-use", tofu,
               "trust the key the coordinator presents the first time (prints its fingerprint)");
  std::string root_key_hex;
  app.add_option("--root-key", root_key_hex,
                 "pin the coordinator's offline root key (hex): trust the online keys it "
                 "certifies, following rotations");
  app.add_option("--name", name, "a label for this host");
  std::string adversary_mode = "honest";
  app.add_option("--adversary", adversary_mode,
                 "robustness experiments only: sign_flip, scale, noise, zeros, label_flip or "
                 "stale make this host's updates hostile; replay, wrong_version or forged make "
                 "its results break the protocol, to be refused (default: honest)");
  app.add_option("--adversary-scale", options.adversary.scale, "factor for the adversary")
      ->check(CLI::PositiveNumber);
  app.add_option("--units", options.max_units, "stop after this many units (0: run forever)");
  CLI::Option* threads_option =
      app.add_option("--threads", options.threads, "same as --max-cores (kept for old scripts)")
          ->check(CLI::Range(1, 256));
  std::filesystem::path settings_file;
  app.add_option("--settings", settings_file,
                 "donor settings file, re-read while the client runs (default: "
                 "<state>/settings.conf when it exists; see docs/DONOR.md)");
  DonorFlags donor;
  donor.AddOption(app, "max-cores", "most cores work may use (default: all)");
  donor.AddOption(app, "cpu-share", "percent of the cores work may use (1..100, default 100)");
  donor.AddOption(app, "memory-limit-mb",
                  "MiB a unit's worker may use (0: no limit); a worker above it is stopped");
  donor.AddFlag(app, "run-when-idle", "work only while the user is idle");
  donor.AddOption(app, "idle-minutes", "minutes without user activity (default 5)");
  donor.AddFlag(app, "run-on-battery", "also work on battery power");
  donor.AddOption(app, "time-windows", "e.g. \"Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00\"");
  donor.AddOption(app, "daily-download-mb", "MiB per local day (0: no limit)");
  donor.AddOption(app, "daily-upload-mb", "MiB per local day (0: no limit)");
  app.add_option("--policy-poll", options.policy_poll_s,
                 "seconds between looks at the settings and the machine while not allowed to work")
      ->check(CLI::PositiveNumber);
  app.add_option("--idle-exit", options.max_idle_polls,
                 "exit after this many empty work polls in a row (0: never)");
  app.add_option("--poll", options.idle_poll_s, "seconds between polls when there is no work");
  app.add_option("--bench-seconds", bench_seconds, "benchmark duration at registration");
  client::WorkerExecutorOptions worker;
  app.add_option("--worker", worker.worker,
                 "the ubcp-worker program that runs units (default: next to ubcp-client, else "
                 "on PATH)");
  std::uint64_t blob_cache_mb = options.blob_cache_bytes >> 20;
  app.add_option("--blob-cache-mb", blob_cache_mb,
                 "MiB of downloaded blobs kept for later units (<state>/blobs), least recently "
                 "used removed first; the blobs of units in hand are always kept")
      ->capture_default_str();
  app.add_option("--checkpoint-every", options.checkpoint_every,
                 "also checkpoint a fine-tune unit every N steps (0: only by time)")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--checkpoint-seconds", options.checkpoint_seconds,
                 "checkpoint a fine-tune unit at most this many seconds apart (default 30; 0: "
                 "only by steps)")
      ->check(CLI::Range(0.0, 86400.0));
  common::DonorProfile profile;
  bool show_contribution = false;
  app.add_option("--public-name", profile.public_name,
                 "list this host on the public leaderboard under this name (opt-in)");
  app.add_option("--team", profile.team, "the team shown on the leaderboard");
  app.add_flag("--show-contribution", show_contribution,
               "print this host's validated contribution and exit");
  app.add_option("--log-level", log_level);
  bool no_control = false;
  app.add_flag("--no-control", no_control,
               "do not open the control socket (<state>/control.sock) that `ubcp-client "
               "status|pause|resume|finish` use");
  app.footer(
      "Control a running client: ubcp-client status|pause|resume|finish --state DIR [--json]");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  auto adversary = client::ParseAdversaryMode(adversary_mode);
  if (!adversary) return Fail(adversary.error());
  options.adversary.mode = *adversary;
  if (options.adversary.mode != client::AdversaryMode::kHonest) {
    spdlog::warn("ADVERSARY MODE '{}': this host returns hostile updates", adversary_mode);
  }
  if (!name.empty()) spdlog::set_pattern("[%H:%M:%S.%e] [" + name + "] [%l] %v");
  options.blob_cache_bytes = blob_cache_mb << 20;
  if (worker.worker.empty()) worker.worker = client::DefaultWorkerPath();
  {
    std::error_code ec;
    worker.root = std::filesystem::absolute(state_dir, ec);
    if (ec) return Fail(common::MakeError(common::Errc::kIo, "state directory: " + ec.message()));
  }
  options.executor = client::MakeWorkerExecutor(worker);

  auto endpoint = client::ParseCoordinatorUrl(url);
  if (!endpoint) return Fail(endpoint.error());
  if (ca_file.empty() && !insecure) {
    return Fail(
        common::MakeError(common::Errc::kInvalidArgument, "pass --ca-file (or --insecure-tls)"));
  }
  auto http = client::HttpsClient::Create({*endpoint, ca_file, insecure});
  if (!http) return Fail(http.error());
  client::CoordinatorApi api(**http);

  auto state = client::HostState::Open(state_dir);
  if (!state) return Fail(state.error());

  // The donor's limits: checked now (a donor starts with good settings), re-read before each
  // lease. Flags win over the file and do not change while running.
  if (settings_file.empty() && std::filesystem::exists(state_dir / "settings.conf")) {
    settings_file = state_dir / "settings.conf";
  }
  std::vector<std::string> donor_words = donor.Words();
  donor_words.push_back("--coordinator=" + url);
  if (threads_option->count() > 0 && !donor.Given("max-cores")) {
    donor_words.push_back("--max-cores=" + std::to_string(options.threads));
  }
  const unsigned hardware_threads = std::max(1u, std::thread::hardware_concurrency());
  std::optional<client::SettingsWatcher> settings;
  if (settings_file.empty()) {
    // Flags only: nothing to watch.
    auto fixed = client::LoadDonorSettings({}, donor_words, hardware_threads);
    if (!fixed) return Fail(fixed.error());
    options.fixed_settings = std::move(*fixed);
  } else {
    auto watcher = client::SettingsWatcher::Open(settings_file, donor_words, hardware_threads);
    if (!watcher) return Fail(watcher.error());
    settings.emplace(std::move(*watcher));
    options.settings = &*settings;
    spdlog::info("donor settings {} (re-read while running)", settings_file.string());
  }
  auto key = state->LoadOrCreateKey();
  if (!key) return Fail(key.error());
  spdlog::info("host key {}", common::Fingerprint(key->public_key()));

  client::TrustOptions trust;
  trust.trust_on_first_use = tofu;
  if (!coordinator_key_hex.empty()) {
    auto k = common::PublicKey::FromHex(coordinator_key_hex);
    if (!k) return Fail(k.error());
    trust.coordinator_key = *k;
  }
  const auto now_s = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  std::optional<common::TrustedKeys> rooted;
  std::optional<common::PublicKey> coordinator_key;
  if (!root_key_hex.empty()) {
    auto root = common::PublicKey::FromHex(root_key_hex);
    if (!root) return Fail(root.error());
    auto trusted = client::RefreshRootedTrust(api, *state, *root, now_s());
    if (!trusted) return Fail(trusted.error());
    rooted = *trusted;
    spdlog::info("root key {}: coordinator key version {} {}", common::Fingerprint(*root),
                 rooted->version, common::Fingerprint(*rooted->online));
  } else {
    auto key = client::EstablishTrust(api, *state, trust);
    if (!key) return Fail(key.error());
    coordinator_key = *key;
    spdlog::info("coordinator key {}", common::Fingerprint(*coordinator_key));
  }

  api.set_account_token(account_token);
  auto registration = client::EnsureRegistered(api, *state, *key, name, [&] {
    return client::RunWorkerBenchmark(
        worker, bench_seconds,
        threads_option->count() > 0 ? options.threads : static_cast<int>(hardware_threads));
  });
  if (!registration) {
    if (registration.error().code == common::Errc::kUnauthorized && account_token.empty()) {
      // The most common first-run mistake: a host attaches to a donor account.
      return Fail(common::MakeError(
          common::Errc::kUnauthorized,
          registration.error().message +
              " (a new host registers with its donor account's token: --account-token or "
              "$UBCP_ACCOUNT_TOKEN; an operator makes one with `ubcp-coordinator add-account "
              "--donor`)"));
    }
    return Fail(registration.error());
  }
  api.set_token(registration->token);

  if (!profile.public_name.empty() || !profile.team.empty()) {
    if (auto set = api.SetProfile(profile); !set) return Fail(set.error());
    spdlog::info("leaderboard: listed as '{}' (team '{}')", profile.public_name, profile.team);
  }
  if (show_contribution) {
    auto c = api.GetContribution();
    if (!c) return Fail(c.error());
    std::printf(
        "host %lld: %lld units, %lld credits validated (%.3g FLOP), %lld this period, "
        "recent average %.1f credits/day\n",
        static_cast<long long>(c->host_id), static_cast<long long>(c->units),
        static_cast<long long>(c->points_credits), static_cast<double>(c->points_credits) * 1e6,
        static_cast<long long>(c->period_credits), c->recent_credits_per_day);
    return 0;
  }

  // Opened only for a client that runs units; it lives until the runner has stopped.
  client::ControlState control;
  std::unique_ptr<client::ControlServer> control_server;
  if (!no_control) {
    auto server = client::ControlServer::Start(client::ControlSocketPath(state_dir), control);
    if (server) {
      control_server = std::move(*server);
      options.control = &control;
      spdlog::info("control socket {}", control_server->path().string());
    } else if (server.error().code == common::Errc::kConflict) {
      // Another client (or a file we must not remove) holds the socket: two clients on one
      // state directory would share its key and registration.
      return Fail(server.error());
    } else {
      // Donating goes on without headless control (e.g. a state path too long for a socket).
      spdlog::warn("control socket disabled: {}", server.error().ToString());
    }
  }

  std::optional<client::Runner> runner_storage;
  if (rooted) {
    runner_storage.emplace(api, *state, *key, *rooted, registration->host_id, options);
  } else {
    runner_storage.emplace(api, *state, *key, *coordinator_key, registration->host_id, options);
  }
  client::Runner& runner = *runner_storage;
  client::RunSummary s = runner.Run(g_stop);
  spdlog::info("stopping: {} units done ({} finetune, {} eval), {} refused, {} retries",
               s.units_done, s.finetune_units, s.eval_units, s.units_refused, s.retries);
  spdlog::info("results: {} submitted, {} accepted, {} duplicate, {} rejected", s.results_submitted,
               s.results_accepted, s.results_duplicate, s.results_rejected);
  if (options.adversary.mode != client::AdversaryMode::kHonest) {
    spdlog::info("adversary: {} units tampered, {} stale updates", s.units_tampered,
                 s.stale_updates);
  }
  if (s.fatal) return Fail(*s.fatal);
  return 0;
}
