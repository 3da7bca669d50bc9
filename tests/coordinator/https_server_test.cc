// SPDX-License-Identifier: Apache-2.0
// The HTTPS front door against real TLS clients on loopback: the project's own HttpsClient for
// ordinary requests, and raw OpenSSL / plain sockets for what a well-behaved client never does
// (old TLS versions, plain HTTP, oversized headers and bodies, silence).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"
#include "ubcp/client/https_client.h"
#include "ubcp/coordinator/http_server.h"

namespace ubcp::coordinator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A raw client gives up after this long; every server-side close we wait for comes well before.
constexpr int kClientTimeoutSeconds = 5;

using TempDir = ubcp::testing::TempDir;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Blocking TCP connection to 127.0.0.1:port with send/receive timeouts; -1 if refused.
int ConnectTcp(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{kClientTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// How a read loop ended.
enum class ReadEnd { kClosedByPeer, kTimedOut, kError };

// Reads from a plain socket until the peer closes it or the receive timeout fires.
ReadEnd ReadPlainUntilClose(int fd, std::string* out) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      out->append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return ReadEnd::kClosedByPeer;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return ReadEnd::kTimedOut;
    if (errno == ECONNRESET) return ReadEnd::kClosedByPeer;
    return ReadEnd::kError;
  }
}

// A TLS client straight on OpenSSL, with the protocol versions under the test's control.
// Certificate verification is off: these tests are about the server's protocol behaviour (the
// HttpsClient tests below verify the certificate).
class RawTlsClient {
 public:
  // `min_version`/`max_version`: TLS1_1_VERSION etc.; 0 leaves OpenSSL's default.
  RawTlsClient(std::uint16_t port, int min_version = 0, int max_version = 0)
      : fd_(ConnectTcp(port)) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    // Security level 0 lets this client really offer TLS 1.1 (OpenSSL 3 refuses it locally at
    // the default level), so that a failed handshake is the server's refusal, not ours.
    SSL_CTX_set_security_level(ctx_, 0);
    SSL_CTX_set_cipher_list(ctx_, "DEFAULT:@SECLEVEL=0");
    if (min_version != 0) SSL_CTX_set_min_proto_version(ctx_, min_version);
    if (max_version != 0) SSL_CTX_set_max_proto_version(ctx_, max_version);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    ssl_ = SSL_new(ctx_);
    if (fd_.get() >= 0) SSL_set_fd(ssl_, fd_.get());
  }
  ~RawTlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  RawTlsClient(const RawTlsClient&) = delete;
  RawTlsClient& operator=(const RawTlsClient&) = delete;

  bool connected() const { return fd_.get() >= 0; }

  // True when the handshake completed; otherwise the OpenSSL reason code is kept.
  bool Handshake() {
    ERR_clear_error();
    if (SSL_connect(ssl_) == 1) return true;
    unsigned long code = ERR_peek_last_error();
    failure_reason_ = ERR_GET_REASON(code);
    char text[256] = "";
    if (code != 0) ERR_error_string_n(code, text, sizeof text);
    failure_text_ = text;
    ERR_clear_error();
    return false;
  }
  int failure_reason() const { return failure_reason_; }
  const std::string& failure_text() const { return failure_text_; }
  int version() const { return SSL_version(ssl_); }

  bool Write(std::string_view data) {
    std::size_t done = 0;
    while (done < data.size()) {
      int n = SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done));
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads until the server closes the connection (cleanly or not) or the timeout fires.
  ReadEnd ReadUntilClose(std::string* out) {
    char buf[4096];
    for (;;) {
      errno = 0;
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n > 0) {
        out->append(buf, static_cast<std::size_t>(n));
        continue;
      }
      int err = SSL_get_error(ssl_, n);
      ERR_clear_error();
      if (err == SSL_ERROR_ZERO_RETURN) return ReadEnd::kClosedByPeer;
      if (err == SSL_ERROR_WANT_READ || errno == EAGAIN || errno == EWOULDBLOCK) {
        return ReadEnd::kTimedOut;
      }
      // A TCP close without close_notify: OpenSSL 3 reports it as an SSL or syscall error.
      if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_SSL) return ReadEnd::kClosedByPeer;
      return ReadEnd::kError;
    }
  }

 private:
  Fd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int failure_reason_ = 0;
  std::string failure_text_;
};

