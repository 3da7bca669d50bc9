// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/allocator.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

namespace ubcp::coordinator {
namespace {
using common::Errc;
using common::MakeError;
using common::Result;

// Relative tolerance for "strictly better": keeps floating-point noise from flipping decisions.
constexpr double kRelEps = 1e-12;
// The exact method's recursion depth and per-node work grow with the candidate count.
constexpr std::size_t kExactHardMaxJobs = 200;
// The most jobs of one recipient that ExactFill rearranges at once (2 * 2^12 subset sums).
constexpr std::size_t kExactFillMaxJobs = 24;

// A job in priority order: utility density (= its recipient's priority) descending, then queue
// time, then id. Every method walks jobs in this one total order, which is why the result does
// not depend on the order of the snapshot's vectors.
struct Item {
  std::int64_t id = 0;
  std::int64_t queued_at = 0;
  int rec = 0;  // index into Problem::rec_ids
  double price = 0;
  double priority = 0;
  double utility = 0;
  bool candidate = false;  // price <= budget and price <= the recipient's credits
};

struct Problem {
  double budget = 0;
  std::vector<std::int64_t> rec_ids;  // sorted
  std::vector<double> credits;        // by recipient index
  std::vector<double> priority;       // by recipient index
  std::vector<Item> items;            // all jobs, in priority order
  std::vector<int> candidates;        // indices into items of jobs that can fit, in order
};

bool NonNegativeFinite(double v) { return std::isfinite(v) && v >= 0; }

Result<Problem> BuildProblem(const AllocationSnapshot& s) {
  if (!NonNegativeFinite(s.budget_flop)) {
    return MakeError(Errc::kInvalidArgument, "budget must be finite and non-negative");
  }
  if (!std::isfinite(s.share_flop) || !(s.share_flop > 0)) {
    return MakeError(Errc::kInvalidArgument, "share must be finite and positive");
  }
  Problem p;
  p.budget = s.budget_flop;

  std::vector<const AllocationRecipient*> recs;
  recs.reserve(s.recipients.size());
  for (const auto& r : s.recipients) {
    if (!NonNegativeFinite(r.credits_flop) || !NonNegativeFinite(r.usage_flop)) {
      return MakeError(Errc::kInvalidArgument, "recipient " + std::to_string(r.id) +
                                                   ": credits and usage must be finite and "
                                                   "non-negative");
    }
    recs.push_back(&r);
  }
  std::sort(recs.begin(), recs.end(), [](auto* a, auto* b) { return a->id < b->id; });
  for (std::size_t i = 0; i < recs.size(); ++i) {
    if (i > 0 && recs[i]->id == recs[i - 1]->id) {
      return MakeError(Errc::kInvalidArgument,
                       "duplicate recipient " + std::to_string(recs[i]->id));
    }
    p.rec_ids.push_back(recs[i]->id);
    p.credits.push_back(recs[i]->credits_flop);
    p.priority.push_back(RecipientPriority(recs[i]->usage_flop, s.share_flop));
  }

  p.items.reserve(s.jobs.size());
  for (const auto& j : s.jobs) {
    if (!std::isfinite(j.price_flop) || !(j.price_flop > 0)) {
      return MakeError(Errc::kInvalidArgument,
                       "job " + std::to_string(j.id) + ": price must be finite and positive");
    }
    auto it = std::lower_bound(p.rec_ids.begin(), p.rec_ids.end(), j.recipient_id);
    if (it == p.rec_ids.end() || *it != j.recipient_id) {
      return MakeError(
          Errc::kInvalidArgument,
          "job " + std::to_string(j.id) + ": unknown recipient " + std::to_string(j.recipient_id));
    }
    Item item;
    item.id = j.id;
    item.queued_at = j.queued_at;
    item.rec = static_cast<int>(it - p.rec_ids.begin());
    item.price = j.price_flop;
    item.priority = p.priority[item.rec];
    item.utility = item.priority * item.price;
    item.candidate = item.price <= p.budget && item.price <= p.credits[item.rec];
    p.items.push_back(item);
  }
  std::sort(p.items.begin(), p.items.end(), [](const Item& a, const Item& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.queued_at != b.queued_at) return a.queued_at < b.queued_at;
    return a.id < b.id;
  });
  {
    std::vector<std::int64_t> ids;
    ids.reserve(p.items.size());
    for (const auto& item : p.items) ids.push_back(item.id);
    std::sort(ids.begin(), ids.end());
    auto dup = std::adjacent_find(ids.begin(), ids.end());
    if (dup != ids.end()) {
      return MakeError(Errc::kInvalidArgument, "duplicate job " + std::to_string(*dup));
    }
  }
  for (std::size_t k = 0; k < p.items.size(); ++k) {
    if (p.items[k].candidate) p.candidates.push_back(static_cast<int>(k));
  }
  return p;
}

// Fractional relaxation over candidates: every job's density is its recipient's priority, so
// filling in priority order, each job up to the budget and credits left, is optimal for the LP.
double FractionalBoundOf(const Problem& p) {
  double budget_left = p.budget;
  std::vector<double> credits_left = p.credits;
  double bound = 0;
  for (int k : p.candidates) {
    if (budget_left <= 0) break;
    const Item& it = p.items[k];
    const double take = std::min({it.price, budget_left, credits_left[it.rec]});
    if (take <= 0) continue;
    bound += it.priority * take;
    budget_left -= take;
    credits_left[it.rec] -= take;
  }
  return bound;
}

// Which items are admitted, with the running totals the checks need.
struct Selection {
  explicit Selection(const Problem& p) : in(p.items.size(), 0), rec_used(p.rec_ids.size(), 0.0) {}
  std::vector<char> in;
  double used = 0;
  std::vector<double> rec_used;
};

bool FitsNow(const Problem& p, const Selection& sel, const Item& it) {
  return sel.used + it.price <= p.budget && sel.rec_used[it.rec] + it.price <= p.credits[it.rec];
}

void Admit(const Problem& p, Selection& sel, int k) {
  sel.in[k] = 1;
  sel.used += p.items[k].price;
  sel.rec_used[p.items[k].rec] += p.items[k].price;
}

void Drop(const Problem& p, Selection& sel, int k) {
  sel.in[k] = 0;
  sel.used -= p.items[k].price;
  sel.rec_used[p.items[k].rec] -= p.items[k].price;
}

// Subset sums of prices[0..count) in ascending order (ties by mask), each with its subset.
std::vector<std::pair<double, std::uint32_t>> SortedSubsetSums(const std::vector<double>& prices,
                                                               std::size_t from,
                                                               std::size_t count) {
  std::vector<std::pair<double, std::uint32_t>> sums = {{0.0, 0u}}, shifted, merged;
  for (std::size_t b = 0; b < count; ++b) {
    shifted = sums;
    for (auto& [sum, mask] : shifted) {
      sum += prices[from + b];
      mask |= std::uint32_t{1} << b;
    }
    merged.resize(2 * sums.size());
    std::merge(sums.begin(), sums.end(), shifted.begin(), shifted.end(), merged.begin());
    sums.swap(merged);
  }
  return sums;
}

// A window of one recipient's jobs (all of one class, so all worth the same per FLOP): replaces
// the window's admitted jobs by the subset of largest total price that fits the credits and
// budget left, found by meet in the middle over the two halves' sorted subset sums (2 * 2^12 at
// most). Kept only if it fills strictly more.
void ExactFill(const Problem& p, Selection& sel, const std::vector<int>& jobs) {
  const int rec = p.items[jobs[0]].rec;
  double window_filled = 0;
  for (int k : jobs) window_filled += sel.in[k] ? p.items[k].price : 0.0;
  const double filled = sel.rec_used[rec];
  // Room for the window: what it holds now plus what is left of credits and budget.
  const double room = std::min(p.credits[rec] - filled, p.budget - sel.used);
  if (!(room > 0)) return;  // already full: nothing to gain
  const double target = window_filled + room;
  std::vector<double> prices;
  for (int k : jobs) prices.push_back(p.items[k].price);
  const std::size_t half = jobs.size() / 2;
  const auto left = SortedSubsetSums(prices, 0, half);
  const auto right = SortedSubsetSums(prices, half, jobs.size() - half);
  double best = window_filled;
  std::uint32_t best_left = 0, best_right = 0;
  bool found = false;
  std::size_t r = right.size();
  for (const auto& [sum, mask] : left) {
    while (r > 0 && sum + right[r - 1].first > target) --r;
    if (r == 0) break;
    if (sum + right[r - 1].first > best) {
      best = sum + right[r - 1].first;
      best_left = mask;
      best_right = right[r - 1].second;
      found = true;
    }
  }
  if (!found) return;
  const double used_before = sel.used;
  std::uint32_t in_before = 0;
  for (std::size_t b = 0; b < jobs.size(); ++b) {
    if (sel.in[jobs[b]]) in_before |= std::uint32_t{1} << b;
  }
  const std::uint32_t chosen = best_left | best_right << half;
  for (std::size_t b = 0; b < jobs.size(); ++b) {
    if (sel.in[jobs[b]] && !(chosen >> b & 1)) Drop(p, sel, jobs[b]);
  }
  for (std::size_t b = 0; b < jobs.size(); ++b) {
    if (!sel.in[jobs[b]] && (chosen >> b & 1)) Admit(p, sel, jobs[b]);
  }
  // Sums in another order can round differently when prices are not integers: undo exactly.
  if (sel.used > p.budget || sel.rec_used[rec] > p.credits[rec] || sel.rec_used[rec] <= filled) {
    for (std::size_t b = 0; b < jobs.size(); ++b) sel.in[jobs[b]] = (in_before >> b & 1) != 0;
    sel.used = used_before;
    sel.rec_used[rec] = filled;
  }
}

// The jobs ExactFill may rearrange for a recipient (the others stay as they are): all of them
// when there are at most kExactFillMaxJobs, else about half deferred and half admitted, each
// half spread evenly over its price range (both lists are sorted by price), so that there are
// small jobs to fine-tune the fill and large ones to exchange.
void ChooseWindow(const std::vector<int>& admitted, const std::vector<int>& deferred,
                  std::vector<int>& window) {
  const std::size_t size = std::min(kExactFillMaxJobs, admitted.size() + deferred.size());
  const std::size_t from_deferred =
      std::min(deferred.size(), std::max(size / 2, size - std::min(admitted.size(), size)));
  const std::size_t from_admitted = size - from_deferred;
  window.clear();
  for (std::size_t i = 0; i < from_deferred; ++i) {
    window.push_back(deferred[i * deferred.size() / from_deferred]);
  }
  for (std::size_t i = 0; i < from_admitted; ++i) {
    window.push_back(admitted[i * admitted.size() / from_admitted]);
  }
}

// Within one priority class every admitted FLOP is worth the same, so what the greedy loses
// there is fill: the credits (or budget) left over because the next job in queue order did not
// fit. First each recipient with a deferred job gets an exact fill of a window of its jobs;
// then each sweep walks the class's deferred jobs in priority order and lets one replace the
// smallest admitted job of the class that makes room for it, when that raises the fill: one of
// the same recipient when its credits are short, any of the class when only the budget is.
// A last sweep admits whatever fits. Lower classes have not been served yet, so none of this
// takes budget from a more deserving job.
void ImproveClass(const Problem& p, Selection& sel, const std::vector<int>& jobs, int passes,
                  std::vector<std::set<std::pair<double, int>>>& own) {
  // `own` is empty on entry and on return; here it gathers each recipient's jobs by price.
  std::vector<int> order;  // recipients in the order their first job appears
  for (int k : jobs) {
    auto& mine = own[p.items[k].rec];
    if (mine.empty()) order.push_back(p.items[k].rec);
    mine.insert({p.items[k].price, k});
  }
  std::vector<int> admitted, deferred, window;
  for (int r : order) {
    admitted.clear();
    deferred.clear();
    for (const auto& entry : own[r]) {
      (sel.in[entry.second] ? admitted : deferred).push_back(entry.second);
    }
    own[r].clear();
    if (deferred.empty()) continue;
    ChooseWindow(admitted, deferred, window);
    ExactFill(p, sel, window);
  }

  std::set<std::pair<double, int>> all;
  for (int k : jobs) {
    if (!sel.in[k]) continue;
    all.insert({p.items[k].price, k});
    own[p.items[k].rec].insert({p.items[k].price, k});
  }
  for (int pass = 0; pass < passes; ++pass) {
    bool changed = false;
    for (int j : jobs) {
      if (sel.in[j]) continue;
      const Item& it = p.items[j];
      const double budget_room = p.budget - sel.used;
      const double credit_room = p.credits[it.rec] - sel.rec_used[it.rec];
      int out = -1;
      if (it.price <= budget_room && it.price <= credit_room) {
        out = j;  // fits as it is
      } else {
        const bool credits_short = it.price > credit_room;
        const auto& pool = credits_short ? own[it.rec] : all;
        const double room = credits_short ? std::min(credit_room, budget_room) : budget_room;
        auto found = pool.lower_bound({it.price - room, -1});
        if (found == pool.end() || !(found->first < it.price)) continue;
        out = found->second;
        const Item& o = p.items[out];
        const double rec_after =
            sel.rec_used[it.rec] + it.price - (o.rec == it.rec ? o.price : 0.0);
        if (sel.used - o.price + it.price > p.budget || rec_after > p.credits[it.rec]) continue;
        all.erase({o.price, out});
        own[o.rec].erase({o.price, out});
        Drop(p, sel, out);
      }
      Admit(p, sel, j);
      all.insert({it.price, j});
      own[it.rec].insert({it.price, j});
      changed = true;
    }
    if (!changed) break;
  }
  for (int k : jobs) {
    own[p.items[k].rec].clear();
    if (!sel.in[k] && FitsNow(p, sel, p.items[k])) Admit(p, sel, k);
  }
}

// Greedy by density (priority order, so queue order within a class), skipping what does not fit
// and going on; class by class, each class improved before the next one is served.
void ClassGreedy(const Problem& p, Selection& sel, int passes) {
  std::vector<std::set<std::pair<double, int>>> own(passes > 0 ? p.rec_ids.size() : 0);
  std::vector<int> cls;
  for (std::size_t a = 0; a < p.candidates.size();) {
    cls.clear();
    const double priority = p.items[p.candidates[a]].priority;
    for (; a < p.candidates.size() && p.items[p.candidates[a]].priority == priority; ++a) {
      cls.push_back(p.candidates[a]);
    }
    bool deferred = false;
    for (int k : cls) {
      if (FitsNow(p, sel, p.items[k])) {
        Admit(p, sel, k);
      } else {
        deferred = true;
      }
    }
    if (passes > 0 && deferred) ImproveClass(p, sel, cls, passes, own);
  }
}

// Minimum (utility, position) over positions, +inf where nothing is admitted.
class MinTree {
 public:
  explicit MinTree(std::size_t n) : size_(1) {
    while (size_ < n) size_ *= 2;
    nodes_.assign(2 * size_, Entry{kInf, -1});
  }
  void Set(std::size_t pos, double utility) {
    std::size_t i = pos + size_;
    nodes_[i] = Entry{utility, utility == kInf ? -1 : static_cast<int>(pos)};
    for (i /= 2; i >= 1; i /= 2) nodes_[i] = std::min(nodes_[2 * i], nodes_[2 * i + 1]);
  }
  // The smallest utility at a position >= from, ties to the smaller position; -1 if none.
  int SuffixMin(std::size_t from) const {
    Entry best{kInf, -1};
    std::size_t lo = from + size_, hi = 2 * size_;  // half-open [lo, hi)
    while (lo < hi) {
      if (lo & 1) best = std::min(best, nodes_[lo++]);
      if (hi & 1) best = std::min(best, nodes_[--hi]);
      lo /= 2;
      hi /= 2;
    }
    return best.second;
  }

