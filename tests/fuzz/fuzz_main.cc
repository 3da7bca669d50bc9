// SPDX-License-Identifier: Apache-2.0
// libFuzzer entry points (clang, -DUBCP_FUZZ=ON): one executable per target, chosen at compile
// time by UBCP_FUZZ_TARGET.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return ubcp::fuzz::UBCP_FUZZ_TARGET(data, size);
}
