// SPDX-License-Identifier: Apache-2.0
// ubcp-fuzz-seeds <dir>: writes the generated seeds (fuzz_seeds.h) as <dir>/<target>/<name>,
// e.g. into tests/fuzz/seeds after a format changed. Exit status 1 on any failure.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "fuzz/fuzz_seeds.h"
#include "ubcp/common/crypto.h"

namespace {

namespace fs = std::filesystem;

bool WriteSeeds(const fs::path& dir, const std::vector<ubcp::fuzz::Seed>& seeds) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return false;
  }
  for (const auto& seed : seeds) {
    std::ofstream out(dir / seed.name, std::ios::binary | std::ios::trunc);
    out.write(seed.bytes.data(), static_cast<std::streamsize>(seed.bytes.size()));
    if (!out.flush()) {
      std::fprintf(stderr, "cannot write %s\n", (dir / seed.name).c_str());
      return false;
    }
    std::printf("%s (%zu bytes)\n", (dir / seed.name).c_str(), seed.bytes.size());
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <seed dir, e.g. tests/fuzz/seeds>\n", argv[0]);
    return 1;
  }
  if (!ubcp::common::InitCrypto()) {
    std::fprintf(stderr, "cannot initialise libsodium\n");
    return 1;
  }
  auto journal = ubcp::fuzz::UnitJournalSeeds();
  if (!journal) {
    std::fprintf(stderr, "%s\n", journal.error().ToString().c_str());
    return 1;
  }
  const fs::path root = argv[1];
  const std::pair<const char*, std::vector<ubcp::fuzz::Seed>> targets[] = {
      {"tensor_blob", ubcp::fuzz::TensorBlobSeeds()},
      {"train_checkpoint", ubcp::fuzz::CheckpointSeeds()},
      {"worker_protocol", ubcp::fuzz::WorkerProtocolSeeds()},
      {"unit_journal", std::move(*journal)}};
  for (const auto& [target, seeds] : targets) {
    if (!WriteSeeds(root / target, seeds)) return 1;
  }
  return 0;
}
