// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/key_rotation.h"

#include <fstream>
#include <sstream>
#include <system_error>

#include "ubcp/common/atomic_file.h"
#include "ubcp/common/wire.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxStatementFile = 16 * 1024;

}  // namespace

common::Result<std::string> LoadKeyStatement(const fs::path& keys_dir) {
  const fs::path path = keys_dir / "statement.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::string();
  if (fs::file_size(path, ec) > kMaxStatementFile || ec) {
    return MakeError(Errc::kMalformed, path.string() + " is too large or unreadable");
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) return MakeError(Errc::kIo, "cannot read " + path.string());
  UBCP_RETURN_IF_ERROR(common::ParseEnvelope(text.str()));
  return text.str();
}

common::Result<common::KeyStatement> RotateOnlineKey(const fs::path& keys_dir,
                                                     const common::SigningKey& root,
                                                     std::int64_t now, std::int64_t valid_seconds) {
  if (valid_seconds <= 0 || valid_seconds > common::kMaxKeyValiditySeconds) {
    return MakeError(Errc::kInvalidArgument, "validity out of range");
  }
  std::int64_t version = 0;
  UBCP_ASSIGN_OR_RETURN(std::string current, LoadKeyStatement(keys_dir));
  if (!current.empty()) {
    UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope env, common::ParseEnvelope(current));
    if (auto ok = common::VerifyEnvelope(env, common::kDomainKeyStatement, root.public_key());
        !ok) {
      return MakeError(Errc::kConflict, "the existing key statement was not signed by this root");
    }
    UBCP_ASSIGN_OR_RETURN(common::KeyStatement old, common::ParseKeyStatement(env.payload));
    version = old.version;
    // Keep the replaced key for audit, under its version.
    std::error_code ec;
    fs::create_directories(keys_dir / "retired", ec);
    if (!ec)
      fs::permissions(keys_dir / "retired", fs::perms::owner_all, fs::perm_options::replace, ec);
    fs::rename(keys_dir / "signing.key",
               keys_dir / "retired" / ("v" + std::to_string(version) + ".key"), ec);
    if (ec) return MakeError(Errc::kIo, "cannot retire the old key: " + ec.message());
  }
  common::SigningKey online = common::SigningKey::Generate();
  if (online.public_key() == root.public_key()) {
    return MakeError(Errc::kInternal, "generated the root key again");
  }
  common::KeyStatement statement;
  statement.version = version + 1;
  statement.online_key = online.public_key().Hex();
  statement.issued_at = now;
  statement.expires_at = now + valid_seconds;
  UBCP_RETURN_IF_ERROR(online.Save(keys_dir / "signing.key"));
  UBCP_RETURN_IF_ERROR(common::WriteFileAtomically(
      keys_dir / "statement.json",
      common::SerializeEnvelope(common::CertifyOnlineKey(root, statement)), 0644));
  return statement;
}

}  // namespace ubcp::coordinator
