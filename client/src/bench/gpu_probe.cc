// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/gpu_probe.h"

#include <dlfcn.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;

// The slice of nvml.h this file needs, declared here so that building needs neither the CUDA
// toolkit nor the driver. Layouts and values as documented in the NVML API reference.
using NvmlReturn = int;  // nvmlReturn_t
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;  // nvmlDevice_t
struct NvmlMemory {                    // nvmlMemory_t (v1)
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu;
  unsigned int memory;
};
constexpr unsigned kNameBufferSize = 96;           // NVML_DEVICE_NAME_V2_BUFFER_SIZE
constexpr unsigned kDriverVersionBufferSize = 80;  // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
// More than any machine has; a larger count means a broken library, not a bigger machine.
constexpr unsigned kMaxGpus = 64;

using InitFn = NvmlReturn (*)();
using ShutdownFn = NvmlReturn (*)();
using GetCountFn = NvmlReturn (*)(unsigned int*);
using GetHandleFn = NvmlReturn (*)(unsigned int, NvmlDevice*);
using GetNameFn = NvmlReturn (*)(NvmlDevice, char*, unsigned int);
using GetMemoryFn = NvmlReturn (*)(NvmlDevice, NvmlMemory*);
using GetDriverVersionFn = NvmlReturn (*)(char*, unsigned int);
using GetUtilizationFn = NvmlReturn (*)(NvmlDevice, NvmlUtilization*);
using ErrorStringFn = const char* (*)(NvmlReturn);

struct DlClose {
  void operator()(void* handle) const { ::dlclose(handle); }
};
using Library = std::unique_ptr<void, DlClose>;

struct NvmlApi {
  InitFn init = nullptr;
  ShutdownFn shutdown = nullptr;
  GetCountFn get_count = nullptr;
  GetHandleFn get_handle = nullptr;
  GetNameFn get_name = nullptr;
  GetMemoryFn get_memory = nullptr;
  GetDriverVersionFn get_driver_version = nullptr;
  GetUtilizationFn get_utilization = nullptr;
  ErrorStringFn error_string = nullptr;  // optional: only for messages
};

template <typename Fn>
common::Status Resolve(void* library, const char* symbol, Fn& out) {
  out = reinterpret_cast<Fn>(::dlsym(library, symbol));
  if (out == nullptr) {
    return MakeError(Errc::kMalformed, std::string("NVML library lacks ") + symbol);
  }
  return common::Ok();
}

common::Result<NvmlApi> ResolveApi(void* library) {
  NvmlApi api;
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlInit_v2", api.init));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlShutdown", api.shutdown));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlDeviceGetCount_v2", api.get_count));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlDeviceGetHandleByIndex_v2", api.get_handle));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlDeviceGetName", api.get_name));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlDeviceGetMemoryInfo", api.get_memory));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlSystemGetDriverVersion", api.get_driver_version));
  UBCP_RETURN_IF_ERROR(Resolve(library, "nvmlDeviceGetUtilizationRates", api.get_utilization));
  api.error_string = reinterpret_cast<ErrorStringFn>(::dlsym(library, "nvmlErrorString"));
  return api;
}

common::Error CallFailed(const NvmlApi& api, const char* call, NvmlReturn code) {
  std::string text = "NVML " + std::string(call) + " failed";
  const char* reason = api.error_string != nullptr ? api.error_string(code) : nullptr;
  if (reason != nullptr) text += std::string(": ") + reason;
  return MakeError(Errc::kUnavailable, text + " (code " + std::to_string(code) + ")");
}

// NVML writes a NUL-terminated string into a fixed buffer; never trust the terminator.
std::string FromBuffer(const char* buffer, std::size_t size) {
  std::size_t n = 0;
  while (n < size && buffer[n] != '\0') ++n;
  return std::string(buffer, n);
}

common::Result<NvidiaGpu> ReadGpu(const NvmlApi& api, unsigned index) {
  NvmlDevice device = nullptr;
  if (NvmlReturn rc = api.get_handle(index, &device); rc != kNvmlSuccess) {
    return CallFailed(api, "nvmlDeviceGetHandleByIndex_v2", rc);
  }
  NvidiaGpu gpu;
  char name[kNameBufferSize] = {};
  if (NvmlReturn rc = api.get_name(device, name, kNameBufferSize); rc != kNvmlSuccess) {
    return CallFailed(api, "nvmlDeviceGetName", rc);
  }
  gpu.name = FromBuffer(name, sizeof name);
  NvmlMemory memory{};
  if (NvmlReturn rc = api.get_memory(device, &memory); rc != kNvmlSuccess) {
    return CallFailed(api, "nvmlDeviceGetMemoryInfo", rc);
  }
  gpu.memory_total_bytes = memory.total;
  gpu.memory_used_bytes = memory.used;
  // Utilisation is not supported on every GPU (NVML_ERROR_NOT_SUPPORTED): absent, not an error.
  NvmlUtilization utilization{};
  if (api.get_utilization(device, &utilization) == kNvmlSuccess && utilization.gpu <= 100) {
    gpu.utilization_percent = utilization.gpu;
  }
  return gpu;
}