// Status code of a raw HTTP/1.1 response, or -1.
int StatusOf(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) return -1;
  return std::atoi(response.substr(9, 3).c_str());
}

// A real server on 127.0.0.1, port 0, with a fresh self-signed certificate, running on its own
// thread until the fixture ends (or the test stops it).
class HttpsServerTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kSmallLimit = 16;

  void SetUp() override {
    cert_ = dir_.path() / "cert.pem";
    key_ = dir_.path() / "key.pem";
    ASSERT_TRUE(EnsureSelfSignedCertificate(cert_, key_));
    options_.cert_file = cert_;
    options_.key_file = key_;
    options_.threads = 2;
  }

  void TearDown() override { StopAndJoin(); }

  // Starts the server with `handler`; POST /small takes at most kSmallLimit body bytes.
  void Start(RequestHandler handler) {
    RequestHandler counted = [this, handler = std::move(handler)](const HttpRequest& r) {
      ++handler_calls_;
      return handler(r);
    };
    BodyLimitFn limit = [](std::string_view method, std::string_view target) -> std::size_t {
      return target == "/small" ? kSmallLimit : std::size_t{1} << 20;
    };
    auto server = HttpsServer::Create(options_, std::move(counted), std::move(limit));
    ASSERT_TRUE(server) << server.error().ToString();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
    std::packaged_task<void()> task([this] { server_->Run(false); });
    run_done_ = task.get_future();
    run_thread_ = std::thread(std::move(task));
  }

  void StopAndJoin() {
    if (!server_) return;
    server_->Stop();
    if (run_thread_.joinable()) run_thread_.join();
    server_.reset();
  }

  std::unique_ptr<client::HttpsClient> MakeClient() {
    client::HttpsClientOptions o;
    o.endpoint = {"127.0.0.1", server_->port()};
    o.ca_file = cert_;  // verification on: the self-signed certificate is the trust anchor
    o.timeout = std::chrono::seconds(kClientTimeoutSeconds);
    auto c = client::HttpsClient::Create(o);
    EXPECT_TRUE(c) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  static HttpResponse Ok(std::string body) {
    HttpResponse r;
    r.body = std::move(body);
    return r;
  }

  TempDir dir_;
  fs::path cert_, key_;
  ServerOptions options_;
  std::unique_ptr<HttpsServer> server_;
  std::thread run_thread_;
  std::future<void> run_done_;
  std::atomic<int> handler_calls_{0};
};

