// SPDX-License-Identifier: Apache-2.0
#pragma once
// Hardware benchmark with real libtorch work: matmul GFLOPS and training throughput of the zoo
// models, plus CUDA device discovery. Reported by the donor client at registration. Links libtorch.

#include <string>
#include <vector>

namespace ubcp::client {

struct ModelThroughput {
  std::string model;         // spec string
  double samples_per_s = 0;  // training samples per second (forward+backward+step)
};

struct BenchmarkReport {
  double matmul_gflops = 0;  // fp32 CPU matmul
  std::vector<ModelThroughput> train;
  int cpu_threads = 0;  // torch intra-op threads used
  int cuda_devices = 0;
  std::vector<std::string> cuda_names;
  double cuda_matmul_gflops = 0;  // 0 without CUDA
  std::string torch_version;
};

// Takes roughly `seconds` in total (at least a few hundred milliseconds).
BenchmarkReport RunBenchmark(double seconds = 2.0);

}  // namespace ubcp::client
