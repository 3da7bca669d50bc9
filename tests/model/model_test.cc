// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ubcp::common {
namespace {

ModelSpec Spec(std::string_view s) {
  auto spec = ParseModelSpec(s);
  EXPECT_TRUE(spec) << s;
  return spec ? *spec : ModelSpec{};
}

// Three well-separated Gaussian blobs in 4 dimensions.
TensorList BlobData(int rows, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  NamedTensor x{"x", TensorKind::kF32, {rows, 4}, {}, {}};
  NamedTensor y{"y", TensorKind::kU8, {rows}, {}, {}};
  for (int r = 0; r < rows; ++r) {
    const int label = r % 3;
    for (int f = 0; f < 4; ++f) x.f32.push_back((f == label ? 3.0f : 0.0f) + noise(rng));
    y.u8.push_back(static_cast<std::uint8_t>(label));
  }
  return {x, y};
}

// 28x28 images, class 0 bright in the top half, class 1 bright in the bottom half.
TensorList HalfImages(int rows) {
  NamedTensor x{"x", TensorKind::kU8, {rows, 1, 28, 28}, {}, {}};
  NamedTensor y{"y", TensorKind::kU8, {rows}, {}, {}};
  x.u8.assign(static_cast<std::size_t>(rows) * 784, 0);
  for (int r = 0; r < rows; ++r) {
    const int label = r % 2;
    for (int row = 0; row < 14; ++row) {
      for (int col = 0; col < 28; ++col) {
        x.u8[r * 784 + (row + label * 14) * 28 + col] = static_cast<std::uint8_t>(150 + r % 100);
      }
    }
    y.u8.push_back(static_cast<std::uint8_t>(label));
  }
  return {x, y};
}

TensorList Apply(TensorList weights, const TensorList& delta) {
  for (std::size_t i = 0; i < weights.size(); ++i) {
    for (std::size_t j = 0; j < weights[i].f32.size(); ++j) weights[i].f32[j] += delta[i].f32[j];
  }
  return weights;
}

TEST(ModelSpecTest, ParsesValidSpecs) {
  auto mlp = ParseModelSpec("mlp-i784-h128-o10");
  ASSERT_TRUE(mlp);
  EXPECT_EQ(mlp->arch, ModelSpec::Arch::kMlp);
  EXPECT_EQ(mlp->input, 784);
  EXPECT_EQ(mlp->hidden, 128);
  EXPECT_EQ(mlp->classes, 10);
  EXPECT_EQ(mlp->ToString(), "mlp-i784-h128-o10");

  auto cnn = ParseModelSpec("cnn28-c16-c32-h64-o10");
  ASSERT_TRUE(cnn);
  EXPECT_EQ(cnn->arch, ModelSpec::Arch::kCnn28);
  EXPECT_EQ(cnn->c1, 16);
  EXPECT_EQ(cnn->c2, 32);
  EXPECT_EQ(cnn->hidden, 64);
  EXPECT_EQ(cnn->classes, 10);
  EXPECT_EQ(cnn->ToString(), "cnn28-c16-c32-h64-o10");

  EXPECT_TRUE(ParseModelSpec("mlp-i30-h32-o2"));
  EXPECT_TRUE(ParseModelSpec("mlp-i4096-h1-o2"));
}

TEST(ModelSpecTest, RejectsInvalidSpecs) {
  for (const char* bad : {"",
                          "mlp",
                          "mlp-i784-h128",
                          "mlp-i784-h128-o10-x",
                          "mlp-i0-h1-o2",
                          "mlp-i784-h128-o1",
                          "mlp-i0784-h128-o10",
                          "mlp-i+78-h1-o2",
                          "mlp-i-1-h2-o2",
                          "mlp-i4097-h1-o2",
                          "mlp-i784-h128-o10 ",
                          " mlp-i784-h128-o10",
                          "MLP-i784-h128-o10",
                          "mlp-h128-i784-o10",
                          "mlp-i784-h128-c10",
                          "cnn28-c16-h64-o10",
                          "cnn28-c16-c32-h64-o10-o2",
                          "cnn-c16-c32-h64-o10",
                          "cnn28-c4096-c4096-h4096-o10",
                          "mlp-i4096-h4096-o4096",
                          "mlp-i12x-h1-o2",
                          "mlp--i784-h128-o10"}) {
    auto spec = ParseModelSpec(bad);
    ASSERT_FALSE(spec) << bad;
    EXPECT_EQ(spec.error().code, Errc::kInvalidArgument) << bad;
  }
}

TEST(ModelZooTest, LayoutNamesAndShapes) {
  TensorList mlp = ModelLayout(Spec("mlp-i784-h128-o10"));
  ASSERT_EQ(mlp.size(), 4u);
  EXPECT_EQ(mlp[0].name, "fc1.weight");
  EXPECT_EQ(mlp[0].shape, (std::vector<std::int64_t>{128, 784}));
  EXPECT_EQ(mlp[1].name, "fc1.bias");
  EXPECT_EQ(mlp[2].name, "fc2.weight");
  EXPECT_EQ(mlp[2].shape, (std::vector<std::int64_t>{10, 128}));
  EXPECT_EQ(mlp[3].shape, (std::vector<std::int64_t>{10}));

  TensorList cnn = ModelLayout(Spec("cnn28-c16-c32-h64-o10"));
  ASSERT_EQ(cnn.size(), 8u);
  EXPECT_EQ(cnn[0].name, "conv1.weight");
  EXPECT_EQ(cnn[0].shape, (std::vector<std::int64_t>{16, 1, 3, 3}));
  EXPECT_EQ(cnn[2].name, "conv2.weight");
  EXPECT_EQ(cnn[2].shape, (std::vector<std::int64_t>{32, 16, 3, 3}));
  EXPECT_EQ(cnn[4].name, "fc1.weight");
  EXPECT_EQ(cnn[4].shape, (std::vector<std::int64_t>{64, 32 * 7 * 7}));
  EXPECT_EQ(cnn[7].name, "fc2.bias");
  for (const NamedTensor& t : cnn) {
    EXPECT_EQ(t.kind, TensorKind::kF32);
    for (float v : t.f32) ASSERT_EQ(v, 0.0f);
  }
}

TEST(ModelZooTest, InitIsDeterministicAndMatchesLayout) {
  for (const char* s : {"mlp-i784-h128-o10", "cnn28-c16-c32-h64-o10"}) {
    ModelSpec spec = Spec(s);
    TensorList a = InitModel(spec, 7);
    TensorList b = InitModel(spec, 7);
    TensorList c = InitModel(spec, 8);
    EXPECT_TRUE(CheckSameLayout(ModelLayout(spec), a)) << s;
    ASSERT_EQ(a.size(), c.size());
    bool any_difference = false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].f32, b[i].f32) << s << " " << a[i].name;
      any_difference = any_difference || a[i].f32 != c[i].f32;
    }
    EXPECT_TRUE(any_difference) << s;
  }
}

