// SPDX-License-Identifier: Apache-2.0
#pragma once
// Typed calls to the coordinator's /v1 API over one HttpsClient. A non-2xx answer becomes the
// Error the server sent (its code and message); transport failures stay kNetwork. Blobs are
// checked against their declared size and hash before they are returned.
//
// Blob transfers resume where an earlier call stopped (docs/PROTOCOL.md, "Resumable
// transfers"): DownloadBlob keeps what it has in <dest>.part and asks for the rest with Range
// requests; UploadBlob asks the coordinator how much it has and sends the rest with
// Content-Range. Neither retries by itself: the caller wraps each call in its retry loop with
// backoff, and each call continues from what the previous one left.

#include <cstddef>
#include <cstdint>
#include <filesystem>
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

  // Downloads the blob to `dest`, appending to `dest`.part from its current size with requests
  // of at most chunk_bytes() (a .part longer than ref.size is discarded first). Each chunk is
  // synced to disk before the next is asked for, so a killed process loses at most one. Once
  // ref.size bytes are there the whole file is checked against ref.id and renamed to `dest`;
  // kHashMismatch deletes the .part (the next call starts from 0). Nothing is fetched when
  // `dest` already holds the blob. `transferred` (if given) is set to the body bytes received
  // by this call, whatever its outcome. kIo for local file failures; one caller per `dest`.
  common::Status DownloadBlob(const common::BlobRef& ref, const std::filesystem::path& dest,
                              std::uint64_t* transferred = nullptr);
  // Uploads `bytes` as blob `id` (their content id): asks GET /v1/uploads/{id} how many bytes
  // the coordinator has, then sends the rest in chunks of at most chunk_bytes() with
  // Content-Range; a 409 (the coordinator has another offset) makes it ask once more. Done when
  // the coordinator has stored the blob. `transferred` (if given) is set to the body bytes sent
  // by this call in requests that were answered. An empty blob goes as a plain PUT.
  common::Status UploadBlob(const std::string& id, common::ByteSpan bytes,
                            std::uint64_t* transferred = nullptr);
  // The largest chunk of a ranged download or resumable upload (at least 1 byte).
  void set_chunk_bytes(std::size_t bytes) { chunk_bytes_ = bytes == 0 ? 1 : bytes; }
  std::size_t chunk_bytes() const { return chunk_bytes_; }
  static constexpr std::size_t kDefaultChunkBytes = 8u << 20;
  common::Result<common::ResultAck> PostResult(const common::SignedEnvelope& result);
  // Tells the coordinator that this host gave up `report.unit_id` (POST
  // /v1/units/{id}/abandon), so that it re-issues the unit at once. Returns whether the lease
  // was released (false: it was not this host's current lease any more). One request, no retry.
  common::Result<bool> AbandonUnit(const common::UnitAbandon& report);
  // The donor's public leaderboard entry (opt-in) and its validated contribution.
  common::Status SetProfile(const common::DonorProfile& profile);
  common::Result<common::Contribution> GetContribution();

 private:
  common::Result<ClientResponse> Call(std::string_view method, std::string_view target,
                                      std::string_view body, std::string_view content_type);
  common::Result<ClientResponse> CallAs(std::string_view token, std::string_view method,
                                        std::string_view target, std::string_view body,
                                        std::string_view content_type);
  common::Status DownloadInto(const common::BlobRef& ref, const std::filesystem::path& dest,
                              std::uint64_t* received);
  common::Status UploadFrom(const std::string& id, common::ByteSpan bytes, std::uint64_t* sent);
  // GET /v1/uploads/{id}: the bytes of `id` the coordinator has from this host.
  common::Result<std::uint64_t> UploadOffset(const std::string& id);

  HttpsClient& http_;
  std::string token_;
  std::string account_token_;
  std::size_t chunk_bytes_ = kDefaultChunkBytes;
};

// The Error carried by a non-2xx response (falls back to a generic one by status).
common::Error ErrorFromResponse(const ClientResponse& response);

}  // namespace ubcp::client
