// SPDX-License-Identifier: Apache-2.0
#pragma once
// Headless control of a running donor client: `ubcp-client status|pause|resume|finish` talk to
// the running client over a Unix stream socket, <state dir>/control.sock, that only the owner
// (and root) can use. One request line (a command word) gets one JSON answer line.
//
// Three parts, each with one job:
//   ControlState       what the work loop publishes and what the commands change; thread-safe
//   HandleControlLine  request line -> JSON answer (pure apart from the state; no sockets)
//   ControlServer      owns the socket, its thread and the per-connection limits
// plus the client side, SendControl, and FormatStatus for the human summary.

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "ubcp/common/result.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

// The socket's name inside the state directory.
inline constexpr char kControlSocketName[] = "control.sock";
std::filesystem::path ControlSocketPath(const std::filesystem::path& state_dir);

// A copy of ControlState at one instant.
struct ControlSnapshot {
  bool paused = false;
  bool finish_requested = false;
  bool in_unit = false;  // the fields below describe a unit only while in_unit
  std::int64_t unit_id = 0;
  std::string kind;
  std::int64_t job_id = 0;
  std::int64_t round = 0;
  std::string phase;  // "fetching", "executing", "uploading"
  std::int64_t steps_done = 0;
  std::int64_t steps_total = 0;
  double elapsed_s = 0;    // since the unit began
  double predicted_s = 0;  // expected duration of its execution from earlier units; 0: unknown
  int units_done = 0;      // completed (result acknowledged) in this run
  // Why the loop leases nothing now although it is neither paused nor finishing: the donor's
  // run policy (run_policy.h), e.g. "on battery". Empty while it may work.
  std::string waiting;
  // What the donor's settings allowed at the last decision (0: no decision yet, e.g. a loop
  // without donor settings). The memory figure is shown, not enforced (docs/DONOR.md).
  int allowed_threads = 0;
  std::uint64_t allowed_memory_mb = 0;
  std::string last_error;
  std::optional<common::Contribution> contribution;  // the coordinator's last answer
  double contribution_age_s = 0;                     // how old that answer is
};

// Seconds left in the current unit's execution: from the time per step measured so far once a
// step is done, else from the prediction minus the time spent; nullopt when neither is known.
std::optional<double> EstimateRemainingSeconds(const ControlSnapshot& s);

// Shared by the work loop (writer of the unit fields) and the control server (reader, writer of
// the flags). Every method takes one mutex; none blocks on anything else.
class ControlState {
 public:
  using Clock = std::chrono::steady_clock;

  void SetPaused(bool paused);
  bool paused() const;
  // Asks the loop to stop after the current unit (at once when idle). Not undone by resume.
  void RequestFinish();
  bool finish_requested() const;

  void BeginUnit(std::int64_t unit_id, std::string kind, std::int64_t job_id, std::int64_t round,
                 std::int64_t steps_total, double predicted_s);
  void SetPhase(std::string phase);
  void SetProgress(std::int64_t steps_done, std::int64_t steps_total);
  // Clears the current unit; `completed` counts it in units_done.
  void EndUnit(bool completed);
  // `reason` empty: the loop may lease again.
  void SetWaiting(std::string reason);
  void SetAllowance(int threads, std::uint64_t memory_mb);
  void SetLastError(std::string error);
  void SetContribution(const common::Contribution& contribution);

  ControlSnapshot Snapshot() const;

 private:
  mutable std::mutex mu_;
  ControlSnapshot s_;
  Clock::time_point unit_started_{};
  Clock::time_point contribution_at_{};
};

// The command set: "status", "pause", "resume", "finish" (surrounding blanks ignored). Answers
// {"ok":true,...} or {"ok":false,"error":"..."}; never throws.
boost::json::object HandleControlLine(std::string_view line, ControlState& state);

struct ControlServerOptions {
  std::size_t max_line = 4096;  // longer requests are refused
  std::chrono::milliseconds read_timeout{2000};
  std::size_t max_connections = 16;  // open at once; more are answered "busy" and closed
};

// Serves HandleControlLine on a Unix socket from its own thread until destroyed.
class ControlServer {
 public:
  // Creates the socket's directory (0700) if needed and refuses one owned by another user or
  // open to group or others; replaces a stale socket (one nobody answers on) but never another
  // kind of file (kConflict), nor a live socket (kConflict: another client is running). The
  // socket file is 0600. `state` must outlive the server.
  static common::Result<std::unique_ptr<ControlServer>> Start(const std::filesystem::path& path,
                                                              ControlState& state,
                                                              ControlServerOptions options = {});
  // Stops the thread, closes every connection and removes the socket file.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Connections refused because the peer was another user (for tests and logs).
  int refused_peers() const;

 private:
  ControlServer(std::filesystem::path path, ControlState& state, ControlServerOptions options,
                int listen_fd, int wake_read, int wake_write);
  void Serve();

  std::filesystem::path path_;
  ControlState& state_;
  ControlServerOptions options_;
  int listen_fd_;
  int wake_read_;
  int wake_write_;
  mutable std::mutex mu_;
  int refused_peers_ = 0;
  std::thread thread_;
};

// Sends one command to the client listening at `path` and returns its answer object.
// kUnavailable when nobody listens there (no socket, or refused); kNetwork on a timeout or a
// broken answer; kMalformed when the answer is not a JSON object.
common::Result<boost::json::object> SendControl(
    const std::filesystem::path& path, std::string_view command,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

// The human summary of a status answer, e.g.
//   running: [#######.....] 58% unit 12 finetune_shard job 3 round 1, ETA 0:42
// or, while the run policy holds the loop back, "waiting: on battery"; then
//   units done this run: 4
//   allowed: 4 threads, 2048 MiB memory          (once donor settings decided)
//   contribution: 17 units, 420 credits validated, 60 this period, 12.5 credits/day
std::string FormatStatus(const boost::json::object& status);
// "[#######.....]" with `width` cells for done/total (empty when total <= 0).
std::string ProgressBar(std::int64_t done, std::int64_t total, int width = 12);
// "m:ss" or "h:mm:ss".
std::string FormatDuration(double seconds);

}  // namespace ubcp::client