TEST(ModelZooTest, InitFollowsTorchDefaultBounds) {
  TensorList w = InitModel(Spec("mlp-i100-h25-o2"), 3);
  ASSERT_EQ(w.size(), 4u);
  const float bound1 = 1.0f / std::sqrt(100.0f), bound2 = 1.0f / std::sqrt(25.0f);
  float max1 = 0, max2 = 0;
  for (float v : w[0].f32) max1 = std::max(max1, std::fabs(v));
  for (float v : w[2].f32) max2 = std::max(max2, std::fabs(v));
  EXPECT_LE(max1, bound1);
  EXPECT_GT(max1, 0.9f * bound1);
  EXPECT_LE(max2, bound2);
  EXPECT_GT(max2, 0.5f * bound2);
}

TEST(ModelZooTest, FlopCounts) {
  ModelSpec mlp = Spec("mlp-i784-h128-o10");
  EXPECT_EQ(EvalFlopsPerSample(mlp), 2 * (784 * 128 + 128 * 10));
  EXPECT_EQ(TrainFlopsPerSample(mlp), 3 * EvalFlopsPerSample(mlp));
  ModelSpec cnn = Spec("cnn28-c16-c32-h64-o10");
  const std::int64_t fwd = 2 * 9 * 16 * 784 + 2 * 9 * 16 * 32 * 196 + 2 * (32 * 49 * 64 + 64 * 10);
  EXPECT_EQ(EvalFlopsPerSample(cnn), fwd);
  EXPECT_EQ(TrainFlopsPerSample(cnn), 3 * fwd);
}

