// SPDX-License-Identifier: Apache-2.0
#include "ubcp/common/crypto.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ubcp::common {
namespace {

static_assert(crypto_sign_ed25519_PUBLICKEYBYTES == 32);
static_assert(crypto_sign_ed25519_SECRETKEYBYTES == 64);
static_assert(crypto_sign_ed25519_BYTES == 64);

constexpr std::string_view kDomainPrefix = "ubcp/v1/";
constexpr std::string_view kKeyFileHeader = "ubcp-ed25519-secret-v1";
// Header line, newline, 128 hex digits, newline; anything much larger is not a key file.
constexpr std::size_t kMaxKeyFileSize = 1024;

// Domains are compile-time constants; one containing NUL would make "<domain>\0<message>"
// ambiguous (domain "a\0b" + "x" == domain "a" + "b\0x"), so such a domain never signs or
// verifies anything.
bool ValidDomain(std::string_view domain) { return domain.find('\0') == std::string_view::npos; }

Bytes DomainSeparated(std::string_view domain, ByteSpan message) {
  Bytes buf(kDomainPrefix.size() + domain.size() + 1 + message.size());
  auto it = std::copy(kDomainPrefix.begin(), kDomainPrefix.end(), buf.begin());
  it = std::copy(domain.begin(), domain.end(), it);
  *it++ = 0;
  std::copy(message.begin(), message.end(), it);
  return buf;
}

// Generate/RandomBytes have no error channel; sodium_init is idempotent and cheap after the
// first call, so they make sure the library is ready even if InitCrypto was forgotten.
void EnsureSodium() {
  if (sodium_init() < 0) std::abort();
}

Error IoError(const std::string& what, const std::filesystem::path& path, int err) {
  return MakeError(Errc::kIo, what + " " + path.string() + ": " + std::strerror(err));
}

// Closes the descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

bool WriteAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Makes a completed rename/link durable.
void SyncParentDir(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes `secret` as a key file in a fresh temp file next to `path` and moves it into place.
// With `replace` false the final step is link(2), which fails with EEXIST instead of
// overwriting a key another process created meanwhile.
Status WriteKeyFile(const std::filesystem::path& path, const std::array<std::uint8_t, 64>& secret,
                    bool replace, bool* existed) {
  EnsureSodium();
  std::array<std::uint8_t, 8> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + HexEncode(nonce);
  if (path.has_parent_path()) {
    // A new key directory is owner-only; an existing one keeps the mode its owner chose.
    std::error_code ec;
    if (std::filesystem::create_directories(path.parent_path(), ec)) {
      std::filesystem::permissions(path.parent_path(), std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::replace, ec);
    }
    if (ec) return IoError("cannot create the directory of", path, ec.value());
  }

  // O_EXCL|O_NOFOLLOW: never write key material through a planted file or symlink. The mode is
  // applied again with fchmod because the umask may have removed owner bits.
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return IoError("cannot create", tmp, errno);

  std::string text;
  text.reserve(kKeyFileHeader.size() + 2 + 2 * secret.size());
  text.append(kKeyFileHeader);
  text.push_back('\n');
  std::string hex = HexEncode(secret);
  text.append(hex);
  text.push_back('\n');
  sodium_memzero(hex.data(), hex.size());

  const bool written = ::fchmod(fd.get(), 0600) == 0 &&
                       WriteAll(fd.get(), text.data(), text.size()) && ::fsync(fd.get()) == 0;
  const int write_errno = errno;
  sodium_memzero(text.data(), text.size());
  if (::close(fd.Release()) != 0 || !written) {
    const int err = written ? errno : write_errno;
    ::unlink(tmp.c_str());
    return IoError("cannot write", tmp, err);
  }

  if (replace) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return IoError("cannot rename onto", path, err);
    }
  } else {
    const int rc = ::link(tmp.c_str(), path.c_str());
    const int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0) {
      if (err == EEXIST && existed != nullptr) {
        *existed = true;
        return {};
      }
      return IoError("cannot link onto", path, err);
    }
  }
  SyncParentDir(path);
  return {};
}

}  // namespace

Status InitCrypto() {
  if (sodium_init() < 0) return MakeError(Errc::kInternal, "libsodium initialisation failed");
  return {};
}

