// SPDX-License-Identifier: Apache-2.0
// Replays the fuzz targets in every ctest run: the checked-in seeds, valid messages of every
// kind, and deterministic mutations of all of them (byte flips, truncations, insertions,
// duplications). A crash, an exception or (under sanitizers) an out-of-bounds read fails it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

namespace ubcp::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> SeedFiles(const std::string& target) {
  const char* root = std::getenv("UBCP_SOURCE_DIR");
  fs::path dir = fs::path(root ? root : ".") / "tests" / "fuzz" / "seeds" / target;
  std::vector<std::string> seeds;
  if (!fs::is_directory(dir)) return seeds;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    seeds.push_back(text.str());
  }
  return seeds;
}

// Deterministic mutations of `seed`.
std::vector<std::string> Mutations(const std::string& seed, std::uint64_t rng_seed, int count) {
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
          m.insert(at, 1, "{}[]\",:0e-9\\\x00\xff"[rng() % 15]);
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

void Replay(int (*target)(const std::uint8_t*, std::size_t), const std::vector<std::string>& seeds,
            int mutations_per_seed) {
  std::uint64_t n = 0;
  for (const std::string& seed : seeds) {
    target(reinterpret_cast<const std::uint8_t*>(seed.data()), seed.size());
    for (const std::string& m : Mutations(seed, ++n, mutations_per_seed)) {
      target(reinterpret_cast<const std::uint8_t*>(m.data()), m.size());
    }
  }
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
  // The seeds must stay valid, or the mutations explore nothing near real messages.
  ASSERT_TRUE(common::ParseManifest(common::SerializeManifest(m)));
  ASSERT_TRUE(common::ParseResultPayload(common::SerializeResultPayload(r)));
  int valid_specs = 0;
  for (const std::string& seed : seeds) valid_specs += common::ParseJobSpec(seed) ? 1 : 0;
  EXPECT_GE(valid_specs, 2);
  Replay(FuzzWire, seeds, 300);
}

TEST(FuzzReplayTest, TensorBlobDecoderSurvivesSeedsAndMutations) {
  std::vector<std::string> seeds = SeedFiles("tensor_blob");
  for (auto encoding : {common::FloatEncoding::kFp32, common::FloatEncoding::kInt8Block}) {
    const common::EncodedBlob blob = common::EncodeTensorBlob(
        common::InitModel(*common::ParseModelSpec("mlp-i16-h8-o4"), 1), encoding);
    ASSERT_TRUE(common::DecodeTensorBlob(blob.bytes, blob.raw_size));
    seeds.emplace_back(blob.bytes.begin(), blob.bytes.end());
  }
  Replay(FuzzTensorBlob, seeds, 300);
}

}  // namespace
}  // namespace ubcp::fuzz
