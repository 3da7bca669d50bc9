// SPDX-License-Identifier: Apache-2.0
// Crash recovery of the credit ledger with the real programs: a coordinator (ubcp-coordinator
// serve) that is SIGKILLed at random moments and restarted on the same port, three donor
// clients (ubcp-client) that keep working through the restarts, and jobs submitted with the
// recipient's tool (ubcp). Afterwards check-ledger passes, every result a donor was told was
// accepted (or a duplicate) is stored exactly once, and no unit is paid for twice.
//
// The random waits come from a seeded generator; the seed is printed, and UBCP_CRASH_SEED
// replays a run.
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
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ubcp/common/wire.h"

extern char** environ;

namespace ubcp::itest {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Row = std::vector<std::string>;

constexpr int kDonors = 3;
constexpr int kJobs = 6;
constexpr int kKills = 18;
constexpr int kMinKillsMidWork = 5;

void SleepSeconds(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, std::size_t n = 4000) {
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

std::string DescribeStatus(int st) {
  if (st == -1) return "unknown status";
  if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "signal " + std::to_string(WTERMSIG(st));
  return "status " + std::to_string(st);
}

// Starts `args` (args[0] is a path) with stdin from /dev/null and stdout and stderr appended to
// `out` and `err` (which may be the same file).
Child Spawn(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
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
int PickFreePort() {
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

// Small jobs: an MLP on sklearn's digits, ten rounds of 2-3 units of 400 local steps (a fraction
// of a second each); six of them keep three donors busy through most of the kills. The 10 s
// lease (the minimum) soon re-issues a unit whose manifest was lost in a crash.
std::string CrashJob(int i) {
  common::JobSpec spec;
  spec.name = "crash-" + std::to_string(i);
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = 10;
  spec.units_per_round = 2 + i % 2;
  spec.eval_units = 1;
  spec.params = {400, 32, 0.05, 0.9, 0.0, "sgd", static_cast<std::uint64_t>(7 + i)};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  spec.deadline_s = 10;
  return common::SerializeJobSpec(spec);
}

// Unit ids a donor's log reports as acknowledged by the coordinator; client/src/runner/runner.cc
// logs "unit <id> done: ... (<ack status>)" only after the coordinator's answer.
std::map<std::int64_t, std::string> AcknowledgedUnits(const std::string& log) {
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

class CrashRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ubcp-crash-" + std::to_string(::getpid()));
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
      for (int i = 0; i < kDonors; ++i) {
        std::cout << "donor-" << i << " log:\n" << Tail(ReadFile(DonorLog(i)), 2000) << "\n";
      }
      std::cout << "data kept in " << dir_ << "\n";
    } else {
      fs::remove_all(dir_);
    }
  }

  fs::path DonorLog(int i) const { return dir_ / ("donor-" + std::to_string(i) + ".log"); }
  fs::path DonorState(int i) const { return dir_ / ("donor-" + std::to_string(i)); }
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

  // What the coordinator is in the middle of: running jobs, and units leased to donors.
  std::pair<std::int64_t, std::int64_t> WorkInProgress() {
    Db db(data_ / "coordinator.db");
    return {db.Int("SELECT COUNT(*) FROM jobs WHERE state = 'running'"),
            db.Int("SELECT COUNT(*) FROM units WHERE state = 'leased'")};
  }

  fs::path dir_, data_, port_file_, coordinator_log_;
  int port_ = 0;
  std::string url_, token_;
  Child coordinator_;
  std::vector<Child> donors_;
};

TEST_F(CrashRecoveryTest, KilledCoordinatorLosesAndDoublesNothing) {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("UBCP_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "crash-recovery seed " << seed << " (UBCP_CRASH_SEED=" << seed
            << " replays the waits)\n";
  std::mt19937_64 rng(seed);
  const auto started = Clock::now();

  ASSERT_TRUE(StartCoordinator());
  auto account = RunTool(
      {UBCP_COORDINATOR_BIN, "add-account", "--data", data_.string(), "--name", "recipient"});
  ASSERT_TRUE(account.ok()) << account.err;
  std::istringstream(account.out) >> token_;
  ASSERT_EQ(token_.size(), 64u) << account.out;
  auto info = RunTool({UBCP_COORDINATOR_BIN, "info", "--data", data_.string()});
  ASSERT_TRUE(info.ok()) << info.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(info.out, m, std::regex(R"(signing_key ([0-9a-f]{64}))")))
      << info.out;
  const std::string signing_key = m[1];

  // The recipient's basic share comes from the current period (at once, or at the first tick).
  {
    const auto until = Clock::now() + std::chrono::seconds(10);
    std::int64_t balance = 0;
    while ((balance = Db(data_ / "coordinator.db")
                          .Int("SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e JOIN "
                               "accounts a ON e.account = 'recipient:' || a.id WHERE a.name = "
                               "'recipient'")) <= 0 &&
           Clock::now() < until) {
      SleepSeconds(0.1);
    }
    ASSERT_GT(balance, 0) << "the recipient received no credits";
  }

  for (int i = 0; i < kDonors; ++i) {
    // Each donor attaches to its own donor account, so replicas can go to any two of them.
    auto donor_account = RunTool({UBCP_COORDINATOR_BIN, "add-account", "--data", data_.string(),
                                  "--name", "donor-owner-" + std::to_string(i), "--donor"});
    ASSERT_TRUE(donor_account.ok()) << donor_account.err;
    std::string donor_token;
    std::istringstream(donor_account.out) >> donor_token;
    donors_.push_back(Spawn({UBCP_CLIENT_BIN, "--coordinator", url_, "--ca-file", Cert().string(),
                             "--coordinator-key", signing_key, "--state", DonorState(i).string(),
                             "--name", "donor-" + std::to_string(i), "--account-token", donor_token,
                             "--threads", "1", "--poll", "0.2", "--bench-seconds", "0.2"},
                            DonorLog(i), DonorLog(i)));
  }
  // A donor that cannot reach the coordinator while it registers gives up: no kill before every
  // donor is registered.
  for (int i = 0; i < kDonors; ++i) {
    const auto until = Clock::now() + std::chrono::seconds(30);
    while (!fs::exists(DonorState(i) / "registration.json") && donors_[i].Running() &&
           Clock::now() < until) {
      SleepSeconds(0.05);
    }
    ASSERT_TRUE(fs::exists(DonorState(i) / "registration.json"))
        << "donor " << i << " did not register: " << Tail(ReadFile(DonorLog(i)));
  }
  std::map<std::int64_t, int> donor_of_host;
  for (int i = 0; i < kDonors; ++i) {
    const std::string reg = ReadFile(DonorState(i) / "registration.json");
    ASSERT_TRUE(std::regex_search(reg, m, std::regex(R"("host_id":(\d+))"))) << reg;
    donor_of_host[std::stoll(m[1])] = i;
  }
  ASSERT_EQ(donor_of_host.size(), static_cast<std::size_t>(kDonors));

  std::vector<std::int64_t> jobs;
  for (int i = 0; i < kJobs; ++i) {
    const fs::path spec = dir_ / ("job-" + std::to_string(i) + ".json");
    std::ofstream(spec) << CrashJob(i);
    auto submitted = RunTool(Cli({"submit", spec.string()}));
    ASSERT_TRUE(submitted.ok()) << submitted.out << submitted.err;
    jobs.push_back(std::stoll(submitted.out));
  }
  std::cout << "submitted " << kJobs << " jobs after "
            << std::chrono::duration<double>(Clock::now() - started).count() << " s\n";

  // The kill loop: SIGKILL at a random moment, restart at once on the same port.
  std::uniform_real_distribution<double> pause(0.2, 2.5);
  int kills_mid_work = 0;
  std::int64_t leases_at_kills = 0;
  double restart_s = 0;
  for (int k = 0; k < kKills; ++k) {
    SleepSeconds(pause(rng));
    ASSERT_TRUE(coordinator_.Running())
        << "the coordinator died by itself (" << DescribeStatus(coordinator_.status()) << ")";
    const auto [running, leased] = WorkInProgress();
    if (running > 0) ++kills_mid_work;
    leases_at_kills += leased;
    coordinator_.Kill();
    ASSERT_TRUE(WIFSIGNALED(coordinator_.status()) && WTERMSIG(coordinator_.status()) == SIGKILL)
        << DescribeStatus(coordinator_.status());
    const auto t0 = Clock::now();
    ASSERT_TRUE(StartCoordinator()) << "restart " << k + 1;
    restart_s += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  Db live(data_ / "coordinator.db");
  std::cout << kKills << " SIGKILLs, " << kills_mid_work << " of them while a job was running, "
            << leases_at_kills << " units leased in all at those moments; mean restart "
            << restart_s / kKills << " s; results stored so far "
            << live.Int("SELECT COUNT(*) FROM results") << "\n";
  EXPECT_GE(kills_mid_work, kMinKillsMidWork)
      << "the jobs finished too early for the kills to test recovery";

  // The jobs go on after the last restart and finish.
  const std::string job_list = [&] {
    std::string s;
    for (auto id : jobs) s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
  }();
  const auto finish_by = Clock::now() + std::chrono::seconds(150);
  while (live.Int("SELECT COUNT(*) FROM jobs WHERE id IN (" + job_list +
                  ") AND state IN ('queued', 'running')") > 0 &&
         Clock::now() < finish_by) {
    SleepSeconds(0.25);
  }
  for (const Row& row : live.Query("SELECT id, state, current_round, rounds, error FROM jobs")) {
    EXPECT_EQ(row[1], "done") << "job " << row[0] << " round " << row[2] << "/" << row[3] << " "
                              << row[4];
  }

  // Every stored result was answered to its donor, though maybe only after a restart: wait for
  // the donors' last retries to land before stopping them.
  const std::int64_t stored = live.Int("SELECT COUNT(*) FROM results");
  auto count_acks = [&] {
    std::size_t n = 0;
    for (int i = 0; i < kDonors; ++i) n += AcknowledgedUnits(ReadFile(DonorLog(i))).size();
    return n;
  };
  const auto acked_by = Clock::now() + std::chrono::seconds(30);
  while (static_cast<std::int64_t>(count_acks()) < stored && Clock::now() < acked_by) {
    SleepSeconds(0.25);
  }
  for (int i = 0; i < kDonors; ++i) {
    EXPECT_TRUE(donors_[i].Running())
        << "donor " << i << " stopped by itself: " << DescribeStatus(donors_[i].status());
    const int st = donors_[i].Terminate(15);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << "donor " << i << ": " << DescribeStatus(st);
  }
  const int coordinator_status = coordinator_.Terminate(15);
  EXPECT_TRUE(WIFEXITED(coordinator_status) && WEXITSTATUS(coordinator_status) == 0)
      << DescribeStatus(coordinator_status);

  // 1. The ledger's own invariants.
  auto check = RunTool({UBCP_COORDINATOR_BIN, "check-ledger", "--data", data_.string()});
  EXPECT_TRUE(check.ok()) << DescribeStatus(check.status) << "\n" << check.out << check.err;

  Db db(data_ / "coordinator.db");
  // 2. Every result acknowledged to a donor is stored once, as that donor's.
  std::map<std::int64_t, std::int64_t> result_host;  // unit -> host
  for (const Row& row : db.Query("SELECT unit_id, host_id FROM results")) {
    result_host[std::stoll(row[0])] = std::stoll(row[1]);
  }
  std::set<std::int64_t> acked;
  int duplicates = 0;
  for (const auto& [host, donor] : donor_of_host) {
    for (const auto& [unit, status] : AcknowledgedUnits(ReadFile(DonorLog(donor)))) {
      EXPECT_TRUE(acked.insert(unit).second) << "unit " << unit << " acknowledged to two donors";
      duplicates += status == "duplicate";
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE unit_id = " + std::to_string(unit)), 1)
          << "unit " << unit << " was acknowledged (" << status << ") to donor " << donor;
      auto it = result_host.find(unit);
      if (it != result_host.end()) {
        EXPECT_EQ(it->second, host) << "unit " << unit << " is stored as another host's result";
      }
    }
  }
  // ... and nothing was stored that its donor never heard of.
  for (const auto& [unit, host] : result_host) {
    EXPECT_TRUE(acked.count(unit))
        << "unit " << unit << " of host " << host << " is stored but its donor was never answered";
  }
  std::cout << acked.size() << " results acknowledged (" << duplicates
            << " as duplicates of a result stored before a crash), " << result_host.size()
            << " stored\n";
  EXPECT_GT(acked.size(), 0u);

  // 3. Nothing counted twice: per job, one spend and one points transaction per valid result
  //    that costs credits, for exactly that result's credits, and the job's price is exactly
  //    what it spent plus what was refunded (adaptive replication computes fewer replicas than
  //    priced once donors are trusted). Every donor here is honest: no result is invalid.
  for (std::int64_t job : jobs) {
    const std::string j = std::to_string(job);
    SCOPED_TRACE("job " + j);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM jobs WHERE id = " + j + " AND state = 'done'"), 1);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM units WHERE job_id = " + j + " AND state != 'done'"), 0);
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j),
              db.Int("SELECT COUNT(*) FROM units WHERE job_id = " + j));
    EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j + " AND status != 'valid'"),
              0);
    const std::int64_t paid =
        db.Int("SELECT COUNT(*) FROM results WHERE job_id = " + j + " AND credits > 0");
    EXPECT_GT(paid, 0);
    for (const std::string kind : {"spend", "points"}) {
      SCOPED_TRACE(kind);
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM ledger_txns WHERE job_id = " + j + " AND kind = '" +
                       kind + "'"),
                paid);
      // Keys are "<kind>:unit:<id>" (unique in the ledger): with the count above, every paid
      // result has its own transaction, for its credits and its host, and there is no other.
      const std::string account =
          kind == "spend" ? "e.account = 'spent'" : "e.account = 'donor:' || r.host_id";
      EXPECT_EQ(db.Int("SELECT COUNT(*) FROM results r JOIN ledger_txns t ON t.key = '" + kind +
                       ":unit:' || r.unit_id JOIN ledger_entries e ON e.txn_key = t.key AND " +
                       account + " AND e.amount = r.credits WHERE r.job_id = " + j +
                       " AND r.credits > 0 AND t.job_id = r.job_id"),
                paid);
    }
    EXPECT_EQ(db.Int("SELECT COALESCE(SUM(credits), 0) FROM results WHERE job_id = " + j) +
                  db.Int("SELECT COALESCE(SUM(e.amount), 0) FROM ledger_txns t JOIN "
                         "ledger_entries e ON e.txn_key = t.key WHERE t.kind = 'refund' AND "
                         "t.job_id = " +
                         j + " AND e.amount > 0"),
              db.Int("SELECT price_credits FROM jobs WHERE id = " + j));
    EXPECT_EQ(db.Int("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account = 'job:" +
                     j + "'"),
              0);
  }
  std::cout << "finished in " << std::chrono::duration<double>(Clock::now() - started).count()
            << " s\n";
}

}  // namespace
}  // namespace ubcp::itest
