// SPDX-License-Identifier: Apache-2.0
#pragma once
// Test and benchmark helper: one work unit as a donor receives it (manifest + model and data
// blobs), run with the real client executor and turned into what the coordinator compares
// (result_compare.h). Used by tests/client/replica_agreement_test.cc and
// tests/bench/tolerance_bench.cc.

#include <cstdint>
#include <string>
#include <string_view>

#include "ubcp/client/adversary.h"
#include "ubcp/client/executor.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/result_compare.h"

namespace ubcp::testing {

struct ReplicaUnit {
  common::Manifest manifest;
  common::EncodedBlob model;
  common::EncodedBlob data;
};

inline common::BlobRef BlobRefOf(const common::EncodedBlob& blob) {
  return {common::ContentId(blob.bytes), blob.bytes.size(), blob.raw_size};
}

// A unit of `kind` on `shard` from `weights` (fp32 blobs); a finetune unit trains with `params`
// and encodes its update as `update_encoding`.
inline ReplicaUnit MakeReplicaUnit(std::string_view kind, const std::string& model_spec,
                                   const common::TensorList& weights,
                                   const common::TensorList& shard,
                                   const common::UnitParams& params,
                                   const std::string& update_encoding) {
  ReplicaUnit u;
  u.model = common::EncodeTensorBlob(weights, common::FloatEncoding::kFp32);
  u.data = common::EncodeTensorBlob(shard, common::FloatEncoding::kFp32);
  u.manifest.unit_id = 1;
  u.manifest.job_id = 1;
  u.manifest.host_id = 1;
  u.manifest.kind = std::string(kind);
  u.manifest.model_spec = model_spec;
  u.manifest.model = BlobRefOf(u.model);
  u.manifest.data = BlobRefOf(u.data);
  if (kind == common::kUnitFinetune) {
    u.manifest.params = params;
    u.manifest.update_encoding = update_encoding;
  }
  return u;
}

// Runs `unit` with the real executor on `threads` torch threads (as `adversary`), and decodes
// its update as the coordinator would.
inline common::Result<coordinator::ComparableResult> RunReplica(
    const ReplicaUnit& unit, int threads, const client::Adversary& adversary = {}) {
  const auto out =
      client::ExecuteUnit(unit.manifest, unit.model.bytes, unit.data.bytes, threads, adversary);
  if (!out) return out.error();
  coordinator::ComparableResult r;
  r.kind = unit.manifest.kind;
  r.loss = out->metrics.loss;
  r.accuracy = out->metrics.accuracy;
  r.first_loss = out->metrics.first_loss;
  r.samples = out->metrics.samples;
  if (out->update) {
    UBCP_ASSIGN_OR_RETURN(r.update,
                          common::DecodeTensorBlob(out->update->bytes, out->update->raw_size));
  }
  return r;
}

}  // namespace ubcp::testing
