// SPDX-License-Identifier: Apache-2.0
#include "fuzz/fuzz_seeds.h"

#include <filesystem>
#include <optional>

#include "fuzz/fuzz_targets.h"
#include "fuzz/scratch_dir.h"
#include "ubcp/client/unit_journal.h"
#include "ubcp/client/worker_protocol.h"
#include "ubcp/common/atomic_file.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/train_checkpoint.h"
#include "ubcp/common/wire.h"

namespace ubcp::fuzz {
namespace {

namespace fs = std::filesystem;
using common::Errc;
using common::MakeError;

// The file's content, "" when it is absent.
common::Result<std::string> ReadOrEmpty(const fs::path& path) {
  UBCP_ASSIGN_OR_RETURN(std::optional<std::string> text,
                        common::ReadFileAtMost(path, std::size_t{1} << 20));
  return text.value_or("");
}

common::Manifest SeedManifest() {
  common::Manifest m;
  m.unit_id = kJournalUnitId;
  m.job_id = 2;
  m.host_id = 3;
  m.attempt = 2;
  m.kind = "finetune_shard";
  m.model_spec = std::string(kCheckpointSpec);
  m.model = {std::string(64, 'a'), 120, 400};
  m.data = {std::string(64, 'b'), 300, 900};
  m.params = {10, 32, 0.05, 0.9, 0.0, "sgd", 7};
  m.update_encoding = "int8";
  m.issued_at = 1'700'000'000;
  m.deadline = 1'700'003'600;
  return m;
}

}  // namespace

std::vector<Seed> TensorBlobSeeds() {
  const common::ModelSpec spec = common::ParseModelSpec("mlp-i16-h8-o4").value();
  std::vector<Seed> seeds;
  for (auto encoding : {common::FloatEncoding::kFp32, common::FloatEncoding::kInt8Block}) {
    const common::EncodedBlob blob = common::EncodeTensorBlob(common::InitModel(spec, 1), encoding);
    seeds.push_back({"mlp-i16-h8-o4-" + std::string(common::FloatEncodingName(encoding)),
                     std::string(blob.bytes.begin(), blob.bytes.end())});
  }
  return seeds;
}

std::vector<Seed> CheckpointSeeds() {
  const common::ModelSpec spec = common::ParseModelSpec(kCheckpointSpec).value();
  struct Variant {
    const char* name;
    common::Optimizer optimizer;
    double momentum;
    int step;
  };
  const Variant variants[] = {{"sgd-momentum", common::Optimizer::kSgd, 0.9, 3},
                              {"sgd-plain", common::Optimizer::kSgd, 0.0, 1},
                              {"adam", common::Optimizer::kAdam, 0.0, 7}};
  std::vector<Seed> seeds;
  for (const Variant& v : variants) {
    common::TrainCheckpoint c;
    c.step = v.step;
    c.optimizer = v.optimizer;
    c.weights = common::InitModel(spec, static_cast<std::uint64_t>(v.step));
    c.optimizer_state = common::OptimizerStateLayout(spec, v.optimizer, v.momentum);
    float value = 0.001f;
    for (common::NamedTensor& t : c.optimizer_state) {
      for (float& x : t.f32) x = (value += 0.001f);
    }
    c.first_loss = 2.30;
    c.last_loss = 1.75;
    const common::Bytes bytes = common::EncodeCheckpoint(c, kCheckpointBinding);
    seeds.push_back({v.name, std::string(bytes.begin(), bytes.end())});
  }
  return seeds;
}

std::vector<Seed> WorkerProtocolSeeds() {
  using client::WorkerEvent;
  client::BenchmarkReport report;
  report.matmul_gflops = 812.5;
  report.train = {{"mlp-i784-h64-o10", 20512.25}, {"cnn28-c8-c16-h64-o10", 1830.0}};
  report.cpu_threads = 8;
  report.cuda_devices = 1;
  report.cuda_names = {"NVIDIA H200"};
  report.cuda_matmul_gflops = 51234.5;
  report.torch_version = "1.13.1";
  report.gpu.use = client::GpuUse::kUsable;
  report.gpu.status = "usable: 1 CUDA device";
  report.gpu.driver_version = "550.54.15";
  client::NvidiaGpu gpu;
  gpu.name = "NVIDIA H200";
  gpu.memory_total_bytes = 150'754'820'096;
  gpu.memory_used_bytes = 1'048'576;
  report.gpu.gpus = {gpu};
  client::BenchmarkReport cpu_only;
  cpu_only.matmul_gflops = 95.0;
  cpu_only.train = {{"mlp-i784-h64-o10", 3120.0}};
  cpu_only.cpu_threads = 2;
  cpu_only.torch_version = "1.13.1";
  cpu_only.gpu.status = "none";

  const std::string progress = client::FormatWorkerEvent({WorkerEvent::Kind::kProgress, 3, 10, ""});
  const std::string resumed = client::FormatWorkerEvent({WorkerEvent::Kind::kResumed, 4, 0, ""});
  const std::string checkpoint =
      client::FormatWorkerEvent({WorkerEvent::Kind::kCheckpoint, 8, 0, ""});
  const std::string error = client::FormatWorkerEvent(
      {WorkerEvent::Kind::kError, 0, 0, "cannot read the model blob: hash mismatch"});
  const std::string benchmark = client::FormatWorkerEvent(
      {WorkerEvent::Kind::kBenchmark, 0, 0, client::BenchmarkToJson(report)});
  client::ExecutionRequest request;
  request.unit_dir = "/var/lib/ubcp/units/42";
  request.manifest_hash = "b2:5e1f";
  request.model_blob = "/var/lib/ubcp/blobs/b2:aa";
  request.data_blob = "/var/lib/ubcp/blobs/b2:bb";
  request.checkpoint_every = 100;
  request.checkpoint_seconds = 30;
  const std::string end = client::FormatWorkerEvent({WorkerEvent::Kind::kEnd, 0, 0, ""});
  return {{"request", client::FormatWorkerRequest(request)},
          {"end", end},
          {"progress", progress},
          {"resumed", resumed},
          {"checkpoint", checkpoint},
          {"error", error},
          {"benchmark", benchmark},
          {"benchmark-cpu.json", client::BenchmarkToJson(cpu_only)},
          {"transcript", resumed + "\nloading shard 2 of 4\n" + checkpoint + "\n" + progress +
                             "\nprogress 10 10\n" + end + "\n"}};
}

common::Result<std::vector<Seed>> UnitJournalSeeds() {
  const ScratchDir dir("ubcp-fuzz-seeds");
  if (dir.path().empty()) return MakeError(Errc::kIo, "cannot create a temporary directory");
  UBCP_ASSIGN_OR_RETURN(client::UnitJournal journal, client::UnitJournal::Open(dir.path()));
  const fs::path unit = journal.Dir(kJournalUnitId);
  const common::SigningKey key = common::SigningKey::Generate();
  const common::SignedEnvelope manifest =
      common::SignPayload(key, common::kDomainManifest, common::SerializeManifest(SeedManifest()));
  // The five parts of a FuzzUnitJournal input, as the journal holds them now.
  auto snapshot = [&](const fs::path& envelope) -> common::Result<std::vector<std::string>> {
    std::vector<std::string> files;
    for (const fs::path& p : {unit / "state.json", unit / "output.json", unit / "update.blob",
                              journal.root() / "finished.log", envelope}) {
      UBCP_ASSIGN_OR_RETURN(std::string text, ReadOrEmpty(p));
      files.push_back(std::move(text));
    }
    return files;
  };
  std::vector<Seed> seeds;

  UBCP_RETURN_IF_ERROR(journal.Begin(kJournalUnitId, manifest, 1'700'000'100));
  UBCP_ASSIGN_OR_RETURN(auto leased, snapshot(journal.ManifestPath(kJournalUnitId)));
  seeds.push_back({"leased", JoinJournalFiles(leased)});

  UBCP_ASSIGN_OR_RETURN(client::UnitRecord record, journal.Load(kJournalUnitId));
  record.worker_crashes = 1;
  UBCP_RETURN_IF_ERROR(journal.Advance(record, client::UnitPhase::kExecuted));
  client::UnitOutput trained;
  const common::ModelSpec spec = common::ParseModelSpec(kCheckpointSpec).value();
  trained.update =
      common::EncodeTensorBlob(common::InitModel(spec, 5), common::FloatEncoding::kInt8Block);
  trained.metrics = {1.75, 0.0, 2.30, 320};
  trained.wall_seconds = 1.25;
  UBCP_RETURN_IF_ERROR(client::SaveUnitOutput(unit, trained));
  UBCP_RETURN_IF_ERROR(journal.Finish(3, true, "accepted"));
  UBCP_RETURN_IF_ERROR(journal.Finish(5, false, "the worker crashed 3 times"));
  UBCP_ASSIGN_OR_RETURN(auto executed, snapshot(journal.ManifestPath(kJournalUnitId)));
  seeds.push_back({"executed", JoinJournalFiles(executed)});

  // An evaluation: no update, a signed result, then acknowledged (its directory goes).
  UBCP_RETURN_IF_ERROR(journal.Advance(record, client::UnitPhase::kSigned));
  client::UnitOutput evaluated;
  evaluated.metrics = {2.05, 0.42, 0.0, 500};
  evaluated.wall_seconds = 0.5;
  std::error_code ec;
  fs::remove(unit / "update.blob", ec);
  UBCP_RETURN_IF_ERROR(client::SaveUnitOutput(unit, evaluated));
  common::ResultPayload result;
  result.unit_id = kJournalUnitId;
  result.host_id = 3;
  result.attempt = 2;
  result.manifest_hash = common::PayloadHash(manifest);
  result.kind = "eval_batch";
  result.metrics = evaluated.metrics;
  UBCP_RETURN_IF_ERROR(journal.SaveResult(
      kJournalUnitId,
      common::SignPayload(key, common::kDomainResult, common::SerializeResultPayload(result))));
  UBCP_ASSIGN_OR_RETURN(auto signed_files, snapshot(unit / "result.env"));
  seeds.push_back({"signed", JoinJournalFiles(signed_files)});
  // The same files once the unit is logged as acknowledged: Pending must remove them.
  UBCP_RETURN_IF_ERROR(journal.Finish(kJournalUnitId, true, "accepted"));
  UBCP_ASSIGN_OR_RETURN(signed_files[3], ReadOrEmpty(journal.root() / "finished.log"));
  seeds.push_back({"acknowledged", JoinJournalFiles(signed_files)});
  return seeds;
}

}  // namespace ubcp::fuzz
