// SPDX-License-Identifier: Apache-2.0
#pragma once
// The donor client's state directory, everything it must keep across restarts:
//   host.key          Ed25519 secret key (0600), created on first start
//   coordinator.pub   the coordinator signing key this host trusts (hex), without a root key
//   trusted-keys      with a pinned root key: the root, and the newest key statement accepted
//                     (version, online key, expiry), so that a restart cannot be rolled back
//   registration.json host id and bearer token (0600)
//   blobs/<id>        cache of downloaded blobs, re-checked by hash on every use (the download
//                     code does that, coordinator_api.h DownloadBlob) and pruned to a size
//                     bound, least recently used first (<id>.part: a download in progress)
// Files are written atomically (temp file + rename).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
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

  // Where the blob `id` is cached (the file may not exist yet); kMalformed for anything but a
  // content id, so that no name from a manifest can point outside blobs/.
  common::Result<std::filesystem::path> BlobPath(const std::string& id) const;
  // Marks a cached blob as used now (its modification time), for PruneBlobs. Best effort.
  void TouchBlob(const std::string& id) const;
  // Removes cached blobs, least recently used first, until the cache holds at most `max_bytes`;
  // the blobs named in `in_use` (and their partial downloads) are never removed. Files that are
  // not blobs are left alone. Returns the bytes removed.
  std::uint64_t PruneBlobs(std::uint64_t max_bytes, const std::set<std::string>& in_use) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  explicit HostState(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

// Writes `content` to `path` atomically with the given mode (ubcp/common/atomic_file.h).
using common::WriteFileAtomically;

}  // namespace ubcp::client
