// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/allocator.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <sstream>

namespace ubcp::coordinator {
namespace {

constexpr double kTol = 1e-9;  // relative, for utilities compared across methods

// Integer prices (as doubles) so that every sum below is exact.
AllocationSnapshot RandomSnapshot(std::mt19937_64& rng, int jobs, int recipients,
                                  bool ample_credits = false) {
  std::uniform_int_distribution<int> price(1, 100);
  std::uniform_int_distribution<int> usage(0, 400);
  std::uniform_int_distribution<int> pick(0, recipients - 1);
  std::uniform_int_distribution<int> queued(0, 5);
  AllocationSnapshot s;
  s.share_flop = 100;
  double total = 0;
  for (int j = 0; j < jobs; ++j) {
    AllocationJob job;
    job.id = 1000 + j;
    job.recipient_id = 10 + pick(rng);
    job.price_flop = price(rng);
    job.queued_at = queued(rng);
    total += job.price_flop;
    s.jobs.push_back(job);
  }
  std::uniform_int_distribution<int> credit(0, std::max(1, static_cast<int>(total / recipients)));
  for (int r = 0; r < recipients; ++r) {
    s.recipients.push_back(AllocationRecipient{
        10 + r, ample_credits ? total : static_cast<double>(credit(rng)), double(usage(rng))});
  }
  std::uniform_int_distribution<int> budget(0, std::max(1, static_cast<int>(total * 0.7)));
  s.budget_flop = budget(rng);
  return s;
}

struct Lookup {
  explicit Lookup(const AllocationSnapshot& s) {
    for (const auto& r : s.recipients) recipient[r.id] = r;
    for (const auto& j : s.jobs) job[j.id] = j;
    share = s.share_flop;
  }
  double Utility(const AllocationJob& j) const {
    return RecipientPriority(recipient.at(j.recipient_id).usage_flop, share) * j.price_flop;
  }
  std::map<std::int64_t, AllocationRecipient> recipient;
  std::map<std::int64_t, AllocationJob> job;
  double share;
};

// The best utility over all 2^n subsets that respect budget and credits.
double BruteForce(const AllocationSnapshot& s) {
  const Lookup look(s);
  const std::size_t n = s.jobs.size();
  double best = 0;
  for (std::uint64_t mask = 0; mask < (std::uint64_t{1} << n); ++mask) {
    double used = 0, utility = 0;
    std::map<std::int64_t, double> per;
    for (std::size_t k = 0; k < n; ++k) {
      if (!(mask >> k & 1)) continue;
      used += s.jobs[k].price_flop;
      per[s.jobs[k].recipient_id] += s.jobs[k].price_flop;
      utility += look.Utility(s.jobs[k]);
    }
    bool ok = used <= s.budget_flop;
    for (const auto& [id, flop] : per) ok = ok && flop <= look.recipient.at(id).credits_flop;
    if (ok) best = std::max(best, utility);
  }
  return best;
}

// Checks budget, credits and the consistency of every field against the snapshot.
void ExpectFeasible(const AllocationSnapshot& s, const Allocation& a) {
  const Lookup look(s);
  double used = 0, utility = 0;
  std::map<std::int64_t, double> per;
  for (std::int64_t id : a.admitted) {
    const auto& j = look.job.at(id);
    used += j.price_flop;
    utility += look.Utility(j);
    per[j.recipient_id] += j.price_flop;
  }
  EXPECT_LE(used, s.budget_flop);
  for (const auto& [id, flop] : per) EXPECT_LE(flop, look.recipient.at(id).credits_flop) << id;
  EXPECT_NEAR(a.utility, utility, kTol * std::max(1.0, utility));
  EXPECT_DOUBLE_EQ(a.flop, used);
  EXPECT_LE(a.utility, a.upper_bound * (1 + kTol));
  ASSERT_EQ(a.decisions.size(), s.jobs.size());
  EXPECT_TRUE(std::is_sorted(a.decisions.begin(), a.decisions.end(),
                             [](auto& x, auto& y) { return x.job_id < y.job_id; }));
  std::size_t admitted = 0;
  for (const auto& d : a.decisions) {
    const auto& j = look.job.at(d.job_id);
    const bool fits = j.price_flop <= s.budget_flop &&
                      j.price_flop <= look.recipient.at(j.recipient_id).credits_flop;
    if (!fits) {
      EXPECT_EQ(d.verdict, JobVerdict::kNeverFits) << d.job_id;
    }
    if (d.verdict == JobVerdict::kAdmitted) ++admitted;
  }
  EXPECT_EQ(admitted, a.admitted.size());
  ASSERT_EQ(a.charges.size(), per.size());
  for (const auto& c : a.charges) EXPECT_DOUBLE_EQ(c.flop, per.at(c.recipient_id));
}

// The a priori bound proved in docs/ECONOMY.md for the greedy pass: LP optimum - greedy <=
// sum over recipients i with a deferred job of p_i * (i's largest deferred price).
double GreedyLossBound(const AllocationSnapshot& s, const Allocation& greedy) {
  const Lookup look(s);
  std::map<std::int64_t, double> largest_deferred;
  for (const auto& d : greedy.decisions) {
    if (d.verdict != JobVerdict::kDeferred) continue;
    const auto& j = look.job.at(d.job_id);
    double& e = largest_deferred[j.recipient_id];
    e = std::max(e, j.price_flop);
  }
  double bound = 0;
  for (const auto& [id, e] : largest_deferred) {
    bound += RecipientPriority(look.recipient.at(id).usage_flop, s.share_flop) * e;
  }
  return bound;
}

Allocation AllocateWith(const AllocationSnapshot& s, AllocationMethod method,
                        int repair_passes = 2) {
  AllocationOptions o;
  o.method = method;
  o.repair_passes = repair_passes;
  auto a = Allocate(s, o);
  EXPECT_TRUE(a) << a.error().ToString();
  return a ? *a : Allocation{};
}

TEST(Allocator, PriorityFallsWithUsage) {
  EXPECT_DOUBLE_EQ(RecipientPriority(0, 10), 1.0);
  EXPECT_DOUBLE_EQ(RecipientPriority(10, 10), 0.5);
  EXPECT_DOUBLE_EQ(RecipientPriority(30, 10), 0.25);
  EXPECT_GT(RecipientPriority(1, 10), RecipientPriority(2, 10));
}

TEST(Allocator, ExactEqualsBruteForce) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 400; ++round) {
    const int n = round % 13;  // 0..12 jobs
    const auto s = RandomSnapshot(rng, n, 1 + round % 4);
    const double best = BruteForce(s);
    const Allocation a = AllocateWith(s, AllocationMethod::kExact);
    ExpectFeasible(s, a);
    EXPECT_TRUE(a.optimal);
    EXPECT_EQ(a.method, AllocationMethod::kExact);
    EXPECT_NEAR(a.utility, best, kTol * std::max(1.0, best)) << "round " << round;
  }
}

