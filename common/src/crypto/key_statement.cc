// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/key_statement.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <limits>

#include "wire/json_reader.h"

namespace ubcp::common {
namespace {

constexpr std::size_t kMaxStatementJson = 4096;
constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();

}  // namespace

std::string SerializeKeyStatement(const KeyStatement& s) {
  boost::json::object o;
  o["protocol"] = s.protocol;
  o["version"] = s.version;
  o["online_key"] = s.online_key;
  o["issued_at"] = s.issued_at;
  o["expires_at"] = s.expires_at;
  return boost::json::serialize(o);
}

Result<KeyStatement> ParseKeyStatement(std::string_view text) {
  return json::ParseMessage(
      text, kMaxStatementJson, "key_statement", [](json::ObjectReader& r) -> Result<KeyStatement> {
        KeyStatement s;
        UBCP_ASSIGN_OR_RETURN(s.protocol, r.Int("protocol", kProtocolVersion, kProtocolVersion));
        UBCP_ASSIGN_OR_RETURN(s.version, r.Int64("version", 1, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(s.online_key, r.String("online_key", 64));
        if (!PublicKey::FromHex(s.online_key)) {
          return MakeError(Errc::kMalformed, "key_statement.online_key: not an Ed25519 public key");
        }
        UBCP_ASSIGN_OR_RETURN(s.issued_at, r.Int64("issued_at", 0, kMaxInt64));
        UBCP_ASSIGN_OR_RETURN(s.expires_at, r.Int64("expires_at", 0, kMaxInt64));
        if (s.expires_at <= s.issued_at) {
          return MakeError(Errc::kMalformed, "key_statement: expires_at must follow issued_at");
        }
        return s;
      });
}

SignedEnvelope CertifyOnlineKey(const SigningKey& root, const KeyStatement& statement) {
  return SignPayload(root, kDomainKeyStatement, SerializeKeyStatement(statement));
}

Result<TrustedKeys> AcceptKeyStatement(const TrustedKeys& trusted, const SignedEnvelope& statement,
                                       std::int64_t now) {
  // The root's signature first: nothing unsigned is parsed.
  UBCP_RETURN_IF_ERROR(VerifyEnvelope(statement, kDomainKeyStatement, trusted.root));
  UBCP_ASSIGN_OR_RETURN(KeyStatement s, ParseKeyStatement(statement.payload));
  UBCP_ASSIGN_OR_RETURN(PublicKey online, PublicKey::FromHex(s.online_key));
  if (online == trusted.root) {
    return MakeError(Errc::kForbidden, "the root key may not serve as the online key");
  }
  if (s.version < trusted.version) {
    return MakeError(Errc::kConflict, "key statement version " + std::to_string(s.version) +
                                          " is older than the accepted version " +
                                          std::to_string(trusted.version) + " (rollback)");
  }
  if (s.version == trusted.version && trusted.online && !(online == *trusted.online)) {
    return MakeError(Errc::kConflict, "another key at the accepted version " +
                                          std::to_string(s.version) + " (mix-and-match)");
  }
  if (s.expires_at - s.issued_at > kMaxKeyValiditySeconds) {
    return MakeError(Errc::kForbidden, "key statement claims a validity over the limit");
  }
  if (s.issued_at > now + kMaxClockSkewSeconds) {
    return MakeError(Errc::kForbidden, "key statement is not valid yet");
  }
  if (now >= s.expires_at) {
    return MakeError(Errc::kForbidden, "key statement version " + std::to_string(s.version) +
                                           " has expired (freeze)");
  }
  TrustedKeys next = trusted;
  next.version = s.version;
  next.online = online;
  next.expires_at = s.expires_at;
  return next;
}

Status VerifyManifestSigner(const TrustedKeys& trusted, const SignedEnvelope& manifest,
                            std::int64_t now) {
  if (!trusted.online) return MakeError(Errc::kForbidden, "no certified coordinator key yet");
  if (now >= trusted.expires_at) {
    return MakeError(Errc::kForbidden, "the coordinator key's statement has expired");
  }
  return VerifyEnvelope(manifest, kDomainManifest, *trusted.online);
}

}  // namespace ubcp::common