 private:
  using Entry = std::pair<double, int>;
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  std::size_t size_;
  std::vector<Entry> nodes_;
};

// Across classes, fill and swap: each sweep walks the deferred candidates in priority order; one
// that fits now is admitted, otherwise it replaces the admitted job of least utility whose
// removal makes room, when that strictly raises the total. Every change raises the objective, so
// it cannot cycle. On return no deferred candidate fits in what is left.
void Repair(const Problem& p, Selection& sel, int passes) {
  const std::size_t n = p.candidates.size();
  if (n == 0 || passes <= 0) return;
  // Positions: candidates by price ascending (ties by priority order).
  std::vector<int> by_price(p.candidates);
  std::stable_sort(by_price.begin(), by_price.end(),
                   [&](int a, int b) { return p.items[a].price < p.items[b].price; });
  std::vector<double> price_at(n);
  std::vector<std::size_t> pos_of(p.items.size(), 0);
  for (std::size_t q = 0; q < n; ++q) {
    price_at[q] = p.items[by_price[q]].price;
    pos_of[by_price[q]] = q;
  }
  MinTree tree(n);
  std::vector<std::set<std::pair<double, int>>> admitted_of(p.rec_ids.size());
  for (int k : p.candidates) {
    if (!sel.in[k]) continue;
    tree.Set(pos_of[k], p.items[k].utility);
    admitted_of[p.items[k].rec].insert({p.items[k].price, k});
  }
  auto admit = [&](int k) {
    Admit(p, sel, k);
    tree.Set(pos_of[k], p.items[k].utility);
    admitted_of[p.items[k].rec].insert({p.items[k].price, k});
  };
  auto drop = [&](int k) {
    Drop(p, sel, k);
    tree.Set(pos_of[k], std::numeric_limits<double>::infinity());
    admitted_of[p.items[k].rec].erase({p.items[k].price, k});
  };
  auto swap_ok = [&](int out, const Item& in) {
    const Item& o = p.items[out];
    if (sel.used - o.price + in.price > p.budget) return false;
    const double rec_after = sel.rec_used[in.rec] + in.price - (o.rec == in.rec ? o.price : 0.0);
    return rec_after <= p.credits[in.rec] && o.utility < in.utility &&
           in.utility - o.utility > kRelEps * in.utility;
  };

  for (int pass = 0; pass < passes; ++pass) {
    bool changed = false;
    for (int j : p.candidates) {
      if (sel.in[j]) continue;
      const Item& it = p.items[j];
      if (FitsNow(p, sel, it)) {
        admit(j);
        changed = true;
        continue;
      }
      int out = -1;
      if (sel.rec_used[it.rec] + it.price <= p.credits[it.rec]) {
        // Only the budget is short: any admitted job at least this large frees enough.
        const double need = it.price - (p.budget - sel.used);
        const std::size_t from =
            std::lower_bound(price_at.begin(), price_at.end(), need) - price_at.begin();
        if (from < n) {
          const int q = tree.SuffixMin(from);
          if (q >= 0) out = by_price[q];
        }
      } else {
        // The recipient's credits are short: only one of its own jobs can make room.
        const double room = std::min(p.credits[it.rec] - sel.rec_used[it.rec], p.budget - sel.used);
        const auto& own = admitted_of[it.rec];
        auto found = own.lower_bound({it.price - room, -1});
        if (found != own.end()) out = found->second;
      }
      if (out >= 0 && swap_ok(out, it)) {
        drop(out);
        admit(j);
        changed = true;
      }
    }
    if (!changed) break;
  }
  // A swap in the last sweep may have freed room behind it: leave nothing deferred that fits.
  for (int j : p.candidates) {
    if (!sel.in[j] && FitsNow(p, sel, p.items[j])) admit(j);
  }
}

// Depth-first branch and bound over the candidates in priority order, include before exclude,
// pruning with the fractional bound of what is left. Starts from the fast solution as incumbent
// and replaces it only on a relative improvement above kRelEps.
class BranchAndBound {
 public:
  BranchAndBound(const Problem& p, const Selection& start, double start_value,
                 std::int64_t node_limit)
      : p_(p),
        node_limit_(node_limit),
        cur_(p),
        best_(start),
        best_value_(start_value),
        scratch_(p.rec_ids.size(), 0.0) {}