TEST(Allocator, AutoUsesExactForSmallAndFastForLarge) {
  std::mt19937_64 rng(3);
  EXPECT_EQ(AllocateWith(RandomSnapshot(rng, 10, 3), AllocationMethod::kAuto).method,
            AllocationMethod::kExact);
  EXPECT_EQ(AllocateWith(RandomSnapshot(rng, 500, 20), AllocationMethod::kAuto).method,
            AllocationMethod::kFast);
}

// Greedy's guarantee (repair only adds to it): LP - greedy <= GreedyLossBound, and with credits
// that never bind, less than p_max * (largest price): one job's utility.
TEST(Allocator, FastIsFeasibleAndWithinProvenBound) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 300; ++round) {
    const bool ample = round % 3 == 0;
    const auto s = RandomSnapshot(rng, 1 + round % 12, 1 + round % 5, ample);
    const double best = BruteForce(s);
    const Allocation greedy = AllocateWith(s, AllocationMethod::kFast, 0);
    const Allocation fast = AllocateWith(s, AllocationMethod::kFast);
    ExpectFeasible(s, greedy);
    ExpectFeasible(s, fast);
    EXPECT_GE(fast.utility, greedy.utility * (1 - kTol));
    EXPECT_LE(fast.utility, best * (1 + kTol) + kTol);
    EXPECT_GE(fast.upper_bound, best * (1 - kTol));

    const double bound = GreedyLossBound(s, greedy);
    EXPECT_LE(greedy.upper_bound - greedy.utility, bound * (1 + kTol) + kTol) << round;
    if (ample && bound > 0) {
      double p_max = 0, e_max = 0;
      for (const auto& r : s.recipients) {
        p_max = std::max(p_max, RecipientPriority(r.usage_flop, s.share_flop));
      }
      for (const auto& j : s.jobs) e_max = std::max(e_max, j.price_flop);
      EXPECT_LT(best - greedy.utility, p_max * e_max) << round;
    }
    if (bound == 0) {
      EXPECT_NEAR(greedy.utility, best, kTol * std::max(1.0, best)) << round;
    }
  }
}

