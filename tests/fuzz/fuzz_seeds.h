// SPDX-License-Identifier: Apache-2.0
#pragma once
// Valid inputs of the fuzz targets whose formats are binary or hashed, made with the project's
// own encoders so that they follow the formats exactly. The replay test adds them to the
// checked-in seeds; `ubcp-fuzz-seeds <dir>` (seed_writer.cc) writes them as
// <dir>/<target>/<name> files, the corpora a libFuzzer campaign starts from.

#include <string>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::fuzz {

struct Seed {
  std::string name;  // file name under seeds/<target>/
  std::string bytes;
};

// Model blobs as a coordinator serves them (zstd frame of an fp32 or int8 tensor list).
std::vector<Seed> TensorBlobSeeds();

// Checkpoints of kCheckpointSpec bound to kCheckpointBinding (fuzz_targets.h): SGD with
// momentum, SGD without, Adam.
std::vector<Seed> CheckpointSeeds();

// A worker's standard output: each kind of event as FormatWorkerEvent writes it, a benchmark
// report from BenchmarkToJson (with a GPU), and a whole transcript with a log line in it.
std::vector<Seed> WorkerProtocolSeeds();

// Inputs of FuzzUnitJournal (JoinJournalFiles) holding the files UnitJournal and SaveUnitOutput
// write for unit kJournalUnitId: just leased; executed with an update, other units in
// finished.log; evaluated and acknowledged. Made in a temporary directory (kIo when that fails).
common::Result<std::vector<Seed>> UnitJournalSeeds();

}  // namespace ubcp::fuzz
