// SPDX-License-Identifier: Apache-2.0
#include "cli/economy_commands.h"

#include <algorithm>
#include <cstdio>
#include <ostream>

#include "cli/recipient_commands.h"
#include "ubcp/common/wire.h"

namespace ubcp::client::cli {
namespace {

// Credits are whole MFLOP; people read FLOP and PFLOP/s-days.
std::string Describe(std::int64_t credits) {
  const double flop = static_cast<double>(credits) * 1e6;
  char text[128];
  std::snprintf(text, sizeof text, "%lld credits (%.3g FLOP, %.3g PFLOP/s-days)",
                static_cast<long long>(credits), flop, flop / (1e15 * 86400.0));
  return text;
}

}  // namespace

int ShowCredits(HttpsClient& http, const std::string& token, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/credits");
  if (!body) return PrintError(body.error());
  auto c = common::ParseCreditsStatus(*body);
  if (!c) return PrintError(c.error());
  out << "account " << c->account << "\n"
      << "  available " << Describe(c->balance_credits) << "\n"
      << "  reserved  " << Describe(c->reserved_credits) << " (running jobs)\n"
      << "  spent     " << Describe(c->spent_credits) << "\n";
  return 0;
}

int QuoteJob(HttpsClient& http, const std::string& token, const std::filesystem::path& spec_file,
             std::ostream& out) {
  auto spec = ReadSpecFile(spec_file);
  if (!spec) return PrintError(spec.error());
  auto body = Call(http, token, "POST", "/v1/jobs/quote", *spec);
  if (!body) return PrintError(body.error());
  auto q = common::ParseJobQuote(*body);
  if (!q) return PrintError(q.error());
  out << "price " << Describe(q->price_credits) << "\n"
      << "  " << q->train_units << " finetune units, " << q->eval_units << " eval units, x"
      << q->replication << " replication\n"
      << "  available " << Describe(q->balance_credits) << ": "
      << (q->affordable ? "affordable" : "NOT affordable") << "\n";
  return q->affordable ? 0 : 1;
}

int ListJobs(HttpsClient& http, const std::string& token, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/jobs");
  if (!body) return PrintError(body.error());
  auto list = common::ParseJobList(*body);
  if (!list) return PrintError(list.error());
  if (list->jobs.empty()) out << "no jobs\n";
  for (const auto& j : list->jobs) {
    out << j.job_id << "  " << j.state << "  round " << j.current_round << "/" << j.rounds << "  "
        << Describe(j.price_credits) << "  " << j.name << "\n";
  }
  return 0;
}

int CancelJob(HttpsClient& http, const std::string& token, std::int64_t job_id, std::ostream& out) {
  auto body = Call(http, token, "POST", "/v1/jobs/" + std::to_string(job_id) + "/cancel");
  if (!body) return PrintError(body.error());
  auto status = common::ParseJobStatus(*body);
  if (!status) return PrintError(status.error());
  out << "job " << status->job_id << " is " << status->state << "\n";
  return 0;
}

int ShowLeaderboard(HttpsClient& http, std::ostream& out) {
  auto body = Call(http, "", "GET", "/v1/leaderboard");
  if (!body) return PrintError(body.error());
  auto board = common::ParseLeaderboard(*body);
  if (!board) return PrintError(board.error());
  out << "donors (validated work; recent = credits/day, 7-day half-life):\n";
  int rank = 0;
  for (const auto& d : board->donors) {
    char line[256];
    std::snprintf(line, sizeof line, "  %3d. %-24s %-16s %14lld credits  %10.1f recent  %lld units",
                  ++rank, d.name.c_str(), d.team.c_str(), static_cast<long long>(d.points_credits),
                  d.recent_credits_per_day, static_cast<long long>(d.units));
    out << line << "\n";
  }
  out << "teams:\n";
  rank = 0;
  for (const auto& t : board->teams) {
    char line[256];
    std::snprintf(line, sizeof line, "  %3d. %-24s %3lld donors %14lld credits  %10.1f recent",
                  ++rank, t.team.c_str(), static_cast<long long>(t.donors),
                  static_cast<long long>(t.points_credits), t.recent_credits_per_day);
    out << line << "\n";
  }
  return 0;
}

int AdminCapacity(HttpsClient& http, const std::string& token, std::ostream& out) {
  auto body = Call(http, token, "GET", "/v1/admin/capacity");
  if (!body) return PrintError(body.error());
  auto r = common::ParseCapacityReport(*body);
  if (!r) return PrintError(r.error());
  const common::PeriodSummary& p = r->period;
  out << "donors: " << r->hosts_online << " online of " << r->hosts_registered
      << " registered; validated work so far " << Describe(r->validated_total_credits) << "\n";
  if (r->gpus) {
    out << "GPUs online: " << r->gpus->cuda_devices << " CUDA device(s) on " << r->gpus->cuda_hosts
        << " host(s); " << r->gpus->unusable_gpus << " NVIDIA GPU(s) on " << r->gpus->unusable_hosts
        << " host(s) their libtorch cannot use\n";
  }
  out << "period " << p.id << " (" << (p.ends_at - p.starts_at) << " s, ends in "
      << std::max<std::int64_t>(0, p.ends_at - r->now) << " s):\n"
      << "  B         " << Describe(p.budget_credits) << "\n"
      << "  forecast  " << Describe(p.forecast_credits) << ", reserve "
      << Describe(p.reserve_credits) << "\n"
      << "  share     " << Describe(p.share_credits) << " for each of " << p.recipients
      << " recipients\n"
      << "  issued    " << Describe(p.issued_credits) << "\n"
      << "  spent     " << Describe(p.spent_credits) << "\n"
      << "  validated " << Describe(p.validated_credits) << "\n"
      << "  admitted  " << Describe(p.admitted_credits) << " in " << r->admitted.size()
      << " jobs; queue: " << r->queue_length << " waiting\n";
  for (const auto& j : r->admitted) {
    out << "    job " << j.job_id << " " << j.state << " " << Describe(j.price_credits) << " "
        << j.name << "\n";
  }
  for (const auto& h : r->history) {
    out << "  period " << h.id << ": B " << Describe(h.budget_credits) << ", validated "
        << Describe(h.validated_credits) << ", expired " << Describe(h.expired_credits) << "\n";
  }
  return 0;
}

int AdminGrant(HttpsClient& http, const std::string& token, const std::string& account,
               std::int64_t credits, const std::string& key, const std::string& memo,
               std::ostream& out) {
  common::GrantRequest grant;
  grant.account = account;
  grant.credits = credits;
  grant.key = key;
  grant.memo = memo;
  auto body = Call(http, token, "POST", "/v1/admin/grants", common::SerializeGrantRequest(grant));
  if (!body) return PrintError(body.error());
  auto c = common::ParseCreditsStatus(*body);
  if (!c) return PrintError(c.error());
  out << "granted (key " << key << "); " << c->account << " now has "
      << Describe(c->balance_credits) << " available\n";
  return 0;
}

}  // namespace ubcp::client::cli
