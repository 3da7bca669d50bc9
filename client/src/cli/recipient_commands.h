// SPDX-License-Identifier: Apache-2.0
#pragma once
// Commands of the `ubcp` tool for recipients: submit a job, follow it, download its model.
// Each returns the process exit code and prints for a person (errors on stderr).

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>

#include "ubcp/client/https_client.h"

namespace ubcp::client::cli {

// Shared by the commands: print an error (exit code 1); one request whose non-2xx answer
// becomes the server's error; a job spec file (bounded).
int PrintError(const common::Error& e);
common::Result<std::string> Call(HttpsClient& http, const std::string& token,
                                 std::string_view method, const std::string& target,
                                 std::string_view body = {});
common::Result<std::string> ReadSpecFile(const std::filesystem::path& spec_file);

int SubmitJob(HttpsClient& http, const std::string& token, const std::filesystem::path& spec_file,
              std::ostream& out);
int ShowJob(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out);
// Polls until the job is done or failed (or timeout_s passes), printing each round as it is
// evaluated. Exit code 0 only when done.
int WaitJob(HttpsClient& http, const std::string& token, std::int64_t job_id, double timeout_s,
            std::ostream& out);
int DownloadModel(HttpsClient& http, const std::string& token, std::int64_t job_id,
                  const std::filesystem::path& output, std::ostream& out);
// "accuracy before=<x> after=<y> rounds=<n> donors=<d>": the evaluation of the first and of the
// final model; fails unless the job is done.
int JobResult(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out);
int ListCatalog(HttpsClient& http, const std::string& token, std::ostream& out);

}  // namespace ubcp::client::cli
