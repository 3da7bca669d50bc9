// SPDX-License-Identifier: Apache-2.0
// HostState: the donor's state directory (key, trusted coordinator key, registration, blob cache).

#include "ubcp/client/host_state.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ubcp/common/crypto.h"

namespace ubcp::client {
namespace {
namespace fs = std::filesystem;
using common::Errc;

// The permission bits of `path` as the kernel reports them (no umask or std::filesystem games).
unsigned ModeOf(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

class HostStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::InitCrypto());
    root_ = fs::temp_directory_path() /
            ("ubcp-host-state-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    dir_ = root_ / "state";
  }
  void TearDown() override { fs::remove_all(root_); }

  HostState OpenState() {
    auto state = HostState::Open(dir_);
    EXPECT_TRUE(state) << state.error().ToString();
    return std::move(*state);
  }

  fs::path root_;
  fs::path dir_;
};

TEST_F(HostStateTest, OpenCreatesAPrivateDirectoryWithABlobCache) {
  HostState state = OpenState();
  EXPECT_EQ(state.dir(), dir_);
  ASSERT_TRUE(fs::is_directory(dir_));
  EXPECT_TRUE(fs::is_directory(dir_ / "blobs"));
  EXPECT_EQ(ModeOf(dir_), 0700u);
}

TEST_F(HostStateTest, OpenTightensAnExistingDirectory) {
  fs::create_directories(dir_);
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  OpenState();
  EXPECT_EQ(ModeOf(dir_), 0700u);
}

TEST_F(HostStateTest, OpenFailsWhenTheDirectoryCannotBeCreated) {
  WriteFile(root_ / "file", "not a directory");
  auto state = HostState::Open(root_ / "file" / "state");
  ASSERT_FALSE(state);
  EXPECT_EQ(state.error().code, Errc::kIo);
}

TEST_F(HostStateTest, KeyIsCreatedOnceWithMode0600AndReloadedIdentical) {
  HostState state = OpenState();
  const fs::path key_file = dir_ / "host.key";
  ASSERT_FALSE(fs::exists(key_file));

  auto first = state.LoadOrCreateKey();
  ASSERT_TRUE(first) << first.error().ToString();
  ASSERT_TRUE(fs::is_regular_file(key_file));
  EXPECT_EQ(ModeOf(key_file), 0600u);
  const std::string content = ReadFile(key_file);

  auto second = state.LoadOrCreateKey();
  ASSERT_TRUE(second) << second.error().ToString();
  EXPECT_EQ(first->public_key(), second->public_key());
  EXPECT_EQ(ReadFile(key_file), content) << "the key file must not be rewritten";

  // A restart (a new HostState on the same directory) signs with the same key.
  HostState reopened = OpenState();
  auto third = reopened.LoadOrCreateKey();
  ASSERT_TRUE(third);
  EXPECT_EQ(first->public_key(), third->public_key());
  const std::string message = "hello";
  const common::Signature sig = third->Sign(common::kDomainResult, common::AsBytes(message));
  EXPECT_TRUE(
      common::Verify(first->public_key(), common::kDomainResult, common::AsBytes(message), sig));
}

TEST_F(HostStateTest, CorruptKeyFileIsAnErrorNotSilentlyReplaced) {
  HostState state = OpenState();
  const fs::path key_file = dir_ / "host.key";
  const std::string garbage = "this is not a key\n";
  WriteFile(key_file, garbage);
  ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);

  auto key = state.LoadOrCreateKey();
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error().code, Errc::kMalformed) << key.error().ToString();
  EXPECT_EQ(ReadFile(key_file), garbage) << "a bad key file must be left for the operator";

  // Still an error on the second try: nothing was replaced behind our back.
  auto again = state.LoadOrCreateKey();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kMalformed);
}

TEST_F(HostStateTest, TruncatedKeyFileIsAnError) {
  HostState state = OpenState();
  ASSERT_TRUE(state.LoadOrCreateKey());
  const fs::path key_file = dir_ / "host.key";
  std::string content = ReadFile(key_file);
  ASSERT_GT(content.size(), 10u);
  content.resize(content.size() - 10);
  WriteFile(key_file, content);
  ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);
  auto key = state.LoadOrCreateKey();
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error().code, Errc::kMalformed) << key.error().ToString();
}

