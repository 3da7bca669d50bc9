// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/aggregate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace ubcp::coordinator {
namespace {
using common::NamedTensor;
using common::TensorList;

constexpr double kNoBound = std::numeric_limits<double>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
const RobustRule kPlainMean{CombineRule::kMean, kNoBound};
const OuterOptimizer kFedAvg{OuterRule::kFedAvg, 1.0, 0};

TensorList Vec(std::vector<float> v) {
  NamedTensor t;
  t.name = "w";
  t.shape = {static_cast<std::int64_t>(v.size())};
  t.f32 = std::move(v);
  return {t};
}

RobustRule Rule(CombineRule combine, double norm_bound = 3.0) {
  RobustRule r;
  r.combine = combine;
  r.norm_bound = norm_bound;
  return r;
}

// The combined delta: FedAvg with outer_lr 1 from a zero model.
std::vector<float> Combine(const std::vector<WeightedUpdate>& updates, const RobustRule& robust,
                           AggregateOutput* full = nullptr) {
  TensorList zero = *updates.front().delta;
  for (auto& t : zero) std::fill(t.f32.begin(), t.f32.end(), 0.0f);
  auto out = Aggregate(zero, nullptr, updates, kFedAvg, robust);
  EXPECT_TRUE(out) << out.error().ToString();
  if (!out) return {};
  std::vector<float> flat;
  for (const auto& t : out->next_global) flat.insert(flat.end(), t.f32.begin(), t.f32.end());
  if (full != nullptr) *full = *out;
  return flat;
}

// ---- the outer optimizer (step 3) ----

TEST(Aggregate, FedAvgIsSampleWeightedMean) {
  TensorList global = Vec({1, 1});
  TensorList d1 = Vec({1, 0}), d2 = Vec({-1, 3});
  auto out =
      Aggregate(global, nullptr, {{&d1, 1}, {&d2, 3}}, {OuterRule::kFedAvg, 1.0, 0}, kPlainMean);
  ASSERT_TRUE(out);
  // mean = (1*[1,0] + 3*[-1,3]) / 4 = [-0.5, 2.25]
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], 0.5f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[1], 3.25f);
  EXPECT_TRUE(out->next_momentum.empty());
}

TEST(Aggregate, DiLoCoWithoutMomentumEqualsFedAvgScaled) {
  TensorList global = Vec({2, -2});
  TensorList d = Vec({0.5, 1});
  auto out = Aggregate(global, nullptr, {{&d, 1}}, {OuterRule::kDiLoCo, 0.7, 0.0}, kPlainMean);
  ASSERT_TRUE(out);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], 2 + 0.7f * 0.5f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[1], -2 + 0.7f * 1.0f);
}

TEST(Aggregate, DiLoCoNesterovMomentum) {
  TensorList global = Vec({0});
  TensorList v = Vec({2});
  TensorList d = Vec({-1});  // g = 1
  auto out = Aggregate(global, &v, {{&d, 1}}, {OuterRule::kDiLoCo, 0.5, 0.9}, kPlainMean);
  ASSERT_TRUE(out);
  // new_v = 0.9*2 + 1 = 2.8; next = 0 - 0.5 * (1 + 0.9*2.8) = -1.76
  EXPECT_FLOAT_EQ(out->next_momentum[0].f32[0], 2.8f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], -1.76f);
}

TEST(Aggregate, RefusesBadInput) {
  TensorList global = Vec({0, 0});
  TensorList wrong = Vec({1});
  TensorList ok = Vec({1, 1});
  EXPECT_FALSE(Aggregate(global, nullptr, {}, {}, kPlainMean));
  EXPECT_EQ(Aggregate(global, nullptr, {{&wrong, 1}}, {}, kPlainMean).error().code,
            common::Errc::kMalformed);
  EXPECT_FALSE(Aggregate(global, nullptr, {{&ok, 0}}, {}, kPlainMean));
  EXPECT_FALSE(Aggregate(global, nullptr, {{&ok, -1}}, {}, kPlainMean));
  TensorList inf = Vec({std::numeric_limits<float>::max(), 0});
  TensorList big = Vec({std::numeric_limits<float>::max(), 0});
  EXPECT_FALSE(Aggregate(inf, nullptr, {{&big, 1}}, {OuterRule::kFedAvg, 10.0, 0}, kPlainMean));
}

