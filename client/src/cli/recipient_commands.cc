// SPDX-License-Identifier: Apache-2.0
#include "cli/recipient_commands.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "ubcp/client/coordinator_api.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/wire.h"

namespace ubcp::client::cli {

int PrintError(const common::Error& e) {
  std::cerr << "ubcp: " << e.ToString() << "\n";
  return 1;
}

common::Result<std::string> Call(HttpsClient& http, const std::string& token,
                                 std::string_view method, const std::string& target,
                                 std::string_view body) {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r,
                        http.Request(method, target, body, "application/json", token));
  if (r.status < 200 || r.status >= 300) return ErrorFromResponse(r);
  return std::move(r.body);
}

common::Result<std::string> ReadSpecFile(const std::filesystem::path& spec_file) {
  std::ifstream in(spec_file);
  if (!in) return common::MakeError(common::Errc::kIo, "cannot read " + spec_file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > common::kMaxRequestJson) {
    return common::MakeError(common::Errc::kTooLarge, spec_file.string() + " is too large");
  }
  return ss.str();
}

namespace {

std::string RoundLine(const common::RoundStatus& r, int rounds) {
  // Round r's eval measures the model after r aggregations (round 0: the starting model); the
  // round after the last one only evaluates the final model.
  char line[256];
  if (r.round < rounds) {
    std::snprintf(line, sizeof line,
                  "round %d/%d: eval loss %.4f accuracy %.4f (%lld held-out samples), "
                  "train loss %.4f, units %d/%d",
                  r.round, rounds, r.eval_loss, r.eval_accuracy,
                  static_cast<long long>(r.eval_samples), r.train_loss, r.units_done,
                  r.units_total);
  } else {
    std::snprintf(line, sizeof line,
                  "final model: eval loss %.4f accuracy %.4f (%lld held-out samples)", r.eval_loss,
                  r.eval_accuracy, static_cast<long long>(r.eval_samples));
  }
  return line;
}

}  // namespace

int SubmitJob(HttpsClient& http, const std::string& token, const std::filesystem::path& spec_file,
              std::ostream& out) {
  auto spec = ReadSpecFile(spec_file);
  if (!spec) return PrintError(spec.error());
  auto body = Call(http, token, "POST", "/v1/jobs", *spec);
  if (!body) return PrintError(body.error());
  auto created = common::ParseJobCreated(*body);
  if (!created) return PrintError(created.error());
  out << created->job_id << "\n";
  return 0;
}

int ShowJob(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/jobs/" + std::to_string(job_id));
  if (!body) return PrintError(body.error());
  auto status = common::ParseJobStatus(*body);
  if (!status) return PrintError(status.error());
  out << "job " << status->job_id << " '" << status->name << "': " << status->state << ", model "
      << status->model_spec << ", round " << status->current_round << "/" << status->rounds << ", "
      << status->hosts << " donor host(s)\n";
  for (const auto& r : status->history) {
    if (r.evaluated) out << "  " << RoundLine(r, status->rounds) << "\n";
  }
  if (!status->final_model.empty()) out << "  final model " << status->final_model << "\n";
  return 0;
}

int WaitJob(HttpsClient& http, const std::string& token, std::int64_t job_id, double timeout_s,
            std::ostream& out) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::set<int> printed;
  for (;;) {
    auto body = Call(http, token, "GET", "/v1/jobs/" + std::to_string(job_id));
    if (!body) return PrintError(body.error());
    auto status = common::ParseJobStatus(*body);
    if (!status) return PrintError(status.error());
    for (const auto& r : status->history) {
      if (r.evaluated && printed.insert(r.round).second) {
        out << "job " << job_id << " " << RoundLine(r, status->rounds) << std::endl;
      }
    }
    if (status->state == "done") return 0;
    if (status->state == "failed") {
      std::cerr << "ubcp: job " << job_id << " failed\n";
      return 1;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "ubcp: timed out waiting for job " << job_id << "\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int DownloadModel(HttpsClient& http, const std::string& token, std::int64_t job_id,
                  const std::filesystem::path& output, std::ostream& out) {
  auto r = http.Request("GET", "/v1/jobs/" + std::to_string(job_id) + "/model", {}, {}, token);
  if (!r) return PrintError(r.error());
  if (r->status != 200) return PrintError(ErrorFromResponse(*r));
  std::ofstream file(output, std::ios::binary);
  file.write(r->body.data(), static_cast<std::streamsize>(r->body.size()));
  if (!file)
    return PrintError(common::MakeError(common::Errc::kIo, "cannot write " + output.string()));
  out << "model of job " << job_id << " written to " << output.string() << " (" << r->body.size()
      << " bytes, blake2b-256 " << common::ContentId(common::AsBytes(r->body)) << ")\n";
  return 0;
}

int JobResult(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/jobs/" + std::to_string(job_id));
  if (!body) return PrintError(body.error());
  auto status = common::ParseJobStatus(*body);
  if (!status) return PrintError(status.error());
  if (status->state != "done" || status->history.empty() || !status->history.front().evaluated ||
      !status->history.back().evaluated) {
    return PrintError(common::MakeError(common::Errc::kConflict, "job is not done"));
  }
  char line[160];
  std::snprintf(line, sizeof line, "accuracy before=%.4f after=%.4f rounds=%d donors=%lld",
                status->history.front().eval_accuracy, status->history.back().eval_accuracy,
                status->rounds, static_cast<long long>(status->hosts));
  out << line << "\n";
  return 0;
}

int ListCatalog(HttpsClient& http, const std::string& token, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/catalog");
  if (!body) return PrintError(body.error());
  auto catalog = common::ParseCatalog(*body);
  if (!catalog) return PrintError(catalog.error());
  if (catalog->models.empty()) out << "the catalog is empty\n";
  for (const auto& m : catalog->models) {
    out << m.name << "  " << m.model_spec << "  blob " << m.blob.substr(0, 16) << "  "
        << m.description << "\n";
  }
  return 0;
}

}  // namespace ubcp::client::cli
