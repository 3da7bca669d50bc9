// SPDX-License-Identifier: Apache-2.0
// Replays the fuzz targets in every ctest run: the checked-in seeds, valid messages of every
// kind, and deterministic mutations of all of them (byte flips, truncations, insertions,
// duplications). A crash, an exception, a broken invariant of a target or (under sanitizers) an
// out-of-bounds read fails it. Each test prints how many inputs it ran.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz/fuzz_seeds.h"
#include "fuzz/fuzz_targets.h"
#include "ubcp/client/worker_protocol.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/train_checkpoint.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/byte_range.h"

namespace ubcp::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> SeedFiles(const std::string& target) {
  const char* root = std::getenv("UBCP_SOURCE_DIR");
  fs::path dir = fs::path(root ? root : ".") / "tests" / "fuzz" / "seeds" / target;
  std::vector<std::string> seeds;
  if (!fs::is_directory(dir)) return seeds;
  // Sorted, so that each seed gets the same mutations on every machine.
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    seeds.push_back(text.str());
  }
  return seeds;
}

// Characters that mutations insert: what JSON and binary formats are built from, and what
// numeric header values are.
constexpr std::string_view kJsonAlphabet("{}[]\",:0e-9\\\x00\xff", 15);
constexpr std::string_view kHeaderAlphabet = "0123456789-=,/ *\tbB";

void AddSeeds(std::vector<std::string>& seeds, const std::vector<Seed>& generated) {
  for (const Seed& seed : generated) seeds.push_back(seed.bytes);
}

