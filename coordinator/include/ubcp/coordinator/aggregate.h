// SPDX-License-Identifier: Apache-2.0
#pragma once
// Combines the accepted updates of a round into the next global model. Pure: tensors in,
// tensors out, no I/O. Updates are pseudo-gradients in the donor's direction of travel
// (delta = locally trained - global), weighted by the samples each donor processed.
//
//   FedAvg: next = global + outer_lr * mean_w(delta)                  (outer_lr = 1: plain FedAvg)
//   DiLoCo: g = -mean_w(delta); v = momentum * v + g;
//           next = global - outer_lr * (g + momentum * v)             (Nesterov outer step)

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

struct WeightedUpdate {
  const common::TensorList* delta = nullptr;
  double weight = 1.0;  // > 0, e.g. samples processed
};

struct AggregateOutput {
  common::TensorList next_global;
  common::TensorList next_momentum;  // DiLoCo: the new velocity; FedAvg: empty
};

// kInvalidArgument without updates or with a non-positive weight; kMalformed when an update or
// the momentum does not have the global model's layout, or the result is not finite.
common::Result<AggregateOutput> Aggregate(const common::TensorList& global,
                                          const common::TensorList* momentum,
                                          const std::vector<WeightedUpdate>& updates,
                                          const OuterOptimizer& optimizer);

}  // namespace ubcp::coordinator
