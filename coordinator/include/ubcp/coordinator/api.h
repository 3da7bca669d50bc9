// SPDX-License-Identifier: Apache-2.0
#pragma once
// The /v1 JSON API: where a request enters. Maps an HttpRequest to one Coordinator call (after
// authenticating the bearer token for the route's role) and the call's result or error to an
// HttpResponse. No decisions are made here. Routes and limits: docs/PROTOCOL.md.

#include <cstddef>
#include <string>
#include <string_view>

#include "ubcp/coordinator/coordinator_service.h"
#include "ubcp/coordinator/http_server.h"

namespace ubcp::coordinator {

class Api {
 public:
  explicit Api(Coordinator& coordinator, std::size_t max_update_bytes = 64u << 20)
      : coordinator_(coordinator), max_update_bytes_(max_update_bytes) {}

  HttpResponse Handle(const HttpRequest& request);
  // The body limit of a route, decided from method and target before the body is read.
  std::size_t BodyLimit(std::string_view method, std::string_view target) const;

 private:
  // GET /v1/blobs/{id}: the whole blob (200), or one range of it (206 / 416, RFC 9110).
  HttpResponse GetBlob(const std::string& id, std::string_view range_header);
  // PUT /v1/blobs/{id} with Content-Range: one chunk of a resumable upload (202 / 201 / 409).
  HttpResponse PutBlobChunk(const HostRecord& host, const std::string& id, const HttpRequest& req);

  Coordinator& coordinator_;
  std::size_t max_update_bytes_;
};

// HTTP status for an error code (4xx for the caller's mistakes, 5xx for ours).
int HttpStatusFor(common::Errc code);

}  // namespace ubcp::coordinator
