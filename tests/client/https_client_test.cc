// SPDX-License-Identifier: Apache-2.0
// HttpsClient against the real coordinator HttpsServer on 127.0.0.1 with a self-signed
// certificate: verification, response size limit, timeouts and connection reuse.

#include "ubcp/client/https_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "ubcp/coordinator/http_server.h"

namespace ubcp::client {
namespace {
namespace fs = std::filesystem;
using common::Errc;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class HttpsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ubcp-https-client-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ca_file_ = dir_ / "cert.pem";
    ASSERT_TRUE(coordinator::EnsureSelfSignedCertificate(ca_file_, dir_ / "key.pem"));
  }

  void TearDown() override {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
    if (server_) server_->Stop();
    if (server_thread_.joinable()) server_thread_.join();
    fs::remove_all(dir_);
  }

  // Routes: /echo answers what it received; /size/N answers N bytes; /remote answers the peer
  // address (to observe connection reuse); /hang answers only when the test ends; others 404.
  coordinator::HttpResponse Handle(const coordinator::HttpRequest& request) {
    coordinator::HttpResponse response;
    response.content_type = "text/plain";
    const std::string& t = request.target;
    if (t == "/headers") {
      response.body = request.range + "|" + request.content_range + "|" + request.body;
      response.headers.emplace_back("X-Echo-Range", request.range);
    } else if (t == "/echo") {
      response.body = request.method + "|" + request.authorization + "|" + request.content_type +
                      "|" + request.body;
    } else if (t.rfind("/size/", 0) == 0) {
      std::size_t n = 0;
      std::from_chars(t.data() + 6, t.data() + t.size(), n);
      response.body.assign(n, 'x');
    } else if (t == "/remote") {
      response.body = request.remote;
    } else if (t == "/hang") {
      std::unique_lock lock(mutex_);
      // Bounded so a broken test cannot wedge the server thread forever.
      released_cv_.wait_for(lock, std::chrono::seconds(20), [this] { return released_; });
      response.body = "late";
    } else {
      response.status = 404;
      response.body = "not here";
    }
    return response;
  }

  void StartServer(std::chrono::seconds io_timeout = std::chrono::seconds(30)) {
    coordinator::ServerOptions options;
    options.cert_file = ca_file_;
    options.key_file = dir_ / "key.pem";
    options.io_timeout = io_timeout;
    auto server = coordinator::HttpsServer::Create(
        options, [this](const coordinator::HttpRequest& r) { return Handle(r); },
        [](std::string_view, std::string_view) -> std::size_t { return 1 << 20; });
    ASSERT_TRUE(server) << server.error().ToString();
    server_ = std::move(*server);
    server_thread_ = std::thread([this] { server_->Run(false); });
  }

  HttpsClientOptions Options() const {
    HttpsClientOptions options;
    options.endpoint = {"127.0.0.1", server_ ? server_->port() : std::uint16_t{0}};
    options.ca_file = ca_file_;
    options.timeout = std::chrono::seconds(10);
    return options;
  }

  static std::unique_ptr<HttpsClient> MustCreate(const HttpsClientOptions& options) {
    auto client = HttpsClient::Create(options);
    EXPECT_TRUE(client) << client.error().ToString();
    return client ? std::move(*client) : nullptr;
  }

  fs::path dir_;
  fs::path ca_file_;
  std::unique_ptr<coordinator::HttpsServer> server_;
  std::thread server_thread_;
  std::mutex mutex_;
  std::condition_variable released_cv_;
  bool released_ = false;
};

TEST_F(HttpsClientTest, RequestWithTheRightCaSucceeds) {
  StartServer();
  auto client = MustCreate(Options());
  ASSERT_TRUE(client);
  auto r = client->Request("POST", "/echo", "payload", "application/json", "tok123");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->content_type, "text/plain");
  EXPECT_EQ(r->body, "POST|Bearer tok123|application/json|payload");

  // An HTTP error status is a successful exchange, not a transport error.
  auto missing = client->Request("GET", "/nowhere");
  ASSERT_TRUE(missing) << missing.error().ToString();
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "not here");
}

