// SPDX-License-Identifier: Apache-2.0
#pragma once
// Content-addressed blob store on disk: <root>/<first two hex chars>/<id>. A blob's id is the
// BLAKE2b-256 of its bytes, so a blob is written once, never changes, and any mirror can serve
// it (readers check the hash). Ids are validated before they become paths, so no request can
// name a file outside the store. Thread-safe (writes go to a temp file and are renamed).
//
// Integrity: Get checks the whole blob against its id on every read. A ranged read (GetRange)
// does not: hashing hundreds of MiB to serve one chunk would cost more than the transfer. The
// receiver checks the hash of the assembled blob instead (ids are hashes, so that is enough);
// a corrupt file is still caught by every whole read on this side.

#include <cstdint>
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
  // The blob's size in bytes. kInvalidArgument for a malformed id, kNotFound when absent.
  common::Result<std::uint64_t> Size(const std::string& id) const;
  // Bytes [offset, offset + max_len) of the blob, fewer at its end; reads only that slice from
  // disk and does not check the hash (see above). kInvalidArgument for a malformed id or an
  // offset past the end, kNotFound when absent, kIo on a read failure.
  common::Result<common::Bytes> GetRange(const std::string& id, std::uint64_t offset,
                                         std::size_t max_len) const;
  // Moves the file at `source` (on the store's file system, e.g. an upload staged under
  // root()/staging) into the store as `expected_id` if its content hashes to it: fsync, rename,
  // fsync of the directory. kHashMismatch (the source is left in place for the caller to remove)
  // or kTooLarge over `max_bytes`; if the blob is already stored the source is removed.
  common::Status AdoptFile(const std::string& expected_id, const std::filesystem::path& source,
                           std::size_t max_bytes) const;

  const std::filesystem::path& root() const { return root_; }

 private:
  explicit BlobStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path PathOf(const std::string& id) const;
  std::filesystem::path root_;
};

}  // namespace ubcp::coordinator
