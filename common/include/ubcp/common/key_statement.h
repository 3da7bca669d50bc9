// SPDX-License-Identifier: Apache-2.0
#pragma once
// Coordinator key rotation with an offline root key, in the spirit of TUF's root and timestamp
// roles. The root key (kept offline) signs a KeyStatement naming the coordinator's online
// signing key, with a version that grows at every rotation and an expiry. A donor pins the root
// key; it accepts a statement only if the root signed it (checked before parsing), it has not
// expired, and its version is not below the one it accepted before (no rollback); at an equal
// version the statement must name the same key (no mix-and-match). Manifests are then accepted
// only from the online key of the newest accepted statement, and only while it is unexpired
// (no freeze), so a retired or stolen-then-rotated key signs nothing the donor believes.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ubcp/common/crypto.h"
#include "ubcp/common/result.h"
#include "ubcp/common/wire.h"

namespace ubcp::common {

// The signature domain of key statements: a root signature for anything else never certifies
// a key, and a statement never verifies as a manifest.
inline constexpr std::string_view kDomainKeyStatement = "key";
// The longest validity a statement may claim, and the clock skew tolerated on issued_at.
inline constexpr std::int64_t kMaxKeyValiditySeconds = 400LL * 24 * 3600;
inline constexpr std::int64_t kMaxClockSkewSeconds = 600;

struct KeyStatement {
  int protocol = kProtocolVersion;
  std::int64_t version = 1;     // >= 1, grows with each rotation
  std::string online_key;       // hex Ed25519 public key of the coordinator's signing key
  std::int64_t issued_at = 0;   // unix seconds
  std::int64_t expires_at = 0;  // unix seconds, after issued_at
};
std::string SerializeKeyStatement(const KeyStatement& s);
Result<KeyStatement> ParseKeyStatement(std::string_view json);

// The root's signature over a statement (an envelope in domain kDomainKeyStatement).
SignedEnvelope CertifyOnlineKey(const SigningKey& root, const KeyStatement& statement);

// What a donor has accepted so far.
struct TrustedKeys {
  PublicKey root;
  std::int64_t version = 0;  // 0: no statement accepted yet
  std::optional<PublicKey> online;
  std::int64_t expires_at = 0;
};

// Checks a statement envelope against `trusted` at time `now` and returns the new trusted state
// (unchanged when the statement is the one already accepted). Errors: kBadSignature (not signed by
// the pinned root in the key domain), kMalformed (bad payload), kConflict (rollback to a lower
// version, or another key at the accepted version), kForbidden (expired, not yet valid, or a
// validity longer than kMaxKeyValiditySeconds).
Result<TrustedKeys> AcceptKeyStatement(const TrustedKeys& trusted, const SignedEnvelope& statement,
                                       std::int64_t now);

// A manifest envelope is acceptable only when signed by the current online key in the manifest
// domain, while the statement that certified the key is unexpired. kBadSignature or kForbidden.
Status VerifyManifestSigner(const TrustedKeys& trusted, const SignedEnvelope& manifest,
                            std::int64_t now);

}  // namespace ubcp::common
