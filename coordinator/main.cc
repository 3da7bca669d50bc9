// SPDX-License-Identifier: Apache-2.0
// ubcp-coordinator: parses configuration and wires the store, blob store, signing key, service,
// API and HTTPS server together. Data directory layout: docs/ARCHITECTURE.md.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "ubcp/common/atomic_file.h"
#include "ubcp/common/crypto.h"
#include "ubcp/coordinator/api.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/coordinator_service.h"
#include "ubcp/coordinator/cost_model.h"
#include "ubcp/coordinator/http_server.h"
#include "ubcp/coordinator/key_rotation.h"
#include "ubcp/coordinator/ledger.h"
#include "ubcp/coordinator/store.h"

namespace {
namespace fs = std::filesystem;
using namespace ubcp;

struct Paths {
  fs::path data;
  fs::path db() const { return data / "coordinator.db"; }
  fs::path blobs() const { return data / "blobs"; }
  fs::path signing_key() const { return data / "keys" / "signing.key"; }
  fs::path cert() const { return data / "tls" / "cert.pem"; }
  fs::path tls_key() const { return data / "tls" / "key.pem"; }
  fs::path cache() const { return data / "cache"; }
};

int Fail(const common::Error& e) {
  std::cerr << "ubcp-coordinator: " << e.ToString() << "\n";
  return 1;
}

int Serve(const Paths& paths, coordinator::ServerOptions options, const fs::path& port_file,
          common::DatasetPaths datasets, const coordinator::EconomyConfig& economy,
          const coordinator::ReplicationPolicy& replication) {
  if (auto s = coordinator::CheckPolicy(replication); !s) return Fail(s.error());
  auto store = coordinator::OpenSqliteStore(paths.db());
  if (!store) return Fail(store.error());
  auto blobs = coordinator::BlobStore::Open(paths.blobs());
  if (!blobs) return Fail(blobs.error());
  auto key = common::SigningKey::LoadOrCreate(paths.signing_key());
  if (!key) return Fail(key.error());
  if (options.cert_file.empty()) {
    options.cert_file = paths.cert();
    options.key_file = paths.tls_key();
    if (auto s = coordinator::EnsureSelfSignedCertificate(options.cert_file, options.key_file);
        !s) {
      return Fail(s.error());
    }
  }
  datasets.cache_dir = paths.cache();
  coordinator::CoordinatorConfig config;
  auto statement = coordinator::LoadKeyStatement(paths.signing_key().parent_path());
  if (!statement) return Fail(statement.error());
  config.key_statement = *statement;
  config.datasets = datasets;
  config.economy = economy;
  config.replication = replication;
  coordinator::Coordinator service(**store, *blobs, *key, coordinator::SystemClockSeconds, config);
  service.Reconcile();  // finish any round a crash left complete but not aggregated
  coordinator::Api api(service, config.max_update_bytes);
  auto server = coordinator::HttpsServer::Create(
      options, [&api](const coordinator::HttpRequest& r) { return api.Handle(r); },
      [&api](std::string_view m, std::string_view t) { return api.BodyLimit(m, t); });
  if (!server) return Fail(server.error());
  spdlog::info("ubcp-coordinator listening on https://{}:{} (signing key {}, certificate {})",
               options.address, (*server)->port(), common::Fingerprint(key->public_key()),
               options.cert_file.string());
  if (!port_file.empty()) {
    if (auto written =
            common::WriteFileAtomically(port_file, std::to_string((*server)->port()) + "\n", 0644);
        !written) {
      spdlog::error("port file: {}", written.error().ToString());
    }
  }
  // The economy's clock: periods roll and queued jobs are admitted even when no request comes.
  std::mutex tick_mu;
  std::condition_variable tick_cv;
  bool stopping = false;
  std::thread ticker([&] {
    const auto every =
        std::chrono::seconds(std::clamp<std::int64_t>(economy.period_seconds / 20, 1, 60));
    std::unique_lock lock(tick_mu);
    while (!stopping) {
      lock.unlock();
      if (auto t = service.Tick(); !t) spdlog::error("economy tick: {}", t.error().ToString());
      lock.lock();
      tick_cv.wait_for(lock, every, [&] { return stopping; });
    }
  });
  (*server)->Run(/*handle_signals=*/true);
  {
    std::lock_guard lock(tick_mu);
    stopping = true;
  }
  tick_cv.notify_all();
  ticker.join();
  spdlog::info("ubcp-coordinator stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (auto s = common::InitCrypto(); !s) return Fail(s.error());
  CLI::App app{"UBCP coordinator: hands out signed work units, aggregates donors' updates"};
  app.set_config("--config", "", "read options from this INI/TOML file (flags override it)");
  app.require_subcommand(1);
  Paths paths;
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");

  auto* serve = app.add_subcommand("serve", "run the HTTPS coordinator");
  serve->add_option("--data", paths.data, "data directory")->required();
  coordinator::ServerOptions options;
  options.port = 8443;
  fs::path port_file;
  common::DatasetPaths datasets;
  serve->add_option("--listen", options.address, "address to listen on");
  serve->add_option("--port", options.port, "TCP port (0 picks a free one)");
  serve->add_option("--threads", options.threads, "server threads")->check(CLI::Range(1, 64));
  serve->add_option("--port-file", port_file, "write the bound port here once listening");
  serve->add_option("--cert", options.cert_file, "TLS certificate (PEM); default: self-signed");
  serve->add_option("--key", options.key_file, "TLS private key (PEM)");
  serve->add_option("--fashion-mnist-dir", datasets.fashion_mnist_dir);
  serve->add_option("--sklearn-data-dir", datasets.sklearn_data_dir);
  coordinator::EconomyConfig economy;
  serve->add_option("--period-seconds", economy.period_seconds, "allocation period length")
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{366} * 86400));
  serve
      ->add_option("--reserve-fraction", economy.reserve_fraction,
                   "part of the forecast held back for verification")
      ->check(CLI::Range(0.0, 0.9));
  serve
      ->add_option("--bootstrap-forecast", economy.bootstrap_forecast_credits,
                   "forecast (credits) before any period closed, and its floor")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1'000'000'000'000'000}));
  serve
      ->add_option("--carry-over-shares", economy.carry_over_shares,
                   "unspent credits above this many shares expire at a period's end")
      ->check(CLI::Range(0.0, 1000.0));
  // Validation by replication (replication.h, docs/SECURITY.md).
  coordinator::ReplicationPolicy replication;
  serve->add_option("--eval-quorum", replication.eval_quorum,
                    "agreeing results each evaluation needs (1 turns replication of evaluations "
                    "off)");
  serve->add_option("--finetune-quorum", replication.finetune_quorum,
                    "agreeing results each fine-tune unit needs from untrusted hosts (1 turns "
                    "replication of fine-tunes off)");
  serve->add_option("--replicate-fraction", replication.finetune_replication,
                    "fraction of a trusted host's fine-tune units still computed twice");
  serve->add_option("--spot-check-fraction", replication.spot_check,
                    "fraction of fine-tune units computed twice whoever computes them");
  serve->add_option("--trusted-after", replication.trusted_after,
                    "valid results in a row after which a host is replicated less");
  serve->add_option("--trusted-recheck", replication.trusted_recheck,
                    "fraction of a trusted host's evaluations still computed twice");
  serve->add_option("--ban-after", replication.ban_after,
                    "invalid results after which a host's key is banned");
  serve->add_option("--max-hosts-per-account", replication.max_hosts_per_account,
                    "hosts one donor account may attach");