TEST(ModelTrainTest, ReducesLossAndIsDeterministic) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 1);
  TensorList data = BlobData(300, 5);
  TrainParams p;
  p.local_steps = 150;
  p.batch_size = 32;
  p.lr = 0.05;
  p.seed = 11;
  p.threads = 1;
  auto a = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(a) << a.error().ToString();
  EXPECT_LT(a->last_loss, a->first_loss * 0.5);
  EXPECT_EQ(a->samples, 150 * 32);
  EXPECT_TRUE(CheckSameLayout(ModelLayout(spec), a->delta));

  auto b = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(b);
  ASSERT_EQ(a->delta.size(), b->delta.size());
  for (std::size_t i = 0; i < a->delta.size(); ++i) EXPECT_EQ(a->delta[i].f32, b->delta[i].f32);
  EXPECT_EQ(a->first_loss, b->first_loss);
  EXPECT_EQ(a->last_loss, b->last_loss);

  p.seed = 12;
  auto c = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(c);
  EXPECT_NE(a->delta[0].f32, c->delta[0].f32);
}

TEST(ModelTrainTest, ProgressHearsEveryStepWithoutChangingTheResult) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 1);
  TensorList data = BlobData(200, 5);
  TrainParams p;
  p.local_steps = 7;
  p.seed = 3;
  p.threads = 1;
  auto silent = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(silent) << silent.error().ToString();

  std::vector<std::pair<int, int>> heard;
  p.progress = [&heard](int done, int total) { heard.emplace_back(done, total); };
  auto reported = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(reported) << reported.error().ToString();
  ASSERT_EQ(heard.size(), static_cast<std::size_t>(p.local_steps));
  for (int i = 0; i < p.local_steps; ++i) {
    EXPECT_EQ(heard[i], std::make_pair(i + 1, p.local_steps));
  }
  for (std::size_t i = 0; i < silent->delta.size(); ++i) {
    EXPECT_EQ(silent->delta[i].f32, reported->delta[i].f32);
  }
  EXPECT_EQ(silent->last_loss, reported->last_loss);
}

TEST(ModelEvalTest, ProgressHearsEveryBatch) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 1);
  const int rows = 2500;  // more than two evaluation batches
  TensorList data = BlobData(rows, 5);
  const int batches = EvalBatches(rows);
  ASSERT_GT(batches, 2);
  EXPECT_EQ(EvalBatches(0), 0);
  std::vector<std::pair<int, int>> heard;
  auto reported = Evaluate(spec, weights, data, 1,
                           [&heard](int done, int total) { heard.emplace_back(done, total); });
  ASSERT_TRUE(reported) << reported.error().ToString();
  ASSERT_EQ(heard.size(), static_cast<std::size_t>(batches));
  for (int i = 0; i < batches; ++i) EXPECT_EQ(heard[i], std::make_pair(i + 1, batches));
  auto silent = Evaluate(spec, weights, data, 1);
  ASSERT_TRUE(silent);
  EXPECT_EQ(silent->loss, reported->loss);
  EXPECT_EQ(silent->accuracy, reported->accuracy);
  EXPECT_EQ(reported->samples, rows);
}

