// SPDX-License-Identifier: Apache-2.0
#pragma once
// Fuzz targets for every parser of untrusted input. Each takes arbitrary bytes, runs them
// through the parsers an attacker can reach with them, and must return without crashing,
// throwing or reading out of bounds. Where it is cheap a target also checks what the parser
// promises of an accepted input (a range within its bounds, a value that encodes and parses back
// to itself); a broken promise prints the invariant and aborts, which libFuzzer reports as a
// crash and which fails the replay test.
// Built two ways: linked with libFuzzer (clang -fsanitize=fuzzer, fuzz_main.cc, configure with
// -DUBCP_FUZZ=ON) for fuzzing campaigns, and replayed over tests/fuzz/seeds plus deterministic
// mutations of them by replay_test.cc in every ctest run. fuzz_seeds.h builds valid inputs of
// the binary formats; `ubcp-fuzz-seeds <dir>` writes them as seed files.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ubcp::fuzz {

// Every JSON message of the /v1 protocol, the signed envelope, the key statement.
int FuzzWire(const std::uint8_t* data, std::size_t size);
// A tensor blob as it arrives from the network: zstd frame, then the tensor codec.
int FuzzTensorBlob(const std::uint8_t* data, std::size_t size);
// One HTTP header value, read as the `Range` of a blob download and as the `Content-Range` of
// an upload chunk (coordinator/byte_range.h). Checks that a parsed range resolves inside the
// representation against several totals, as ResolveRange documents, and that the canonical
// header of every parsed or resolved range parses back to it.
int FuzzByteRange(const std::uint8_t* data, std::size_t size);
// A training checkpoint file from the donor's disk (common/train_checkpoint.h), decoded for
// kCheckpointSpec and kCheckpointBinding three ways: as it is (the digest stops almost every
// mutation), with its trailing digest recomputed, and with its binding digest also set to
// kCheckpointBinding's, so that the fields behind the hashes are fuzzed too. An accepted
// checkpoint must fit the spec, pass CheckCheckpoint for matching parameters, be refused under
// another binding, and encode within MaxCheckpointSize to bytes that decode to the same encoding.
int FuzzTrainCheckpoint(const std::uint8_t* data, std::size_t size);
// A worker's standard output as the daemon reads it (client/worker_protocol.h): the input as one
// line and each of its lines, and benchmark reports. An accepted event must format back to a
// line that parses to the same event; an accepted report must serialize to one that is accepted
// again with the same values.
int FuzzWorkerProtocol(const std::uint8_t* data, std::size_t size);
// The files of one unit directory of the donor's journal (client/unit_journal.h): the input is
// split at kJournalSeparator into state.json, output.json, update.blob, finished.log and the
// signed envelope (written as manifest.env and result.env); a missing part is a missing file.
// They are written into a fresh temporary state directory, read with UnitJournal::Load,
// LoadUnitOutput, LoadManifest, LoadResult, Finished and Pending, and removed. What loads must
// save and load back unchanged, and Pending must agree with Load and finished.log.
int FuzzUnitJournal(const std::uint8_t* data, std::size_t size);

// The model and binding FuzzTrainCheckpoint decodes for (tiny, so that a checkpoint is small).
inline constexpr std::string_view kCheckpointSpec = "mlp-i4-h3-o2";
inline constexpr std::string_view kCheckpointBinding = "ubcp-fuzz-checkpoint";

// FuzzUnitJournal's unit, and the line between the files of its input.
inline constexpr std::int64_t kJournalUnitId = 7;
inline constexpr std::string_view kJournalSeparator = "\n--ubcp-fuzz-next-file--\n";
// The input of FuzzUnitJournal that holds `files` in the order above.
std::string JoinJournalFiles(const std::vector<std::string>& files);

}  // namespace ubcp::fuzz
