// SPDX-License-Identifier: Apache-2.0
#pragma once
// NVIDIA GPU discovery without a link-time dependency: NVML (libnvidia-ml.so.1) is opened with
// dlopen at run time when present, and what it sees is combined with what libtorch can use.
// Does not include or link libtorch; the caller passes libtorch's CUDA device count.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::client {

// The soname the NVIDIA driver installs; the driver package, not the CUDA toolkit, ships it.
inline constexpr std::string_view kNvmlLibrary = "libnvidia-ml.so.1";

struct NvidiaGpu {
  std::string name;  // e.g. "NVIDIA H200"
  std::uint64_t memory_total_bytes = 0;
  std::uint64_t memory_used_bytes = 0;
  // Percent of the last sample period in which a kernel ran; nullopt where the GPU does not
  // report it. Tells whether someone else is using the GPU.
  std::optional<unsigned> utilization_percent;
};

struct NvmlReport {
  std::string driver_version;   // e.g. "550.54.15"
  std::vector<NvidiaGpu> gpus;  // never empty in a successful probe
};

// Opens `library` (a soname or a path), initialises NVML, lists the GPUs and shuts NVML down.
// Errors, each with a message fit for the donor's log:
//   kNotFound     "NVML not present (<dlerror>)": no driver library on this machine;
//                 "no NVIDIA GPU (...)": NVML works but counts no device;
//   kUnavailable  NVML is present but a call failed (e.g. driver not loaded), with NVML's code;
//   kMalformed    the library lacks an NVML function.
// Thread-safe (NVML reference-counts init/shutdown); takes milliseconds.
common::Result<NvmlReport> ProbeNvml(std::string_view library = kNvmlLibrary);

// Whether libtorch_cuda is loaded into this process, i.e. the libtorch we run is a CUDA build.
bool LibtorchLinksCuda();

enum class GpuUse {
  kNone,              // no NVIDIA GPU seen by NVML nor by libtorch
  kPresentNotUsable,  // NVML sees GPUs, libtorch cannot use them
  kUsable,            // libtorch sees at least one CUDA device
};

struct GpuSummary {
  GpuUse use = GpuUse::kNone;
  std::string status;           // one line for the benchmark log and the registration
  std::string driver_version;   // empty without NVML
  std::vector<NvidiaGpu> gpus;  // as NVML lists them; empty without NVML
};

// Pure: combines the NVML probe with libtorch's view (`cuda_devices` from
// torch::cuda::device_count() when available, else 0; `libtorch_has_cuda` from
// LibtorchLinksCuda()). Training uses a GPU only when libtorch reports CUDA devices.
GpuSummary SummarizeGpus(const common::Result<NvmlReport>& nvml, int cuda_devices,
                         bool libtorch_has_cuda);

}  // namespace ubcp::client
