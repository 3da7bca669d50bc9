// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's side of key rotation (ubcp/common/key_statement.h). Files under
// <data>/keys/:
//   signing.key        the online Ed25519 key that signs manifests (0600)
//   statement.json     the offline root's signed KeyStatement certifying it (public)
//   retired/v<N>.key   online keys replaced by a rotation, kept for audit (0600)
// The root key itself never lives in the data directory: `ubcp-coordinator keys init-root`
// writes it wherever the operator keeps it offline, and `keys rotate` is run with it at hand.

#include <cstdint>
#include <filesystem>
#include <string>

#include "ubcp/common/crypto.h"
#include "ubcp/common/key_statement.h"
#include "ubcp/common/result.h"

namespace ubcp::coordinator {

// The signed statement (envelope JSON) in `keys_dir`, or "" when the coordinator runs without a
// root. kMalformed when the file is not an envelope.
common::Result<std::string> LoadKeyStatement(const std::filesystem::path& keys_dir);

// Makes a new online key, certified by `root` with the next version (1 for the first) valid for
// `valid_seconds` from `now`; retires the previous key. The running coordinator uses the new key
// after a restart. Refuses (kConflict) when the existing statement was not signed by `root`.
common::Result<common::KeyStatement> RotateOnlineKey(const std::filesystem::path& keys_dir,
                                                     const common::SigningKey& root,
                                                     std::int64_t now, std::int64_t valid_seconds);

}  // namespace ubcp::coordinator