TEST(Aggregate, DiLoCoStepsOnTheRobustDelta) {
  TensorList global = Vec({1});
  TensorList a = Vec({1}), b = Vec({2}), c = Vec({30});
  // The median of [1, 2, 30] is 2: g = -2, v = 0.5 * 0 + g, next = 1 - 1 * (g + 0.5 * v) = 4.
  auto out = Aggregate(global, nullptr, {{&a, 1}, {&b, 1}, {&c, 1}}, {OuterRule::kDiLoCo, 1.0, 0.5},
                       Rule(CombineRule::kMedian));
  ASSERT_TRUE(out) << out.error().ToString();
  EXPECT_FLOAT_EQ(out->next_momentum[0].f32[0], -2.0f);
  EXPECT_FLOAT_EQ(out->next_global[0].f32[0], 4.0f);
}

// ---- each rule on updates whose answer is known ----

TEST(Aggregate, MeanRespectsWeightsUnderTheDefaultBound) {
  TensorList a = Vec({1, 0}), b = Vec({0, 1}), c = Vec({1, 1});
  // Norms 1, 1, 1.41: nothing is clipped. (2*[1,0] + 1*[0,1] + 1*[1,1]) / 4.
  AggregateOutput full;
  auto d = Combine({{&a, 2}, {&b, 1}, {&c, 1}}, Rule(CombineRule::kMean), &full);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_FLOAT_EQ(d[0], 0.75f);
  EXPECT_FLOAT_EQ(d[1], 0.5f);
  EXPECT_EQ(full.norm_clipped, 0);
  EXPECT_EQ(full.dropped_non_finite, 0);
  EXPECT_DOUBLE_EQ(full.median_norm, 1.0);
  // Doubling one shard moves the mean toward it.
  auto heavier = Combine({{&a, 4}, {&b, 1}, {&c, 1}}, Rule(CombineRule::kMean));
  EXPECT_FLOAT_EQ(heavier[0], 5.0f / 6.0f);
  EXPECT_FLOAT_EQ(heavier[1], 2.0f / 6.0f);
}

TEST(Aggregate, CoordinateMedian) {
  TensorList a = Vec({1, 10}), b = Vec({2, -5}), c = Vec({100, 0});
  // The bound (3 x 10.05) scales c to [30.15, 0]; the median per coordinate is [2, 0] either way.
  auto d = Combine({{&a, 1}, {&b, 1}, {&c, 1}}, Rule(CombineRule::kMedian));
  EXPECT_FLOAT_EQ(d[0], 2.0f);
  EXPECT_FLOAT_EQ(d[1], 0.0f);
  // An even count with equal weights: the mean of the two middle values.
  TensorList e = Vec({4, 4});
  auto even = Combine({{&a, 1}, {&b, 1}, {&c, 1}, {&e, 1}}, Rule(CombineRule::kMedian, kNoBound));
  EXPECT_FLOAT_EQ(even[0], 3.0f);  // [1, 2, 4, 100]
  EXPECT_FLOAT_EQ(even[1], 2.0f);  // [-5, 0, 4, 10]
}

TEST(Aggregate, MedianIsWeighted) {
  TensorList a = Vec({0}), b = Vec({1});
  // Plain median: 0.5. With weights 1 and 3, b holds three quarters of the weight. (No bound:
  // the lower median norm is 0, which would scale b to 0.)
  const RobustRule median = Rule(CombineRule::kMedian, kNoBound);
  EXPECT_FLOAT_EQ(Combine({{&a, 1}, {&b, 1}}, median)[0], 0.5f);
  EXPECT_FLOAT_EQ(Combine({{&a, 1}, {&b, 3}}, median)[0], 1.0f);
  EXPECT_FLOAT_EQ(Combine({{&a, 3}, {&b, 1}}, median)[0], 0.0f);
}

