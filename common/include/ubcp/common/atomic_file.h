// SPDX-License-Identifier: Apache-2.0
#pragma once
// Writing a whole file so that a crash never leaves a half-written one: a uniquely named
// temporary file in the same directory (O_EXCL, never through a link), fsync, rename over the
// target, fsync of the directory. The directory must exist.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ubcp/common/result.h"

namespace ubcp::common {

// `mode` is applied exactly (fchmod), whatever the umask. kIo on any failure, leaving the target
// as it was and no temporary file behind.
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                           unsigned mode);

// The whole file at `path` when it has at most `max_bytes`. nullopt only when nothing exists
// there; anything else that cannot be read (too large: kTooLarge, not a regular file, no
// permission: kIo) is an error, so a damaged file is never mistaken for a missing one.
Result<std::optional<std::string>> ReadFileAtMost(const std::filesystem::path& path,
                                                  std::size_t max_bytes);

// The first `max_bytes` of a file whose size cannot be known beforehand (/proc, /sys report 0):
// read in small pieces until its end or `max_bytes`, whichever comes first; what follows is
// dropped. kIo when it cannot be opened or read.
Result<std::string> ReadFileUpTo(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace ubcp::common
