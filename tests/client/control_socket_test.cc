// SPDX-License-Identifier: Apache-2.0
// The donor's control socket: the command handler on plain values, then the real server on a
// Unix socket in a temporary directory (modes, stale sockets, limits, other users, concurrency).

#include "ubcp/client/control_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace ubcp::client {
namespace {
namespace fs = std::filesystem;
namespace json = boost::json;
using common::Errc;

bool Ok(const json::object& answer) {
  const json::value* ok = answer.if_contains("ok");
  return ok != nullptr && ok->is_bool() && ok->get_bool();
}

std::string ErrorOf(const json::object& answer) {
  const json::value* e = answer.if_contains("error");
  return e != nullptr && e->is_string() ? std::string(e->get_string()) : std::string();
}

// ---- the handler and the formatting, on plain values ----

TEST(ControlHandlerTest, CommandsChangeTheFlagsAndUnknownOnesAreRefused) {
  ControlState state;
  EXPECT_TRUE(Ok(HandleControlLine("pause", state)));
  EXPECT_TRUE(state.paused());
  EXPECT_TRUE(Ok(HandleControlLine("  resume\r", state)));
  EXPECT_FALSE(state.paused());
  EXPECT_FALSE(state.finish_requested());
  EXPECT_TRUE(Ok(HandleControlLine("finish", state)));
  EXPECT_TRUE(state.finish_requested());

  for (const char* bad : {"", "stop", "status now", "PAUSE", "{\"command\":\"pause\"}"}) {
    json::object answer = HandleControlLine(bad, state);
    EXPECT_FALSE(Ok(answer)) << bad;
    EXPECT_NE(ErrorOf(answer).find("unknown command"), std::string::npos) << bad;
  }
  EXPECT_FALSE(state.paused());
}

TEST(ControlHandlerTest, StatusReportsTheUnitItsProgressAndTheTotals) {
  ControlState state;
  json::object idle = HandleControlLine("status", state);
  ASSERT_TRUE(Ok(idle));
  EXPECT_EQ(idle.at("state").as_string(), "running");
  EXPECT_TRUE(idle.at("unit").is_null());
  EXPECT_TRUE(idle.at("contribution").is_null());

  state.BeginUnit(12, "finetune_shard", 3, 1, 40, 0);
  state.SetPhase("executing");
  state.SetProgress(10, 40);
  state.EndUnit(true);
  state.BeginUnit(13, "eval_batch", 4, 2, 1, 9.5);
  common::Contribution c;
  c.host_id = 5;
  c.units = 17;
  c.points_credits = 420;
  c.period_credits = 60;
  c.recent_credits_per_day = 12.5;
  state.SetContribution(c);
  state.SetLastError("unit 9: result refused");
  state.SetPaused(true);

  json::object status = HandleControlLine("status", state);
  ASSERT_TRUE(Ok(status)) << json::serialize(status);
  EXPECT_EQ(status.at("state").as_string(), "paused");
  EXPECT_EQ(status.at("units_done").as_int64(), 1);
  EXPECT_EQ(status.at("last_error").as_string(), "unit 9: result refused");
  const json::object& unit = status.at("unit").as_object();
  EXPECT_EQ(unit.at("id").as_int64(), 13);
  EXPECT_EQ(unit.at("kind").as_string(), "eval_batch");
  EXPECT_EQ(unit.at("job").as_int64(), 4);
  EXPECT_EQ(unit.at("round").as_int64(), 2);
  EXPECT_EQ(unit.at("phase").as_string(), "fetching");
  EXPECT_EQ(unit.at("steps_done").as_int64(), 0);
  EXPECT_EQ(unit.at("steps_total").as_int64(), 1);
  // Nothing done yet: the ETA is the prediction less the time spent.
  ASSERT_TRUE(unit.at("eta_s").is_double());
  EXPECT_LE(unit.at("eta_s").as_double(), 9.5);
  EXPECT_GT(unit.at("eta_s").as_double(), 0.0);
  const json::object& totals = status.at("contribution").as_object();
  EXPECT_EQ(totals.at("units").as_int64(), 17);
  EXPECT_EQ(totals.at("points_credits").as_int64(), 420);
  EXPECT_EQ(totals.at("period_credits").as_int64(), 60);

  state.RequestFinish();
  EXPECT_EQ(HandleControlLine("status", state).at("state").as_string(), "finishing");
}

TEST(ControlHandlerTest, RemainingTimeComesFromStepsDoneElseFromThePrediction) {
  ControlSnapshot s;
  EXPECT_FALSE(EstimateRemainingSeconds(s)) << "no unit";
  s.in_unit = true;
  s.steps_total = 10;
  EXPECT_FALSE(EstimateRemainingSeconds(s)) << "nothing measured, nothing predicted";
  s.predicted_s = 30;
  s.elapsed_s = 12;
  EXPECT_DOUBLE_EQ(*EstimateRemainingSeconds(s), 18);
  s.elapsed_s = 45;
  EXPECT_DOUBLE_EQ(*EstimateRemainingSeconds(s), 0) << "never negative";
  s.steps_done = 4;
  s.elapsed_s = 8;  // 2 s per step, 6 steps left: the measurement beats the prediction
  EXPECT_DOUBLE_EQ(*EstimateRemainingSeconds(s), 12);
  s.steps_done = 10;
  EXPECT_DOUBLE_EQ(*EstimateRemainingSeconds(s), 0);
}

TEST(ControlHandlerTest, FormatsTheHumanSummary) {
  EXPECT_EQ(ProgressBar(7, 12), "[#######.....]");
  EXPECT_EQ(ProgressBar(0, 4, 4), "[....]");
  EXPECT_EQ(ProgressBar(9, 4, 4), "[####]");
  EXPECT_EQ(ProgressBar(1, 0), "");
  EXPECT_EQ(FormatDuration(42), "0:42");
  EXPECT_EQ(FormatDuration(3725), "1:02:05");
  EXPECT_EQ(FormatDuration(-3), "0:00");

  json::object status{{"ok", true},
                      {"state", "running"},
                      {"units_done", 4},
                      {"last_error", ""},
                      {"contribution", nullptr}};
  status["unit"] =
      json::object{{"id", 12},    {"kind", "finetune_shard"}, {"job", 3},          {"round", 1},
                   {"phase", ""}, {"steps_done", 7},          {"steps_total", 12}, {"eta_s", 42.2}};
  const std::string text = FormatStatus(status);
  EXPECT_NE(text.find("running: [#######.....] 58% unit 12 finetune_shard job 3 round 1, ETA 0:42"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("units done this run: 4"), std::string::npos) << text;
  EXPECT_NE(text.find("contribution: not known yet"), std::string::npos) << text;

  status["unit"] = nullptr;
  status["state"] = "paused";
  status["last_error"] = "boom";
  status["contribution"] = json::object{{"units", 17},
                                        {"points_credits", 420},
                                        {"period_credits", 60},
                                        {"recent_credits_per_day", 12.5},
                                        {"age_s", 61}};
  const std::string paused = FormatStatus(status);
  EXPECT_NE(paused.find("paused: no unit in progress"), std::string::npos) << paused;
  EXPECT_NE(paused.find("17 units, 420 credits validated, 60 this period, 12.5 credits/day"),
            std::string::npos)
      << paused;
  EXPECT_NE(paused.find("last error: boom"), std::string::npos) << paused;
}

// ---- the real socket ----

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ubcp-control-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ / "state";  // created by the server
    path_ = ControlSocketPath(dir_);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }

