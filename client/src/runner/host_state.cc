// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/host_state.h"

#include <algorithm>
#include <boost/json.hpp>
#include <vector>

namespace ubcp::client {
namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

common::Result<HostState> HostState::Open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir / "blobs", ec);
  if (ec) return MakeError(Errc::kIo, "cannot create state dir " + dir.string());
  // The directory holds a secret key and a token: keep it private to the donor's user.
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  return HostState(dir);
}

common::Result<common::SigningKey> HostState::LoadOrCreateKey() const {
  return common::SigningKey::LoadOrCreate(dir_ / "host.key");
}

common::Result<std::optional<common::PublicKey>> HostState::TrustedCoordinatorKey() const {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(dir_ / "coordinator.pub", 1024));
  if (!text) return std::optional<common::PublicKey>();
  std::string hex = *text;
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == ' ')) hex.pop_back();
  UBCP_ASSIGN_OR_RETURN(common::PublicKey key, common::PublicKey::FromHex(hex));
  return std::optional<common::PublicKey>(key);
}

common::Status HostState::TrustCoordinatorKey(const common::PublicKey& key) const {
  return WriteFileAtomically(dir_ / "coordinator.pub", key.Hex() + "\n", 0644);
}

namespace {
constexpr std::string_view kTrustedKeysHeader = "ubcp-trusted-keys-v1";
}  // namespace

common::Result<common::TrustedKeys> HostState::LoadTrustedKeys(
    const common::PublicKey& root) const {
  common::TrustedKeys trusted;
  trusted.root = root;
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(dir_ / "trusted-keys", 1024));
  if (!text) return trusted;
  // Five lines: header, root, version, online key, expiry.
  std::istringstream in(*text);
  std::string header, root_hex, version, online_hex, expires;
  if (!std::getline(in, header) || header != kTrustedKeysHeader || !std::getline(in, root_hex) ||
      !std::getline(in, version) || !std::getline(in, online_hex) || !std::getline(in, expires)) {
    return MakeError(Errc::kMalformed, "bad trusted-keys file");
  }
  UBCP_ASSIGN_OR_RETURN(common::PublicKey stored_root, common::PublicKey::FromHex(root_hex));
  if (!(stored_root == root)) {
    return MakeError(Errc::kConflict, "this host's state pins another root key");
  }
  UBCP_ASSIGN_OR_RETURN(common::PublicKey online, common::PublicKey::FromHex(online_hex));
  try {
    std::size_t used = 0;
    trusted.version = std::stoll(version, &used);
    if (used != version.size() || trusted.version < 1) throw std::invalid_argument("version");
    trusted.expires_at = std::stoll(expires, &used);
    if (used != expires.size()) throw std::invalid_argument("expiry");
  } catch (const std::exception&) {
    return MakeError(Errc::kMalformed, "bad trusted-keys file");
  }
  trusted.online = online;
  return trusted;
}

common::Status HostState::SaveTrustedKeys(const common::TrustedKeys& trusted) const {
  if (!trusted.online) return MakeError(Errc::kInvalidArgument, "no online key to save");
  return WriteFileAtomically(dir_ / "trusted-keys",
                             std::string(kTrustedKeysHeader) + "\n" + trusted.root.Hex() + "\n" +
                                 std::to_string(trusted.version) + "\n" + trusted.online->Hex() +
                                 "\n" + std::to_string(trusted.expires_at) + "\n",
                             0644);
}

common::Result<std::optional<Registration>> HostState::LoadRegistration() const {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(dir_ / "registration.json", 4096));
  if (!text) return std::optional<Registration>();
  boost::system::error_code ec;
  auto value = boost::json::parse(*text, ec);
  if (ec || !value.is_object()) return MakeError(Errc::kMalformed, "bad registration.json");
  const auto& obj = value.as_object();
  const auto* id = obj.if_contains("host_id");
  const auto* token = obj.if_contains("token");
  if (id == nullptr || !id->is_int64() || token == nullptr || !token->is_string()) {
    return MakeError(Errc::kMalformed, "bad registration.json");
  }
  return std::optional<Registration>(Registration{id->as_int64(), std::string(token->as_string())});
}

common::Status HostState::SaveRegistration(const Registration& registration) const {
  std::string json = boost::json::serialize(
      boost::json::object{{"host_id", registration.host_id}, {"token", registration.token}});
  return WriteFileAtomically(dir_ / "registration.json", json, 0600);
}

common::Result<fs::path> HostState::BlobPath(const std::string& id) const {
  if (!common::IsContentId(id)) {
    return common::MakeError(common::Errc::kMalformed, "not a blob id: " + id.substr(0, 80));
  }
  return dir_ / "blobs" / id;
}

void HostState::TouchBlob(const std::string& id) const {
  auto path = BlobPath(id);
  if (!path) return;
  std::error_code ec;
  fs::last_write_time(*path, fs::file_time_type::clock::now(), ec);
}

std::uint64_t HostState::PruneBlobs(std::uint64_t max_bytes,
                                    const std::set<std::string>& in_use) const {
  struct Cached {
    fs::path path;
    std::uint64_t bytes;
    fs::file_time_type used;
    bool removable;
  };
  std::vector<Cached> cached;
  std::uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir_ / "blobs", ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    const bool partial = name.ends_with(".part");
    if (partial) name.resize(name.size() - 5);
    std::error_code file_ec;
    if (!common::IsContentId(name) || !it->is_regular_file(file_ec)) continue;
    const std::uint64_t bytes = it->file_size(file_ec);
    const fs::file_time_type used = it->last_write_time(file_ec);
    if (file_ec) continue;
    cached.push_back({it->path(), bytes, used, in_use.count(name) == 0});
    total += bytes;
  }
  std::sort(cached.begin(), cached.end(),
            [](const Cached& a, const Cached& b) { return a.used < b.used; });
  std::uint64_t removed = 0;
  for (const Cached& c : cached) {
    if (total <= max_bytes) break;
    if (!c.removable) continue;
    std::error_code remove_ec;
    if (fs::remove(c.path, remove_ec)) {
      total -= c.bytes;
      removed += c.bytes;
    }
  }
  return removed;
}

}  // namespace ubcp::client
