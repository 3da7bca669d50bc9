// SPDX-License-Identifier: Apache-2.0
#pragma once
// A small blocking HTTPS client (Boost.Beast + OpenSSL) for the donor client and the `ubcp`
// tool: keeps one connection alive, reconnects when the server closed it, verifies the server
// certificate against a CA file (or, only when asked, trusts it blindly), and bounds the size of
// every response body. Not thread-safe: one per thread.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::client {

struct Endpoint {
  std::string host;
  std::uint16_t port = 443;
};
// Parses "https://host[:port][/]" (Boost.URL). Anything but https is kInvalidArgument.
common::Result<Endpoint> ParseCoordinatorUrl(std::string_view url);

struct HttpsClientOptions {
  Endpoint endpoint;
  std::filesystem::path ca_file;      // PEM with the certificate(s) to trust
  bool insecure_skip_verify = false;  // trust any certificate (message signatures still apply)
  std::chrono::seconds timeout{60};   // per request, connect included
  std::size_t max_response_body = 64u << 20;
};

struct ClientResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// Header fields as (name, value) pairs, in the order sent or received.
using HeaderList = std::vector<std::pair<std::string, std::string>>;
// The value of the first field called `name` (compared case-insensitively), or nullopt.
std::optional<std::string_view> FindHeader(const HeaderList& headers, std::string_view name);

// A request with extra header fields (Range, Content-Range, ...). Host, Authorization,
// Content-Type and the framing fields (Content-Length, Transfer-Encoding, Connection) are the
// client's own and are refused here (kInvalidArgument), as are names that are not tokens and
// values with control characters.
struct ClientRequest {
  std::string_view method = "GET";
  std::string_view target = "/";
  std::string_view body = {};
  std::string_view content_type = "application/json";
  std::string_view bearer_token = {};
  HeaderList headers = {};
};

// A response with all of its header fields.
struct ClientReply {
  ClientResponse response;
  HeaderList headers;
};

class HttpsClient {
 public:
  // kInvalidArgument when the CA file cannot be loaded (and verification is on).
  static common::Result<std::unique_ptr<HttpsClient>> Create(const HttpsClientOptions& options);
  virtual ~HttpsClient() = default;

  // Sends one request and reads the whole answer. Transport failures (connect, TLS handshake,
  // certificate, timeout, a body over max_response_body) are kNetwork / kTooLarge errors; any
  // HTTP status, 4xx and 5xx included, is a successful ClientResponse.
  virtual common::Result<ClientResponse> Request(std::string_view method, std::string_view target,
                                                 std::string_view body = {},
                                                 std::string_view content_type = "application/json",
                                                 std::string_view bearer_token = {}) = 0;

  // Like Request, with extra request headers in and every response header out. This default
  // serves implementations that cannot send extra headers (test doubles): without extra headers
  // it forwards to Request (no response headers); with any it fails with kInvalidArgument.
  virtual common::Result<ClientReply> Send(const ClientRequest& request);
};

}  // namespace ubcp::client
