// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/control_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "ubcp/common/unique_fd.h"

namespace ubcp::client {
using common::Errc;
using common::MakeError;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::size_t kMaxAnswer = 64 * 1024;

std::string Errno(std::string_view what) { return std::string(what) + ": " + std::strerror(errno); }

// Owns a file descriptor.
using Fd = common::UniqueFd;

common::Result<sockaddr_un> SocketAddress(const fs::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& p = path.native();
  if (p.size() >= sizeof(addr.sun_path)) {
    return MakeError(Errc::kInvalidArgument, "socket path too long: " + p);
  }
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  return addr;
}

// Connects a blocking stream socket to `path`. kUnavailable when no one listens there.
common::Result<Fd> Connect(const fs::path& path) {
  UBCP_ASSIGN_OR_RETURN(sockaddr_un addr, SocketAddress(path));
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return MakeError(Errc::kIo, Errno("socket"));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) {
      return MakeError(Errc::kUnavailable, "no ubcp-client is running (" + path.string() + ")");
    }
    return MakeError(Errc::kIo, Errno("connect " + path.string()));
  }
  return fd;
}

// The directory must belong to us and be closed to group and others: the socket's first line of
// defence (SO_PEERCRED is the second), so that no other user can even reach it.
common::Status PrepareDirectory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return MakeError(Errc::kIo, "cannot create " + dir.string() + ": " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) return MakeError(Errc::kIo, "cannot restrict " + dir.string() + ": " + ec.message());
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return MakeError(Errc::kIo, Errno("stat " + dir.string()));
  if (!S_ISDIR(st.st_mode)) return MakeError(Errc::kConflict, dir.string() + " is no directory");
  if (st.st_uid != ::geteuid()) {
    return MakeError(Errc::kForbidden, dir.string() + " belongs to another user");
  }
  if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    return MakeError(Errc::kIo, Errno("chmod 0700 " + dir.string()));
  }
  return common::Ok();
}

// Removes a socket nobody answers on; refuses a live one and anything that is not a socket.
common::Status RemoveStaleSocket(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return common::Ok();
    return MakeError(Errc::kIo, Errno("stat " + path.string()));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return MakeError(Errc::kConflict, path.string() + " exists and is not a socket");
  }
  auto live = Connect(path);
  if (live) {
    return MakeError(Errc::kConflict, "another ubcp-client already listens on " + path.string());
  }
  if (live.error().code != Errc::kUnavailable) return live.error();
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return MakeError(Errc::kIo, Errno("unlink stale " + path.string()));
  }
  spdlog::info("replaced a stale control socket at {}", path.string());
  return common::Ok();
}

