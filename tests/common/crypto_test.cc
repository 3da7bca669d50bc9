// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/crypto.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "ubcp/common/bytes.h"

namespace ubcp::common {
namespace {

namespace fs = std::filesystem;

class CryptoTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitCrypto()); }
};

TEST_F(CryptoTest, HexRoundTrip) {
  const Bytes data = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
  const std::string hex = HexEncode(data);
  EXPECT_EQ(hex, "00017f80abff");
  auto back = HexDecode(hex);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, data);
  auto exact = HexDecode(hex, 6);
  ASSERT_TRUE(exact);
  EXPECT_EQ(*exact, data);
  auto empty = HexDecode("");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST_F(CryptoTest, HexDecodeIsStrict) {
  for (std::string_view bad : {"0", "abc", "AB", "aB", "0g", "zz", " 0a", "0a ", "0x0a", "0a\n"}) {
    auto r = HexDecode(bad);
    ASSERT_FALSE(r) << "accepted '" << bad << "'";
    EXPECT_EQ(r.error().code, Errc::kMalformed);
  }
  auto wrong_len = HexDecode("0a0b", 3);
  ASSERT_FALSE(wrong_len);
  EXPECT_EQ(wrong_len.error().code, Errc::kMalformed);
  EXPECT_FALSE(HexDecode(std::string_view("0\0", 2)));
}

TEST_F(CryptoTest, Blake2b256KnownVector) {
  EXPECT_EQ(Blake2b256(AsBytes("abc")).Hex(),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_EQ(ContentId(AsBytes("abc")),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_NE(ContentId(AsBytes("abd")), ContentId(AsBytes("abc")));
}

TEST_F(CryptoTest, DigestHexRoundTrip) {
  const Digest d = Blake2b256(AsBytes("payload"));
  auto back = Digest::FromHex(d.Hex());
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(Digest::FromHex(d.Hex().substr(2)));
  std::string upper = d.Hex();
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(Digest::FromHex(upper));
}

TEST_F(CryptoTest, IsContentId) {
  EXPECT_TRUE(IsContentId(ContentId(AsBytes("x"))));
  EXPECT_FALSE(IsContentId(""));
  EXPECT_FALSE(IsContentId(std::string(63, 'a')));
  EXPECT_FALSE(IsContentId(std::string(65, 'a')));
  EXPECT_FALSE(IsContentId(std::string(64, 'A')));
  EXPECT_FALSE(IsContentId("../" + std::string(61, 'a')));
}

TEST_F(CryptoTest, SignVerifyRoundTrip) {
  const SigningKey key = SigningKey::Generate();
  const Bytes msg = {1, 2, 3, 4, 5};
  const Signature sig = key.Sign(kDomainManifest, msg);
  EXPECT_TRUE(Verify(key.public_key(), kDomainManifest, msg, sig));
  const Signature empty_sig = key.Sign(kDomainResult, {});
  EXPECT_TRUE(Verify(key.public_key(), kDomainResult, {}, empty_sig));
}

TEST_F(CryptoTest, SignedBytesAreDomainSeparated) {
  // Pins the wire format: the signature is a plain Ed25519 signature of "ubcp/v1/<domain>\0msg".
  const SigningKey key = SigningKey::Generate();
  const std::string msg = "hello";
  const Signature sig = key.Sign(kDomainRegister, AsBytes(msg));
  const std::string signed_bytes = std::string("ubcp/v1/register") + '\0' + msg;
  EXPECT_EQ(crypto_sign_ed25519_verify_detached(
                sig.data(), reinterpret_cast<const unsigned char*>(signed_bytes.data()),
                signed_bytes.size(), key.public_key().bytes.data()),
            0);
}

TEST_F(CryptoTest, TamperedMessageIsRejected) {
  const SigningKey key = SigningKey::Generate();
  const Bytes msg = {10, 20, 30, 40};
  const Signature sig = key.Sign(kDomainResult, msg);
  for (std::size_t i = 0; i < msg.size(); ++i) {
    Bytes bad = msg;
    bad[i] ^= 0x01;
    auto st = Verify(key.public_key(), kDomainResult, bad, sig);
    ASSERT_FALSE(st) << "byte " << i;
    EXPECT_EQ(st.error().code, Errc::kBadSignature);
  }
  Bytes longer = msg;
  longer.push_back(0);
  EXPECT_FALSE(Verify(key.public_key(), kDomainResult, longer, sig));
}

TEST_F(CryptoTest, TamperedSignatureIsRejected) {
  const SigningKey key = SigningKey::Generate();
  const Bytes msg = {10, 20, 30, 40};
  const Signature sig = key.Sign(kDomainResult, msg);
  for (std::size_t i = 0; i < sig.size(); ++i) {
    Signature bad = sig;
    bad[i] ^= 0x80;
    auto st = Verify(key.public_key(), kDomainResult, msg, bad);
    ASSERT_FALSE(st) << "byte " << i;
    EXPECT_EQ(st.error().code, Errc::kBadSignature);
  }
  EXPECT_FALSE(Verify(key.public_key(), kDomainResult, msg, Signature{}));
}

TEST_F(CryptoTest, WrongDomainIsRejected) {
  const SigningKey key = SigningKey::Generate();
  const Bytes msg = {7, 7, 7};
  const Signature sig = key.Sign(kDomainManifest, msg);
  for (std::string_view other :
       {kDomainResult, kDomainRegister, std::string_view("manifest2"), std::string_view("")}) {
    auto st = Verify(key.public_key(), other, msg, sig);
    ASSERT_FALSE(st) << other;
    EXPECT_EQ(st.error().code, Errc::kBadSignature);
  }
}

TEST_F(CryptoTest, DomainBoundaryCannotBeShifted) {
  // Domain "a" with message "b\0x" must not collide with domain "a\0b" with message "x".
  const SigningKey key = SigningKey::Generate();
  const std::string msg("b\0x", 3);
  const Signature sig = key.Sign("a", AsBytes(msg));
  EXPECT_TRUE(Verify(key.public_key(), "a", AsBytes(msg), sig));
  auto st = Verify(key.public_key(), std::string_view("a\0b", 3), AsBytes("x"), sig);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kBadSignature);
  const Signature nul_sig = key.Sign(std::string_view("a\0b", 3), AsBytes("x"));
  EXPECT_FALSE(Verify(key.public_key(), std::string_view("a\0b", 3), AsBytes("x"), nul_sig));
}

TEST_F(CryptoTest, WrongKeyIsRejected) {
  const SigningKey key = SigningKey::Generate();
  const SigningKey other = SigningKey::Generate();
  ASSERT_FALSE(key.public_key() == other.public_key());
  const Bytes msg = {1, 2, 3};
  const Signature sig = key.Sign(kDomainManifest, msg);
  auto st = Verify(other.public_key(), kDomainManifest, msg, sig);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kBadSignature);
  EXPECT_FALSE(Verify(PublicKey{}, kDomainManifest, msg, sig));
}

