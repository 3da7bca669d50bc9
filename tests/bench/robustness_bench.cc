// SPDX-License-Identifier: Apache-2.0
// The robustness sweep of issue #4: how far adversarial donors move the demo's fine-tune job
// under each robust aggregation rule, with validation by replication as configured by default.
//
// One real coordinator runs in-process (SQLite store and blob store in a temporary directory,
// the default ReplicationPolicy and economy, a large bootstrap forecast and a grant so that the
// recipient can pay for every job) behind the real HTTPS server on 127.0.0.1. Real donors
// (client::Runner threads, one torch thread each) first pretrain the catalog model fmnist-cnn
// (scripts/jobs/pretrain-fmnist-cnn.json, --pretrain-rounds rounds); then, for each rule and
// each adversary share, the fine-tune job (scripts/jobs/finetune-digits.json with one unit per
// donor and round, robust = the rule) runs with --donors fresh hosts, each in its own donor
// account so that no reputation carries over, the first share x donors of them cheating with
// --mode at the adversary's default scale. One line per run: the rule, the share, the job's
// final accuracy (its last evaluation, on the held-out split) and state ("timeout": still
// running after --job-timeout, then cancelled), for the cheaters the units they completed
// (summed), how many were caught (offences > 0) and banned, and the units each banned cheater
// completed before its ban; then the honest donors' units and the units donors leased but could
// not complete. Then the accuracies as a table, and one line:
//   robustness: clean=<a> attacked30_default=<b> attacked30_mean=<c>
// a = the default configuration (centered_clip, default replication) with no cheater, b = the
// same with 30% cheaters, c = the plain mean with 30% cheaters and no replication: the
// undefended system (nan for a run left out by --rules or --shares). After the main sweep,
// --baseline-rules (centered_clip and mean by default) are swept again without replication, so
// that what each layer buys shows. With --no-replication the main sweep itself computes every
// work once.
// Figures only: it fails only when the coordinator or a donor cannot run.
//
// Cost with the defaults (10 donors, 5 rules x 5 shares, then 2 rules x 5 shares without
// replication, 2 pretrain rounds each) on 2 cores: 7 to 12 minutes (pretraining 20 to 30 s, each
// fine-tune run 7 to 23 s, depending on the machine's other load), plus --job-timeout (120 s) for
// each job that stalls; 1.5 GB of memory. Which donor computes which shard, and which works are
// replicated, differ between runs, and so do the figures: by a point or so for the clean runs, by
// up to 5 at 30 to 40% cheaters. Run by scripts/bench (scripts/bench robustness).

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ubcp/client/adversary.h"
#include "ubcp/client/coordinator_api.h"
#include "ubcp/client/host_state.h"
#include "ubcp/client/https_client.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/runner.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/result.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/api.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/coordinator_service.h"
#include "ubcp/coordinator/http_server.h"
#include "ubcp/coordinator/ledger.h"
#include "ubcp/coordinator/store.h"

