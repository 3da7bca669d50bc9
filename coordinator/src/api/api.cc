// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/api.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <charconv>
#include <optional>
#include <vector>

#include "ubcp/common/wire.h"
#include "ubcp/coordinator/byte_range.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

int HttpStatusFor(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kMalformed:
    case Errc::kUnsupportedVersion:
    case Errc::kHashMismatch:
      return 400;
    case Errc::kUnauthorized:
      return 401;
    case Errc::kBadSignature:
    case Errc::kForbidden:
      return 403;
    case Errc::kNotFound:
      return 404;
    case Errc::kConflict:
      return 409;
    case Errc::kTooLarge:
      return 413;
    case Errc::kInsufficientCredits:
      return 402;
    case Errc::kUnavailable:
      return 503;
    case Errc::kIo:
    case Errc::kNetwork:
    case Errc::kInternal:
      return 500;
  }
  return 500;
}

namespace {

HttpResponse Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse ErrorResponse(const common::Error& e) {
  int status = HttpStatusFor(e.code);
  if (status >= 500) spdlog::error("request failed: {}", e.ToString());
  // Internal details stay in the log; the caller learns only that it was our fault.
  common::Error shown = status >= 500 ? MakeError(e.code, "internal error") : e;
  return Json(status, common::SerializeError(shown));
}

HttpResponse Bytes(common::Bytes bytes) {
  HttpResponse r;
  r.content_type = "application/octet-stream";
  r.body.assign(bytes.begin(), bytes.end());
  return r;
}

std::string UploadStateJson(std::string_view id, const UploadState& state) {
  return boost::json::serialize(boost::json::object{{"id", id}, {"received", state.received}});
}

std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (!authorization.starts_with(kPrefix)) return {};
  std::string_view token = authorization.substr(kPrefix.size());
  return token.size() <= 128 ? token : std::string_view{};
}

std::vector<std::string_view> PathSegments(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::vector<std::string_view> parts;
  while (!target.empty()) {
    if (target.front() == '/') {
      target.remove_prefix(1);
      continue;
    }
    auto end = target.find('/');
    parts.push_back(target.substr(0, end));
    target = end == std::string_view::npos ? std::string_view{} : target.substr(end);
  }
  return parts;
}

common::Result<std::int64_t> ParseId(std::string_view s) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v <= 0) {
    return MakeError(Errc::kInvalidArgument, "bad id");
  }
  return v;
}

std::string CatalogJson(const std::vector<CatalogEntry>& entries) {
  common::Catalog catalog;
  for (const auto& e : entries) {
    catalog.models.push_back(
        {e.name, e.model_spec, e.blob_id, e.source_job, e.description, e.created_at});
  }
  return common::SerializeCatalog(catalog);
}

// POST /v1/units/{id}/abandon for an authenticated host: the body must name the unit of the
// path.
HttpResponse AbandonUnit(Coordinator& coordinator, const HostRecord& host,
                         std::string_view id_segment, std::string_view body) {
  auto id = ParseId(id_segment);
  if (!id) return ErrorResponse(id.error());
  auto report = common::ParseUnitAbandon(body);
  if (!report) return ErrorResponse(report.error());
  if (report->unit_id != *id) {
    return ErrorResponse(
        MakeError(Errc::kInvalidArgument, "body names unit " + std::to_string(report->unit_id) +
                                              ", the path unit " + std::to_string(*id)));
  }
  auto released = coordinator.AbandonUnit(host, *report);
  if (!released) return ErrorResponse(released.error());
  return Json(200, common::SerializeUnitAbandonAck({common::kProtocolVersion, *released}));
}

}  // namespace

std::size_t Api::BodyLimit(std::string_view method, std::string_view target) const {
  auto parts = PathSegments(target);
  if (method == "PUT" && parts.size() == 3 && parts[1] == "blobs") return max_update_bytes_;
  if (method == "PUT") return common::kMaxRequestJson;
  if (method == "POST") {
    if (parts.size() == 2 && (parts[1] == "results" || parts[1] == "hosts")) {
      return common::kMaxEnvelopeJson;
    }
    return common::kMaxRequestJson;
  }
  return 0;  // GET and anything else carry no body
}