TEST(Aggregate, TrimmedMean) {
  TensorList u[5] = {Vec({1, -7}), Vec({2, 0}), Vec({3, 1}), Vec({4, 2}), Vec({100, 50})};
  std::vector<WeightedUpdate> updates;
  for (auto& x : u) updates.push_back({&x, 1});
  RobustRule r = Rule(CombineRule::kTrimmedMean, kNoBound);
  r.trim_fraction = 0.2;  // one dropped at each end
  auto d = Combine(updates, r);
  EXPECT_FLOAT_EQ(d[0], 3.0f);  // mean of [2, 3, 4]
  EXPECT_FLOAT_EQ(d[1], 1.0f);  // mean of [0, 1, 2]
  r.trim_fraction = 0.0;        // nothing dropped: the mean
  d = Combine(updates, r);
  EXPECT_FLOAT_EQ(d[0], 22.0f);
  EXPECT_FLOAT_EQ(d[1], 9.2f);
  r.trim_fraction = 0.45;  // floor(2.25) = 2 at each end: the median
  d = Combine(updates, r);
  EXPECT_FLOAT_EQ(d[0], 3.0f);
  EXPECT_FLOAT_EQ(d[1], 1.0f);
  // What is left is averaged by weight.
  updates[3].weight = 3;
  r.trim_fraction = 0.2;
  d = Combine(updates, r);
  EXPECT_FLOAT_EQ(d[0], (2.0f + 3.0f + 3 * 4.0f) / 5);
}

TEST(Aggregate, MultiKrumDropsTheFarthest) {
  TensorList u[5] = {Vec({0}), Vec({0.1f}), Vec({0.2f}), Vec({0.3f}), Vec({10})};
  std::vector<WeightedUpdate> updates;
  for (auto& x : u) updates.push_back({&x, 1});
  RobustRule r = Rule(CombineRule::kMultiKrum, kNoBound);
  r.krum_byzantine = 1;  // n = 5 >= 2f + 3: 2 neighbours each, keep the best 4
  EXPECT_FLOAT_EQ(Combine(updates, r)[0], 0.15f);
  r.norm_bound = 3;  // 10 is first scaled to 0.6, still the farthest
  AggregateOutput full;
  EXPECT_FLOAT_EQ(Combine(updates, r, &full)[0], 0.15f);
  EXPECT_EQ(full.norm_clipped, 1);
  // f = 2 is more than 5 updates allow (n < 2f + 3): it falls back to f = 1.
  r.krum_byzantine = 2;
  EXPECT_FLOAT_EQ(Combine(updates, r)[0], 0.15f);
  // Weighted mean of the kept ones.
  updates[3].weight = 5;
  EXPECT_FLOAT_EQ(Combine(updates, r)[0], (0.1f + 0.2f + 5 * 0.3f) / 8);
}

TEST(Aggregate, MultiKrumWithFewUpdatesIsTheMean) {
  TensorList a = Vec({1}), b = Vec({2});
  RobustRule r = Rule(CombineRule::kMultiKrum, kNoBound);
  r.krum_byzantine = 64;
  EXPECT_FLOAT_EQ(Combine({{&a, 1}, {&b, 3}}, r)[0], 1.75f);
  EXPECT_FLOAT_EQ(Combine({{&a, 1}}, r)[0], 1.0f);
}

TEST(Aggregate, CenteredClipClipsTheOutlier) {
  TensorList u[5] = {Vec({0, 0}), Vec({2, 0}), Vec({0, 2}), Vec({0, 0}), Vec({100, 100})};
  std::vector<WeightedUpdate> updates;
  for (auto& x : u) updates.push_back({&x, 1});
  RobustRule r = Rule(CombineRule::kCenteredClip);
  r.clip_iterations = 1;
  // v0 = coordinate-wise median = [0, 0]; distances 0, 2, 2, 0, 141 (6 after the bound):
  // tau = 2. One step: v = ([2, 0] + [0, 2] + 2 * [1, 1] / sqrt(2)) / 5.
  const float expected = static_cast<float>((2 + std::sqrt(2.0)) / 5);
  auto d = Combine(updates, r);
  EXPECT_FLOAT_EQ(d[0], expected);
  EXPECT_FLOAT_EQ(d[1], expected);
  // The mean would be dragged to 20.4 (1.25 with the bound alone).
  EXPECT_FLOAT_EQ(Combine(updates, Rule(CombineRule::kMean))[0], (2 + 3 * std::sqrt(2.0f)) / 5);
}