  auto* add_account =
      app.add_subcommand("add-account", "create a recipient (or donor, or admin) account");
  add_account->add_option("--data", paths.data, "data directory")->required();
  std::string name;
  bool admin = false;
  add_account->add_option("--name", name, "account name")->required();
  bool donor = false;
  auto* admin_flag = add_account->add_flag("--admin", admin, "an admin account");
  add_account
      ->add_flag("--donor", donor,
                 "a donor account: hosts attach to it (ubcp-client --account-token); it "
                 "receives no credit share")
      ->excludes(admin_flag);

  auto* info = app.add_subcommand("info", "print the signing key and certificate location");
  info->add_option("--data", paths.data, "data directory")->required();

  auto* grant =
      app.add_subcommand("grant", "credit an account (an admin grant, idempotent by key)");
  grant->add_option("--data", paths.data, "data directory")->required();
  std::string grant_account, grant_key, grant_memo;
  std::int64_t grant_credits = 0;
  grant->add_option("--account", grant_account, "account name")->required();
  grant->add_option("--credits", grant_credits, "credits (1 credit = 10^6 FLOP)")
      ->required()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000'000'000'000}));
  grant->add_option("--key", grant_key, "idempotency key (default: a new random one)");
  grant->add_option("--memo", grant_memo, "why");

  auto* keys = app.add_subcommand("keys", "the offline root key and the online signing key");
  keys->require_subcommand(1);
  auto* init_root = keys->add_subcommand("init-root",
                                         "create the offline root key (keep it off "
                                         "the coordinator); prints its public key");
  fs::path root_file;
  init_root->add_option("--out", root_file, "where to write the root key")->required();
  auto* rotate = keys->add_subcommand(
      "rotate", "make a new online signing key certified by the root (restart to use it)");
  rotate->add_option("--data", paths.data, "data directory")->required();
  rotate->add_option("--root", root_file, "the root key file")
      ->required()
      ->check(CLI::ExistingFile);
  std::int64_t valid_days = 90;
  rotate->add_option("--days", valid_days, "validity of the statement")->check(CLI::Range(1, 400));

