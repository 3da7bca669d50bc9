// SPDX-License-Identifier: Apache-2.0
// Key rotation with an offline root, table-driven in the spirit of TUF's conformance cases:
// rotation, rollback, freeze, mix-and-match, forged and mis-domained statements, and manifests
// signed by retired keys.
#include "ubcp/common/key_statement.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ubcp::common {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;
constexpr std::int64_t kDay = 86400;

// The keys a case refers to by name.
struct Keys {
  SigningKey root = SigningKey::Generate();
  SigningKey other_root = SigningKey::Generate();
  std::map<std::string, SigningKey> online;
  const SigningKey& Online(const std::string& name) {
    auto it = online.find(name);
    if (it == online.end()) it = online.emplace(name, SigningKey::Generate()).first;
    return it->second;
  }
};

// One step: a statement the donor is shown, or a manifest it must judge.
struct Step {
  enum Kind { kStatement, kManifest } kind = kStatement;
  std::string key;  // online key name (statement: certified; manifest: signer)
  std::int64_t version = 1;
  std::int64_t issued = kNow - kDay;
  std::int64_t expires = kNow + 30 * kDay;
  std::int64_t now = kNow;
  std::string signer = "root";  // statement signer: "root", "other_root" or an online name
  std::string domain = "key";   // statement domain
  bool tamper = false;          // flip a byte of the payload after signing
  std::optional<Errc> expect;   // nullopt: accepted
};

struct Case {
  const char* name;
  std::vector<Step> steps;
};

Step Statement(std::string key, std::int64_t version, std::optional<Errc> expect = std::nullopt) {
  Step s;
  s.key = std::move(key);
  s.version = version;
  s.expect = expect;
  return s;
}
Step Manifest(std::string signer, std::optional<Errc> expect = std::nullopt) {
  Step s;
  s.kind = Step::kManifest;
  s.key = std::move(signer);
  s.expect = expect;
  return s;
}
template <class F>
Step With(Step s, F change) {
  change(s);
  return s;
}

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"first statement, then its key signs manifests", {Statement("a", 1), Manifest("a")}},
      {"no statement yet: nothing is trusted", {Manifest("a", Errc::kForbidden)}},
      {"rotation: the new key signs, the retired key no longer does",
       {Statement("a", 1), Statement("b", 2), Manifest("b"), Manifest("a", Errc::kBadSignature)}},
      {"rotation may skip versions", {Statement("a", 1), Statement("b", 5), Manifest("b")}},
      {"rollback to an older statement is refused, the newer key stays",
       {Statement("a", 1), Statement("b", 2), Statement("a", 1, Errc::kConflict), Manifest("b"),
        Manifest("a", Errc::kBadSignature)}},
      {"the same statement again is accepted (a refresh)",
       {Statement("a", 3), Statement("a", 3), Manifest("a")}},
      {"mix-and-match: another key at the accepted version",
       {Statement("a", 2), Statement("b", 2, Errc::kConflict), Manifest("a"),
        Manifest("b", Errc::kBadSignature)}},
      {"freeze: an expired statement is refused",
       {With(Statement("a", 1, Errc::kForbidden), [](Step& s) { s.expires = kNow - 1; })}},
      {"freeze: manifests stop once the accepted statement expires",
       {With(Statement("a", 1), [](Step& s) { s.expires = kNow + 10; }),
        With(Manifest("a"), [](Step& s) { s.now = kNow + 9; }),
        With(Manifest("a", Errc::kForbidden), [](Step& s) { s.now = kNow + 10; })}},
      {"a statement from the future is refused",
       {With(Statement("a", 1, Errc::kForbidden),
             [](Step& s) {
               s.issued = kNow + kMaxClockSkewSeconds + 1;
               s.expires = s.issued + kDay;
             })}},
      {"small clock skew is tolerated",
       {With(Statement("a", 1), [](Step& s) { s.issued = kNow + 60; })}},
      {"a validity over the limit is refused",
       {With(Statement("a", 1, Errc::kForbidden),
             [](Step& s) { s.expires = s.issued + kMaxKeyValiditySeconds + 1; })}},
      {"signed by another root",
       {With(Statement("a", 1, Errc::kBadSignature), [](Step& s) { s.signer = "other_root"; })}},
      {"self-signed by the online key",
       {With(Statement("a", 1, Errc::kBadSignature), [](Step& s) { s.signer = "a"; })}},
      {"a root signature in another domain (a manifest) certifies nothing",
       {With(Statement("a", 1, Errc::kBadSignature), [](Step& s) { s.domain = "manifest"; })}},
      {"a tampered statement",
       {With(Statement("a", 1, Errc::kBadSignature), [](Step& s) { s.tamper = true; })}},
      {"the root key as the online key", {Statement("root", 1, Errc::kForbidden)}},
      {"a refused statement leaves the accepted key in place",
       {Statement("a", 4),
        With(Statement("b", 5, Errc::kForbidden), [](Step& s) { s.expires = kNow - 5; }),
        Manifest("a"), Manifest("b", Errc::kBadSignature)}},
  };
  return cases;
}

