// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <span>
#include <system_error>

#include "ubcp/common/crypto.h"
#include "ubcp/common/unique_fd.h"

namespace ubcp::coordinator {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

using ScopedFd = common::UniqueFd;

// Reads exactly out.size() bytes at `offset`. kIo on failure or a file shorter than that.
common::Status PreadFully(int fd, std::uint64_t offset, std::span<std::uint8_t> out,
                          const std::string& what) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return MakeError(Errc::kIo, "read " + what + ": " + std::strerror(errno));
    if (n == 0) return MakeError(Errc::kIo, "read " + what + ": file ended early");
    done += static_cast<std::size_t>(n);
  }
  return {};
}

// After a rename, the directory entry itself must reach the disk for the blob to survive a
// power loss.
common::Status FsyncDirectory(const fs::path& dir) {
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    return MakeError(Errc::kIo, "fsync " + dir.string() + ": " + std::strerror(errno));
  }
  return {};
}

common::Status WriteFileDurably(const fs::path& path, common::ByteSpan bytes) {
  static std::atomic<unsigned> counter{0};
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return MakeError(Errc::kIo, "open " + tmp.string() + ": " + std::strerror(errno));
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return MakeError(Errc::kIo, "write " + tmp.string() + ": " + std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  // fsync before rename: an id that was acknowledged must never point at a torn file.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return MakeError(Errc::kIo, "fsync " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return MakeError(Errc::kIo, "rename to " + path.string());
  }
  return FsyncDirectory(path.parent_path());
}

}  // namespace

common::Result<BlobStore> BlobStore::Open(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return MakeError(Errc::kIo, "create blob store " + root.string() + ": " + ec.message());
  return BlobStore(root);
}

fs::path BlobStore::PathOf(const std::string& id) const { return root_ / id.substr(0, 2) / id; }

common::Result<std::string> BlobStore::Put(common::ByteSpan bytes) const {
  std::string id = common::ContentId(bytes);
  UBCP_RETURN_IF_ERROR(PutExpected(id, bytes));
  return id;
}

common::Status BlobStore::PutExpected(const std::string& expected_id,
                                      common::ByteSpan bytes) const {
  if (!common::IsContentId(expected_id)) {
    return MakeError(Errc::kInvalidArgument, "malformed blob id");
  }
  if (common::ContentId(bytes) != expected_id) {
    return MakeError(Errc::kHashMismatch, "blob content does not match id " + expected_id);
  }
  fs::path path = PathOf(expected_id);
  std::error_code ec;
  if (fs::exists(path, ec)) return {};
  fs::create_directories(path.parent_path(), ec);
  if (ec) return MakeError(Errc::kIo, "create " + path.parent_path().string());
  return WriteFileDurably(path, bytes);
}

common::Result<common::Bytes> BlobStore::Get(const std::string& id, std::size_t max_bytes) const {
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "malformed blob id");
  fs::path path = PathOf(id);
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) return MakeError(Errc::kNotFound, "no blob " + id);
  if (size > max_bytes) return MakeError(Errc::kTooLarge, "blob " + id + " is too large");
  std::ifstream in(path, std::ios::binary);
  common::Bytes bytes(size);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
    return MakeError(Errc::kIo, "read blob " + id);
  }
  if (common::ContentId(bytes) != id) {
    return MakeError(Errc::kHashMismatch, "stored blob " + id + " is corrupt");
  }
  return bytes;
}

bool BlobStore::Has(const std::string& id) const {
  std::error_code ec;
  return common::IsContentId(id) && fs::exists(PathOf(id), ec);
}

common::Result<std::uint64_t> BlobStore::Size(const std::string& id) const {
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "malformed blob id");
  std::error_code ec;
  auto size = fs::file_size(PathOf(id), ec);
  if (ec) return MakeError(Errc::kNotFound, "no blob " + id);
  return static_cast<std::uint64_t>(size);
}

common::Result<common::Bytes> BlobStore::GetRange(const std::string& id, std::uint64_t offset,
                                                  std::size_t max_len) const {
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "malformed blob id");
  ScopedFd fd(::open(PathOf(id).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT) return MakeError(Errc::kNotFound, "no blob " + id);
    return MakeError(Errc::kIo, "open blob " + id + ": " + std::strerror(errno));
  }
  // The size of the file that is read, not of whatever the path named a moment before.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return MakeError(Errc::kIo, "stat blob " + id);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (offset > size) return MakeError(Errc::kInvalidArgument, "offset past the end of " + id);
  common::Bytes bytes(static_cast<std::size_t>(std::min<std::uint64_t>(size - offset, max_len)));
  UBCP_RETURN_IF_ERROR(PreadFully(fd.get(), offset, bytes, "blob " + id));
  return bytes;
}

common::Status BlobStore::AdoptFile(const std::string& expected_id, const fs::path& source,
                                    std::size_t max_bytes) const {
  if (!common::IsContentId(expected_id)) {
    return MakeError(Errc::kInvalidArgument, "malformed blob id");
  }
  ScopedFd fd(::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return MakeError(Errc::kIo, "open " + source.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return MakeError(Errc::kIo, "stat " + source.string());
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return MakeError(Errc::kTooLarge, "staged blob " + expected_id + " is too large");
  }
  common::Bytes bytes(static_cast<std::size_t>(st.st_size));
  UBCP_RETURN_IF_ERROR(PreadFully(fd.get(), 0, bytes, source.string()));
  if (common::ContentId(bytes) != expected_id) {
    return MakeError(Errc::kHashMismatch, "blob content does not match id " + expected_id);
  }
  const fs::path path = PathOf(expected_id);
  std::error_code ec;
  if (fs::exists(path, ec)) {
    fs::remove(source, ec);
    return {};
  }
  // The checked bytes are the ones renamed: nobody else writes the source (its owner holds the
  // lock of its staging area), and the content must be on disk before the id points at it.
  if (::fsync(fd.get()) != 0) return MakeError(Errc::kIo, "fsync " + source.string());
  fs::create_directories(path.parent_path(), ec);
  if (ec) return MakeError(Errc::kIo, "create " + path.parent_path().string());
  fs::rename(source, path, ec);
  if (ec) return MakeError(Errc::kIo, "rename to " + path.string() + ": " + ec.message());
  return FsyncDirectory(path.parent_path());
}

}  // namespace ubcp::coordinator