  void Run() { Visit(0, 0.0); }
  bool complete() const { return !aborted_; }
  std::int64_t nodes() const { return nodes_; }
  const Selection& best() const { return best_; }

 private:
  double RemainingBound(std::size_t depth) {
    double budget_left = p_.budget - cur_.used;
    for (std::size_t r = 0; r < scratch_.size(); ++r) {
      scratch_[r] = p_.credits[r] - cur_.rec_used[r];
    }
    double bound = 0;
    for (std::size_t d = depth; d < p_.candidates.size() && budget_left > 0; ++d) {
      const Item& it = p_.items[p_.candidates[d]];
      const double take = std::min({it.price, budget_left, scratch_[it.rec]});
      if (take <= 0) continue;
      bound += it.priority * take;
      budget_left -= take;
      scratch_[it.rec] -= take;
    }
    return bound;
  }

  void Visit(std::size_t depth, double value) {
    if (aborted_) return;
    if (nodes_ >= node_limit_) {
      aborted_ = true;
      return;
    }
    ++nodes_;
    if (value > best_value_ && value - best_value_ > kRelEps * value) {
      best_ = cur_;
      best_value_ = value;
    }
    if (depth == p_.candidates.size()) return;
    if (value + RemainingBound(depth) <= best_value_ * (1 + kRelEps)) return;
    const int k = p_.candidates[depth];
    const Item& it = p_.items[k];
    if (FitsNow(p_, cur_, it)) {
      const double used = cur_.used, rec_used = cur_.rec_used[it.rec];
      cur_.in[k] = 1;
      cur_.used += it.price;
      cur_.rec_used[it.rec] += it.price;
      Visit(depth + 1, value + it.utility);
      cur_.in[k] = 0;
      cur_.used = used;
      cur_.rec_used[it.rec] = rec_used;
    }
    Visit(depth + 1, value);
  }