// Deterministic mutations of `seed`.
std::vector<std::string> Mutations(const std::string& seed, std::uint64_t rng_seed, int count,
                                   std::string_view alphabet) {
  std::mt19937_64 rng(rng_seed);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string m = seed;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      const std::size_t at = rng() % m.size();
      switch (rng() % 5) {
        case 0:
          m[at] = static_cast<char>(m[at] ^ (1u << (rng() % 8)));
          break;
        case 1:
          m.resize(at);
          break;
        case 2:
          m.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 3:
          m.insert(at, m.substr(at, rng() % 64));
          break;
        default:
          m.erase(at, 1 + rng() % 8);
          break;
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Runs `target` over every seed and its mutations, and prints how many inputs that was.
void Replay(const char* name, int (*target)(const std::uint8_t*, std::size_t),
            const std::vector<std::string>& seeds, int mutations_per_seed,
            std::string_view alphabet = kJsonAlphabet) {
  const auto start = std::chrono::steady_clock::now();
  std::size_t runs = 0;
  std::uint64_t n = 0;
  for (const std::string& seed : seeds) {
    target(reinterpret_cast<const std::uint8_t*>(seed.data()), seed.size());
    ++runs;
    for (const std::string& m : Mutations(seed, ++n, mutations_per_seed, alphabet)) {
      target(reinterpret_cast<const std::uint8_t*>(m.data()), m.size());
      ++runs;
    }
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::cout << "[ replay   ] " << name << ": " << runs << " executions over " << seeds.size()
            << " seeds in " << took.count() << " s\n";
}

TEST(FuzzReplayTest, WireParsersSurviveSeedsAndMutations) {
  ASSERT_TRUE(common::InitCrypto());
  std::vector<std::string> seeds = SeedFiles("wire");
  ASSERT_GE(seeds.size(), 4u) << "set UBCP_SOURCE_DIR to the repository";
  // Valid messages of the signed kinds, made here so that they follow the codec.
  const common::SigningKey key = common::SigningKey::Generate();
  common::Manifest m;
  m.unit_id = 1;
  m.job_id = 1;
  m.host_id = 1;
  m.kind = "finetune_shard";
  m.model_spec = "mlp-i784-h64-o10";
  m.model = {std::string(64, 'a'), 10, 20};
  m.data = {std::string(64, 'b'), 10, 20};
  m.params = {10, 32, 0.1, 0.9, 0.0, "sgd", 7};
  m.update_encoding = "int8";
  m.issued_at = 1;
  m.deadline = 2;
  seeds.push_back(common::SerializeManifest(m));
  seeds.push_back(common::SerializeEnvelope(
      common::SignPayload(key, common::kDomainManifest, common::SerializeManifest(m))));
  common::ResultPayload r;
  r.unit_id = 1;
  r.host_id = 1;
  r.attempt = 1;
  r.manifest_hash = std::string(64, 'c');
  r.kind = "finetune_shard";
  r.update = common::BlobRef{std::string(64, 'd'), 5, 6};
  seeds.push_back(common::SerializeResultPayload(r));
  seeds.push_back(common::SerializeGrantRequest({1, "alice", 5, "k", ""}));
  common::UnitAbandon abandon;
  abandon.unit_id = 3;
  abandon.attempt = 2;
  abandon.manifest_hash = std::string(64, 'e');
  abandon.reason = "the worker used more memory than the donor's limit (64 MiB)";
  seeds.push_back(common::SerializeUnitAbandon(abandon));
  seeds.push_back(common::SerializeUnitAbandonAck({common::kProtocolVersion, true}));
  // The seeds must stay valid, or the mutations explore nothing near real messages.
  ASSERT_TRUE(common::ParseManifest(common::SerializeManifest(m)));
  ASSERT_TRUE(common::ParseResultPayload(common::SerializeResultPayload(r)));
  ASSERT_TRUE(common::ParseUnitAbandon(common::SerializeUnitAbandon(abandon)));
  int valid_specs = 0;
  for (const std::string& seed : seeds) valid_specs += common::ParseJobSpec(seed) ? 1 : 0;
  EXPECT_GE(valid_specs, 2);
  Replay("FuzzWire", FuzzWire, seeds, 300);
}

TEST(FuzzReplayTest, TensorBlobDecoderSurvivesSeedsAndMutations) {
  std::vector<std::string> seeds = SeedFiles("tensor_blob");
  ASSERT_GE(seeds.size(), 2u) << "set UBCP_SOURCE_DIR to the repository";
  for (const std::string& seed : seeds) {
    auto decoded = common::DecodeTensorBlob(common::AsBytes(seed), 8u << 20);
    EXPECT_TRUE(decoded) << decoded.error().ToString();
  }
  for (auto encoding : {common::FloatEncoding::kFp32, common::FloatEncoding::kInt8Block}) {
    const common::EncodedBlob blob = common::EncodeTensorBlob(
        common::InitModel(*common::ParseModelSpec("mlp-i16-h8-o4"), 1), encoding);
    ASSERT_TRUE(common::DecodeTensorBlob(blob.bytes, blob.raw_size));
    seeds.emplace_back(blob.bytes.begin(), blob.bytes.end());
  }
  Replay("FuzzTensorBlob", FuzzTensorBlob, seeds, 300);
}

TEST(FuzzReplayTest, ByteRangeParsersSurviveSeedsAndMutations) {
  const std::vector<std::string> seeds = SeedFiles("byte_range");
  ASSERT_GE(seeds.size(), 6u) << "set UBCP_SOURCE_DIR to the repository";
  // Both kinds of header among the seeds stay valid, so that mutations start near real ones.
  int ranges = 0, chunks = 0;
  for (const std::string& seed : seeds) {
    ranges += coordinator::ParseRangeHeader(seed) ? 1 : 0;
    chunks += coordinator::ParseContentRange(seed) ? 1 : 0;
  }
  EXPECT_GE(ranges, 3);
  EXPECT_GE(chunks, 2);
  Replay("FuzzByteRange", FuzzByteRange, seeds, 2000, kHeaderAlphabet);
}

TEST(FuzzReplayTest, CheckpointDecoderSurvivesSeedsAndMutations) {
  std::vector<std::string> seeds = SeedFiles("train_checkpoint");
  ASSERT_GE(seeds.size(), 3u) << "set UBCP_SOURCE_DIR to the repository";
  AddSeeds(seeds, CheckpointSeeds());
  // Every seed, the checked-in ones too, is a checkpoint the decoder accepts: after a change of
  // the format, `ubcp-fuzz-seeds tests/fuzz/seeds` writes them again.
  const auto spec = common::ParseModelSpec(kCheckpointSpec);
  ASSERT_TRUE(spec);
  for (const std::string& seed : seeds) {
    auto decoded = common::DecodeCheckpoint(common::AsBytes(seed), kCheckpointBinding, *spec);
    EXPECT_TRUE(decoded) << decoded.error().ToString();
  }
  Replay("FuzzTrainCheckpoint", FuzzTrainCheckpoint, seeds, 2000);
}

TEST(FuzzReplayTest, WorkerProtocolParsersSurviveSeedsAndMutations) {
  std::vector<std::string> seeds = SeedFiles("worker_protocol");
  ASSERT_GE(seeds.size(), 5u) << "set UBCP_SOURCE_DIR to the repository";
  AddSeeds(seeds, WorkerProtocolSeeds());
  int events = 0, reports = 0;
  for (const std::string& seed : seeds) {
    const auto event = client::ParseWorkerLine(seed);
    events += event ? 1 : 0;
    const std::string_view json = event ? std::string_view(event->text) : std::string_view(seed);
    reports += client::BenchmarkFromJson(json) ? 1 : 0;
  }
  EXPECT_GE(events, 8);
  EXPECT_GE(reports, 2);
  Replay("FuzzWorkerProtocol", FuzzWorkerProtocol, seeds, 1000);
}

TEST(FuzzReplayTest, UnitJournalLoadersSurviveSeedsAndMutations) {
  ASSERT_TRUE(common::InitCrypto());
  std::vector<std::string> seeds = SeedFiles("unit_journal");
  ASSERT_GE(seeds.size(), 3u) << "set UBCP_SOURCE_DIR to the repository";
  auto generated = UnitJournalSeeds();
  ASSERT_TRUE(generated) << generated.error().ToString();
  AddSeeds(seeds, *generated);
  Replay("FuzzUnitJournal", FuzzUnitJournal, seeds, 300);
}

}  // namespace
}  // namespace ubcp::fuzz
