// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;
using common::TensorKind;
using common::TensorList;

namespace {

// One finite update after step 1: its value at (t, j) is scale * (*delta)[t].f32[j].
struct Bounded {
  const TensorList* delta = nullptr;
  double weight = 0;
  double scale = 1;
  double at(std::size_t t, std::size_t j) const { return scale * (*delta)[t].f32[j]; }
};

// Per tensor, per coordinate, in double: the combined delta, or a centre.
using Dense = std::vector<std::vector<double>>;

Dense ZerosLike(const TensorList& global) {
  Dense d(global.size());
  for (std::size_t t = 0; t < global.size(); ++t) d[t].assign(global[t].f32.size(), 0.0);
  return d;
}

double LowerMedian(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[(values.size() - 1) / 2];
}

struct Entry {
  double value;
  double weight;
  std::size_t index;  // ties in value are broken by update order, so results are deterministic
};

void SortEntries(std::vector<Entry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.value < b.value || (a.value == b.value && a.index < b.index);
  });
}

// Sorted entries: the smallest value at which the cumulative weight reaches half the total;
// the average of it and the next when the cumulative weight is exactly half (so equal weights
// give the ordinary median, the mean of the two middle values for an even count).
double WeightedMedianOfSorted(const std::vector<Entry>& entries, double total) {
  const double half = total / 2;
  const double tolerance = 1e-12 * total;
  double cumulative = 0;
  for (std::size_t k = 0; k < entries.size(); ++k) {
    cumulative += entries[k].weight;
    if (std::abs(cumulative - half) <= tolerance && k + 1 < entries.size()) {
      return (entries[k].value + entries[k + 1].value) / 2;
    }
    if (cumulative > half) return entries[k].value;
  }
  return entries.back().value;
}

void GatherSorted(const std::vector<Bounded>& xs, std::size_t t, std::size_t j,
                  std::vector<Entry>& entries) {
  for (std::size_t i = 0; i < xs.size(); ++i) entries[i] = {xs[i].at(t, j), xs[i].weight, i};
  SortEntries(entries);
}

Dense WeightedMean(const std::vector<Bounded>& xs, const TensorList& global) {
  double total = 0;
  for (const Bounded& x : xs) total += x.weight;
  Dense out = ZerosLike(global);
  for (const Bounded& x : xs) {
    const double w = x.weight / total;
    for (std::size_t t = 0; t < out.size(); ++t) {
      for (std::size_t j = 0; j < out[t].size(); ++j) out[t][j] += w * x.at(t, j);
    }
  }
  return out;
}

Dense CoordinateMedian(const std::vector<Bounded>& xs, const TensorList& global) {
  double total = 0;
  for (const Bounded& x : xs) total += x.weight;
  Dense out = ZerosLike(global);
  std::vector<Entry> entries(xs.size());
  for (std::size_t t = 0; t < out.size(); ++t) {
    for (std::size_t j = 0; j < out[t].size(); ++j) {
      GatherSorted(xs, t, j, entries);
      out[t][j] = WeightedMedianOfSorted(entries, total);
    }
  }
  return out;
}

Dense TrimmedMean(const std::vector<Bounded>& xs, const TensorList& global, double fraction) {
  // The epsilon keeps e.g. 0.3 * 10 at 3 despite rounding; fraction <= 0.45 leaves at least one.
  const std::size_t trim =
      static_cast<std::size_t>(std::floor(fraction * static_cast<double>(xs.size()) + 1e-9));
  Dense out = ZerosLike(global);
  std::vector<Entry> entries(xs.size());
  for (std::size_t t = 0; t < out.size(); ++t) {
    for (std::size_t j = 0; j < out[t].size(); ++j) {
      GatherSorted(xs, t, j, entries);
      double sum = 0, weight = 0;
      for (std::size_t k = trim; k + trim < entries.size(); ++k) {
        sum += entries[k].weight * entries[k].value;
        weight += entries[k].weight;
      }
      out[t][j] = sum / weight;
    }
  }
  return out;
}

double SquaredDistance(const Bounded& a, const Bounded& b, const TensorList& global) {
  double sum = 0;
  for (std::size_t t = 0; t < global.size(); ++t) {
    for (std::size_t j = 0; j < global[t].f32.size(); ++j) {
      const double d = a.at(t, j) - b.at(t, j);
      sum += d * d;
    }
  }
  return sum;
}