  const Problem& p_;
  const std::int64_t node_limit_;
  Selection cur_;
  Selection best_;
  double best_value_;
  std::vector<double> scratch_;
  std::int64_t nodes_ = 0;
  bool aborted_ = false;
};

double UtilityOf(const Problem& p, const Selection& sel) {
  double total = 0;
  for (int k : p.candidates) {
    if (sel.in[k]) total += p.items[k].utility;
  }
  return total;
}

Allocation Finish(const Problem& p, const Selection& sel, AllocationMethod method) {
  Allocation out;
  out.method = method;
  std::vector<double> charged(p.rec_ids.size(), 0.0);
  out.decisions.reserve(p.items.size());
  for (std::size_t k = 0; k < p.items.size(); ++k) {
    const Item& it = p.items[k];
    JobDecision d;
    d.job_id = it.id;
    d.utility = it.utility;
    if (sel.in[k]) {
      d.verdict = JobVerdict::kAdmitted;
      out.admitted.push_back(it.id);
      out.utility += it.utility;
      out.flop += it.price;
      charged[it.rec] += it.price;
    } else {
      d.verdict = it.candidate ? JobVerdict::kDeferred : JobVerdict::kNeverFits;
    }
    out.decisions.push_back(d);
  }
  std::sort(out.decisions.begin(), out.decisions.end(),
            [](const JobDecision& a, const JobDecision& b) { return a.job_id < b.job_id; });
  for (std::size_t r = 0; r < p.rec_ids.size(); ++r) {
    if (charged[r] > 0) out.charges.push_back({p.rec_ids[r], charged[r]});
  }
  out.upper_bound = std::max(FractionalBoundOf(p), out.utility);
  return out;
}

Selection FastSelection(const Problem& p, int repair_passes) {
  Selection greedy(p);
  ClassGreedy(p, greedy, 0);
  if (repair_passes <= 0) return greedy;
  // Filling a class better takes budget from the classes below, which can lose more to their
  // own granularity than was won: keep the plain greedy (repaired) when it is not beaten, so
  // that its guarantee holds for the result.
  Selection improved(p);
  ClassGreedy(p, improved, repair_passes);
  Repair(p, improved, repair_passes);
  Repair(p, greedy, repair_passes);
  return UtilityOf(p, improved) > UtilityOf(p, greedy) ? improved : greedy;
}

void AppendNumber(std::string& out, double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? end : buf);
}

}  // namespace

