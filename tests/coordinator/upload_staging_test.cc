// SPDX-License-Identifier: Apache-2.0
// Resumable uploads on disk: chunks in order, the offset conflicts, limits, the hash check at
// the end, separate hosts, expiry and the per-host cap.
#include "ubcp/coordinator/upload_staging.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"
#include "ubcp/common/crypto.h"

namespace ubcp::coordinator {
namespace {

namespace fs = std::filesystem;
using common::Bytes;
using common::ByteSpan;
using common::Errc;

constexpr std::int64_t kHost = 7;
constexpr std::int64_t kOtherHost = 8;

Bytes Pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 31 + i / 7);
  return b;
}

ByteRange RangeOf(std::uint64_t first, std::uint64_t length, std::uint64_t total) {
  return {first, first + length - 1, total};
}

std::vector<fs::path> FilesIn(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    files.push_back(it->path());
  }
  return files;
}

class UploadStagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto blobs = BlobStore::Open(dir_.path() / "blobs");
    ASSERT_TRUE(blobs) << blobs.error().ToString();
    blobs_.emplace(std::move(*blobs));
    Make({});
  }
  void Make(UploadStagingOptions options) {
    staging_.reset();
    staging_.emplace(*blobs_, options);
  }
  UploadStaging& staging() { return *staging_; }

  // Sends `data` from `first` in chunks of `chunk` bytes; returns the last state.
  common::Result<UploadState> SendFrom(std::int64_t host, const Bytes& data, std::size_t first,
                                       std::size_t chunk) {
    const std::string id = common::ContentId(data);
    common::Result<UploadState> state = UploadState{};
    for (std::size_t off = first; off < data.size(); off += chunk) {
      const std::size_t n = std::min(chunk, data.size() - off);
      state =
          staging().Append(host, id, RangeOf(off, n, data.size()), ByteSpan(data).subspan(off, n));
      if (!state) return state;
    }
    return state;
  }

  ubcp::testing::TempDir dir_;
  std::optional<BlobStore> blobs_;
  std::optional<UploadStaging> staging_;
};

TEST_F(UploadStagingTest, ChunksInOrderEndInTheStore) {
  const Bytes data = Pattern(10000, 1);
  const std::string id = common::ContentId(data);
  auto before = staging().Progress(kHost, id);
  ASSERT_TRUE(before) << before.error().ToString();
  EXPECT_EQ(before->received, 0u);
  EXPECT_FALSE(before->complete);
  // Nothing is created before the first chunk.
  EXPECT_FALSE(fs::exists(staging().dir()));

  auto first =
      staging().Append(kHost, id, RangeOf(0, 4000, data.size()), ByteSpan(data).subspan(0, 4000));
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_EQ(first->received, 4000u);
  EXPECT_FALSE(first->complete);
  EXPECT_EQ(staging().Progress(kHost, id)->received, 4000u);
  EXPECT_FALSE(blobs_->Has(id));
  ASSERT_EQ(FilesIn(staging().dir()).size(), 1u);

  auto rest = SendFrom(kHost, data, 4000, 4000);
  ASSERT_TRUE(rest) << rest.error().ToString();
  EXPECT_EQ(rest->received, data.size());
  EXPECT_TRUE(rest->complete);
  auto stored = blobs_->Get(id, data.size());
  ASSERT_TRUE(stored) << stored.error().ToString();
  EXPECT_EQ(*stored, data);
  // The staged file became the blob; the blob's size is now the progress.
  EXPECT_TRUE(FilesIn(staging().dir()).empty());
  auto after = staging().Progress(kHost, id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->received, data.size());
  EXPECT_TRUE(after->complete);
}

