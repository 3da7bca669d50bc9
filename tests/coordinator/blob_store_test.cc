// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/blob_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"
#include "ubcp/common/crypto.h"

namespace ubcp::coordinator {
namespace {

namespace fs = std::filesystem;
using common::Bytes;
using common::Errc;

using TempDir = ubcp::testing::TempDir;

Bytes BytesOf(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Every regular file under `root`, recursively.
std::vector<fs::path> FilesUnder(const fs::path& root) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  return files;
}

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = BlobStore::Open(dir_.path() / "blobs");
    ASSERT_TRUE(store) << store.error().ToString();
    store_.emplace(std::move(*store));
  }
  BlobStore& store() { return *store_; }
  fs::path FileOf(const std::string& id) const {
    return dir_.path() / "blobs" / id.substr(0, 2) / id;
  }

  TempDir dir_;
  std::optional<BlobStore> store_;
};

TEST_F(BlobStoreTest, OpenCreatesTheRoot) {
  EXPECT_TRUE(fs::is_directory(dir_.path() / "blobs"));
  EXPECT_EQ(store().root(), dir_.path() / "blobs");
}

TEST_F(BlobStoreTest, PutThenGetByContentId) {
  const Bytes data = BytesOf("a model, a shard or an update");
  auto id = store().Put(data);
  ASSERT_TRUE(id) << id.error().ToString();
  EXPECT_EQ(*id, common::ContentId(data));
  EXPECT_TRUE(common::IsContentId(*id));
  EXPECT_TRUE(store().Has(*id));
  // Laid out as documented: <root>/<first two hex chars>/<id>, holding exactly the bytes.
  EXPECT_EQ(ReadFile(FileOf(*id)), data);

  auto got = store().Get(*id, data.size());
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(*got, data);
}

TEST_F(BlobStoreTest, EmptyBlobRoundTrips) {
  auto id = store().Put(Bytes{});
  ASSERT_TRUE(id) << id.error().ToString();
  auto got = store().Get(*id, 0);
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_TRUE(got->empty());
}

TEST_F(BlobStoreTest, PutIsIdempotent) {
  const Bytes data = BytesOf("same content twice");
  auto first = store().Put(data);
  ASSERT_TRUE(first);
  const auto written = fs::last_write_time(FileOf(*first));
  auto second = store().Put(data);
  ASSERT_TRUE(second);
  EXPECT_EQ(*first, *second);
  EXPECT_TRUE(store().PutExpected(*first, data));
  // One file, not rewritten, and no temporary left behind.
  EXPECT_EQ(FilesUnder(store().root()).size(), 1u);
  EXPECT_EQ(fs::last_write_time(FileOf(*first)), written);
  EXPECT_EQ(ReadFile(FileOf(*first)), data);
}

TEST_F(BlobStoreTest, ConcurrentPutsOfTheSameContentAgree) {
  const Bytes data(100000, 0x5a);
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto id = store().Put(data);
      ids[i] = id ? *id : "";
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, common::ContentId(data));
  EXPECT_EQ(FilesUnder(store().root()).size(), 1u);
  auto got = store().Get(ids[0], data.size());
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(*got, data);
}