// Runs between nvmlInit_v2 and nvmlShutdown.
common::Result<NvmlReport> ReadReport(const NvmlApi& api) {
  NvmlReport report;
  char driver[kDriverVersionBufferSize] = {};
  if (NvmlReturn rc = api.get_driver_version(driver, kDriverVersionBufferSize);
      rc != kNvmlSuccess) {
    return CallFailed(api, "nvmlSystemGetDriverVersion", rc);
  }
  report.driver_version = FromBuffer(driver, sizeof driver);
  unsigned count = 0;
  if (NvmlReturn rc = api.get_count(&count); rc != kNvmlSuccess) {
    return CallFailed(api, "nvmlDeviceGetCount_v2", rc);
  }
  if (count == 0) {
    return MakeError(Errc::kNotFound,
                     "no NVIDIA GPU (NVML driver " + report.driver_version + " counts none)");
  }
  if (count > kMaxGpus) {
    return MakeError(Errc::kMalformed, "NVML reports " + std::to_string(count) +
                                           " GPUs, more than " + std::to_string(kMaxGpus));
  }
  for (unsigned i = 0; i < count; ++i) {
    UBCP_ASSIGN_OR_RETURN(NvidiaGpu gpu, ReadGpu(api, i));
    report.gpus.push_back(std::move(gpu));
  }
  return report;
}

std::string Gib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return text;
}

std::string Describe(const NvidiaGpu& gpu) {
  std::string text =
      gpu.name + " (" + Gib(gpu.memory_total_bytes) + ", " + Gib(gpu.memory_used_bytes) + " used";
  if (gpu.utilization_percent) {
    text += ", " + std::to_string(*gpu.utilization_percent) + "% utilised";
  }
  return text + ")";
}

std::string DescribeAll(const NvmlReport& report) {
  std::string text;
  for (std::size_t i = 0; i < report.gpus.size(); ++i) {
    if (i > 0) text += ", ";
    text += Describe(report.gpus[i]);
  }
  return text + "; driver " + report.driver_version;
}

}  // namespace

common::Result<NvmlReport> ProbeNvml(std::string_view library) {
  const std::string path(library);
  ::dlerror();  // clear a stale message
  // RTLD_LOCAL: NVML's symbols must not resolve anything else in this process.
  Library handle(::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!handle) {
    const char* why = ::dlerror();
    return MakeError(Errc::kNotFound,
                     "NVML not present (" + std::string(why != nullptr ? why : path) + ")");
  }
  UBCP_ASSIGN_OR_RETURN(const NvmlApi api, ResolveApi(handle.get()));
  if (NvmlReturn rc = api.init(); rc != kNvmlSuccess) return CallFailed(api, "nvmlInit_v2", rc);
  common::Result<NvmlReport> report = ReadReport(api);
  api.shutdown();  // its failure changes nothing the caller could act on
  return report;
}

bool LibtorchLinksCuda() {
  // RTLD_NOLOAD only looks: a CUDA build of libtorch is linked with libtorch_cuda.so, a CPU
  // build never loads it.
  void* handle = ::dlopen("libtorch_cuda.so", RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return false;
  ::dlclose(handle);  // drops the reference NOLOAD added
  return true;
}

GpuSummary SummarizeGpus(const common::Result<NvmlReport>& nvml, int cuda_devices,
                         bool libtorch_has_cuda) {
  GpuSummary summary;
  if (nvml) {
    summary.driver_version = nvml->driver_version;
    summary.gpus = nvml->gpus;
  }
  const std::string seen = nvml ? DescribeAll(*nvml) : nvml.error().message;
  if (cuda_devices > 0) {
    summary.use = GpuUse::kUsable;
    summary.status =
        "usable: libtorch sees " + std::to_string(cuda_devices) + " CUDA device(s); NVML: " + seen;
  } else if (nvml) {
    summary.use = GpuUse::kPresentNotUsable;
    summary.status = libtorch_has_cuda
                         ? "present, not usable: libtorch has CUDA but sees no device (driver "
                           "too old for this libtorch, or CUDA_VISIBLE_DEVICES hides them): " +
                               seen
                         : "present, not usable: this libtorch has no CUDA: " + seen;
  } else {
    summary.use = GpuUse::kNone;
    summary.status = "none: " + seen;
  }
  return summary;
}

}  // namespace ubcp::client