TEST(Aggregate, CenteredClipWithoutOutliersIsTheMean) {
  TensorList a = Vec({0, 0}), b = Vec({2, 0}), c = Vec({0, 2});
  // v0 = [0, 0], tau = 2: nothing is clipped, the first step lands on the mean [2/3, 2/3] and
  // the next ones stay there.
  auto d = Combine({{&a, 1}, {&b, 1}, {&c, 1}}, Rule(CombineRule::kCenteredClip));
  EXPECT_NEAR(d[0], 2.0 / 3, 1e-6);
  EXPECT_NEAR(d[1], 2.0 / 3, 1e-6);
}

TEST(Aggregate, EveryRuleReturnsTheCommonUpdate) {
  TensorList same = Vec({0.5f, -0.25f, 2});
  for (CombineRule c : {CombineRule::kMean, CombineRule::kMedian, CombineRule::kTrimmedMean,
                        CombineRule::kMultiKrum, CombineRule::kCenteredClip}) {
    auto d = Combine({{&same, 1}, {&same, 2}, {&same, 3}, {&same, 1}}, Rule(c));
    ASSERT_EQ(d.size(), 3u);
    EXPECT_FLOAT_EQ(d[0], 0.5f) << static_cast<int>(c);
    EXPECT_FLOAT_EQ(d[1], -0.25f) << static_cast<int>(c);
    EXPECT_FLOAT_EQ(d[2], 2.0f) << static_cast<int>(c);
  }
}

// ---- the norm bound (step 1) and non-finite updates (step 0) ----

TEST(Aggregate, NormBoundClipsAHugeUpdate) {
  TensorList honest = Vec({1, 0}), huge = Vec({0, 1000});
  AggregateOutput full;
  auto d = Combine({{&honest, 1}, {&honest, 1}, {&honest, 1}, {&honest, 1}, {&huge, 1}},
                   Rule(CombineRule::kMean), &full);
  // Median norm 1, bound 3: huge becomes [0, 3], direction kept.
  EXPECT_FLOAT_EQ(d[0], 0.8f);
  EXPECT_FLOAT_EQ(d[1], 0.6f);
  EXPECT_EQ(full.norm_clipped, 1);
  EXPECT_DOUBLE_EQ(full.median_norm, 1.0);
  // Without the bound it would dominate.
  EXPECT_FLOAT_EQ(
      Combine({{&honest, 1}, {&honest, 1}, {&honest, 1}, {&honest, 1}, {&huge, 1}}, kPlainMean)[1],
      200.0f);
  // The bound is relative to the median of both tensors' norm together.
  TensorList two = Vec({3, 4});
  two.push_back(two[0]);
  two[1].name = "b";
  two[1].f32 = {0, 0};
  TensorList big_two = two;
  big_two[1].f32 = {0, 100};  // norm sqrt(25 + 10000)
  auto t = Combine({{&two, 1}, {&two, 1}, {&big_two, 1}}, Rule(CombineRule::kMean, 2.0), &full);
  EXPECT_EQ(full.norm_clipped, 1);
  const double s = 10 / std::sqrt(10025.0);  // scaled to norm 2 x 5
  EXPECT_NEAR(t[0], (3 + 3 + 3 * s) / 3, 1e-5);
  EXPECT_NEAR(t[3], 100 * s / 3, 1e-5);
}

TEST(Aggregate, NormBoundUsesTheLowerMedian) {
  // Two updates, one huge: the lower median is the small norm, so the huge one is cut to 3x it
  // (an average of the two middle norms would let it through).
  TensorList small = Vec({1}), huge = Vec({1000});
  AggregateOutput full;
  auto d = Combine({{&small, 1}, {&huge, 1}}, Rule(CombineRule::kMean), &full);
  EXPECT_FLOAT_EQ(d[0], 2.0f);
  EXPECT_DOUBLE_EQ(full.median_norm, 1.0);
}

TEST(Aggregate, NonFiniteUpdatesAreDropped) {
  TensorList a = Vec({1, 1}), nan = Vec({kNaN, 0}), inf = Vec({2, -kInf}), b = Vec({3, 3});
  for (CombineRule c : {CombineRule::kMean, CombineRule::kMedian, CombineRule::kTrimmedMean,
                        CombineRule::kMultiKrum, CombineRule::kCenteredClip}) {
    AggregateOutput full;
    auto d = Combine({{&a, 1}, {&nan, 1}, {&inf, 1}, {&b, 1}}, Rule(c), &full);
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(full.dropped_non_finite, 2) << static_cast<int>(c);
    // Any rule of two updates [1,1] and [3,3] with equal weights gives [2,2].
    EXPECT_FLOAT_EQ(d[0], 2.0f) << static_cast<int>(c);
    EXPECT_FLOAT_EQ(d[1], 2.0f) << static_cast<int>(c);
  }
  TensorList global = Vec({0, 0});
  auto none = Aggregate(global, nullptr, {{&nan, 1}, {&inf, 1}}, kFedAvg, RobustRule{});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, common::Errc::kInvalidArgument);
}

