// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/economy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "ubcp/coordinator/allocator.h"
#include "ubcp/coordinator/cost_model.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

namespace {

// Periods rolled in one Tick at most: a coordinator that was down for longer catches up over
// several ticks instead of blocking.
constexpr int kMaxRollsPerTick = 1000;

std::int64_t ToCredits(double v) {
  if (!(v > 0)) return 0;
  if (v >= 9.2e18) return INT64_MAX / 2;
  return static_cast<std::int64_t>(v);
}

}  // namespace

PeriodRecord ForecastBudget(const std::vector<PeriodRecord>& closed_newest_first,
                            std::int64_t recipients, std::int64_t starts_at,
                            const EconomyConfig& config) {
  double forecast = static_cast<double>(config.bootstrap_forecast_credits);
  if (!closed_newest_first.empty()) {
    const double alpha = std::clamp(config.forecast_alpha, 0.0, 1.0);
    double ewma = static_cast<double>(closed_newest_first.back().validated_credits);
    for (auto it = closed_newest_first.rbegin() + 1; it != closed_newest_first.rend(); ++it) {
      ewma = alpha * static_cast<double>(it->validated_credits) + (1 - alpha) * ewma;
    }
    forecast = std::max(ewma, forecast);
  }
  PeriodRecord p;
  p.starts_at = starts_at;
  p.ends_at = starts_at + std::max<std::int64_t>(config.period_seconds, 1);
  p.forecast_credits = ToCredits(std::round(forecast));
  p.reserve_credits = std::min(
      p.forecast_credits,
      ToCredits(std::ceil(std::clamp(config.reserve_fraction, 0.0, 1.0) * p.forecast_credits)));
  p.budget_credits = p.forecast_credits - p.reserve_credits;
  p.share_credits = recipients > 0 ? p.budget_credits / recipients : p.budget_credits;
  p.recipients = recipients;
  return p;
}

std::int64_t CarryOverCap(const PeriodRecord& period, const EconomyConfig& config) {
  return ToCredits(std::floor(std::max(config.carry_over_shares, 0.0) * period.share_credits));
}

Economy::Economy(Store& store, EconomyConfig config, Clock clock)
    : store_(store), config_(config), clock_(std::move(clock)) {}

common::Status Economy::RollDue(std::int64_t now) {
  for (int i = 0; i < kMaxRollsPerTick; ++i) {
    UBCP_ASSIGN_OR_RETURN(std::optional<PeriodRecord> open, store_.CurrentPeriod());
    if (open && now < open->ends_at) return {};
    UBCP_ASSIGN_OR_RETURN(std::vector<PeriodRecord> recent, store_.RecentPeriods(64));
    std::vector<PeriodRecord> closed;
    for (const auto& p : recent) {
      if (p.closed) closed.push_back(p);
    }
    if (open) {
      // The period being closed counts with what it validated.
      PeriodRecord closing = *open;
      UBCP_ASSIGN_OR_RETURN(closing.validated_credits,
                            store_.ValidatedCreditsBetween(open->starts_at, open->ends_at));
      closed.insert(closed.begin(), closing);
    }
    UBCP_ASSIGN_OR_RETURN(std::vector<RecipientUsage> recipients,
                          store_.RecipientUsages(now, config_.usage_half_life_s));
    // Periods follow each other without gaps; the first starts now.
    const std::int64_t starts_at = open ? open->ends_at : now;
    PeriodRoll roll;
    roll.close_id = open ? open->id : 0;
    roll.next =
        ForecastBudget(closed, static_cast<std::int64_t>(recipients.size()), starts_at, config_);
    roll.carry_cap_credits = open ? CarryOverCap(*open, config_) : 0;
    roll.now = now;
    auto next = store_.RollPeriod(roll);
    if (!next) {
      if (next.error().code == Errc::kConflict) continue;  // another process rolled first
      return next.error();
    }
    spdlog::info(
        "period {} opens: B = {} (forecast {}, reserve {}), share {} for each of {} recipients",
        next->id, DescribeCredits(next->budget_credits), DescribeCredits(next->forecast_credits),
        DescribeCredits(next->reserve_credits), DescribeCredits(next->share_credits),
        next->recipients);
  }
  return {};
}

common::Status Economy::Tick() {
  {
    std::lock_guard lock(mu_);
    UBCP_RETURN_IF_ERROR(RollDue(clock_()));
  }
  return AdmitQueued();
}

common::Result<PeriodRecord> Economy::OpenPeriod() {
  std::lock_guard lock(mu_);
  UBCP_RETURN_IF_ERROR(RollDue(clock_()));
  UBCP_ASSIGN_OR_RETURN(std::optional<PeriodRecord> open, store_.CurrentPeriod());
  if (!open) return MakeError(Errc::kInternal, "no open period after rolling");
  return *open;
}

common::Status Economy::AdmitQueued() {
  std::lock_guard lock(mu_);
  const std::int64_t now = clock_();
  UBCP_RETURN_IF_ERROR(RollDue(now));
  UBCP_ASSIGN_OR_RETURN(std::vector<JobRecord> queued, store_.ListQueuedJobs());
  if (queued.empty()) return {};
  UBCP_ASSIGN_OR_RETURN(std::optional<PeriodRecord> period, store_.CurrentPeriod());
  if (!period) return MakeError(Errc::kInternal, "no open period");
  UBCP_ASSIGN_OR_RETURN(std::vector<RecipientUsage> usages,
                        store_.RecipientUsages(now, config_.usage_half_life_s));

  // Amounts go to the allocator in credits (exact in double below 2^53).
  AllocationSnapshot snapshot;
  snapshot.budget_flop = static_cast<double>(
      std::max<std::int64_t>(0, period->budget_credits - period->admitted_credits));
  snapshot.share_flop = static_cast<double>(std::max<std::int64_t>(1, period->share_credits));
  for (const RecipientUsage& u : usages) {
    snapshot.recipients.push_back(
        {u.account_id, static_cast<double>(std::max<std::int64_t>(0, u.balance_credits)),
         u.recent_usage_credits});
  }
  std::set<std::int64_t> recipients;
  for (const RecipientUsage& u : usages) recipients.insert(u.account_id);
  for (const JobRecord& j : queued) {
    // Only recipients' jobs compete for the budget (an admin's account has no share).
    if (j.price_credits <= 0 || !recipients.contains(j.account_id)) continue;
    snapshot.jobs.push_back(
        {j.id, j.account_id, static_cast<double>(j.price_credits), j.created_at});
  }
  if (snapshot.jobs.empty()) return {};
  UBCP_ASSIGN_OR_RETURN(Allocation allocation, Allocate(snapshot));
  for (std::int64_t job_id : allocation.admitted) {
    auto admitted = store_.AdmitJob(job_id, period->id, now);
    if (!admitted) {
      // Credits moved since the snapshot (a grant, another job): the job waits for the next pass.
      spdlog::warn("job {} not admitted: {}", job_id, admitted.error().ToString());
      continue;
    }
    if (*admitted) spdlog::info("job {} admitted in period {}", job_id, period->id);
  }
  return {};
}

}  // namespace ubcp::coordinator
