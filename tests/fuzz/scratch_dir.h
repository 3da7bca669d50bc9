// SPDX-License-Identifier: Apache-2.0
#pragma once
// A fresh directory, removed with everything in it when this goes out of scope; in /dev/shm
// where there is one (the unit journal syncs every file it writes). path() is empty when it
// could not be created: the fuzz targets and the seed writer report that themselves.

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace ubcp::fuzz {

class ScratchDir {
 public:
  explicit ScratchDir(std::string_view prefix) {
    namespace fs = std::filesystem;
    const fs::path base =
        ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string name = (base / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(name.data()) != nullptr) path_ = name;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ubcp::fuzz
