// SPDX-License-Identifier: Apache-2.0
#pragma once
// A dishonest donor, for robustness experiments (issue #4's attack simulator): the update a unit
// really computed is replaced before it is encoded and signed. Everything else about the client
// stays honest, so the coordinator sees a well-formed, correctly signed result whose content is
// hostile. Only `ubcp-client --adversary <mode>` turns this on; the default is honest.
//
//   sign_flip  -scale x delta        (pushes the model backwards)
//   scale      scale x delta         (outsized, in the honest direction)
//   noise      Gaussian noise with scale x the delta's RMS per element, seeded
//   zeros      an all-zero update    (lazy: no training was needed)
//   label_flip trains honestly on poisoned labels: label y becomes classes - 1 - y

#include <cstdint>
#include <string_view>

#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"

namespace ubcp::client {

enum class AdversaryMode { kHonest, kSignFlip, kScale, kNoise, kZeros, kLabelFlip };

struct Adversary {
  AdversaryMode mode = AdversaryMode::kHonest;
  double scale = 10.0;  // > 0
};

// "honest", "sign_flip", "scale", "noise", "zeros", "label_flip"; kInvalidArgument otherwise.
common::Result<AdversaryMode> ParseAdversaryMode(std::string_view name);

// Before training: label_flip poisons the shard's labels 'y' in place (other modes: no-op).
common::Status PoisonLabels(const Adversary& adversary, int classes, common::TensorList& data);
// After training: applies `adversary` to a finetune delta in place; deterministic for a given
// seed (label_flip: no-op here).
// kInvalidArgument for a scale that is not positive and finite.
common::Status ApplyAdversary(const Adversary& adversary, std::uint64_t seed,
                              common::TensorList& delta);

}  // namespace ubcp::client
