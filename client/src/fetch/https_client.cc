// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/https_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <charconv>
#include <optional>

namespace ubcp::client {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using beast::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kUserAgent = "ubcp-client/0.1";
constexpr std::size_t kMaxResponseHeader = 64 * 1024;
constexpr std::size_t kMaxTarget = 8 * 1024;
constexpr std::size_t kMaxUrl = 2048;

common::Error NetworkError(std::string message) {
  return common::MakeError(common::Errc::kNetwork, std::move(message));
}

bool HasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

// Fields this client sets itself: a caller's copy would contradict or smuggle past them.
bool IsReservedHeader(std::string_view name) {
  for (std::string_view reserved : {"Host", "Authorization", "Content-Type", "Content-Length",
                                    "Transfer-Encoding", "Connection", "User-Agent", "Expect"}) {
    if (beast::iequals(name, reserved)) return true;
  }
  return false;
}

bool IsIpAddress(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// The peer closed a kept-alive connection under us: worth one retry on a fresh connection.
bool IsStaleConnection(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == ssl::error::stream_truncated || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == net::error::connection_aborted;
}

class HttpsClientImpl final : public HttpsClient {
 public:
  HttpsClientImpl(HttpsClientOptions options, ssl::context tls)
      : options_(std::move(options)),
        tls_(std::move(tls)),
        is_ip_(IsIpAddress(options_.endpoint.host)) {
    const bool v6 = options_.endpoint.host.find(':') != std::string::npos;
    host_header_ = v6 ? "[" + options_.endpoint.host + "]" : options_.endpoint.host;
    if (options_.endpoint.port != 443) host_header_ += ":" + std::to_string(options_.endpoint.port);
  }

  ~HttpsClientImpl() override { Close(); }

  common::Result<ClientResponse> Request(std::string_view method, std::string_view target,
                                         std::string_view body, std::string_view content_type,
                                         std::string_view bearer_token) override {
    UBCP_ASSIGN_OR_RETURN(ClientReply reply,
                          Send({method, target, body, content_type, bearer_token, {}}));
    return std::move(reply.response);
  }

  common::Result<ClientReply> Send(const ClientRequest& request) override {
    try {
      return DoRequest(request);
    } catch (const std::exception& e) {
      Close();
      return NetworkError(std::string("request failed: ") + e.what());
    }
  }

 private:
  common::Result<ClientReply> DoRequest(const ClientRequest& request) {
    const std::string_view method = request.method;
    const std::string_view target = request.target;
    const std::string_view body = request.body;
    const std::string_view content_type = request.content_type;
    const std::string_view bearer_token = request.bearer_token;
    if (!IsToken(method)) {
      return common::MakeError(common::Errc::kInvalidArgument, "invalid HTTP method");
    }
    if (target.empty() || target.front() != '/' || target.size() > kMaxTarget ||
        HasControlChars(target) || target.find(' ') != std::string_view::npos) {
      return common::MakeError(common::Errc::kInvalidArgument, "invalid request target");
    }
    if (HasControlChars(bearer_token) || HasControlChars(content_type)) {
      return common::MakeError(common::Errc::kInvalidArgument, "invalid header value");
    }
    for (const auto& [name, value] : request.headers) {
      if (!IsToken(name) || IsReservedHeader(name) || HasControlChars(value)) {
        return common::MakeError(common::Errc::kInvalidArgument,
                                 "invalid extra header '" + name + "'");
      }
    }

    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, host_header_);
    req.set(http::field::user_agent, kUserAgent);
    if (!bearer_token.empty()) {
      req.set(http::field::authorization, "Bearer " + std::string(bearer_token));
    }
    if (!body.empty() && !content_type.empty()) req.set(http::field::content_type, content_type);
    for (const auto& [name, value] : request.headers) req.insert(name, value);
    req.keep_alive(true);
    req.body() = std::string(body);
    req.prepare_payload();
    const bool head = beast::iequals(method, "HEAD");

    const auto deadline = Clock::now() + options_.timeout;
    for (int attempt = 0;; ++attempt) {
      // Leftover bytes mean the previous exchange did not end cleanly; start over.
      if (stream_ && buffer_.size() != 0) Close();
      const bool reused = stream_ != nullptr;
      if (!reused) UBCP_RETURN_IF_ERROR(Connect(deadline));

      error_code ec = Exchange(req, head, deadline);
      if (!ec) {
        ClientReply out;
        auto& res = parser_->get();
        out.response.status = static_cast<int>(res.result_int());
        out.response.content_type = std::string(res[http::field::content_type]);
        out.response.body = std::move(res.body());
        for (const auto& field : res) {
          out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
        }
        if (!parser_->keep_alive()) Close();
        parser_.reset();
        return out;
      }
      const bool nothing_read = !parser_->got_some() && buffer_.size() == 0;
      parser_.reset();
      Close();
      // Only a failure before any response byte is retried: the server then closed an idle
      // connection and cannot have acted on this request.
      if (reused && attempt == 0 && nothing_read && IsStaleConnection(ec)) continue;
      if (ec == http::error::body_limit) {
        return common::MakeError(
            common::Errc::kTooLarge,
            "response body exceeds " + std::to_string(options_.max_response_body) + " bytes");
      }
      if (ec == beast::error::timeout) return NetworkError("request to " + Where() + " timed out");
      return NetworkError("request to " + Where() + " failed: " + ec.message());
    }
  }

  // Writes the request and reads the response into parser_.
  error_code Exchange(http::request<http::string_body>& req, bool head,
                      Clock::time_point deadline) {
    parser_.emplace();
    parser_->body_limit(options_.max_response_body);
    parser_->header_limit(static_cast<std::uint32_t>(kMaxResponseHeader));
    if (head) parser_->skip(true);

    error_code ec = Run(deadline, [&](auto handler) { http::async_write(*stream_, req, handler); });
    if (ec) return ec;
    return Run(deadline,
               [&](auto handler) { http::async_read(*stream_, buffer_, *parser_, handler); });
  }

  common::Status Connect(Clock::time_point deadline) {
    Close();
    stream_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, tls_);
    buffer_.clear();

    std::vector<tcp::endpoint> endpoints;
    if (is_ip_) {
      endpoints.emplace_back(net::ip::make_address(options_.endpoint.host), options_.endpoint.port);
    } else {
      UBCP_ASSIGN_OR_RETURN(endpoints, Resolve(deadline));
    }

    error_code ec = Run(deadline, [&](auto handler) {
      beast::get_lowest_layer(*stream_).async_connect(
          endpoints, [handler](error_code e, const tcp::endpoint&) { handler(e, 0); });
    });
    if (ec) {
      Close();
      if (ec == beast::error::timeout) return NetworkError("connect to " + Where() + " timed out");
      return NetworkError("connect to " + Where() + " failed: " + ec.message());
    }

    SSL* ssl = stream_->native_handle();
    if (!is_ip_ && SSL_set_tlsext_host_name(ssl, options_.endpoint.host.c_str()) != 1) {
      Close();
      return NetworkError("cannot set TLS server name");
    }
    if (!options_.insecure_skip_verify) {
      // OpenSSL checks the name as part of chain verification, so a mismatch fails the
      // handshake itself. An IP address must match an IP SAN, never a DNS name.
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      int ok = is_ip_ ? X509_VERIFY_PARAM_set1_ip_asc(param, options_.endpoint.host.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, options_.endpoint.host.c_str(), 0);
      if (ok != 1) {
        Close();
        return NetworkError("cannot set the expected server name");
      }
    }

    ec = Run(deadline, [&](auto handler) {
      stream_->async_handshake(ssl::stream_base::client,
                               [handler](error_code e) { handler(e, 0); });
    });
    if (ec) {
      std::string message = "TLS handshake with " + Where() + " failed: ";
      long verify = SSL_get_verify_result(ssl);
      if (!options_.insecure_skip_verify && verify != X509_V_OK) {
        message += "certificate verify failed (";
        message += X509_verify_cert_error_string(verify);
        message += ")";
      } else if (ec == beast::error::timeout) {
        message += "timed out";
      } else {
        message += ec.message();
      }
      Close();
      return NetworkError(std::move(message));
    }
    return {};
  }

