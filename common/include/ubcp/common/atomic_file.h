// SPDX-License-Identifier: Apache-2.0
#pragma once
// Writing a whole file so that a crash never leaves a half-written one: a uniquely named
// temporary file in the same directory (O_EXCL, never through a link), fsync, rename over the
// target, fsync of the directory. The directory must exist.

#include <filesystem>
#include <string_view>

#include "ubcp/common/result.h"

namespace ubcp::common {

// `mode` is applied exactly (fchmod), whatever the umask. kIo on any failure, leaving the target
// as it was and no temporary file behind.
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                           unsigned mode);

}  // namespace ubcp::common
