// SPDX-License-Identifier: Apache-2.0
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <system_error>

#include "ubcp/common/atomic_file.h"
#include "ubcp/coordinator/http_server.h"

namespace ubcp::coordinator {
namespace {

constexpr long kValidityDays = 3650;
constexpr long kBackdateSeconds = 3600;  // tolerate clients whose clock is a little behind
constexpr std::size_t kMaxDnsName = 253;

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, Deleter<GENERAL_NAME, GENERAL_NAME_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using OctetStringPtr =
    std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>>;

common::Error OpenSslFailure(std::string_view what) {
  std::string message(what);
  unsigned long code = ERR_get_error();
  if (code != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    message += ": ";
    message += buffer;
  }
  ERR_clear_error();
  return common::MakeError(common::Errc::kInternal, std::move(message));
}

bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > kMaxDnsName || name.front() == '.' || name.back() == '.') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

common::Status AddName(GENERAL_NAMES* names, std::string_view name) {
  GeneralNamePtr entry(GENERAL_NAME_new());
  if (!entry) return OpenSslFailure("GENERAL_NAME_new");
  std::string text(name);
  if (OctetStringPtr ip{a2i_IPADDRESS(text.c_str())}) {
    GENERAL_NAME_set0_value(entry.get(), GEN_IPADD, ip.release());
  } else {
    ERR_clear_error();
    if (!IsDnsName(name)) {
      return common::MakeError(common::Errc::kInvalidArgument,
                               "'" + text + "' is neither an IP address nor a DNS name");
    }
    ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
    if (!dns || ASN1_STRING_set(dns, text.data(), static_cast<int>(text.size())) != 1) {
      ASN1_IA5STRING_free(dns);
      return OpenSslFailure("ASN1_STRING_set");
    }
    GENERAL_NAME_set0_value(entry.get(), GEN_DNS, dns);
  }
  if (sk_GENERAL_NAME_push(names, entry.get()) == 0) return OpenSslFailure("sk_GENERAL_NAME_push");
  entry.release();
  return {};
}

common::Status AddExtension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return OpenSslFailure("X509_add_ext");
  return {};
}

common::Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OpenSslFailure("RAND_bytes");
  bytes[0] &= 0x7f;  // a positive serial, as RFC 5280 requires
  bytes[0] |= 0x01;  // and never zero / never shortened below 16 bytes
  BnPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) {
    return OpenSslFailure("serial number");
  }
  return {};
}

common::Result<X509Ptr> MakeCertificate(EVP_PKEY* key,
                                        const std::vector<std::string>& extra_names) {
  X509Ptr cert(X509_new());
  if (!cert) return OpenSslFailure("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslFailure("X509_set_version");
  UBCP_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), kValidityDays, 0, nullptr)) {
    return OpenSslFailure("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("UBCP"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("ubcp coordinator"), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(cert.get(), name) != 1) {
    return OpenSslFailure("subject name");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return OpenSslFailure("X509_set_pubkey");

  // CA:TRUE lets a client name this very certificate as its trust anchor (--ca-file); pathlen:0
  // keeps it from vouching for anything it did not sign itself.
  UBCP_RETURN_IF_ERROR(
      AddExtension(cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  UBCP_RETURN_IF_ERROR(
      AddExtension(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign"));
  UBCP_RETURN_IF_ERROR(AddExtension(cert.get(), NID_ext_key_usage, "serverAuth"));
  UBCP_RETURN_IF_ERROR(AddExtension(cert.get(), NID_subject_key_identifier, "hash"));

  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return OpenSslFailure("sk_GENERAL_NAME_new_null");
  std::vector<std::string> all = {"localhost", "127.0.0.1", "::1"};
  for (const auto& extra : extra_names) {
    if (std::find(all.begin(), all.end(), extra) == all.end()) all.push_back(extra);
  }
  for (const auto& entry : all) UBCP_RETURN_IF_ERROR(AddName(names.get(), entry));
  if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) !=
      1) {
    return OpenSslFailure("subjectAltName");
  }

  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) return OpenSslFailure("X509_sign");
  return cert;
}

// PEM text of `write` applied to a memory BIO. The key goes through secure memory so that it is
// wiped when freed.
template <class WriteFn>
common::Result<std::string> ToPem(bool secret, WriteFn write) {
  BioPtr bio(BIO_new(secret ? BIO_s_secmem() : BIO_s_mem()));
  if (!bio) return OpenSslFailure("BIO_new");
  if (write(bio.get()) != 1) return OpenSslFailure("PEM write");
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  if (size <= 0 || data == nullptr) return OpenSslFailure("BIO_get_mem_data");
  return std::string(data, static_cast<std::size_t>(size));
}

// Writes `content` to `path` (creating its directory) atomically, so a crash never leaves a
// half-written key or certificate behind.
common::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                                   mode_t mode) {
  std::error_code ec;
  auto dir = path.parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec)
      return common::MakeError(common::Errc::kIo, "create " + dir.string() + ": " + ec.message());
  }
  return common::WriteFileAtomically(path, content, mode);
}

common::Status Generate(const std::filesystem::path& cert_file,
                        const std::filesystem::path& key_file,
                        const std::vector<std::string>& extra_names) {
  std::error_code ec;
  const bool cert_exists = std::filesystem::exists(cert_file, ec);
  if (ec)
    return common::MakeError(common::Errc::kIo, "stat " + cert_file.string() + ": " + ec.message());
  const bool key_exists = std::filesystem::exists(key_file, ec);
  if (ec)
    return common::MakeError(common::Errc::kIo, "stat " + key_file.string() + ": " + ec.message());
  if (cert_exists && key_exists) return {};
  if (cert_exists != key_exists) {
    // Never overwrite a lone key or certificate: it may be one the operator put there.
    return common::MakeError(
        common::Errc::kInvalidArgument,
        (cert_exists ? cert_file : key_file).string() + " exists but " +
            (cert_exists ? key_file : cert_file).string() +
            " does not; provide both or remove it to generate a self-signed pair");
  }

  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return OpenSslFailure("EC P-256 key generation");
  UBCP_ASSIGN_OR_RETURN(X509Ptr cert, MakeCertificate(key.get(), extra_names));

  UBCP_ASSIGN_OR_RETURN(std::string key_pem, ToPem(true, [&](BIO* bio) {
                          return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0,
                                                          nullptr, nullptr);
                        }));
  UBCP_ASSIGN_OR_RETURN(std::string cert_pem, ToPem(false, [&](BIO* bio) {
                          return PEM_write_bio_X509(bio, cert.get());
                        }));
  auto status = WriteFileAtomically(key_file, key_pem, 0600);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  UBCP_RETURN_IF_ERROR(status);
  status = WriteFileAtomically(cert_file, cert_pem, 0644);
  if (!status) {
    // A lone key would make every later call refuse to generate (see above).
    std::filesystem::remove(key_file, ec);
  }
  return status;
}

}  // namespace

common::Status EnsureSelfSignedCertificate(const std::filesystem::path& cert_file,
                                           const std::filesystem::path& key_file,
                                           const std::vector<std::string>& extra_names) {
  try {
    return Generate(cert_file, key_file, extra_names);
  } catch (const std::exception& e) {
    return common::MakeError(common::Errc::kInternal,
                             std::string("self-signed certificate: ") + e.what());
  }
}

}  // namespace ubcp::coordinator
