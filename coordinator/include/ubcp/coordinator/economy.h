// SPDX-License-Identifier: Apache-2.0
#pragma once
// The compute economy's clockwork (docs/ECONOMY.md): allocation periods, the budget B(t), the
// basic share every recipient receives, and admitting queued jobs with the allocator. Decisions
// are pure functions (ForecastBudget, the allocator); Economy only gathers their inputs from the
// store and writes their outputs back, each step in one store transaction.

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "ubcp/common/result.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {

struct EconomyConfig {
  std::int64_t period_seconds = 30LL * 24 * 3600;  // a month
  // Part of the forecast held back for verification overhead (replication, re-issued units).
  double reserve_fraction = 0.10;
  // Weight of the newest closed period in the exponentially weighted forecast.
  double forecast_alpha = 0.5;
  // The forecast before any period has closed, and its floor afterwards (a period without
  // demand validates little work; the floor keeps B from collapsing to zero). Credits.
  std::int64_t bootstrap_forecast_credits = 100'000'000;  // 10^14 FLOP
  // At each period's end, what a recipient holds above carry_over_shares x the period's share
  // expires; 0 expires everything unspent.
  double carry_over_shares = 2.0;
  // Half-life of past usage in the allocator's priority.
  double usage_half_life_s = 7.0 * 24 * 3600;
};

// The next period's figures from the closed periods (newest first), pure:
//   forecast = max(EWMA_alpha(validated credits of the closed periods, oldest to newest),
//                  bootstrap_forecast_credits)   (just the bootstrap when none has closed)
//   reserve  = ceil(reserve_fraction x forecast), budget B = forecast - reserve,
//   share    = floor(B / recipients) (B itself when there is no recipient yet).
PeriodRecord ForecastBudget(const std::vector<PeriodRecord>& closed_newest_first,
                            std::int64_t recipients, std::int64_t starts_at,
                            const EconomyConfig& config);
// The carry-over cap at the end of `period`.
std::int64_t CarryOverCap(const PeriodRecord& period, const EconomyConfig& config);

using Clock = std::function<std::int64_t()>;

class Economy {
 public:
  Economy(Store& store, EconomyConfig config, Clock clock);

  const EconomyConfig& config() const { return config_; }

  // Opens the first period, or rolls every period that has ended (closing it, expiring,
  // issuing the next share), then admits what the budget allows. Safe to call any time, from
  // any thread; a second caller finds nothing to do.
  common::Status Tick();
  // Runs the allocator on the queued jobs against the open period's remaining budget and each
  // recipient's credits, and admits its choice in priority order.
  common::Status AdmitQueued();
  // The open period (opening the first one if needed).
  common::Result<PeriodRecord> OpenPeriod();

 private:
  common::Status RollDue(std::int64_t now);

  Store& store_;
  EconomyConfig config_;
  Clock clock_;
  std::mutex mu_;  // one roll or allocation at a time; the store keeps each step atomic
};

}  // namespace ubcp::coordinator
