// SPDX-License-Identifier: Apache-2.0
// The NVML loader against a fake libnvidia-ml (built beside this test), a missing library and a
// library without NVML; the combination with libtorch's view as plain values; and the real probe
// of this machine, whatever it has.

#include "ubcp/client/gpu_probe.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/cuda.h>

#include <iostream>
#include <string>

#include "ubcp/client/benchmark.h"
#include "ubcp/common/model.h"

#ifndef UBCP_FAKE_NVML
#error "UBCP_FAKE_NVML must name the fake NVML library (client/CMakeLists.txt)"
#endif

namespace ubcp::client {
namespace {

constexpr std::uint64_t kGib = 1ull << 30;

// Sets an environment variable the fake library reads, for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

TEST(GpuProbeTest, ReadsTwoGpusFromTheFakeNvml) {
  auto report = ProbeNvml(UBCP_FAKE_NVML);
  ASSERT_TRUE(report) << report.error().ToString();
  EXPECT_EQ(report->driver_version, "550.54.15");
  ASSERT_EQ(report->gpus.size(), 2u);
  for (const NvidiaGpu& gpu : report->gpus) {
    EXPECT_EQ(gpu.name, "Fake H200");
    EXPECT_EQ(gpu.memory_total_bytes, 141 * kGib);
  }
  EXPECT_EQ(report->gpus[0].memory_used_bytes, 3 * kGib);
  EXPECT_EQ(report->gpus[0].utilization_percent, 87u);
  EXPECT_EQ(report->gpus[1].memory_used_bytes, 0u);
  EXPECT_EQ(report->gpus[1].utilization_percent, 0u);
}

TEST(GpuProbeTest, ShutsNvmlDownAfterEveryProbe) {
  // Holding the library keeps its state across the probe's own dlopen and dlclose.
  void* fake = ::dlopen(UBCP_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(fake, nullptr) << ::dlerror();
  auto initialised = reinterpret_cast<int (*)()>(::dlsym(fake, "FakeNvmlInitialised"));
  ASSERT_NE(initialised, nullptr);
  ASSERT_TRUE(ProbeNvml(UBCP_FAKE_NVML));
  EXPECT_EQ(initialised(), 0);
  {
    ScopedEnv none("FAKE_NVML_DEVICES", "0");
    EXPECT_FALSE(ProbeNvml(UBCP_FAKE_NVML));
  }
  EXPECT_EQ(initialised(), 0);
  ::dlclose(fake);
}

TEST(GpuProbeTest, MissingLibraryIsAClearReason) {
  auto report = ProbeNvml("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, common::Errc::kNotFound);
  EXPECT_EQ(report.error().message.rfind("NVML not present (/nonexistent/libnvidia-ml.so.1: ", 0),
            0u)
      << report.error().message;
  EXPECT_NE(report.error().message.find("No such file"), std::string::npos)
      << report.error().message;
}

TEST(GpuProbeTest, LibraryWithoutNvmlIsRefused) {
  // libm is on every glibc system and exports none of NVML's functions.
  auto report = ProbeNvml("libm.so.6");
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, common::Errc::kMalformed);
  EXPECT_EQ(report.error().message, "NVML library lacks nvmlInit_v2");
}

TEST(GpuProbeTest, ZeroDevicesIsNoNvidiaGpu) {
  ScopedEnv none("FAKE_NVML_DEVICES", "0");
  auto report = ProbeNvml(UBCP_FAKE_NVML);
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, common::Errc::kNotFound);
  EXPECT_EQ(report.error().message.rfind("no NVIDIA GPU", 0), 0u) << report.error().message;
}

TEST(GpuProbeTest, AbsurdDeviceCountIsRefused) {
  ScopedEnv many("FAKE_NVML_DEVICES", "100000");
  auto report = ProbeNvml(UBCP_FAKE_NVML);
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, common::Errc::kMalformed);
}

TEST(GpuProbeTest, InitFailureCarriesNvmlsReason) {
  ScopedEnv driver_not_loaded("FAKE_NVML_INIT_RESULT", "9");
  auto report = ProbeNvml(UBCP_FAKE_NVML);
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, common::Errc::kUnavailable);
  EXPECT_EQ(report.error().message, "NVML nvmlInit_v2 failed: Driver Not Loaded (code 9)");
}

