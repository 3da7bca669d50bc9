// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "ubcp/common/crypto.h"

namespace ubcp::coordinator {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

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
  return {};
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

}  // namespace ubcp::coordinator