std::string PublicKey::Hex() const { return HexEncode(bytes); }

Result<PublicKey> PublicKey::FromHex(std::string_view hex) {
  UBCP_ASSIGN_OR_RETURN(Bytes raw, HexDecode(hex, 32));
  PublicKey key;
  std::memcpy(key.bytes.data(), raw.data(), key.bytes.size());
  return key;
}

std::string SignatureHex(const Signature& sig) { return HexEncode(sig); }

Result<Signature> SignatureFromHex(std::string_view hex) {
  UBCP_ASSIGN_OR_RETURN(Bytes raw, HexDecode(hex, 64));
  Signature sig;
  std::memcpy(sig.data(), raw.data(), sig.size());
  return sig;
}

std::string Digest::Hex() const { return HexEncode(bytes); }

Result<Digest> Digest::FromHex(std::string_view hex) {
  UBCP_ASSIGN_OR_RETURN(Bytes raw, HexDecode(hex, 32));
  Digest d;
  std::memcpy(d.bytes.data(), raw.data(), d.bytes.size());
  return d;
}

Digest Blake2b256(ByteSpan data) {
  Digest d;
  crypto_generichash(d.bytes.data(), d.bytes.size(), data.data(), data.size(), nullptr, 0);
  return d;
}

static_assert(sizeof(crypto_generichash_state) <= 512 && alignof(crypto_generichash_state) <= 64);

Blake2bHasher::Blake2bHasher() {
  crypto_generichash_init(reinterpret_cast<crypto_generichash_state*>(state_), nullptr, 0, 32);
}

void Blake2bHasher::Update(ByteSpan data) {
  crypto_generichash_update(reinterpret_cast<crypto_generichash_state*>(state_), data.data(),
                            data.size());
}

Digest Blake2bHasher::Final() {
  Digest d;
  crypto_generichash_final(reinterpret_cast<crypto_generichash_state*>(state_), d.bytes.data(),
                           d.bytes.size());
  return d;
}

bool IsContentId(std::string_view id) {
  if (id.size() != 64) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string Fingerprint(const PublicKey& key) {
  const Digest d = Blake2b256(key.bytes);
  const std::string hex = HexEncode(ByteSpan(d.bytes.data(), 8));
  return hex.substr(0, 4) + "-" + hex.substr(4, 4) + "-" + hex.substr(8, 4) + "-" +
         hex.substr(12, 4);
}

SigningKey SigningKey::Generate() {
  EnsureSodium();
  SigningKey key;
  crypto_sign_ed25519_keypair(key.public_key_.bytes.data(), key.secret_.data());
  return key;
}

Result<SigningKey> SigningKey::Load(const std::filesystem::path& path) {
  // O_NONBLOCK: a FIFO planted at the path must not hang the open; it fails S_ISREG below.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return MakeError(Errc::kNotFound, "no key file at " + path.string());
    return IoError("cannot open", path, err);
  }
  // fstat on the open descriptor, not stat on the path, so the checked file is the read file.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return IoError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return MakeError(Errc::kMalformed, "key file " + path.string() + " is not a regular file");
  }
  // A secret key another local user could read (or replace) is compromised; refuse it rather
  // than silently tightening the mode, so the operator notices.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return MakeError(Errc::kForbidden, "key file " + path.string() +
                                           " is accessible by group or others; chmod 600 it");
  }
  if (st.st_size > static_cast<off_t>(kMaxKeyFileSize)) {
    return MakeError(Errc::kMalformed, "key file " + path.string() + " is too large");
  }

  std::array<char, kMaxKeyFileSize + 1> buf{};
  std::size_t len = 0;
  while (len < buf.size()) {
    const ssize_t n = ::read(fd.get(), buf.data() + len, buf.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      sodium_memzero(buf.data(), buf.size());
      return IoError("cannot read", path, err);
    }
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }

  SigningKey key;
  const std::string_view text(buf.data(), len);
  const std::size_t header_end = kKeyFileHeader.size();
  bool ok = len <= kMaxKeyFileSize && text.substr(0, header_end) == kKeyFileHeader &&
            text.size() > header_end && text[header_end] == '\n';
  if (ok) {
    std::string_view hex = text.substr(header_end + 1);
    if (!hex.empty() && hex.back() == '\n') hex.remove_suffix(1);
    auto raw = HexDecode(hex, key.secret_.size());
    ok = raw.has_value();
    if (ok) {
      std::memcpy(key.secret_.data(), raw->data(), key.secret_.size());
      sodium_memzero(raw->data(), raw->size());
    }
  }
  sodium_memzero(buf.data(), buf.size());
  if (!ok) return MakeError(Errc::kMalformed, "key file " + path.string() + " is not a UBCP key");

  // A libsodium secret key is seed || public key. Re-deriving both from the seed catches a
  // corrupted or hand-edited file, which would otherwise sign with a key nobody can verify.
  std::array<std::uint8_t, 32> seed;
  std::array<std::uint8_t, 64> derived;
  crypto_sign_ed25519_sk_to_seed(seed.data(), key.secret_.data());
  crypto_sign_ed25519_seed_keypair(key.public_key_.bytes.data(), derived.data(), seed.data());
  const bool consistent = sodium_memcmp(derived.data(), key.secret_.data(), derived.size()) == 0;
  sodium_memzero(seed.data(), seed.size());
  sodium_memzero(derived.data(), derived.size());
  if (!consistent) {
    return MakeError(Errc::kMalformed,
                     "key file " + path.string() + " holds an inconsistent key pair");
  }
  return key;
}