  common::Result<std::vector<tcp::endpoint>> Resolve(Clock::time_point deadline) {
    // The resolver has no deadline of its own; its handler may outlive this call, so it owns
    // what it writes to.
    struct Outcome {
      bool done = false;
      error_code ec;
      std::vector<tcp::endpoint> endpoints;
    };
    auto outcome = std::make_shared<Outcome>();
    auto resolver = std::make_shared<tcp::resolver>(ioc_);
    resolver->async_resolve(options_.endpoint.host, std::to_string(options_.endpoint.port),
                            [outcome, resolver](error_code ec, tcp::resolver::results_type r) {
                              outcome->done = true;
                              outcome->ec = ec;
                              for (const auto& entry : r) outcome->endpoints.push_back(entry);
                            });
    while (!outcome->done) {
      if (ioc_.stopped()) ioc_.restart();
      if (ioc_.run_one_until(deadline) == 0 && Clock::now() >= deadline) break;
    }
    if (!outcome->done) {
      resolver->cancel();
      return NetworkError("resolving " + options_.endpoint.host + " timed out");
    }
    if (outcome->ec || outcome->endpoints.empty()) {
      return NetworkError("cannot resolve " + options_.endpoint.host + ": " +
                          (outcome->ec ? outcome->ec.message() : "no address"));
    }
    return std::move(outcome->endpoints);
  }

