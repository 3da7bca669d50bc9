// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integration tests with the real programs (ubcp-coordinator serve, ubcp-client with its
// ubcp-worker, the recipient's ubcp tool) as child processes: starting, killing and reaping them,
// reading the coordinator's SQLite tables directly, and the setting up every such test needs (a
// coordinator on a free loopback port, a recipient with credits, donor accounts).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace ubcp::itest {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Row = std::vector<std::string>;

inline void SleepSeconds(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

inline std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string Tail(const std::string& text, std::size_t n = 4000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// A child process. The destructor SIGKILLs and reaps it if it still runs, so that no process
// outlives the test, whichever assertion ends it.
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
  Child& operator=(Child&& o) noexcept {
    if (this != &o) {
      Kill();
      pid_ = std::exchange(o.pid_, -1);
      status_ = o.status_;
    }
    return *this;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Kill(); }

  pid_t pid() const { return pid_; }
  // True while the process runs; once it has exited it is reaped and its status kept.
  bool Running() {
    if (pid_ <= 0) return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == 0) return true;
    status_ = r == pid_ ? st : -1;
    pid_ = -1;
    return false;
  }
  // Waits up to `seconds` for the process to exit; its wait status, or nullopt if it still runs.
  std::optional<int> WaitFor(double seconds) {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    while (Running()) {
      if (Clock::now() >= until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    status_ = ::waitpid(pid_, &st, 0) == pid_ ? st : -1;
    pid_ = -1;
  }
  // SIGTERM, then SIGKILL after `grace_s`. The wait status.
  int Terminate(double grace_s) {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
    if (!WaitFor(grace_s)) Kill();
    return status_;
  }
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

inline std::string DescribeStatus(int st) {
  if (st == -1) return "unknown status";
  if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "signal " + std::to_string(WTERMSIG(st));
  return "status " + std::to_string(st);
}

// Starts `args` (args[0] is a path) with stdin from /dev/null and stdout and stderr appended to
// `out` and `err` (which may be the same file).
inline Child Spawn(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (out == err) {
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << args[0] << ": " << std::strerror(rc);
    return Child();
  }
  return Child(pid);
}

// Read-only access to the coordinator's SQLite database: the test checks the stored state
// itself rather than trusting the coordinator's own reports.
class Db {
 public:
  explicit Db(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "open " << path << ": " << (db_ ? sqlite3_errmsg(db_) : "no memory");
    }
    // A reader can meet a writer's WAL recovery after a crash: wait instead of failing.
    if (db_) sqlite3_busy_timeout(db_, 5000);
  }
  ~Db() { sqlite3_close(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Every row of `sql` as text (NULL as ""); a failed statement is a test failure.
  std::vector<Row> Query(const std::string& sql) {
    std::vector<Row> rows;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
      return rows;
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      Row row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const auto* text = sqlite3_column_text(stmt, i);
        row.emplace_back(text ? reinterpret_cast<const char*>(text) : "");
      }
      rows.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(stmt);
    return rows;
  }
  // The first column of the first row as an integer (-1 when there is none).
  std::int64_t Int(const std::string& sql) {
    auto rows = Query(sql);
    return rows.empty() || rows[0].empty() ? -1 : std::stoll(rows[0][0]);
  }

 private:
  sqlite3* db_ = nullptr;
};

// A TCP port that was free a moment ago on 127.0.0.1. The coordinator is always restarted on
// it, so the donors find it again.
inline int PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Unit ids a donor's log reports as acknowledged by the coordinator; client/src/runner/runner.cc
// logs "unit <id> done: ... (<ack status>)" only after the coordinator's answer.
inline std::map<std::int64_t, std::string> AcknowledgedUnits(const std::string& log) {
  static const std::regex kDone(R"(unit (\d+) done: .*\((accepted|duplicate)\)\s*$)");
  std::map<std::int64_t, std::string> acks;
  std::istringstream in(log);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, kDone)) {
      auto [it, fresh] = acks.emplace(std::stoll(m[1]), m[2]);
      // A donor runs a unit once: a second "done" line for it would be a second execution.
      if (!fresh) ADD_FAILURE() << "unit " << m[1] << " acknowledged twice to one donor: " << line;
    }
  }
  return acks;
}