void SendLine(int fd, const json::object& answer) {
  std::string line = json::serialize(answer);
  line += '\n';
  // Non-blocking and best effort: an answer is small and a fresh socket's buffer holds it; a
  // peer that does not read loses its answer rather than stall the server. MSG_NOSIGNAL: a
  // closed peer must not kill the client with SIGPIPE.
  (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

json::object ErrorAnswer(std::string_view message) { return {{"ok", false}, {"error", message}}; }

std::string_view Trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

json::object StatusAnswer(const ControlSnapshot& s) {
  json::object out{{"ok", true}, {"command", "status"}};
  out["state"] = s.finish_requested   ? "finishing"
                 : s.paused           ? "paused"
                 : !s.waiting.empty() ? "waiting"
                                      : "running";
  out["waiting"] = s.waiting;
  out["allowed_threads"] = s.allowed_threads;
  out["allowed_memory_mb"] = s.allowed_memory_mb;
  out["paused"] = s.paused;
  out["finish_requested"] = s.finish_requested;
  out["units_done"] = s.units_done;
  out["last_error"] = s.last_error;
  if (s.in_unit) {
    json::object unit{{"id", s.unit_id},
                      {"kind", s.kind},
                      {"job", s.job_id},
                      {"round", s.round},
                      {"phase", s.phase},
                      {"steps_done", s.steps_done},
                      {"steps_total", s.steps_total},
                      {"elapsed_s", s.elapsed_s},
                      {"predicted_s", s.predicted_s}};
    if (auto eta = EstimateRemainingSeconds(s)) {
      unit["eta_s"] = *eta;
    } else {
      unit["eta_s"] = nullptr;
    }
    out["unit"] = std::move(unit);
  } else {
    out["unit"] = nullptr;
  }
  if (s.contribution) {
    const common::Contribution& c = *s.contribution;
    out["contribution"] = json::object{{"host_id", c.host_id},
                                       {"units", c.units},
                                       {"points_credits", c.points_credits},
                                       {"period_credits", c.period_credits},
                                       {"recent_credits_per_day", c.recent_credits_per_day},
                                       {"age_s", s.contribution_age_s}};
  } else {
    out["contribution"] = nullptr;
  }
  return out;
}

double NumberOr(const json::object& o, std::string_view key, double fallback) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return fallback;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  return fallback;
}

std::string StringOr(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

fs::path ControlSocketPath(const fs::path& state_dir) { return state_dir / kControlSocketName; }

std::optional<double> EstimateRemainingSeconds(const ControlSnapshot& s) {
  if (!s.in_unit || s.steps_total <= 0) return std::nullopt;
  if (s.steps_done >= s.steps_total) return 0.0;
  if (s.steps_done > 0) {
    return s.elapsed_s / static_cast<double>(s.steps_done) *
           static_cast<double>(s.steps_total - s.steps_done);
  }
  if (s.predicted_s > 0) return std::max(0.0, s.predicted_s - s.elapsed_s);
  return std::nullopt;
}

void ControlState::SetPaused(bool paused) {
  std::lock_guard lock(mu_);
  s_.paused = paused;
}
bool ControlState::paused() const {
  std::lock_guard lock(mu_);
  return s_.paused;
}
void ControlState::RequestFinish() {
  std::lock_guard lock(mu_);
  s_.finish_requested = true;
}
bool ControlState::finish_requested() const {
  std::lock_guard lock(mu_);
  return s_.finish_requested;
}

void ControlState::BeginUnit(std::int64_t unit_id, std::string kind, std::int64_t job_id,
                             std::int64_t round, std::int64_t steps_total, double predicted_s) {
  std::lock_guard lock(mu_);
  s_.in_unit = true;
  s_.unit_id = unit_id;
  s_.kind = std::move(kind);
  s_.job_id = job_id;
  s_.round = round;
  s_.phase = "fetching";
  s_.steps_done = 0;
  s_.steps_total = steps_total;
  s_.predicted_s = predicted_s;
  unit_started_ = Clock::now();
}

void ControlState::SetPhase(std::string phase) {
  std::lock_guard lock(mu_);
  s_.phase = std::move(phase);
}

void ControlState::SetWaiting(std::string reason) {
  std::lock_guard lock(mu_);
  s_.waiting = std::move(reason);
}

void ControlState::SetAllowance(int threads, std::uint64_t memory_mb) {
  std::lock_guard lock(mu_);
  s_.allowed_threads = threads;
  s_.allowed_memory_mb = memory_mb;
}

void ControlState::SetProgress(std::int64_t steps_done, std::int64_t steps_total) {
  std::lock_guard lock(mu_);
  s_.steps_done = steps_done;
  s_.steps_total = steps_total;
}

void ControlState::EndUnit(bool completed) {
  std::lock_guard lock(mu_);
  if (completed) ++s_.units_done;
  s_.in_unit = false;
  s_.unit_id = s_.job_id = s_.round = s_.steps_done = s_.steps_total = 0;
  s_.kind.clear();
  s_.phase.clear();
  s_.predicted_s = 0;
}

void ControlState::SetLastError(std::string error) {
  std::lock_guard lock(mu_);
  s_.last_error = std::move(error);
}

void ControlState::SetContribution(const common::Contribution& contribution) {
  std::lock_guard lock(mu_);
  s_.contribution = contribution;
  contribution_at_ = Clock::now();
}

ControlSnapshot ControlState::Snapshot() const {
  std::lock_guard lock(mu_);
  ControlSnapshot s = s_;
  const auto now = Clock::now();
  s.elapsed_s = s.in_unit ? std::chrono::duration<double>(now - unit_started_).count() : 0;
  s.contribution_age_s =
      s.contribution ? std::chrono::duration<double>(now - contribution_at_).count() : 0;
  return s;
}

json::object HandleControlLine(std::string_view line, ControlState& state) {
  const std::string_view command = Trim(line);
  if (command == "status") return StatusAnswer(state.Snapshot());
  if (command == "pause" || command == "resume") {
    spdlog::info("control: {}", command);
    state.SetPaused(command == "pause");
    return {{"ok", true}, {"command", command}, {"paused", command == "pause"}};
  }
  if (command == "finish") {
    spdlog::info("control: finish after the current unit");
    state.RequestFinish();
    return {{"ok", true}, {"command", "finish"}, {"finish_requested", true}};
  }
  return ErrorAnswer("unknown command; use status, pause, resume or finish");
}

common::Result<std::unique_ptr<ControlServer>> ControlServer::Start(const fs::path& path,
                                                                    ControlState& state,
                                                                    ControlServerOptions options) {
  UBCP_ASSIGN_OR_RETURN(sockaddr_un addr, SocketAddress(path));
  UBCP_RETURN_IF_ERROR(
      PrepareDirectory(path.parent_path().empty() ? fs::path(".") : path.parent_path()));
  UBCP_RETURN_IF_ERROR(RemoveStaleSocket(path));
  Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (listener.get() < 0) return MakeError(Errc::kIo, Errno("socket"));
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return MakeError(Errc::kIo, Errno("bind " + path.string()));
  }
  // bind() applies the umask; the 0700 directory already keeps others out between bind and this
  // chmod, which narrows the socket itself to its owner whatever the umask was.
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(listener.get(), 16) != 0) {
    const std::string error = Errno("chmod/listen " + path.string());
    ::unlink(path.c_str());
    return MakeError(Errc::kIo, error);
  }
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::unlink(path.c_str());
    return MakeError(Errc::kIo, Errno("pipe"));
  }
  std::unique_ptr<ControlServer> server(
      new ControlServer(path, state, options, listener.Release(), wake[0], wake[1]));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