Dense MultiKrum(const std::vector<Bounded>& xs, const TensorList& global, int byzantine) {
  const std::size_t n = xs.size();
  // Krum's scores separate honest from Byzantine updates only when n >= 2f + 3.
  std::size_t f = static_cast<std::size_t>(byzantine);
  if (n < 2 * f + 3) f = n >= 3 ? (n - 3) / 2 : 0;
  const std::size_t neighbours = std::min(n - 1, std::max<std::size_t>(1, n - f - 2));
  const std::size_t keep = n - f;

  std::vector<std::vector<double>> dist(n, std::vector<double>(n, 0.0));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t k = i + 1; k < n; ++k) {
      dist[i][k] = dist[k][i] = SquaredDistance(xs[i], xs[k], global);
    }
  }
  std::vector<double> score(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> others;
    others.reserve(n - 1);
    for (std::size_t k = 0; k < n; ++k) {
      if (k != i) others.push_back(dist[i][k]);
    }
    std::sort(others.begin(), others.end());
    for (std::size_t k = 0; k < neighbours && k < others.size(); ++k) score[i] += others[k];
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return score[a] < score[b]; });
  order.resize(keep);
  std::sort(order.begin(), order.end());  // sum in update order: deterministic bits
  std::vector<Bounded> selected;
  selected.reserve(keep);
  for (std::size_t i : order) selected.push_back(xs[i]);
  return WeightedMean(selected, global);
}

std::vector<double> DistancesTo(const std::vector<Bounded>& xs, const Dense& v) {
  std::vector<double> out(xs.size(), 0.0);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    double sum = 0;
    for (std::size_t t = 0; t < v.size(); ++t) {
      for (std::size_t j = 0; j < v[t].size(); ++j) {
        const double d = xs[i].at(t, j) - v[t][j];
        sum += d * d;
      }
    }
    out[i] = std::sqrt(sum);
  }
  return out;
}

// Centered clipping (Karimireddy, He and Jaggi, 2021) without momentum: it starts from the
// coordinate-wise median, a robust centre, and tau is the lower median distance to that centre,
// so at most the farthest half of the updates is clipped and each one, honest or not, moves the
// centre by at most its weight share of tau per iteration.
Dense CenteredClip(const std::vector<Bounded>& xs, const TensorList& global, int iterations) {
  double total = 0;
  for (const Bounded& x : xs) total += x.weight;
  Dense v = CoordinateMedian(xs, global);
  const double tau = LowerMedian(DistancesTo(xs, v));
  for (int it = 0; it < iterations; ++it) {
    const std::vector<double> dist = DistancesTo(xs, v);
    std::vector<double> factor(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double clip = dist[i] > tau ? tau / dist[i] : 1.0;
      factor[i] = clip * xs[i].weight / total;
    }
    for (std::size_t t = 0; t < v.size(); ++t) {
      for (std::size_t j = 0; j < v[t].size(); ++j) {
        double step = 0;
        for (std::size_t i = 0; i < xs.size(); ++i) step += factor[i] * (xs[i].at(t, j) - v[t][j]);
        v[t][j] += step;
      }
    }
  }
  return v;
}

common::Status CheckRobustRule(const RobustRule& r) {
  if (!(r.norm_bound >= 1)) {
    return MakeError(Errc::kInvalidArgument, "norm_bound must be at least 1");
  }
  if (!(r.trim_fraction >= 0 && r.trim_fraction <= 0.45)) {
    return MakeError(Errc::kInvalidArgument, "trim_fraction must be in [0, 0.45]");
  }
  if (r.krum_byzantine < 0 || r.krum_byzantine > 64) {
    return MakeError(Errc::kInvalidArgument, "krum_byzantine must be in [0, 64]");
  }
  if (r.clip_iterations < 1 || r.clip_iterations > 100) {
    return MakeError(Errc::kInvalidArgument, "clip_iterations must be in [1, 100]");
  }
  switch (r.combine) {
    case CombineRule::kMean:
    case CombineRule::kMedian:
    case CombineRule::kTrimmedMean:
    case CombineRule::kMultiKrum:
    case CombineRule::kCenteredClip:
      return {};
  }
  return MakeError(Errc::kInvalidArgument, "unknown combine rule");
}

}  // namespace

common::Result<CombineRule> CombineRuleFromName(std::string_view name) {
  if (name == "mean") return CombineRule::kMean;
  if (name == "median") return CombineRule::kMedian;
  if (name == "trimmed_mean") return CombineRule::kTrimmedMean;
  if (name == "multi_krum") return CombineRule::kMultiKrum;
  if (name == "centered_clip") return CombineRule::kCenteredClip;
  return MakeError(Errc::kInvalidArgument, "unknown robust rule '" + std::string(name) + "'");
}