  std::unique_ptr<ControlServer> StartServer(ControlServerOptions options = {}) {
    auto server = ControlServer::Start(path_, state_, options);
    EXPECT_TRUE(server) << server.error().ToString();
    return server ? std::move(*server) : nullptr;
  }

  // A raw client: sends `bytes` as they are and returns everything answered until close.
  std::string RawExchange(const std::string& bytes) const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return "connect failed";
    }
    if (!bytes.empty()) (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    std::string answer;
    char buf[512];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) answer.append(buf, n);
    ::close(fd);
    return answer;
  }

  fs::path root_, dir_, path_;
  ControlState state_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlSocketTest, CommandsRoundTripAndTheSocketIsTheOwnersOnly) {
  server_ = StartServer();
  ASSERT_TRUE(server_);
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto paused = SendControl(path_, "pause");
  ASSERT_TRUE(paused) << paused.error().ToString();
  EXPECT_TRUE(Ok(*paused));
  EXPECT_TRUE(state_.paused());
  auto status = SendControl(path_, "status");
  ASSERT_TRUE(status) << status.error().ToString();
  EXPECT_EQ(status->at("state").as_string(), "paused");
  auto resumed = SendControl(path_, "resume");
  ASSERT_TRUE(resumed && Ok(*resumed));
  EXPECT_FALSE(state_.paused());
  auto finish = SendControl(path_, "finish");
  ASSERT_TRUE(finish && Ok(*finish));
  EXPECT_TRUE(state_.finish_requested());
  auto unknown = SendControl(path_, "reboot");
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(Ok(*unknown));

  server_.reset();
  EXPECT_FALSE(fs::exists(fs::symlink_status(path_))) << "the server removes its socket";
  auto gone = SendControl(path_, "status");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::kUnavailable);
}

TEST_F(ControlSocketTest, AnOpenStateDirectoryIsClosedAndAStaleSocketReplaced) {
  ASSERT_TRUE(fs::create_directories(dir_));
  fs::permissions(dir_, fs::perms::all);
  // A socket file left by a client that died: bound, never listening, closed.
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(stale);
  ASSERT_TRUE(fs::is_socket(path_));

  server_ = StartServer();
  ASSERT_TRUE(server_);
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto status = SendControl(path_, "status");
  ASSERT_TRUE(status) << status.error().ToString();
  EXPECT_TRUE(Ok(*status));
}

