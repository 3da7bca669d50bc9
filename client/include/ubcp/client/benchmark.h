// SPDX-License-Identifier: Apache-2.0
#pragma once
// Hardware benchmark with real libtorch work: matmul GFLOPS and training throughput of the zoo
// models, plus NVIDIA GPU discovery (NVML at run time, CUDA through libtorch). Reported by the
// donor client at registration. Links libtorch.

#include <string>
#include <vector>

#include "ubcp/client/gpu_probe.h"

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
  // What NVML sees, whether or not libtorch can use it (GpuSummary::status says which, e.g.
  // "present, not usable: this libtorch has no CUDA: ..."); sent at registration (wire.h
  // GpuReport).
  GpuSummary gpu;
};

// Takes roughly `seconds` in total (at least a few hundred milliseconds). Benchmarks CUDA device 0
// only when libtorch reports CUDA; probes NVML from `nvml_library`; logs the GPU status once.
BenchmarkReport RunBenchmark(double seconds = 2.0, std::string_view nvml_library = kNvmlLibrary);

}  // namespace ubcp::client