double RecipientPriority(double usage_flop, double share_flop) {
  return share_flop / (share_flop + usage_flop);
}

common::Result<Allocation> Allocate(const AllocationSnapshot& snapshot,
                                    const AllocationOptions& options) {
  UBCP_ASSIGN_OR_RETURN(Problem p, BuildProblem(snapshot));
  AllocationMethod method = options.method;
  if (method == AllocationMethod::kAuto) {
    method = p.candidates.size() <= static_cast<std::size_t>(std::max(options.exact_max_jobs, 0))
                 ? AllocationMethod::kExact
                 : AllocationMethod::kFast;
  }
  if (method == AllocationMethod::kExact && p.candidates.size() > kExactHardMaxJobs) {
    return MakeError(Errc::kTooLarge, "exact allocation is limited to " +
                                          std::to_string(kExactHardMaxJobs) + " candidate jobs");
  }
  Selection fast = FastSelection(p, options.repair_passes);
  if (method == AllocationMethod::kFast) {
    Allocation out = Finish(p, fast, method);
    out.optimal = out.utility >= out.upper_bound * (1 - kRelEps);
    return out;
  }
  BranchAndBound bb(p, fast, UtilityOf(p, fast),
                    std::max<std::int64_t>(options.exact_node_limit, 1));
  bb.Run();
  Allocation out = Finish(p, bb.best(), AllocationMethod::kExact);
  out.optimal = bb.complete() || out.utility >= out.upper_bound * (1 - kRelEps);
  out.nodes = bb.nodes();
  return out;
}

