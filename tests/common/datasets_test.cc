// SPDX-License-Identifier: Apache-2.0
// The data-set loaders against the real packaged files, their cache, and the index helpers.
#include "ubcp/common/datasets.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace ubcp::common {
namespace {

namespace fs = std::filesystem;

using TempDir = ubcp::testing::TempDir;

Bytes ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The one regular file in `dir` (the loader's cache file); fails the test otherwise.
fs::path OnlyFileIn(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  EXPECT_EQ(files.size(), 1u);
  return files.empty() ? fs::path() : files.front();
}

std::array<int, 10> LabelCounts(const NamedTensor& y) {
  std::array<int, 10> counts{};
  for (std::uint8_t label : y.u8) {
    if (label < 10) ++counts[label];
  }
  return counts;
}

void ExpectSameDataset(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.classes, b.classes);
  EXPECT_EQ(a.x.kind, b.x.kind);
  EXPECT_EQ(a.x.shape, b.x.shape);
  EXPECT_TRUE(a.x.u8 == b.x.u8);
  EXPECT_TRUE(a.x.f32 == b.x.f32);
  EXPECT_EQ(a.y.shape, b.y.shape);
  EXPECT_TRUE(a.y.u8 == b.y.u8);
  EXPECT_EQ(a.test_x.shape, b.test_x.shape);
  EXPECT_TRUE(a.test_x.u8 == b.test_x.u8);
  EXPECT_TRUE(a.test_y.u8 == b.test_y.u8);
}

// ---- the packaged data sets ----

TEST(DatasetsTest, KnownDatasets) {
  const auto known = KnownDatasets();
  EXPECT_EQ(std::set<std::string>(known.begin(), known.end()),
            (std::set<std::string>{"fashion-mnist", "digits", "breast-cancer"}));
}

TEST(DatasetsTest, FashionMnistLoadsTheOfficialSplits) {
  auto d = LoadDataset("fashion-mnist", DatasetPaths{});
  ASSERT_TRUE(d) << d.error().ToString();
  EXPECT_EQ(d->name, "fashion-mnist");
  EXPECT_EQ(d->classes, 10);
  EXPECT_EQ(d->size(), 60000);
  EXPECT_EQ(d->test_size(), 10000);
  EXPECT_EQ(d->x.kind, TensorKind::kU8);
  EXPECT_EQ(d->x.shape, (std::vector<std::int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(d->x.u8.size(), 60000u * 784u);
  EXPECT_EQ(d->test_x.kind, TensorKind::kU8);
  EXPECT_EQ(d->test_x.shape, (std::vector<std::int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(d->y.kind, TensorKind::kU8);
  EXPECT_EQ(d->y.shape, (std::vector<std::int64_t>{60000}));
  EXPECT_EQ(d->test_y.shape, (std::vector<std::int64_t>{10000}));
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  for (int count : LabelCounts(d->y)) EXPECT_EQ(count, 6000);
  for (int count : LabelCounts(d->test_y)) EXPECT_EQ(count, 1000);
  // Real images: the full 0..255 range is used.
  EXPECT_EQ(*std::max_element(d->x.u8.begin(), d->x.u8.end()), 255);
  EXPECT_EQ(*std::min_element(d->x.u8.begin(), d->x.u8.end()), 0);
}

// The first row of sklearn's digits.csv.gz (label 0).
constexpr int kFirstDigit[64] = {0, 0, 5,  13, 9,  1,  0, 0, 0, 0, 13, 15, 10, 15, 5, 0,
                                 0, 3, 15, 2,  0,  11, 8, 0, 0, 4, 12, 0,  0,  8,  8, 0,
                                 0, 5, 8,  0,  0,  9,  8, 0, 0, 4, 11, 0,  1,  12, 7, 0,
                                 0, 2, 14, 5,  10, 12, 0, 0, 0, 0, 6,  13, 10, 0,  0, 0};

// The documented resize: bilinear with half-pixel centres and clamped edges, 8x8 -> 20x20,
// 0..16 -> 0..255, centred in 28x28.
double ExpectedDigitPixel(int oy, int ox) {
  auto source = [](int o) { return std::clamp((o + 0.5) * 8.0 / 20.0 - 0.5, 0.0, 7.0); };
  const double sy = source(oy), sx = source(ox);
  const int y0 = static_cast<int>(std::floor(sy)), x0 = static_cast<int>(std::floor(sx));
  const int y1 = std::min(y0 + 1, 7), x1 = std::min(x0 + 1, 7);
  const double fy = sy - y0, fx = sx - x0;
  auto at = [](int y, int x) { return static_cast<double>(kFirstDigit[y * 8 + x]); };
  const double v = at(y0, x0) * (1 - fy) * (1 - fx) + at(y0, x1) * (1 - fy) * fx +
                   at(y1, x0) * fy * (1 - fx) + at(y1, x1) * fy * fx;
  return v * 255.0 / 16.0;
}

TEST(DatasetsTest, DigitsAreUpsampledTo28x28) {
  auto d = LoadDataset("digits", DatasetPaths{});
  ASSERT_TRUE(d) << d.error().ToString();
  EXPECT_EQ(d->name, "digits");
  EXPECT_EQ(d->classes, 10);
  EXPECT_EQ(d->size(), 1797);
  EXPECT_EQ(d->test_size(), 0);  // no official split: callers hold out their own
  EXPECT_EQ(d->x.kind, TensorKind::kU8);
  ASSERT_EQ(d->x.shape, (std::vector<std::int64_t>{1797, 1, 28, 28}));
  ASSERT_EQ(d->x.u8.size(), 1797u * 784u);
  ASSERT_EQ(d->y.shape, (std::vector<std::int64_t>{1797}));
  const auto counts = LabelCounts(d->y);
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), 0), 1797);
  for (int count : counts) EXPECT_GT(count, 150);  // every class present (~180 each)
  EXPECT_EQ(d->y.u8[0], 0);
  EXPECT_EQ(d->y.u8[1], 1);

  // Every image: a blank 4-pixel border around a 20x20 digit.
  for (std::int64_t r = 0; r < d->size(); ++r) {
    const std::uint8_t* img = d->x.u8.data() + r * 784;
    int border_ink = 0, centre_ink = 0;
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        const bool centre = y >= 4 && y < 24 && x >= 4 && x < 24;
        (centre ? centre_ink : border_ink) += img[y * 28 + x] != 0;
      }
    }
    ASSERT_EQ(border_ink, 0) << "row " << r;
    ASSERT_GT(centre_ink, 0) << "row " << r;
  }

