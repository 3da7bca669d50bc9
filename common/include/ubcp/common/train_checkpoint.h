// SPDX-License-Identifier: Apache-2.0
#pragma once
// Checkpoints of a fine-tune unit (TrainCheckpoint, model.h) as bytes, so that a donor that was
// killed or rebooted resumes the unit from its last checkpoint and still returns the bits an
// uninterrupted run returns. Framework-free: tensors go through the project's tensor codec (fp32),
// nothing is pickled. The caller does the file I/O (and writes atomically).
//
// Encoding (little endian):
//   body       = "UBCK" | u16 version (1) | 32-byte BLAKE2b-256(binding) | u8 optimizer
//                (1 = SGD, 2 = Adam) | u32 step | f64 first_loss | f64 last_loss |
//                u64 n | n bytes EncodeTensors(weights, fp32) |
//                u64 m | m bytes EncodeTensors(optimizer_state, fp32)
//   checkpoint = body | BLAKE2b-256(body)
// The trailing digest is checked before any field is read, and the total size is bounded by the
// model spec before the digest is computed.

#include <string_view>

#include "ubcp/common/bytes.h"
#include "ubcp/common/model.h"
#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"

namespace ubcp::common {

// The optimizer state TrainShard keeps for each parameter of `spec`, in ModelLayout order (values
// zero): SGD with momentum > 0: "<param>.momentum_buffer"; SGD without momentum: nothing; Adam:
// "<param>.exp_avg", "<param>.exp_avg_sq" (its step count is the checkpoint's step).
TensorList OptimizerStateLayout(const ModelSpec& spec, Optimizer optimizer, double momentum);

// Whether TrainShard can resume `checkpoint` under `spec` and `params`: 1 <= step < local_steps,
// same optimizer, weights and optimizer state of the expected layout and finite, losses finite.
// kInvalidArgument when the step or optimizer does not fit the params, kMalformed otherwise.
Status CheckCheckpoint(const ModelSpec& spec, const TrainParams& params,
                       const TrainCheckpoint& checkpoint);

// Largest encoding DecodeCheckpoint accepts for `spec` (weights plus at most two state tensors
// per parameter, with their headers).
std::size_t MaxCheckpointSize(const ModelSpec& spec);

// `binding` ties the checkpoint to one piece of work (the client uses the unit's manifest hash);
// any length. The checkpoint must hold finite values (TrainShard only hands out such).
Bytes EncodeCheckpoint(const TrainCheckpoint& checkpoint, std::string_view binding);

// Strict inverse of EncodeCheckpoint. Errors: kTooLarge past MaxCheckpointSize(spec);
// kHashMismatch when the digest does not match (nothing else is read then); kMalformed on a bad
// magic, truncation, trailing bytes, bad tensors or a layout other than `spec`'s;
// kUnsupportedVersion; kConflict when it was written for another binding.
Result<TrainCheckpoint> DecodeCheckpoint(ByteSpan encoded, std::string_view binding,
                                         const ModelSpec& spec);

}  // namespace ubcp::common