TEST_F(BlobStoreTest, DistinctContentGetsDistinctIds) {
  auto a = store().Put(BytesOf("a"));
  auto b = store().Put(BytesOf("b"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(*store().Get(*a, 1), BytesOf("a"));
  EXPECT_EQ(*store().Get(*b, 1), BytesOf("b"));
}

TEST_F(BlobStoreTest, PutExpectedRefusesContentThatDoesNotMatchTheId) {
  const Bytes data = BytesOf("claimed");
  const std::string other_id = common::ContentId(BytesOf("something else"));
  auto status = store().PutExpected(other_id, data);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, Errc::kHashMismatch);
  EXPECT_FALSE(store().Has(other_id));
  EXPECT_TRUE(FilesUnder(store().root()).empty());

  const std::string id = common::ContentId(data);
  EXPECT_TRUE(store().PutExpected(id, data));
  EXPECT_TRUE(store().Has(id));
}

TEST_F(BlobStoreTest, GetOfATamperedFileIsRefused) {
  const Bytes data = BytesOf("bytes that a disk will flip");
  auto id = store().Put(data);
  ASSERT_TRUE(id);
  Bytes tampered = data;
  tampered[3] ^= 0x01;
  WriteFile(FileOf(*id), tampered);
  auto got = store().Get(*id, 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::kHashMismatch);
}

TEST_F(BlobStoreTest, GetOfATruncatedFileIsRefused) {
  const Bytes data = BytesOf("a torn write");
  auto id = store().Put(data);
  ASSERT_TRUE(id);
  WriteFile(FileOf(*id), Bytes(data.begin(), data.end() - 1));
  auto got = store().Get(*id, 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::kHashMismatch);
}

TEST_F(BlobStoreTest, GetRespectsMaxBytes) {
  const Bytes data(1000, 7);
  auto id = store().Put(data);
  ASSERT_TRUE(id);
  auto small = store().Get(*id, 999);
  ASSERT_FALSE(small);
  EXPECT_EQ(small.error().code, Errc::kTooLarge);
  EXPECT_TRUE(store().Get(*id, 1000));
}

TEST_F(BlobStoreTest, AbsentBlobIsNotFound) {
  const std::string id = common::ContentId(BytesOf("never stored"));
  EXPECT_FALSE(store().Has(id));
  auto got = store().Get(id, 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::kNotFound);
}

TEST_F(BlobStoreTest, MalformedIdsAreRefusedBeforeTheyBecomePaths) {
  // A file outside the store that a traversing id would reach.
  const Bytes secret = BytesOf("outside the store");
  WriteFile(dir_.path() / "x", secret);
  const std::string hex(64, 'a');
  const std::vector<std::string> bad = {
      "",
      "../x",
      "../../x",
      "/etc/passwd",
      hex.substr(0, 63),
      hex + "a",
      std::string(64, 'A'),         // upper case
      std::string(62, 'a') + "..",  // dots
      "../" + hex.substr(0, 61),    // right length, traversal
      std::string(30, 'a') + "/../" + std::string(30, 'a'),
      std::string(63, 'a') + "g",
      std::string(63, 'a') + '\0',
  };
  for (const std::string& id : bad) {
    SCOPED_TRACE("id '" + id + "'");
    EXPECT_FALSE(store().Has(id));
    auto got = store().Get(id, 1 << 20);
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, Errc::kInvalidArgument);
    auto put = store().PutExpected(id, secret);
    ASSERT_FALSE(put);
    EXPECT_EQ(put.error().code, Errc::kInvalidArgument);
    auto size = store().Size(id);
    ASSERT_FALSE(size);
    EXPECT_EQ(size.error().code, Errc::kInvalidArgument);
    auto range = store().GetRange(id, 0, 1 << 20);
    ASSERT_FALSE(range);
    EXPECT_EQ(range.error().code, Errc::kInvalidArgument);
    auto adopt = store().AdoptFile(id, dir_.path() / "x", 1 << 20);
    ASSERT_FALSE(adopt);
    EXPECT_EQ(adopt.error().code, Errc::kInvalidArgument);
  }
  EXPECT_TRUE(FilesUnder(store().root()).empty());
  EXPECT_EQ(ReadFile(dir_.path() / "x"), secret);
}