  // The first image matches the documented resize of the first CSV row.
  const std::uint8_t* first = d->x.u8.data();
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 20; ++x) {
      EXPECT_NEAR(first[(y + 4) * 28 + x + 4], ExpectedDigitPixel(y, x), 0.51)
          << "pixel " << y << "," << x;
    }
  }
}

TEST(DatasetsTest, BreastCancerIsStandardised) {
  auto d = LoadDataset("breast-cancer", DatasetPaths{});
  ASSERT_TRUE(d) << d.error().ToString();
  EXPECT_EQ(d->name, "breast-cancer");
  EXPECT_EQ(d->classes, 2);
  EXPECT_EQ(d->test_size(), 0);
  EXPECT_EQ(d->x.kind, TensorKind::kF32);
  ASSERT_EQ(d->x.shape, (std::vector<std::int64_t>{569, 30}));
  ASSERT_EQ(d->x.f32.size(), 569u * 30u);
  ASSERT_EQ(d->y.shape, (std::vector<std::int64_t>{569}));
  const auto counts = LabelCounts(d->y);
  EXPECT_EQ(counts[0], 212);  // malignant
  EXPECT_EQ(counts[1], 357);  // benign
  EXPECT_EQ(d->y.u8[0], 0);

  // Each feature: mean 0, population standard deviation 1.
  for (int f = 0; f < 30; ++f) {
    double sum = 0, sq = 0;
    for (int r = 0; r < 569; ++r) sum += d->x.f32[r * 30 + f];
    const double mean = sum / 569;
    for (int r = 0; r < 569; ++r) sq += std::pow(d->x.f32[r * 30 + f] - mean, 2);
    EXPECT_NEAR(mean, 0.0, 1e-5) << "feature " << f;
    EXPECT_NEAR(std::sqrt(sq / 569), 1.0, 1e-4) << "feature " << f;
  }
  // Standardising is affine per feature: the first rows' raw radius (17.99, 20.57, 19.69) and
  // area (1001, 1326, 1203) keep their order and their ratios of differences.
  auto x = [&](int r, int f) { return static_cast<double>(d->x.f32[r * 30 + f]); };
  EXPECT_NEAR((x(1, 0) - x(0, 0)) / (x(2, 0) - x(0, 0)), (20.57 - 17.99) / (19.69 - 17.99), 1e-3);
  EXPECT_NEAR((x(1, 3) - x(0, 3)) / (x(2, 3) - x(0, 3)), (1326.0 - 1001.0) / (1203.0 - 1001.0),
              1e-3);
  EXPECT_GT(x(1, 0), x(2, 0));
  EXPECT_GT(x(2, 0), x(0, 0));
}