TEST_F(HostStateTest, KeyFileReadableByOthersIsRefused) {
  HostState state = OpenState();
  ASSERT_TRUE(state.LoadOrCreateKey());
  const fs::path key_file = dir_ / "host.key";
  ASSERT_EQ(::chmod(key_file.c_str(), 0644), 0);
  auto key = state.LoadOrCreateKey();
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error().code, Errc::kForbidden) << key.error().ToString();
}

TEST_F(HostStateTest, CoordinatorKeyIsTrustedOnlyOnceStored) {
  HostState state = OpenState();
  auto none = state.TrustedCoordinatorKey();
  ASSERT_TRUE(none) << none.error().ToString();
  EXPECT_FALSE(none->has_value());

  const common::PublicKey key = common::SigningKey::Generate().public_key();
  ASSERT_TRUE(state.TrustCoordinatorKey(key));
  auto trusted = state.TrustedCoordinatorKey();
  ASSERT_TRUE(trusted) << trusted.error().ToString();
  ASSERT_TRUE(trusted->has_value());
  EXPECT_EQ(**trusted, key);

  // Survives a restart.
  HostState reopened = OpenState();
  auto again = reopened.TrustedCoordinatorKey();
  ASSERT_TRUE(again && again->has_value());
  EXPECT_EQ(**again, key);
}

TEST_F(HostStateTest, CorruptCoordinatorKeyIsAnErrorNotAbsent) {
  HostState state = OpenState();
  WriteFile(dir_ / "coordinator.pub", "zz-not-hex\n");
  auto trusted = state.TrustedCoordinatorKey();
  // Treating a damaged pin as "nothing trusted yet" would reopen trust on first use.
  ASSERT_FALSE(trusted);
}

TEST_F(HostStateTest, UnreadableCoordinatorKeyIsAnErrorNotAbsent) {
  HostState state = OpenState();
  // Too large to be a key, or not a file at all: neither means "nothing trusted yet".
  WriteFile(dir_ / "coordinator.pub", std::string(4096, 'a'));
  auto oversized = state.TrustedCoordinatorKey();
  ASSERT_FALSE(oversized) << "an oversized pin file was read as no pin";
  EXPECT_EQ(oversized.error().code, Errc::kTooLarge);
  fs::remove(dir_ / "coordinator.pub");
  fs::create_directory(dir_ / "coordinator.pub");
  auto directory = state.TrustedCoordinatorKey();
  ASSERT_FALSE(directory) << "a directory in place of the pin file was read as no pin";
  EXPECT_EQ(directory.error().code, Errc::kIo);
}

TEST_F(HostStateTest, UnreadableRegistrationIsAnErrorNotAbsent) {
  HostState state = OpenState();
  // Read as "not registered", this would register a second time under the same key.
  WriteFile(dir_ / "registration.json", std::string(8192, ' '));
  auto oversized = state.LoadRegistration();
  ASSERT_FALSE(oversized);
  EXPECT_EQ(oversized.error().code, Errc::kTooLarge);
}

TEST_F(HostStateTest, RegistrationRoundTripsInAPrivateFile) {
  HostState state = OpenState();
  auto none = state.LoadRegistration();
  ASSERT_TRUE(none) << none.error().ToString();
  EXPECT_FALSE(none->has_value());

  const Registration saved{42, common::NewToken()};
  ASSERT_TRUE(state.SaveRegistration(saved));
  const fs::path file = dir_ / "registration.json";
  EXPECT_EQ(ModeOf(file), 0600u);

  auto loaded = OpenState().LoadRegistration();
  ASSERT_TRUE(loaded) << loaded.error().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->host_id, 42);
  EXPECT_EQ((*loaded)->token, saved.token);

  // Saving again replaces it, still 0600, and leaves no temporary file behind.
  ASSERT_TRUE(state.SaveRegistration({7, "other"}));
  EXPECT_EQ(ModeOf(file), 0600u);
  auto replaced = state.LoadRegistration();
  ASSERT_TRUE(replaced && replaced->has_value());
  EXPECT_EQ((*replaced)->host_id, 7);
  EXPECT_EQ((*replaced)->token, "other");
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
}

TEST_F(HostStateTest, MalformedRegistrationIsAnError) {
  HostState state = OpenState();
  for (const std::string bad :
       {"not json", "[]", R"({"host_id":"1","token":"t"})", R"({"host_id":1})", R"({"token":"t"})",
        R"({"host_id":1,"token":5})"}) {
    WriteFile(dir_ / "registration.json", bad);
    auto loaded = state.LoadRegistration();
    ASSERT_FALSE(loaded) << bad;
    EXPECT_EQ(loaded.error().code, Errc::kMalformed) << bad;
  }
}

