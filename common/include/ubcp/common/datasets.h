// SPDX-License-Identifier: Apache-2.0
#pragma once
// Real datasets from Debian packages, read by real loading code and turned into TensorLists:
//   "fashion-mnist"  /usr/share/datasets/fashion-mnist/*-ubyte.gz (IDX), x kU8 [N,1,28,28]
//   "digits"         sklearn digits.csv.gz, 8x8 (0..16) upsampled bilinearly to 28x28, x kU8
//   "breast-cancer"  sklearn breast_cancer.csv, 30 features standardised, x kF32 [N,30], 2 classes
// The first load of a dataset writes a decoded copy to `cache_dir` (zstd tensor blob preceded by
// its content id); later loads read that copy if it matches its id and the dataset's expected
// layout, and rebuild it from the package files otherwise.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"

namespace ubcp::common {

struct DatasetPaths {
  std::filesystem::path fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";
  std::filesystem::path sklearn_data_dir = "/var/cache/ubcp/sklearn";
  std::filesystem::path cache_dir;  // empty: no caching
};

struct Dataset {
  std::string name;
  int classes = 0;
  NamedTensor x;  // first dim = samples
  NamedTensor y;  // kU8 [N]
  // Where the package split train/test itself (Fashion-MNIST), the official test set; empty
  // otherwise (callers split with SplitDataset).
  NamedTensor test_x, test_y;
  std::int64_t size() const { return y.shape.empty() ? 0 : y.shape[0]; }
  std::int64_t test_size() const { return test_y.shape.empty() ? 0 : test_y.shape[0]; }
};

// Names understood by LoadDataset.
std::vector<std::string> KnownDatasets();
// kNotFound when the package files are missing (with the package to install in the message),
// kMalformed when they do not parse.
Result<Dataset> LoadDataset(std::string_view name, const DatasetPaths& paths);

// Rows `indices` of x and y as a data shard TensorList {"x", "y"}.
TensorList TakeRows(const NamedTensor& x, const NamedTensor& y,
                    const std::vector<std::int64_t>& indices);

// Deterministic shuffled split of [0, n) into a train and a test part (test_fraction of n).
struct Split {
  std::vector<std::int64_t> train, test;
};
Split SplitIndices(std::int64_t n, double test_fraction, std::uint64_t seed);
// Cuts `indices` into `parts` disjoint, nearly equal, contiguous pieces.
std::vector<std::vector<std::int64_t>> Partition(const std::vector<std::int64_t>& indices,
                                                 int parts);

}  // namespace ubcp::common
