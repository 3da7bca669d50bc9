// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "ubcp/common/model.h"
#include "ubcp/common/train_checkpoint.h"

namespace ubcp::client {
using common::Errc;
using common::MakeError;

namespace {

common::Result<common::TensorList> OpenBlob(const common::BlobRef& ref, common::ByteSpan bytes,
                                            const common::TensorLimits& limits) {
  if (bytes.size() != ref.size || common::ContentId(bytes) != ref.id) {
    return MakeError(Errc::kHashMismatch, "blob " + ref.id + " does not match the manifest");
  }
  if (ref.raw_size > kMaxUnitBlobRaw) return MakeError(Errc::kTooLarge, "blob too large");
  return common::DecodeTensorBlob(bytes, ref.raw_size, limits);
}

common::TrainParams FinetuneParams(const common::Manifest& m, int threads) {
  common::TrainParams params;
  params.local_steps = m.params.local_steps;
  params.batch_size = m.params.batch_size;
  params.lr = m.params.lr;
  params.momentum = m.params.momentum;
  params.weight_decay = m.params.weight_decay;
  params.optimizer =
      m.params.optimizer == "adam" ? common::Optimizer::kAdam : common::Optimizer::kSgd;
  params.seed = m.params.seed;
  params.threads = threads;
  return params;
}

// The checkpoint to resume from, or nothing: a checkpoint that does not decode or fit is logged
// here and dropped, so that the unit restarts from step 0 rather than from a wrong state.
std::optional<common::TrainCheckpoint> ResumePoint(const common::Manifest& m,
                                                   const common::ModelSpec& spec,
                                                   const common::TrainParams& params,
                                                   const CheckpointOptions& options) {
  if (!options.resume_from) return std::nullopt;
  auto decoded = common::DecodeCheckpoint(*options.resume_from, options.binding, spec);
  common::Status fits =
      decoded ? common::CheckCheckpoint(spec, params, *decoded) : common::Status(decoded.error());
  if (!fits) {
    spdlog::warn("unit {}: ignoring its checkpoint ({}); starting from step 0", m.unit_id,
                 fits.error().ToString());
    return std::nullopt;
  }
  spdlog::info("unit {}: resuming from its checkpoint at step {} of {}", m.unit_id, decoded->step,
               params.local_steps);
  return std::move(*decoded);
}

}  // namespace

bool IsStopped(const common::Error& error) { return error.code == Errc::kUnavailable; }

common::Result<UnitOutput> ExecuteUnit(const common::Manifest& m, common::ByteSpan model_blob,
                                       common::ByteSpan data_blob, int threads,
                                       const Adversary& adversary, const ProgressFn& progress,
                                       const CheckpointOptions& checkpoint) {
  const auto start = std::chrono::steady_clock::now();
  UBCP_ASSIGN_OR_RETURN(common::ModelSpec spec, common::ParseModelSpec(m.model_spec));
  const common::TensorList layout = common::ModelLayout(spec);
  common::TensorLimits model_limits;
  model_limits.max_tensors = layout.size();
  UBCP_ASSIGN_OR_RETURN(common::TensorList weights, OpenBlob(m.model, model_blob, model_limits));
  UBCP_RETURN_IF_ERROR(common::CheckSameLayout(layout, weights));
  common::TensorLimits data_limits;
  data_limits.max_tensors = 2;
  data_limits.max_elements = static_cast<std::int64_t>(kMaxUnitBlobRaw);
  UBCP_ASSIGN_OR_RETURN(common::TensorList data, OpenBlob(m.data, data_blob, data_limits));
  UBCP_RETURN_IF_ERROR(common::CheckDataShard(spec, data));

  // CheckDataShard has made sure "y" exists.
  const std::int64_t total_steps =
      m.kind == common::kUnitFinetune
          ? std::max<std::int64_t>(1, m.params.local_steps)
          : std::max<std::int64_t>(1, common::EvalBatches(common::FindTensor(data, "y")->shape[0]));
  common::TrainParams params = FinetuneParams(m, threads);
  std::optional<common::TrainCheckpoint> resume;
  if (m.kind == common::kUnitFinetune) resume = ResumePoint(m, spec, params, checkpoint);
  if (progress) progress(resume ? resume->step : 0, total_steps);
  common::LoopProgress loop_progress;
  if (progress) loop_progress = [&progress](int done, int total) { progress(done, total); };
  UnitOutput out;
  if (m.kind == common::kUnitEval) {
    UBCP_ASSIGN_OR_RETURN(
        common::EvalOutcome eval,
        common::Evaluate(spec, weights, data, threads, loop_progress, checkpoint.should_stop));
    out.metrics.loss = eval.loss;
    out.metrics.accuracy = eval.accuracy;
    out.metrics.samples = eval.samples;
  } else if (m.kind == common::kUnitFinetune) {
    params.progress = loop_progress;
    if (resume) params.resume = &*resume;
    params.should_stop = checkpoint.should_stop;
    if (checkpoint.save) {
      params.checkpoint_every = std::max(0, checkpoint.every_steps);
      params.checkpoint_seconds = std::max(0.0, checkpoint.every_seconds);
      params.on_checkpoint = [&checkpoint](const common::TrainCheckpoint& state) {
        const common::Bytes bytes = common::EncodeCheckpoint(state, checkpoint.binding);
        common::Status saved = checkpoint.save(bytes);
        // kUnavailable is reserved for a stop (IsStopped); a failed save is not one.
        if (!saved && saved.error().code == Errc::kUnavailable) {
          return common::Status(MakeError(Errc::kIo, saved.error().message));
        }
        return saved;
      };
    }
    UBCP_ASSIGN_OR_RETURN(common::FloatEncoding encoding,
                          common::ParseFloatEncoding(m.update_encoding));
    UBCP_RETURN_IF_ERROR(PoisonLabels(adversary, spec.classes, data));
    UBCP_ASSIGN_OR_RETURN(common::TrainOutcome trained,
                          common::TrainShard(spec, weights, data, params));
    UBCP_RETURN_IF_ERROR(ApplyAdversary(adversary, params.seed, trained.delta));
    out.update = common::EncodeTensorBlob(trained.delta, encoding);
    out.metrics.loss = trained.last_loss;
    out.metrics.first_loss = trained.first_loss;
    out.metrics.samples = trained.samples;
  } else {
    return MakeError(Errc::kInvalidArgument, "unknown unit kind " + m.kind);
  }
  out.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (progress) progress(total_steps, total_steps);
  return out;
}

}  // namespace ubcp::client