TEST_F(CryptoTest, PublicKeyAndSignatureHex) {
  const SigningKey key = SigningKey::Generate();
  auto pk = PublicKey::FromHex(key.public_key().Hex());
  ASSERT_TRUE(pk);
  EXPECT_EQ(*pk, key.public_key());
  EXPECT_EQ(key.public_key().Hex().size(), 64u);
  EXPECT_FALSE(PublicKey::FromHex(key.public_key().Hex() + "00"));

  const Signature sig = key.Sign(kDomainManifest, AsBytes("m"));
  auto back = SignatureFromHex(SignatureHex(sig));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, sig);
  EXPECT_FALSE(SignatureFromHex(SignatureHex(sig).substr(2)));
}

TEST_F(CryptoTest, Fingerprint) {
  const SigningKey key = SigningKey::Generate();
  const std::string fp = Fingerprint(key.public_key());
  ASSERT_EQ(fp.size(), 19u);
  EXPECT_EQ(fp[4], '-');
  EXPECT_EQ(fp[9], '-');
  EXPECT_EQ(fp[14], '-');
  std::string digits = fp;
  std::erase(digits, '-');
  EXPECT_EQ(digits, Blake2b256(key.public_key().bytes).Hex().substr(0, 16));
  EXPECT_NE(fp, Fingerprint(SigningKey::Generate().public_key()));
}

