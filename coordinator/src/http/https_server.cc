// SPDX-License-Identifier: Apache-2.0
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <csignal>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "ubcp/coordinator/http_server.h"

namespace ubcp::coordinator {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using beast::error_code;

// An idle keep-alive client does not answer our close_notify until it sends its next request;
// waiting the full io_timeout for it would make Stop() take that long.
constexpr std::chrono::seconds kStopShutdownGrace{1};
// After refusing a request whose body is still arriving, the rest is read and discarded (up to
// this much, for at most kDrainTime) before the connection is closed: closing with unread data
// makes the kernel send a reset, and the client, still writing, would lose the answer.
constexpr std::size_t kMaxDrainBytes = 8u << 20;
constexpr std::chrono::seconds kDrainTime{3};
// After a failed accept (e.g. EMFILE) retrying at once would spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
constexpr std::size_t kMaxLoggedTarget = 200;
constexpr int kMaxThreads = 1024;

std::string JsonEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string ErrorJson(std::string_view code, std::string_view message) {
  return "{\"error\":\"" + JsonEscape(code) + "\",\"message\":\"" + JsonEscape(message) + "\"}";
}

std::string_view ForLog(std::string_view target) {
  return target.substr(0, std::min(target.size(), kMaxLoggedTarget));
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool IsFieldValue(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

// Headers that frame the message belong to this layer, never to the handler.
bool IsFramingHeader(std::string_view name) {
  return beast::iequals(name, "Content-Length") || beast::iequals(name, "Transfer-Encoding") ||
         beast::iequals(name, "Connection");
}

bool IsQuietClose(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == ssl::error::stream_truncated || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted ||
         ec == beast::error::timeout || ec == net::error::broken_pipe;
}

// The peer sent something that is not valid HTTP (as opposed to closing or timing out).
bool IsParseError(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message &&
         ec != http::error::need_more && ec != http::error::body_limit &&
         ec != http::error::header_limit;
}

class Session;

// State shared by the server object and its sessions; sessions keep it alive.
struct ServerState {
  ServerOptions options;
  RequestHandler handler;
  BodyLimitFn body_limit;

  std::mutex mutex;
  std::atomic<bool> stopping{false};
  std::unordered_map<const Session*, std::weak_ptr<Session>> sessions;  // guarded by mutex
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, ssl::context& tls, std::shared_ptr<ServerState> state)
      : stream_(std::move(socket), tls), state_(std::move(state)) {
    error_code ec;
    auto endpoint = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) {
      remote_ = endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]"
                                           : endpoint.address().to_string();
      remote_ += ":" + std::to_string(endpoint.port());
    } else {
      remote_ = "?";
    }
  }

