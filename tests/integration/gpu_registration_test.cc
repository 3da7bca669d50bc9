// SPDX-License-Identifier: Apache-2.0
// A host's GPU summary travels with its registration: the real client (ToWire, the signed
// registration) over loopback TLS to the real coordinator, which keeps it in the host's stored
// benchmark; GPUs that are present but not usable are visible there, and a summary longer than
// the wire allows is cut by the client rather than refused by the coordinator.
#include <gtest/gtest.h>

#include <string>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;

class GpuRegistrationTest : public LoopTest {
 protected:
  // Registers a host named `name` whose benchmark is `report`; returns what the coordinator
  // stored as its benchmark, parsed.
  common::HostBenchmark RegisterAndReadBack(const std::string& name,
                                            const client::BenchmarkReport& report) {
    auto http = NewHttp();
    client::CoordinatorApi api(*http);
    api.set_account_token(DonorAccountToken("owner-of-" + name));
    auto state = client::HostState::Open(dir_ / name);
    EXPECT_TRUE(state) << state.error().ToString();
    auto key = state->LoadOrCreateKey();
    EXPECT_TRUE(key) << key.error().ToString();
    auto reg = client::EnsureRegistered(api, *state, *key, name, [&] { return report; });
    EXPECT_TRUE(reg) << reg.error().ToString();
    if (!reg) return {};
    auto host = store_->GetHost(reg->host_id);
    EXPECT_TRUE(host) << host.error().ToString();
    if (!host) return {};
    auto benchmark = common::ParseHostBenchmark(host->benchmark_json);
    EXPECT_TRUE(benchmark) << benchmark.error().ToString() << ": " << host->benchmark_json;
    return benchmark ? *benchmark : common::HostBenchmark{};
  }
};

TEST_F(GpuRegistrationTest, PresentButNotUsableGpusAreKeptWithTheHost) {
  client::BenchmarkReport report = TinyBenchmark();
  client::NvmlReport nvml;
  nvml.driver_version = "550.54.15";
  nvml.gpus = {{"NVIDIA H200", 141 * 1024 * kMiB, 0, 0u}, {"NVIDIA L4", 23 * 1024 * kMiB, 0, {}}};
  report.gpu = client::SummarizeGpus(nvml, /*cuda_devices=*/0, /*libtorch_has_cuda=*/false);
  ASSERT_EQ(report.gpu.use, client::GpuUse::kPresentNotUsable);

  const common::HostBenchmark stored = RegisterAndReadBack("cpu-torch-on-gpu-box", report);
  ASSERT_TRUE(stored.gpu.has_value());
  EXPECT_EQ(stored.gpu->status, report.gpu.status);
  EXPECT_TRUE(stored.gpu->status.starts_with("present, not usable: this libtorch has no CUDA"))
      << stored.gpu->status;
  EXPECT_EQ(stored.gpu->driver, "550.54.15");
  ASSERT_EQ(stored.gpu->devices.size(), 2u);
  EXPECT_EQ(stored.gpu->devices[0].name, "NVIDIA H200");
  EXPECT_EQ(stored.gpu->devices[0].memory_mb, 141u * 1024);
  EXPECT_EQ(stored.gpu->devices[1].name, "NVIDIA L4");
  EXPECT_EQ(stored.gpu->devices[1].memory_mb, 23u * 1024);
  EXPECT_EQ(stored.cuda_devices, 0);
}

