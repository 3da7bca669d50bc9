// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/benchmark.h"

#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "ubcp/common/model.h"

namespace ubcp::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kCpuMatmulSide = 512;
constexpr std::int64_t kCudaMatmulSide = 4096;
constexpr int kBatch = 32;
constexpr int kCalibrationSteps = 4;
constexpr std::int64_t kBenchRows = 256;
const char* const kBenchModels[] = {"mlp-i784-h128-o10", "cnn28-c16-c32-h64-o10"};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Repeats n x n fp32 matmuls on `device` for about `budget` seconds (at least one after a
// warm-up) and returns GFLOP/s, counting 2n^3 flop per product.
double MatmulGflops(torch::Device device, std::int64_t n, double budget) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat).device(device);
  torch::Tensor a = torch::rand({n, n}, opts);
  torch::Tensor b = torch::rand({n, n}, opts);
  torch::Tensor c = torch::mm(a, b);
  const bool cuda = device.is_cuda();
  if (cuda) torch::cuda::synchronize();
  std::int64_t iterations = 0;
  const Clock::time_point start = Clock::now();
  do {
    c = torch::mm(a, b);
    ++iterations;
    if (cuda && iterations % 8 == 0) torch::cuda::synchronize();
  } while (Seconds(start) < budget);
  if (cuda) torch::cuda::synchronize();
  const double elapsed = Seconds(start);
  const double flop = 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                      static_cast<double>(n) * static_cast<double>(iterations);
  return elapsed > 0 ? flop / elapsed / 1e9 : 0;
}

// Random pixels and labels shaped like a Fashion-MNIST shard.
common::TensorList RandomShard(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  common::NamedTensor x{"x", common::TensorKind::kU8, {kBenchRows, 1, 28, 28}, {}, {}};
  x.u8.resize(static_cast<std::size_t>(kBenchRows * 28 * 28));
  for (std::uint8_t& v : x.u8) v = static_cast<std::uint8_t>(rng() & 0xff);
  common::NamedTensor y{"y", common::TensorKind::kU8, {kBenchRows}, {}, {}};
  y.u8.resize(static_cast<std::size_t>(kBenchRows));
  for (std::uint8_t& v : y.u8) v = static_cast<std::uint8_t>(rng() % 10);
  return {std::move(x), std::move(y)};
}

// Training samples per second of the real TrainShard path (forward, backward, SGD step), so the
// figure includes what a work unit pays for weight loading and batch gathering. A real unit runs
// thousands of steps in one TrainShard call, so after a warm-up and a short calibration the
// budget is spent in one call sized to fill it: the per-call set-up weighs as little as in a unit.
double TrainSamplesPerSecond(const std::string& spec_string, double budget) {
  auto spec = common::ParseModelSpec(spec_string);
  if (!spec) return 0;
  const common::TensorList weights = common::InitModel(*spec, 1);
  const common::TensorList data = RandomShard(2);
  common::TrainParams params;
  params.local_steps = 1;
  params.batch_size = kBatch;
  params.lr = 0.01;
  if (!common::TrainShard(*spec, weights, data, params)) return 0;  // warm-up
  params.local_steps = kCalibrationSteps;
  Clock::time_point start = Clock::now();
  if (!common::TrainShard(*spec, weights, data, params)) return 0;
  const double per_step = Seconds(start) / kCalibrationSteps;
  const double left = budget - Seconds(start);
  params.local_steps =
      per_step > 0 ? static_cast<int>(std::clamp(left / per_step, double{kCalibrationSteps}, 1e6))
                   : kCalibrationSteps;
  start = Clock::now();
  auto outcome = common::TrainShard(*spec, weights, data, params);
  const double elapsed = Seconds(start);
  if (!outcome) return 0;
  return elapsed > 0 ? static_cast<double>(outcome->samples) / elapsed : 0;
}

}  // namespace

BenchmarkReport RunBenchmark(double seconds, std::string_view nvml_library) {
  BenchmarkReport report;
  report.torch_version = common::TorchVersion();
  // CudaDeviceCount catches libtorch's exceptions itself: the GPU status is known even when the
  // measurements below fail.
  const int cuda_devices = common::CudaDeviceCount();
  report.gpu = SummarizeGpus(ProbeNvml(nvml_library), cuda_devices, LibtorchLinksCuda());
  spdlog::info("benchmark: GPUs {}", report.gpu.status);
  const double total = std::clamp(std::isfinite(seconds) ? seconds : 2.0, 0.3, 600.0);
  try {
    report.cpu_threads = torch::get_num_threads();
    report.cuda_devices = cuda_devices;
    const double share = report.cuda_devices > 0 ? 0.25 : 1.0 / 3.0;
    report.matmul_gflops = MatmulGflops(torch::Device(torch::kCPU), kCpuMatmulSide, share * total);
    for (const char* model : kBenchModels) {
      report.train.push_back({model, TrainSamplesPerSecond(model, share * total)});
    }
    // Device names need the CUDA runtime headers, which a CPU build of libtorch lacks; the
    // index is what the executor uses to pick a device anyway.
    for (int i = 0; i < report.cuda_devices; ++i) {
      report.cuda_names.push_back("cuda:" + std::to_string(i));
    }
    if (report.cuda_devices > 0) {
      report.cuda_matmul_gflops =
          MatmulGflops(torch::Device(torch::kCUDA, 0), kCudaMatmulSide, share * total);
    }
  } catch (const std::exception&) {
    // A libtorch failure part-way leaves the figures measured so far and zeros elsewhere; the
    // coordinator treats a zero as "not capable".
  }
  return report;
}

}  // namespace ubcp::client