common::Result<double> FractionalBound(const AllocationSnapshot& snapshot) {
  UBCP_ASSIGN_OR_RETURN(Problem p, BuildProblem(snapshot));
  return FractionalBoundOf(p);
}

common::Result<std::string> AllocationToCplexLp(const AllocationSnapshot& snapshot,
                                                double flop_unit) {
  if (!std::isfinite(flop_unit) || !(flop_unit > 0)) {
    return MakeError(Errc::kInvalidArgument, "flop unit must be finite and positive");
  }
  UBCP_RETURN_IF_ERROR(BuildProblem(snapshot));  // the same validation as Allocate
  if (snapshot.jobs.empty()) return MakeError(Errc::kInvalidArgument, "no jobs to export");

  std::vector<double> priority_of(snapshot.jobs.size());
  std::vector<std::size_t> rec_of(snapshot.jobs.size());
  std::vector<std::size_t> order(snapshot.recipients.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return snapshot.recipients[a].id < snapshot.recipients[b].id;
  });
  for (std::size_t k = 0; k < snapshot.jobs.size(); ++k) {
    auto it = std::lower_bound(
        order.begin(), order.end(), snapshot.jobs[k].recipient_id,
        [&](std::size_t r, std::int64_t id) { return snapshot.recipients[r].id < id; });
    rec_of[k] = *it;  // exists: BuildProblem checked it
    const auto& r = snapshot.recipients[*it];
    priority_of[k] = RecipientPriority(r.usage_flop, snapshot.share_flop);
  }

  std::string lp;
  lp += "\\ UBCP allocation: maximize sum_j p_i E_j x_j; numbers in units of ";
  AppendNumber(lp, flop_unit);
  lp += " FLOP\nMaximize\n utility:\n";
  auto term = [&](double coefficient, std::size_t k) {
    lp += " + ";
    AppendNumber(lp, coefficient);
    lp += " x" + std::to_string(k) + "\n";
  };
  for (std::size_t k = 0; k < snapshot.jobs.size(); ++k) {
    term(priority_of[k] * snapshot.jobs[k].price_flop / flop_unit, k);
  }
  lp += "Subject To\n budget:\n";
  for (std::size_t k = 0; k < snapshot.jobs.size(); ++k) {
    term(snapshot.jobs[k].price_flop / flop_unit, k);
  }
  lp += " <= ";
  AppendNumber(lp, snapshot.budget_flop / flop_unit);
  lp += "\n";
  std::vector<std::vector<std::size_t>> jobs_of(snapshot.recipients.size());
  for (std::size_t k = 0; k < snapshot.jobs.size(); ++k) jobs_of[rec_of[k]].push_back(k);
  for (std::size_t r = 0; r < snapshot.recipients.size(); ++r) {
    if (jobs_of[r].empty()) continue;
    lp += " credit" + std::to_string(r) + ":\n";
    for (std::size_t k : jobs_of[r]) term(snapshot.jobs[k].price_flop / flop_unit, k);
    lp += " <= ";
    AppendNumber(lp, snapshot.recipients[r].credits_flop / flop_unit);
    lp += "\n";
  }
  lp += "Binary\n";
  for (std::size_t k = 0; k < snapshot.jobs.size(); ++k) lp += " x" + std::to_string(k) + "\n";
  lp += "End\n";
  return lp;
}

}  // namespace ubcp::coordinator
