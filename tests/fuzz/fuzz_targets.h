// SPDX-License-Identifier: Apache-2.0
#pragma once
// Fuzz targets for every parser of untrusted input. Each takes arbitrary bytes, runs them
// through the parsers an attacker can reach with them, and must return without crashing,
// throwing or reading out of bounds; the parsers' answers (a value or an error) are not judged.
// Built two ways: linked with libFuzzer (clang -fsanitize=fuzzer, fuzz_main.cc, configure with
// -DUBCP_FUZZ=ON) for fuzzing campaigns, and replayed over tests/fuzz/seeds plus deterministic
// mutations of them by replay_test.cc in every ctest run.

#include <cstddef>
#include <cstdint>

namespace ubcp::fuzz {

// Every JSON message of the /v1 protocol, the signed envelope, the key statement.
int FuzzWire(const std::uint8_t* data, std::size_t size);
// A tensor blob as it arrives from the network: zstd frame, then the tensor codec.
int FuzzTensorBlob(const std::uint8_t* data, std::size_t size);

}  // namespace ubcp::fuzz
