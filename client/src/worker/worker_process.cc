// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>

#include "ubcp/common/atomic_file.h"
#include "ubcp/common/unique_fd.h"

extern char** environ;

namespace ubcp::client {
namespace {

using common::Errc;
using common::MakeError;
using SteadyClock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// ioprio_set(2): linux/ioprio.h is not in every libc's headers, so the three values are here.
constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassIdle = 3;
constexpr int kIoprioClassShift = 13;

// The longest the supervision loop sleeps, so that an exit is seen even without a pidfd.
constexpr std::chrono::milliseconds kMaxTick{100};
constexpr std::size_t kReadChunk = std::size_t{64} << 10;
constexpr int kMaxReadsPerWake = 16;  // then the stop and memory checks run again
constexpr std::size_t kMaxProcFileBytes = std::size_t{64} << 10;

std::string ErrnoText(int err) { return std::system_category().message(err); }

// ---- What the child reports through its close-on-exec pipe ------------------------------

enum class ChildStep : std::int32_t {
  kIoPriority = 1,  // a warning: the child goes on
  kProcessGroup,
  kDeathSignal,
  kNice,
  kStdio,
  kCloseFds,
  kExec,
};

struct ChildReport {
  ChildStep step;
  std::int32_t err;
};

// Everything the child needs, prepared before fork: after fork the child of a multithreaded
// daemon may only call async-signal-safe functions, so it allocates nothing.
struct ChildPlan {
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  pid_t parent = 0;
  int nice = 19;
  bool idle_io = true;
  int stdin_fd = -1;   // /dev/null, or the worker's end of the request socket
  int stdout_fd = -1;  // the pipe's write end
  int stderr_fd = -1;  // stderr_file, or -1 to inherit
  int report_fd = -1;  // close-on-exec pipe to the parent
};

void Report(int fd, ChildStep step, int err) noexcept {
  ChildReport report{step, err};
  // One write of 8 bytes to a pipe is atomic; if it fails there is no one to tell.
  while (::write(fd, &report, sizeof report) < 0 && errno == EINTR) {
  }
}

[[noreturn]] void Fail(int fd, ChildStep step) noexcept {
  Report(fd, step, errno);
  ::_exit(127);
}

// Closes every descriptor from `first` up. close_range (Linux 5.9) when there is one, else a
// loop bounded by RLIMIT_NOFILE.
bool CloseFrom(int first) noexcept {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, first, ~0U, 0) == 0) return true;
  if (errno != ENOSYS) return false;
#endif
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  const rlim_t end = std::min<rlim_t>(limit.rlim_cur, rlim_t{1} << 20);
  for (rlim_t fd = static_cast<rlim_t>(first); fd < end; ++fd) ::close(static_cast<int>(fd));
  return true;
}

[[noreturn]] void RunChild(const ChildPlan& plan) noexcept {
  int report_fd = plan.report_fd;
  // Own process group first, so that killpg from the parent reaches the child from now on.
  if (::setpgid(0, 0) != 0) Fail(report_fd, ChildStep::kProcessGroup);
  // A SIGKILLed daemon runs no destructor: the kernel kills the worker instead. If the daemon
  // died before prctl, the child was already reparented and must not run unsupervised.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) Fail(report_fd, ChildStep::kDeathSignal);
  if (::getppid() != plan.parent) ::_exit(127);

  // Signal masks and ignored signals survive execve: a daemon that blocks SIGTERM in its
  // threads would otherwise hand the worker a SIGTERM it never sees.
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &default_action, nullptr);
  }

  if (::setpriority(PRIO_PROCESS, 0, plan.nice) != 0) Fail(report_fd, ChildStep::kNice);
  if (plan.idle_io) {
    const int value = kIoprioClassIdle << kIoprioClassShift;
    if (::syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, value) != 0) {
      Report(report_fd, ChildStep::kIoPriority, errno);
    }
  }

  // Every descriptor of the plan is >= 3 (MoveAboveStdio), so these never clobber each other.
  if (::dup2(plan.stdin_fd, STDIN_FILENO) < 0 || ::dup2(plan.stdout_fd, STDOUT_FILENO) < 0 ||
      (plan.stderr_fd >= 0 && ::dup2(plan.stderr_fd, STDERR_FILENO) < 0)) {
    Fail(report_fd, ChildStep::kStdio);
  }
  if (report_fd != 3) {
    if (::dup3(report_fd, 3, O_CLOEXEC) < 0) Fail(report_fd, ChildStep::kCloseFds);
    report_fd = 3;
  }
  if (!CloseFrom(4)) Fail(report_fd, ChildStep::kCloseFds);

  ::execve(plan.argv[0], plan.argv, plan.envp);
  Fail(report_fd, ChildStep::kExec);
}

