// SPDX-License-Identifier: Apache-2.0
#pragma once
// Whether the donor may work now, and with how many threads: a pure decision from the donor's
// settings, a snapshot of the machine and today's transfers (no I/O, deterministic).

#include <chrono>
#include <cstdint>
#include <string>

#include "ubcp/client/donor_settings.h"
#include "ubcp/client/system_probe.h"
#include "ubcp/client/transfer_usage.h"

namespace ubcp::client {

struct RunDecision {
  bool run = false;
  // Why not (the first reason that applies, in the order: battery, time window, user active,
  // download limit, upload limit); "ok" when run.
  std::string reason;
  unsigned threads = 1;         // min(max_cores, cpu_share% of the usable CPUs rounded down), >= 1
  std::uint64_t memory_mb = 0;  // min(memory_limit_mb when set, memory available)
};

// `today` is the usage recorded so far; usage of another local day than `now`'s counts as zero.
RunDecision Decide(const DonorSettings& settings, const SystemState& state,
                   std::chrono::system_clock::time_point now, const TransferUsage& today);

}  // namespace ubcp::client
