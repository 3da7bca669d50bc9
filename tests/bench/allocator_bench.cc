// SPDX-License-Identifier: Apache-2.0
// Benchmarks the allocator against an exact integer-programming optimum from GLPK (glpsol):
// seeded random instances of 50 to 5,000 jobs, each written as a CPLEX LP file, solved by glpsol
// under a time limit, and allocated by our own methods; prints the optimality gap and the time
// of each, then the fast method's time on 100,000 jobs, then one summary line:
//   allocator: jobs=<n> time_ms=<t> gap_vs_glpk_pct=<g>
// for the largest size that GLPK solved to optimality (means over its instances). Figures only:
// nothing here passes or fails on a timing. Run by scripts/bench.

#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ubcp/coordinator/allocator.h"

namespace {
using ubcp::coordinator::Allocate;
using ubcp::coordinator::Allocation;
using ubcp::coordinator::AllocationJob;
using ubcp::coordinator::AllocationMethod;
using ubcp::coordinator::AllocationOptions;
using ubcp::coordinator::AllocationRecipient;
using ubcp::coordinator::AllocationSnapshot;
using ubcp::coordinator::AllocationToCplexLp;
using ubcp::coordinator::RecipientPriority;

constexpr double kUnit = 1e12;  // prices are whole TFLOP, so every sum is exact

// A period's queue: one recipient per 20 jobs (at least 3); a third of them used nothing
// recently, the others up to 8 shares; job prices log-uniform in 1..1000 TFLOP; each
// recipient's credits between 20% and 150% of what it queued; the budget 40% of the queue.
AllocationSnapshot MakeInstance(int jobs, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  AllocationSnapshot s;
  s.share_flop = 100 * kUnit;
  const int recipients = std::max(3, jobs / 20);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<double> queued(recipients, 0);
  std::uniform_int_distribution<int> pick(0, recipients - 1);
  for (int j = 0; j < jobs; ++j) {
    AllocationJob job;
    job.id = j + 1;
    const int r = pick(rng);
    job.recipient_id = r + 1;
    job.price_flop = std::round(std::exp(unit(rng) * std::log(1000.0))) * kUnit;
    job.queued_at = static_cast<std::int64_t>(unit(rng) * 3600);
    queued[r] += job.price_flop;
    s.jobs.push_back(job);
  }
  double total = 0;
  for (int r = 0; r < recipients; ++r) {
    AllocationRecipient rec;
    rec.id = r + 1;
    rec.usage_flop = unit(rng) < 1.0 / 3 ? 0 : std::round(unit(rng) * 800) * kUnit;
    rec.credits_flop = std::round((0.2 + 1.3 * unit(rng)) * queued[r] / kUnit) * kUnit;
    s.recipients.push_back(rec);
    total += queued[r];
  }
  s.budget_flop = std::round(0.4 * total / kUnit) * kUnit;
  return s;
}

double Millis(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Median wall time of `runs` allocations (the result of the last one in *out).
double TimeAllocate(const AllocationSnapshot& s, const AllocationOptions& o, int runs,
                    Allocation* out) {
  std::vector<double> ms;
  for (int k = 0; k < runs; ++k) {
    const auto start = std::chrono::steady_clock::now();
    auto a = Allocate(s, o);
    ms.push_back(Millis(std::chrono::steady_clock::now() - start));
    if (!a) {
      std::fprintf(stderr, "allocate: %s\n", a.error().ToString().c_str());
      std::exit(1);
    }
    *out = std::move(*a);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct GlpkRun {
  std::string status = "error";  // optimal, timeout (a feasible incumbent), none, error
  double utility = 0;            // GLPK's choice evaluated with our utilities
  double ms = 0;
};

// Runs glpsol on the instance; GLPK's columns are x0..x(n-1) in the order the LP file names
// them (the objective lists them all), so column k + 1 is snapshot.jobs[k].
GlpkRun SolveWithGlpk(const AllocationSnapshot& s, const std::filesystem::path& dir,
                      const std::string& name, int tmlim) {
  GlpkRun run;
  auto lp = AllocationToCplexLp(s, kUnit);
  if (!lp) {
    std::fprintf(stderr, "lp: %s\n", lp.error().ToString().c_str());
    return run;
  }
  const auto lp_file = dir / (name + ".lp"), sol_file = dir / (name + ".sol");
  const auto log_file = dir / (name + ".log");
  std::ofstream(lp_file) << *lp;
  std::filesystem::remove(sol_file);
  const std::string cmd = "glpsol --lp '" + lp_file.string() + "' --tmlim " +
                          std::to_string(tmlim) + " -w '" + sol_file.string() + "' > '" +
                          log_file.string() + "' 2>&1";
  const auto start = std::chrono::steady_clock::now();
  const int rc = std::system(cmd.c_str());
  run.ms = Millis(std::chrono::steady_clock::now() - start);
  if (rc != 0) return run;

  std::ifstream in(sol_file);
  std::string line;
  char status = '?';
  std::vector<double> x;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "s") {
      std::string kind;
      std::size_t rows = 0, cols = 0;
      fields >> kind >> rows >> cols >> status;
      x.assign(cols, 0);
    } else if (tag == "j") {
      std::size_t col = 0;
      double value = 0;
      fields >> col >> value;
      if (col >= 1 && col <= x.size()) x[col - 1] = value;
    }
  }
  if (x.size() != s.jobs.size()) return run;
  if (status != 'o' && status != 'f') {
    run.status = "none";
    return run;
  }
  std::map<std::int64_t, const AllocationRecipient*> recipient;
  for (const auto& r : s.recipients) recipient[r.id] = &r;
  std::map<std::int64_t, double> per;
  double used = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    if (x[k] < 0.5) continue;
    const auto& j = s.jobs[k];
    run.utility +=
        RecipientPriority(recipient[j.recipient_id]->usage_flop, s.share_flop) * j.price_flop;
    used += j.price_flop;
    per[j.recipient_id] += j.price_flop;
  }
  bool feasible = used <= s.budget_flop;
  for (const auto& [id, flop] : per) feasible = feasible && flop <= recipient[id]->credits_flop;
  if (!feasible) {
    std::fprintf(stderr, "glpsol returned an infeasible choice\n");
    return run;
  }
  run.status = status == 'o' ? "optimal" : "timeout";
  return run;
}

// 100 * part / whole, with differences below summation rounding shown as 0.
double Percent(double part, double whole) {
  if (!(whole > 0)) return 0;
  const double ratio = part / whole;
  return std::abs(ratio) < 1e-12 ? 0.0 : 100 * ratio;
}

const char* MethodName(AllocationMethod m) {
  switch (m) {
    case AllocationMethod::kExact:
      return "exact";
    case AllocationMethod::kFast:
      return "fast";
    case AllocationMethod::kAuto:
      return "auto";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UBCP allocator benchmark against GLPK"};
  std::vector<int> sizes = {50, 100, 200, 500, 1000, 2000, 5000};
  int instances = 2, tmlim = 60, large = 100'000, exact_max = 50;
  std::uint64_t seed = 1;
  bool keep = false;
  app.add_option("--sizes", sizes, "job counts compared with GLPK")->delimiter(',');
  app.add_option("--instances", instances, "random instances per size")->check(CLI::Range(1, 100));
  app.add_option("--tmlim", tmlim, "glpsol time limit per instance, seconds");
  app.add_option("--large", large, "job count timed without GLPK (0: skip)");
  app.add_option("--exact-max", exact_max, "also run the exact method up to this many jobs");
  app.add_option("--seed", seed, "first seed");
  app.add_flag("--keep", keep, "keep the LP files and glpsol logs");
  CLI11_PARSE(app, argc, argv);

  if (std::system("command -v glpsol >/dev/null 2>&1") != 0) {
    std::fprintf(stderr, "glpsol not found: install the Debian package glpk-utils\n");
    return 1;
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "ubcp-bench-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path dir = tmpl;

  std::printf(
      "allocator vs GLPK (glpsol --tmlim %d); gap = (glpk - ours) / glpk * 100; bound gap "
      "= (fractional bound - ours) / bound * 100\n",
      tmlim);
  std::printf("%6s %5s %6s %10s %10s %9s %8s %12s %12s\n", "jobs", "seed", "method", "ours_ms",
              "glpk_ms", "speedup", "glpk", "gap_glpk_%", "gap_bound_%");
  struct Solved {
    double ms = 0, gap = 0;
    int count = 0;
  };
  std::map<int, Solved> solved;  // by size: fast method on instances GLPK solved to optimality
  for (int n : sizes) {
    for (int i = 0; i < instances; ++i) {
      const std::uint64_t instance_seed = seed + 1000 * static_cast<std::uint64_t>(n) + i;
      const AllocationSnapshot s = MakeInstance(n, instance_seed);
      const GlpkRun glpk = SolveWithGlpk(
          s, dir, "n" + std::to_string(n) + "-" + std::to_string(instance_seed), tmlim);
      std::vector<AllocationMethod> methods = {AllocationMethod::kFast};
      if (n <= exact_max) methods.push_back(AllocationMethod::kExact);
      for (AllocationMethod m : methods) {
        AllocationOptions o;
        o.method = m;
        Allocation a;
        const double ms = TimeAllocate(s, o, m == AllocationMethod::kFast ? 5 : 1, &a);
        const bool have_glpk = glpk.status == "optimal" || glpk.status == "timeout";
        const double gap = have_glpk ? Percent(glpk.utility - a.utility, glpk.utility) : NAN;
        const double bound_gap = Percent(a.upper_bound - a.utility, a.upper_bound);
        char label[32];
        std::snprintf(label, sizeof label, "%s%s", MethodName(m),
                      m == AllocationMethod::kExact && !a.optimal ? "*" : "");
        std::printf("%6d %5llu %6s %10.3f %10.1f %9.0f %8s %12.6f %12.6f\n", n,
                    static_cast<unsigned long long>(instance_seed), label, ms, glpk.ms,
                    glpk.ms / std::max(ms, 1e-3), glpk.status.c_str(), gap, bound_gap);
        if (m == AllocationMethod::kFast && glpk.status == "optimal") {
          auto& acc = solved[n];
          acc.ms += ms;
          acc.gap += gap;
          ++acc.count;
        }
      }
      std::fflush(stdout);
    }
  }
  std::printf("(exact* = node limit reached before optimality was proven)\n");

  if (large > 0) {
    const AllocationSnapshot s = MakeInstance(large, seed);
    AllocationOptions o;
    o.method = AllocationMethod::kFast;
    Allocation a;
    const double ms = TimeAllocate(s, o, 3, &a);
    std::printf("large: jobs=%d recipients=%zu admitted=%zu time_ms=%.1f gap_bound_pct=%.6f\n",
                large, s.recipients.size(), a.admitted.size(), ms,
                Percent(a.upper_bound - a.utility, a.upper_bound));
  }
  if (keep) {
    std::printf("LP files and glpsol logs kept in %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  if (solved.empty()) {
    std::printf("allocator: jobs=0 time_ms=nan gap_vs_glpk_pct=nan\n");
    return 0;
  }
  const auto& [n, acc] = *solved.rbegin();
  std::printf("allocator: jobs=%d time_ms=%.3f gap_vs_glpk_pct=%.6f\n", n, acc.ms / acc.count,
              acc.gap / acc.count);
  return 0;
}
