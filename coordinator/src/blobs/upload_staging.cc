// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/upload_staging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#include "ubcp/common/crypto.h"

namespace ubcp::coordinator {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

std::string HostPrefix(std::int64_t host_id) { return std::to_string(host_id) + "-"; }

bool IsExpired(const fs::path& path, std::chrono::seconds max_age) {
  std::error_code ec;
  auto written = fs::last_write_time(path, ec);
  return !ec && written < fs::file_time_type::clock::now() - max_age;
}

// Writes all of `bytes` at the end of the file, then syncs its data: a 202 acknowledges bytes
// that survive a crash, so a resumed upload never builds on a torn chunk.
common::Status AppendDurably(const fs::path& path, std::uint64_t expected_size,
                             common::ByteSpan bytes) {
  // O_NOFOLLOW: the staging directory is ours, but a planted link must never be written through.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(Errc::kIo, "open " + path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) != expected_size) {
    ::close(fd);
    return MakeError(Errc::kIo, "staging file " + path.string() + " changed under us");
  }
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      // Back to the acknowledged size, so that the client's retry of this chunk fits again.
      (void)::ftruncate(fd, static_cast<off_t>(expected_size));
      ::close(fd);
      return MakeError(Errc::kIo, "write " + path.string() + ": " + std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fdatasync(fd) != 0) {
    (void)::ftruncate(fd, static_cast<off_t>(expected_size));
    ::close(fd);
    return MakeError(Errc::kIo, "fdatasync " + path.string());
  }
  if (::close(fd) != 0) return MakeError(Errc::kIo, "close " + path.string());
  return {};
}

}  // namespace

UploadStaging::UploadStaging(const BlobStore& blobs, UploadStagingOptions options)
    : blobs_(blobs), options_(options), dir_(blobs.root() / "staging") {}

common::Result<fs::path> UploadStaging::PathOf(std::int64_t host_id, const std::string& id) const {
  // Both parts are checked before they become a file name: digits, a dash and 64 hex digits.
  if (host_id <= 0) return MakeError(Errc::kInvalidArgument, "bad host id");
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "malformed blob id");
  return dir_ / (HostPrefix(host_id) + id);
}

common::Result<std::uint64_t> UploadStaging::StagedSize(const fs::path& path) {
  std::error_code ec;
  auto status = fs::symlink_status(path, ec);
  if (ec || status.type() == fs::file_type::not_found) return std::uint64_t{0};
  if (status.type() != fs::file_type::regular || IsExpired(path, options_.max_age)) {
    fs::remove(path, ec);
    if (ec) return MakeError(Errc::kIo, "remove " + path.string() + ": " + ec.message());
    return std::uint64_t{0};
  }
  auto size = fs::file_size(path, ec);
  if (ec) return MakeError(Errc::kIo, "stat " + path.string() + ": " + ec.message());
  return static_cast<std::uint64_t>(size);
}

common::Result<UploadState> UploadStaging::Progress(std::int64_t host_id, const std::string& id) {
  UBCP_ASSIGN_OR_RETURN(fs::path path, PathOf(host_id, id));
  std::lock_guard lock(mu_);
  if (auto size = blobs_.Size(id)) return UploadState{*size, true};
  UBCP_ASSIGN_OR_RETURN(std::uint64_t staged, StagedSize(path));
  return UploadState{staged, false};
}

common::Result<UploadState> UploadStaging::Append(std::int64_t host_id, const std::string& id,
                                                  const ByteRange& range, common::ByteSpan chunk) {
  UBCP_ASSIGN_OR_RETURN(fs::path path, PathOf(host_id, id));
  if (range.first > range.last || range.last >= range.total || chunk.size() != range.length()) {
    return MakeError(Errc::kInvalidArgument, "the body does not have the length of its range");
  }
  if (range.total > options_.max_blob_bytes) {
    return MakeError(Errc::kTooLarge, "upload of " + std::to_string(range.total) +
                                          " bytes is over the limit of " +
                                          std::to_string(options_.max_blob_bytes));
  }
  std::lock_guard lock(mu_);
  std::error_code ec;
  if (auto size = blobs_.Size(id)) {
    // Someone (this host before a lost answer, or another host) already stored it.
    fs::remove(path, ec);
    return UploadState{*size, true};
  }
  UBCP_ASSIGN_OR_RETURN(std::uint64_t staged, StagedSize(path));
  if (range.first != staged) {
    return MakeError(Errc::kConflict, "upload of " + id + " has " + std::to_string(staged) +
                                          " bytes staged; the chunk starts at " +
                                          std::to_string(range.first));
  }
  if (staged == 0) {
    RemoveExpiredLocked();
    MakeRoomFor(host_id);
    fs::create_directories(dir_, ec);
    if (ec) return MakeError(Errc::kIo, "create " + dir_.string() + ": " + ec.message());
  }
  UBCP_RETURN_IF_ERROR(AppendDurably(path, staged, chunk));
  const std::uint64_t received = staged + chunk.size();
  if (received < range.total) return UploadState{received, false};

  auto adopted = blobs_.AdoptFile(id, path, options_.max_blob_bytes);
  if (!adopted) {
    if (adopted.error().code == Errc::kHashMismatch) {
      fs::remove(path, ec);
    } else {
      // Not the client's fault: drop the last chunk so that its retry commits again.
      fs::resize_file(path, staged, ec);
    }
    return adopted.error();
  }
  return UploadState{received, true};
}

void UploadStaging::MakeRoomFor(std::int64_t host_id) {
  const std::string prefix = HostPrefix(host_id);
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    std::error_code time_ec;
    auto written = fs::last_write_time(it->path(), time_ec);
    if (!time_ec) files.emplace_back(written, it->path());
  }
  if (files.size() < options_.max_files_per_host) return;
  std::sort(files.begin(), files.end());
  const std::size_t excess = files.size() - options_.max_files_per_host + 1;
  for (std::size_t i = 0; i < excess && i < files.size(); ++i) fs::remove(files[i].second, ec);
}

void UploadStaging::RemoveExpired() {
  std::lock_guard lock(mu_);
  RemoveExpiredLocked();
}

void UploadStaging::RemoveExpiredLocked() {
  std::error_code ec;
  std::vector<fs::path> expired;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    if (IsExpired(it->path(), options_.max_age)) expired.push_back(it->path());
  }
  for (const auto& path : expired) fs::remove(path, ec);
}

}  // namespace ubcp::coordinator
