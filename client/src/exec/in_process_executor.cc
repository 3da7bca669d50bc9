// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/in_process_executor.h"

#include "ubcp/client/unit_journal.h"
#include "ubcp/common/atomic_file.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/train_checkpoint.h"

namespace ubcp::client {
namespace {

ExecutionResult Failed(std::string message) {
  ExecutionResult r;
  r.end = ExecutionEnd::kFailed;
  r.message = std::move(message);
  return r;
}

common::Result<common::Bytes> ReadBlobFile(const std::filesystem::path& path,
                                           const common::BlobRef& ref) {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(path, static_cast<std::size_t>(ref.size)));
  if (!text) return common::MakeError(common::Errc::kNotFound, path.string() + " is missing");
  return common::Bytes(text->begin(), text->end());
}

class InProcessExecutor : public UnitExecutor {
 public:
  ExecutionResult Execute(const ExecutionRequest& request) override {
    return ExecuteUnitInDirectory(request);
  }
};

}  // namespace

ExecutionResult ExecuteUnitInDirectory(const ExecutionRequest& request,
                                       const std::function<void(const WorkerEvent&)>& events) {
  const auto tell = [&](const WorkerEvent& e) {
    if (events) events(e);
  };
  const std::filesystem::path manifest_path = request.unit_dir / "manifest.env";
  auto text = common::ReadFileAtMost(manifest_path, common::kMaxEnvelopeJson);
  if (!text || !*text) return Failed("cannot read " + manifest_path.string());
  auto envelope = common::ParseEnvelope(**text);
  if (!envelope) return Failed("manifest.env: " + envelope.error().ToString());
  // The daemon verified the signature; the hash binds this file to what it verified.
  if (common::PayloadHash(*envelope) != request.manifest_hash) {
    return Failed("manifest.env does not match the manifest the daemon verified");
  }
  auto manifest = common::ParseManifest(envelope->payload);
  if (!manifest) return Failed("manifest: " + manifest.error().ToString());
  auto model = ReadBlobFile(request.model_blob, manifest->model);
  if (!model) return Failed("model blob: " + model.error().ToString());
  auto data = ReadBlobFile(request.data_blob, manifest->data);
  if (!data) return Failed("data blob: " + data.error().ToString());

  ExecutionResult result;
  const std::filesystem::path checkpoint_path = request.unit_dir / "checkpoint";
  CheckpointOptions checkpoint;
  checkpoint.binding = request.manifest_hash;
  checkpoint.every_steps = request.checkpoint_every;
  checkpoint.every_seconds = request.checkpoint_seconds;
  if (auto spec = common::ParseModelSpec(manifest->model_spec); spec) {
    // A checkpoint that cannot be read is ignored: the unit starts from step 0.
    auto saved = common::ReadFileAtMost(checkpoint_path, common::MaxCheckpointSize(*spec));
    if (saved && *saved) checkpoint.resume_from = common::Bytes((*saved)->begin(), (*saved)->end());
  }
  std::int64_t steps_done = -1;  // the last progress heard; the first is where the unit starts
  checkpoint.save = [&](common::ByteSpan bytes) -> common::Status {
    UBCP_RETURN_IF_ERROR(
        common::WriteFileAtomically(checkpoint_path, common::AsString(bytes), 0600));
    tell({WorkerEvent::Kind::kCheckpoint, steps_done, 0, {}});
    return {};
  };
  checkpoint.should_stop = request.should_stop;
  ProgressFn progress = [&](std::int64_t done, std::int64_t total) {
    if (steps_done < 0 && done > 0 && done < total) {
      result.resumed_from_step = done;
      tell({WorkerEvent::Kind::kResumed, done, 0, {}});
    }
    steps_done = done;
    if (request.progress) request.progress(done, total);
    tell({WorkerEvent::Kind::kProgress, done, total, {}});
  };
  auto output = ExecuteUnit(*manifest, *model, *data, request.threads, request.adversary, progress,
                            checkpoint);
  if (!output) {
    if (IsStopped(output.error())) {
      result.end = ExecutionEnd::kStopped;
      result.message = output.error().message;
      return result;
    }
    result.end = ExecutionEnd::kFailed;
    result.message = output.error().ToString();
    return result;
  }
  if (auto saved = SaveUnitOutput(request.unit_dir, *output); !saved) {
    if (saved.error().code == common::Errc::kInvalidArgument) {  // non-finite: not worth a retry
      result.end = ExecutionEnd::kFailed;
      result.message = "the unit's metrics are not finite (training or evaluation diverged)";
      return result;
    }
    // A full disk is not the unit's fault: another try may succeed.
    result.end = ExecutionEnd::kCrashed;
    result.message = "cannot save the output: " + saved.error().ToString();
    return result;
  }
  result.end = ExecutionEnd::kDone;
  result.output = std::move(*output);
  return result;
}

std::shared_ptr<UnitExecutor> MakeInProcessExecutor() {
  return std::make_shared<InProcessExecutor>();
}

}  // namespace ubcp::client