TEST(ModelTrainTest, TrainedModelEvaluatesBetterThanUntrained) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 2);
  TensorList train = BlobData(300, 5);
  TensorList test = BlobData(150, 6);
  TrainParams p;
  p.local_steps = 200;
  p.lr = 0.05;
  auto outcome = TrainShard(spec, weights, train, p);
  ASSERT_TRUE(outcome) << outcome.error().ToString();
  auto before = Evaluate(spec, weights, test);
  auto after = Evaluate(spec, Apply(weights, outcome->delta), test);
  ASSERT_TRUE(before);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->samples, 150);
  EXPECT_GT(after->accuracy, 0.9);
  EXPECT_GT(after->accuracy, before->accuracy);
  EXPECT_LT(after->loss, before->loss);
}

TEST(ModelTrainTest, AdamAlsoLearns) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TrainParams p;
  p.local_steps = 100;
  p.lr = 0.01;
  p.optimizer = Optimizer::kAdam;
  auto outcome = TrainShard(spec, InitModel(spec, 3), BlobData(300, 5), p);
  ASSERT_TRUE(outcome) << outcome.error().ToString();
  EXPECT_LT(outcome->last_loss, outcome->first_loss * 0.5);
}

TEST(ModelTrainTest, CnnLearnsOnImagesDeterministically) {
  ModelSpec spec = Spec("cnn28-c4-c8-h16-o2");
  TensorList weights = InitModel(spec, 4);
  TensorList data = HalfImages(64);
  TrainParams p;
  p.local_steps = 30;
  p.batch_size = 16;
  p.lr = 0.05;
  p.threads = 1;
  auto a = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(a) << a.error().ToString();
  EXPECT_LT(a->last_loss, a->first_loss);
  auto b = TrainShard(spec, weights, data, p);
  ASSERT_TRUE(b);
  for (std::size_t i = 0; i < a->delta.size(); ++i) EXPECT_EQ(a->delta[i].f32, b->delta[i].f32);
  auto eval = Evaluate(spec, Apply(weights, a->delta), data);
  ASSERT_TRUE(eval);
  EXPECT_GT(eval->accuracy, 0.9);
}

TEST(ModelTrainTest, MlpTakesImagesFlattened) {
  ModelSpec spec = Spec("mlp-i784-h8-o2");
  TrainParams p;
  p.local_steps = 5;
  auto outcome = TrainShard(spec, InitModel(spec, 1), HalfImages(20), p);
  ASSERT_TRUE(outcome) << outcome.error().ToString();
}

TEST(ModelTrainTest, RejectsBadData) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 1);
  TrainParams p;
  auto expect_malformed = [&](const TensorList& data, const char* what) {
    auto t = TrainShard(spec, weights, data, p);
    ASSERT_FALSE(t) << what;
    EXPECT_EQ(t.error().code, Errc::kMalformed) << what;
    auto e = Evaluate(spec, weights, data);
    ASSERT_FALSE(e) << what;
    EXPECT_EQ(e.error().code, Errc::kMalformed) << what;
  };
  TensorList label_too_big = BlobData(30, 1);
  label_too_big[1].u8[7] = 3;
  expect_malformed(label_too_big, "label >= classes");

  TensorList wrong_features = BlobData(30, 1);
  wrong_features[0].shape = {20, 6};
  expect_malformed(wrong_features, "6 features");

  TensorList wrong_rows = BlobData(30, 1);
  wrong_rows[1].shape = {29};
  wrong_rows[1].u8.pop_back();
  expect_malformed(wrong_rows, "y rows differ");

  TensorList short_storage = BlobData(30, 1);
  short_storage[0].f32.pop_back();
  expect_malformed(short_storage, "x storage short");

  TensorList nan = BlobData(30, 1);
  nan[0].f32[5] = std::nanf("");
  expect_malformed(nan, "NaN feature");

  TensorList missing_y = BlobData(30, 1);
  missing_y.pop_back();
  expect_malformed(missing_y, "no y");

  TensorList extra = BlobData(30, 1);
  extra.push_back(extra[1]);
  extra.back().name = "z";
  expect_malformed(extra, "extra tensor");

  TensorList f32_labels = BlobData(30, 1);
  f32_labels[1].kind = TensorKind::kF32;
  expect_malformed(f32_labels, "f32 labels");

  ModelSpec cnn = Spec("cnn28-c4-c8-h16-o2");
  TensorList flat = HalfImages(8);
  flat[0].shape = {8, 784};
  auto t = TrainShard(cnn, InitModel(cnn, 1), flat, p);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, Errc::kMalformed);
}