// ---- Byzantine updates ----

double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    s += (static_cast<double>(a[i]) - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

enum class Attack { kSignFlipTimes10, kLargeNoise };

struct Round {
  std::vector<TensorList> updates;  // 7 honest then 3 Byzantine
  std::vector<float> honest_mean;   // flattened
  double honest_norm = 0;
};

// Two tensors (32 values): 7 honest updates = a shared direction mu plus noise of about 0.3 |mu|,
// and 3 Byzantine ones (30%).
Round MakeRound(Attack attack, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> mu(32);
  for (float& x : mu) x = uniform(rng);
  const double mu_norm = Norm(mu);
  const float sigma = static_cast<float>(0.3 * mu_norm / std::sqrt(32.0));
  auto to_list = [](const std::vector<float>& flat) {
    NamedTensor w, b;
    w.name = "w";
    w.shape = {4, 5};
    w.f32.assign(flat.begin(), flat.begin() + 20);
    b.name = "b";
    b.shape = {12};
    b.f32.assign(flat.begin() + 20, flat.end());
    return TensorList{w, b};
  };
  Round round;
  round.honest_mean.assign(32, 0);
  std::vector<std::vector<float>> honest;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> x = mu;
    for (float& v : x) v += sigma * normal(rng);
    for (std::size_t k = 0; k < 32; ++k) round.honest_mean[k] += x[k] / 7;
    honest.push_back(x);
    round.updates.push_back(to_list(x));
  }
  for (int i = 0; i < 3; ++i) {
    std::vector<float> x(32);
    if (attack == Attack::kSignFlipTimes10) {
      for (std::size_t k = 0; k < 32; ++k) x[k] = -10 * honest[static_cast<std::size_t>(i)][k];
    } else {
      for (float& v : x) v = normal(rng);
      const double scale = 100 * mu_norm / Norm(x);
      for (float& v : x) v = static_cast<float>(v * scale);
    }
    round.updates.push_back(to_list(x));
  }
  round.honest_norm = Norm(round.honest_mean);
  return round;
}

struct RobustCase {
  const char* name;
  RobustRule rule;
};

std::vector<RobustCase> RobustCases() {
  RobustRule trimmed = Rule(CombineRule::kTrimmedMean);
  trimmed.trim_fraction = 0.3;  // at least the Byzantine fraction
  RobustRule krum = Rule(CombineRule::kMultiKrum);
  krum.krum_byzantine = 3;
  return {{"median", Rule(CombineRule::kMedian)},
          {"trimmed_mean", trimmed},
          {"multi_krum", krum},
          {"centered_clip", Rule(CombineRule::kCenteredClip)}};
}

class ByzantineTest : public ::testing::TestWithParam<Attack> {};