TEST(Allocator, FastOnLargeInstanceLeavesNothingThatFits) {
  std::mt19937_64 rng(5);
  const auto s = RandomSnapshot(rng, 20'000, 300);
  const Allocation a = AllocateWith(s, AllocationMethod::kFast);
  ExpectFeasible(s, a);
  EXPECT_FALSE(a.admitted.empty());
  // The fill pass admits every deferred job that still fits: none is left.
  const Lookup look(s);
  std::map<std::int64_t, double> per;
  for (const auto& c : a.charges) per[c.recipient_id] = c.flop;
  for (const auto& d : a.decisions) {
    if (d.verdict != JobVerdict::kDeferred) continue;
    const auto& j = look.job.at(d.job_id);
    const bool fits =
        a.flop + j.price_flop <= s.budget_flop &&
        per[j.recipient_id] + j.price_flop <= look.recipient.at(j.recipient_id).credits_flop;
    ASSERT_FALSE(fits) << d.job_id;
  }
  const Allocation greedy = AllocateWith(s, AllocationMethod::kFast, 0);
  EXPECT_GE(a.utility, greedy.utility);
  EXPECT_LE(greedy.upper_bound - greedy.utility, GreedyLossBound(s, greedy) * (1 + kTol));
}

TEST(Allocator, SwapRepairFixesGreedy) {
  AllocationSnapshot s;
  s.budget_flop = 10;
  s.share_flop = 1;
  s.recipients = {{1, 100, 0}, {2, 100, 1}};  // priorities 1 and 0.5
  s.jobs = {{100, 1, 3, 0}, {200, 2, 6, 0}, {201, 2, 7, 1}};
  const Allocation greedy = AllocateWith(s, AllocationMethod::kFast, 0);
  EXPECT_EQ(greedy.admitted, (std::vector<std::int64_t>{100, 200}));
  const Allocation fast = AllocateWith(s, AllocationMethod::kFast);
  EXPECT_EQ(fast.admitted, (std::vector<std::int64_t>{100, 201}));
  EXPECT_DOUBLE_EQ(fast.utility, 3 + 3.5);
  EXPECT_EQ(AllocateWith(s, AllocationMethod::kExact).admitted, fast.admitted);
}

TEST(Allocator, SwapRepairWithinOneRecipientsCredits) {
  AllocationSnapshot s;
  s.budget_flop = 100;
  s.share_flop = 1;
  s.recipients = {{1, 10, 0}};
  s.jobs = {{1, 1, 4, 0}, {2, 1, 5, 1}, {3, 1, 6, 2}};  // credits 10: 4+5 then 6 is deferred
  EXPECT_EQ(AllocateWith(s, AllocationMethod::kFast, 0).flop, 9);
  const Allocation fast = AllocateWith(s, AllocationMethod::kFast);
  EXPECT_EQ(fast.flop, 10);  // 6 replaces 5
  EXPECT_EQ(fast.admitted, (std::vector<std::int64_t>{1, 3}));
}

TEST(Allocator, ExactFillOfOneRecipientsCredits) {
  // Queue order 6, 5, 5 with credits 10: the greedy stops at 6 and no single swap helps; the
  // exact fill of the recipient's window finds 5 + 5.
  AllocationSnapshot s;
  s.budget_flop = 100;
  s.share_flop = 1;
  s.recipients = {{1, 10, 0}, {2, 100, 50}};
  s.jobs = {{1, 1, 6, 0}, {2, 1, 5, 1}, {3, 1, 5, 2}, {4, 2, 30, 0}};
  EXPECT_EQ(AllocateWith(s, AllocationMethod::kFast, 0).admitted,
            (std::vector<std::int64_t>{1, 4}));
  const Allocation fast = AllocateWith(s, AllocationMethod::kFast);
  EXPECT_EQ(fast.admitted, (std::vector<std::int64_t>{2, 3, 4}));
  EXPECT_EQ(fast.charges.at(0).flop, 10);
  EXPECT_TRUE(fast.optimal);  // reaches the fractional bound
}

TEST(Allocator, DeterministicAndIndependentOfInputOrder) {
  std::mt19937_64 rng(13);
  for (int n : {12, 30, 3000}) {
    auto s = RandomSnapshot(rng, n, 7);
    const Allocation a = AllocateWith(s, AllocationMethod::kAuto);
    const Allocation again = AllocateWith(s, AllocationMethod::kAuto);
    std::shuffle(s.jobs.begin(), s.jobs.end(), rng);
    std::shuffle(s.recipients.begin(), s.recipients.end(), rng);
    const Allocation shuffled = AllocateWith(s, AllocationMethod::kAuto);
    for (const Allocation* b : {&again, &shuffled}) {
      EXPECT_EQ(a.admitted, b->admitted) << n;
      EXPECT_EQ(a.utility, b->utility) << n;  // bit for bit: same order of summation
      EXPECT_EQ(a.upper_bound, b->upper_bound) << n;
      ASSERT_EQ(a.decisions.size(), b->decisions.size());
      for (std::size_t k = 0; k < a.decisions.size(); ++k) {
        EXPECT_EQ(a.decisions[k].job_id, b->decisions[k].job_id);
        EXPECT_EQ(a.decisions[k].verdict, b->decisions[k].verdict);
      }
    }
  }
}

TEST(Allocator, LightUserPreferredToHeavyUser) {
  AllocationSnapshot s;
  s.budget_flop = 100;
  s.share_flop = 50;
  s.recipients = {{1, 1000, 500}, {2, 1000, 0}};  // 1 used a lot recently, 2 nothing
  // Equal jobs; the heavy user's was even queued first.
  s.jobs = {{10, 1, 100, 0}, {20, 2, 100, 1}};
  for (auto m : {AllocationMethod::kExact, AllocationMethod::kFast}) {
    const Allocation a = AllocateWith(s, m);
    EXPECT_EQ(a.admitted, (std::vector<std::int64_t>{20}));
    EXPECT_EQ(a.decisions[0].verdict, JobVerdict::kDeferred);
  }
  // With room for both, both run, the light user's first in dispatch order.
  s.budget_flop = 200;
  EXPECT_EQ(AllocateWith(s, AllocationMethod::kFast).admitted, (std::vector<std::int64_t>{20, 10}));
}

TEST(Allocator, TiesGoToEarlierQueuedThenSmallerId) {
  AllocationSnapshot s;
  s.budget_flop = 5;
  s.recipients = {{1, 100, 0}, {2, 100, 0}};
  s.jobs = {{9, 1, 5, 3}, {8, 2, 5, 2}, {7, 1, 5, 2}};
  for (auto m : {AllocationMethod::kExact, AllocationMethod::kFast}) {
    EXPECT_EQ(AllocateWith(s, m).admitted, (std::vector<std::int64_t>{7})) << static_cast<int>(m);
  }
  s.jobs[2].queued_at = 4;
  for (auto m : {AllocationMethod::kExact, AllocationMethod::kFast}) {
    EXPECT_EQ(AllocateWith(s, m).admitted, (std::vector<std::int64_t>{8})) << static_cast<int>(m);
  }
}

TEST(Allocator, JobsThatCannotFitAreNeverAdmitted) {
  AllocationSnapshot s;
  s.budget_flop = 50;
  s.recipients = {{1, 10, 0}, {2, 1000, 0}};
  s.jobs = {{1, 1, 11, 0}, {2, 2, 51, 0}, {3, 2, 50, 1}};
  for (auto m : {AllocationMethod::kExact, AllocationMethod::kFast}) {
    const Allocation a = AllocateWith(s, m);
    EXPECT_EQ(a.admitted, (std::vector<std::int64_t>{3}));
    EXPECT_EQ(a.decisions[0].verdict, JobVerdict::kNeverFits);
    EXPECT_EQ(a.decisions[1].verdict, JobVerdict::kNeverFits);
    EXPECT_EQ(a.decisions[2].verdict, JobVerdict::kAdmitted);
    EXPECT_DOUBLE_EQ(a.upper_bound, 50);  // jobs that never fit add nothing to the bound
    EXPECT_TRUE(a.optimal);
  }
}

TEST(Allocator, EmptyAndZeroBudget) {
  AllocationSnapshot s;
  auto empty = Allocate(s);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->admitted.empty());
  EXPECT_TRUE(empty->optimal);
  s.recipients = {{1, 10, 0}};
  s.jobs = {{1, 1, 1, 0}};
  auto none = Allocate(s);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->admitted.empty());
  EXPECT_EQ(none->decisions[0].verdict, JobVerdict::kNeverFits);
}