HttpResponse Api::Handle(const HttpRequest& req) {
  auto parts = PathSegments(req.target);
  const std::string_view token = BearerToken(req.authorization);
  const std::string& m = req.method;
  if (parts.empty() || parts[0] != "v1") {
    return ErrorResponse(MakeError(Errc::kNotFound, "unknown route"));
  }
  parts.erase(parts.begin());
  const std::size_t n = parts.size();

  if (m == "GET" && n == 1 && parts[0] == "health") {
    return Json(200, R"({"status":"ok","protocol":1})");
  }
  if (m == "GET" && n == 1 && parts[0] == "info") {
    const auto& key = coordinator_.signing_key();
    return Json(200, boost::json::serialize(
                         boost::json::object{{"protocol", common::kProtocolVersion},
                                             {"signing_key", key.Hex()},
                                             {"fingerprint", common::Fingerprint(key)}}));
  }
  if (m == "GET" && n == 1 && parts[0] == "keys") {
    if (coordinator_.key_statement().empty()) {
      return ErrorResponse(MakeError(Errc::kNotFound, "this coordinator has no root-signed key"));
    }
    return Json(200, coordinator_.key_statement());
  }
  if (m == "POST" && n == 1 && parts[0] == "hosts") {
    // A host is attached to the donor account whose token it presents (limits per account).
    auto account = coordinator_.AuthenticateAccount(token);
    if (!account) return ErrorResponse(account.error());
    auto r = coordinator_.RegisterHost(*account, req.body);
    if (!r) return ErrorResponse(r.error());
    return Json(201, common::SerializeHostRegistered(*r));
  }

  if (m == "GET" && n == 1 && parts[0] == "leaderboard") {
    auto board = coordinator_.Leaderboard();
    if (!board) return ErrorResponse(board.error());
    return Json(200, common::SerializeLeaderboard(*board));
  }

  // ---- donor routes: host token ----
  const bool me_route =
      n == 3 && parts[0] == "hosts" && parts[1] == "me" &&
      ((m == "PUT" && parts[2] == "profile") || (m == "GET" && parts[2] == "contribution"));
  if (me_route) {
    auto host = coordinator_.AuthenticateHost(token);
    if (!host) return ErrorResponse(host.error());
    if (parts[2] == "profile") {
      auto profile = common::ParseDonorProfile(req.body);
      if (!profile) return ErrorResponse(profile.error());
      if (auto set = coordinator_.SetProfile(*host, *profile); !set) {
        return ErrorResponse(set.error());
      }
      return Json(200, common::SerializeDonorProfile(*profile));
    }
    auto contribution = coordinator_.Contribution(*host);
    if (!contribution) return ErrorResponse(contribution.error());
    return Json(200, common::SerializeContribution(*contribution));
  }
  if (m == "POST" && n == 3 && parts[0] == "units" && parts[2] == "abandon") {
    auto host = coordinator_.AuthenticateHost(token);
    if (!host) return ErrorResponse(host.error());
    return AbandonUnit(coordinator_, *host, parts[1], req.body);
  }
  const bool host_route =
      (m == "POST" && n == 1 && (parts[0] == "work" || parts[0] == "results")) ||
      (m == "PUT" && n == 2 && parts[0] == "blobs") ||
      (m == "GET" && n == 2 && parts[0] == "uploads");
  if (host_route) {
    auto host = coordinator_.AuthenticateHost(token);
    if (!host) return ErrorResponse(host.error());
    if (parts[0] == "work") {
      auto request = common::ParseWorkRequest(req.body);
      if (!request) return ErrorResponse(request.error());
      auto work = coordinator_.RequestWork(*host, *request);
      if (!work) return ErrorResponse(work.error());
      if (!work->has_value()) return Json(204, "");
      return Json(200, common::SerializeEnvelope(**work));
    }
    if (parts[0] == "results") {
      auto ack = coordinator_.SubmitResult(*host, req.body);
      if (!ack) return ErrorResponse(ack.error());
      return Json(200, common::SerializeResultAck(*ack));
    }
    if (parts[0] == "uploads") {
      auto progress = coordinator_.UploadProgress(*host, std::string(parts[1]));
      if (!progress) return ErrorResponse(progress.error());
      return Json(200, UploadStateJson(parts[1], *progress));
    }
    if (!req.content_range.empty()) return PutBlobChunk(*host, std::string(parts[1]), req);
    auto stored = coordinator_.UploadBlob(*host, std::string(parts[1]), common::AsBytes(req.body));
    if (!stored) return ErrorResponse(stored.error());
    return Json(201, boost::json::serialize(boost::json::object{{"id", parts[1]}}));
  }

  if (m == "GET" && n == 2 && parts[0] == "blobs") {
    // Blobs are content-addressed and checked by hash on receipt; any known host or account may
    // read them (a public mirror could serve them just as well).
    if (!coordinator_.AuthenticateHost(token) && !coordinator_.AuthenticateAccount(token)) {
      return ErrorResponse(MakeError(Errc::kUnauthorized, "unknown token"));
    }
    return GetBlob(std::string(parts[1]), req.range);
  }

  // ---- recipient routes: account token ----
  auto account = coordinator_.AuthenticateAccount(token);
  const bool account_route =
      (n == 1 && (parts[0] == "jobs" || parts[0] == "catalog" || parts[0] == "credits")) ||
      (n >= 2 && (parts[0] == "jobs" || parts[0] == "admin"));
  if (!account_route) return ErrorResponse(MakeError(Errc::kNotFound, "unknown route"));
  if (!account) return ErrorResponse(account.error());

  // ---- admin routes: an account token with the admin role ----
  if (parts[0] == "admin") {
    if (account->role != Role::kAdmin) {
      return ErrorResponse(MakeError(Errc::kForbidden, "admin routes need an admin token"));
    }
    if (m == "POST" && n == 2 && parts[1] == "grants") {
      auto request = common::ParseGrantRequest(req.body);
      if (!request) return ErrorResponse(request.error());
      auto credits = coordinator_.Grant(*account, *request);
      if (!credits) return ErrorResponse(credits.error());
      return Json(200, common::SerializeCreditsStatus(*credits));
    }
    if (m == "GET" && n == 2 && parts[1] == "capacity") {
      auto report = coordinator_.Capacity(*account);
      if (!report) return ErrorResponse(report.error());
      return Json(200, common::SerializeCapacityReport(*report));
    }
    return ErrorResponse(MakeError(Errc::kNotFound, "unknown route"));
  }

  if (m == "POST" && n == 1 && parts[0] == "jobs") {
    auto created = coordinator_.SubmitJob(*account, req.body);
    if (!created) return ErrorResponse(created.error());
    return Json(201, common::SerializeJobCreated(*created));
  }
  if (m == "POST" && n == 2 && parts[0] == "jobs" && parts[1] == "quote") {
    auto quote = coordinator_.QuoteJob(*account, req.body);
    if (!quote) return ErrorResponse(quote.error());
    return Json(200, common::SerializeJobQuote(*quote));
  }
  if (m == "GET" && n == 1 && parts[0] == "jobs") {
    auto jobs = coordinator_.ListJobs(*account);
    if (!jobs) return ErrorResponse(jobs.error());
    return Json(200, common::SerializeJobList(*jobs));
  }
  if (m == "GET" && n == 1 && parts[0] == "credits") {
    auto credits = coordinator_.Credits(*account);
    if (!credits) return ErrorResponse(credits.error());
    return Json(200, common::SerializeCreditsStatus(*credits));
  }
  if (m == "POST" && n == 3 && parts[0] == "jobs" && parts[2] == "cancel") {
    auto id = ParseId(parts[1]);
    if (!id) return ErrorResponse(id.error());
    auto status = coordinator_.CancelJob(*account, *id);
    if (!status) return ErrorResponse(status.error());
    return Json(200, common::SerializeJobStatus(*status));
  }
  if (m == "GET" && n == 1 && parts[0] == "catalog") {
    auto entries = coordinator_.Catalog();
    if (!entries) return ErrorResponse(entries.error());
    return Json(200, CatalogJson(*entries));
  }
  if (m == "GET" && n >= 2 && n <= 3 && parts[0] == "jobs") {
    auto id = ParseId(parts[1]);
    if (!id) return ErrorResponse(id.error());
    if (n == 2) {
      auto status = coordinator_.GetJobStatus(*account, *id);
      if (!status) return ErrorResponse(status.error());
      return Json(200, common::SerializeJobStatus(*status));
    }
    if (parts[2] == "model") {
      auto model = coordinator_.DownloadModel(*account, *id);
      if (!model) return ErrorResponse(model.error());
      HttpResponse r = Bytes(std::move(model->second));
      r.headers.emplace_back("X-Ubcp-Model-Spec", model->first);
      return r;
    }
  }
  return ErrorResponse(MakeError(Errc::kNotFound, "unknown route"));
}