  // Starts one asynchronous operation under the deadline and runs the private io_context until it
  // completes; Beast's tcp_stream turns an expired deadline into beast::error::timeout.
  template <class Start>
  error_code Run(Clock::time_point deadline, Start start) {
    if (Clock::now() >= deadline) return beast::error::timeout;
    beast::get_lowest_layer(*stream_).expires_at(deadline);
    bool done = false;
    error_code result;
    start([&done, &result](error_code ec, std::size_t) {
      done = true;
      result = ec;
    });
    while (!done) {
      if (ioc_.stopped()) ioc_.restart();
      ioc_.run_one();
    }
    beast::get_lowest_layer(*stream_).expires_never();
    return result;
  }

  // Closes without a TLS close_notify exchange: waiting for the server's answer would cost a
  // round trip, and every response is length-delimited, so truncation is still detected.
  void Close() {
    if (!stream_) return;
    beast::get_lowest_layer(*stream_).close();
    // Let handlers cancelled by the close run before the stream they refer to goes away.
    while (true) {
      if (ioc_.stopped()) ioc_.restart();
      if (ioc_.poll() == 0) break;
    }
    stream_.reset();
    buffer_.clear();
  }

  std::string Where() const { return host_header_; }

  HttpsClientOptions options_;
  ssl::context tls_;
  const bool is_ip_;
  std::string host_header_;
  net::io_context ioc_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

common::Result<std::unique_ptr<HttpsClient>> CreateClient(const HttpsClientOptions& options) {
  if (options.endpoint.host.empty() || options.endpoint.port == 0) {
    return common::MakeError(common::Errc::kInvalidArgument, "endpoint host and port required");
  }
  if (HasControlChars(options.endpoint.host) || options.endpoint.host.size() > 255) {
    return common::MakeError(common::Errc::kInvalidArgument, "invalid endpoint host");
  }
  if (options.timeout.count() <= 0) {
    return common::MakeError(common::Errc::kInvalidArgument, "timeout must be positive");
  }
  ssl::context tls(ssl::context::tls_client);
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                  ssl::context::no_compression);
  if (SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION) != 1) {
    return common::MakeError(common::Errc::kInternal, "cannot set minimum TLS version");
  }
  if (options.insecure_skip_verify) {
    // Only on explicit request (testing, pinned deployments): work units stay signed, so this
    // exposes the token and metadata but not the integrity of what is executed.
    tls.set_verify_mode(ssl::verify_none);
  } else {
    error_code ec;
    if (options.ca_file.empty()) {
      tls.set_default_verify_paths(ec);
    } else {
      tls.load_verify_file(options.ca_file.string(), ec);
    }
    if (ec) {
      return common::MakeError(
          common::Errc::kInvalidArgument,
          "cannot load CA file '" + options.ca_file.string() + "': " + ec.message());
    }
    tls.set_verify_mode(ssl::verify_peer);
  }
  return std::unique_ptr<HttpsClient>(std::make_unique<HttpsClientImpl>(options, std::move(tls)));
}

}  // namespace