TEST_F(HttpsServerTest, RequestReachesHandlerAndResponseComesBack) {
  std::mutex mu;
  HttpRequest seen;
  Start([&](const HttpRequest& r) {
    {
      std::lock_guard lock(mu);
      seen = r;
    }
    HttpResponse res;
    res.status = 201;
    res.content_type = "text/plain";
    res.body = "echo:" + r.body;
    return res;
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto res =
      client->Request("POST", "/v1/things?x=1", "hello", "application/json", std::string(64, 'a'));
  ASSERT_TRUE(res) << res.error().ToString();
  EXPECT_EQ(res->status, 201);
  EXPECT_EQ(res->content_type, "text/plain");
  EXPECT_EQ(res->body, "echo:hello");

  std::lock_guard lock(mu);
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/v1/things?x=1");
  EXPECT_EQ(seen.body, "hello");
  EXPECT_EQ(seen.content_type, "application/json");
  EXPECT_EQ(seen.authorization, "Bearer " + std::string(64, 'a'));
  EXPECT_TRUE(seen.remote.starts_with("127.0.0.1:")) << seen.remote;
  EXPECT_EQ(handler_calls_.load(), 1);
}

TEST_F(HttpsServerTest, RangeHeadersReachTheHandlerAndItsHeadersComeBack) {
  std::mutex mu;
  std::vector<HttpRequest> seen;
  Start([&](const HttpRequest& r) {
    {
      std::lock_guard lock(mu);
      seen.push_back(r);
    }
    HttpResponse res;
    res.status = r.range.empty() ? 202 : 206;
    res.content_type = "application/octet-stream";
    res.body = "part";
    res.headers.emplace_back("Content-Range", "bytes 2-5/10");
    res.headers.emplace_back("Accept-Ranges", "bytes");
    return res;
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto ranged = client->Send({.method = "GET",
                              .target = "/blob",
                              .content_type = {},
                              .headers = {{"Range", "bytes=2-5"}}});
  ASSERT_TRUE(ranged) << ranged.error().ToString();
  EXPECT_EQ(ranged->response.status, 206);
  EXPECT_EQ(ranged->response.body, "part");
  EXPECT_EQ(client::FindHeader(ranged->headers, "content-range"), "bytes 2-5/10");
  EXPECT_EQ(client::FindHeader(ranged->headers, "Accept-Ranges"), "bytes");
  auto chunk = client->Send({.method = "PUT",
                             .target = "/upload",
                             .body = "abcd",
                             .content_type = "application/octet-stream",
                             .headers = {{"Content-Range", "bytes 0-3/8"}}});
  ASSERT_TRUE(chunk) << chunk.error().ToString();
  EXPECT_EQ(chunk->response.status, 202);

  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].range, "bytes=2-5");
  EXPECT_EQ(seen[0].content_range, "");
  EXPECT_EQ(seen[1].range, "");
  EXPECT_EQ(seen[1].content_range, "bytes 0-3/8");
  EXPECT_EQ(seen[1].body, "abcd");
}

TEST_F(HttpsServerTest, KeepAliveConnectionServesSeveralRequests) {
  Start([](const HttpRequest& r) { return Ok(r.target); });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 3; ++i) {
    auto res = client->Request("GET", "/n/" + std::to_string(i));
    ASSERT_TRUE(res) << res.error().ToString();
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "/n/" + std::to_string(i));
  }
  EXPECT_EQ(handler_calls_.load(), 3);
}

TEST_F(HttpsServerTest, DefaultClientNegotiatesTls13) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.connected());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  EXPECT_EQ(tls.version(), TLS1_3_VERSION);
}