TEST(DatasetsTest, UnknownNameIsRefused) {
  auto d = LoadDataset("../../etc/passwd", DatasetPaths{});
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::kInvalidArgument);
}

TEST(DatasetsTest, MissingFashionMnistPackageIsNotFound) {
  TempDir dir;
  DatasetPaths paths;
  paths.fashion_mnist_dir = dir.path() / "absent";
  auto d = LoadDataset("fashion-mnist", paths);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::kNotFound);
  EXPECT_NE(d.error().message.find("dataset-fashion-mnist"), std::string::npos)
      << d.error().message;
}

TEST(DatasetsTest, MissingSklearnDataIsNotFound) {
  TempDir dir;
  DatasetPaths paths;
  paths.sklearn_data_dir = dir.path() / "absent";
  for (const char* name : {"digits", "breast-cancer"}) {
    SCOPED_TRACE(name);
    auto d = LoadDataset(name, paths);
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code, Errc::kNotFound);
    EXPECT_NE(d.error().message.find("python3-sklearn"), std::string::npos) << d.error().message;
  }
}

TEST(DatasetsTest, MalformedPackageFileIsMalformed) {
  TempDir dir;
  const Bytes garbage = {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'd', 'x', ' ',
                         'f', 'i', 'l', 'e', ' ', 'a', 't', ' ', 'a', 'l', 'l'};
  for (const char* file : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    WriteFile(dir.path() / file, garbage);
  }
  DatasetPaths paths;
  paths.fashion_mnist_dir = dir.path();
  auto d = LoadDataset("fashion-mnist", paths);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::kMalformed);

  WriteFile(dir.path() / "breast_cancer.csv", Bytes{'5', ',', '3', '0', '\n', '1', '\n'});
  paths.sklearn_data_dir = dir.path();
  auto bc = LoadDataset("breast-cancer", paths);
  ASSERT_FALSE(bc);
  EXPECT_EQ(bc.error().code, Errc::kMalformed);
}

// ---- the cache ----

TEST(DatasetsCacheTest, SecondLoadIsServedFromTheCache) {
  TempDir dir;
  DatasetPaths paths;
  paths.cache_dir = dir.path() / "cache";
  auto first = LoadDataset("digits", paths);
  ASSERT_TRUE(first) << first.error().ToString();
  const fs::path cache_file = OnlyFileIn(paths.cache_dir);
  ASSERT_FALSE(cache_file.empty());
  EXPECT_GT(fs::file_size(cache_file), 0u);

  // With the package gone, only the cache can answer.
  DatasetPaths cache_only = paths;
  cache_only.sklearn_data_dir = dir.path() / "no-package";
  auto second = LoadDataset("digits", cache_only);
  ASSERT_TRUE(second) << second.error().ToString();
  ExpectSameDataset(*first, *second);
}

TEST(DatasetsCacheTest, CacheKeepsTheOfficialTestSplit) {
  TempDir dir;
  DatasetPaths paths;
  paths.cache_dir = dir.path() / "cache";
  auto first = LoadDataset("fashion-mnist", paths);
  ASSERT_TRUE(first) << first.error().ToString();
  DatasetPaths cache_only = paths;
  cache_only.fashion_mnist_dir = dir.path() / "no-package";
  auto second = LoadDataset("fashion-mnist", cache_only);
  ASSERT_TRUE(second) << second.error().ToString();
  ExpectSameDataset(*first, *second);
  EXPECT_EQ(second->test_size(), 10000);
}