TEST_P(ByzantineTest, RobustRulesStayNearTheHonestMeanWhileTheMeanMovesAway) {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    Round round = MakeRound(GetParam(), seed);
    std::vector<WeightedUpdate> updates;
    for (const auto& u : round.updates) updates.push_back({&u, 1000});
    const double scale = round.honest_norm;

    // The plain mean, even with the norm bound, is pulled far from the honest mean; without
    // the bound, farther still.
    AggregateOutput full;
    const double mean_far =
        Distance(Combine(updates, Rule(CombineRule::kMean), &full), round.honest_mean) / scale;
    EXPECT_EQ(full.norm_clipped, 3) << "seed " << seed;
    EXPECT_GT(mean_far, 0.5) << "seed " << seed;
    EXPECT_GT(Distance(Combine(updates, kPlainMean), round.honest_mean) / scale, 2.5)
        << "seed " << seed;

    for (const RobustCase& c : RobustCases()) {
      const double far = Distance(Combine(updates, c.rule), round.honest_mean) / scale;
      EXPECT_LT(far, 0.3) << c.name << " seed " << seed;  // each honest one is ~0.3 off
      EXPECT_LT(far, mean_far / 3) << c.name << " seed " << seed;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Attacks, ByzantineTest,
                         ::testing::Values(Attack::kSignFlipTimes10, Attack::kLargeNoise),
                         [](const auto& info) {
                           return std::string(info.param == Attack::kSignFlipTimes10
                                                  ? "SignFlipTimes10"
                                                  : "LargeNoise");
                         });

// ---- determinism and parameters ----

TEST(Aggregate, IsDeterministic) {
  Round round = MakeRound(Attack::kLargeNoise, 7);
  std::vector<WeightedUpdate> updates;
  for (std::size_t i = 0; i < round.updates.size(); ++i) {
    updates.push_back({&round.updates[i], 900.0 + static_cast<double>(i)});
  }
  TensorList global = round.updates[0];
  TensorList momentum = round.updates[1];
  for (const RobustCase& c : RobustCases()) {
    auto a = Aggregate(global, &momentum, updates, {OuterRule::kDiLoCo, 0.7, 0.9}, c.rule);
    auto b = Aggregate(global, &momentum, updates, {OuterRule::kDiLoCo, 0.7, 0.9}, c.rule);
    ASSERT_TRUE(a && b) << c.name;
    for (std::size_t t = 0; t < global.size(); ++t) {
      ASSERT_EQ(a->next_global[t].f32.size(), b->next_global[t].f32.size());
      EXPECT_EQ(std::memcmp(a->next_global[t].f32.data(), b->next_global[t].f32.data(),
                            a->next_global[t].f32.size() * sizeof(float)),
                0)
          << c.name;
      EXPECT_EQ(std::memcmp(a->next_momentum[t].f32.data(), b->next_momentum[t].f32.data(),
                            a->next_momentum[t].f32.size() * sizeof(float)),
                0)
          << c.name;
    }
  }
}

TEST(Aggregate, RefusesInvalidRobustParameters) {
  TensorList global = Vec({0}), d = Vec({1});
  auto code = [&](const RobustRule& r) {
    auto out = Aggregate(global, nullptr, {{&d, 1}}, kFedAvg, r);
    return out ? std::string("ok") : std::string(common::ErrcName(out.error().code));
  };
  const std::string invalid(common::ErrcName(common::Errc::kInvalidArgument));
  auto with = [](auto edit) {
    RobustRule r;
    edit(r);
    return r;
  };
  EXPECT_EQ(code(with([](RobustRule& r) { r.norm_bound = 0.99; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.norm_bound = std::nan(""); })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.norm_bound = -kNoBound; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.trim_fraction = 0.46; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.trim_fraction = -0.01; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.trim_fraction = std::nan(""); })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.krum_byzantine = -1; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.krum_byzantine = 65; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.clip_iterations = 0; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.clip_iterations = 101; })), invalid);
  EXPECT_EQ(code(with([](RobustRule& r) { r.combine = static_cast<CombineRule>(99); })), invalid);
  // The limits themselves are accepted.
  EXPECT_EQ(code(with([](RobustRule& r) { r.norm_bound = 1; })), "ok");
  EXPECT_EQ(code(with([](RobustRule& r) {
              r.trim_fraction = 0.45;
              r.krum_byzantine = 64;
              r.clip_iterations = 100;
            })),
            "ok");
}

TEST(Aggregate, CombineRuleNames) {
  EXPECT_EQ(CombineRuleFromName("mean").value(), CombineRule::kMean);
  EXPECT_EQ(CombineRuleFromName("median").value(), CombineRule::kMedian);
  EXPECT_EQ(CombineRuleFromName("trimmed_mean").value(), CombineRule::kTrimmedMean);
  EXPECT_EQ(CombineRuleFromName("multi_krum").value(), CombineRule::kMultiKrum);
  EXPECT_EQ(CombineRuleFromName("centered_clip").value(), CombineRule::kCenteredClip);
  for (const char* bad : {"", "krum", "Mean", "centered_clip "}) {
    auto r = CombineRuleFromName(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, common::Errc::kInvalidArgument);
  }
  EXPECT_EQ(RobustRule{}.combine, CombineRule::kCenteredClip);
  EXPECT_EQ(RobustRule{}.norm_bound, 3.0);
}

}  // namespace
}  // namespace ubcp::coordinator