TEST_F(HttpsServerTest, Tls12ClientIsStillServed) {
  Start([](const HttpRequest&) { return Ok("ok"); });
  RawTlsClient tls(server_->port(), TLS1_2_VERSION, TLS1_2_VERSION);
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  EXPECT_EQ(tls.version(), TLS1_2_VERSION);
  ASSERT_TRUE(tls.Write("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  std::string response;
  tls.ReadUntilClose(&response);
  EXPECT_EQ(StatusOf(response), 200) << response;
}

TEST_F(HttpsServerTest, Tls11OnlyClientIsRefused) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port(), TLS1_1_VERSION, TLS1_1_VERSION);
  ASSERT_TRUE(tls.connected());
  EXPECT_FALSE(tls.Handshake());
  // The server answered the TLS 1.1 ClientHello with a protocol_version alert: the refusal is
  // the server's, not a client that could not offer TLS 1.1 at all.
  EXPECT_EQ(tls.failure_reason(), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION) << tls.failure_text();
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, PlainHttpClientIsRefused) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  Fd fd(ConnectTcp(server_->port()));
  ASSERT_GE(fd.get(), 0);
  const std::string request = "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_EQ(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string reply;
  // Closed at once (the default io_timeout is 30 s, so this is the failed handshake).
  EXPECT_EQ(ReadPlainUntilClose(fd.get(), &reply), ReadEnd::kClosedByPeer);
  EXPECT_FALSE(reply.starts_with("HTTP/")) << reply;
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, BodyAtTheLimitIsAcceptedAndOneByteMoreIs413) {
  std::atomic<std::size_t> largest{0};
  Start([&](const HttpRequest& r) {
    largest = std::max(largest.load(), r.body.size());
    return Ok("{}");
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto at_limit = client->Request("POST", "/small", std::string(kSmallLimit, 'x'));
  ASSERT_TRUE(at_limit) << at_limit.error().ToString();
  EXPECT_EQ(at_limit->status, 200);
  EXPECT_EQ(handler_calls_.load(), 1);

  auto over = client->Request("POST", "/small", std::string(kSmallLimit + 1, 'x'));
  ASSERT_TRUE(over) << over.error().ToString();
  EXPECT_EQ(over->status, 413);
  EXPECT_NE(over->body.find("too_large"), std::string::npos) << over->body;
  EXPECT_EQ(handler_calls_.load(), 1);
  EXPECT_EQ(largest.load(), kSmallLimit);
}

TEST_F(HttpsServerTest, OversizedContentLengthIs413BeforeTheBodyIsSent) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  // Only the header: a server that waited for the body would time out instead of answering.
  ASSERT_TRUE(
      tls.Write("POST /small HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n"));
  std::string response;
  const auto start = Clock::now();
  EXPECT_EQ(tls.ReadUntilClose(&response), ReadEnd::kClosedByPeer);
  EXPECT_LT(SecondsSince(start), kClientTimeoutSeconds - 1);
  EXPECT_EQ(StatusOf(response), 413) << response;
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, OversizedChunkedBodyIs413) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  // No Content-Length to refuse up front: the limit must hold while the body is read.
  ASSERT_TRUE(
      tls.Write("POST /small HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "40\r\n" +
                std::string(64, 'y') + "\r\n0\r\n\r\n"));
  std::string response;
  tls.ReadUntilClose(&response);
  EXPECT_EQ(StatusOf(response), 413) << response;
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, OversizedHeaderIsRefusedWith4xx) {
  options_.max_header_bytes = 1024;
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  ASSERT_TRUE(tls.Write("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + std::string(4000, 'p') +
                        "\r\n\r\n"));
  std::string response;
  tls.ReadUntilClose(&response);
  const int status = StatusOf(response);
  EXPECT_GE(status, 400) << response;
  EXPECT_LT(status, 500) << response;
  EXPECT_EQ(status, 431) << response;  // what this server sends
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, HeaderJustUnderTheLimitIsServed) {
  options_.max_header_bytes = 1024;
  Start([](const HttpRequest&) { return Ok("fine"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  ASSERT_TRUE(tls.Write("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: " +
                        std::string(800, 'p') + "\r\n\r\n"));
  std::string response;
  tls.ReadUntilClose(&response);
  EXPECT_EQ(StatusOf(response), 200) << response;
  EXPECT_EQ(handler_calls_.load(), 1);
}

TEST_F(HttpsServerTest, SilentTcpConnectionIsClosedAfterIoTimeout) {
  options_.io_timeout = std::chrono::seconds(1);
  Start([](const HttpRequest&) { return Ok("{}"); });
  Fd fd(ConnectTcp(server_->port()));
  ASSERT_GE(fd.get(), 0);
  const auto start = Clock::now();
  std::string ignored;
  // No ClientHello ever: the handshake deadline closes the socket.
  EXPECT_EQ(ReadPlainUntilClose(fd.get(), &ignored), ReadEnd::kClosedByPeer);
  const double elapsed = SecondsSince(start);
  EXPECT_GE(elapsed, 0.5);
  EXPECT_LT(elapsed, kClientTimeoutSeconds - 1);
}

TEST_F(HttpsServerTest, SilentTlsConnectionIsClosedAfterIoTimeout) {
  options_.io_timeout = std::chrono::seconds(1);
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient tls(server_->port());
  ASSERT_TRUE(tls.Handshake()) << tls.failure_text();
  const auto start = Clock::now();
  std::string received;
  // Handshake done, no request: the header-read deadline closes the connection.
  EXPECT_EQ(tls.ReadUntilClose(&received), ReadEnd::kClosedByPeer);
  const double elapsed = SecondsSince(start);
  EXPECT_GE(elapsed, 0.5);
  EXPECT_LT(elapsed, kClientTimeoutSeconds - 1);
  EXPECT_EQ(handler_calls_.load(), 0);
}

TEST_F(HttpsServerTest, StopIsGracefulForARequestInFlight) {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> release_future = release.get_future().share();
  Start([&](const HttpRequest&) {
    entered.set_value();
    // Bounded wait, so that a broken test cannot hang the suite.
    release_future.wait_for(std::chrono::seconds(kClientTimeoutSeconds));
    return Ok("finished");
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto in_flight =
      std::async(std::launch::async, [&] { return client->Request("POST", "/slow", "{}"); });
  ASSERT_EQ(entered.get_future().wait_for(std::chrono::seconds(kClientTimeoutSeconds)),
            std::future_status::ready);

  server_->Stop();
  // Run() must wait for the request that is being handled.
  EXPECT_EQ(run_done_.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  release.set_value();

  ASSERT_EQ(in_flight.wait_for(std::chrono::seconds(kClientTimeoutSeconds)),
            std::future_status::ready);
  auto res = in_flight.get();
  ASSERT_TRUE(res) << res.error().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "finished");

  ASSERT_EQ(run_done_.wait_for(std::chrono::seconds(kClientTimeoutSeconds)),
            std::future_status::ready);
  // Stopped means no longer listening.
  Fd late(ConnectTcp(server_->port()));
  EXPECT_LT(late.get(), 0);
  EXPECT_EQ(handler_calls_.load(), 1);
}

TEST_F(HttpsServerTest, StopClosesIdleConnectionsPromptly) {
  Start([](const HttpRequest&) { return Ok("{}"); });
  RawTlsClient idle(server_->port());
  ASSERT_TRUE(idle.Handshake()) << idle.failure_text();
  const auto start = Clock::now();
  server_->Stop();
  // The default io_timeout is 30 s; an idle keep-alive connection must not hold Run() that long.
  ASSERT_EQ(run_done_.wait_for(std::chrono::seconds(kClientTimeoutSeconds)),
            std::future_status::ready);
  EXPECT_LT(SecondsSince(start), kClientTimeoutSeconds);
}

TEST_F(HttpsServerTest, HandlerExceptionBecomes500) {
  Start([](const HttpRequest& r) -> HttpResponse {
    if (r.target == "/boom") throw std::runtime_error("secret detail");
    return Ok("alive");
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto res = client->Request("GET", "/boom");
  ASSERT_TRUE(res) << res.error().ToString();
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(res->body.find("\"internal\""), std::string::npos) << res->body;
  EXPECT_EQ(res->body.find("secret detail"), std::string::npos) << res->body;
  // The server survives it.
  auto after = client->Request("GET", "/fine");
  ASSERT_TRUE(after) << after.error().ToString();
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->body, "alive");
}

TEST_F(HttpsServerTest, InvalidStatusFromHandlerBecomes500) {
  Start([](const HttpRequest&) {
    HttpResponse r;
    r.status = 42;
    return r;
  });
  auto client = MakeClient();
  ASSERT_NE(client, nullptr);
  auto res = client->Request("GET", "/x");
  ASSERT_TRUE(res) << res.error().ToString();
  EXPECT_EQ(res->status, 500);
}

TEST(HttpsServerCreateTest, MissingCertificateIsAnError) {
  TempDir dir;
  ServerOptions options;
  options.cert_file = dir.path() / "absent-cert.pem";
  options.key_file = dir.path() / "absent-key.pem";
  auto server = HttpsServer::Create(
      options, [](const HttpRequest&) { return HttpResponse{}; },
      [](std::string_view, std::string_view) -> std::size_t { return 0; });
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, common::Errc::kIo);
}

// ---- EnsureSelfSignedCertificate ----

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

X509Ptr LoadCertificate(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509Ptr cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return cert;
}

// Names of the certificate's subjectAltName: DNS names as text, IP addresses via inet_ntop.
std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = name->d.dNSName;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                       static_cast<std::size_t>(ASN1_STRING_length(dns)));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "";
      const int family = ASN1_STRING_length(ip) == 4 ? AF_INET : AF_INET6;
      ::inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof text);
      out.emplace_back(text);
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

TEST(SelfSignedCertificateTest, CreatesCertificateAndPrivateKey) {
  TempDir dir;
  const fs::path cert = dir.path() / "tls" / "cert.pem";
  const fs::path key = dir.path() / "tls" / "key.pem";
  auto status = EnsureSelfSignedCertificate(cert, key);
  ASSERT_TRUE(status) << status.error().ToString();
  ASSERT_TRUE(fs::is_regular_file(cert));
  ASSERT_TRUE(fs::is_regular_file(key));

  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  X509Ptr x509 = LoadCertificate(cert);
  ASSERT_NE(x509, nullptr);
  std::FILE* f = std::fopen(key.c_str(), "r");
  ASSERT_NE(f, nullptr);
  EVP_PKEY* pkey = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  ASSERT_NE(pkey, nullptr);
  EXPECT_EQ(X509_check_private_key(x509.get(), pkey), 1);
  EXPECT_EQ(EVP_PKEY_get_base_id(pkey), EVP_PKEY_EC);
  EVP_PKEY_free(pkey);
  // Self-signed: it verifies with its own public key.
  EVP_PKEY* pub = X509_get0_pubkey(x509.get());
  EXPECT_EQ(X509_verify(x509.get(), pub), 1);
  // Valid now, for years.
  EXPECT_LT(X509_cmp_current_time(X509_get0_notBefore(x509.get())), 0);
  EXPECT_GT(X509_cmp_current_time(X509_get0_notAfter(x509.get())), 0);
}

TEST(SelfSignedCertificateTest, HasLoopbackSubjectAltNames) {
  TempDir dir;
  const fs::path cert = dir.path() / "cert.pem";
  ASSERT_TRUE(EnsureSelfSignedCertificate(cert, dir.path() / "key.pem", {"coord.example.org"}));
  X509Ptr x509 = LoadCertificate(cert);
  ASSERT_NE(x509, nullptr);
  const std::vector<std::string> names = SubjectAltNames(x509.get());
  auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("127.0.0.1"));
  EXPECT_TRUE(has("localhost"));
  EXPECT_TRUE(has("::1"));
  EXPECT_TRUE(has("coord.example.org"));
  // The same as OpenSSL's own host checks see it.
  EXPECT_EQ(X509_check_ip_asc(x509.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_host(x509.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(x509.get(), "other.example.org", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(x509.get(), "10.0.0.1", 0), 0);
}

TEST(SelfSignedCertificateTest, SecondCallLeavesFilesUnchanged) {
  TempDir dir;
  const fs::path cert = dir.path() / "cert.pem";
  const fs::path key = dir.path() / "key.pem";
  ASSERT_TRUE(EnsureSelfSignedCertificate(cert, key));
  const std::string cert_before = ReadFile(cert);
  const std::string key_before = ReadFile(key);
  const auto cert_time = fs::last_write_time(cert);
  ASSERT_FALSE(cert_before.empty());
  ASSERT_FALSE(key_before.empty());

  auto again = EnsureSelfSignedCertificate(cert, key);
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(ReadFile(cert), cert_before);
  EXPECT_EQ(ReadFile(key), key_before);
  EXPECT_EQ(fs::last_write_time(cert), cert_time);
}

TEST(SelfSignedCertificateTest, LoneCertificateIsNeitherOverwrittenNorCompleted) {
  TempDir dir;
  const fs::path cert = dir.path() / "cert.pem";
  const fs::path key = dir.path() / "key.pem";
  {
    std::ofstream out(cert);
    out << "operator's certificate";
  }
  auto status = EnsureSelfSignedCertificate(cert, key);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, common::Errc::kInvalidArgument);
  EXPECT_EQ(ReadFile(cert), "operator's certificate");
  EXPECT_FALSE(fs::exists(key));
}

TEST(SelfSignedCertificateTest, RefusesANameThatIsNeitherIpNorDns) {
  TempDir dir;
  auto status = EnsureSelfSignedCertificate(dir.path() / "c.pem", dir.path() / "k.pem",
                                            {"bad name/with slash"});
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, common::Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir.path() / "k.pem"));
}

}  // namespace
}  // namespace ubcp::coordinator