TEST_F(UploadStagingTest, ChunkAtAnotherOffsetIsAConflictAndWritesNothing) {
  const Bytes data = Pattern(3000, 2);
  const std::string id = common::ContentId(data);
  ASSERT_TRUE(staging().Append(kHost, id, RangeOf(0, 1000, 3000), ByteSpan(data).subspan(0, 1000)));
  // Ahead of what is staged (a chunk was lost), and a repeat of the chunk already there.
  for (std::uint64_t first : {2000u, 0u, 999u}) {
    auto r = staging().Append(kHost, id, RangeOf(first, 1000, 3000),
                              ByteSpan(data).subspan(first, 1000));
    ASSERT_FALSE(r) << first;
    EXPECT_EQ(r.error().code, Errc::kConflict);
    EXPECT_NE(r.error().message.find("1000 bytes staged"), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(staging().Progress(kHost, id)->received, 1000u);
  auto rest = SendFrom(kHost, data, 1000, 1000);
  ASSERT_TRUE(rest) << rest.error().ToString();
  EXPECT_TRUE(rest->complete);
  EXPECT_EQ(*blobs_->Get(id, 3000), data);
}

TEST_F(UploadStagingTest, TotalOverTheLimitIsRefusedBeforeAnythingIsStaged) {
  Make({.max_blob_bytes = 1000});
  const Bytes data = Pattern(1001, 3);
  auto r = staging().Append(kHost, common::ContentId(data), RangeOf(0, 10, 1001),
                            ByteSpan(data).subspan(0, 10));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
  EXPECT_FALSE(fs::exists(staging().dir()));
  // Exactly at the limit is fine.
  const Bytes fits = Pattern(1000, 3);
  auto ok = SendFrom(kHost, fits, 0, 400);
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_TRUE(ok->complete);
}

TEST_F(UploadStagingTest, BodyOfAnotherLengthThanItsRangeIsRefused) {
  const Bytes data = Pattern(100, 4);
  const std::string id = common::ContentId(data);
  auto r = staging().Append(kHost, id, RangeOf(0, 50, 100), ByteSpan(data).subspan(0, 49));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(staging().Progress(kHost, id)->received, 0u);
}

TEST_F(UploadStagingTest, BytesThatDoNotHashToTheIdAreDroppedAtTheEnd) {
  const Bytes data = Pattern(2000, 5);
  const Bytes other = Pattern(2000, 6);
  const std::string id = common::ContentId(data);
  ASSERT_TRUE(
      staging().Append(kHost, id, RangeOf(0, 1000, 2000), ByteSpan(other).subspan(0, 1000)));
  auto last =
      staging().Append(kHost, id, RangeOf(1000, 1000, 2000), ByteSpan(other).subspan(1000, 1000));
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().code, Errc::kHashMismatch);
  EXPECT_FALSE(blobs_->Has(id));
  EXPECT_TRUE(FilesIn(staging().dir()).empty());
  EXPECT_EQ(staging().Progress(kHost, id)->received, 0u);
  // The next try starts from 0 and succeeds with the right bytes.
  auto retry = SendFrom(kHost, data, 0, 700);
  ASSERT_TRUE(retry) << retry.error().ToString();
  EXPECT_TRUE(retry->complete);
}

TEST_F(UploadStagingTest, EachHostHasItsOwnStaging) {
  const Bytes data = Pattern(3000, 7);
  const std::string id = common::ContentId(data);
  ASSERT_TRUE(staging().Append(kHost, id, RangeOf(0, 1000, 3000), ByteSpan(data).subspan(0, 1000)));
  EXPECT_EQ(staging().Progress(kOtherHost, id)->received, 0u);
  // The other host cannot continue the first one's upload...
  auto foreign = staging().Append(kOtherHost, id, RangeOf(1000, 1000, 3000),
                                  ByteSpan(data).subspan(1000, 1000));
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().code, Errc::kConflict);
  // ...and its own upload does not disturb it.
  ASSERT_TRUE(
      staging().Append(kOtherHost, id, RangeOf(0, 500, 3000), ByteSpan(data).subspan(0, 500)));
  EXPECT_EQ(staging().Progress(kHost, id)->received, 1000u);
  EXPECT_EQ(staging().Progress(kOtherHost, id)->received, 500u);
  EXPECT_EQ(FilesIn(staging().dir()).size(), 2u);

  // Once one of them completes, the other's next chunk completes at once.
  auto done = SendFrom(kHost, data, 1000, 1000);
  ASSERT_TRUE(done && done->complete);
  auto other =
      staging().Append(kOtherHost, id, RangeOf(500, 500, 3000), ByteSpan(data).subspan(500, 500));
  ASSERT_TRUE(other) << other.error().ToString();
  EXPECT_TRUE(other->complete);
  EXPECT_EQ(other->received, 3000u);
  EXPECT_TRUE(FilesIn(staging().dir()).empty());
}

TEST_F(UploadStagingTest, AnExpiredStagingFileIsForgotten) {
  Make({.max_age = std::chrono::hours(24)});
  const Bytes data = Pattern(2000, 8);
  const std::string id = common::ContentId(data);
  ASSERT_TRUE(staging().Append(kHost, id, RangeOf(0, 1000, 2000), ByteSpan(data).subspan(0, 1000)));
  auto files = FilesIn(staging().dir());
  ASSERT_EQ(files.size(), 1u);
  fs::last_write_time(files[0], fs::file_time_type::clock::now() - std::chrono::hours(25));
  EXPECT_EQ(staging().Progress(kHost, id)->received, 0u);
  EXPECT_TRUE(FilesIn(staging().dir()).empty());
}