// ---- Parent-side helpers -----------------------------------------------------------------

using Fd = common::UniqueFd;

// Moves a close-on-exec descriptor to a number >= 3, so that the child's dup2 onto 0..2 cannot
// overwrite it (a daemon started with its standard streams closed gets pipes at 0..2).
common::Result<Fd> MoveAboveStdio(Fd fd, std::string_view what) {
  if (fd.get() > STDERR_FILENO) return fd;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  if (moved < 0) return MakeError(Errc::kIo, std::string(what) + ": " + ErrnoText(errno));
  return Fd(moved);
}

common::Result<std::pair<Fd, Fd>> MakePipe(std::string_view what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return MakeError(Errc::kIo, std::string(what) + " pipe: " + ErrnoText(errno));
  }
  Fd read_end(fds[0]), write_end(fds[1]);
  UBCP_ASSIGN_OR_RETURN(read_end, MoveAboveStdio(std::move(read_end), what));
  UBCP_ASSIGN_OR_RETURN(write_end, MoveAboveStdio(std::move(write_end), what));
  return std::make_pair(std::move(read_end), std::move(write_end));
}

common::Result<Fd> OpenFd(const fs::path& path, int flags, std::string_view what) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(Errc::kIo, std::string(what) + " " + path.string() + ": " + ErrnoText(errno));
  }
  return MoveAboveStdio(Fd(fd), what);
}

