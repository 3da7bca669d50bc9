// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/coordinator_api.h"

#include <boost/json.hpp>

namespace ubcp::client {
using common::Errc;
using common::MakeError;

bool IsRetryable(const common::Error& e) {
  return e.code == Errc::kNetwork || e.code == Errc::kUnavailable || e.code == Errc::kInternal ||
         e.code == Errc::kIo;
}

common::Error ErrorFromResponse(const ClientResponse& response) {
  if (auto parsed = common::ParseErrorBody(response.body)) return *parsed;
  Errc code = response.status >= 500   ? Errc::kUnavailable
              : response.status == 401 ? Errc::kUnauthorized
              : response.status == 403 ? Errc::kForbidden
              : response.status == 404 ? Errc::kNotFound
              : response.status == 409 ? Errc::kConflict
              : response.status == 413 ? Errc::kTooLarge
                                       : Errc::kInvalidArgument;
  return MakeError(code, "HTTP " + std::to_string(response.status));
}

common::Result<ClientResponse> CoordinatorApi::Call(std::string_view method,
                                                    std::string_view target, std::string_view body,
                                                    std::string_view content_type) {
  return CallAs(token_, method, target, body, content_type);
}

common::Result<ClientResponse> CoordinatorApi::CallAs(std::string_view token,
                                                      std::string_view method,
                                                      std::string_view target,
                                                      std::string_view body,
                                                      std::string_view content_type) {
  UBCP_ASSIGN_OR_RETURN(ClientResponse response,
                        http_.Request(method, target, body, content_type, std::string(token)));
  if (response.status < 200 || response.status >= 300) return ErrorFromResponse(response);
  return response;
}

common::Result<CoordinatorInfo> CoordinatorApi::GetInfo() {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r, Call("GET", "/v1/info", {}, {}));
  boost::system::error_code ec;
  auto value = boost::json::parse(r.body, ec);
  if (ec || !value.is_object()) return MakeError(Errc::kMalformed, "bad /v1/info answer");
  const auto* key = value.as_object().if_contains("signing_key");
  if (key == nullptr || !key->is_string()) return MakeError(Errc::kMalformed, "no signing_key");
  UBCP_ASSIGN_OR_RETURN(common::PublicKey pk, common::PublicKey::FromHex(key->as_string()));
  return CoordinatorInfo{pk, common::Fingerprint(pk)};
}

common::Result<common::HostRegistered> CoordinatorApi::Register(
    const common::SignedEnvelope& registration) {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r,
                        CallAs(account_token_, "POST", "/v1/hosts",
                               common::SerializeEnvelope(registration), "application/json"));
  return common::ParseHostRegistered(r.body);
}

common::Result<std::optional<common::SignedEnvelope>> CoordinatorApi::RequestWork(
    const common::WorkRequest& request) {
  UBCP_ASSIGN_OR_RETURN(
      ClientResponse r,
      Call("POST", "/v1/work", common::SerializeWorkRequest(request), "application/json"));
  if (r.status == 204) return std::optional<common::SignedEnvelope>();
  UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope env, common::ParseEnvelope(r.body));
  return std::optional<common::SignedEnvelope>(std::move(env));
}

common::Result<common::Bytes> CoordinatorApi::GetBlob(const common::BlobRef& ref) {
  if (!common::IsContentId(ref.id)) return MakeError(Errc::kInvalidArgument, "bad blob id");
  UBCP_ASSIGN_OR_RETURN(ClientResponse r, Call("GET", "/v1/blobs/" + ref.id, {}, {}));
  // Check size and hash before anyone decompresses or parses these bytes.
  if (r.body.size() != ref.size) {
    return MakeError(Errc::kHashMismatch, "blob " + ref.id + " has the wrong size");
  }
  common::Bytes bytes(r.body.begin(), r.body.end());
  if (common::ContentId(bytes) != ref.id) {
    return MakeError(Errc::kHashMismatch, "blob " + ref.id + " does not match its hash");
  }
  return bytes;
}

common::Status CoordinatorApi::PutBlob(const std::string& id, common::ByteSpan bytes) {
  UBCP_RETURN_IF_ERROR(
      Call("PUT", "/v1/blobs/" + id, common::AsString(bytes), "application/octet-stream"));
  return {};
}

common::Result<common::ResultAck> CoordinatorApi::PostResult(const common::SignedEnvelope& result) {
  UBCP_ASSIGN_OR_RETURN(
      ClientResponse r,
      Call("POST", "/v1/results", common::SerializeEnvelope(result), "application/json"));
  return common::ParseResultAck(r.body);
}

common::Result<common::SignedEnvelope> CoordinatorApi::GetKeyStatement() {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r, Call("GET", "/v1/keys", {}, {}));
  return common::ParseEnvelope(r.body);
}

common::Status CoordinatorApi::SetProfile(const common::DonorProfile& profile) {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r,
                        Call("PUT", "/v1/hosts/me/profile", common::SerializeDonorProfile(profile),
                             "application/json"));
  (void)r;
  return {};
}

common::Result<common::Contribution> CoordinatorApi::GetContribution() {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r, Call("GET", "/v1/hosts/me/contribution", {}, {}));
  return common::ParseContribution(r.body);
}

}  // namespace ubcp::client