HttpResponse Api::GetBlob(const std::string& id, std::string_view range_header) {
  // A Range header that is absent, malformed, of another unit or with several ranges is ignored
  // and the whole blob sent (RFC 9110 14.2).
  const auto range = range_header.empty() ? std::nullopt : ParseRangeHeader(range_header);
  if (!range) {
    auto bytes = coordinator_.ReadBlob(id);
    if (!bytes) return ErrorResponse(bytes.error());
    HttpResponse r = Bytes(std::move(*bytes));
    r.headers.emplace_back("Accept-Ranges", "bytes");
    return r;
  }
  auto total = coordinator_.BlobSize(id);
  if (!total) return ErrorResponse(total.error());
  const auto slice = ResolveRange(*range, *total);
  if (!slice) {
    HttpResponse r = Json(416, common::SerializeError(MakeError(
                                   Errc::kInvalidArgument, "range not satisfiable for a blob of " +
                                                               std::to_string(*total) + " bytes")));
    r.headers.emplace_back("Content-Range", UnsatisfiedContentRange(*total));
    return r;
  }
  auto bytes = coordinator_.ReadBlobRange(id, slice->first, slice->length());
  if (!bytes) return ErrorResponse(bytes.error());
  if (bytes->size() != slice->length()) {
    // The file is shorter than its size a moment ago: a blob never changes, so this is damage.
    return ErrorResponse(MakeError(Errc::kIo, "blob " + id + " changed size while read"));
  }
  HttpResponse r = Bytes(std::move(*bytes));
  r.status = 206;
  r.headers.emplace_back("Accept-Ranges", "bytes");
  r.headers.emplace_back("Content-Range", ContentRangeHeader(*slice));
  return r;
}

HttpResponse Api::PutBlobChunk(const HostRecord& host, const std::string& id,
                               const HttpRequest& req) {
  auto range = ParseContentRange(req.content_range);
  if (!range) return ErrorResponse(range.error());
  auto state = coordinator_.UploadBlobChunk(host, id, *range, common::AsBytes(req.body));
  if (!state) {
    HttpResponse r = ErrorResponse(state.error());
    if (state.error().code == Errc::kConflict) {
      // Where the client should resume (it may also ask GET /v1/uploads/{id}).
      if (auto progress = coordinator_.UploadProgress(host, id)) {
        r.headers.emplace_back("Upload-Offset", std::to_string(progress->received));
      }
    }
    return r;
  }
  if (state->complete) {
    return Json(201, boost::json::serialize(boost::json::object{{"id", id}}));
  }
  return Json(202, UploadStateJson(id, *state));
}

}  // namespace ubcp::coordinator