// The daemon's environment with spec.env_extra added, replacing variables of the same name.
common::Result<std::vector<std::string>> BuildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string_view> names;
  for (const std::string& entry : extra) {
    const std::size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0 || entry.find('\0') != std::string::npos) {
      return MakeError(Errc::kInvalidArgument, "environment entry is not NAME=value: " + entry);
    }
    names.push_back(std::string_view(entry).substr(0, eq));
  }
  std::vector<std::string> env;
  for (char** it = environ; it != nullptr && *it != nullptr; ++it) {
    const std::string_view entry(*it);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (std::find(names.begin(), names.end(), name) == names.end()) env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> PointerArray(const std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (const std::string& s : strings) pointers.push_back(const_cast<char*>(s.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

common::Error ChildError(const ChildReport& report, const WorkerSpec& spec) {
  const std::string reason = ErrnoText(report.err);
  switch (report.step) {
    case ChildStep::kExec: {
      const Errc code = (report.err == ENOENT || report.err == ENOTDIR) ? Errc::kNotFound
                        : (report.err == EACCES || report.err == EPERM) ? Errc::kForbidden
                                                                        : Errc::kIo;
      return MakeError(code, "cannot execute " + spec.argv[0] + ": " + reason);
    }
    case ChildStep::kNice: {
      const Errc code =
          (report.err == EACCES || report.err == EPERM) ? Errc::kForbidden : Errc::kIo;
      return MakeError(code, "worker cannot set nice " + std::to_string(spec.nice) + ": " + reason);
    }
    case ChildStep::kProcessGroup:
      return MakeError(Errc::kIo, "worker setpgid: " + reason);
    case ChildStep::kDeathSignal:
      return MakeError(Errc::kIo, "worker prctl(PR_SET_PDEATHSIG): " + reason);
    case ChildStep::kStdio:
      return MakeError(Errc::kIo, "worker standard streams: " + reason);
    case ChildStep::kCloseFds:
      return MakeError(Errc::kIo, "worker closing descriptors: " + reason);
    case ChildStep::kIoPriority:
      break;
  }
  return MakeError(Errc::kInternal, "worker reported an unknown step");
}

void ReapBlocking(pid_t pid) {
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// ---- Reading /proc -------------------------------------------------------------------------

std::optional<std::string> ReadProcFile(const fs::path& path) {
  auto content = common::ReadFileUpTo(path, kMaxProcFileBytes);
  if (!content) return std::nullopt;
  return std::move(*content);
}

template <class T>
std::optional<T> ParseNumber(std::string_view s) {
  T value{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

// ---- Output lines ----------------------------------------------------------------------------

// Splits the worker's output into lines of at most max_bytes (longer ones are cut, the rest of
// them dropped up to their '\n'), and stops after a line is_answer accepts.
class LineSplitter {
 public:
  LineSplitter(std::size_t max_bytes, const std::function<void(std::string_view)>& on_line,
               const std::function<bool(std::string_view)>& is_answer)
      : max_bytes_(std::max<std::size_t>(max_bytes, 1)), on_line_(on_line), is_answer_(is_answer) {}

  // Delivers the lines in `data`. After an answer's last line it stops and returns what
  // follows that line (answered() is then true); otherwise it returns nothing.
  std::string_view Feed(std::string_view data) {
    answered_ = false;
    while (!data.empty()) {
      const std::size_t newline = data.find('\n');
      const bool complete = newline != std::string_view::npos;
      const std::string_view piece = data.substr(0, newline);
      data = complete ? data.substr(newline + 1) : std::string_view();
      if (!dropping_) {
        const std::size_t room = max_bytes_ - pending_.size();
        if (piece.size() > room) {
          pending_.append(piece.substr(0, room));
          Emit();
          ++cut_;
          dropping_ = true;
        } else {
          pending_.append(piece);
        }
      }
      if (complete) {
        const bool answer = !dropping_ && Emit();
        dropping_ = false;
        if (answer) {
          answered_ = true;
          return data;
        }
      }
    }
    return {};
  }

  bool answered() const { return answered_; }
  // From now on no line is an answer: everything up to the worker's end is delivered.
  void IgnoreAnswers() { answers_ = false; }

  // The end of the output: a last line without '\n' is still a line.
  void Finish() {
    if (!dropping_ && !pending_.empty()) Emit();
    pending_.clear();
    dropping_ = false;
  }

  std::size_t cut() const { return cut_; }

 private:
  // Delivers the pending line; true when it is an answer's last line.
  bool Emit() {
    if (on_line_) on_line_(pending_);
    const bool answer = answers_ && is_answer_ && is_answer_(pending_);
    pending_.clear();
    return answer;
  }

  std::size_t max_bytes_;
  const std::function<void(std::string_view)>& on_line_;
  const std::function<bool(std::string_view)>& is_answer_;
  bool answered_ = false;
  bool answers_ = true;
  std::string pending_;
  bool dropping_ = false;
  std::size_t cut_ = 0;
};

enum class ReadState { kOpen, kEof, kAnswered };

// Reads what the non-blocking pipe holds now (at most kMaxReadsPerWake chunks). After an
// answer's last line it stops reading and keeps the rest of the chunk in `unread`.
ReadState ReadAvailable(int fd, std::vector<char>& buffer, LineSplitter& lines,
                        std::string& unread) {
  for (int i = 0; i < kMaxReadsPerWake; ++i) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n > 0) {
      const std::string_view rest =
          lines.Feed(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
      if (lines.answered()) {
        unread.assign(rest);
        return ReadState::kAnswered;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadState::kOpen;
    return ReadState::kEof;  // end of file, or an error that no later read will fix
  }
  return ReadState::kOpen;
}

// A pidfd (Linux 5.3) becomes readable when the process exits, so the loop wakes at once;
// without one the loop notices within kMaxTick.
Fd OpenPidFd(pid_t pid) {
#ifdef SYS_pidfd_open
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) return Fd(static_cast<int>(fd));
#endif
  return Fd();
}

}  // namespace

// ---- Names -------------------------------------------------------------------------------

std::string_view WorkerEndName(WorkerEnd end) {
  switch (end) {
    case WorkerEnd::kExited:
      return "exited";
    case WorkerEnd::kSignaled:
      return "killed by a signal";
    case WorkerEnd::kStoppedOnRequest:
      return "stopped on request";
    case WorkerEnd::kOverMemoryCap:
      return "killed over the memory cap";
    case WorkerEnd::kAnswered:
      return "answered";
  }
  return "unknown";
}

std::string DescribeWorkerExit(const WorkerExit& exit) {
  std::string how = "code " + std::to_string(exit.exit_code);
  if (exit.term_signal != 0) {
    const char* name = ::sigabbrev_np(exit.term_signal);  // nullptr for an unknown number
    how = "signal " + std::to_string(exit.term_signal) +
          (name ? " (SIG" + std::string(name) + ")" : "");
  }
  std::string text;
  switch (exit.end) {
    case WorkerEnd::kExited:
      text = "exited with " + how;
      break;
    case WorkerEnd::kSignaled:
      text = "killed by " + how;
      break;
    case WorkerEnd::kStoppedOnRequest:
      text = exit.killed_after_grace ? "stopped on request (killed after the grace)"
                                     : "stopped on request (ended by " + how + ")";
      break;
    case WorkerEnd::kOverMemoryCap:
      text = "killed over the memory cap";
      break;
    case WorkerEnd::kAnswered:
      text = "answered and still running";
      break;
  }
  return text + ", peak RSS " + std::to_string(exit.peak_rss_bytes >> 20) + " MiB";
}

// ---- Start -------------------------------------------------------------------------------

common::Result<WorkerProcess> WorkerProcess::Start(const WorkerSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return MakeError(Errc::kInvalidArgument, "worker argv is empty");
  }
  for (const std::string& arg : spec.argv) {
    if (arg.find('\0') != std::string::npos) {
      return MakeError(Errc::kInvalidArgument, "worker argument holds a NUL byte");
    }
  }
  if (spec.nice < -20 || spec.nice > 19) {
    return MakeError(Errc::kInvalidArgument,
                     "nice " + std::to_string(spec.nice) + " is not in -20..19");
  }
  UBCP_ASSIGN_OR_RETURN(const std::vector<std::string> env, BuildEnvironment(spec.env_extra));
  const std::vector<char*> argv = PointerArray(spec.argv);
  const std::vector<char*> envp = PointerArray(env);

  // The worker's standard input: /dev/null, or a socket for requests (send(MSG_NOSIGNAL) on a
  // socket cannot raise SIGPIPE in the daemon when the worker is gone, as a pipe would).
  Fd stdin_child, stdin_parent;
  if (spec.requests_on_stdin) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return MakeError(Errc::kIo, "worker stdin socketpair: " + ErrnoText(errno));
    }
    stdin_child = Fd(fds[0]);
    stdin_parent = Fd(fds[1]);
    UBCP_ASSIGN_OR_RETURN(stdin_child, MoveAboveStdio(std::move(stdin_child), "worker stdin"));
    UBCP_ASSIGN_OR_RETURN(stdin_parent, MoveAboveStdio(std::move(stdin_parent), "worker stdin"));
  } else {
    UBCP_ASSIGN_OR_RETURN(stdin_child, OpenFd("/dev/null", O_RDONLY, "worker stdin"));
  }
  Fd stderr_file;
  if (!spec.stderr_file.empty()) {
    UBCP_ASSIGN_OR_RETURN(
        stderr_file, OpenFd(spec.stderr_file, O_WRONLY | O_CREAT | O_APPEND, "worker stderr file"));
  }
  UBCP_ASSIGN_OR_RETURN(auto output, MakePipe("worker stdout"));
  UBCP_ASSIGN_OR_RETURN(auto reports, MakePipe("worker report"));
  auto& [output_read, output_write] = output;
  auto& [report_read, report_write] = reports;

  ChildPlan plan;
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.parent = ::getpid();
  plan.nice = spec.nice;
  plan.idle_io = spec.idle_io;
  plan.stdin_fd = stdin_child.get();
  plan.stdout_fd = output_write.get();
  plan.stderr_fd = stderr_file.get();
  plan.report_fd = report_write.get();

  const pid_t pid = ::fork();
  if (pid < 0) return MakeError(Errc::kIo, "fork: " + ErrnoText(errno));
  if (pid == 0) RunChild(plan);

  // Also from the parent: when Start returns, the group exists whichever process ran first.
  // EACCES once the child has executed, when its own setpgid has long been done.
  ::setpgid(pid, pid);
  stdin_child.Reset();
  stderr_file.Reset();
  output_write.Reset();
  report_write.Reset();

  WorkerProcess worker(pid, output_read.Release(), spec.memory_limit_bytes);
  worker.stdin_fd_ = stdin_parent.Release();
  // Reports until end of file, which comes when execve succeeds (close-on-exec) or the child
  // exits after a failure.
  std::optional<common::Error> failure;
  for (;;) {
    ChildReport report{};
    const ssize_t n = ::read(report_read.get(), &report, sizeof report);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (n != static_cast<ssize_t>(sizeof report)) {
      failure = MakeError(Errc::kInternal, "worker sent a partial start report");
      break;
    }
    if (report.step == ChildStep::kIoPriority) {
      worker.idle_io_error_ = "ioprio_set(IOPRIO_CLASS_IDLE): " + ErrnoText(report.err);
      continue;
    }
    failure = ChildError(report, spec);
  }
  if (failure) return *failure;  // ~WorkerProcess kills and reaps the child
  worker.idle_io_applied_ = spec.idle_io && worker.idle_io_error_.empty();

  const int flags = ::fcntl(worker.stdout_fd_, F_GETFL);
  if (flags < 0 || ::fcntl(worker.stdout_fd_, F_SETFL, flags | O_NONBLOCK) != 0) {
    return MakeError(Errc::kIo, "worker stdout O_NONBLOCK: " + ErrnoText(errno));
  }
  return worker;
}

WorkerProcess::WorkerProcess(pid_t pid, int stdout_fd, std::uint64_t memory_limit_bytes)
    : pid_(pid), stdout_fd_(stdout_fd), memory_limit_bytes_(memory_limit_bytes) {}

WorkerProcess::WorkerProcess(WorkerProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      stdin_fd_(std::exchange(other.stdin_fd_, -1)),
      unread_(std::move(other.unread_)),
      memory_limit_bytes_(other.memory_limit_bytes_),
      idle_io_applied_(other.idle_io_applied_),
      idle_io_error_(std::move(other.idle_io_error_)) {}

WorkerProcess& WorkerProcess::operator=(WorkerProcess&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = std::exchange(other.pid_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    stdin_fd_ = std::exchange(other.stdin_fd_, -1);
    unread_ = std::move(other.unread_);
    memory_limit_bytes_ = other.memory_limit_bytes_;
    idle_io_applied_ = other.idle_io_applied_;
    idle_io_error_ = std::move(other.idle_io_error_);
  }
  return *this;
}

WorkerProcess::~WorkerProcess() { KillAndReap(); }

void WorkerProcess::KillAndReap() noexcept {
  if (pid_ > 0) {
    ::killpg(pid_, SIGKILL);
    ::kill(pid_, SIGKILL);  // in case the child died before its setpgid
    ReapBlocking(pid_);
  }
  pid_ = -1;
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

bool WorkerProcess::HasExited() const {
  if (pid_ <= 0) return true;
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno != EINTR) return true;  // not our child any more: nothing left to wait for
  }
  return info.si_pid == pid_;
}

common::Status WorkerProcess::Send(std::string_view line) {
  if (line.find('\n') != std::string_view::npos) {
    return MakeError(Errc::kInvalidArgument, "a request to the worker holds a newline");
  }
  if (pid_ <= 0 || stdin_fd_ < 0) {
    return MakeError(Errc::kConflict, "the worker takes no requests (ended, or no input)");
  }
  std::string data(line);
  data.push_back('\n');
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(stdin_fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return MakeError(Errc::kUnavailable,
                       "the worker no longer reads requests: " + ErrnoText(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

// ---- Resident memory -----------------------------------------------------------------------

common::Result<std::uint64_t> ParseVmRssBytes(std::string_view status) {
  std::size_t at = 0;
  while (at < status.size()) {
    std::size_t end = status.find('\n', at);
    if (end == std::string_view::npos) end = status.size();
    std::string_view line = status.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with("VmRSS:")) continue;
    line.remove_prefix(6);
    const std::size_t digits = line.find_first_not_of(" \t");
    const std::size_t unit = line.find(" kB");
    if (digits == std::string_view::npos || unit == std::string_view::npos || unit < digits) {
      break;
    }
    const auto kib = ParseNumber<std::uint64_t>(line.substr(digits, unit - digits));
    if (!kib || *kib > (UINT64_MAX >> 10)) break;
    return *kib << 10;
  }
  return MakeError(Errc::kMalformed, "no VmRSS line in /proc status");
}

common::Result<pid_t> ParseStatProcessGroup(std::string_view stat) {
  // "pid (comm) state ppid pgrp ...": comm may contain anything, so fields start after the
  // last ')'.
  const std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return MakeError(Errc::kMalformed, "no comm in stat");
  std::string_view rest = stat.substr(close + 1);
  for (int field = 0; field < 3; ++field) {
    const std::size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    const std::size_t end = std::min(rest.find(' '), rest.size());
    if (field == 2) {
      if (const auto pgrp = ParseNumber<pid_t>(rest.substr(0, end))) return *pgrp;
      break;
    }
    rest.remove_prefix(end);
  }
  return MakeError(Errc::kMalformed, "no process group in stat");
}

namespace {

// The VmRSS of the process whose /proc directory is `dir`, when it belongs to group `pgid`;
// nullopt when it is gone, a zombie (no VmRSS) or in another group (its pid was reused).
std::optional<std::uint64_t> MemberResidentBytes(const fs::path& dir, pid_t pgid) {
  const auto stat = ReadProcFile(dir / "stat");
  if (!stat) return std::nullopt;
  const auto group = ParseStatProcessGroup(*stat);
  if (!group || *group != pgid) return std::nullopt;
  const auto status = ReadProcFile(dir / "status");
  if (!status) return std::nullopt;
  const auto rss = ParseVmRssBytes(*status);
  if (!rss) return std::nullopt;
  return *rss;
}

struct GroupScan {
  std::vector<pid_t> members;
  std::uint64_t resident_bytes = 0;
};

// Reads the stat of every process under `proc` to find the members of group `pgid`.
common::Result<GroupScan> ScanGroup(pid_t pgid, const fs::path& proc) {
  std::error_code ec;
  fs::directory_iterator it(proc, ec);
  if (ec) return MakeError(Errc::kIo, "cannot list " + proc.string() + ": " + ec.message());
  GroupScan scan;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return MakeError(Errc::kIo, "cannot list " + proc.string() + ": " + ec.message());
    const auto pid = ParseNumber<pid_t>(it->path().filename().string());
    if (!pid) continue;
    // Processes come and go during the scan: one that cannot be read is not counted.
    if (const auto rss = MemberResidentBytes(it->path(), pgid)) {
      scan.members.push_back(*pid);
      scan.resident_bytes += *rss;
    }
  }
  return scan;
}

// The resident memory of the worker's process group, sampled every memory_poll. A full scan
// of /proc costs about 1 ms per 100 processes, so it runs every kFullScanEvery samples only;
// the samples between read the members it found. A process forked by the worker is counted
// from the next full scan on.
class GroupMemorySampler {
 public:
  static constexpr int kFullScanEvery = 5;

  explicit GroupMemorySampler(pid_t pgid) : pgid_(pgid) {}

  // nullopt when /proc cannot be listed.
  std::optional<std::uint64_t> Sample() {
    if (samples_++ % kFullScanEvery == 0) {
      auto scan = ScanGroup(pgid_, "/proc");
      if (!scan) return std::nullopt;
      members_ = std::move(scan->members);
      return scan->resident_bytes;
    }
    std::uint64_t total = 0;
    for (const pid_t member : members_) {
      total += MemberResidentBytes(fs::path("/proc") / std::to_string(member), pgid_).value_or(0);
    }
    return total;
  }

 private:
  pid_t pgid_;
  int samples_ = 0;
  std::vector<pid_t> members_;
};

}  // namespace

common::Result<std::uint64_t> GroupResidentBytes(pid_t pgid, const fs::path& proc) {
  UBCP_ASSIGN_OR_RETURN(const GroupScan scan, ScanGroup(pgid, proc));
  return scan.resident_bytes;
}

// ---- Supervise ---------------------------------------------------------------------------

common::Result<WorkerExit> WorkerProcess::Supervise(const SuperviseHooks& hooks) {
  if (pid_ <= 0) return MakeError(Errc::kConflict, "worker was already supervised to its end");
  enum class Phase { kRunning, kStopping, kOverCap };
  Phase phase = Phase::kRunning;
  bool sigkill_sent = false;
  WorkerExit result;
  LineSplitter lines(hooks.max_line_bytes, hooks.on_line, hooks.is_answer);
  std::vector<char> buffer(kReadChunk);
  bool output_open = true;
  // What the worker wrote after the previous answer comes first.
  if (!unread_.empty()) {
    const std::string earlier = std::exchange(unread_, {});
    unread_.assign(lines.Feed(earlier));
    if (lines.answered()) {
      result.end = WorkerEnd::kAnswered;
      return result;
    }
  }
  const Fd pid_fd = OpenPidFd(pid_);
  GroupMemorySampler memory(pid_);

  auto now = SteadyClock::now();
  auto next_memory_poll = now;
  auto next_stop_poll = now;
  SteadyClock::time_point kill_at{};
  for (;;) {
    // WNOWAIT: the exited leader stays a zombie, so its pid (the group id) cannot be reused
    // before the rest of its group is killed below.
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::killpg(pid_, SIGKILL);
      pid_ = -1;
      return MakeError(Errc::kInternal, "cannot wait for the worker: " + ErrnoText(err));
    }
    if (info.si_pid == pid_) break;

    now = SteadyClock::now();
    if (now >= next_memory_poll) {
      next_memory_poll = now + hooks.memory_poll;
      // A failed sample is skipped; the next one counts.
      if (const auto rss = memory.Sample()) {
        result.peak_rss_bytes = std::max(result.peak_rss_bytes, *rss);
        if (memory_limit_bytes_ > 0 && *rss > memory_limit_bytes_ && phase != Phase::kOverCap) {
          ::killpg(pid_, SIGKILL);
          phase = Phase::kOverCap;
          lines.IgnoreAnswers();
          sigkill_sent = true;
        }
      }
    }
    if (phase == Phase::kRunning && hooks.should_stop && now >= next_stop_poll) {
      next_stop_poll = now + hooks.stop_poll;
      if (hooks.should_stop()) {
        ::killpg(pid_, SIGTERM);
        phase = Phase::kStopping;
        lines.IgnoreAnswers();
        kill_at = now + hooks.grace;
      }
    }
    if (phase == Phase::kStopping && !sigkill_sent && now >= kill_at) {
      ::killpg(pid_, SIGKILL);
      sigkill_sent = true;
      result.killed_after_grace = true;
    }

    auto wake = std::min(now + kMaxTick, next_memory_poll);
    if (phase == Phase::kRunning && hooks.should_stop) wake = std::min(wake, next_stop_poll);
    if (phase == Phase::kStopping && !sigkill_sent) wake = std::min(wake, kill_at);
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - now);
    pollfd fds[2] = {{output_open ? stdout_fd_ : -1, POLLIN, 0}, {pid_fd.get(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(wait.count(), 0)));
    if (ready > 0 && fds[0].revents != 0) {
      const ReadState read = ReadAvailable(stdout_fd_, buffer, lines, unread_);
      // Once a stop or the cap has ended the request, no line is an answer: the worker is on
      // its way out and is supervised to its end.
      if (read == ReadState::kAnswered) {
        result.end = WorkerEnd::kAnswered;
        result.lines_cut = lines.cut();
        return result;
      }
      output_open = read != ReadState::kEof;
    }
  }

  // The leader has exited: whatever it left in its group goes too, then the output written
  // before the end is read and the leader reaped.
  ::killpg(pid_, SIGKILL);
  lines.IgnoreAnswers();
  if (output_open) ReadAvailable(stdout_fd_, buffer, lines, unread_);
  lines.Finish();
  int status = 0;
  rusage usage{};
  while (::wait4(pid_, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  ::close(stdout_fd_);
  stdout_fd_ = -1;
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;

  result.peak_rss_bytes =
      std::max(result.peak_rss_bytes, static_cast<std::uint64_t>(usage.ru_maxrss) * 1024);
  result.lines_cut = lines.cut();
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  switch (phase) {
    case Phase::kOverCap:
      result.end = WorkerEnd::kOverMemoryCap;
      break;
    case Phase::kStopping:
      result.end = WorkerEnd::kStoppedOnRequest;
      break;
    case Phase::kRunning:
      result.end = WIFSIGNALED(status) ? WorkerEnd::kSignaled : WorkerEnd::kExited;
      break;
  }
  return result;
}

}  // namespace ubcp::client