TEST_F(CryptoTest, ConstantTimeEqual) {
  const Bytes a = {1, 2, 3, 4};
  const Bytes b = {1, 2, 3, 4};
  const Bytes c = {1, 2, 3, 5};
  const Bytes shorter = {1, 2, 3};
  EXPECT_TRUE(ConstantTimeEqual(a, b));
  EXPECT_FALSE(ConstantTimeEqual(a, c));
  EXPECT_FALSE(ConstantTimeEqual(a, shorter));
  EXPECT_FALSE(ConstantTimeEqual(shorter, a));
  EXPECT_TRUE(ConstantTimeEqual(ByteSpan{}, ByteSpan{}));
  EXPECT_FALSE(ConstantTimeEqual(ByteSpan{}, a));
}

TEST_F(CryptoTest, RandomBytesAndTokens) {
  EXPECT_EQ(RandomBytes(0).size(), 0u);
  const Bytes r1 = RandomBytes(32);
  const Bytes r2 = RandomBytes(32);
  EXPECT_EQ(r1.size(), 32u);
  EXPECT_NE(r1, r2);

  const std::string t1 = NewToken();
  const std::string t2 = NewToken();
  EXPECT_EQ(t1.size(), 64u);
  EXPECT_TRUE(HexDecode(t1, 32));
  EXPECT_NE(t1, t2);
  EXPECT_EQ(TokenHash(t1), Blake2b256(AsBytes(t1)).Hex());
  EXPECT_NE(TokenHash(t1), TokenHash(t2));
  EXPECT_NE(TokenHash(t1), t1);
}

TEST_F(CryptoTest, MovedKeyStillSigns) {
  SigningKey a = SigningKey::Generate();
  const PublicKey pk = a.public_key();
  SigningKey b = std::move(a);
  const Signature sig = b.Sign(kDomainManifest, AsBytes("x"));
  EXPECT_TRUE(Verify(pk, kDomainManifest, AsBytes("x"), sig));
  SigningKey c = SigningKey::Generate();
  c = std::move(b);
  EXPECT_EQ(c.public_key(), pk);
  EXPECT_TRUE(Verify(pk, kDomainManifest, AsBytes("y"), c.Sign(kDomainManifest, AsBytes("y"))));
}

class KeyFileTest : public CryptoTest {
 protected:
  void SetUp() override {
    CryptoTest::SetUp();
    dir_ = fs::temp_directory_path() / ("ubcp-key-test-" + HexEncode(RandomBytes(8)));
    ASSERT_TRUE(fs::create_directory(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Writes `content` with mode 0600 (so only the content is under test).
  fs::path WriteFile(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    return p;
  }
  static std::string ReadFile(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static mode_t Mode(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0);
    return st.st_mode & 07777;
  }

  fs::path dir_;
};

TEST_F(KeyFileTest, SaveLoadRoundTrip) {
  const SigningKey key = SigningKey::Generate();
  const fs::path path = dir_ / "node.key";
  ASSERT_TRUE(key.Save(path));
  auto loaded = SigningKey::Load(path);
  ASSERT_TRUE(loaded) << loaded.error().ToString();
  EXPECT_EQ(loaded->public_key(), key.public_key());
  const Signature sig = loaded->Sign(kDomainResult, AsBytes("r"));
  EXPECT_TRUE(Verify(key.public_key(), kDomainResult, AsBytes("r"), sig));

  const std::string text = ReadFile(path);
  EXPECT_EQ(text.rfind("ubcp-ed25519-secret-v1\n", 0), 0u);
  EXPECT_EQ(text.size(), std::string("ubcp-ed25519-secret-v1\n").size() + 128 + 1);
  // Only the key file itself remains: the temp file was renamed, not copied.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(KeyFileTest, SaveUsesMode0600WhateverTheUmask) {
  const mode_t old = ::umask(0);
  const SigningKey key = SigningKey::Generate();
  const fs::path path = dir_ / "node.key";
  const auto st = key.Save(path);
  ::umask(0777);  // owner bits masked too: the mode must still come out 0600
  const fs::path path2 = dir_ / "node2.key";
  const auto st2 = key.Save(path2);
  ::umask(old);
  ASSERT_TRUE(st);
  ASSERT_TRUE(st2);
  EXPECT_EQ(Mode(path), 0600u);
  EXPECT_EQ(Mode(path2), 0600u);
  EXPECT_TRUE(SigningKey::Load(path2));
}

TEST_F(KeyFileTest, SaveOverwritesAtomically) {
  const fs::path path = dir_ / "node.key";
  const SigningKey first = SigningKey::Generate();
  const SigningKey second = SigningKey::Generate();
  ASSERT_TRUE(first.Save(path));
  ASSERT_TRUE(second.Save(path));
  auto loaded = SigningKey::Load(path);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->public_key(), second.public_key());
  EXPECT_EQ(Mode(path), 0600u);
}

TEST_F(KeyFileTest, GroupOrWorldReadableKeyIsRefused) {
  const fs::path path = dir_ / "node.key";
  ASSERT_TRUE(SigningKey::Generate().Save(path));
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    auto r = SigningKey::Load(path);
    ASSERT_FALSE(r) << std::oct << mode;
    EXPECT_EQ(r.error().code, Errc::kForbidden) << std::oct << mode;
    // LoadOrCreate must not paper over it by generating a new key.
    auto r2 = SigningKey::LoadOrCreate(path);
    ASSERT_FALSE(r2);
    EXPECT_EQ(r2.error().code, Errc::kForbidden);
  }
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_TRUE(SigningKey::Load(path));
}

TEST_F(KeyFileTest, MissingKeyIsNotFound) {
  auto r = SigningKey::Load(dir_ / "absent.key");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNotFound);
}