TEST_F(UploadStagingTest, StartingAnUploadSweepsOtherExpiredFiles) {
  const Bytes abandoned = Pattern(2000, 9);
  const Bytes recent = Pattern(2000, 10);
  ASSERT_TRUE(staging().Append(kOtherHost, common::ContentId(abandoned), RangeOf(0, 10, 2000),
                               ByteSpan(abandoned).subspan(0, 10)));
  ASSERT_TRUE(staging().Append(kOtherHost, common::ContentId(recent), RangeOf(0, 10, 2000),
                               ByteSpan(recent).subspan(0, 10)));
  for (const auto& f : FilesIn(staging().dir())) {
    if (f.filename().string().ends_with(common::ContentId(abandoned))) {
      fs::last_write_time(f, fs::file_time_type::clock::now() - std::chrono::hours(30));
    }
  }
  const Bytes data = Pattern(2000, 11);
  ASSERT_TRUE(staging().Append(kHost, common::ContentId(data), RangeOf(0, 10, 2000),
                               ByteSpan(data).subspan(0, 10)));
  EXPECT_EQ(FilesIn(staging().dir()).size(), 2u);
  EXPECT_EQ(staging().Progress(kOtherHost, common::ContentId(abandoned))->received, 0u);
  EXPECT_EQ(staging().Progress(kOtherHost, common::ContentId(recent))->received, 10u);
}

TEST_F(UploadStagingTest, AHostsOldestUploadMakesRoomForANewOne) {
  Make({.max_files_per_host = 2});
  std::vector<Bytes> blobs;
  for (std::uint8_t i = 0; i < 3; ++i) blobs.push_back(Pattern(100, 20 + i));
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    ASSERT_TRUE(staging().Append(kHost, common::ContentId(blobs[i]), RangeOf(0, 10, 100),
                                 ByteSpan(blobs[i]).subspan(0, 10)));
    // Distinct modification times, oldest first.
    for (const auto& f : FilesIn(staging().dir())) {
      if (f.filename().string().ends_with(common::ContentId(blobs[i]))) {
        fs::last_write_time(f, fs::file_time_type::clock::now() - std::chrono::minutes(10 - i));
      }
    }
  }
  EXPECT_EQ(staging().Progress(kHost, common::ContentId(blobs[0]))->received, 0u);
  EXPECT_EQ(staging().Progress(kHost, common::ContentId(blobs[1]))->received, 10u);
  EXPECT_EQ(staging().Progress(kHost, common::ContentId(blobs[2]))->received, 10u);
  // Another host's uploads do not count against this one.
  ASSERT_TRUE(staging().Append(kOtherHost, common::ContentId(blobs[0]), RangeOf(0, 10, 100),
                               ByteSpan(blobs[0]).subspan(0, 10)));
  EXPECT_EQ(staging().Progress(kHost, common::ContentId(blobs[2]))->received, 10u);
}

TEST_F(UploadStagingTest, MalformedIdsNeverBecomePaths) {
  const Bytes data = Pattern(10, 12);
  for (const std::string& id :
       std::vector<std::string>{"../../etc/passwd", "", std::string(64, 'g'),
                                std::string(63, 'a') + "/", std::string(64, 'A')}) {
    auto p = staging().Progress(kHost, id);
    ASSERT_FALSE(p) << id;
    EXPECT_EQ(p.error().code, Errc::kInvalidArgument);
    auto a = staging().Append(kHost, id, RangeOf(0, 10, 10), data);
    ASSERT_FALSE(a);
    EXPECT_EQ(a.error().code, Errc::kInvalidArgument);
  }
  auto bad_host = staging().Append(0, common::ContentId(data), RangeOf(0, 10, 10), data);
  ASSERT_FALSE(bad_host);
  EXPECT_EQ(bad_host.error().code, Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(staging().dir()));
}

TEST_F(UploadStagingTest, ConcurrentCopiesOfAnUploadDoNotCorruptIt) {
  // Two connections of one host send the same chunks at the same time (a retry racing the
  // original): each chunk lands once, the others are conflicts, the blob is right.
  const Bytes data = Pattern(64 * 1024, 13);
  const std::string id = common::ContentId(data);
  constexpr std::size_t kChunk = 4096;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (std::size_t off = 0; off < data.size(); off += kChunk) {
        auto r = staging().Append(kHost, id, RangeOf(off, kChunk, data.size()),
                                  ByteSpan(data).subspan(off, kChunk));
        if (!r) {
          EXPECT_EQ(r.error().code, Errc::kConflict) << r.error().ToString();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  auto stored = blobs_->Get(id, data.size());
  ASSERT_TRUE(stored) << stored.error().ToString();
  EXPECT_EQ(*stored, data);
}

}  // namespace
}  // namespace ubcp::coordinator