TEST_F(HostStateTest, BlobPathsAreInsideTheCacheAndOnlyForContentIds) {
  HostState state = OpenState();
  const std::string id = common::ContentId(common::AsBytes("blob bytes for the cache"));
  auto path = state.BlobPath(id);
  ASSERT_TRUE(path) << path.error().ToString();
  EXPECT_EQ(*path, dir_ / "blobs" / id);
  // Ids reach file paths: anything but a content id is refused.
  for (const std::string& bad :
       std::vector<std::string>{"../escape", "", "ABCDEF", std::string(64, 'A'),
                                std::string(63, 'a'), "../" + std::string(61, 'a'), id + "/x"}) {
    auto refused = state.BlobPath(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code, Errc::kMalformed) << bad;
  }
}

TEST_F(HostStateTest, PruningRemovesLeastRecentlyUsedBlobsDownToTheBound) {
  HostState state = OpenState();
  // Five blobs of 1,000 bytes, used in order (the first the longest ago), a partial download
  // and a file that is not a blob.
  std::vector<std::string> ids;
  const auto now = fs::file_time_type::clock::now();
  for (int i = 0; i < 5; ++i) {
    const std::string content(1000, static_cast<char>('a' + i));
    ids.push_back(common::ContentId(common::AsBytes(content)));
    WriteFile(*state.BlobPath(ids.back()), content);
    fs::last_write_time(*state.BlobPath(ids.back()), now - std::chrono::hours(10 - i));
  }
  const std::string partial_id = common::ContentId(common::AsBytes("partial"));
  WriteFile(dir_ / "blobs" / (partial_id + ".part"), std::string(500, 'p'));
  fs::last_write_time(dir_ / "blobs" / (partial_id + ".part"), now - std::chrono::hours(20));
  WriteFile(dir_ / "blobs" / "README", std::string(5000, 'r'));

  // Within the bound: nothing goes.
  EXPECT_EQ(state.PruneBlobs(10'000, {}), 0u);
  // Blob 0 is in use although the oldest blob: the partial download (older still) and blobs
  // 1 and 2 go, leaving 3,000 bytes of blobs.
  EXPECT_EQ(state.PruneBlobs(3'000, {ids[0]}), 2'500u);
  EXPECT_FALSE(fs::exists(dir_ / "blobs" / (partial_id + ".part")));
  EXPECT_TRUE(fs::exists(*state.BlobPath(ids[0])));
  EXPECT_FALSE(fs::exists(*state.BlobPath(ids[1])));
  EXPECT_FALSE(fs::exists(*state.BlobPath(ids[2])));
  EXPECT_TRUE(fs::exists(*state.BlobPath(ids[3])));
  EXPECT_TRUE(fs::exists(*state.BlobPath(ids[4])));
  EXPECT_TRUE(fs::exists(dir_ / "blobs" / "README"));

  // Touching blob 3 makes blob 4 the least recently used.
  state.TouchBlob(ids[3]);
  EXPECT_EQ(state.PruneBlobs(2'000, {ids[0]}), 1'000u);
  EXPECT_TRUE(fs::exists(*state.BlobPath(ids[3])));
  EXPECT_FALSE(fs::exists(*state.BlobPath(ids[4])));
  // Everything in use: over the bound, and nothing removed.
  EXPECT_EQ(state.PruneBlobs(0, {ids[0], ids[3]}), 0u);
  EXPECT_EQ(state.PruneBlobs(0, {}), 2'000u);
}

TEST_F(HostStateTest, WriteFileAtomicallyReplacesContentWithTheGivenMode) {
  const fs::path file = root_ / "f.txt";
  ASSERT_TRUE(WriteFileAtomically(file, "first", 0600));
  EXPECT_EQ(ReadFile(file), "first");
  EXPECT_EQ(ModeOf(file), 0600u);
  ASSERT_TRUE(WriteFileAtomically(file, "second, longer", 0600));
  EXPECT_EQ(ReadFile(file), "second, longer");
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(root_)) ++entries;
  EXPECT_EQ(entries, 1u) << "no temporary file may remain";

  auto missing_dir = WriteFileAtomically(root_ / "no" / "such" / "dir" / "f", "x", 0600);
  ASSERT_FALSE(missing_dir);
  EXPECT_EQ(missing_dir.error().code, Errc::kIo);
}

}  // namespace
}  // namespace ubcp::client