TEST(ModelTrainTest, RejectsBadWeights) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList data = BlobData(30, 1);
  TrainParams p;
  auto expect_malformed = [&](const TensorList& weights, const char* what) {
    auto t = TrainShard(spec, weights, data, p);
    ASSERT_FALSE(t) << what;
    EXPECT_EQ(t.error().code, Errc::kMalformed) << what;
    auto e = Evaluate(spec, weights, data);
    ASSERT_FALSE(e) << what;
    EXPECT_EQ(e.error().code, Errc::kMalformed) << what;
  };
  TensorList wrong_shape = InitModel(spec, 1);
  wrong_shape[0].shape = {4, 16};  // transposed: same element count
  expect_malformed(wrong_shape, "transposed weight");

  TensorList other_model = InitModel(Spec("mlp-i4-h8-o3"), 1);
  expect_malformed(other_model, "other hidden size");

  TensorList renamed = InitModel(spec, 1);
  renamed[1].name = "fc1.bias2";
  expect_malformed(renamed, "renamed");

  TensorList missing = InitModel(spec, 1);
  missing.pop_back();
  expect_malformed(missing, "missing tensor");

  TensorList inf = InitModel(spec, 1);
  inf[2].f32[0] = INFINITY;
  expect_malformed(inf, "infinite weight");
}

TEST(ModelTrainTest, RejectsBadParams) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList weights = InitModel(spec, 1);
  TensorList data = BlobData(30, 1);
  auto expect_invalid = [&](TrainParams p, const char* what) {
    auto t = TrainShard(spec, weights, data, p);
    ASSERT_FALSE(t) << what;
    EXPECT_EQ(t.error().code, Errc::kInvalidArgument) << what;
  };
  TrainParams p;
  p.local_steps = 0;
  expect_invalid(p, "zero steps");
  p = {};
  p.batch_size = 0;
  expect_invalid(p, "zero batch");
  p = {};
  p.lr = std::nan("");
  expect_invalid(p, "NaN lr");
  p = {};
  p.lr = -1;
  expect_invalid(p, "negative lr");
  p = {};
  p.momentum = 1.0;
  expect_invalid(p, "momentum 1");
  p = {};
  p.threads = -1;
  expect_invalid(p, "negative threads");

  ModelSpec bogus;  // all sizes zero
  auto t = TrainShard(bogus, weights, data, TrainParams{});
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, Errc::kInvalidArgument);
}

TEST(ModelTrainTest, DivergenceIsAnError) {
  ModelSpec spec = Spec("mlp-i4-h16-o3");
  TensorList data = BlobData(30, 1);
  for (float& v : data[0].f32) v *= 1e30f;
  TrainParams p;
  p.lr = 100;
  p.local_steps = 20;
  auto t = TrainShard(spec, InitModel(spec, 1), data, p);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, Errc::kInvalidArgument);
}

TEST(ModelRuntimeTest, VersionAndDevices) {
  const std::string version = TorchVersion();
  EXPECT_EQ(std::count(version.begin(), version.end(), '.'), 2) << version;
  EXPECT_GE(CudaDeviceCount(), 0);
}

}  // namespace
}  // namespace ubcp::common
