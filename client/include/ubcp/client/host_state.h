// SPDX-License-Identifier: Apache-2.0
#pragma once
// The donor client's state directory, everything it must keep across restarts:
//   host.key          Ed25519 secret key (0600), created on first start
//   coordinator.pub   the coordinator signing key this host trusts (hex), without a root key
//   trusted-keys      with a pinned root key: the root, and the newest key statement accepted
//                     (version, online key, expiry), so that a restart cannot be rolled back
//   registration.json host id and bearer token (0600)
//   blobs/<id>        cache of downloaded blobs, re-checked by hash on every read
// Files are written atomically (temp file + rename).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "ubcp/common/atomic_file.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/key_statement.h"
#include "ubcp/common/result.h"

namespace ubcp::client {

struct Registration {
  std::int64_t host_id = 0;
  std::string token;
};

class HostState {
 public:
  static common::Result<HostState> Open(const std::filesystem::path& dir);

  common::Result<common::SigningKey> LoadOrCreateKey() const;
  // nullopt when no coordinator key has been trusted yet.
  common::Result<std::optional<common::PublicKey>> TrustedCoordinatorKey() const;
  common::Status TrustCoordinatorKey(const common::PublicKey& key) const;
  // The state accepted under `root` (version 0 and no online key when nothing is stored yet).
  // kConflict when the stored state belongs to another root.
  common::Result<common::TrustedKeys> LoadTrustedKeys(const common::PublicKey& root) const;
  common::Status SaveTrustedKeys(const common::TrustedKeys& trusted) const;
  common::Result<std::optional<Registration>> LoadRegistration() const;
  common::Status SaveRegistration(const Registration& registration) const;

  // Cached blob bytes if present and still matching `id`; nullopt otherwise.
  std::optional<common::Bytes> CachedBlob(const std::string& id) const;
  void CacheBlob(const std::string& id, common::ByteSpan bytes) const;  // best effort

  const std::filesystem::path& dir() const { return dir_; }

 private:
  explicit HostState(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

// Writes `content` to `path` atomically with the given mode (ubcp/common/atomic_file.h).
using common::WriteFileAtomically;

}  // namespace ubcp::client
