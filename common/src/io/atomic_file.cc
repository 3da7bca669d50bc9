// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/atomic_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace ubcp::common {
namespace {

Error IoError(const std::string& what, int error_number) {
  return MakeError(Errc::kIo, what + ": " + std::strerror(error_number));
}

}  // namespace

Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                           unsigned mode) {
  unsigned char suffix[8];
  randombytes_buf(suffix, sizeof(suffix));
  std::string tmp = path.string() + ".tmp.";
  for (unsigned char b : suffix) tmp += "0123456789abcdef"[b & 0xf];

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return IoError("create " + tmp, errno);
  auto fail = [&](const std::string& what) {
    int saved = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return IoError(what, saved);
  };
  // The umask may only have removed bits; fchmod makes the mode exact either way.
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) return fail("chmod " + tmp);
  std::size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write " + tmp);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync " + tmp);
  if (::close(fd) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    return IoError("close " + tmp, saved);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    return IoError("rename " + tmp + " to " + path.string(), saved);
  }
  const std::filesystem::path dir = path.parent_path();
  int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return {};
}

Result<std::optional<std::string>> ReadFileAtMost(const std::filesystem::path& path,
                                                  std::size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) return std::optional<std::string>();
  if (ec) return MakeError(Errc::kIo, "cannot stat " + path.string() + ": " + ec.message());
  if (!fs::is_regular_file(status)) {
    return MakeError(Errc::kIo, path.string() + " is not a regular file");
  }
  const auto size = fs::file_size(path, ec);
  if (ec) return MakeError(Errc::kIo, "cannot stat " + path.string() + ": " + ec.message());
  if (size > max_bytes) return MakeError(Errc::kTooLarge, path.string() + " is too large");
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(Errc::kIo, "cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) return MakeError(Errc::kIo, "cannot read " + path.string());
  std::string text = ss.str();
  if (text.size() > max_bytes) return MakeError(Errc::kTooLarge, path.string() + " is too large");
  return std::optional<std::string>(std::move(text));
}

Result<std::string> ReadFileUpTo(const std::filesystem::path& path, std::size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("open " + path.string(), errno);
  std::string content;
  char buffer[4096];
  while (content.size() < max_bytes) {
    const ssize_t n = ::read(fd, buffer, std::min(sizeof(buffer), max_bytes - content.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int read_errno = errno;
      ::close(fd);
      return IoError("read " + path.string(), read_errno);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return content;
}

}  // namespace ubcp::common