TEST_F(HttpsClientTest, ExtraHeadersGoOutAndEveryResponseHeaderComesBack) {
  StartServer();
  auto client = MustCreate(Options());
  ASSERT_TRUE(client);
  auto r = client->Send({.method = "PUT",
                         .target = "/headers",
                         .body = "xyz",
                         .content_type = "application/octet-stream",
                         .bearer_token = "tok",
                         .headers = {{"Range", "bytes=1-2"}, {"Content-Range", "bytes 0-2/9"}}});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->response.status, 200);
  EXPECT_EQ(r->response.body, "bytes=1-2|bytes 0-2/9|xyz");
  EXPECT_EQ(FindHeader(r->headers, "X-Echo-Range"), "bytes=1-2");
  EXPECT_EQ(FindHeader(r->headers, "x-echo-range"), "bytes=1-2");  // names ignore case
  EXPECT_EQ(FindHeader(r->headers, "Content-Length"), std::to_string(r->response.body.size()));
  EXPECT_FALSE(FindHeader(r->headers, "X-Absent"));
}

TEST_F(HttpsClientTest, ExtraHeadersThatTheClientOwnsOrThatAreInvalidAreRefused) {
  StartServer();
  auto client = MustCreate(Options());
  ASSERT_TRUE(client);
  const HeaderList refused[] = {
      {{"Host", "elsewhere"}},
      {{"authorization", "Bearer other"}},
      {{"Content-Length", "0"}},
      {{"Transfer-Encoding", "chunked"}},
      {{"Connection", "close"}},
      {{"Content-Type", "text/plain"}},
      {{"Bad Name", "x"}},
      {{"", "x"}},
      {{"Range", "bytes=0-1\r\nX-Injected: 1"}},
  };
  for (const HeaderList& headers : refused) {
    auto r = client->Send({.method = "GET", .target = "/headers", .headers = headers});
    ASSERT_FALSE(r) << headers[0].first;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << headers[0].first;
  }
}

// An implementation of only Request (like a test double): Send forwards requests without
// extra headers and refuses the others, rather than dropping them silently.
class RequestOnlyClient final : public HttpsClient {
 public:
  common::Result<ClientResponse> Request(std::string_view method, std::string_view target,
                                         std::string_view body, std::string_view,
                                         std::string_view) override {
    ++calls;
    return ClientResponse{
        200, "text/plain",
        std::string(method) + " " + std::string(target) + " " + std::string(body)};
  }
  int calls = 0;
};

TEST(HttpsClientSendTest, DefaultSendForwardsOnlyRequestsWithoutExtraHeaders) {
  RequestOnlyClient client;
  auto plain = client.Send({.method = "PUT", .target = "/x", .body = "b"});
  ASSERT_TRUE(plain) << plain.error().ToString();
  EXPECT_EQ(plain->response.body, "PUT /x b");
  EXPECT_TRUE(plain->headers.empty());
  auto ranged = client.Send({.method = "GET", .target = "/x", .headers = {{"Range", "bytes=0-1"}}});
  ASSERT_FALSE(ranged);
  EXPECT_EQ(ranged.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(client.calls, 1);
}

TEST_F(HttpsClientTest, HostNameIsVerifiedAgainstTheCertificate) {
  StartServer();
  HttpsClientOptions options = Options();
  options.endpoint.host = "localhost";  // a DNS SAN of the self-signed certificate
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  auto r = client->Request("GET", "/size/3");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->body, "xxx");
}

TEST_F(HttpsClientTest, KeepsTheConnectionAlive) {
  StartServer();
  auto client = MustCreate(Options());
  ASSERT_TRUE(client);
  auto first = client->Request("GET", "/remote");
  auto second = client->Request("GET", "/remote");
  ASSERT_TRUE(first && second);
  EXPECT_FALSE(first->body.empty());
  EXPECT_EQ(first->body, second->body) << "the second request should reuse the connection";
}