// Whatever byte of the cache file is damaged, a load gives the true data (rebuilt from the
// package) or an error, never altered data; and a rebuilt cache is good again.
TEST(DatasetsCacheTest, CorruptedCacheIsNeverSilentlyUsed) {
  TempDir dir;
  DatasetPaths paths;
  paths.cache_dir = dir.path() / "cache";
  auto pristine = LoadDataset("digits", paths);
  ASSERT_TRUE(pristine) << pristine.error().ToString();
  const fs::path cache_file = OnlyFileIn(paths.cache_dir);
  ASSERT_FALSE(cache_file.empty());
  const Bytes good = ReadFile(cache_file);
  ASSERT_GT(good.size(), 64u);

  DatasetPaths cache_only = paths;
  cache_only.sklearn_data_dir = dir.path() / "no-package";
  for (int i = 1; i <= 24; ++i) {
    const std::size_t at = good.size() * static_cast<std::size_t>(i) / 25;
    SCOPED_TRACE("flipped byte " + std::to_string(at) + " of " + std::to_string(good.size()));
    Bytes bad = good;
    bad[at] ^= 0x10;
    WriteFile(cache_file, bad);
    // Without the package: refused, or (if the flip happened to be harmless) the true data.
    auto from_cache = LoadDataset("digits", cache_only);
    if (from_cache) ExpectSameDataset(*pristine, *from_cache);
    // With the package: the true data.
    auto rebuilt = LoadDataset("digits", paths);
    ASSERT_TRUE(rebuilt) << rebuilt.error().ToString();
    ExpectSameDataset(*pristine, *rebuilt);
    if (::testing::Test::HasFailure()) break;
  }
  // A truncated cache file is rebuilt, and the rebuilt one serves alone again.
  WriteFile(cache_file, Bytes(good.begin(), good.begin() + static_cast<long>(good.size() / 2)));
  EXPECT_FALSE(LoadDataset("digits", cache_only));
  ASSERT_TRUE(LoadDataset("digits", paths));
  auto again = LoadDataset("digits", cache_only);
  ASSERT_TRUE(again) << again.error().ToString();
  ExpectSameDataset(*pristine, *again);
}

TEST(DatasetsCacheTest, CacheOfAnotherDatasetIsNotUsed) {
  TempDir dir;
  DatasetPaths paths;
  paths.cache_dir = dir.path() / "cache";
  ASSERT_TRUE(LoadDataset("digits", paths));
  const fs::path digits_cache = OnlyFileIn(paths.cache_dir);
  ASSERT_FALSE(digits_cache.empty());
  // Put the digits cache where the breast-cancer cache will be looked for.
  ASSERT_TRUE(LoadDataset("breast-cancer", paths));
  fs::path bc_cache;
  for (const auto& entry : fs::directory_iterator(paths.cache_dir)) {
    if (entry.path() != digits_cache) bc_cache = entry.path();
  }
  ASSERT_FALSE(bc_cache.empty());
  fs::copy_file(digits_cache, bc_cache, fs::copy_options::overwrite_existing);

  DatasetPaths cache_only = paths;
  cache_only.sklearn_data_dir = dir.path() / "no-package";
  EXPECT_FALSE(LoadDataset("breast-cancer", cache_only));
  auto rebuilt = LoadDataset("breast-cancer", paths);
  ASSERT_TRUE(rebuilt) << rebuilt.error().ToString();
  EXPECT_EQ(rebuilt->x.shape, (std::vector<std::int64_t>{569, 30}));
}

// ---- index helpers ----

TEST(SplitIndicesTest, IsADeterministicPartitionOfTheRange) {
  const Split split = SplitIndices(100, 0.2, 42);
  EXPECT_EQ(split.test.size(), 20u);
  EXPECT_EQ(split.train.size(), 80u);
  std::vector<std::int64_t> all = split.train;
  all.insert(all.end(), split.test.begin(), split.test.end());
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(all, expected);

  const Split again = SplitIndices(100, 0.2, 42);
  EXPECT_EQ(again.train, split.train);
  EXPECT_EQ(again.test, split.test);
  const Split other = SplitIndices(100, 0.2, 43);
  EXPECT_NE(other.train, split.train);
  // Shuffled, not the identity order.
  std::vector<std::int64_t> train_sorted = split.train;
  std::sort(train_sorted.begin(), train_sorted.end());
  EXPECT_NE(train_sorted, split.train);
}

