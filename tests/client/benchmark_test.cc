// SPDX-License-Identifier: Apache-2.0
// The hardware benchmark runs real libtorch work; this checks that what it reports is usable by
// the coordinator, not how fast this machine is.

#include "ubcp/client/benchmark.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>

#include "ubcp/client/runner.h"
#include "ubcp/common/model.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {
namespace {

// One short run shared by the tests below: the benchmark is deliberately not cheap.
const BenchmarkReport& Report() {
  static const BenchmarkReport report = RunBenchmark(0.5);
  return report;
}

TEST(BenchmarkTest, MeasuresCpuMatmulAndTraining) {
  const BenchmarkReport& r = Report();
  EXPECT_GT(r.matmul_gflops, 0);
  EXPECT_TRUE(std::isfinite(r.matmul_gflops));
  ASSERT_FALSE(r.train.empty());
  EXPECT_TRUE(std::any_of(r.train.begin(), r.train.end(),
                          [](const ModelThroughput& t) { return t.samples_per_s > 0; }));
  for (const ModelThroughput& t : r.train) {
    // Every reported model is a zoo spec the coordinator can parse and price.
    EXPECT_TRUE(common::ParseModelSpec(t.model)) << t.model;
    EXPECT_GE(t.samples_per_s, 0) << t.model;
    EXPECT_TRUE(std::isfinite(t.samples_per_s)) << t.model;
  }
  EXPECT_GE(r.cpu_threads, 1);
  EXPECT_FALSE(r.torch_version.empty());
  EXPECT_EQ(r.torch_version, common::TorchVersion());
}

TEST(BenchmarkTest, ReportsCudaDevicesAsLibtorchSeesThem) {
  const BenchmarkReport& r = Report();
  EXPECT_EQ(r.cuda_names.size(), static_cast<std::size_t>(r.cuda_devices));
  if (torch::cuda::is_available()) {
    EXPECT_EQ(r.cuda_devices, static_cast<int>(torch::cuda::device_count()));
    EXPECT_GT(r.cuda_matmul_gflops, 0);
    GTEST_SKIP() << "CUDA is available: the CPU-only expectations do not apply";
  }
  EXPECT_EQ(r.cuda_devices, 0);
  EXPECT_TRUE(r.cuda_names.empty());
  EXPECT_EQ(r.cuda_matmul_gflops, 0);
}

TEST(BenchmarkTest, ReportSurvivesTheRegistrationCodec) {
  // What the donor sends at registration must pass the coordinator's strict parser.
  common::HostRegistration reg;
  reg.public_key = std::string(64, 'a');
  reg.name = "bench";
  reg.issued_at = 1;
  reg.benchmark = ToWire(Report());
  reg.capabilities.cpu_cores = 1;
  reg.capabilities.client_version = "0.1.0";
  auto parsed = common::ParseHostRegistration(common::SerializeHostRegistration(reg));
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->benchmark.train.size(), Report().train.size());
  EXPECT_DOUBLE_EQ(parsed->benchmark.matmul_gflops, Report().matmul_gflops);
  EXPECT_EQ(parsed->benchmark.cpu_threads, Report().cpu_threads);
  EXPECT_EQ(parsed->benchmark.torch_version, Report().torch_version);
}

TEST(BenchmarkTest, OutOfRangeDurationsAreClampedNotFatal) {
  // A negative budget is clamped to the minimum run instead of measuring nothing.
  const BenchmarkReport r = RunBenchmark(-1.0);
  EXPECT_GT(r.matmul_gflops, 0);
  EXPECT_GE(r.cpu_threads, 1);
}

}  // namespace
}  // namespace ubcp::client