TEST_F(HttpsClientTest, ReconnectsWhenTheServerClosedAnIdleConnection) {
  StartServer(std::chrono::seconds(1));  // the server drops idle connections after 1 s
  auto client = MustCreate(Options());
  ASSERT_TRUE(client);
  auto first = client->Request("GET", "/remote");
  ASSERT_TRUE(first) << first.error().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto second = client->Request("GET", "/remote");
  ASSERT_TRUE(second) << second.error().ToString();
  EXPECT_EQ(second->status, 200);
  EXPECT_NE(first->body, second->body) << "a fresh connection has a fresh source port";
}

TEST_F(HttpsClientTest, WithoutTheCaTheCertificateIsRefused) {
  StartServer();
  HttpsClientOptions options = Options();
  options.ca_file.clear();  // system trust store: does not know our self-signed certificate
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  auto r = client->Request("GET", "/echo");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNetwork);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos)
      << r.error().ToString();
  // Refused every time, not just on the first attempt.
  auto again = client->Request("GET", "/echo");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kNetwork);
}

TEST_F(HttpsClientTest, AnotherSelfSignedCaIsRefused) {
  StartServer();
  const fs::path other = dir_ / "other";
  fs::create_directories(other);
  ASSERT_TRUE(coordinator::EnsureSelfSignedCertificate(other / "cert.pem", other / "key.pem"));
  HttpsClientOptions options = Options();
  options.ca_file = other / "cert.pem";
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  auto r = client->Request("GET", "/echo");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNetwork);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos)
      << r.error().ToString();
}

TEST_F(HttpsClientTest, InsecureModeSkipsVerificationOnlyWhenAsked) {
  StartServer();
  HttpsClientOptions options = Options();
  options.ca_file.clear();
  options.insecure_skip_verify = true;
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  auto r = client->Request("GET", "/size/2");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->body, "xx");
}

TEST_F(HttpsClientTest, UnloadableCaFileIsRefusedAtCreation) {
  HttpsClientOptions options;
  options.endpoint = {"127.0.0.1", 443};
  options.ca_file = dir_ / "missing.pem";
  auto client = HttpsClient::Create(options);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, Errc::kInvalidArgument);

  std::ofstream(dir_ / "junk.pem") << "not a certificate\n";
  options.ca_file = dir_ / "junk.pem";
  client = HttpsClient::Create(options);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, Errc::kInvalidArgument);
}

TEST_F(HttpsClientTest, InvalidOptionsAndRequestsAreRefusedWithoutNetwork) {
  HttpsClientOptions options;
  options.ca_file = ca_file_;
  options.endpoint = {"", 443};
  EXPECT_FALSE(HttpsClient::Create(options));
  options.endpoint = {"127.0.0.1", 0};
  EXPECT_FALSE(HttpsClient::Create(options));
  options.endpoint = {"127.0.0.1", 443};
  options.timeout = std::chrono::seconds(0);
  EXPECT_FALSE(HttpsClient::Create(options));

  // Port 9 on loopback: nothing listens; the request must be refused before connecting.
  options.endpoint = {"127.0.0.1", 9};
  options.timeout = std::chrono::seconds(5);
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  for (auto [method, target, token] :
       {std::tuple{"GET", "no-slash", ""}, std::tuple{"GET", "/a b", ""},
        std::tuple{"GET", "/a\r\nX: y", ""}, std::tuple{"G T", "/", ""}, std::tuple{"", "/", ""},
        std::tuple{"GET", "/", "tok\r\nX-Injected: 1"}}) {
    auto r = client->Request(method, target, {}, {}, token);
    ASSERT_FALSE(r) << method << " " << target;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << r.error().ToString();
  }
}