class KeyRotationTest : public ::testing::TestWithParam<Case> {};

TEST_P(KeyRotationTest, FollowsTheRules) {
  ASSERT_TRUE(InitCrypto());
  Keys keys;
  TrustedKeys trusted;
  trusted.root = keys.root.public_key();
  int index = 0;
  for (const Step& step : GetParam().steps) {
    SCOPED_TRACE("step " + std::to_string(index++));
    if (step.kind == Step::kStatement) {
      KeyStatement s;
      s.version = step.version;
      s.online_key = step.key == "root" ? keys.root.public_key().Hex()
                                        : keys.Online(step.key).public_key().Hex();
      s.issued_at = step.issued;
      s.expires_at = step.expires;
      const SigningKey& signer = step.signer == "root"         ? keys.root
                                 : step.signer == "other_root" ? keys.other_root
                                                               : keys.Online(step.signer);
      SignedEnvelope env = SignPayload(signer, step.domain, SerializeKeyStatement(s));
      if (step.tamper) env.payload[env.payload.size() / 2] ^= 1;
      auto next = AcceptKeyStatement(trusted, env, step.now);
      if (step.expect) {
        ASSERT_FALSE(next) << "accepted a statement that must be refused";
        EXPECT_EQ(next.error().code, *step.expect) << next.error().ToString();
      } else {
        ASSERT_TRUE(next) << next.error().ToString();
        trusted = *next;
        EXPECT_EQ(trusted.version, step.version);
      }
    } else {
      SignedEnvelope manifest =
          SignPayload(keys.Online(step.key), kDomainManifest, R"({"protocol":1})");
      auto ok = VerifyManifestSigner(trusted, manifest, step.now);
      if (step.expect) {
        ASSERT_FALSE(ok) << "accepted a manifest that must be refused";
        EXPECT_EQ(ok.error().code, *step.expect) << ok.error().ToString();
      } else {
        EXPECT_TRUE(ok) << ok.error().ToString();
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tuf, KeyRotationTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name;
                           for (char c : std::string(info.param.name)) {
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           }
                           return std::to_string(info.index) + "_" + name.substr(0, 40);
                         });

TEST(KeyStatementTest, StrictCodec) {
  KeyStatement s;
  s.version = 7;
  s.online_key = std::string(64, 'a');
  s.issued_at = 10;
  s.expires_at = 20;
  auto back = ParseKeyStatement(SerializeKeyStatement(s));
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(back->version, 7);
  EXPECT_FALSE(ParseKeyStatement(R"({"protocol":1,"version":0,"online_key":")" +
                                 std::string(64, 'a') +
                                 R"(","issued_at":10,"expires_at":20})"));  // version 0
  EXPECT_FALSE(ParseKeyStatement(R"({"protocol":1,"version":1,"online_key":"xyz",)"
                                 R"("issued_at":10,"expires_at":20})"));
  EXPECT_FALSE(ParseKeyStatement(R"({"protocol":1,"version":1,"online_key":")" +
                                 std::string(64, 'a') +
                                 R"(","issued_at":20,"expires_at":20})"));  // empty validity
  EXPECT_FALSE(ParseKeyStatement(R"({"protocol":1,"version":1,"online_key":")" +
                                 std::string(64, 'a') +
                                 R"(","issued_at":10,"expires_at":20,"extra":1})"));
  EXPECT_FALSE(ParseKeyStatement(std::string(5000, ' ')));
}

}  // namespace
}  // namespace ubcp::common
