// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/tensor_blobs.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

namespace {
common::TensorLimits BlobLimits() {
  common::TensorLimits limits;
  limits.max_elements = static_cast<std::int64_t>(kMaxTensorBlobRaw);
  return limits;
}
}  // namespace

common::Result<BlobRecord> PutTensorBlob(const BlobStore& blobs, Store& store,
                                         const common::TensorList& tensors,
                                         common::FloatEncoding encoding, const std::string& kind,
                                         std::int64_t now) {
  common::EncodedBlob encoded = common::EncodeTensorBlob(tensors, encoding);
  if (encoded.raw_size > kMaxTensorBlobRaw) {
    return MakeError(Errc::kTooLarge, "tensor blob over " + std::to_string(kMaxTensorBlobRaw));
  }
  UBCP_ASSIGN_OR_RETURN(std::string id, blobs.Put(encoded.bytes));
  BlobRecord record{id, encoded.bytes.size(), encoded.raw_size, kind};
  UBCP_RETURN_IF_ERROR(store.RecordBlob(record, now));
  return record;
}

common::Result<common::TensorList> GetTensorBlob(const BlobStore& blobs, Store& store,
                                                 const std::string& id) {
  UBCP_ASSIGN_OR_RETURN(BlobRecord record, store.GetBlob(id));
  if (record.raw_size > kMaxTensorBlobRaw) return MakeError(Errc::kTooLarge, "blob " + id);
  UBCP_ASSIGN_OR_RETURN(common::Bytes bytes, blobs.Get(id, record.size));
  return common::DecodeTensorBlob(bytes, record.raw_size, BlobLimits());
}

}  // namespace ubcp::coordinator