TEST(Allocator, NodeLimitKeepsTheBestFoundAndSaysSo) {
  // Subset-sum like: equal priorities, no exact fill, so the bound prunes little.
  std::mt19937_64 rng(17);
  AllocationSnapshot s;
  s.budget_flop = 1000.5;
  s.recipients = {{1, 1e9, 0}};
  std::uniform_int_distribution<int> price(50, 150);
  for (int j = 0; j < 40; ++j) s.jobs.push_back({j, 1, double(price(rng)), 0});
  AllocationOptions o;
  o.method = AllocationMethod::kExact;
  o.exact_node_limit = 100;
  auto limited = Allocate(s, o);
  ASSERT_TRUE(limited);
  EXPECT_LE(limited->nodes, 100);
  ExpectFeasible(s, *limited);
  EXPECT_GE(limited->utility, AllocateWith(s, AllocationMethod::kFast).utility);
  EXPECT_EQ(limited->nodes, 100);
  EXPECT_FALSE(limited->optimal);  // integer prices never reach the bound of 1000.5
}

TEST(Allocator, InvalidInputsAreErrors) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  AllocationSnapshot good;
  good.budget_flop = 10;
  good.share_flop = 5;
  good.recipients = {{1, 10, 0}, {2, 10, 3}};
  good.jobs = {{1, 1, 2, 0}, {2, 2, 3, 0}};
  ASSERT_TRUE(Allocate(good));

  std::vector<std::pair<const char*, std::function<void(AllocationSnapshot&)>>> cases = {
      {"nan budget", [&](auto& s) { s.budget_flop = nan; }},
      {"inf budget", [&](auto& s) { s.budget_flop = inf; }},
      {"negative budget", [&](auto& s) { s.budget_flop = -1; }},
      {"zero share", [&](auto& s) { s.share_flop = 0; }},
      {"nan share", [&](auto& s) { s.share_flop = nan; }},
      {"inf share", [&](auto& s) { s.share_flop = inf; }},
      {"nan credits", [&](auto& s) { s.recipients[0].credits_flop = nan; }},
      {"negative credits", [&](auto& s) { s.recipients[0].credits_flop = -1; }},
      {"inf credits", [&](auto& s) { s.recipients[0].credits_flop = inf; }},
      {"nan usage", [&](auto& s) { s.recipients[1].usage_flop = nan; }},
      {"negative usage", [&](auto& s) { s.recipients[1].usage_flop = -2; }},
      {"inf usage", [&](auto& s) { s.recipients[1].usage_flop = inf; }},
      {"zero price", [&](auto& s) { s.jobs[0].price_flop = 0; }},
      {"negative price", [&](auto& s) { s.jobs[0].price_flop = -3; }},
      {"nan price", [&](auto& s) { s.jobs[1].price_flop = nan; }},
      {"inf price", [&](auto& s) { s.jobs[1].price_flop = inf; }},
      {"duplicate job", [&](auto& s) { s.jobs[1].id = 1; }},
      {"duplicate recipient", [&](auto& s) { s.recipients[1].id = 1; }},
      {"unknown recipient", [&](auto& s) { s.jobs[1].recipient_id = 3; }},
  };
  for (const auto& [name, mutate] : cases) {
    AllocationSnapshot s = good;
    mutate(s);
    for (auto m : {AllocationMethod::kExact, AllocationMethod::kFast}) {
      AllocationOptions o;
      o.method = m;
      auto a = Allocate(s, o);
      ASSERT_FALSE(a) << name;
      EXPECT_EQ(a.error().code, common::Errc::kInvalidArgument) << name;
    }
    EXPECT_FALSE(FractionalBound(s)) << name;
    EXPECT_FALSE(AllocationToCplexLp(s, 1)) << name;
  }
  EXPECT_FALSE(AllocationToCplexLp(good, 0));
  EXPECT_FALSE(AllocationToCplexLp(good, nan));

  std::mt19937_64 rng(1);
  AllocationOptions exact;
  exact.method = AllocationMethod::kExact;
  auto too_many = Allocate(RandomSnapshot(rng, 1000, 4, true), exact);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, common::Errc::kTooLarge);
}