// The pids of `ubcp-worker serve` processes whose command line mentions `needle` (a donor's
// state directory, the worker's --root: that donor's workers).
inline std::vector<int> WorkerProcesses(const std::string& needle) {
  std::vector<int> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadFile(entry.path() / "cmdline");
    for (char& c : cmdline) {
      if (c == '\0') c = ' ';
    }
    if (cmdline.find("ubcp-worker serve") != std::string::npos &&
        cmdline.find(needle) != std::string::npos) {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

// A coordinator (restartable on the same port and data directory), the tools to drive it, and
// the donors' processes. TearDown kills every process still running; on failure it prints the
// coordinator's log and each donor's, and keeps the data directory.
class ProgramsTest : public ::testing::Test {
 protected:
  explicit ProgramsTest(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ubcp-" + name_ + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = dir_ / "coordinator";
    port_file_ = dir_ / "port";
    coordinator_log_ = dir_ / "coordinator.log";
    port_ = PickFreePort();
    ASSERT_GT(port_, 0);
    url_ = "https://127.0.0.1:" + std::to_string(port_);
  }

  void TearDown() override {
    for (auto& d : donors_) d.Kill();
    coordinator_.Kill();
    if (HasFailure()) {
      std::cout << "coordinator log:\n" << Tail(ReadFile(coordinator_log_)) << "\n";
      for (std::size_t i = 0; i < donors_.size(); ++i) {
        std::cout << "donor-" << i << " log:\n" << Tail(ReadFile(DonorLog(i)), 2000) << "\n";
      }
      std::cout << "data kept in " << dir_ << "\n";
    } else {
      fs::remove_all(dir_);
    }
  }

  fs::path DonorLog(std::size_t i) const { return dir_ / ("donor-" + std::to_string(i) + ".log"); }
  fs::path DonorState(std::size_t i) const { return dir_ / ("donor-" + std::to_string(i)); }
  fs::path Cert() const { return data_ / "tls" / "cert.pem"; }

  struct Output {
    int status = -1;  // wait status; -1 when it was killed for running too long
    std::string out, err;
    bool ok() const { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  };
  Output RunTool(const std::vector<std::string>& args, double timeout_s = 30) {
    const fs::path out = dir_ / "tool.out", err = dir_ / "tool.err";
    fs::remove(out);
    fs::remove(err);
    Child child = Spawn(args, out, err);
    Output result;
    if (auto st = child.WaitFor(timeout_s)) result.status = *st;
    child.Kill();
    result.out = ReadFile(out);
    result.err = ReadFile(err);
    return result;
  }
  std::vector<std::string> Cli(std::vector<std::string> args) const {
    std::vector<std::string> all = {UBCP_CLI_BIN,    "--coordinator", url_,  "--ca-file",
                                    Cert().string(), "--token",       token_};
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }

  // (Re)starts the coordinator on the same port and data directory and waits until it listens
  // (it writes the port file after binding; Reconcile has run by then).
  ::testing::AssertionResult StartCoordinator() {
    fs::remove(port_file_);
    std::ofstream(coordinator_log_, std::ios::app) << "=== test: starting the coordinator\n";
    coordinator_ = Spawn({UBCP_COORDINATOR_BIN, "serve", "--data", data_.string(), "--port",
                          std::to_string(port_), "--port-file", port_file_.string(),
                          "--period-seconds", "20", "--bootstrap-forecast", "1000000000"},
                         coordinator_log_, coordinator_log_);
    const auto until = Clock::now() + std::chrono::seconds(30);
    while (!fs::exists(port_file_)) {
      if (!coordinator_.Running()) {
        return ::testing::AssertionFailure()
               << "the coordinator exited (" << DescribeStatus(coordinator_.status())
               << ") before listening";
      }
      if (Clock::now() > until) {
        return ::testing::AssertionFailure() << "the coordinator did not listen within 30 s";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return ::testing::AssertionSuccess();
  }

  // After StartCoordinator: a recipient account (token_) that has received its basic credits,
  // and the coordinator's signing key (signing_key_).
  ::testing::AssertionResult SetUpRecipient() {
    auto account = RunTool(
        {UBCP_COORDINATOR_BIN, "add-account", "--data", data_.string(), "--name", "recipient"});
    if (!account.ok()) return ::testing::AssertionFailure() << "add-account: " << account.err;
    std::istringstream(account.out) >> token_;
    if (token_.size() != 64u) return ::testing::AssertionFailure() << "token: " << account.out;
    auto info = RunTool({UBCP_COORDINATOR_BIN, "info", "--data", data_.string()});
    std::smatch m;
    if (!info.ok() ||
        !std::regex_search(info.out, m, std::regex(R"(signing_key ([0-9a-f]{64}))"))) {
      return ::testing::AssertionFailure() << "info: " << info.out << info.err;
    }
    signing_key_ = m[1];
    // The recipient's basic share comes from the current period (at once, or at the first tick).
    const auto until = Clock::now() + std::chrono::seconds(10);
    std::int64_t balance = 0;
    while ((balance = Db(data_ / "coordinator.db")
                          .Int("SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e JOIN "
                               "accounts a ON e.account = 'recipient:' || a.id WHERE a.name = "
                               "'recipient'")) <= 0 &&
           Clock::now() < until) {
      SleepSeconds(0.1);
    }
    if (balance <= 0) return ::testing::AssertionFailure() << "the recipient received no credits";
    return ::testing::AssertionSuccess();
  }

  // A new donor account's token ("" and a test failure when it cannot be made).
  std::string AddDonorAccount(const std::string& name) {
    auto donor_account = RunTool(
        {UBCP_COORDINATOR_BIN, "add-account", "--data", data_.string(), "--name", name, "--donor"});
    EXPECT_TRUE(donor_account.ok()) << donor_account.err;
    std::string token;
    std::istringstream(donor_account.out) >> token;
    return token;
  }

  // The command line of donor `i`'s client, with `extra` flags.
  std::vector<std::string> DonorCommand(std::size_t i, const std::string& account_token,
                                        const std::vector<std::string>& extra) const {
    std::vector<std::string> args = {UBCP_CLIENT_BIN,
                                     "--coordinator",
                                     url_,
                                     "--ca-file",
                                     Cert().string(),
                                     "--coordinator-key",
                                     signing_key_,
                                     "--state",
                                     DonorState(i).string(),
                                     "--name",
                                     "donor-" + std::to_string(i),
                                     "--account-token",
                                     account_token};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Waits (up to `seconds`) until every donor started so far has registered; the donor index of
  // each host id. A donor that did not register is a test failure (and is left out).
  std::map<std::int64_t, int> WaitForRegistrations(double seconds) {
    std::map<std::int64_t, int> donor_of_host;
    std::smatch m;
    for (std::size_t i = 0; i < donors_.size(); ++i) {
      const fs::path registration = DonorState(i) / "registration.json";
      const auto until = Clock::now() + std::chrono::duration<double>(seconds);
      while (!fs::exists(registration) && donors_[i].Running() && Clock::now() < until) {
        SleepSeconds(0.05);
      }
      const std::string reg = ReadFile(registration);
      if (!std::regex_search(reg, m, std::regex(R"("host_id":(\d+))"))) {
        ADD_FAILURE() << "donor " << i << " did not register: " << Tail(ReadFile(DonorLog(i)));
        continue;
      }
      donor_of_host[std::stoll(m[1])] = static_cast<int>(i);
    }
    return donor_of_host;
  }

  // Stops every donor, then the coordinator, with SIGTERM (each must exit 0 within 15 s), and
  // runs check-ledger on the stopped coordinator's data.
  void StopAllAndCheckLedger() {
    for (std::size_t i = 0; i < donors_.size(); ++i) {
      const int st = donors_[i].Terminate(15);
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
          << "donor " << i << ": " << DescribeStatus(st);
    }
    const int coordinator_status = coordinator_.Terminate(15);
    EXPECT_TRUE(WIFEXITED(coordinator_status) && WEXITSTATUS(coordinator_status) == 0)
        << DescribeStatus(coordinator_status);
    auto check = RunTool({UBCP_COORDINATOR_BIN, "check-ledger", "--data", data_.string()});
    EXPECT_TRUE(check.ok()) << DescribeStatus(check.status) << "\n" << check.out << check.err;
  }

  // Submits a job spec (JSON) with the recipient's tool; its id, or -1 and a test failure.
  std::int64_t Submit(const std::string& spec_json, const std::string& file_name) {
    const fs::path spec = dir_ / file_name;
    std::ofstream(spec) << spec_json;
    auto submitted = RunTool(Cli({"submit", spec.string()}));
    EXPECT_TRUE(submitted.ok()) << submitted.out << submitted.err;
    return submitted.ok() ? std::stoll(submitted.out) : -1;
  }

  std::string name_;
  fs::path dir_, data_, port_file_, coordinator_log_;
  int port_ = 0;
  std::string url_, token_, signing_key_;
  Child coordinator_;
  std::vector<Child> donors_;
};

}  // namespace ubcp::itest