TEST(SplitIndicesTest, EdgeCases) {
  EXPECT_TRUE(SplitIndices(0, 0.5, 1).train.empty());
  EXPECT_TRUE(SplitIndices(-5, 0.5, 1).test.empty());
  EXPECT_EQ(SplitIndices(10, 0.0, 1).train.size(), 10u);
  EXPECT_EQ(SplitIndices(10, 1.0, 1).test.size(), 10u);
  EXPECT_EQ(SplitIndices(10, 7.0, 1).test.size(), 10u);  // clamped
  EXPECT_EQ(SplitIndices(10, -1.0, 1).test.size(), 0u);  // clamped
  EXPECT_EQ(SplitIndices(10, std::nan(""), 1).test.size(), 0u);
  EXPECT_EQ(SplitIndices(10, 0.26, 1).test.size(), 3u);  // rounded
}

TEST(PartitionTest, ContiguousNearlyEqualPieces) {
  std::vector<std::int64_t> indices = {9, 4, 7, 1, 0, 3, 8, 2, 6, 5};
  const auto parts = Partition(indices, 3);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], (std::vector<std::int64_t>{9, 4, 7, 1}));
  EXPECT_EQ(parts[1], (std::vector<std::int64_t>{0, 3, 8}));
  EXPECT_EQ(parts[2], (std::vector<std::int64_t>{2, 6, 5}));

  const auto many = Partition(indices, 12);
  ASSERT_EQ(many.size(), 12u);
  std::size_t total = 0;
  for (const auto& p : many) {
    EXPECT_LE(p.size(), 1u);
    total += p.size();
  }
  EXPECT_EQ(total, indices.size());
  EXPECT_TRUE(Partition(indices, 0).empty());
  EXPECT_TRUE(Partition(indices, -2).empty());
  const auto one = Partition(indices, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], indices);
}

TEST(TakeRowsTest, TakesTheRowsInOrder) {
  NamedTensor x{"x", TensorKind::kF32, {4, 2}, {0, 1, 10, 11, 20, 21, 30, 31}, {}};
  NamedTensor y{"y", TensorKind::kU8, {4}, {}, {0, 1, 2, 3}};
  const TensorList out = TakeRows(x, y, {3, 1});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].name, "x");
  EXPECT_EQ(out[0].shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(out[0].f32, (std::vector<float>{30, 31, 10, 11}));
  EXPECT_EQ(out[1].name, "y");
  EXPECT_EQ(out[1].shape, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(out[1].u8, (std::vector<std::uint8_t>{3, 1}));
}

TEST(TakeRowsTest, U8ImagesAndOutOfRangeIndices) {
  NamedTensor x{"images", TensorKind::kU8, {3, 1, 2, 2}, {}, {}};
  for (int i = 0; i < 12; ++i) x.u8.push_back(static_cast<std::uint8_t>(i));
  NamedTensor y{"labels", TensorKind::kU8, {3}, {}, {7, 8, 9}};
  const TensorList out = TakeRows(x, y, {2, -1, 3, 0, 2});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].shape, (std::vector<std::int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(out[0].u8, (std::vector<std::uint8_t>{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}));
  EXPECT_EQ(out[1].u8, (std::vector<std::uint8_t>{9, 7, 9}));
}

TEST(TakeRowsTest, InconsistentInputGivesNothing) {
  NamedTensor x{"x", TensorKind::kF32, {2, 2}, {1, 2, 3, 4}, {}};
  NamedTensor y3{"y", TensorKind::kU8, {3}, {}, {0, 1, 2}};
  EXPECT_TRUE(TakeRows(x, y3, {0}).empty());
  NamedTensor short_x{"x", TensorKind::kF32, {2, 2}, {1, 2, 3}, {}};
  NamedTensor y2{"y", TensorKind::kU8, {2}, {}, {0, 1}};
  EXPECT_TRUE(TakeRows(short_x, y2, {0}).empty());
}

}  // namespace
}  // namespace ubcp::common