// --- against GLPK ------------------------------------------------------------------------------

struct GlpkSolution {
  char status = '?';      // o optimal, f feasible, n infeasible, u undefined
  std::vector<double> x;  // by column: x<k> is column k + 1
};

GlpkSolution ReadGlpkMip(const std::filesystem::path& file) {
  GlpkSolution out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "s") {
      std::string kind;
      int rows = 0, cols = 0;
      fields >> kind >> rows >> cols >> out.status;
      out.x.assign(cols, 0);
    } else if (tag == "j") {
      std::size_t col = 0;
      double value = 0;
      fields >> col >> value;
      if (col >= 1 && col <= out.x.size()) out.x[col - 1] = value;
    }
  }
  return out;
}

TEST(Allocator, ExactMatchesGlpkOptimum) {
  if (std::system("command -v glpsol >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "glpsol not installed (Debian package glpk-utils)";
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "ubcp-alloc-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir = tmpl;
  std::mt19937_64 rng(23);
  for (int round = 0; round < 6; ++round) {
    auto s = RandomSnapshot(rng, 16 + 2 * round, 2 + round % 4);
    for (auto& j : s.jobs) j.price_flop *= 1e12;  // realistic magnitudes, still integers
    for (auto& r : s.recipients) {
      r.credits_flop *= 1e12;
      r.usage_flop *= 1e12;
    }
    s.budget_flop *= 1e12;
    s.share_flop *= 1e12;
    auto lp = AllocationToCplexLp(s, 1e12);
    ASSERT_TRUE(lp);
    const auto lp_file = dir / "a.lp", sol_file = dir / "a.sol";
    std::ofstream(lp_file) << *lp;
    const std::string cmd = "glpsol --lp '" + lp_file.string() + "' --tmlim 20 -w '" +
                            sol_file.string() + "' >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    const GlpkSolution glpk = ReadGlpkMip(sol_file);
    ASSERT_EQ(glpk.status, 'o') << "round " << round;
    ASSERT_EQ(glpk.x.size(), s.jobs.size());

    // Evaluate GLPK's choice with our own utilities and check it is feasible.
    const Lookup look(s);
    double glpk_utility = 0, used = 0;
    std::map<std::int64_t, double> per;
    for (std::size_t k = 0; k < s.jobs.size(); ++k) {
      if (glpk.x[k] < 0.5) continue;
      glpk_utility += look.Utility(s.jobs[k]);
      used += s.jobs[k].price_flop;
      per[s.jobs[k].recipient_id] += s.jobs[k].price_flop;
    }
    EXPECT_LE(used, s.budget_flop);
    for (const auto& [id, flop] : per) EXPECT_LE(flop, look.recipient.at(id).credits_flop);

    const Allocation exact = AllocateWith(s, AllocationMethod::kExact);
    EXPECT_TRUE(exact.optimal);
    EXPECT_NEAR(exact.utility, glpk_utility, 1e-7 * std::max(1.0, glpk_utility))
        << "round " << round;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ubcp::coordinator