  ~Session() {
    std::lock_guard lock(state_->mutex);
    state_->sessions.erase(this);
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Registers with the server (unless it is stopping) and starts the TLS handshake.
  void Start() {
    {
      std::lock_guard lock(state_->mutex);
      // Checked under the registry lock so that Stop() either sees this session or we see it.
      if (state_->stopping.load()) return;
      state_->sessions.emplace(this, weak_from_this());
    }
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::DoHandshake, shared_from_this()));
  }

  // Thread-safe. Idle connections are closed now; a request in progress is finished first.
  void RequestStop() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->stop_requested_ = true;
      if (self->phase_ == Phase::kHandshake || self->phase_ == Phase::kIdle) {
        beast::get_lowest_layer(self->stream_).cancel();
      }
    });
  }

 private:
  enum class Phase { kHandshake, kIdle, kReading, kWriting, kClosing };
  using Parser = http::request_parser<http::string_body>;
  using Response = http::response<http::string_body>;

  bool Stopping() const { return stop_requested_ || state_->stopping.load(); }
  std::chrono::steady_clock::duration IoTimeout() const { return state_->options.io_timeout; }

  void DoHandshake() {
    phase_ = Phase::kHandshake;
    beast::get_lowest_layer(stream_).expires_after(IoTimeout());
    stream_.async_handshake(ssl::stream_base::server,
                            beast::bind_front_handler(&Session::OnHandshake, shared_from_this()));
  }

  void OnHandshake(error_code ec) {
    if (ec) {
      // Scanners and plain-HTTP clients end up here; not worth more than a debug line.
      spdlog::debug("https: handshake with {} failed: {}", remote_, ec.message());
      return;
    }
    DoReadHeader();
  }

  void DoReadHeader() {
    if (Stopping()) return DoShutdown();
    phase_ = Phase::kIdle;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(state_->options.max_header_bytes, UINT32_MAX)));
    // The real limit depends on the route and is set once the header is known; until then a
    // Content-Length must not be rejected by Beast's default limit.
    parser_->body_limit(boost::none);
    // One deadline for the whole header: a client dripping header bytes cannot hold us forever.
    beast::get_lowest_layer(stream_).expires_after(IoTimeout());
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnReadHeader, shared_from_this()));
  }

  void OnReadHeader(error_code ec, std::size_t) {
    phase_ = Phase::kReading;
    if (ec) {
      if (ec == http::error::end_of_stream) return DoShutdown();
      if (ec == net::error::operation_aborted && Stopping()) return DoShutdown();
      if (ec == http::error::header_limit) {
        return SendError(http::status::request_header_fields_too_large, "too_large",
                         "request header too large");
      }
      if (IsParseError(ec)) {
        return SendError(http::status::bad_request, "malformed", "malformed HTTP request");
      }
      if (!IsQuietClose(ec)) spdlog::debug("https: read from {} failed: {}", remote_, ec.message());
      return;  // transport failure: the stream is not usable for a graceful shutdown
    }

    auto& request = parser_->get();
    std::size_t limit = 0;
    try {
      limit = state_->body_limit(request.method_string(), request.target());
    } catch (const std::exception& e) {
      spdlog::error("https: body limit function threw for {} {}: {}",
                    std::string_view(request.method_string()), ForLog(request.target()), e.what());
      return SendError(http::status::internal_server_error, "internal", "internal error");
    }
    auto content_length = parser_->content_length();
    if (content_length && *content_length > limit) {
      // Refused from the header alone: the body is never read or buffered.
      return SendError(http::status::payload_too_large, "too_large",
                       "request body exceeds " + std::to_string(limit) + " bytes");
    }
    parser_->body_limit(limit);

    if (parser_->is_done()) return Handle();
    if (beast::iequals(request[http::field::expect], "100-continue")) {
      continue_.emplace(http::status::continue_, request.version());
      beast::get_lowest_layer(stream_).expires_after(IoTimeout());
      return http::async_write(stream_, *continue_,
                               beast::bind_front_handler(&Session::OnContinue, shared_from_this()));
    }
    DoReadBody();
  }

  void OnContinue(error_code ec, std::size_t) {
    continue_.reset();
    if (ec) return;
    DoReadBody();
  }

  // The body is read chunk by chunk with a fresh deadline for each: io_timeout bounds
  // inactivity, so a large upload on a slow link is not cut off.
  void DoReadBody() {
    beast::get_lowest_layer(stream_).expires_after(IoTimeout());
    http::async_read_some(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&Session::OnReadBody, shared_from_this()));
  }

  void OnReadBody(error_code ec, std::size_t) {
    if (ec) {
      if (ec == http::error::body_limit) {
        return SendError(http::status::payload_too_large, "too_large",
                         "request body exceeds the limit for this resource");
      }
      if (IsParseError(ec)) {
        return SendError(http::status::bad_request, "malformed", "malformed HTTP request");
      }
      if (!IsQuietClose(ec)) spdlog::debug("https: read from {} failed: {}", remote_, ec.message());
      return;
    }
    if (!parser_->is_done()) return DoReadBody();
    Handle();
  }

  void Handle() {
    auto& message = parser_->get();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.authorization = std::string(message[http::field::authorization]);
    request.content_type = std::string(message[http::field::content_type]);
    request.range = std::string(message[http::field::range]);
    request.content_range = std::string(message[http::field::content_range]);
    request.body = std::move(message.body());
    request.remote = remote_;
    const bool head = message.method() == http::verb::head;
    const unsigned version = message.version();
    const bool client_keep_alive = message.keep_alive();
    parser_.reset();
    ++requests_served_;

    HttpResponse answer;
    try {
      answer = state_->handler(request);
    } catch (const std::exception& e) {
      spdlog::error("https: handler threw for {} {} from {}: {}", request.method,
                    ForLog(request.target), remote_, e.what());
      answer = InternalError();
    } catch (...) {
      spdlog::error("https: handler threw for {} {} from {}", request.method,
                    ForLog(request.target), remote_);
      answer = InternalError();
    }
    if (answer.status < 200 || answer.status > 599) {
      spdlog::error("https: handler returned invalid status {} for {} {}", answer.status,
                    request.method, ForLog(request.target));
      answer = InternalError();
    }
    if (answer.status >= 500) {
      spdlog::warn("https: {} {} {} from {}", answer.status, request.method, ForLog(request.target),
                   remote_);
    }

    const bool keep_alive = client_keep_alive && !Stopping() &&
                            requests_served_ < state_->options.max_requests_per_connection;
    response_.emplace(static_cast<http::status>(answer.status), version);
    auto& res = *response_;
    SetCommonHeaders(res);
    for (auto& [name, value] : answer.headers) {
      if (!IsToken(name) || !IsFieldValue(value) || IsFramingHeader(name)) {
        spdlog::error("https: handler set invalid header '{}' for {}", ForLog(name),
                      ForLog(request.target));
        continue;
      }
      res.set(name, value);
    }
    if (!answer.content_type.empty() && IsFieldValue(answer.content_type)) {
      res.set(http::field::content_type, answer.content_type);
    }
    res.keep_alive(keep_alive);
    if (answer.status == 204 || answer.status == 304) {
      // These responses have no body and must not carry a Content-Length.
    } else if (head) {
      res.content_length(answer.body.size());
    } else {
      res.body() = std::move(answer.body);
      res.prepare_payload();
    }
    DoWrite();
  }

  static HttpResponse InternalError() {
    HttpResponse r;
    r.status = 500;
    r.body = ErrorJson("internal", "internal error");
    return r;
  }

  static void SetCommonHeaders(Response& res) {
    res.set(http::field::server, "ubcp");
    res.set(http::field::cache_control, "no-store");
  }

  // Answers a request that this layer refuses and closes the connection afterwards: the rest of
  // the request (an unread body, a broken header) cannot be skipped safely.
  void SendError(http::status status, std::string_view code, std::string message) {
    unsigned version = 11;
    std::string method = "-";
    std::string target = "-";
    if (parser_ && parser_->is_header_done()) {
      version = parser_->get().version();
      method = std::string(parser_->get().method_string());
      target = std::string(ForLog(parser_->get().target()));
    }
    spdlog::warn("https: {} {} {} from {}: {}", static_cast<unsigned>(status), method, target,
                 remote_, message);
    // A request refused before its body was read completely: drain what the client still sends.
    drain_ = parser_ && parser_->is_header_done() && !parser_->is_done();
    parser_.reset();
    response_.emplace(status, version);
    auto& res = *response_;
    SetCommonHeaders(res);
    res.set(http::field::content_type, "application/json");
    res.keep_alive(false);
    res.body() = ErrorJson(code, message);
    res.prepare_payload();
    DoWrite();
  }

  void DoWrite() {
    phase_ = Phase::kWriting;
    serializer_.emplace(*response_);
    DoWriteSome();
  }

  // Like the body read, each chunk gets its own deadline so large downloads can proceed.
  void DoWriteSome() {
    beast::get_lowest_layer(stream_).expires_after(IoTimeout());
    http::async_write_some(stream_, *serializer_,
                           beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
  }

  void OnWrite(error_code ec, std::size_t) {
    if (ec) {
      if (!IsQuietClose(ec)) spdlog::debug("https: write to {} failed: {}", remote_, ec.message());
      return;
    }
    if (!serializer_->is_done()) return DoWriteSome();
    const bool keep_alive = response_->keep_alive();
    serializer_.reset();
    response_.reset();
    if (!keep_alive) return drain_ ? DoDrain() : DoShutdown();
    DoReadHeader();
  }

  void DoDrain() {
    phase_ = Phase::kClosing;
    if (drain_deadline_ == std::chrono::steady_clock::time_point{}) {
      drain_deadline_ = std::chrono::steady_clock::now() + kDrainTime;
    }
    if (drained_ >= kMaxDrainBytes || Stopping() ||
        std::chrono::steady_clock::now() >= drain_deadline_) {
      return DoShutdown();
    }
    beast::get_lowest_layer(stream_).expires_at(drain_deadline_);
    stream_.async_read_some(net::buffer(drain_buffer_),
                            [self = shared_from_this()](error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec) return self->DoShutdown();
                              self->DoDrain();
                            });
  }

  void DoShutdown() {
    phase_ = Phase::kClosing;
    auto grace =
        Stopping() ? std::min<std::chrono::steady_clock::duration>(IoTimeout(), kStopShutdownGrace)
                   : IoTimeout();
    beast::get_lowest_layer(stream_).expires_after(grace);
    stream_.async_shutdown([self = shared_from_this()](error_code) {
      beast::get_lowest_layer(self->stream_).close();
    });
  }

  beast::ssl_stream<beast::tcp_stream> stream_;
  std::shared_ptr<ServerState> state_;
  std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  std::optional<Response> response_;
  std::optional<http::serializer<false, http::string_body>> serializer_;
  std::optional<http::response<http::empty_body>> continue_;
  int requests_served_ = 0;
  bool drain_ = false;
  std::size_t drained_ = 0;
  std::chrono::steady_clock::time_point drain_deadline_{};
  std::array<char, 16 * 1024> drain_buffer_{};
  bool stop_requested_ = false;  // only touched on the strand
  Phase phase_ = Phase::kHandshake;
};

