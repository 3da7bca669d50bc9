// SPDX-License-Identifier: Apache-2.0
#pragma once
// Typed calls to the coordinator's /v1 API over one HttpsClient. A non-2xx answer becomes the
// Error the server sent (its code and message); transport failures stay kNetwork. Blobs are
// checked against their declared size and hash before they are returned.

#include <optional>
#include <string>

#include "ubcp/client/https_client.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

struct CoordinatorInfo {
  common::PublicKey signing_key;
  std::string fingerprint;
};

// Whether an error is worth retrying later (network, 5xx, 503) rather than final (4xx).
bool IsRetryable(const common::Error& e);

class CoordinatorApi {
 public:
  explicit CoordinatorApi(HttpsClient& http) : http_(http) {}
  void set_token(std::string token) { token_ = std::move(token); }
  // The donor account's token, presented only when registering: the host is attached to that
  // account (`ubcp-coordinator add-account` makes one).
  void set_account_token(std::string token) { account_token_ = std::move(token); }

  common::Result<CoordinatorInfo> GetInfo();
  // The root-signed statement certifying the coordinator's signing key (GET /v1/keys).
  common::Result<common::SignedEnvelope> GetKeyStatement();
  common::Result<common::HostRegistered> Register(const common::SignedEnvelope& registration);
  // nullopt when the coordinator has no work (204).
  common::Result<std::optional<common::SignedEnvelope>> RequestWork(
      const common::WorkRequest& request);
  // kHashMismatch unless the bytes have exactly ref.size bytes and hash to ref.id.
  common::Result<common::Bytes> GetBlob(const common::BlobRef& ref);
  common::Status PutBlob(const std::string& id, common::ByteSpan bytes);
  common::Result<common::ResultAck> PostResult(const common::SignedEnvelope& result);
  // The donor's public leaderboard entry (opt-in) and its validated contribution.
  common::Status SetProfile(const common::DonorProfile& profile);
  common::Result<common::Contribution> GetContribution();

 private:
  common::Result<ClientResponse> Call(std::string_view method, std::string_view target,
                                      std::string_view body, std::string_view content_type);
  common::Result<ClientResponse> CallAs(std::string_view token, std::string_view method,
                                        std::string_view target, std::string_view body,
                                        std::string_view content_type);
  HttpsClient& http_;
  std::string token_;
  std::string account_token_;
};

// The Error carried by a non-2xx response (falls back to a generic one by status).
common::Error ErrorFromResponse(const ClientResponse& response);

}  // namespace ubcp::client