common::Result<AggregateOutput> Aggregate(const TensorList& global, const TensorList* momentum,
                                          const std::vector<WeightedUpdate>& updates,
                                          const OuterOptimizer& optimizer,
                                          const RobustRule& robust) {
  if (updates.empty()) return MakeError(Errc::kInvalidArgument, "no updates to aggregate");
  for (const auto& t : global) {
    if (t.kind != TensorKind::kF32) return MakeError(Errc::kMalformed, "global model not fp32");
  }
  UBCP_RETURN_IF_ERROR(CheckRobustRule(robust));
  for (const auto& u : updates) {
    if (u.delta == nullptr || !(u.weight > 0) || !std::isfinite(u.weight)) {
      return MakeError(Errc::kInvalidArgument, "update weight must be positive");
    }
    UBCP_RETURN_IF_ERROR(common::CheckSameLayout(global, *u.delta));
    for (std::size_t t = 0; t < global.size(); ++t) {
      if ((*u.delta)[t].f32.size() != global[t].f32.size()) {
        return MakeError(Errc::kMalformed, "update size does not match its shape");
      }
    }
  }
  const bool diloco = optimizer.rule == OuterRule::kDiLoCo;
  const bool has_v = diloco && momentum != nullptr && !momentum->empty();
  if (has_v) UBCP_RETURN_IF_ERROR(common::CheckSameLayout(global, *momentum));

  AggregateOutput out;
  // Step 0. A single NaN or infinity would spread to every coordinate of the mean (and make the
  // norms and distances the other rules rely on meaningless), so such an update is left out
  // whole: it is malformed, not merely an outlier.
  std::vector<Bounded> xs;
  std::vector<double> norms;
  xs.reserve(updates.size());
  for (const auto& u : updates) {
    double sum = 0;
    bool finite = true;
    for (const auto& t : *u.delta) {
      for (float x : t.f32) {
        if (!std::isfinite(x)) {
          finite = false;
          break;
        }
        sum += static_cast<double>(x) * x;
      }
      if (!finite) break;
    }
    if (!finite) {
      ++out.dropped_non_finite;
      continue;
    }
    xs.push_back({u.delta, u.weight, 1.0});
    norms.push_back(std::sqrt(sum));
  }
  if (xs.empty()) return MakeError(Errc::kInvalidArgument, "every update is non-finite");
  double total_weight = 0;
  for (const Bounded& x : xs) total_weight += x.weight;
  if (!std::isfinite(total_weight)) {
    return MakeError(Errc::kInvalidArgument, "update weights overflow");
  }

  // Step 1. The lower median cannot be raised by fewer than half of the updates, so a minority
  // cannot widen the bound; one that sends huge updates gets the influence of a typical one.
  out.median_norm = LowerMedian(norms);
  if (std::isfinite(robust.norm_bound)) {
    const double limit = robust.norm_bound * out.median_norm;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (norms[i] > limit) {
        xs[i].scale = limit / norms[i];
        ++out.norm_clipped;
      }
    }
  }

  // Step 2.
  Dense delta;
  switch (robust.combine) {
    case CombineRule::kMean:
      delta = WeightedMean(xs, global);
      break;
    case CombineRule::kMedian:
      delta = CoordinateMedian(xs, global);
      break;
    case CombineRule::kTrimmedMean:
      delta = TrimmedMean(xs, global, robust.trim_fraction);
      break;
    case CombineRule::kMultiKrum:
      delta = MultiKrum(xs, global, robust.krum_byzantine);
      break;
    case CombineRule::kCenteredClip:
      delta = CenteredClip(xs, global, robust.clip_iterations);
      break;
  }

  // Step 3.
  out.next_global = global;
  if (diloco) {
    out.next_momentum = global;  // same layout; values replaced below
  }
  for (std::size_t t = 0; t < global.size(); ++t) {
    const std::size_t n = global[t].f32.size();
    const std::vector<double>& mean = delta[t];
    auto& next = out.next_global[t].f32;
    if (!diloco) {
      for (std::size_t i = 0; i < n; ++i) {
        next[i] = static_cast<float>(global[t].f32[i] + optimizer.lr * mean[i]);
      }
      continue;
    }
    auto& v = out.next_momentum[t].f32;
    for (std::size_t i = 0; i < n; ++i) {
      const double g = -mean[i];
      const double prev_v = has_v ? (*momentum)[t].f32[i] : 0.0;
      const double new_v = optimizer.momentum * prev_v + g;
      v[i] = static_cast<float>(new_v);
      next[i] =
          static_cast<float>(global[t].f32[i] - optimizer.lr * (g + optimizer.momentum * new_v));
    }
  }
  for (const auto& t : out.next_global) {
    for (float x : t.f32) {
      if (!std::isfinite(x)) return MakeError(Errc::kMalformed, "aggregate is not finite");
    }
  }
  return out;
}

}  // namespace ubcp::coordinator
