// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/result_compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ubcp/common/wire.h"

namespace ubcp::coordinator {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool LossesAgree(double a, double b, const Tolerance& t) {
  if (!std::isfinite(a) || !std::isfinite(b)) return false;
  return std::abs(a - b) <= t.loss_rel * std::max(std::abs(a), std::abs(b)) + t.loss_abs;
}

}  // namespace

// Measured by `scripts/bench tolerance` (tests/bench/tolerance_bench.cc) on the 2-core AMD EPYC
// development machine: the digits MLP, the demo's Fashion-MNIST CNN pretraining and its digits
// fine-tune, 2 rounds x 2 shards each, torch threads 1 and 2, twice each, natively (AVX-512) and
// again with ATen, MKL and oneDNN held to SSE4, compared across the two processes
// (docs/SECURITY.md, "Comparing replicated results"). Same threads and instruction set:
// bit-identical. Otherwise, honest maxima: update 0.225 (CNN pretraining from scratch; fine-tune
// 0.029, MLP 6e-5), first loss 1.39e-7, eval loss 8.6e-8, accuracy 0. Nearest cheats: update
// 0.486 (another shard's update; sign_flip, scale, noise, zeros at the client's default factor
// 10: >= 0.9; label_flip >= 1.08; previous round's >= 0.76), first loss 1.96e-5 (another shard),
// eval loss 0.469 and accuracy 0.084 (a stale model).
Tolerance DefaultTolerance() {
  Tolerance t;
  // Honest and cheating updates are only 2.2x apart (0.225 vs 0.486), so no value is 10x from
  // both: the benchmark's geometric mean, 1.47x from each. The first-loss check below separates
  // the nearest cheat (another shard) with a 10x margin on both sides.
  t.update_rel_l2 = 0.33;
  // 10x the honest maximum (1.39e-7), rounded up; about 10x below the nearest cheat (1.96e-5).
  t.loss_rel = 2e-6;
  // Float32 rounding of a loss near zero (about 10 x epsilon).
  t.loss_abs = 1e-6;
  // Honest accuracies never differed (10 x 0 = 0), but a prediction whose top two logits tie
  // within rounding may flip: this allows one or two such samples in the smallest eval batch
  // measured (360 digits), and is 17x below the nearest cheat (0.084).
  t.accuracy_abs = 0.005;
  return t;
}

double UpdateDistance(const common::TensorList& a, const common::TensorList& b) {
  if (a.size() != b.size()) return kInf;
  double diff2 = 0, a2 = 0, b2 = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const common::NamedTensor& x = a[i];
    const common::NamedTensor& y = b[i];
    if (x.name != y.name || x.shape != y.shape || x.kind != common::TensorKind::kF32 ||
        y.kind != common::TensorKind::kF32 || x.f32.size() != y.f32.size() ||
        static_cast<std::int64_t>(x.f32.size()) != x.numel()) {
      return kInf;
    }
    for (std::size_t j = 0; j < x.f32.size(); ++j) {
      const double u = x.f32[j], v = y.f32[j];
      diff2 += (u - v) * (u - v);
      a2 += u * u;
      b2 += v * v;
    }
  }
  if (!std::isfinite(diff2) || !std::isfinite(a2) || !std::isfinite(b2)) return kInf;
  const double norm = std::sqrt(std::max(a2, b2));
  if (norm == 0) return 0;
  return std::sqrt(diff2) / norm;
}

bool Agree(const ComparableResult& a, const ComparableResult& b, const Tolerance& t) {
  if (a.kind != b.kind || a.samples != b.samples) return false;
  if (!std::isfinite(a.loss) || !std::isfinite(b.loss)) return false;
  if (a.kind == common::kUnitEval) {
    if (!LossesAgree(a.loss, b.loss, t)) return false;
    if (!std::isfinite(a.accuracy) || !std::isfinite(b.accuracy)) return false;
    return std::abs(a.accuracy - b.accuracy) <= t.accuracy_abs;
  }
  if (a.kind == common::kUnitFinetune) {
    // The first loss is computed before the first step, so it does not inherit the divergence
    // of the trajectory: it pins the model, the shard and the batch order the donor used.
    if (!LossesAgree(a.first_loss, b.first_loss, t)) return false;
    if (a.update.empty() || b.update.empty()) return false;
    return UpdateDistance(a.update, b.update) <= t.update_rel_l2;
  }
  return false;
}

QuorumDecision DecideQuorum(const std::vector<ComparableResult>& results, int quorum,
                            int max_results, const Tolerance& t) {
  quorum = std::max(quorum, 1);
  max_results = std::max(max_results, quorum);
  QuorumDecision decision;
  if (results.size() < static_cast<std::size_t>(quorum)) {
    decision.outcome = QuorumDecision::Outcome::kWait;
    return decision;
  }

  // Agree() is symmetric, so each pair is compared once.
  const std::size_t n = results.size();
  std::vector<std::vector<bool>> agree(n, std::vector<bool>(n, false));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i; j < n; ++j) {
      agree[i][j] = agree[j][i] = Agree(results[i], results[j], t);
    }
  }

  // A result that does not agree with itself (a NaN loss, no update) is never canonical.
  std::size_t best = n, best_size = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!agree[i][i]) continue;
    const auto size = static_cast<std::size_t>(std::count(agree[i].begin(), agree[i].end(), true));
    if (size > best_size) {
      best = i;
      best_size = size;
    }
  }

  if (best_size >= static_cast<std::size_t>(quorum)) {
    decision.outcome = QuorumDecision::Outcome::kValid;
    decision.valid.push_back(best);
    for (std::size_t j = 0; j < n; ++j) {
      if (j == best) continue;
      (agree[best][j] ? decision.valid : decision.invalid).push_back(j);
    }
    return decision;
  }
  decision.outcome = results.size() < static_cast<std::size_t>(max_results)
                         ? QuorumDecision::Outcome::kNeedAnother
                         : QuorumDecision::Outcome::kDrop;
  return decision;
}

}  // namespace ubcp::coordinator
