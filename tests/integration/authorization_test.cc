// SPDX-License-Identifier: Apache-2.0
// Authorization of every /v1 route through the real HTTPS server, as a matrix of callers (no
// token, malformed headers, a valid token under another scheme, an unknown token, a donor's host
// token, the owning recipient, another recipient, an admin) and routes (every route of
// docs/PROTOCOL.md, with ranged downloads and chunked uploads of blobs as rows of their own): each
// cell's status is asserted, every refused request must leave the database and the blob store
// (staged uploads included) exactly as they were, and bearer tokens must be stored only as hashes.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;

struct Request {
  std::string method;
  std::string target;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers = {};  // e.g. Range, Content-Range
};

struct Reply {
  int status = 0;
  std::string body;
  std::string model_spec;     // the X-Ubcp-Model-Spec header, if any
  std::string content_range;  // the Content-Range header, if any
};

// Runs one asynchronous operation to completion. The stream's own expiry (set by the caller)
// cancels a stuck operation, so this always returns.
template <class Start>
beast::error_code Await(net::io_context& ioc, Start start) {
  std::optional<beast::error_code> result;
  start([&](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result ? *result : beast::error_code(net::error::operation_aborted);
}

// One request on a fresh TLS connection (verifying the test certificate), with the Authorization
// header sent verbatim ("" sends none). The project's HttpsClient always writes
// "Bearer <token>"; this test must also send other schemes and over-long values.
common::Result<Reply> SendRaw(std::uint16_t port, const fs::path& ca_file, const Request& r,
                              const std::string& authorization) {
  auto failed = [](const char* what, const beast::error_code& ec) {
    return common::MakeError(common::Errc::kNetwork, std::string(what) + ": " + ec.message());
  };
  net::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  beast::error_code ec;
  ctx.load_verify_file(ca_file.string(), ec);
  if (ec) return failed("load CA", ec);
  ctx.set_verify_mode(ssl::verify_peer, ec);
  if (ec) return failed("verify mode", ec);
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  stream.set_verify_callback(ssl::host_name_verification("127.0.0.1"));
  auto& tcp = beast::get_lowest_layer(stream);
  tcp.expires_after(std::chrono::seconds(10));
  const net::ip::tcp::endpoint endpoint(net::ip::address_v4::loopback(), port);
  if (auto e = Await(ioc, [&](auto h) { tcp.async_connect(endpoint, h); })) {
    return failed("connect", e);
  }
  if (auto e = Await(ioc, [&](auto h) { stream.async_handshake(ssl::stream_base::client, h); })) {
    return failed("handshake", e);
  }
  http::request<http::string_body> req;
  req.method_string(r.method);
  req.target(r.target);
  req.version(11);
  req.keep_alive(false);
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  for (const auto& [name, value] : r.headers) req.set(name, value);
  if (r.method != "GET") {
    req.set(http::field::content_type, "application/json");
    req.body() = r.body;
  }
  req.prepare_payload();
  if (auto e = Await(ioc, [&](auto h) { http::async_write(stream, req, h); })) {
    return failed("write", e);
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u << 20);
  if (auto e = Await(ioc, [&](auto h) { http::async_read(stream, buffer, parser, h); })) {
    return failed("read", e);
  }
  const auto& res = parser.get();
  Reply reply;
  reply.status = static_cast<int>(res.result_int());
  reply.body = res.body();
  reply.model_spec = std::string(res["X-Ubcp-Model-Spec"]);
  reply.content_range = std::string(res[http::field::content_range]);
  return reply;
}

// A read-only SQLite connection to the coordinator's database file.
class ReadOnlyDb {
 public:
  explicit ReadOnlyDb(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  ~ReadOnlyDb() { sqlite3_close_v2(db_); }
  ReadOnlyDb(const ReadOnlyDb&) = delete;
  ReadOnlyDb& operator=(const ReadOnlyDb&) = delete;

  // Every row of every table, each cell as its bytes (NULL as "<null>"), rows sorted.
  std::map<std::string, std::vector<std::vector<std::string>>> Dump() {
    std::map<std::string, std::vector<std::vector<std::string>>> out;
    for (const auto& row : Rows("SELECT name FROM sqlite_master WHERE type = 'table'")) {
      out[row[0]] = Rows("SELECT * FROM \"" + row[0] + "\"");
      std::sort(out[row[0]].begin(), out[row[0]].end());
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> Rows(const std::string& sql) {
    std::vector<std::vector<std::string>> rows;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
      return rows;
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const void* data = sqlite3_column_blob(stmt, i);  // integers and reals come as text
        const int size = sqlite3_column_bytes(stmt, i);
        row.emplace_back(data ? std::string(static_cast<const char*>(data), size) : "<null>");
      }
      rows.push_back(std::move(row));
    }
    EXPECT_EQ(rc, SQLITE_DONE) << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(stmt);
    return rows;
  }

  sqlite3* db_ = nullptr;
};

// The callers of the matrix, in the order each route's row lists them. Bob comes before alice
// and the admin so that his refused cancel meets a job that is still running.
enum class Who { kNone, kBasic, kBasicValid, kOverlong, kUnknown, kHost, kBob, kAlice, kAdmin };
constexpr std::array kCallers = {Who::kNone,     Who::kBasic,   Who::kBasicValid,
                                 Who::kOverlong, Who::kUnknown, Who::kHost,
                                 Who::kBob,      Who::kAlice,   Who::kAdmin};
using Row = std::array<int, kCallers.size()>;

const char* NameOf(Who who) {
  switch (who) {
    case Who::kNone:
      return "no Authorization header";
    case Who::kBasic:
      return "'Basic x'";
    case Who::kBasicValid:
      return "'Basic ' + alice's token";
    case Who::kOverlong:
      return "'Bearer ' + 200 characters starting with alice's token";
    case Who::kUnknown:
      return "unknown token";
    case Who::kHost:
      return "donor host token";
    case Who::kBob:
      return "recipient bob (not the owner)";
    case Who::kAlice:
      return "recipient alice (owner)";
    case Who::kAdmin:
      return "admin";
  }
  return "?";
}

// The `received` of an upload state answer ({"id", "received"}) for `id`, or -1.
std::int64_t Received(const std::string& body, const std::string& id) {
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return -1;
  const auto* got_id = v.as_object().if_contains("id");
  const auto* received = v.as_object().if_contains("received");
  if (got_id == nullptr || !got_id->is_string() || got_id->get_string() != id ||
      received == nullptr || !received->is_number()) {
    return -1;
  }
  return received->to_number<std::int64_t>();
}

// The Content-Range of bytes [first, last] of `total`.
std::pair<std::string, std::string> ContentRange(std::size_t first, std::size_t last,
                                                 std::size_t total) {
  return {"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                               std::to_string(total)};
}

struct Route {
  std::string name;
  std::function<Request(Who)> request;
  Row expect;
  // Further checks of an allowed request's answer (its status already matched the row).
  std::function<void(Who, const Request&, const Reply&)> check;
  // For routes on one job: the id of the job in the target, so that a 404 can be compared with
  // the answer for a job that does not exist. Empty for other routes.
  std::function<std::int64_t(Who)> job = {};
};

class AuthorizationTest : public LoopTest {
 protected:
  void SetUp() override {
    LoopTest::SetUp();
    if (HasFatalFailure()) return;
    bob_ = NewAccount("bob", coordinator::Role::kRecipient, &bob_id_);
    admin_ = NewAccount("root", coordinator::Role::kAdmin, &admin_id_);
    donor_ = NewDonor("donor");
    ASSERT_FALSE(HasFailure());
    host_token_ = donor_->registration.token;

    // Half of an upload staged by the donor's host, for GET /v1/uploads/{id}.
    const std::string staged = "staged by the donor " + common::NewToken();
    staged_id_ = common::ContentId(common::AsBytes(staged));
    staged_bytes_ = staged.size() / 2;
    auto chunk = SendRaw(server_->port(), dir_ / "cert.pem",
                         {"PUT",
                          "/v1/blobs/" + staged_id_,
                          staged.substr(0, staged_bytes_),
                          {ContentRange(0, staged_bytes_ - 1, staged.size())}},
                         "Bearer " + host_token_);
    ASSERT_TRUE(chunk);
    ASSERT_EQ(chunk->status, 202) << chunk->body;

    // Alice's jobs: one to look at, two to cancel (one by her, one by the admin), one done.
    main_job_ = SubmitJob(DigitsJob(1));
    cancel_job_ = SubmitJob(DigitsJob(1));
    admin_cancel_job_ = SubmitJob(DigitsJob(1));
    done_job_ = SubmitJob(DigitsJob(1));
    for (std::int64_t id : {main_job_, cancel_job_, admin_cancel_job_, done_job_}) {
      auto job = store_->GetJob(id);
      ASSERT_TRUE(job);
      ASSERT_EQ(job->state, "running") << "job " << id;
    }
    // Training to the end is the loop tests' business; here the job is finished in the store
    // with its initial model as the final one, and published, so that download and catalog
    // answer 200 to those allowed to call them.
    auto rounds = store_->SummarizeRounds(done_job_);
    ASSERT_TRUE(rounds && !rounds->empty());
    final_model_ = (*rounds)[0].model_blob;
    done_spec_ = store_->GetJob(done_job_)->model_spec;
    coordinator::CatalogEntry entry{kPublished, done_spec_, final_model_, done_job_, "test", now_};
    ASSERT_TRUE(store_->FinishJob(done_job_, final_model_, entry, now_));
    model_blob_ = (*store_->SummarizeRounds(main_job_))[0].model_blob;

    // An eval unit leased to the donor, and the signed result that answers it.
    common::WorkRequest eval_only;
    eval_only.kinds = {"eval_batch"};
    auto work = donor_->api->RequestWork(eval_only);
    ASSERT_TRUE(work && work->has_value());
    auto m = common::ParseManifest((**work).payload);
    ASSERT_TRUE(m);
    common::ResultPayload result;
    result.unit_id = m->unit_id;
    result.host_id = m->host_id;
    result.attempt = m->attempt;
    result.manifest_hash = common::PayloadHash(**work);
    result.kind = m->kind;
    result.metrics = {2.3, 0.1, 2.3, 100};
    result_body_ = common::SerializeEnvelope(common::SignPayload(
        *donor_->key, common::kDomainResult, common::SerializeResultPayload(result)));

    // A fine-tune unit leased to the donor, to give up; one leased to another host, whose lease
    // the donor must not be able to end.
    abandon_ = LeaseFinetune(*donor_);
    other_ = NewDonor("other-donor");
    ASSERT_FALSE(HasFailure());
    other_abandon_ = LeaseFinetune(*other_);
    ASSERT_FALSE(HasFailure());
  }

  // Leases a fine-tune unit to `donor`: the report that would give it up.
  common::UnitAbandon LeaseFinetune(Donor& donor) {
    common::WorkRequest finetune;
    finetune.kinds = {"finetune_shard"};
    auto work = donor.api->RequestWork(finetune);
    EXPECT_TRUE(work && work->has_value());
    if (!work || !work->has_value()) return {};
    auto m = common::ParseManifest((**work).payload);
    EXPECT_TRUE(m);
    if (!m) return {};
    common::UnitAbandon report;
    report.unit_id = m->unit_id;
    report.attempt = m->attempt;
    report.manifest_hash = common::PayloadHash(**work);
    report.reason = "unit " + std::to_string(m->unit_id) + ": execution failed: test";
    return report;
  }
  static Request AbandonRequest(const common::UnitAbandon& report) {
    return Request{"POST", "/v1/units/" + std::to_string(report.unit_id) + "/abandon",
                   common::SerializeUnitAbandon(report)};
  }

  std::string NewAccount(const std::string& name, coordinator::Role role, std::int64_t* id) {
    std::string token = common::NewToken();
    auto created = store_->CreateAccount(name, common::TokenHash(token), role, now_);
    EXPECT_TRUE(created);
    *id = created ? *created : 0;
    // Credits of their own, so that a refusal on a job route is about authorization only.
    EXPECT_TRUE(store_->PostLedger(
        coordinator::Transfer("grant:setup:" + name, coordinator::LedgerKind::kGrant,
                              std::string(coordinator::kIssuanceAccount),
                              coordinator::RecipientAccount(*id), kAliceCredits, now_)));
    return token;
  }

  std::string Authorization(Who who) const {
    switch (who) {
      case Who::kNone:
        return "";
      case Who::kBasic:
        return "Basic x";
      case Who::kBasicValid:
        // Only the Bearer scheme carries a token, even a valid one.
        return "Basic " + token_;
      case Who::kOverlong:
        // A valid token followed by more characters is not that token.
        return "Bearer " + token_ + std::string(200 - token_.size(), '0');
      case Who::kUnknown:
        return "Bearer " + unknown_;
      case Who::kHost:
        return "Bearer " + host_token_;
      case Who::kBob:
        return "Bearer " + bob_;
      case Who::kAlice:
        return "Bearer " + token_;
      case Who::kAdmin:
        return "Bearer " + admin_;
    }
    return "";
  }
  std::int64_t AccountId(Who who) const {
    return who == Who::kAlice ? alice_id_ : who == Who::kBob ? bob_id_ : admin_id_;
  }
  std::string AccountName(Who who) const {
    return who == Who::kAlice ? "alice" : who == Who::kBob ? "bob" : "root";
  }
  std::int64_t Balance(std::int64_t account_id) {
    return *store_->Balance(coordinator::RecipientAccount(account_id));
  }

  Reply Send(Who who, const Request& r) {
    auto reply = SendRaw(server_->port(), dir_ / "cert.pem", r, Authorization(who));
    EXPECT_TRUE(reply) << reply.error().ToString();
    return reply ? *reply : Reply{};
  }

  // Everything a request could change: every table, and the files in the blob store.
  struct State {
    std::map<std::string, std::vector<std::vector<std::string>>> tables;
    std::set<std::string> blob_files;
  };
  State TakeState() {
    State s;
    s.tables = ReadOnlyDb(dir_ / "coordinator.db").Dump();
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "blobs")) {
      if (e.is_regular_file()) s.blob_files.insert(e.path().string());
    }
    return s;
  }
  static void ExpectSameState(const State& before, const State& after) {
    EXPECT_EQ(before.blob_files, after.blob_files) << "blob files changed";
    for (const auto& [table, rows] : before.tables) {
      auto it = after.tables.find(table);
      if (it == after.tables.end()) {
        ADD_FAILURE() << "table " << table << " disappeared";
        continue;
      }
      if (it->second == rows) continue;
      std::string diff;
      for (const auto& row : it->second) {
        if (!std::binary_search(rows.begin(), rows.end(), row)) {
          diff += "\n  new or changed row:";
          for (const auto& cell : row) diff += " [" + cell + "]";
        }
      }
      ADD_FAILURE() << "table " << table << " changed (" << rows.size() << " -> "
                    << it->second.size() << " rows)" << diff;
    }
    EXPECT_EQ(before.tables.size(), after.tables.size());
  }

  // A job of someone else must answer exactly like a job that does not exist: the same status,
  // code and message, but for the id.
  void ExpectLikeMissingJob(Who who, const Request& r, const Reply& reply, std::int64_t job_id) {
    const std::string id = std::to_string(job_id);
    Request missing = r;
    const std::string segment = "/jobs/" + id;
    const std::size_t at = missing.target.find(segment);
    ASSERT_NE(at, std::string::npos) << missing.target;
    missing.target.replace(at, segment.size(), "/jobs/" + std::to_string(kMissingJob));
    ASSERT_FALSE(store_->GetJob(kMissingJob));
    Reply other = Send(who, missing);
    EXPECT_EQ(other.status, reply.status) << other.body;
    auto a = common::ParseErrorBody(reply.body);
    auto b = common::ParseErrorBody(other.body);
    ASSERT_TRUE(a && b) << reply.body << " / " << other.body;
    EXPECT_EQ(a->code, b->code);
    EXPECT_EQ(a->message, "no job " + id);
    EXPECT_EQ(b->message, "no job " + std::to_string(kMissingJob));
  }

  common::HostRegistration NewRegistration(const common::SigningKey& key) const {
    common::HostRegistration reg;
    reg.public_key = key.public_key().Hex();
    reg.name = "walk-in";
    reg.issued_at = now_;
    reg.benchmark.matmul_gflops = 1;
    reg.benchmark.cpu_threads = 1;
    reg.benchmark.torch_version = common::TorchVersion();
    reg.capabilities.cpu_cores = 1;
    reg.capabilities.client_version = "0.1.0";
    return reg;
  }
  std::string RegistrationBody() const {
    auto key = common::SigningKey::Generate();
    return common::SerializeEnvelope(common::SignPayload(
        key, common::kDomainRegister, common::SerializeHostRegistration(NewRegistration(key))));
  }

  // Fails if any of `tokens` appears in any cell of any table (case-insensitively); returns the
  // number of cells scanned per table.
  std::map<std::string, std::size_t> ExpectNoRawTokens(const std::vector<std::string>& tokens) {
    std::map<std::string, std::size_t> cells;
    for (const auto& [table, rows] : ReadOnlyDb(dir_ / "coordinator.db").Dump()) {
      for (const auto& row : rows) {
        for (std::string cell : row) {
          ++cells[table];
          std::transform(cell.begin(), cell.end(), cell.begin(),
                         [](unsigned char c) { return std::tolower(c); });
          for (const auto& token : tokens) {
            EXPECT_EQ(cell.find(token), std::string::npos)
                << "raw token " << token << " stored in table " << table;
          }
        }
      }
    }
    return cells;
  }

  std::vector<Route> Routes();
  std::int64_t CancelTarget(Who who) const {
    return who == Who::kAdmin ? admin_cancel_job_ : cancel_job_;
  }

  static constexpr std::int64_t kMissingJob = 987654;
  static constexpr const char* kPublished = "alice-digits";
  std::string bob_, admin_, host_token_;
  std::string unknown_ = common::NewToken();
  std::int64_t bob_id_ = 0, admin_id_ = 0;
  std::unique_ptr<Donor> donor_, other_;
  common::UnitAbandon abandon_, other_abandon_;  // leases of donor_ and of other_
  std::int64_t main_job_ = 0, cancel_job_ = 0, admin_cancel_job_ = 0, done_job_ = 0;
  std::string final_model_, done_spec_, model_blob_, result_body_;
  std::vector<std::string> issued_host_tokens_;  // from POST /v1/hosts in the matrix
  std::string staged_id_;                        // half staged by the donor in SetUp
  std::size_t staged_bytes_ = 0;
  std::map<Who, std::string> chunked_uploads_;  // the whole blob of each caller's first chunk
};

// HTTP statuses, named by their numbers so that the table below reads as one.
constexpr int k200 = 200, k201 = 201, k202 = 202, k206 = 206, k401 = 401, k403 = 403, k404 = 404,
              k416 = 416;

std::vector<Route> AuthorizationTest::Routes() {
  auto get = [](std::string target) {
    return [target](Who) { return Request{"GET", target, ""}; };
  };
  const std::string main = std::to_string(main_job_);
  const std::string done = std::to_string(done_job_);
  // clang-format off
  //                     none  basic x  basic+token  overlong  unknown  host  bob   alice admin
  const Row kPublic   = {k200, k200,    k200,        k200,     k200,    k200, k200, k200, k200};
  const Row kHostOnly = {k401, k401,    k401,        k401,     k401,    k200, k401, k401, k401};
  const Row kAnyToken = {k401, k401,    k401,        k401,     k401,    k200, k200, k200, k200};
  const Row kAccounts = {k401, k401,    k401,        k401,     k401,    k401, k200, k200, k200};
  const Row kOwner    = {k401, k401,    k401,        k401,     k401,    k401, k404, k200, k200};
  const Row kAdmins   = {k401, k401,    k401,        k401,     k401,    k401, k403, k403, k200};
  // This coordinator runs without an offline root: there is no key statement to give anyone.
  const Row kNoRoot   = {k404, k404,    k404,        k404,     k404,    k404, k404, k404, k404};
  // clang-format on
  // The same row with another success status.
  auto answered = [](int status, Row row) {
    for (int& s : row) s = s == k200 ? status : s;
    return row;
  };
  auto created = [&](Row row) { return answered(k201, row); };
  const std::string kPublicName = "authz-donor";
  const std::string kTeam = "authz-team";

  std::vector<Route> routes;
  routes.push_back(
      {"GET /v1/health", get("/v1/health"), kPublic, [](Who, const Request&, const Reply& r) {
         EXPECT_EQ(r.body, R"({"status":"ok","protocol":1})");
       }});
  routes.push_back(
      {"GET /v1/info", get("/v1/info"), kPublic, [this](Who, const Request&, const Reply& r) {
         EXPECT_NE(r.body.find(signing_key_->public_key().Hex()), std::string::npos);
       }});
  routes.push_back({"GET /v1/keys", get("/v1/keys"), kNoRoot, nullptr});
  routes.push_back({"POST /v1/hosts",
                    [this](Who) {
                      return Request{"POST", "/v1/hosts", RegistrationBody()};
                    },
                    // A host attaches to the account whose token it presents.
                    created(kAccounts),
                    [this](Who, const Request&, const Reply& r) {
                      auto registered = common::ParseHostRegistered(r.body);
                      ASSERT_TRUE(registered);
                      auto host = store_->FindHostByTokenHash(common::TokenHash(registered->token));
                      ASSERT_TRUE(host);
                      EXPECT_EQ(host->id, registered->host_id);
                      issued_host_tokens_.push_back(registered->token);
                    }});
  routes.push_back({"POST /v1/work",
                    [](Who) {
                      common::WorkRequest request;
                      request.kinds = {"finetune_shard"};
                      return Request{"POST", "/v1/work", common::SerializeWorkRequest(request)};
                    },
                    kHostOnly,
                    [this](Who, const Request&, const Reply& r) {
                      auto env = common::ParseEnvelope(r.body);
                      ASSERT_TRUE(env);
                      EXPECT_TRUE(common::VerifyEnvelope(*env, common::kDomainManifest,
                                                         signing_key_->public_key()));
                      auto m = common::ParseManifest(env->payload);
                      ASSERT_TRUE(m);
                      EXPECT_EQ(m->host_id, donor_->registration.host_id);
                    }});
  routes.push_back({"POST /v1/results",
                    [this](Who) {
                      return Request{"POST", "/v1/results", result_body_};
                    },
                    kHostOnly,
                    [](Who, const Request&, const Reply& r) {
                      auto ack = common::ParseResultAck(r.body);
                      ASSERT_TRUE(ack);
                      EXPECT_EQ(ack->status, "accepted");
                    }});
  routes.push_back({"POST /v1/units/{id}/abandon", [this](Who) { return AbandonRequest(abandon_); },
                    kHostOnly,
                    [this](Who, const Request&, const Reply& r) {
                      auto ack = common::ParseUnitAbandonAck(r.body);
                      ASSERT_TRUE(ack) << r.body;
                      EXPECT_TRUE(ack->released);
                      auto unit = store_->GetUnit(abandon_.unit_id);
                      ASSERT_TRUE(unit);
                      EXPECT_EQ(unit->state, coordinator::UnitState::kLeased);
                      EXPECT_LT(unit->lease_deadline, now_.load());
                    }});
  // The donor's token with the report of another host's lease: answered, but nothing changes.
  routes.push_back({"POST /v1/units/{id}/abandon of another host's lease",
                    [this](Who) { return AbandonRequest(other_abandon_); }, kHostOnly,
                    [this](Who, const Request&, const Reply& r) {
                      auto ack = common::ParseUnitAbandonAck(r.body);
                      ASSERT_TRUE(ack) << r.body;
                      EXPECT_FALSE(ack->released);
                      auto unit = store_->GetUnit(other_abandon_.unit_id);
                      ASSERT_TRUE(unit);
                      EXPECT_EQ(unit->host_id, other_->registration.host_id);
                      EXPECT_EQ(unit->attempt, other_abandon_.attempt);
                      EXPECT_GT(unit->lease_deadline, now_.load());
                    }});
  routes.push_back({"GET /v1/blobs/{id}", get("/v1/blobs/" + model_blob_), kAnyToken,
                    [this](Who, const Request&, const Reply& r) {
                      EXPECT_EQ(common::ContentId(common::AsBytes(r.body)), model_blob_);
                    }});
  routes.push_back(
      {"PUT /v1/blobs/{id}",
       [](Who who) {
         // A blob of its own for each caller, so that a refused upload would leave a trace.
         std::string bytes = std::string("upload by ") + NameOf(who) + " " + common::NewToken();
         return Request{"PUT", "/v1/blobs/" + common::ContentId(common::AsBytes(bytes)), bytes};
       },
       created(kHostOnly),
       [this](Who, const Request& q, const Reply&) {
         auto stored = blobs_->Get(q.target.substr(std::string("/v1/blobs/").size()), 1 << 20);
         ASSERT_TRUE(stored);
         EXPECT_EQ(common::AsString(*stored), q.body);
       }});
  routes.push_back(
      {"GET /v1/blobs/{id} with Range",
       [this](Who) {
         return Request{"GET", "/v1/blobs/" + model_blob_, "", {{"Range", "bytes=1-10"}}};
       },
       answered(k206, kAnyToken),
       [this](Who who, const Request& q, const Reply& r) {
         auto whole = blobs_->Get(model_blob_, 64u << 20);
         ASSERT_TRUE(whole);
         ASSERT_GT(whole->size(), 11u);
         const std::string size = std::to_string(whole->size());
         EXPECT_EQ(r.body, common::AsString(*whole).substr(1, 10));
         EXPECT_EQ(r.content_range, "bytes 1-10/" + size);
         // A range past the end is unsatisfiable for a caller who may read the blob.
         Request past = q;
         past.headers = {{"Range", "bytes=" + size + "-"}};
         const Reply beyond = Send(who, past);
         EXPECT_EQ(beyond.status, k416) << beyond.body;
         EXPECT_EQ(beyond.content_range, "bytes */" + size);
       }});
  routes.push_back(
      {"PUT /v1/blobs/{id} with Content-Range",
       [this](Who who) {
         // The first half of a blob of its own for each caller: a refused chunk would leave a
         // staging file.
         const std::string bytes =
             std::string("chunked upload by ") + NameOf(who) + " " + common::NewToken();
         chunked_uploads_[who] = bytes;
         const std::size_t half = bytes.size() / 2;
         return Request{"PUT",
                        "/v1/blobs/" + common::ContentId(common::AsBytes(bytes)),
                        bytes.substr(0, half),
                        {ContentRange(0, half - 1, bytes.size())}};
       },
       answered(k202, kHostOnly),
       [this](Who who, const Request& q, const Reply& r) {
         const std::string& bytes = chunked_uploads_[who];
         const std::string id = q.target.substr(std::string("/v1/blobs/").size());
         const std::size_t half = q.body.size();
         EXPECT_EQ(Received(r.body, id), static_cast<std::int64_t>(half)) << r.body;
         Reply progress = Send(who, {"GET", "/v1/uploads/" + id, ""});
         EXPECT_EQ(progress.status, k200);
         EXPECT_EQ(Received(progress.body, id), static_cast<std::int64_t>(half)) << progress.body;
         // The rest completes the blob.
         Reply last = Send(who, {"PUT",
                                 q.target,
                                 bytes.substr(half),
                                 {ContentRange(half, bytes.size() - 1, bytes.size())}});
         EXPECT_EQ(last.status, k201) << last.body;
         auto stored = blobs_->Get(id, 1 << 20);
         ASSERT_TRUE(stored);
         EXPECT_EQ(common::AsString(*stored), bytes);
       }});
  routes.push_back(
      {"GET /v1/uploads/{id}", get("/v1/uploads/" + staged_id_), kHostOnly,
       [this](Who, const Request&, const Reply& r) {
         EXPECT_EQ(Received(r.body, staged_id_), static_cast<std::int64_t>(staged_bytes_))
             << r.body;
       }});
  routes.push_back({"POST /v1/jobs/quote",
                    [](Who) {
                      return Request{"POST", "/v1/jobs/quote", DigitsJob(1)};
                    },
                    kAccounts,
                    [this](Who who, const Request&, const Reply& r) {
                      auto quote = common::ParseJobQuote(r.body);
                      ASSERT_TRUE(quote);
                      EXPECT_GT(quote->price_credits, 0);
                      EXPECT_EQ(quote->balance_credits, Balance(AccountId(who)));
                    }});
  routes.push_back({"POST /v1/jobs",
                    [](Who) {
                      return Request{"POST", "/v1/jobs", DigitsJob(1)};
                    },
                    created(kAccounts),
                    [this](Who who, const Request&, const Reply& r) {
                      auto job = common::ParseJobCreated(r.body);
                      ASSERT_TRUE(job);
                      EXPECT_EQ(store_->GetJob(job->job_id)->account_id, AccountId(who));
                    }});
  routes.push_back(
      {"GET /v1/jobs", get("/v1/jobs"), kAccounts, [this](Who who, const Request&, const Reply& r) {
         auto list = common::ParseJobList(r.body);
         ASSERT_TRUE(list);
         bool has_main = false;
         for (const auto& j : list->jobs) {
           EXPECT_EQ(store_->GetJob(j.job_id)->account_id, AccountId(who))
               << "job " << j.job_id << " listed for " << NameOf(who);
           has_main = has_main || j.job_id == main_job_;
         }
         EXPECT_EQ(has_main, who == Who::kAlice);
         EXPECT_EQ(list->jobs.size(), store_->ListJobs(AccountId(who))->size());
       }});
  routes.push_back({"GET /v1/jobs/{id}", get("/v1/jobs/" + main), kOwner,
                    [this](Who, const Request&, const Reply& r) {
                      auto status = common::ParseJobStatus(r.body);
                      ASSERT_TRUE(status);
                      EXPECT_EQ(status->job_id, main_job_);
                      EXPECT_EQ(status->state, "running");
                    },
                    [this](Who) { return main_job_; }});
  routes.push_back({"GET /v1/jobs/{id}/model", get("/v1/jobs/" + done + "/model"), kOwner,
                    [this](Who, const Request&, const Reply& r) {
                      EXPECT_EQ(common::ContentId(common::AsBytes(r.body)), final_model_);
                      EXPECT_EQ(r.model_spec, done_spec_);
                    },
                    [this](Who) { return done_job_; }});
  routes.push_back({"POST /v1/jobs/{id}/cancel",
                    [this](Who who) {
                      // The admin cancels a job of alice's of its own, so that both cancels change
                      // a job.
                      std::int64_t id = CancelTarget(who);
                      return Request{"POST", "/v1/jobs/" + std::to_string(id) + "/cancel", ""};
                    },
                    kOwner,
                    [this](Who who, const Request&, const Reply& r) {
                      const std::int64_t id = CancelTarget(who);
                      auto status = common::ParseJobStatus(r.body);
                      ASSERT_TRUE(status);
                      EXPECT_EQ(status->job_id, id);
                      EXPECT_EQ(status->state, "cancelled");
                      EXPECT_EQ(store_->GetJob(id)->state, "cancelled");
                    },
                    [this](Who who) { return CancelTarget(who); }});
  routes.push_back({"GET /v1/credits", get("/v1/credits"), kAccounts,
                    [this](Who who, const Request&, const Reply& r) {
                      auto credits = common::ParseCreditsStatus(r.body);
                      ASSERT_TRUE(credits);
                      EXPECT_EQ(credits->account, AccountName(who));
                      EXPECT_EQ(credits->balance_credits, Balance(AccountId(who)));
                    }});
  routes.push_back({"GET /v1/catalog", get("/v1/catalog"), kAccounts,
                    [this](Who, const Request&, const Reply& r) {
                      auto catalog = common::ParseCatalog(r.body);
                      ASSERT_TRUE(catalog);
                      ASSERT_EQ(catalog->models.size(), 1u);
                      EXPECT_EQ(catalog->models[0].name, kPublished);
                      EXPECT_EQ(catalog->models[0].blob, final_model_);
                    }});
  routes.push_back(
      {"POST /v1/admin/grants",
       [](Who who) {
         common::GrantRequest grant;
         grant.account = "bob";
         grant.credits = 1000;
         grant.key = "authz-" + std::to_string(static_cast<int>(who));
         return Request{"POST", "/v1/admin/grants", common::SerializeGrantRequest(grant)};
       },
       kAdmins,
       [this](Who, const Request&, const Reply& r) {
         auto credits = common::ParseCreditsStatus(r.body);
         ASSERT_TRUE(credits);
         EXPECT_EQ(credits->account, "bob");
         EXPECT_EQ(credits->balance_credits, Balance(bob_id_));
       }});
  routes.push_back({"GET /v1/admin/capacity", get("/v1/admin/capacity"), kAdmins,
                    [](Who, const Request&, const Reply& r) {
                      auto report = common::ParseCapacityReport(r.body);
                      ASSERT_TRUE(report);
                      EXPECT_GE(report->hosts_registered, 1);
                    }});
  routes.push_back({"PUT /v1/hosts/me/profile",
                    [=](Who) {
                      return Request{"PUT", "/v1/hosts/me/profile",
                                     common::SerializeDonorProfile(
                                         {common::kProtocolVersion, kPublicName, kTeam})};
                    },
                    kHostOnly,
                    [=](Who, const Request&, const Reply& r) {
                      auto profile = common::ParseDonorProfile(r.body);
                      ASSERT_TRUE(profile);
                      EXPECT_EQ(profile->public_name, kPublicName);
                    }});
  routes.push_back({"GET /v1/hosts/me/contribution", get("/v1/hosts/me/contribution"), kHostOnly,
                    [=, this](Who, const Request&, const Reply& r) {
                      auto contribution = common::ParseContribution(r.body);
                      ASSERT_TRUE(contribution);
                      EXPECT_EQ(contribution->host_id, donor_->registration.host_id);
                      EXPECT_EQ(contribution->team, kTeam);
                    }});
  // Only the host's profile, set above, lists anyone.
  routes.push_back({"GET /v1/leaderboard", get("/v1/leaderboard"), kPublic,
                    [=, this](Who, const Request&, const Reply& r) {
                      auto board = common::ParseLeaderboard(r.body);
                      ASSERT_TRUE(board);
                      ASSERT_EQ(board->donors.size(), 1u);
                      EXPECT_EQ(board->donors[0].host_id, donor_->registration.host_id);
                      EXPECT_EQ(board->donors[0].name, kPublicName);
                    }});
  return routes;
}

TEST_F(AuthorizationTest, EveryRouteAnswersEachCallerAsItsRoleAllows) {
  const std::vector<Route> routes = Routes();
  // The 23 routes of docs/PROTOCOL.md, plus a ranged GET and a chunked PUT of a blob, and the
  // abandon of another host's lease.
  ASSERT_EQ(routes.size(), 26u);
  for (const Route& route : routes) {
    for (std::size_t c = 0; c < kCallers.size(); ++c) {
      const Who who = kCallers[c];
      const int expected = route.expect[c];
      const Request request = route.request(who);
      const bool refused = expected >= 400;
      const std::int64_t bob_balance = Balance(bob_id_);
      State before;
      if (refused) before = TakeState();

      const Reply reply = Send(who, request);
      SCOPED_TRACE(route.name + " as " + NameOf(who) + " -> " + std::to_string(reply.status) + " " +
                   reply.body.substr(0, 300));
      EXPECT_EQ(reply.status, expected);
      if (reply.status != expected) continue;  // report every wrong cell, not only the first
      if (refused) {
        auto error = common::ParseErrorBody(reply.body);
        ASSERT_TRUE(error);
        EXPECT_EQ(coordinator::HttpStatusFor(error->code), expected);
        // A refused request changes nothing at all: no row, no blob, no lease, no credit.
        ExpectSameState(before, TakeState());
        EXPECT_EQ(Balance(bob_id_), bob_balance);
        // Every refused cancel comes before alice's and the admin's: both jobs still run.
        if (route.name.ends_with("/cancel")) {
          EXPECT_EQ(store_->GetJob(cancel_job_)->state, "running");
          EXPECT_EQ(store_->GetJob(admin_cancel_job_)->state, "running");
        }
      }
      if (!refused && route.check) route.check(who, request, reply);
      // A job route's 404 (another account's job) must look like a missing job's.
      if (expected == k404 && route.job) {
        ExpectLikeMissingJob(who, request, reply, route.job(who));
      }
    }
  }
  // The admin's grant was the only one that reached the ledger.
  std::vector<std::string> grants;
  auto tables = ReadOnlyDb(dir_ / "coordinator.db").Dump();
  for (const auto& row : tables["ledger_txns"]) {
    if (row[0].starts_with("grant:authz-")) grants.push_back(row[0]);
  }
  EXPECT_EQ(grants, std::vector<std::string>{"grant:authz-" +
                                             std::to_string(static_cast<int>(Who::kAdmin))});
  EXPECT_EQ(issued_host_tokens_.size(), 3u);  // bob, alice and the admin attached a host each
  auto cells = ExpectNoRawTokens(issued_host_tokens_);
  EXPECT_GT(cells["hosts"], 0u);
}

TEST_F(AuthorizationTest, AbandonRefusesABadPathOrBodyAndChangesNothing) {
  const State before = TakeState();
  common::UnitAbandon other_unit = abandon_;
  other_unit.unit_id = other_abandon_.unit_id;
  common::UnitAbandon too_long = abandon_;
  too_long.reason = std::string(common::kMaxAbandonReason + 1, 'r');
  common::UnitAbandon unknown = abandon_;
  unknown.unit_id = 987654;
  const std::string path = "/v1/units/" + std::to_string(abandon_.unit_id) + "/abandon";
  const struct {
    const char* what;
    Request request;
    int status;
  } cases[] = {
      {"body names another unit", {"POST", path, common::SerializeUnitAbandon(other_unit)}, 400},
      {"not JSON", {"POST", path, "{"}, 400},
      {"empty body", {"POST", path, ""}, 400},
      {"reason over the limit", {"POST", path, common::SerializeUnitAbandon(too_long)}, 400},
      {"id not a number",
       {"POST", "/v1/units/x/abandon", common::SerializeUnitAbandon(abandon_)},
       400},
      {"id zero", {"POST", "/v1/units/0/abandon", common::SerializeUnitAbandon(abandon_)}, 400},
      {"unknown unit", AbandonRequest(unknown), 404},
      {"GET", {"GET", path, ""}, 404},
  };
  for (const auto& c : cases) {
    const Reply reply = Send(Who::kHost, c.request);
    EXPECT_EQ(reply.status, c.status) << c.what << ": " << reply.body;
    if (reply.status >= 400) {
      auto error = common::ParseErrorBody(reply.body);
      EXPECT_TRUE(error) << c.what << ": " << reply.body;
    }
  }
  ExpectSameState(before, TakeState());
  // The valid report still releases the lease, once.
  Reply released = Send(Who::kHost, AbandonRequest(abandon_));
  ASSERT_EQ(released.status, k200) << released.body;
  EXPECT_EQ(released.body, common::SerializeUnitAbandonAck({common::kProtocolVersion, true}));
  Reply again = Send(Who::kHost, AbandonRequest(abandon_));
  ASSERT_EQ(again.status, k200) << again.body;
  EXPECT_EQ(again.body, common::SerializeUnitAbandonAck({common::kProtocolVersion, false}));
}

TEST_F(AuthorizationTest, TokensAreStoredOnlyAsHashes) {
  auto registered = SendRaw(server_->port(), dir_ / "cert.pem",
                            {"POST", "/v1/hosts", RegistrationBody()}, "Bearer " + bob_);
  ASSERT_TRUE(registered);
  ASSERT_EQ(registered->status, k201) << registered->body;
  auto walk_in = common::ParseHostRegistered(registered->body);
  ASSERT_TRUE(walk_in);
  const std::vector<std::string> tokens = {token_, bob_, admin_, host_token_, walk_in->token};
  for (const auto& t : tokens) ASSERT_EQ(t.size(), 64u);

  auto cells = ExpectNoRawTokens(tokens);
  EXPECT_GE(cells["accounts"], 3u * 5);  // three accounts, five columns
  EXPECT_GE(cells["hosts"], 2u * 8);     // two hosts, eight columns

  // What is stored is the hash, and it is what authenticates: the scan above read real rows.
  auto tables = ReadOnlyDb(dir_ / "coordinator.db").Dump();
  std::set<std::string> hashes;
  for (const auto& table : {"accounts", "hosts"}) {
    for (const auto& row : tables[table]) {
      for (const auto& cell : row) hashes.insert(cell);
    }
  }
  for (const auto& t : tokens) {
    EXPECT_TRUE(hashes.contains(common::TokenHash(t))) << "no stored hash for token " << t;
  }
  EXPECT_TRUE(store_->FindAccountByTokenHash(common::TokenHash(bob_)));
  EXPECT_EQ(store_->FindHostByTokenHash(common::TokenHash(walk_in->token))->id, walk_in->host_id);
  // The hash itself is no token: sent as a bearer token, it is refused.
  auto r = SendRaw(server_->port(), dir_ / "cert.pem", {"GET", "/v1/credits", ""},
                   "Bearer " + common::TokenHash(token_));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, k401) << r->body;
}

}  // namespace
}  // namespace ubcp::itest