  auto* check_ledger =
      app.add_subcommand("check-ledger", "verify the credit ledger's invariants; exit 1 if broken");
  check_ledger->add_option("--data", paths.data, "data directory")->required();

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  // The data directory holds the signing key and account tokens' hashes: owner-only.
  std::error_code ec;
  if (!paths.data.empty()) {
    fs::create_directories(paths.data, ec);
    if (!ec) fs::permissions(paths.data, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  if (ec) {
    return Fail(common::MakeError(common::Errc::kIo,
                                  "data directory " + paths.data.string() + ": " + ec.message()));
  }

  if (serve->parsed()) return Serve(paths, options, port_file, datasets, economy, replication);

  if (init_root->parsed()) {
    if (fs::exists(root_file)) {
      return Fail(common::MakeError(common::Errc::kConflict, root_file.string() + " exists"));
    }
    auto root = common::SigningKey::Generate();
    if (auto saved = root.Save(root_file); !saved) return Fail(saved.error());
    std::cout << "root_key " << root.public_key().Hex() << "\n"
              << "fingerprint " << common::Fingerprint(root.public_key()) << "\n";
    return 0;
  }

  if (rotate->parsed()) {
    auto root = common::SigningKey::Load(root_file);
    if (!root) return Fail(root.error());
    auto statement =
        coordinator::RotateOnlineKey(paths.signing_key().parent_path(), *root,
                                     coordinator::SystemClockSeconds(), valid_days * 86400);
    if (!statement) return Fail(statement.error());
    auto online = common::PublicKey::FromHex(statement->online_key);
    std::cout << "online key version " << statement->version << ": " << common::Fingerprint(*online)
              << ", valid until " << statement->expires_at
              << "; restart the coordinator to sign with it\n";
    return 0;
  }

  if (check_ledger->parsed()) {
    if (!fs::exists(paths.db())) {
      return Fail(
          common::MakeError(common::Errc::kNotFound, "no database at " + paths.db().string()));
    }
    auto store = coordinator::OpenSqliteStore(paths.db());
    if (!store) return Fail(store.error());
    auto problems = (*store)->CheckLedger();
    if (!problems) return Fail(problems.error());
    for (const auto& p : *problems) std::cout << "check-ledger: VIOLATION " << p << "\n";
    if (!problems->empty()) return 1;
    std::cout << "check-ledger: ok\n";
    return 0;
  }

  if (grant->parsed()) {
    auto store = coordinator::OpenSqliteStore(paths.db());
    if (!store) return Fail(store.error());
    auto to = (*store)->FindAccountByName(grant_account);
    if (!to) return Fail(to.error());
    if (grant_key.empty()) grant_key = "cli-" + common::NewToken().substr(0, 16);
    auto txn = coordinator::Transfer("grant:" + grant_key, coordinator::LedgerKind::kGrant,
                                     std::string(coordinator::kIssuanceAccount),
                                     coordinator::RecipientAccount(to->id), grant_credits,
                                     coordinator::SystemClockSeconds());
    txn.memo = grant_memo.empty() ? "operator grant" : grant_memo;
    auto posted = (*store)->PostLedger(txn);
    if (!posted) return Fail(posted.error());
    auto balance = (*store)->Balance(coordinator::RecipientAccount(to->id));
    if (!balance) return Fail(balance.error());
    std::cout << (*posted ? "granted " : "already granted (same key) ") << grant_credits
              << " credits to " << to->name << "; balance " << *balance << " ("
              << coordinator::DescribeCredits(*balance) << ")\n";
    return 0;
  }

  if (add_account->parsed()) {
    auto store = coordinator::OpenSqliteStore(paths.db());
    if (!store) return Fail(store.error());
    std::string token = common::NewToken();
    const coordinator::Role role = admin   ? coordinator::Role::kAdmin
                                   : donor ? coordinator::Role::kDonor
                                           : coordinator::Role::kRecipient;
    auto id = (*store)->CreateAccount(name, common::TokenHash(token), role,
                                      coordinator::SystemClockSeconds());
    if (!id) return Fail(id.error());
    // A recipient registered during a period receives that period's share at once.
    if (role == coordinator::Role::kRecipient) {
      if (auto issued = (*store)->IssueShare(*id, coordinator::SystemClockSeconds()); !issued) {
        return Fail(issued.error());
      }
    }
    // The token is shown once; only its hash is stored.
    std::cout << token << "\n";
    return 0;
  }

  auto key = common::SigningKey::LoadOrCreate(paths.signing_key());
  if (!key) return Fail(key.error());
  std::cout << "signing_key " << key->public_key().Hex() << "\n"
            << "fingerprint " << common::Fingerprint(key->public_key()) << "\n"
            << "certificate " << paths.cert().string() << "\n";
  return 0;
}
