// SPDX-License-Identifier: Apache-2.0
// A stand-in for libnvidia-ml.so.1 with canned answers, so that the NVML loader and its parsing
// are tested on machines without a GPU: two "Fake H200" with 141 GiB each, driver "550.54.15".
// FAKE_NVML_INIT_RESULT makes nvmlInit_v2 return that code; FAKE_NVML_DEVICES overrides the count.

#include <cstdlib>
#include <cstring>

namespace {

struct Memory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct Utilization {
  unsigned int gpu;
  unsigned int memory;
};
struct Device {
  const char* name;
  unsigned long long used;
  unsigned int utilization;
};

constexpr unsigned long long kGib = 1ull << 30;
constexpr Device kDevices[] = {{"Fake H200", 3 * kGib, 87}, {"Fake H200", 0, 0}};
constexpr unsigned kDeviceCount = sizeof kDevices / sizeof kDevices[0];
constexpr int kSuccess = 0;
constexpr int kInvalidArgument = 2;
constexpr int kInsufficientSize = 7;
int initialised = 0;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

int Copy(const char* text, char* out, unsigned length) {
  if (out == nullptr) return kInvalidArgument;
  if (std::strlen(text) + 1 > length) return kInsufficientSize;
  std::strcpy(out, text);
  return kSuccess;
}

const Device* AsDevice(void* handle) {
  for (const Device& d : kDevices) {
    if (handle == &d) return &d;
  }
  return nullptr;
}

}  // namespace

extern "C" {

int nvmlInit_v2() {
  const int rc = EnvInt("FAKE_NVML_INIT_RESULT", kSuccess);
  if (rc == kSuccess) ++initialised;
  return rc;
}

int nvmlShutdown() {
  if (initialised > 0) --initialised;
  return kSuccess;
}

// Not NVML: lets a test check that every successful nvmlInit_v2 was matched by nvmlShutdown.
int FakeNvmlInitialised() { return initialised; }

const char* nvmlErrorString(int code) { return code == 9 ? "Driver Not Loaded" : "Fake Error"; }

int nvmlSystemGetDriverVersion(char* out, unsigned length) {
  return Copy("550.54.15", out, length);
}

int nvmlDeviceGetCount_v2(unsigned* count) {
  if (count == nullptr) return kInvalidArgument;
  *count = static_cast<unsigned>(EnvInt("FAKE_NVML_DEVICES", kDeviceCount));
  return kSuccess;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (device == nullptr || index >= kDeviceCount) return kInvalidArgument;
  *device = const_cast<Device*>(&kDevices[index]);
  return kSuccess;
}

int nvmlDeviceGetName(void* device, char* out, unsigned length) {
  const Device* d = AsDevice(device);
  return d == nullptr ? kInvalidArgument : Copy(d->name, out, length);
}

int nvmlDeviceGetMemoryInfo(void* device, Memory* memory) {
  const Device* d = AsDevice(device);
  if (d == nullptr || memory == nullptr) return kInvalidArgument;
  memory->total = 141 * kGib;
  memory->used = d->used;
  memory->free = memory->total - d->used;
  return kSuccess;
}

int nvmlDeviceGetUtilizationRates(void* device, Utilization* utilization) {
  const Device* d = AsDevice(device);
  if (d == nullptr || utilization == nullptr) return kInvalidArgument;
  utilization->gpu = d->utilization;
  utilization->memory = d->utilization / 2;
  return kSuccess;
}

}  // extern "C"
