// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/coordinator_api.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "ubcp/common/crypto.h"
#include "ubcp/common/unique_fd.h"

namespace ubcp::client {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

namespace {

using ScopedFd = common::UniqueFd;

common::Error IoError(const std::string& what, const fs::path& path) {
  return MakeError(Errc::kIo, what + " " + path.string() + ": " + std::strerror(errno));
}

// Writes `bytes` at `offset` and syncs them: a chunk is on disk before the next is asked for.
common::Status WriteDurablyAt(int fd, std::uint64_t offset, common::ByteSpan bytes,
                              const fs::path& path) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("write", path);
    done += static_cast<std::size_t>(n);
  }
  if (::fdatasync(fd) != 0) return IoError("fdatasync", path);
  return {};
}

// The content id of the first `size` bytes of `fd`, read in 1 MiB pieces: a large blob is never
// held in memory whole.
common::Result<std::string> HashWhole(int fd, std::uint64_t size, const fs::path& path) {
  common::Blake2bHasher hasher;
  common::Bytes buffer(std::size_t{1} << 20);
  std::uint64_t done = 0;
  while (done < size) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), size - done));
    ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("read", path);
    if (n == 0) return MakeError(Errc::kIo, "read " + path.string() + ": file ended early");
    hasher.Update(common::ByteSpan(buffer.data(), static_cast<std::size_t>(n)));
    done += static_cast<std::uint64_t>(n);
  }
  return hasher.Final().Hex();
}

// True when `path` is a regular file of ref.size bytes that hashes to ref.id.
bool FileHoldsBlob(const fs::path& path, const common::BlobRef& ref) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) != ref.size) {
    return false;
  }
  auto id = HashWhole(fd.get(), ref.size, path);
  return id && *id == ref.id;
}

common::Status FsyncDirectory(const fs::path& dir) {
  ScopedFd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) return IoError("fsync", dir);
  return {};
}

std::string RangeText(std::uint64_t first, std::uint64_t last) {
  return std::to_string(first) + "-" + std::to_string(last);
}

}  // namespace

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

common::Status CoordinatorApi::DownloadBlob(const common::BlobRef& ref, const fs::path& dest,
                                            std::uint64_t* transferred) {
  std::uint64_t received = 0;
  common::Status status = DownloadInto(ref, dest, &received);
  if (transferred != nullptr) *transferred = received;
  return status;
}

