// SPDX-License-Identifier: Apache-2.0
#pragma once
// The allocator of the compute economy: each period it chooses which queued jobs run.
//
//   maximize   sum_j U_j x_j,   U_j = p_i(j) * E_j,   p_i = s / (s + u_i)
//   subject to sum_j E_j x_j <= B                       (the period's budget, FLOP)
//              sum_{j of i} E_j x_j <= C_i  for each i  (each recipient's credits, FLOP)
//              x_j in {0, 1}                            (a job is admitted whole)
//
// E_j is a job's price, u_i its recipient's recent (decayed) usage and s the basic share per
// recipient. p_i is the derivative of the concave welfare s * ln(1 + u_i / s) at the recipient's
// usage, so U_j is the first-order gain in proportional-fair welfare from serving E_j: light users
// come first, and the objective stays linear in x so that an integer-programming solver optimises
// exactly the same problem (docs/ECONOMY.md, "Allocation", explains the choice and the bounds).
//
// Pure policy code: a snapshot in, decisions out; no I/O, no clock, no randomness, no state.
// The result depends only on the snapshot's contents, not on the order of its vectors. Every
// function here is thread-compatible (it touches only its arguments). Arithmetic is in double:
// exact when prices, credits and budget are integers whose sums stay below 2^53.

#include <cstdint>
#include <string>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::coordinator {

struct AllocationRecipient {
  std::int64_t id = 0;
  double credits_flop = 0;  // C_i: what the jobs admitted for this recipient may cost in total
  double usage_flop = 0;    // u_i: recent usage, already decayed by the caller
};

struct AllocationJob {
  std::int64_t id = 0;
  std::int64_t recipient_id = 0;
  double price_flop = 0;       // E_j > 0
  std::int64_t queued_at = 0;  // earlier queued wins ties (then the smaller id)
};

struct AllocationSnapshot {
  double budget_flop = 0;  // B(t): the period's budget
  double share_flop = 1;   // s > 0: the basic share per recipient in the priority formula
  std::vector<AllocationRecipient> recipients;  // ids unique
  std::vector<AllocationJob> jobs;              // ids unique; each recipient_id must be listed
};

enum class AllocationMethod {
  kAuto,  // exact for at most AllocationOptions::exact_max_jobs candidate jobs, else fast
  // Branch and bound with the fractional bound, started from the fast solution; optimal unless
  // the node limit stops it. At most 200 candidate jobs (jobs that fit on their own).
  kExact,
  // O(n log n + 2^13 per recipient): greedy by utility density (recipient priority, then queue
  // order), class by class of equal priority, each class's fill improved (exact subset-sum fill of
  // a window of each recipient's jobs, then swaps) before the next class is served, then swap
  // repair across classes; never worse than the plain greedy, whose a priori bound docs/ECONOMY.md
  // proves.
  kFast,
};

struct AllocationOptions {
  AllocationMethod method = AllocationMethod::kAuto;
  int exact_max_jobs = 40;  // kAuto's threshold, counted over jobs that could fit at all
  // Branch-and-bound nodes before the exact method stops with its best solution so far
  // (Allocation::optimal is then false unless the fractional bound is reached).
  std::int64_t exact_node_limit = 2'000'000;
  // Sweeps of the fast method's swap passes; 0: the plain greedy, without any improvement.
  int repair_passes = 2;
};

enum class JobVerdict {
  kAdmitted,
  kNeverFits,  // its price exceeds the recipient's credits or the budget: never admitted
  kDeferred,   // could fit on its own but was not chosen this period
};

struct JobDecision {
  std::int64_t job_id = 0;
  JobVerdict verdict = JobVerdict::kDeferred;
  double utility = 0;  // U_j, whether admitted or not
};

struct RecipientCharge {
  std::int64_t recipient_id = 0;
  double flop = 0;  // total price of its admitted jobs: reserve this from its credits
};

struct Allocation {
  std::vector<std::int64_t> admitted;    // admitted job ids in priority (dispatch) order
  std::vector<JobDecision> decisions;    // one per job, sorted by job id
  std::vector<RecipientCharge> charges;  // one per recipient with an admitted job, by id
  double utility = 0;                    // sum of U_j over admitted jobs
  double flop = 0;                       // sum of E_j over admitted jobs (<= budget)
  // The optimum of the fractional relaxation (0 <= x_j <= 1, jobs that never fit at 0):
  // utility <= optimum <= upper_bound, a certificate of the gap for every allocation.
  double upper_bound = 0;
  AllocationMethod method = AllocationMethod::kFast;  // the method that ran (never kAuto)
  bool optimal = false;                               // proven optimal (to a relative 1e-12)
  std::int64_t nodes = 0;  // branch-and-bound nodes explored (0 for the fast method)
};

// p = s / (s + u) = 1 / (1 + u / s), in (0, 1]; 1 for a recipient who used nothing.
double RecipientPriority(double usage_flop, double share_flop);

// Chooses the jobs to run. kInvalidArgument for a NaN, infinite or negative number, a price or
// share that is not positive, duplicate ids, or a job whose recipient is not in the snapshot;
// kTooLarge for kExact with more than 200 candidate jobs.
common::Result<Allocation> Allocate(const AllocationSnapshot& snapshot,
                                    const AllocationOptions& options = {});

// The optimum of the fractional relaxation (same validation as Allocate), in O(n log n).
common::Result<double> FractionalBound(const AllocationSnapshot& snapshot);

// The same integer program in CPLEX LP format for an external solver (GLPK's glpsol --lp):
// variable x<k> is snapshot.jobs[k]; prices, credits, budget and utilities are divided by
// flop_unit (> 0) to keep the solver's numbers near 1. Pure: returns the text, writes nothing.
common::Result<std::string> AllocationToCplexLp(const AllocationSnapshot& snapshot,
                                                double flop_unit);

}  // namespace ubcp::coordinator