ControlServer::ControlServer(fs::path path, ControlState& state, ControlServerOptions options,
                             int listen_fd, int wake_read, int wake_write)
    : path_(std::move(path)),
      state_(state),
      options_(options),
      listen_fd_(listen_fd),
      wake_read_(wake_read),
      wake_write_(wake_write) {}

ControlServer::~ControlServer() {
  const char byte = 0;
  (void)::write(wake_write_, &byte, 1);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
  ::unlink(path_.c_str());
}

int ControlServer::refused_peers() const {
  std::lock_guard lock(mu_);
  return refused_peers_;
}

// One thread polls the listener and every open connection, so a slow or silent peer costs a
// slot and at most read_timeout, never the server. Nothing here throws across the thread:
// HandleControlLine does not throw and JSON serialisation of our own objects cannot fail.
void ControlServer::Serve() {
  struct Conn {
    Fd fd;
    std::string buffer;
    std::chrono::steady_clock::time_point deadline;
  };
  std::vector<Conn> conns;
  for (;;) {
    std::vector<pollfd> fds{{wake_read_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const Conn& c : conns) fds.push_back({c.fd.get(), POLLIN, 0});
    int timeout_ms = -1;  // no connection: wait for one, or for the stop
    const auto now = std::chrono::steady_clock::now();
    for (const Conn& c : conns) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(c.deadline - now).count();
      const int ms = static_cast<int>(std::max<std::int64_t>(0, left));
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control socket: {}", Errno("poll"));
      return;
    }
    if (fds[0].revents != 0) return;  // the destructor asks us to stop

    std::vector<bool> done(conns.size(), false);
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (fds[i + 2].revents == 0) {
        if (std::chrono::steady_clock::now() >= c.deadline) {
          SendLine(c.fd.get(), ErrorAnswer("timed out waiting for a request line"));
          done[i] = true;
        }
        continue;
      }
      char chunk[1024];
      const ssize_t n = ::recv(c.fd.get(), chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) {  // closed before a whole line: nothing to answer
        done[i] = true;
        continue;
      }
      c.buffer.append(chunk, static_cast<std::size_t>(n));
      const std::size_t newline = c.buffer.find('\n');
      if (newline != std::string::npos && newline <= options_.max_line) {
        SendLine(c.fd.get(),
                 HandleControlLine(std::string_view(c.buffer).substr(0, newline), state_));
        done[i] = true;
      } else if (c.buffer.size() > options_.max_line) {
        SendLine(c.fd.get(), ErrorAnswer("request line too long"));
        done[i] = true;
      }
    }
    std::vector<Conn> open;
    for (std::size_t i = 0; i < conns.size(); ++i) {
      if (!done[i]) open.push_back(std::move(conns[i]));
    }
    conns = std::move(open);

    if (fds[1].revents & POLLIN) {
      for (;;) {
        Fd fd(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd.get() < 0) break;  // EAGAIN: no more pending
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
          spdlog::warn("control socket: {}; connection dropped", Errno("SO_PEERCRED"));
          continue;
        }
        // The kernel's record of who connected, not anything the peer says: only our own user
        // and root may pause or stop this client or read its state.
        if (cred.uid != ::geteuid() && cred.uid != 0) {
          {
            std::lock_guard lock(mu_);
            ++refused_peers_;
          }
          spdlog::warn("control socket: refused uid {} (pid {})", cred.uid, cred.pid);
          SendLine(fd.get(), ErrorAnswer("forbidden: not the owner of this client"));
          continue;
        }
        if (conns.size() >= options_.max_connections) {
          SendLine(fd.get(), ErrorAnswer("busy: too many control connections"));
          continue;
        }
        conns.push_back(
            {std::move(fd), {}, std::chrono::steady_clock::now() + options_.read_timeout});
      }
    }
  }
}