TEST(GpuProbeTest, GpuSeenByNvmlButNotByCpuLibtorchIsPresentNotUsable) {
  auto nvml = ProbeNvml(UBCP_FAKE_NVML);
  ASSERT_TRUE(nvml) << nvml.error().ToString();
  const GpuSummary s = SummarizeGpus(nvml, 0, false);
  EXPECT_EQ(s.use, GpuUse::kPresentNotUsable);
  EXPECT_EQ(s.status.rfind("present, not usable: this libtorch has no CUDA: Fake H200", 0), 0u)
      << s.status;
  EXPECT_NE(s.status.find("141.0 GiB, 3.0 GiB used, 87% utilised"), std::string::npos) << s.status;
  EXPECT_EQ(s.gpus.size(), 2u);
  EXPECT_EQ(s.driver_version, "550.54.15");

  const GpuSummary cuda_build = SummarizeGpus(nvml, 0, true);
  EXPECT_EQ(cuda_build.use, GpuUse::kPresentNotUsable);
  EXPECT_EQ(cuda_build.status.rfind("present, not usable: libtorch has CUDA but sees no device", 0),
            0u)
      << cuda_build.status;
}

TEST(GpuProbeTest, LibtorchCudaDevicesMakeGpusUsable) {
  const GpuSummary with_nvml = SummarizeGpus(ProbeNvml(UBCP_FAKE_NVML), 2, true);
  EXPECT_EQ(with_nvml.use, GpuUse::kUsable);
  EXPECT_EQ(with_nvml.status.rfind("usable: libtorch sees 2 CUDA device(s); NVML: Fake H200", 0),
            0u)
      << with_nvml.status;
  // NVML is optional for training: libtorch's word is enough.
  const GpuSummary without_nvml =
      SummarizeGpus(ProbeNvml("/nonexistent/libnvidia-ml.so.1"), 1, true);
  EXPECT_EQ(without_nvml.use, GpuUse::kUsable);
  EXPECT_TRUE(without_nvml.gpus.empty());
  EXPECT_NE(without_nvml.status.find("NVML not present"), std::string::npos) << without_nvml.status;
}

TEST(GpuProbeTest, NoNvmlAndNoCudaIsNone) {
  const GpuSummary s = SummarizeGpus(ProbeNvml("/nonexistent/libnvidia-ml.so.1"), 0, false);
  EXPECT_EQ(s.use, GpuUse::kNone);
  EXPECT_EQ(s.status.rfind("none: NVML not present (", 0), 0u) << s.status;
  EXPECT_TRUE(s.gpus.empty());
  EXPECT_TRUE(s.driver_version.empty());
}

TEST(GpuProbeTest, BenchmarkReportsWhatNvmlSeesAndWhetherLibtorchCanUseIt) {
  const BenchmarkReport r = RunBenchmark(0.3, UBCP_FAKE_NVML);
  EXPECT_EQ(r.gpu.gpus.size(), 2u);
  EXPECT_EQ(r.gpu.driver_version, "550.54.15");
  if (torch::cuda::is_available()) {
    EXPECT_EQ(r.gpu.use, GpuUse::kUsable);
    EXPECT_GT(r.cuda_devices, 0);
    return;
  }
  EXPECT_EQ(r.gpu.use, GpuUse::kPresentNotUsable);
  EXPECT_EQ(r.cuda_devices, 0);
  EXPECT_EQ(r.cuda_matmul_gflops, 0);
  if (!LibtorchLinksCuda()) {
    EXPECT_EQ(r.gpu.status.rfind("present, not usable: this libtorch has no CUDA", 0), 0u)
        << r.gpu.status;
  }
}

TEST(GpuProbeTest, RealProbeOfThisMachine) {
  const auto nvml = ProbeNvml();
  const GpuSummary s = SummarizeGpus(nvml, common::CudaDeviceCount(), LibtorchLinksCuda());
  std::cout << "[ gpu      ] " << s.status << "\n";
  EXPECT_FALSE(s.status.empty());
  if (nvml) {
    EXPECT_FALSE(nvml->gpus.empty());
    EXPECT_FALSE(nvml->driver_version.empty());
  } else {
    // Every failure names its cause.
    EXPECT_NE(nvml.error().code, common::Errc::kInternal);
    EXPECT_FALSE(nvml.error().message.empty());
  }
  // libtorch's view decides usability; NVML only adds names and memory.
  EXPECT_EQ(s.use == GpuUse::kUsable, torch::cuda::is_available());
}

TEST(GpuProbeTest, CudaLibtorchIsRecognisedAsACudaBuild) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA: " << SummarizeGpus(ProbeNvml(), 0, LibtorchLinksCuda()).status;
  }
  EXPECT_TRUE(LibtorchLinksCuda());
  const auto nvml = ProbeNvml();
  ASSERT_TRUE(nvml) << "CUDA works but NVML does not: " << nvml.error().ToString();
  EXPECT_GE(nvml->gpus.size(), static_cast<std::size_t>(torch::cuda::device_count()));
}

}  // namespace
}  // namespace ubcp::client
