// SPDX-License-Identifier: Apache-2.0
#pragma once
// Compares the results that several donors returned for the same unit of work, and decides a
// replicated unit's quorum. Pure: values in, a decision out, no I/O, deterministic.
//
// Honest executions of one manifest are not bit-identical: torch thread counts and CPU instruction
// sets change the float summation order, and over K optimizer steps these rounding differences
// can grow (SGD trajectories diverge, above all when training from scratch), then the update is
// int8-quantised. Results therefore agree within a Tolerance measured by
// tests/bench/tolerance_bench.cc (docs/SECURITY.md, "Comparing replicated results"): what is
// computed before training moves (the first batch's loss, an evaluation) must match almost
// exactly; the update only within a relative distance.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ubcp/common/tensor_codec.h"

namespace ubcp::coordinator {

// How far two results of the same unit may differ and still agree.
struct Tolerance {
  // ||a - b||_2 / max(||a||_2, ||b||_2) over all tensors of the finetune update.
  double update_rel_l2 = 0;
  // |la - lb| <= loss_rel * max(|la|, |lb|) + loss_abs, for the eval loss and the finetune first
  // loss (the first batch's, before any step). The finetune last loss is the loss of one batch at
  // the end of a trajectory that honestly diverges (measured up to 20% apart): only required to
  // be finite.
  double loss_rel = 0;
  double loss_abs = 0;
  double accuracy_abs = 0;  // |accuracy a - accuracy b|, eval only
};

// The tolerance measured with scripts/bench (tolerance section); see the comment at its
// definition for the run and the figures.
Tolerance DefaultTolerance();

// One replica's result, as the coordinator has it after checking the signature and decoding
// the update.
struct ComparableResult {
  std::string kind;  // common::kUnitFinetune or common::kUnitEval
  double loss = 0;
  double accuracy = 0;    // eval only
  double first_loss = 0;  // finetune only
  std::int64_t samples = 0;
  common::TensorList update;  // finetune only: the decoded update
};

// Relative L2 distance of two updates: ||a - b||_2 / max(||a||_2, ||b||_2), 0 when both are all
// zero, 1 when exactly one is. +infinity when their layouts (names, kinds, shapes, order)
// differ, when a tensor is not fp32, or when a value is not finite.
double UpdateDistance(const common::TensorList& a, const common::TensorList& b);

// Whether two results of the same unit agree within `t`: same kind (a known one), same sample
// count, finite losses; eval: losses within the loss tolerance and accuracies within
// accuracy_abs; finetune: first losses within the loss tolerance and non-empty updates within
// update_rel_l2. Symmetric.
bool Agree(const ComparableResult& a, const ComparableResult& b, const Tolerance& t);

// The quorum decision for one unit of work.
struct QuorumDecision {
  enum class Outcome {
    kWait,         // fewer results than the quorum: nothing to decide yet
    kValid,        // a group of agreeing results reached the quorum
    kNeedAnother,  // no group reached it; the unit should be executed once more
    kDrop,         // no group reached it and the unit may collect no more results
  };
  Outcome outcome = Outcome::kWait;
  // kValid only: the agreeing group in arrival order, except that [0] is the canonical result
  // (the result the group agrees with).
  std::vector<std::size_t> valid;
  // kValid only: every other result. Empty otherwise: when no group reaches the quorum, nobody
  // can tell which donor lied.
  std::vector<std::size_t> invalid;
};

// `results`: every result received for the unit so far that has not been judged invalid, in
// arrival order. `quorum` (raised to 1 if lower) is how many agreeing results make the unit
// valid; `max_results` (raised to the quorum if lower) is the most results the unit may collect.
//
// The group of a result r is every result that Agree()s with r (r itself included, unless its
// own values are unusable). The largest group wins; among groups of equal size, the one of the
// earliest result; that result is canonical. If the winning group has at least `quorum` members,
// kValid; otherwise kNeedAnother while results.size() < max_results, kDrop after.
QuorumDecision DecideQuorum(const std::vector<ComparableResult>& results, int quorum,
                            int max_results, const Tolerance& t);

}  // namespace ubcp::coordinator
