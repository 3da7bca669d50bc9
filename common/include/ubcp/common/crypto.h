// SPDX-License-Identifier: Apache-2.0
#pragma once
// Ed25519 signatures, BLAKE2b-256 content ids, tokens and constant-time comparison (libsodium).
// Every signature is domain separated: the signed bytes are "ubcp/v1/<domain>\0" followed by the
// message, so a signature made for one purpose (a manifest) never verifies for another (a result).

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ubcp/common/bytes.h"
#include "ubcp/common/result.h"

namespace ubcp::common {

// Must be called once before any other function here (idempotent, thread-safe).
// Returns kInternal if libsodium cannot initialise.
Status InitCrypto();

// Signature domains used by the protocol.
inline constexpr std::string_view kDomainManifest = "manifest";
inline constexpr std::string_view kDomainResult = "result";
inline constexpr std::string_view kDomainRegister = "register";

struct PublicKey {
  std::array<std::uint8_t, 32> bytes{};
  std::string Hex() const;
  static Result<PublicKey> FromHex(std::string_view hex);
  bool operator==(const PublicKey&) const = default;
};

using Signature = std::array<std::uint8_t, 64>;
std::string SignatureHex(const Signature& sig);
Result<Signature> SignatureFromHex(std::string_view hex);

// BLAKE2b-256 digest; content ids are its lower-case hex.
struct Digest {
  std::array<std::uint8_t, 32> bytes{};
  std::string Hex() const;
  static Result<Digest> FromHex(std::string_view hex);
  bool operator==(const Digest&) const = default;
};
Digest Blake2b256(ByteSpan data);
inline std::string ContentId(ByteSpan data) { return Blake2b256(data).Hex(); }
// The same digest over data given piece by piece (a large file read in chunks).
class Blake2bHasher {
 public:
  Blake2bHasher();
  void Update(ByteSpan data);
  Digest Final();  // once

 private:
  alignas(64) unsigned char state_[512];  // libsodium's crypto_generichash_state
};
// True for a well-formed content id (64 lower-case hex chars); used before ids reach paths.
bool IsContentId(std::string_view id);

// Short human-checkable fingerprint of a public key: "ab12-cd34-ef56-7890" (first 8 bytes of
// BLAKE2b-256 of the key).
std::string Fingerprint(const PublicKey& key);

// Ed25519 secret key. Owns the secret; wipes it on destruction. Movable, not copyable.
class SigningKey {
 public:
  static SigningKey Generate();
  // Reads a key file written by Save. kNotFound if absent, kMalformed if the content is bad,
  // kForbidden if the file is readable by group or others.
  static Result<SigningKey> Load(const std::filesystem::path& path);
  // Loads the key at `path`, or generates one and saves it there (mode 0600) if there is none.
  static Result<SigningKey> LoadOrCreate(const std::filesystem::path& path);
  // Writes atomically (temp file + rename), file mode 0600. kIo on failure.
  Status Save(const std::filesystem::path& path) const;

  SigningKey(SigningKey&& other) noexcept;
  SigningKey& operator=(SigningKey&& other) noexcept;
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;
  ~SigningKey();

  const PublicKey& public_key() const { return public_key_; }
  Signature Sign(std::string_view domain, ByteSpan message) const;

 private:
  SigningKey() = default;
  std::array<std::uint8_t, 64> secret_{};
  PublicKey public_key_;
};

// kBadSignature unless `sig` is `key`'s signature of `message` in `domain`.
Status Verify(const PublicKey& key, std::string_view domain, ByteSpan message,
              const Signature& sig);

// Constant-time equality (sodium_memcmp); false when sizes differ.
bool ConstantTimeEqual(ByteSpan a, ByteSpan b);

Bytes RandomBytes(std::size_t n);
// A bearer token: 32 random bytes as hex. Store only TokenHash(token).
std::string NewToken();
// BLAKE2b-256 hex of the token: what the store keeps and looks up.
std::string TokenHash(std::string_view token);

}  // namespace ubcp::common