common::Result<json::object> SendControl(const fs::path& path, std::string_view command,
                                         std::chrono::milliseconds timeout) {
  UBCP_ASSIGN_OR_RETURN(Fd fd, Connect(path));
  const std::string line = std::string(command) + "\n";
  if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    return MakeError(Errc::kNetwork, Errno("send to " + path.string()));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string answer;
  while (answer.find('\n') == std::string::npos) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
            .count();
    if (left <= 0) return MakeError(Errc::kNetwork, "no answer from " + path.string());
    pollfd p{fd.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return MakeError(Errc::kNetwork, Errno("poll"));
    if (ready == 0) continue;
    char chunk[4096];
    const ssize_t n = ::recv(fd.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // closed: parse what came
    answer.append(chunk, static_cast<std::size_t>(n));
    if (answer.size() > kMaxAnswer) return MakeError(Errc::kTooLarge, "answer too large");
  }
  const std::string_view text = Trim(answer);
  if (text.empty()) return MakeError(Errc::kNetwork, "empty answer from " + path.string());
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    return MakeError(Errc::kMalformed, "control answer is not a JSON object");
  }
  return std::move(v.as_object());
}

std::string ProgressBar(std::int64_t done, std::int64_t total, int width) {
  if (total <= 0 || width <= 0) return {};
  const double fraction =
      std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
  const int filled = static_cast<int>(std::floor(fraction * width));
  return "[" + std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(width - filled), '.') + "]";
}

std::string FormatDuration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

std::string FormatStatus(const json::object& st) {
  std::string out = StringOr(st, "state");
  if (out.empty()) out = "unknown";
  out += ": ";
  const json::value* unit = st.if_contains("unit");
  if (unit != nullptr && unit->is_object()) {
    const json::object& u = unit->get_object();
    const auto done = static_cast<std::int64_t>(NumberOr(u, "steps_done", 0));
    const auto total = static_cast<std::int64_t>(NumberOr(u, "steps_total", 0));
    if (total > 0) {
      const int percent = static_cast<int>(
          std::floor(100.0 * static_cast<double>(done) / static_cast<double>(total)));
      out += ProgressBar(done, total) + " " + std::to_string(std::clamp(percent, 0, 100)) + "% ";
    }
    char buf[256];
    std::snprintf(buf, sizeof(buf), "unit %lld %s job %lld round %lld",
                  static_cast<long long>(NumberOr(u, "id", 0)), StringOr(u, "kind").c_str(),
                  static_cast<long long>(NumberOr(u, "job", 0)),
                  static_cast<long long>(NumberOr(u, "round", 0)));
    out += buf;
    const std::string phase = StringOr(u, "phase");
    if (!phase.empty()) out += " (" + phase + ")";
    const json::value* eta = u.if_contains("eta_s");
    out += ", ETA ";
    out += eta != nullptr && eta->is_number() ? FormatDuration(NumberOr(u, "eta_s", 0)) : "unknown";
  } else if (const std::string waiting = StringOr(st, "waiting"); !waiting.empty()) {
    out += waiting;
  } else {
    out += "no unit in progress";
  }
  out += "\nunits done this run: " +
         std::to_string(static_cast<long long>(NumberOr(st, "units_done", 0)));
  if (const auto threads = static_cast<long long>(NumberOr(st, "allowed_threads", 0));
      threads > 0) {
    out += "\nallowed: " + std::to_string(threads) + " threads, " +
           std::to_string(static_cast<long long>(NumberOr(st, "allowed_memory_mb", 0))) +
           " MiB memory";
  }
  const json::value* contribution = st.if_contains("contribution");
  if (contribution != nullptr && contribution->is_object()) {
    const json::object& c = contribution->get_object();
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "\ncontribution: %lld units, %lld credits validated, %lld this period, "
                  "%.1f credits/day (as of %s ago)",
                  static_cast<long long>(NumberOr(c, "units", 0)),
                  static_cast<long long>(NumberOr(c, "points_credits", 0)),
                  static_cast<long long>(NumberOr(c, "period_credits", 0)),
                  NumberOr(c, "recent_credits_per_day", 0),
                  FormatDuration(NumberOr(c, "age_s", 0)).c_str());
    out += buf;
  } else {
    out += "\ncontribution: not known yet";
  }
  const std::string error = StringOr(st, "last_error");
  if (!error.empty()) out += "\nlast error: " + error;
  return out;
}

}  // namespace ubcp::client