TEST_F(ControlSocketTest, ALiveSocketOrAnotherFileIsNeverReplaced) {
  server_ = StartServer();
  ASSERT_TRUE(server_);
  ControlState other;
  auto second = ControlServer::Start(path_, other);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kConflict);
  auto still = SendControl(path_, "pause");
  ASSERT_TRUE(still && Ok(*still));
  EXPECT_TRUE(state_.paused()) << "the first server still serves";
  EXPECT_FALSE(other.paused());

  server_.reset();
  { std::ofstream(path_) << "not a socket"; }
  auto refused = ControlServer::Start(path_, other);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kConflict);
  std::ifstream in(path_);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "not a socket");
}

TEST_F(ControlSocketTest, OversizedAndSilentRequestsAreRefused) {
  ControlServerOptions options;
  options.max_line = 64;
  options.read_timeout = std::chrono::milliseconds(200);
  server_ = StartServer(options);
  ASSERT_TRUE(server_);

  const std::string too_long = RawExchange(std::string(65, 'x') + "\n");
  EXPECT_NE(too_long.find("too long"), std::string::npos) << too_long;
  // A "pause" hidden behind padding past the limit is not obeyed.
  const std::string padded = RawExchange(std::string(100, ' ') + "pause\n");
  EXPECT_NE(padded.find("too long"), std::string::npos) << padded;
  EXPECT_FALSE(state_.paused());
  const std::string unterminated = RawExchange(std::string(5000, 'y'));
  EXPECT_NE(unterminated.find("too long"), std::string::npos) << unterminated;
  const std::string fits = RawExchange(std::string(58, ' ') + "pause\n");
  EXPECT_NE(fits.find("\"ok\":true"), std::string::npos) << fits;
  EXPECT_TRUE(state_.paused());

  const auto start = std::chrono::steady_clock::now();
  const std::string silent = RawExchange("");
  EXPECT_NE(silent.find("timed out"), std::string::npos) << silent;
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(150));
}

TEST_F(ControlSocketTest, ConcurrentClientsAreAllServedWhileOneStaysSilent) {
  server_ = StartServer();
  ASSERT_TRUE(server_);
  // A connection that never sends holds its slot until the read timeout; the others go on.
  std::thread silent([this] { RawExchange(""); });
  constexpr int kThreads = 8, kRequests = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < kRequests; ++i) {
        auto answer = SendControl(path_, (t + i) % 2 ? "status" : "resume");
        if (answer && Ok(*answer)) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests);
  silent.join();
}

// Runs `body` in a child process as the `nobody` user; returns the child's exit code. The child
// uses raw system calls only: the parent has other threads, so it must not allocate after fork.
int AsNobody(int (*body)(const sockaddr_un&), const sockaddr_un& addr) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(90);
    }
    ::_exit(body(addr));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

// 0: refused by the server's answer; 1: connect failed with EACCES; 2: obeyed; 3+: other.
int TryPauseAsPeer(const sockaddr_un& addr) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return 3;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return errno == EACCES ? 1 : 4;
  }
  const char request[] = "pause\n";
  (void)::send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL);
  char buf[512] = {};
  std::size_t got = 0;
  for (ssize_t n;
       got < sizeof(buf) - 1 && (n = ::recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0;)
    got += static_cast<std::size_t>(n);
  ::close(fd);
  if (std::strstr(buf, "forbidden") != nullptr) return 0;
  if (std::strstr(buf, "\"ok\":true") != nullptr) return 2;
  return 5;
}

TEST_F(ControlSocketTest, AnotherUserIsRefused) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to connect as another user (setresuid to nobody)";
  }
  server_ = StartServer();
  ASSERT_TRUE(server_);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);

  // First line: the file modes keep another user from reaching the socket at all.
  fs::permissions(root_, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  EXPECT_EQ(AsNobody(TryPauseAsPeer, addr), 1);
  EXPECT_FALSE(state_.paused());

  // Second line: with the modes opened by mistake, the peer's uid (SO_PEERCRED) is refused.
  fs::permissions(dir_, fs::perms::all);
  fs::permissions(path_, fs::perms::all);
  EXPECT_EQ(AsNobody(TryPauseAsPeer, addr), 0);
  EXPECT_FALSE(state_.paused());
  EXPECT_EQ(server_->refused_peers(), 1);

  // The owner is still served.
  auto mine = SendControl(path_, "pause");
  ASSERT_TRUE(mine && Ok(*mine));
  EXPECT_TRUE(state_.paused());
}

}  // namespace
}  // namespace ubcp::client