std::string OpenSslError(const error_code& ec) {
  std::string text = ec.message();
  return text.empty() ? "unknown error" : text;
}

class HttpsServerImpl final : public HttpsServer {
 public:
  HttpsServerImpl(std::shared_ptr<ServerState> state, ssl::context tls)
      : state_(std::move(state)),
        tls_(std::move(tls)),
        control_(net::make_strand(ioc_)),
        acceptor_(control_) {}

  ~HttpsServerImpl() override {
    // Sessions still queued in the io_context are destroyed with it, before tls_.
    state_->stopping = true;
  }

  common::Status Listen(const tcp::endpoint& endpoint) {
    error_code ec;
    const std::string where =
        endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
    acceptor_.open(endpoint.protocol(), ec);
    if (ec)
      return common::MakeError(common::Errc::kIo, "open socket for " + where + ": " + ec.message());
    acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (ec) return common::MakeError(common::Errc::kIo, "set SO_REUSEADDR: " + ec.message());
    acceptor_.bind(endpoint, ec);
    if (ec) return common::MakeError(common::Errc::kIo, "bind " + where + ": " + ec.message());
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return common::MakeError(common::Errc::kIo, "listen on " + where + ": " + ec.message());
    auto local = acceptor_.local_endpoint(ec);
    if (ec) return common::MakeError(common::Errc::kIo, "local endpoint: " + ec.message());
    port_ = local.port();
    return {};
  }

