// SPDX-License-Identifier: Apache-2.0
// ubcp: the command-line tool of recipients (credits, submit, follow and download jobs) and
// admins (grants).

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include "cli/economy_commands.h"
#include "cli/recipient_commands.h"
#include "ubcp/client/https_client.h"
#include "ubcp/common/crypto.h"

int main(int argc, char** argv) {
  using namespace ubcp::client;
  if (!ubcp::common::InitCrypto()) return 1;
  CLI::App app{"UBCP command-line tool for recipients"};
  app.require_subcommand(1);
  std::string url, token;
  std::filesystem::path ca_file;
  bool insecure = false;
  if (const char* v = std::getenv("UBCP_COORDINATOR")) url = v;
  if (const char* v = std::getenv("UBCP_TOKEN")) token = v;
  if (const char* v = std::getenv("UBCP_CA_FILE")) ca_file = v;
  app.add_option("--coordinator", url, "https://host:port (or $UBCP_COORDINATOR)");
  app.add_option("--token", token, "bearer token (or $UBCP_TOKEN)");
  app.add_option("--ca-file", ca_file, "PEM certificate(s) to trust (or $UBCP_CA_FILE)");
  app.add_flag("--insecure-tls", insecure, "do not verify the TLS certificate");

  std::filesystem::path spec_file, output;
  std::int64_t job_id = 0;
  double timeout_s = 3600;
  bool dry_run = false;
  auto* submit = app.add_subcommand("submit", "submit a job spec (JSON file); prints its id");
  submit->add_option("spec", spec_file)->required();
  submit->add_flag("--dry-run", dry_run, "only show the price and whether the credits cover it");
  auto* credits = app.add_subcommand("credits", "your available, reserved and spent credits");
  auto* jobs = app.add_subcommand("jobs", "list your jobs");
  auto* leaderboard = app.add_subcommand("leaderboard", "donors and teams by validated work");
  auto* cancel = app.add_subcommand("cancel", "cancel a job; what it did not use is refunded");
  cancel->add_option("id", job_id)->required();
  auto* admin = app.add_subcommand("admin", "admin commands (an admin token)");
  admin->require_subcommand(1);
  auto* capacity = admin->add_subcommand("capacity", "donors, validated work, B, the allocation");
  auto* grant = admin->add_subcommand("grant", "grant credits to an account (idempotent by key)");
  std::string grant_account, grant_key, grant_memo;
  std::int64_t grant_credits = 0;
  grant->add_option("account", grant_account)->required();
  grant->add_option("credits", grant_credits, "credits (1 credit = 10^6 FLOP)")->required();
  grant->add_option("--key", grant_key, "idempotency key: the same key again changes nothing")
      ->required();
  grant->add_option("--memo", grant_memo, "why");
  auto* job = app.add_subcommand("job", "show a job's state and per-round metrics");
  job->add_option("id", job_id)->required();
  auto* wait = app.add_subcommand("wait", "follow a job until it is done");
  wait->add_option("id", job_id)->required();
  wait->add_option("--timeout", timeout_s, "seconds");
  auto* download = app.add_subcommand("download", "download a finished job's model");
  download->add_option("id", job_id)->required();
  download->add_option("-o,--output", output, "file to write")->required();
  auto* catalog = app.add_subcommand("catalog", "list the catalog's models");
  auto* result = app.add_subcommand(
      "result", "one line: accuracy before (round 0) and after (final model) on the test split");
  result->add_option("id", job_id)->required();
  CLI11_PARSE(app, argc, argv);

  if (url.empty()) {
    std::cerr << "ubcp: --coordinator is required\n";
    return 2;
  }
  auto endpoint = ParseCoordinatorUrl(url);
  if (!endpoint) {
    std::cerr << "ubcp: " << endpoint.error().ToString() << "\n";
    return 2;
  }
  auto http = HttpsClient::Create({*endpoint, ca_file, insecure});
  if (!http) {
    std::cerr << "ubcp: " << http.error().ToString() << "\n";
    return 2;
  }
  HttpsClient& h = **http;
  if (submit->parsed()) {
    return dry_run ? cli::QuoteJob(h, token, spec_file, std::cout)
                   : cli::SubmitJob(h, token, spec_file, std::cout);
  }
  if (credits->parsed()) return cli::ShowCredits(h, token, std::cout);
  if (jobs->parsed()) return cli::ListJobs(h, token, std::cout);
  if (leaderboard->parsed()) return cli::ShowLeaderboard(h, std::cout);
  if (cancel->parsed()) return cli::CancelJob(h, token, job_id, std::cout);
  if (capacity->parsed()) return cli::AdminCapacity(h, token, std::cout);
  if (grant->parsed()) {
    return cli::AdminGrant(h, token, grant_account, grant_credits, grant_key, grant_memo,
                           std::cout);
  }
  if (job->parsed()) return cli::ShowJob(h, token, job_id, std::cout);
  if (wait->parsed()) return cli::WaitJob(h, token, job_id, timeout_s, std::cout);
  if (download->parsed()) return cli::DownloadModel(h, token, job_id, output, std::cout);
  if (catalog->parsed()) return cli::ListCatalog(h, token, std::cout);
  if (result->parsed()) return cli::JobResult(h, token, job_id, std::cout);
  return 2;
}
