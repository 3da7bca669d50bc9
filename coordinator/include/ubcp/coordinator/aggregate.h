// SPDX-License-Identifier: Apache-2.0
#pragma once
// Combines the accepted updates of a round into the next global model. Pure: tensors in,
// tensors out, no I/O, deterministic (same inputs in the same order give the same bits).
// Updates are pseudo-gradients in the donor's direction of travel (delta = locally trained -
// global), weighted by the coordinator's own size of the shard each one was trained on (never
// by a figure the donor reports). Three steps (docs/SECURITY.md, "Robust aggregation"):
//
//   0. Updates with a NaN or infinite value are dropped (counted in dropped_non_finite).
//   1. Norm bound: m = the lower median of the updates' L2 norms (over all tensors); an update
//      whose norm exceeds norm_bound * m is scaled down to norm_bound * m.
//   2. The bounded updates are combined into one delta by the robust rule:
//        kMean          weighted mean
//        kMedian        coordinate-wise weighted median (plain median when weights are equal)
//        kTrimmedMean   per coordinate, drop the floor(trim_fraction * n) largest and smallest
//                       values, weighted mean of the rest
//        kMultiKrum     score each update by the sum of squared distances to its n - f - 2
//                       nearest neighbours, weighted mean of the n - f best scores
//        kCenteredClip  v = coordinate-wise weighted median; tau = lower median of |x_i - v|;
//                       clip_iterations times: v <- v + mean_w(clip(x_i - v, tau))
//   3. The outer optimizer on the combined delta:
//        FedAvg: next = global + outer_lr * delta                      (outer_lr = 1: FedAvg)
//        DiLoCo: g = -delta; v = momentum * v + g;
//                next = global - outer_lr * (g + momentum * v)         (Nesterov outer step)

#include <string_view>
#include <vector>

#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"

namespace ubcp::coordinator {

enum class OuterRule { kFedAvg, kDiLoCo };

struct OuterOptimizer {
  OuterRule rule = OuterRule::kFedAvg;
  double lr = 1.0;
  double momentum = 0.0;  // DiLoCo only
};

enum class CombineRule { kMean, kMedian, kTrimmedMean, kMultiKrum, kCenteredClip };

// The JobSpec's "robust" names: "mean", "median", "trimmed_mean", "multi_krum",
// "centered_clip". kInvalidArgument for any other name.
common::Result<CombineRule> CombineRuleFromName(std::string_view name);

// Steps 1 and 2. The defaults are the JobSpec's defaults: centered clipping, bound 3.
struct RobustRule {
  CombineRule combine = CombineRule::kCenteredClip;
  // >= 1, a multiple of the round's median update norm. +infinity turns step 1 off (only
  // reachable through this API: a JobSpec carries a finite bound).
  double norm_bound = 3.0;
  double trim_fraction = 0.2;  // kTrimmedMean: in [0, 0.45]
  // kMultiKrum: f, the number of Byzantine updates to tolerate, in [0, 64]. With n updates it
  // is lowered to floor((n - 3) / 2) when n < 2f + 3 (0 for n < 3: the mean of all).
  int krum_byzantine = 1;
  int clip_iterations = 3;  // kCenteredClip: in [1, 100]
};

struct WeightedUpdate {
  const common::TensorList* delta = nullptr;
  double weight = 1.0;  // > 0: the size of the shard the update was trained on
};

struct AggregateOutput {
  common::TensorList next_global;
  common::TensorList next_momentum;  // DiLoCo: the new velocity; FedAvg: empty
  int dropped_non_finite = 0;        // updates left out for a NaN or infinite value
  int norm_clipped = 0;              // updates scaled down to the norm bound
  double median_norm = 0;            // the round's median update norm (m), before step 1
};

// kInvalidArgument without updates, with a non-positive or non-finite weight, with robust
// parameters out of range, or when every update is non-finite; kMalformed when an update or
// the momentum does not have the global model's layout, the global model is not fp32, or the
// result is not finite. Cost: O(n d) for the mean, O(n log n d) for the median and the trimmed
// mean, O(n^2 d) for multi-Krum, O(clip_iterations n d) for centered clipping (d parameters).
common::Result<AggregateOutput> Aggregate(const common::TensorList& global,
                                          const common::TensorList* momentum,
                                          const std::vector<WeightedUpdate>& updates,
                                          const OuterOptimizer& optimizer,
                                          const RobustRule& robust);

}  // namespace ubcp::coordinator