  std::uint16_t port() const override { return port_; }

  void Run(bool handle_signals) override {
    ioc_.restart();
    net::post(control_, [this, handle_signals] {
      if (state_->stopping.load()) return CloseListeners();
      if (handle_signals) {
        signals_.emplace(ioc_, SIGINT, SIGTERM);
        signals_->async_wait([this](error_code ec, int signal) {
          if (ec) return;
          spdlog::info("https: signal {} received, shutting down", signal);
          Stop();
        });
      }
      spdlog::info("https: listening on port {}", port_);
      DoAccept();
    });

    const int extra = std::clamp(state_->options.threads, 1, kMaxThreads) - 1;
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(extra));
    for (int i = 0; i < extra; ++i) threads.emplace_back([this] { RunLoop(); });
    RunLoop();
    for (auto& t : threads) t.join();
  }

  void Stop() override {
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard lock(state_->mutex);
      state_->stopping = true;
      live.reserve(state_->sessions.size());
      for (auto& [_, weak] : state_->sessions) {
        if (auto s = weak.lock()) live.push_back(std::move(s));
      }
    }
    net::post(control_, [this] { CloseListeners(); });
    for (auto& s : live) s->RequestStop();
  }

 private:
  void RunLoop() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        // Handlers catch their own failures; reaching this is a bug, but one connection's bug
        // must not take the server down.
        spdlog::error("https: unexpected exception in io loop: {}", e.what());
      } catch (...) {
        spdlog::error("https: unexpected exception in io loop");
      }
    }
  }

  // On the control strand.
  void CloseListeners() {
    error_code ec;
    acceptor_.close(ec);
    retry_timer_.cancel();
    if (signals_) signals_->cancel(ec);
  }

  // On the control strand.
  void DoAccept() {
    if (state_->stopping.load() || !acceptor_.is_open()) return;
    // Each connection gets its own strand: its handlers never run concurrently.
    acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
      if (ec) {
        if (state_->stopping.load() || !acceptor_.is_open()) return;
        spdlog::warn("https: accept failed: {}", ec.message());
        retry_timer_.expires_after(kAcceptRetryDelay);
        retry_timer_.async_wait([this](error_code wait_ec) {
          if (!wait_ec) DoAccept();
        });
        return;
      }
      std::make_shared<Session>(std::move(socket), tls_, state_)->Start();
      DoAccept();
    });
  }

  std::shared_ptr<ServerState> state_;
  ssl::context tls_;
  std::uint16_t port_ = 0;
  net::io_context ioc_;
  net::strand<net::io_context::executor_type> control_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_{control_};
  std::optional<net::signal_set> signals_;
};

