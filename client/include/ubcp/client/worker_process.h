// SPDX-License-Identifier: Apache-2.0
#pragma once
// One work unit's worker process, started and supervised by the donor daemon (issue #5): lower
// CPU and IO priority, its own process group, killed when the daemon dies, its standard output
// read line by line, a resident-memory cap, and a clean stop on pause (SIGTERM, a grace period,
// then SIGKILL). A worker may also take requests on its standard input and answer each with a
// last line, so that one process serves unit after unit (WorkerSpec::requests_on_stdin,
// WorkerProcess::Send, SuperviseHooks::is_answer). Linux only; no libtorch. How a unit runs:
// docs/DONOR.md.
//
// Requirements on the daemon: it must not ignore SIGCHLD nor reap children it did not start
// (waitpid(-1, ...)), or the worker's exit status is lost. PR_SET_PDEATHSIG fires when the
// *thread* that called Start ends, so Start and Supervise are called from one thread that
// outlives the worker (the runner's thread), never from a short-lived one.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::client {

struct WorkerSpec {
  // argv[0] is the program's path, executed as is (execve: no PATH search).
  std::vector<std::string> argv;
  // "NAME=value" entries added to the daemon's environment (replacing a variable of the same
  // name), e.g. OMP_NUM_THREADS=<the donor's thread limit>.
  std::vector<std::string> env_extra;
  // The worker's nice value (absolute, -20..19). Raising it needs no privilege; a value below
  // the daemon's own fails Start unless the daemon may lower niceness.
  int nice = 19;
  // Put the worker in the idle IO class (ioprio_set, IOPRIO_CLASS_IDLE): it gets disk time only
  // when no one else wants it. Best effort: containers and some kernels refuse it, which is
  // reported by WorkerProcess::idle_io_error() and does not fail Start.
  bool idle_io = true;
  // Resident memory (VmRSS summed over the worker's process group) above which Supervise kills
  // the worker; 0 = no cap. Not RLIMIT_AS: libtorch and OpenMP reserve large virtual ranges
  // that are never touched, so an address-space limit fails good units.
  std::uint64_t memory_limit_bytes = 0;
  // The worker's standard error, opened for appending (created 0600); empty = the daemon's.
  std::filesystem::path stderr_file;
  // The worker's standard input is a socket the daemon writes requests to (WorkerProcess::Send);
  // false: /dev/null.
  bool requests_on_stdin = false;
};

// How a supervised worker ended.
enum class WorkerEnd {
  kExited,            // exited by itself with exit_code
  kSignaled,          // killed by term_signal, not by the supervisor
  kStoppedOnRequest,  // should_stop() said so: SIGTERM, then SIGKILL after the grace
  kOverMemoryCap,     // its resident memory went above WorkerSpec::memory_limit_bytes: SIGKILL
  kAnswered,          // SuperviseHooks::is_answer accepted a line: the worker is still running
};
std::string_view WorkerEndName(WorkerEnd end);

struct WorkerExit {
  WorkerEnd end = WorkerEnd::kExited;
  int exit_code = -1;               // the status passed to exit(), or -1 when a signal ended it
  int term_signal = 0;              // the signal that ended it, or 0 when it exited
  bool killed_after_grace = false;  // kStoppedOnRequest: SIGTERM was not enough, SIGKILL sent
  // The highest resident memory seen: the largest sum over the process group among the samples,
  // or the leader's own peak (getrusage's ru_maxrss) when higher.
  std::uint64_t peak_rss_bytes = 0;
  std::size_t lines_cut = 0;  // lines longer than SuperviseHooks::max_line_bytes
};
// "exited with code 3", "stopped on request (killed after the grace)", ...
std::string DescribeWorkerExit(const WorkerExit& exit);