namespace {
namespace fs = std::filesystem;
namespace client = ubcp::client;
namespace common = ubcp::common;
namespace coordinator = ubcp::coordinator;
using common::Errc;
using common::MakeError;
using common::Result;
using common::Status;

// Credits (MFLOP) for the first period's budget and the recipient's grant: far above what the
// whole sweep costs, so that the economy never queues a job (it has its own tests).
constexpr std::int64_t kBootstrapForecastCredits = 1'000'000'000'000;
constexpr std::int64_t kGrantCredits = 1'000'000'000'000;

struct Options {
  int donors = 10;
  std::string mode = "sign_flip";
  std::vector<std::string> rules = {"centered_clip", "mean", "median", "trimmed_mean",
                                    "multi_krum"};
  std::vector<int> shares = {0, 10, 20, 30, 40};
  int pretrain_rounds = 2;
  std::optional<std::uint64_t> seed;
  std::string jobs_dir = "scripts/jobs";
  std::string cache_dir = (fs::temp_directory_path() / "ubcp-bench-datasets").string();
  // A clean run takes 8 to 25 s on 2 cores. A job can stall: when a poisoned model makes
  // training diverge, every donor refuses its units, which wait for their 300 s deadline.
  double job_timeout_s = 120;
  bool replication = true;  // false: every work computed once (the robust rules alone)
  // Swept again without replication after the main sweep: the undefended baseline.
  std::vector<std::string> baseline_rules = {"centered_clip", "mean"};
  bool verbose = false;
};

common::Result<common::JobSpec> ReadJob(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return MakeError(Errc::kNotFound, "cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  return common::ParseJobSpec(text.str());
}

client::BenchmarkReport TinyBenchmark() {
  client::BenchmarkReport r;
  r.matmul_gflops = 1;
  r.cpu_threads = 1;
  r.torch_version = common::TorchVersion();
  return r;
}

// A registered donor host: its connection, state directory, key and registration.
struct Donor {
  std::unique_ptr<client::HttpsClient> http;
  std::unique_ptr<client::CoordinatorApi> api;
  std::optional<client::HostState> state;
  std::optional<common::SigningKey> key;
  client::Registration registration;
};

// A real coordinator on 127.0.0.1 with one recipient account that can pay for everything.
// Not movable: the server's handler and the service hold references into it.
class BenchCoordinator {
 public:
  // `replication`: the default ReplicationPolicy, else NoReplication().
  static Result<std::unique_ptr<BenchCoordinator>> Start(const fs::path& dir,
                                                         const fs::path& cache_dir,
                                                         bool replication) {
    std::unique_ptr<BenchCoordinator> c(new BenchCoordinator(dir));
    UBCP_RETURN_IF_ERROR(c->Init(cache_dir, replication));
    return c;
  }
  BenchCoordinator(const BenchCoordinator&) = delete;
  BenchCoordinator& operator=(const BenchCoordinator&) = delete;
  ~BenchCoordinator() {
    if (server_) server_->Stop();
    if (server_thread_.joinable()) server_thread_.join();
  }

  coordinator::Store& store() { return *store_; }
  const common::PublicKey& signing_key() const { return signing_key_->public_key(); }

  Result<std::int64_t> Submit(const common::JobSpec& spec) {
    UBCP_ASSIGN_OR_RETURN(auto created,
                          service_->SubmitJob(recipient_, common::SerializeJobSpec(spec)));
    return created.job_id;
  }
  Result<common::JobStatus> JobStatus(std::int64_t job_id) {
    return service_->GetJobStatus(recipient_, job_id);
  }
  Status Cancel(std::int64_t job_id) {
    UBCP_RETURN_IF_ERROR(service_->CancelJob(recipient_, job_id));
    return common::Ok();
  }

  // A fresh host named `name`, attached to a donor account of its own.
  Result<std::unique_ptr<Donor>> NewDonor(const std::string& name) {
    const std::string account_token = common::NewToken();
    UBCP_RETURN_IF_ERROR(store_->CreateAccount(
        "account-of-" + name, common::TokenHash(account_token), coordinator::Role::kDonor, Now()));
    auto d = std::make_unique<Donor>();
    UBCP_ASSIGN_OR_RETURN(d->http, client::HttpsClient::Create({{"127.0.0.1", server_->port()},
                                                                dir_ / "tls" / "cert.pem",
                                                                false,
                                                                std::chrono::seconds(120)}));
    d->api = std::make_unique<client::CoordinatorApi>(*d->http);
    d->api->set_account_token(account_token);
    UBCP_ASSIGN_OR_RETURN(auto state, client::HostState::Open(dir_ / "hosts" / name));
    d->state.emplace(std::move(state));
    UBCP_ASSIGN_OR_RETURN(auto key, d->state->LoadOrCreateKey());
    d->key.emplace(std::move(key));
    client::TrustOptions trust;
    trust.coordinator_key = signing_key();
    UBCP_RETURN_IF_ERROR(client::EstablishTrust(*d->api, *d->state, trust));
    UBCP_ASSIGN_OR_RETURN(d->registration, client::EnsureRegistered(*d->api, *d->state, *d->key,
                                                                    name, TinyBenchmark));
    d->api->set_token(d->registration.token);
    return d;
  }

 private:
  explicit BenchCoordinator(fs::path dir) : dir_(std::move(dir)) {}
  static std::int64_t Now() { return coordinator::SystemClockSeconds(); }

  Status Init(const fs::path& cache_dir, bool replication) {
    UBCP_RETURN_IF_ERROR(common::InitCrypto());
    UBCP_ASSIGN_OR_RETURN(store_, coordinator::OpenSqliteStore(dir_ / "coordinator.db"));
    UBCP_ASSIGN_OR_RETURN(auto blobs, coordinator::BlobStore::Open(dir_ / "blobs"));
    blobs_.emplace(std::move(blobs));
    signing_key_.emplace(common::SigningKey::Generate());
    coordinator::CoordinatorConfig config;  // the default ReplicationPolicy
    if (!replication) config.replication = coordinator::NoReplication();
    config.datasets.cache_dir = cache_dir;
    config.economy.bootstrap_forecast_credits = kBootstrapForecastCredits;
    service_ =
        std::make_unique<coordinator::Coordinator>(*store_, *blobs_, *signing_key_, Now, config);
    api_ = std::make_unique<coordinator::Api>(*service_, config.max_update_bytes);
    coordinator::ServerOptions options;
    options.cert_file = dir_ / "tls" / "cert.pem";
    options.key_file = dir_ / "tls" / "key.pem";
    fs::create_directories(dir_ / "tls");
    UBCP_RETURN_IF_ERROR(
        coordinator::EnsureSelfSignedCertificate(options.cert_file, options.key_file));
    UBCP_ASSIGN_OR_RETURN(
        server_,
        coordinator::HttpsServer::Create(
            options, [this](const coordinator::HttpRequest& r) { return api_->Handle(r); },
            [this](std::string_view m, std::string_view t) { return api_->BodyLimit(m, t); }));
    server_thread_ = std::thread([this] { server_->Run(false); });

    const std::string token = common::NewToken();
    UBCP_ASSIGN_OR_RETURN(const std::int64_t id,
                          store_->CreateAccount("recipient", common::TokenHash(token),
                                                coordinator::Role::kRecipient, Now()));
    UBCP_RETURN_IF_ERROR(store_->PostLedger(
        coordinator::Transfer("grant:robustness-bench", coordinator::LedgerKind::kGrant,
                              std::string(coordinator::kIssuanceAccount),
                              coordinator::RecipientAccount(id), kGrantCredits, Now())));
    // The first allocation period opens with the bootstrap forecast as its budget.
    UBCP_RETURN_IF_ERROR(service_->Tick());
    UBCP_ASSIGN_OR_RETURN(recipient_, service_->AuthenticateAccount(token));
    return common::Ok();
  }

  fs::path dir_;
  std::unique_ptr<coordinator::Store> store_;
  std::optional<coordinator::BlobStore> blobs_;
  std::optional<common::SigningKey> signing_key_;
  std::unique_ptr<coordinator::Coordinator> service_;
  std::unique_ptr<coordinator::Api> api_;
  std::unique_ptr<coordinator::HttpsServer> server_;
  std::thread server_thread_;
  coordinator::AccountRecord recipient_;
};

// One job run to its end by a set of donors, the first `cheaters` of them dishonest.
struct RunOutcome {
  // The job's state at the end: "done", "failed", or "timeout" (still running after
  // --job-timeout, then cancelled).
  std::string state;
  double accuracy = NAN;  // its last evaluation
  int cheaters = 0;
  int cheater_units = 0;  // units the cheaters completed, summed
  int caught = 0;         // cheaters with offences > 0
  int banned = 0;
  std::vector<int> units_before_ban;  // per banned cheater: units it completed
  int honest_units = 0;
  // Units a donor leased but could not complete (e.g. training diverged on a poisoned model):
  // each stays leased until its deadline and is then leased again.
  int refused = 0;
  double seconds = 0;
};

Result<RunOutcome> RunJob(BenchCoordinator& coord, const common::JobSpec& spec,
                          const std::string& label, int donor_count, int cheaters,
                          const client::Adversary& adversary, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  UBCP_ASSIGN_OR_RETURN(const std::int64_t job_id, coord.Submit(spec));
  std::vector<std::unique_ptr<Donor>> donors;
  for (int i = 0; i < donor_count; ++i) {
    auto donor = coord.NewDonor(label + "-donor-" + std::to_string(i));
    if (!donor) {
      // A job left running would hand its units to the next run's donors first.
      (void)coord.Cancel(job_id);
      return donor.error();
    }
    donors.push_back(std::move(*donor));
  }

  std::atomic<bool> stop{false};
  std::vector<client::RunSummary> summaries(donors.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < donors.size(); ++i) {
    threads.emplace_back([&, i] {
      client::RunnerOptions options;
      options.executor = client::MakeInProcessExecutor();
      options.threads = 1;  // the donors share this machine's cores
      options.idle_poll_s = 0.2;
      options.max_backoff_s = 0.5;
      if (static_cast<int>(i) < cheaters) options.adversary = adversary;
      client::Runner runner(*donors[i]->api, *donors[i]->state, *donors[i]->key,
                            coord.signing_key(), donors[i]->registration.host_id, options);
      summaries[i] = runner.Run(stop);
    });
  }
  const auto until = start + std::chrono::duration<double>(timeout_s);
  std::string state;
  while (true) {
    auto job = coord.store().GetJob(job_id);
    if (!job) {
      stop = true;
      for (auto& t : threads) t.join();
      return job.error();
    }
    state = job->state;
    if ((state != "running" && state != "queued") || std::chrono::steady_clock::now() >= until) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop = true;
  for (auto& t : threads) t.join();
  RunOutcome out;
  out.state = state;
  if (state == "running" || state == "queued") {
    // Cancelled, so that its units do not go to the next run's donors.
    UBCP_RETURN_IF_ERROR(coord.Cancel(job_id));
    out.state = "timeout";
  }
  out.cheaters = cheaters;
  UBCP_ASSIGN_OR_RETURN(const common::JobStatus status, coord.JobStatus(job_id));
  for (const common::RoundStatus& round : status.history) {
    if (round.evaluated) out.accuracy = round.eval_accuracy;
  }
  for (int i = 0; i < donor_count; ++i) {
    const int units = summaries[static_cast<std::size_t>(i)].units_done;
    out.refused += summaries[static_cast<std::size_t>(i)].units_refused;
    if (i >= cheaters) {
      out.honest_units += units;
      continue;
    }
    out.cheater_units += units;
    UBCP_ASSIGN_OR_RETURN(
        const coordinator::HostRecord host,
        coord.store().GetHost(donors[static_cast<std::size_t>(i)]->registration.host_id));
    if (host.offences > 0) ++out.caught;
    if (host.banned_at != 0) {
      ++out.banned;
      out.units_before_ban.push_back(units);
    }
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

std::string Join(const std::vector<int>& values) {
  if (values.empty()) return "-";
  std::string s;
  for (int v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

void PrintRun(const std::string& rule, int share, const RunOutcome& r) {
  std::printf("%-13s %4d%% %8.4f %-7s %8d %13d %6d %6d %-16s %12d %7d %7.1f\n", rule.c_str(), share,
              r.accuracy, r.state.c_str(), r.cheaters, r.cheater_units, r.caught, r.banned,
              Join(r.units_before_ban).c_str(), r.honest_units, r.refused, r.seconds);
  std::fflush(stdout);
}

// The sweep's results: accuracy by rule and share.
using AccuracyTable = std::map<std::string, std::map<int, double>>;

double Lookup(const AccuracyTable& table, const std::string& rule, int share) {
  auto r = table.find(rule);
  if (r == table.end()) return NAN;
  auto s = r->second.find(share);
  return s == r->second.end() ? NAN : s->second;
}

void PrintTable(const AccuracyTable& table, const std::vector<std::string>& rules,
                const std::vector<int>& shares, const std::string& mode) {
  std::printf("final accuracy by rule (rows) and adversary share (columns), %s:\n%-13s",
              mode.c_str(), "rule");
  for (int share : shares) std::printf(" %7d%%", share);
  std::printf("\n");
  for (const std::string& rule : rules) {
    std::printf("%-13s", rule.c_str());
    for (int share : shares) std::printf(" %8.4f", Lookup(table, rule, share));
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UBCP robustness sweep: adversarial donors x robust aggregation rules"};
  Options o;
  std::uint64_t seed = 0;
  app.add_option("--donors", o.donors, "donors per fine-tune run (and units per round)")
      ->check(CLI::Range(1, 64));
  app.add_option("--mode", o.mode,
                 "the cheaters' content attack (client/adversary.h): sign_flip, noise, scale, "
                 "zeros, label_flip or stale");
  app.add_option("--rules", o.rules, "robust aggregation rules swept")->delimiter(',');
  app.add_option("--shares", o.shares, "adversary shares swept, in percent")
      ->delimiter(',')
      ->check(CLI::Range(0, 100));
  app.add_option("--pretrain-rounds", o.pretrain_rounds, "rounds of the fmnist-cnn pretraining")
      ->check(CLI::Range(1, 100));
  auto* seed_option =
      app.add_option("--seed", seed, "seed of both jobs (default: the job files' seeds)");
  app.add_option("--jobs-dir", o.jobs_dir,
                 "where pretrain-fmnist-cnn.json and the fine-tune "
                 "job finetune-digits.json are");
  app.add_option("--cache-dir", o.cache_dir, "decoded data-set cache");
  app.add_option("--job-timeout", o.job_timeout_s, "seconds a job may run before it is cancelled")
      ->check(CLI::PositiveNumber);
  app.add_flag("!--no-replication", o.replication,
               "compute every work once, to see the robust rules alone (default: the default "
               "replication policy)");
  app.add_option("--baseline-rules", o.baseline_rules,
                 "rules swept again without replication after the main sweep (the undefended "
                 "baseline; empty: none)")
      ->delimiter(',');
  app.add_flag("--verbose", o.verbose,
               "log every unit of the donors and the coordinator (default: nothing but this "
               "benchmark's own lines)");
  CLI11_PARSE(app, argc, argv);
  if (*seed_option) o.seed = seed;
  spdlog::set_level(o.verbose ? spdlog::level::info : spdlog::level::critical);

  auto mode = client::ParseAdversaryMode(o.mode);
  if (!mode || *mode == client::AdversaryMode::kHonest || client::IsProtocolAttack(*mode)) {
    std::fprintf(stderr, "robustness: --mode must be a content attack, not '%s'\n", o.mode.c_str());
    return 1;
  }
  client::Adversary adversary;  // the default scale
  adversary.mode = *mode;

  auto pretrain = ReadJob(fs::path(o.jobs_dir) / "pretrain-fmnist-cnn.json");
  auto finetune = ReadJob(fs::path(o.jobs_dir) / "finetune-digits.json");
  if (!pretrain || !finetune) {
    const auto& e = !pretrain ? pretrain.error() : finetune.error();
    std::fprintf(stderr, "robustness: %s\n", e.ToString().c_str());
    return 1;
  }
  pretrain->rounds = o.pretrain_rounds;
  finetune->units_per_round = o.donors;
  if (o.seed) pretrain->params.seed = finetune->params.seed = *o.seed;
  // Every rule must be one the job spec accepts, before anything runs.
  for (const std::string& rule : o.rules) {
    common::JobSpec spec = *finetune;
    spec.robust = rule;
    if (auto parsed = common::ParseJobSpec(common::SerializeJobSpec(spec)); !parsed) {
      std::fprintf(stderr, "robustness: rule '%s': %s\n", rule.c_str(),
                   parsed.error().ToString().c_str());
      return 1;
    }
  }

  const fs::path dir =
      fs::temp_directory_path() / ("ubcp-bench-robustness-" + std::to_string(::getpid()));
  int rc = 0;
  auto fail = [&](const std::string& what, const common::Error& e) {
    std::fprintf(stderr, "robustness: %s: %s\n", what.c_str(), e.ToString().c_str());
    rc = 1;
  };
  // One sweep: a coordinator with or without replication, fmnist-cnn pretrained on it, then the
  // fine-tune job for every rule and share.
  auto sweep = [&](bool replication, const std::vector<std::string>& rules,
                   const std::vector<int>& shares) -> AccuracyTable {
    AccuracyTable table;
    const fs::path sweep_dir = dir / (replication ? "replicated" : "alone");
    fs::remove_all(sweep_dir);
    fs::create_directories(sweep_dir);
    auto coord = BenchCoordinator::Start(sweep_dir, o.cache_dir, replication);
    if (!coord) {
      fail("coordinator", coord.error());
      return table;
    }
    std::printf(
        "robustness: %d donors per run, cheaters: %s (scale %g), rules %zu x shares %zu, %s\n",
        o.donors, o.mode.c_str(), adversary.scale, rules.size(), shares.size(),
        replication ? "default replication policy" : "no replication (the rules alone)");
    auto pre = RunJob(**coord, *pretrain, "pretrain", o.donors, 0, adversary, o.job_timeout_s);
    if (!pre) {
      fail("pretraining", pre.error());
      return table;
    }
    if (pre->state != "done") {
      fail("pretraining", MakeError(Errc::kUnavailable, "the job ended " + pre->state));
      return table;
    }
    std::printf("pretrain: %s rounds=%d accuracy=%.4f time_s=%.1f\n", pretrain->publish_as.c_str(),
                pretrain->rounds, pre->accuracy, pre->seconds);
    std::printf("%-13s %5s %8s %-7s %8s %13s %6s %6s %-16s %12s %7s %7s\n", "rule", "share",
                "accuracy", "state", "cheaters", "cheater_units", "caught", "banned",
                "units_before_ban", "honest_units", "refused", "time_s");
    std::fflush(stdout);
    int runs = 0;
    for (const std::string& rule : rules) {
      for (int share : shares) {
        common::JobSpec spec = *finetune;
        spec.robust = rule;
        const int cheaters = static_cast<int>(std::lround(share * o.donors / 100.0));
        // Unique per run (a rule or share may be listed twice): it names the donors' accounts.
        const std::string label =
            "run" + std::to_string(++runs) + "-" + rule + "-" + std::to_string(share);
        auto run = RunJob(**coord, spec, label, o.donors, cheaters, adversary, o.job_timeout_s);
        if (!run) {
          fail("run " + label, run.error());
          continue;
        }
        PrintRun(rule, share, *run);
        table[rule][share] = run->accuracy;
      }
    }
    PrintTable(table, rules, shares, o.mode);
    if (auto problems = (*coord)->store().CheckLedger(); !problems) {
      fail("check-ledger", problems.error());
    } else {
      std::printf("ledger: %zu problems\n", problems->size());
    }
    return table;
  };

  const AccuracyTable defended = sweep(o.replication, o.rules, o.shares);
  std::printf("clean runs (0%%):");
  for (const std::string& rule : o.rules) {
    std::printf(" %s=%.4f", rule.c_str(), Lookup(defended, rule, 0));
  }
  std::printf("\n");
  // The undefended baseline: the rules alone, without replication, so that what each layer
  // buys shows (hivemind- and DiLoCo-style systems aggregate with the plain mean and nothing
  // else).
  AccuracyTable alone;
  if (o.replication && !o.baseline_rules.empty()) {
    alone = sweep(false, o.baseline_rules, o.shares);
  }
  const AccuracyTable& mean_table = alone.count("mean") ? alone : defended;
  std::printf("mean at 30%%: %.4f with the default replication, %.4f without\n",
              Lookup(defended, "mean", 30), Lookup(alone, "mean", 30));
  std::printf("robustness: clean=%.4f attacked30_default=%.4f attacked30_mean=%.4f\n",
              Lookup(defended, "centered_clip", 0), Lookup(defended, "centered_clip", 30),
              Lookup(mean_table, "mean", 30));
  fs::remove_all(dir);
  return rc;
}