Result<SigningKey> SigningKey::LoadOrCreate(const std::filesystem::path& path) {
  auto loaded = Load(path);
  if (loaded || loaded.error().code != Errc::kNotFound) return loaded;
  SigningKey key = Generate();
  // No-clobber: if another process created the key first, use its key so both agree.
  bool existed = false;
  UBCP_RETURN_IF_ERROR(WriteKeyFile(path, key.secret_, /*replace=*/false, &existed));
  if (existed) return Load(path);
  return key;
}

Status SigningKey::Save(const std::filesystem::path& path) const {
  return WriteKeyFile(path, secret_, /*replace=*/true, nullptr);
}

SigningKey::SigningKey(SigningKey&& other) noexcept
    : secret_(other.secret_), public_key_(other.public_key_) {
  sodium_memzero(other.secret_.data(), other.secret_.size());
}

SigningKey& SigningKey::operator=(SigningKey&& other) noexcept {
  if (this != &other) {
    secret_ = other.secret_;
    public_key_ = other.public_key_;
    sodium_memzero(other.secret_.data(), other.secret_.size());
  }
  return *this;
}

SigningKey::~SigningKey() { sodium_memzero(secret_.data(), secret_.size()); }

Signature SigningKey::Sign(std::string_view domain, ByteSpan message) const {
  Signature sig{};
  // An all-zero signature never verifies: Verify refuses the same domain.
  if (!ValidDomain(domain)) return sig;
  const Bytes signed_bytes = DomainSeparated(domain, message);
  crypto_sign_ed25519_detached(sig.data(), nullptr, signed_bytes.data(), signed_bytes.size(),
                               secret_.data());
  return sig;
}

Status Verify(const PublicKey& key, std::string_view domain, ByteSpan message,
              const Signature& sig) {
  if (!ValidDomain(domain)) {
    return MakeError(Errc::kBadSignature, "signature domain contains NUL");
  }
  const Bytes signed_bytes = DomainSeparated(domain, message);
  if (crypto_sign_ed25519_verify_detached(sig.data(), signed_bytes.data(), signed_bytes.size(),
                                          key.bytes.data()) != 0) {
    return MakeError(Errc::kBadSignature,
                     "signature does not verify for domain '" + std::string(domain) + "'");
  }
  return {};
}

bool ConstantTimeEqual(ByteSpan a, ByteSpan b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

Bytes RandomBytes(std::size_t n) {
  EnsureSodium();
  Bytes out(n);
  if (n > 0) randombytes_buf(out.data(), n);
  return out;
}

std::string NewToken() { return HexEncode(RandomBytes(32)); }

std::string TokenHash(std::string_view token) { return Blake2b256(AsBytes(token)).Hex(); }

}  // namespace ubcp::common