std::optional<std::string_view> FindHeader(const HeaderList& headers, std::string_view name) {
  for (const auto& [field, value] : headers) {
    if (beast::iequals(field, name)) return std::string_view(value);
  }
  return std::nullopt;
}

common::Result<ClientReply> HttpsClient::Send(const ClientRequest& request) {
  if (!request.headers.empty()) {
    return common::MakeError(common::Errc::kInvalidArgument,
                             "this HTTPS client cannot send extra request headers");
  }
  UBCP_ASSIGN_OR_RETURN(ClientResponse response,
                        Request(request.method, request.target, request.body, request.content_type,
                                request.bearer_token));
  return ClientReply{std::move(response), {}};
}

common::Result<Endpoint> ParseCoordinatorUrl(std::string_view url) {
  auto invalid = [](std::string what) {
    return common::MakeError(common::Errc::kInvalidArgument, "coordinator URL: " + std::move(what));
  };
  if (url.size() > kMaxUrl) return invalid("too long");
  try {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) return invalid("cannot parse '" + std::string(url) + "'");
    const boost::urls::url_view& u = *parsed;
    if (u.scheme_id() != boost::urls::scheme::https) {
      return invalid("scheme must be https, got '" + std::string(u.scheme()) + "'");
    }
    if (u.has_userinfo()) return invalid("user information is not allowed");
    if (u.has_query() || u.has_fragment()) return invalid("query and fragment are not allowed");
    if (!u.encoded_path().empty() && u.encoded_path() != "/") {
      return invalid("a path is not allowed");
    }

    Endpoint endpoint;
    switch (u.host_type()) {
      case boost::urls::host_type::ipv4:
        endpoint.host = u.host_ipv4_address().to_string();
        break;
      case boost::urls::host_type::ipv6:
        endpoint.host = u.host_ipv6_address().to_string();
        break;
      case boost::urls::host_type::name: {
        std::string name = u.host_name();
        if (name.empty()) return invalid("host is empty");
        if (HasControlChars(name) || name.size() > 253 ||
            name.find_first_of(" /\\@[]%") != std::string::npos) {
          return invalid("invalid host name");
        }
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        endpoint.host = std::move(name);
        break;
      }
      default:
        return invalid("host is missing or unsupported");
    }

    if (u.has_port()) {
      std::string_view port = u.port();
      unsigned value = 0;
      auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
      if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
          value > 65535) {
        return invalid("invalid port '" + std::string(port) + "'");
      }
      endpoint.port = static_cast<std::uint16_t>(value);
    }
    return endpoint;
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
}

common::Result<std::unique_ptr<HttpsClient>> HttpsClient::Create(
    const HttpsClientOptions& options) {
  try {
    return CreateClient(options);
  } catch (const std::exception& e) {
    return common::MakeError(common::Errc::kInvalidArgument,
                             std::string("cannot create HTTPS client: ") + e.what());
  }
}

}  // namespace ubcp::client
