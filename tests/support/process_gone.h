// SPDX-License-Identifier: Apache-2.0
#pragma once
// Test helper: whether a process no longer runs.

#include <sys/types.h>

#include <fstream>
#include <string>

namespace ubcp::testing {

// Whether `pid` no longer runs: absent, or a zombie that its (new) parent has not reaped.
inline bool ProcessGone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

}  // namespace ubcp::testing