TEST_F(BlobStoreTest, SizeAndRangesReadOnlyTheSliceAsked) {
  Bytes data(10000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 3);
  auto id = store().Put(data);
  ASSERT_TRUE(id);
  auto size = store().Size(*id);
  ASSERT_TRUE(size) << size.error().ToString();
  EXPECT_EQ(*size, data.size());

  auto middle = store().GetRange(*id, 1234, 100);
  ASSERT_TRUE(middle) << middle.error().ToString();
  EXPECT_EQ(*middle, Bytes(data.begin() + 1234, data.begin() + 1334));
  // Fewer bytes at the end, none at the very end; past it is an error.
  auto tail = store().GetRange(*id, 9990, 100);
  ASSERT_TRUE(tail);
  EXPECT_EQ(*tail, Bytes(data.end() - 10, data.end()));
  auto end = store().GetRange(*id, 10000, 100);
  ASSERT_TRUE(end);
  EXPECT_TRUE(end->empty());
  auto past = store().GetRange(*id, 10001, 100);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::kInvalidArgument);

  const std::string absent = common::ContentId(BytesOf("never stored"));
  EXPECT_EQ(store().Size(absent).error().code, Errc::kNotFound);
  EXPECT_EQ(store().GetRange(absent, 0, 1).error().code, Errc::kNotFound);
}

TEST_F(BlobStoreTest, RangesDoNotHashButWholeReadsStillCatchCorruption) {
  // The documented trade-off: a slice is served without hashing the whole blob (the receiver
  // checks the assembled blob); a whole read still refuses the damaged file.
  const Bytes data(4096, 0x42);
  auto id = store().Put(data);
  ASSERT_TRUE(id);
  Bytes damaged = data;
  damaged[4000] ^= 0x10;
  WriteFile(FileOf(*id), damaged);
  auto head = store().GetRange(*id, 0, 100);
  ASSERT_TRUE(head) << head.error().ToString();
  EXPECT_EQ(*head, Bytes(data.begin(), data.begin() + 100));
  auto slice = store().GetRange(*id, 3990, 20);
  ASSERT_TRUE(slice);
  EXPECT_EQ(*slice, Bytes(damaged.begin() + 3990, damaged.begin() + 4010));
  EXPECT_NE(common::ContentId(damaged), *id);
  EXPECT_EQ(store().Get(*id, 1 << 20).error().code, Errc::kHashMismatch);
}

TEST_F(BlobStoreTest, AdoptFileMovesMatchingContentIntoTheStore) {
  const Bytes data = BytesOf("an upload staged chunk by chunk");
  const std::string id = common::ContentId(data);
  fs::create_directories(store().root() / "staging");
  const fs::path staged = store().root() / "staging" / "1-x";
  WriteFile(staged, data);
  ASSERT_TRUE(store().AdoptFile(id, staged, data.size()));
  EXPECT_FALSE(fs::exists(staged));
  EXPECT_EQ(ReadFile(FileOf(id)), data);
  EXPECT_EQ(*store().Get(id, data.size()), data);

  // The same content again: already stored, the source is just removed.
  WriteFile(staged, data);
  ASSERT_TRUE(store().AdoptFile(id, staged, data.size()));
  EXPECT_FALSE(fs::exists(staged));
}

TEST_F(BlobStoreTest, AdoptFileRefusesWrongContentAndOversizedFiles) {
  const Bytes data = BytesOf("what the id names");
  const std::string id = common::ContentId(data);
  const fs::path staged = dir_.path() / "staged";
  WriteFile(staged, BytesOf("something else entirely"));
  auto wrong = store().AdoptFile(id, staged, 1 << 20);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, Errc::kHashMismatch);
  EXPECT_TRUE(fs::exists(staged));  // the caller decides what to do with it
  EXPECT_FALSE(store().Has(id));

  WriteFile(staged, data);
  auto big = store().AdoptFile(id, staged, data.size() - 1);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, Errc::kTooLarge);
  EXPECT_FALSE(store().Has(id));
  EXPECT_FALSE(store().AdoptFile(id, dir_.path() / "missing", 1 << 20));
}

TEST(BlobStoreOpenTest, UnusableRootIsAnIoError) {
  TempDir dir;
  const fs::path file = dir.path() / "a-file";
  WriteFile(file, BytesOf("not a directory"));
  auto store = BlobStore::Open(file / "blobs");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::kIo);
}

}  // namespace
}  // namespace ubcp::coordinator