struct SuperviseHooks {
  // Each line of the worker's standard output, without its '\n', in order; a line longer than
  // max_line_bytes is cut to that length and the rest of it dropped. A last line without '\n'
  // is delivered at the end. May be empty.
  std::function<void(std::string_view line)> on_line;
  // Polled every stop_poll while the worker runs; true once = stop it (pause). May be empty.
  std::function<bool()> should_stop;
  std::chrono::milliseconds grace{10'000};   // from SIGTERM to SIGKILL
  std::chrono::milliseconds stop_poll{100};  // how often should_stop() is asked
  // How often resident memory is sampled (also without a cap: the peak is reported). Every 5th
  // sample rescans /proc for the group's members (about 1 ms per 100 processes); the others
  // read only the members already found.
  std::chrono::milliseconds memory_poll{200};
  std::size_t max_line_bytes = std::size_t{64} << 10;
  // Asked after each line is delivered to on_line: true = that line ends the answer to the
  // request sent last, and Supervise returns kAnswered, leaving the worker running (what it
  // wrote after that line is kept for the next Supervise). Empty: supervise until it exits.
  std::function<bool(std::string_view line)> is_answer;
};

// A started worker: owns the child process, its process group and the read end of its stdout.
// Move-only; not thread-safe (one thread starts, supervises and destroys it). Destroying a
// worker that was not supervised to the end kills its process group (SIGKILL) and reaps it.
class WorkerProcess {
 public:
  // Forks and executes spec.argv in a child that has, before execve: its own process group,
  // PR_SET_PDEATHSIG = SIGKILL (and exits at once if the daemon already died), spec.nice, the
  // idle IO class (best effort), default signal dispositions and an empty signal mask, stdin
  // from /dev/null, stdout into a pipe read by Supervise, stderr inherited or spec.stderr_file,
  // and no other file descriptor. Errors: kInvalidArgument (empty argv, bad env entry, nice out
  // of range); kNotFound (no such program), kForbidden (not executable, or nice refused), kIo
  // (pipe, fork, /dev/null, stderr_file) — each failure inside the child is reported through a
  // close-on-exec pipe, so a failed execve is an error here, not a child exiting 127.
  static common::Result<WorkerProcess> Start(const WorkerSpec& spec);

  WorkerProcess(WorkerProcess&& other) noexcept;
  WorkerProcess& operator=(WorkerProcess&& other) noexcept;
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess();

  pid_t pid() const { return pid_; }  // also the process group id
  // Whether the idle IO class was applied; when requested and refused, why ("ioprio_set: ...").
  bool idle_io_applied() const { return idle_io_applied_; }
  const std::string& idle_io_error() const { return idle_io_error_; }

  // Runs until the worker exits, delivering its output and enforcing the memory cap and the
  // stop request (see SuperviseHooks); then kills what is left of its process group and reaps
  // it. With hooks.is_answer it returns earlier, kAnswered, once the answer's last line came;
  // peak_rss_bytes then covers this call only. Blocks the calling thread. kConflict when already
  // supervised to the end; kInternal when the worker cannot be waited for (someone else reaped
  // it).
  common::Result<WorkerExit> Supervise(const SuperviseHooks& hooks);

  // Writes `line` and a '\n' to the worker's standard input (WorkerSpec::requests_on_stdin).
  // kInvalidArgument for a line holding '\n'; kConflict without an input or after the end;
  // kUnavailable when the worker no longer reads (it exited or closed its input).
  common::Status Send(std::string_view line);
  // Whether the worker is still to be supervised to its end (false once Supervise saw it exit).
  bool running() const { return pid_ > 0; }
  // Whether the worker process has exited (it stays a zombie until Supervise reaps it).
  bool HasExited() const;

 private:
  WorkerProcess(pid_t pid, int stdout_fd, std::uint64_t memory_limit_bytes);
  void KillAndReap() noexcept;

  pid_t pid_ = -1;  // -1: reaped, or moved from
  int stdout_fd_ = -1;
  int stdin_fd_ = -1;   // the daemon's end of the request socket, or -1
  std::string unread_;  // output after an answer's last line, for the next Supervise
  std::uint64_t memory_limit_bytes_ = 0;
  bool idle_io_applied_ = false;
  std::string idle_io_error_;
};

// ---- Resident memory, exposed for tests and status displays -------------------------------

// VmRSS of a /proc/<pid>/status text, in bytes; kMalformed when absent (a zombie has none).
common::Result<std::uint64_t> ParseVmRssBytes(std::string_view status);
// The process group id (5th field) of a /proc/<pid>/stat text, whose 2nd field (comm) may hold
// spaces and parentheses; kMalformed when it cannot be parsed.
common::Result<pid_t> ParseStatProcessGroup(std::string_view stat);
// The sum of VmRSS over the processes of group `pgid` found under `proc` (normally /proc).
// Processes that vanish while being read are skipped; kIo when `proc` cannot be listed.
common::Result<std::uint64_t> GroupResidentBytes(pid_t pgid,
                                                 const std::filesystem::path& proc = "/proc");

}  // namespace ubcp::client
