// SPDX-License-Identifier: Apache-2.0
#pragma once
// Commands of the `ubcp` tool about credits: a recipient's balance, a job's price before it is
// submitted, the recipient's jobs, cancelling one; an admin's grant. Each returns the process
// exit code and prints for a person (errors on stderr).

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>

#include "ubcp/client/https_client.h"

namespace ubcp::client::cli {

int ShowCredits(HttpsClient& http, const std::string& token, std::ostream& out);
// `ubcp submit --dry-run`: the price and whether the credits cover it; exit 0 only if they do.
int QuoteJob(HttpsClient& http, const std::string& token, const std::filesystem::path& spec_file,
             std::ostream& out);
int ListJobs(HttpsClient& http, const std::string& token, std::ostream& out);
int CancelJob(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out);
// `ubcp admin capacity`: donors online, validated work, B, credits issued and spent, the queue
// and the current period's allocation.
// `ubcp leaderboard`: donors who opted in, and teams (public; no token needed).
int ShowLeaderboard(HttpsClient& http, std::ostream& out);
int AdminCapacity(HttpsClient& http, const std::string& token, std::ostream& out);
int AdminGrant(HttpsClient& http, const std::string& token, const std::string& account,
               std::int64_t credits, const std::string& key, const std::string& memo,
               std::ostream& out);

}  // namespace ubcp::client::cli
