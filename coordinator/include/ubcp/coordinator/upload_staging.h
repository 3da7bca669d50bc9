// SPDX-License-Identifier: Apache-2.0
#pragma once
// Resumable uploads of update blobs (docs/PROTOCOL.md, "Resumable transfers"): the bytes a host
// has sent so far of one blob, kept in one staging file per (host, blob id) under
// <blob store root>/staging/ until the last chunk arrives; then they are checked against the id
// and moved into the BlobStore. File names are built from the numeric host id and a validated
// content id only, never from anything else in a request.
//
// Thread-safe: one mutex serialises every operation of the area (a chunk is written and synced
// while it is held), so concurrent chunks for the same (host, id) cannot interleave; one of
// them finds the other's bytes and is answered kConflict. Only one process may use an area.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

#include "ubcp/common/bytes.h"
#include "ubcp/common/result.h"
#include "ubcp/coordinator/blob_store.h"
#include "ubcp/coordinator/byte_range.h"

namespace ubcp::coordinator {

struct UploadStagingOptions {
  std::uint64_t max_blob_bytes = 64ull << 20;  // the largest total an upload may announce
  // A staging file untouched this long is abandoned and may be removed (checked lazily).
  std::chrono::seconds max_age = std::chrono::hours(24);
  // Starting one more upload than this for a host discards that host's oldest staged one.
  std::size_t max_files_per_host = 4;
};

struct UploadState {
  std::uint64_t received = 0;  // bytes staged, or the blob's size once it is stored
  bool complete = false;       // the blob is in the store
};

class UploadStaging {
 public:
  // Nothing is created until the first chunk arrives. `blobs` must outlive this object.
  explicit UploadStaging(const BlobStore& blobs, UploadStagingOptions options = {});
  UploadStaging(const UploadStaging&) = delete;
  UploadStaging& operator=(const UploadStaging&) = delete;

  // What `host_id` has staged of `id` (0 when nothing, or only an expired file, is there); the
  // blob's size and complete when it is already stored. kInvalidArgument for a malformed id or
  // host id.
  common::Result<UploadState> Progress(std::int64_t host_id, const std::string& id);

  // Appends `chunk`, the bytes [range.first, range.last] of a blob of range.total bytes.
  // Errors, with nothing written: kInvalidArgument (malformed ids, chunk size not the range's
  // length), kTooLarge (range.total over max_blob_bytes), kConflict (range.first is not the
  // number of bytes staged; Progress tells the right offset), kIo.
  // With the last byte the staged file is checked against `id` and moved into the store
  // (complete); kHashMismatch deletes the staged bytes, so the next try starts from 0. A blob
  // already in the store completes at once, dropping anything staged for it.
  common::Result<UploadState> Append(std::int64_t host_id, const std::string& id,
                                     const ByteRange& range, common::ByteSpan chunk);

  // Removes every staging file untouched for longer than max_age. Also run when an upload
  // starts, so that abandoned uploads do not accumulate.
  void RemoveExpired();

  std::filesystem::path dir() const { return dir_; }

 private:
  common::Result<std::filesystem::path> PathOf(std::int64_t host_id, const std::string& id) const;
  // The staged size at `path`, 0 when absent; an expired file is removed first. Lock held.
  common::Result<std::uint64_t> StagedSize(const std::filesystem::path& path);
  // Keeps at most max_files_per_host - 1 files of `host_id`, removing the oldest. Lock held.
  void MakeRoomFor(std::int64_t host_id);
  void RemoveExpiredLocked();

  const BlobStore& blobs_;
  UploadStagingOptions options_;
  std::filesystem::path dir_;
  std::mutex mu_;
};

}  // namespace ubcp::coordinator