TEST_F(KeyFileTest, SaveIntoMissingDirectoryCreatesItOwnerOnly) {
  const fs::path path = dir_ / "no" / "such" / "node.key";
  ASSERT_TRUE(SigningKey::Generate().Save(path));
  EXPECT_EQ(fs::status(path.parent_path()).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(KeyFileTest, SaveUnderAFileIsIo) {
  const fs::path blocker = dir_ / "blocker";
  std::ofstream(blocker) << "x";
  auto st = SigningKey::Generate().Save(blocker / "node.key");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kIo);
}

TEST_F(KeyFileTest, MalformedKeyFilesAreRejected) {
  const SigningKey key = SigningKey::Generate();
  const fs::path good = dir_ / "good.key";
  ASSERT_TRUE(key.Save(good));
  const std::string text = ReadFile(good);
  const std::string header = "ubcp-ed25519-secret-v1\n";
  const std::string hex = text.substr(header.size(), 128);

  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // The public half of a libsodium secret key is its last 32 bytes; changing it must be noticed.
  std::string wrong_pk = hex;
  wrong_pk[127] = wrong_pk[127] == '0' ? '1' : '0';

  const std::pair<const char*, std::string> cases[] = {
      {"empty", ""},
      {"header only", header},
      {"wrong header", "ubcp-ed25519-secret-v2\n" + hex + "\n"},
      {"no newline after header", "ubcp-ed25519-secret-v1" + hex + "\n"},
      {"short hex", header + hex.substr(0, 126) + "\n"},
      {"long hex", header + hex + "00\n"},
      {"upper case", header + upper + "\n"},
      {"trailing junk", header + hex + "\nextra\n"},
      {"inconsistent pair", header + wrong_pk + "\n"},
      {"huge", header + std::string(4096, 'a')},
  };
  for (const auto& [what, content] : cases) {
    auto r = SigningKey::Load(WriteFile("bad.key", content));
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().code, Errc::kMalformed) << what;
  }
  // Without the final newline the file is still accepted.
  auto ok = SigningKey::Load(WriteFile("nonl.key", header + hex));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->public_key(), key.public_key());
}

TEST_F(KeyFileTest, DirectoryIsNotAKey) {
  const fs::path sub = dir_ / "sub";
  fs::create_directory(sub);
  fs::permissions(sub, fs::perms::owner_all);
  auto r = SigningKey::Load(sub);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kMalformed);
}

TEST_F(KeyFileTest, LoadOrCreateCreatesOnceThenLoads) {
  const fs::path path = dir_ / "node.key";
  auto created = SigningKey::LoadOrCreate(path);
  ASSERT_TRUE(created) << created.error().ToString();
  EXPECT_EQ(Mode(path), 0600u);
  auto again = SigningKey::LoadOrCreate(path);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->public_key(), created->public_key());
  auto loaded = SigningKey::Load(path);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->public_key(), created->public_key());
}

}  // namespace
}  // namespace ubcp::common