common::Result<ssl::context> MakeTlsContext(const ServerOptions& options) {
  ssl::context tls(ssl::context::tls_server);
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                  ssl::context::single_dh_use | ssl::context::no_compression);
  SSL_CTX* native = tls.native_handle();
  // TLS 1.2 is the floor: older versions lack AEAD ciphers and have known downgrade attacks.
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, 0) != 1) {
    return common::MakeError(common::Errc::kInternal, "cannot set TLS protocol versions");
  }
  // Client-initiated renegotiation is a DoS vector and useless here; compression enables CRIME.
  SSL_CTX_set_options(
      native, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Only forward-secret AEAD suites for TLS 1.2 (TLS 1.3 suites are all of that kind).
  if (SSL_CTX_set_cipher_list(native, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
    return common::MakeError(common::Errc::kInternal, "cannot set TLS 1.2 cipher list");
  }

  error_code ec;
  tls.use_certificate_chain_file(options.cert_file.string(), ec);
  if (ec) {
    return common::MakeError(
        common::Errc::kIo,
        "cannot load certificate " + options.cert_file.string() + ": " + OpenSslError(ec));
  }
  tls.use_private_key_file(options.key_file.string(), ssl::context::pem, ec);
  if (ec) {
    return common::MakeError(
        common::Errc::kIo,
        "cannot load private key " + options.key_file.string() + ": " + OpenSslError(ec));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return common::MakeError(common::Errc::kInvalidArgument,
                             "private key " + options.key_file.string() +
                                 " does not match certificate " + options.cert_file.string());
  }
  return tls;
}

common::Result<tcp::endpoint> ResolveListenEndpoint(const ServerOptions& options) {
  error_code ec;
  auto address = net::ip::make_address(options.address, ec);
  if (!ec) return tcp::endpoint(address, options.port);
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  auto results =
      resolver.resolve(options.address, std::to_string(options.port), tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return common::MakeError(common::Errc::kInvalidArgument,
                             "cannot resolve listen address '" + options.address +
                                 "': " + (ec ? ec.message() : "no result"));
  }
  return results.begin()->endpoint();
}

common::Result<std::unique_ptr<HttpsServer>> CreateServer(const ServerOptions& options,
                                                          RequestHandler handler,
                                                          BodyLimitFn body_limit) {
  if (!handler || !body_limit) {
    return common::MakeError(common::Errc::kInvalidArgument, "handler and body limit are required");
  }
  if (options.threads < 1 || options.threads > kMaxThreads) {
    return common::MakeError(common::Errc::kInvalidArgument, "threads must be in [1, 1024]");
  }
  if (options.io_timeout.count() <= 0) {
    return common::MakeError(common::Errc::kInvalidArgument, "io_timeout must be positive");
  }
  if (options.max_header_bytes == 0 || options.max_requests_per_connection < 1) {
    return common::MakeError(common::Errc::kInvalidArgument,
                             "max_header_bytes and max_requests_per_connection must be positive");
  }
  UBCP_ASSIGN_OR_RETURN(auto tls, MakeTlsContext(options));
  UBCP_ASSIGN_OR_RETURN(auto endpoint, ResolveListenEndpoint(options));

  auto state = std::make_shared<ServerState>();
  state->options = options;
  state->handler = std::move(handler);
  state->body_limit = std::move(body_limit);
  auto server = std::make_unique<HttpsServerImpl>(std::move(state), std::move(tls));
  UBCP_RETURN_IF_ERROR(server->Listen(endpoint));
  return std::unique_ptr<HttpsServer>(std::move(server));
}

}  // namespace

common::Result<std::unique_ptr<HttpsServer>> HttpsServer::Create(const ServerOptions& options,
                                                                 RequestHandler handler,
                                                                 BodyLimitFn body_limit) {
  try {
    return CreateServer(options, std::move(handler), std::move(body_limit));
  } catch (const std::exception& e) {
    return common::MakeError(common::Errc::kIo,
                             std::string("cannot start HTTPS server: ") + e.what());
  }
}

}  // namespace ubcp::coordinator