common::Status CoordinatorApi::DownloadInto(const common::BlobRef& ref, const fs::path& dest,
                                            std::uint64_t* received) {
  if (!common::IsContentId(ref.id)) return MakeError(Errc::kInvalidArgument, "bad blob id");
  if (FileHoldsBlob(dest, ref)) return {};
  fs::path part = dest;
  part += ".part";
  ScopedFd fd(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (fd.get() < 0) return IoError("open", part);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return IoError("stat", part);
  std::uint64_t have = static_cast<std::uint64_t>(st.st_size);
  if (have > ref.size) {
    // Not a prefix of this blob, whatever it is.
    if (::ftruncate(fd.get(), 0) != 0) return IoError("truncate", part);
    have = 0;
  }
  auto discard = [&part](common::Error e) {
    std::error_code ec;
    fs::remove(part, ec);
    return e;
  };
  auto other_size = [&] {
    return discard(MakeError(Errc::kHashMismatch, "the coordinator's blob " + ref.id + " is not " +
                                                      std::to_string(ref.size) + " bytes long"));
  };

  const std::string target = "/v1/blobs/" + ref.id;
  while (have < ref.size) {
    const std::uint64_t last = have + std::min<std::uint64_t>(ref.size - have, chunk_bytes_) - 1;
    ClientRequest request{.method = "GET",
                          .target = target,
                          .bearer_token = token_,
                          .headers = {{"Range", "bytes=" + RangeText(have, last)}}};
    UBCP_ASSIGN_OR_RETURN(ClientReply reply, http_.Send(request));
    const ClientResponse& r = reply.response;
    *received += r.body.size();
    if (r.status == 206) {
      const std::string expected =
          "bytes " + RangeText(have, last) + "/" + std::to_string(ref.size);
      auto content_range = FindHeader(reply.headers, "Content-Range");
      const auto slash = content_range ? content_range->rfind('/') : std::string_view::npos;
      if (slash != std::string_view::npos &&
          content_range->substr(slash + 1) != std::to_string(ref.size)) {
        return other_size();
      }
      if (!content_range || *content_range != expected || r.body.size() != last - have + 1) {
        return MakeError(Errc::kMalformed, "blob " + ref.id + ": the answer is not " + expected);
      }
      UBCP_RETURN_IF_ERROR(WriteDurablyAt(fd.get(), have, common::AsBytes(r.body), part));
      have = last + 1;
    } else if (r.status == 200) {
      // The server ignored the Range header (RFC 9110 allows it): this is the whole blob.
      if (r.body.size() != ref.size) {
        return discard(MakeError(Errc::kHashMismatch, "blob " + ref.id + " has the wrong size"));
      }
      if (::ftruncate(fd.get(), 0) != 0) return IoError("truncate", part);
      UBCP_RETURN_IF_ERROR(WriteDurablyAt(fd.get(), 0, common::AsBytes(r.body), part));
      have = ref.size;
    } else if (r.status == 416) {
      // Our offset is below ref.size, so the coordinator's blob is shorter than declared.
      return other_size();
    } else {
      return ErrorFromResponse(r);
    }
  }

  // Check size and hash before anyone decompresses or parses these bytes.
  UBCP_ASSIGN_OR_RETURN(std::string id, HashWhole(fd.get(), ref.size, part));
  if (id != ref.id) {
    return discard(MakeError(Errc::kHashMismatch, "blob " + ref.id + " does not match its hash"));
  }
  if (::fsync(fd.get()) != 0) return IoError("fsync", part);
  std::error_code ec;
  fs::rename(part, dest, ec);
  if (ec) return MakeError(Errc::kIo, "rename " + part.string() + ": " + ec.message());
  return FsyncDirectory(dest.parent_path());
}

common::Result<std::uint64_t> CoordinatorApi::UploadOffset(const std::string& id) {
  // Through Send like every request of a transfer, so that one implementation serves them all.
  const std::string target = "/v1/uploads/" + id;
  UBCP_ASSIGN_OR_RETURN(ClientReply reply,
                        http_.Send({.method = "GET", .target = target, .bearer_token = token_}));
  const ClientResponse& r = reply.response;
  if (r.status != 200) return ErrorFromResponse(r);
  boost::system::error_code ec;
  auto value = boost::json::parse(r.body, ec);
  const boost::json::object* object = !ec && value.is_object() ? &value.as_object() : nullptr;
  const auto* got_id = object != nullptr ? object->if_contains("id") : nullptr;
  const auto* received = object != nullptr ? object->if_contains("received") : nullptr;
  if (got_id == nullptr || !got_id->is_string() || got_id->as_string() != id ||
      received == nullptr || !(received->is_uint64() || received->is_int64())) {
    return MakeError(Errc::kMalformed, "bad /v1/uploads answer");
  }
  auto offset = received->to_number<std::int64_t>(ec);
  if (ec || offset < 0) return MakeError(Errc::kMalformed, "bad upload offset");
  return static_cast<std::uint64_t>(offset);
}

common::Status CoordinatorApi::UploadBlob(const std::string& id, common::ByteSpan bytes,
                                          std::uint64_t* transferred) {
  std::uint64_t sent = 0;
  common::Status status = UploadFrom(id, bytes, &sent);
  if (transferred != nullptr) *transferred = sent;
  return status;
}

common::Status CoordinatorApi::UploadFrom(const std::string& id, common::ByteSpan bytes,
                                          std::uint64_t* sent) {
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "bad blob id");
  if (bytes.empty()) {
    // Content-Range cannot name an empty range.
    return PutBlob(id, bytes);
  }
  const std::uint64_t size = bytes.size();
  const std::string target = "/v1/blobs/" + id;
  UBCP_ASSIGN_OR_RETURN(std::uint64_t offset, UploadOffset(id));
  bool asked_again = false;
  for (;;) {
    // The coordinator reports the full size only once the blob is stored.
    if (offset == size) return {};
    if (offset > size) {
      return MakeError(Errc::kConflict, "the coordinator has more bytes of " + id + " than it has");
    }
    const std::uint64_t last = offset + std::min<std::uint64_t>(size - offset, chunk_bytes_) - 1;
    const auto chunk = bytes.subspan(offset, last - offset + 1);
    ClientRequest request{.method = "PUT",
                          .target = target,
                          .body = common::AsString(chunk),
                          .content_type = "application/octet-stream",
                          .bearer_token = token_,
                          .headers = {{"Content-Range", "bytes " + RangeText(offset, last) + "/" +
                                                            std::to_string(size)}}};
    UBCP_ASSIGN_OR_RETURN(ClientReply reply, http_.Send(request));
    *sent += chunk.size();
    const ClientResponse& r = reply.response;
    if (r.status == 201) return {};
    if (r.status == 202) {
      boost::system::error_code ec;
      auto value = boost::json::parse(r.body, ec);
      const auto* received =
          !ec && value.is_object() ? value.as_object().if_contains("received") : nullptr;
      std::int64_t now = received != nullptr ? received->to_number<std::int64_t>(ec) : -1;
      // Progress, short of the end (the end is answered 201): anything else would loop.
      if (received == nullptr || ec || now <= static_cast<std::int64_t>(offset) ||
          static_cast<std::uint64_t>(now) >= size) {
        return MakeError(Errc::kMalformed, "bad answer to an upload chunk of " + id);
      }
      offset = static_cast<std::uint64_t>(now);
      continue;
    }
    if (r.status == 409 && !asked_again) {
      // Another offset than ours (an earlier chunk's answer was lost): ask where to go on.
      asked_again = true;
      UBCP_ASSIGN_OR_RETURN(offset, UploadOffset(id));
      continue;
    }
    return ErrorFromResponse(r);
  }
}

common::Result<common::ResultAck> CoordinatorApi::PostResult(const common::SignedEnvelope& result) {
  UBCP_ASSIGN_OR_RETURN(
      ClientResponse r,
      Call("POST", "/v1/results", common::SerializeEnvelope(result), "application/json"));
  return common::ParseResultAck(r.body);
}

common::Result<bool> CoordinatorApi::AbandonUnit(const common::UnitAbandon& report) {
  UBCP_ASSIGN_OR_RETURN(ClientResponse r,
                        Call("POST", "/v1/units/" + std::to_string(report.unit_id) + "/abandon",
                             common::SerializeUnitAbandon(report), "application/json"));
  UBCP_ASSIGN_OR_RETURN(common::UnitAbandonAck ack, common::ParseUnitAbandonAck(r.body));
  return ack.released;
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
