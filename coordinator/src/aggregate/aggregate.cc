// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/aggregate.h"

#include <cmath>

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;
using common::TensorKind;
using common::TensorList;

common::Result<AggregateOutput> Aggregate(const TensorList& global, const TensorList* momentum,
                                          const std::vector<WeightedUpdate>& updates,
                                          const OuterOptimizer& optimizer) {
  if (updates.empty()) return MakeError(Errc::kInvalidArgument, "no updates to aggregate");
  for (const auto& t : global) {
    if (t.kind != TensorKind::kF32) return MakeError(Errc::kMalformed, "global model not fp32");
  }
  double total_weight = 0;
  for (const auto& u : updates) {
    if (u.delta == nullptr || !(u.weight > 0) || !std::isfinite(u.weight)) {
      return MakeError(Errc::kInvalidArgument, "update weight must be positive");
    }
    UBCP_RETURN_IF_ERROR(common::CheckSameLayout(global, *u.delta));
    total_weight += u.weight;
  }
  const bool diloco = optimizer.rule == OuterRule::kDiLoCo;
  if (diloco && momentum != nullptr && !momentum->empty()) {
    UBCP_RETURN_IF_ERROR(common::CheckSameLayout(global, *momentum));
  }

  AggregateOutput out;
  out.next_global = global;
  if (diloco) {
    out.next_momentum = global;  // same layout; values replaced below
  }
  for (std::size_t t = 0; t < global.size(); ++t) {
    const std::size_t n = global[t].f32.size();
    std::vector<double> mean(n, 0.0);
    for (const auto& u : updates) {
      const double w = u.weight / total_weight;
      const auto& d = (*u.delta)[t].f32;
      for (std::size_t i = 0; i < n; ++i) mean[i] += w * d[i];
    }
    auto& next = out.next_global[t].f32;
    if (!diloco) {
      for (std::size_t i = 0; i < n; ++i) {
        next[i] = static_cast<float>(global[t].f32[i] + optimizer.lr * mean[i]);
      }
      continue;
    }
    const bool has_v = momentum != nullptr && !momentum->empty();
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
