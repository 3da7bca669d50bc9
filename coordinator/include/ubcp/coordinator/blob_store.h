// SPDX-License-Identifier: Apache-2.0
#pragma once
// Content-addressed blob store on disk: <root>/<first two hex chars>/<id>. A blob's id is the
// BLAKE2b-256 of its bytes, so a blob is written once, never changes, and any mirror can serve
// it (readers check the hash). Ids are validated before they become paths, so no request can
// name a file outside the store. Thread-safe (writes go to a temp file and are renamed).

#include <filesystem>
#include <string>

#include "ubcp/common/bytes.h"
#include "ubcp/common/result.h"

namespace ubcp::coordinator {

class BlobStore {
 public:
  // Creates the root directory if needed. kIo on failure.
  static common::Result<BlobStore> Open(const std::filesystem::path& root);

  // Stores `bytes` and returns their id; storing existing content is a no-op. Durable (fsync)
  // before it returns.
  common::Result<std::string> Put(common::ByteSpan bytes) const;
  // Stores `bytes` only if they hash to `expected_id` (kHashMismatch otherwise).
  common::Status PutExpected(const std::string& expected_id, common::ByteSpan bytes) const;
  // kInvalidArgument for a malformed id, kNotFound when absent, kHashMismatch if the file no
  // longer matches its id (disk corruption), kTooLarge over max_bytes.
  common::Result<common::Bytes> Get(const std::string& id, std::size_t max_bytes) const;
  bool Has(const std::string& id) const;

  const std::filesystem::path& root() const { return root_; }

 private:
  explicit BlobStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path PathOf(const std::string& id) const;
  std::filesystem::path root_;
};

}  // namespace ubcp::coordinator