TEST_F(GpuRegistrationTest, AdminCapacityCountsTheGpusOfTheHostsOnline) {
  client::NvmlReport nvml;
  nvml.driver_version = "550.54.15";
  nvml.gpus = {{"NVIDIA H200", 141 * 1024 * kMiB, 0, 0u},
               {"NVIDIA H200", 141 * 1024 * kMiB, 0, 0u}};
  client::BenchmarkReport cuda = TinyBenchmark();
  cuda.cuda_devices = 2;
  cuda.cuda_matmul_gflops = 50'000;
  cuda.gpu = client::SummarizeGpus(nvml, cuda.cuda_devices, /*libtorch_has_cuda=*/true);
  client::BenchmarkReport unusable = TinyBenchmark();
  unusable.gpu = client::SummarizeGpus(nvml, 0, /*libtorch_has_cuda=*/false);
  RegisterAndReadBack("cuda-box", cuda);
  RegisterAndReadBack("cpu-torch-on-gpu-box", unusable);
  RegisterAndReadBack("laptop", TinyBenchmark());

  const std::string token = common::NewToken();
  ASSERT_TRUE(
      store_->CreateAccount("root", common::TokenHash(token), coordinator::Role::kAdmin, now_));
  auto http = NewHttp();
  auto reply = http->Request("GET", "/v1/admin/capacity", {}, {}, token);
  ASSERT_TRUE(reply) << reply.error().ToString();
  ASSERT_EQ(reply->status, 200) << reply->body;
  auto report = common::ParseCapacityReport(reply->body);
  ASSERT_TRUE(report) << report.error().ToString();
  EXPECT_EQ(report->hosts_online, 3);
  ASSERT_TRUE(report->gpus.has_value());
  EXPECT_EQ(report->gpus->cuda_hosts, 1);
  EXPECT_EQ(report->gpus->cuda_devices, 2);
  EXPECT_EQ(report->gpus->unusable_hosts, 1);
  EXPECT_EQ(report->gpus->unusable_gpus, 2);

  // Hosts not seen for a day are not online: their GPUs no longer count.
  now_ += 86'400;
  reply = http->Request("GET", "/v1/admin/capacity", {}, {}, token);
  ASSERT_TRUE(reply && reply->status == 200);
  report = common::ParseCapacityReport(reply->body);
  ASSERT_TRUE(report && report->gpus);
  EXPECT_EQ(report->hosts_online, 0);
  EXPECT_EQ(report->gpus->cuda_devices, 0);
  EXPECT_EQ(report->gpus->unusable_gpus, 0);
}

TEST_F(GpuRegistrationTest, HostWithoutNvidiaGpuReportsWhyAndOneWithoutProbeReportsNothing) {
  client::BenchmarkReport probed = TinyBenchmark();
  probed.gpu = client::SummarizeGpus(
      common::MakeError(common::Errc::kNotFound, "NVML not present (libnvidia-ml.so.1: none)"), 0,
      false);
  const common::HostBenchmark none = RegisterAndReadBack("cpu-box", probed);
  ASSERT_TRUE(none.gpu.has_value());
  EXPECT_EQ(none.gpu->status, probed.gpu.status);
  EXPECT_TRUE(none.gpu->status.starts_with("none: ")) << none.gpu->status;
  EXPECT_TRUE(none.gpu->driver.empty());
  EXPECT_TRUE(none.gpu->devices.empty());

  // A benchmark that never probed (GpuSummary left empty) registers as before: not reported.
  const common::HostBenchmark unprobed = RegisterAndReadBack("old-style-box", TinyBenchmark());
  EXPECT_FALSE(unprobed.gpu.has_value());
  EXPECT_EQ(unprobed.matmul_gflops, 1);
}

TEST_F(GpuRegistrationTest, OversizedSummaryIsCutByTheClientNotRefused) {
  client::BenchmarkReport report = TinyBenchmark();
  client::NvmlReport nvml;
  // A driver version and device names longer than the wire allows, with a multi-byte character
  // across each cut, and more devices than it carries.
  nvml.driver_version = std::string(common::kMaxGpuDriver - 1, '5') + "\xc3\xa9";
  for (std::size_t i = 0; i < common::kMaxGpuDevices + 4; ++i) {
    nvml.gpus.push_back(
        {std::string(common::kMaxStringField - 1, 'g') + "\xc3\xa9" + std::to_string(i),
         (i + 1) * kMiB,
         0,
         {}});
  }
  report.cuda_devices = 1;
  report.gpu = client::SummarizeGpus(nvml, report.cuda_devices, true);
  ASSERT_GT(report.gpu.status.size(), common::kMaxGpuStatus);  // lists all 20 devices

  const common::HostBenchmark stored = RegisterAndReadBack("big-box", report);
  ASSERT_TRUE(stored.gpu.has_value());
  EXPECT_LE(stored.gpu->status.size(), common::kMaxGpuStatus);
  EXPECT_TRUE(report.gpu.status.starts_with(stored.gpu->status));
  EXPECT_TRUE(stored.gpu->status.starts_with("usable: libtorch sees 1 CUDA device(s)"))
      << stored.gpu->status;
  EXPECT_EQ(stored.gpu->driver, std::string(common::kMaxGpuDriver - 1, '5'));
  ASSERT_EQ(stored.gpu->devices.size(), common::kMaxGpuDevices);
  for (std::size_t i = 0; i < stored.gpu->devices.size(); ++i) {
    EXPECT_EQ(stored.gpu->devices[i].name, std::string(common::kMaxStringField - 1, 'g'));
    EXPECT_EQ(stored.gpu->devices[i].memory_mb, i + 1);
  }
}

}  // namespace
}  // namespace ubcp::itest
