// SPDX-License-Identifier: Apache-2.0
#pragma once
// The HTTPS front door: a Boost.Beast asynchronous TLS server (TLS 1.2 minimum, 1.3 preferred).
// It knows nothing of the API: each request is read with a body limit chosen from its method
// and target *before* the body is read, turned into a plain HttpRequest, and given to a
// RequestHandler, a plain function from request to response. Sessions own their stream, buffer
// and timeouts; each connection runs on its own strand. Beast and OpenSSL stay inside src/http.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::coordinator {

struct HttpRequest {
  std::string method;         // "GET", "POST", "PUT", ...
  std::string target;         // path and query as sent, e.g. "/v1/jobs/3"
  std::string authorization;  // the Authorization header, verbatim ("" if none)
  std::string content_type;
  std::string range;          // the Range header, verbatim ("" if none): ranged downloads
  std::string content_range;  // the Content-Range header ("" if none): resumable uploads
  std::string body;
  std::string remote;  // peer address, for logs
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// Called on a server thread, possibly concurrently for different connections; must not throw
// (an exception is answered 500 and logged as a bug).
using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;
// Maximum body size for a request, from its method and target; larger bodies are answered 413
// without being read.
using BodyLimitFn = std::function<std::size_t(std::string_view method, std::string_view target)>;

struct ServerOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: pick a free port (see HttpsServer::port)
  int threads = 2;
  std::filesystem::path cert_file;      // PEM certificate chain
  std::filesystem::path key_file;       // PEM private key
  std::chrono::seconds io_timeout{30};  // per read/write
  std::size_t max_header_bytes = 8 * 1024;
  int max_requests_per_connection = 1000;
};

class HttpsServer {
 public:
  // Loads the certificate and key, binds and listens. kIo / kInvalidArgument on failure.
  static common::Result<std::unique_ptr<HttpsServer>> Create(const ServerOptions& options,
                                                             RequestHandler handler,
                                                             BodyLimitFn body_limit);
  virtual ~HttpsServer() = default;

  // The bound port (useful with port 0).
  virtual std::uint16_t port() const = 0;
  // Serves on `threads` threads until Stop() is called or SIGINT/SIGTERM arrives (when
  // handle_signals). Graceful: stops accepting, lets in-flight requests finish. Blocks.
  virtual void Run(bool handle_signals) = 0;
  // Thread-safe; makes Run return.
  virtual void Stop() = 0;
};

// Creates a self-signed certificate (EC P-256, SAN localhost/127.0.0.1/::1 plus `extra_names`,
// 10 years) and its key at the given paths unless both exist. Key file mode 0600.
common::Status EnsureSelfSignedCertificate(const std::filesystem::path& cert_file,
                                           const std::filesystem::path& key_file,
                                           const std::vector<std::string>& extra_names = {});

}  // namespace ubcp::coordinator