TEST_F(HttpsClientTest, ConnectionRefusedIsANetworkError) {
  // Bind a port, then close it: nothing listens there afterwards.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  HttpsClientOptions options;
  options.endpoint = {"127.0.0.1", ntohs(addr.sin_port)};
  options.ca_file = ca_file_;
  options.timeout = std::chrono::seconds(5);
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  auto r = client->Request("GET", "/");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNetwork) << r.error().ToString();
}

TEST_F(HttpsClientTest, ResponseOverTheLimitIsRefused) {
  StartServer();
  HttpsClientOptions options = Options();
  options.max_response_body = 1024;
  auto client = MustCreate(options);
  ASSERT_TRUE(client);

  auto at_limit = client->Request("GET", "/size/1024");
  ASSERT_TRUE(at_limit) << at_limit.error().ToString();
  EXPECT_EQ(at_limit->body.size(), 1024u);

  auto over = client->Request("GET", "/size/1025");
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, Errc::kTooLarge) << over.error().ToString();

  auto huge = client->Request("GET", "/size/900000");
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, Errc::kTooLarge) << huge.error().ToString();

  // The half-read response must not poison the next exchange.
  auto after = client->Request("GET", "/size/5");
  ASSERT_TRUE(after) << after.error().ToString();
  EXPECT_EQ(after->body, "xxxxx");
}

TEST_F(HttpsClientTest, SilentServerTimesOutWithinTheTimeout) {
  // A TCP listener that never accepts: the kernel completes the TCP handshake, but nobody ever
  // answers the TLS ClientHello.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);

  HttpsClientOptions options;
  options.endpoint = {"127.0.0.1", ntohs(addr.sin_port)};
  options.ca_file = ca_file_;
  options.timeout = std::chrono::seconds(1);
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  const auto start = Clock::now();
  auto r = client->Request("GET", "/echo");
  const double elapsed = SecondsSince(start);
  ::close(fd);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNetwork);
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().ToString();
  EXPECT_GE(elapsed, 0.9);
  EXPECT_LT(elapsed, 3.0) << "the timeout must bound the whole request";
}

TEST_F(HttpsClientTest, HandlerThatNeverAnswersTimesOut) {
  StartServer();
  HttpsClientOptions options = Options();
  options.timeout = std::chrono::seconds(1);
  auto client = MustCreate(options);
  ASSERT_TRUE(client);
  const auto start = Clock::now();
  auto r = client->Request("GET", "/hang");
  const double elapsed = SecondsSince(start);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNetwork);
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().ToString();
  EXPECT_GE(elapsed, 0.9);
  EXPECT_LT(elapsed, 3.0);

  // The same client recovers on a fresh connection once the server answers again.
  auto ok = client->Request("GET", "/size/1");
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok->body, "x");
}

TEST(ParseCoordinatorUrlTest, AcceptsHttpsHostsAndPorts) {
  auto plain = ParseCoordinatorUrl("https://Coordinator.Example.org");
  ASSERT_TRUE(plain) << plain.error().ToString();
  EXPECT_EQ(plain->host, "coordinator.example.org");
  EXPECT_EQ(plain->port, 443);

  auto with_port = ParseCoordinatorUrl("https://127.0.0.1:8443/");
  ASSERT_TRUE(with_port) << with_port.error().ToString();
  EXPECT_EQ(with_port->host, "127.0.0.1");
  EXPECT_EQ(with_port->port, 8443);

  auto v6 = ParseCoordinatorUrl("https://[::1]:9000");
  ASSERT_TRUE(v6) << v6.error().ToString();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9000);
}

TEST(ParseCoordinatorUrlTest, RefusesAnythingElse) {
  for (const std::string& bad : std::vector<std::string>{
           "http://example.org", "example.org", "", "https://", "https://user:pw@example.org",
           "https://example.org/v1", "https://example.org?x=1", "https://example.org#f",
           "https://example.org:0", "https://example.org:65536", "https://example.org:port",
           "ftp://example.org", "https://" + std::string(3000, 'a')}) {
    auto r = ParseCoordinatorUrl(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ubcp::client
