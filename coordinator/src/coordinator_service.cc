// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/coordinator_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <map>

#include "ubcp/common/model.h"
#include "ubcp/coordinator/aggregate.h"
#include "ubcp/coordinator/cost_model.h"
#include "ubcp/coordinator/ledger.h"
#include "ubcp/coordinator/tensor_blobs.h"

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

std::int64_t SystemClockSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// Stored in the wire form (common::ParseHostBenchmark reads it back), with the GPU report when
// the host sent one.
std::string BenchmarkJson(const common::HostBenchmark& b) {
  return common::SerializeHostBenchmark(b);
}

std::string CapabilitiesJson(const common::HostCapabilities& c) {
  return boost::json::serialize(boost::json::object{{"cpu_cores", c.cpu_cores},
                                                    {"memory_mb", c.memory_mb},
                                                    {"cuda", c.cuda},
                                                    {"client_version", c.client_version}});
}

common::BlobRef ToRef(const BlobRecord& b) { return {b.id, b.size, b.raw_size}; }

bool Finite(double x) { return std::isfinite(x); }

// A host's free text on one log line: control characters (a newline could forge a line of its
// own) become '?'.
std::string OneLine(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

}  // namespace

Coordinator::Coordinator(Store& store, const BlobStore& blobs,
                         const common::SigningKey& signing_key, Clock clock,
                         CoordinatorConfig config)
    : store_(store),
      blobs_(blobs),
      signing_key_(signing_key),
      clock_(std::move(clock)),
      config_(std::move(config)),
      planner_(store, blobs, config_.datasets),
      economy_(store, config_.economy, clock_),
      judge_(store, blobs, config_.replication, clock_),
      uploads_(blobs, UploadStagingOptions{.max_blob_bytes = config_.max_update_bytes}) {}

double Coordinator::SecretDraw(std::uint64_t seed, std::string_view purpose) const {
  std::string message = std::to_string(seed) + ":" + std::string(purpose);
  // Ed25519 signatures are deterministic, so this is a keyed pseudo-random function.
  const common::Signature sig = signing_key_.Sign("replication-draw", common::AsBytes(message));
  const common::Digest digest = common::Blake2b256(common::ByteSpan(sig.data(), sig.size()));
  std::uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x = (x << 8) | digest.bytes[static_cast<std::size_t>(i)];
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

std::vector<UnitPlan> Coordinator::PlanRound(const common::JobSpec& spec, int round) const {
  std::vector<UnitPlan> units = Planner::PlanRound(spec, round);
  AssignQuorums(units, config_.replication,
                [this](std::uint64_t seed, std::string_view p) { return SecretDraw(seed, p); });
  return units;
}

common::Status Coordinator::Tick() { return economy_.Tick(); }

common::Result<HostRecord> Coordinator::AuthenticateHost(std::string_view token) {
  if (token.empty()) return MakeError(Errc::kUnauthorized, "missing bearer token");
  UBCP_ASSIGN_OR_RETURN(HostRecord host, store_.FindHostByTokenHash(common::TokenHash(token)));
  if (host.banned_at != 0) {
    return MakeError(Errc::kForbidden, "this host's key is banned: its results were found invalid");
  }
  return host;
}

common::Result<AccountRecord> Coordinator::AuthenticateAccount(std::string_view token) {
  if (token.empty()) return MakeError(Errc::kUnauthorized, "missing bearer token");
  return store_.FindAccountByTokenHash(common::TokenHash(token));
}

common::Result<common::HostRegistered> Coordinator::RegisterHost(const AccountRecord& account,
                                                                 std::string_view envelope_json) {
  UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope env, common::ParseEnvelope(envelope_json));
  UBCP_ASSIGN_OR_RETURN(common::PublicKey key, common::PublicKey::FromHex(env.signer));
  // Proof of possession: the registration must be signed by the key it registers, so nobody
  // can register (and later be credited for) a key they do not hold.
  UBCP_RETURN_IF_ERROR(common::VerifyEnvelope(env, common::kDomainRegister, key));
  UBCP_ASSIGN_OR_RETURN(common::HostRegistration reg, common::ParseHostRegistration(env.payload));
  if (reg.public_key != env.signer) {
    return MakeError(Errc::kInvalidArgument, "registration names another key than its signer");
  }
  const std::int64_t now = clock_();
  if (std::llabs(now - reg.issued_at) > config_.registration_max_age_s) {
    return MakeError(Errc::kForbidden, "registration is stale or from the future");
  }
  std::string token = common::NewToken();
  NewHost host{reg.public_key,
               reg.name,
               common::TokenHash(token),
               BenchmarkJson(reg.benchmark),
               CapabilitiesJson(reg.capabilities),
               now,
               account.id,
               config_.replication.max_hosts_per_account};
  UBCP_ASSIGN_OR_RETURN(std::int64_t host_id, store_.CreateHost(host));
  spdlog::info("registered host {} ({}) of account '{}', key {}, {:.1f} GFLOPS", host_id, reg.name,
               account.name, common::Fingerprint(key), reg.benchmark.matmul_gflops);
  return common::HostRegistered{common::kProtocolVersion, host_id, std::move(token)};
}

common::Result<std::string> Coordinator::SignManifest(const LeaseContext& ctx,
                                                      common::SignedEnvelope* out) {
  UBCP_ASSIGN_OR_RETURN(common::JobSpec spec, common::ParseJobSpec(ctx.job.spec_json));
  common::Manifest m;
  m.unit_id = ctx.unit.id;
  m.job_id = ctx.job.id;
  m.round = ctx.unit.round;
  m.attempt = ctx.unit.attempt;
  m.host_id = ctx.unit.host_id;
  m.kind = ctx.unit.kind;
  m.model_spec = ctx.job.model_spec;
  m.model = ToRef(ctx.model);
  m.data = ToRef(ctx.data);
  if (ctx.unit.kind == common::kUnitFinetune) {
    m.params = spec.params;
    m.params.seed = ctx.unit.seed;
    m.update_encoding = spec.update_encoding;
  } else {
    m.params.optimizer = spec.params.optimizer;
    m.update_encoding = spec.update_encoding;
  }
  m.issued_at = clock_();
  m.deadline = ctx.unit.lease_deadline;
  *out = common::SignPayload(signing_key_, common::kDomainManifest, common::SerializeManifest(m));
  return common::PayloadHash(*out);
}

common::Result<std::optional<common::SignedEnvelope>> Coordinator::RequestWork(
    const HostRecord& host, const common::WorkRequest& request) {
  std::vector<std::string> kinds = request.kinds;
  if (kinds.empty()) kinds = {std::string(common::kUnitFinetune), std::string(common::kUnitEval)};
  const std::int64_t now = clock_();
  UBCP_RETURN_IF_ERROR(store_.TouchHost(host.id, now));
  for (int attempt = 0; attempt < 2; ++attempt) {
    common::SignedEnvelope envelope;
    auto leased = store_.LeaseUnit(
        host.id, kinds, now, [&](const LeaseContext& ctx) { return SignManifest(ctx, &envelope); },
        [&](const WorkRecord& work, const HostRecord& leaser) {
          return SettleQuorum(
              work, leaser, config_.replication,
              [this](std::uint64_t seed, std::string_view p) { return SecretDraw(seed, p); });
        });
    if (!leased) return leased.error();
    if (leased->has_value()) {
      spdlog::debug("unit {} (job {} round {} {}) attempt {} -> host {}", (*leased)->unit.id,
                    (*leased)->job.id, (*leased)->unit.round, (*leased)->unit.kind,
                    (*leased)->unit.attempt, host.id);
      return std::optional<common::SignedEnvelope>(std::move(envelope));
    }
    // No work: maybe a round is complete but was not advanced (a crash between storing the
    // last result and aggregating). Finish that, then look once more.
    if (attempt == 0) Reconcile();
  }
  return std::optional<common::SignedEnvelope>();
}

common::Status Coordinator::UploadBlob(const HostRecord& host, const std::string& id,
                                       common::ByteSpan bytes) {
  if (bytes.size() > config_.max_update_bytes) {
    return MakeError(Errc::kTooLarge, "update blob over the limit");
  }
  return blobs_.PutExpected(id, bytes);
}

common::Result<common::Bytes> Coordinator::ReadBlob(const std::string& id) {
  if (!common::IsContentId(id)) return MakeError(Errc::kInvalidArgument, "malformed blob id");
  return blobs_.Get(id, config_.max_blob_download);
}

common::Result<UploadState> Coordinator::UploadBlobChunk(const HostRecord& host,
                                                         const std::string& id,
                                                         const ByteRange& range,
                                                         common::ByteSpan chunk) {
  return uploads_.Append(host.id, id, range, chunk);
}

common::Result<UploadState> Coordinator::UploadProgress(const HostRecord& host,
                                                        const std::string& id) {
  return uploads_.Progress(host.id, id);
}

common::Result<std::uint64_t> Coordinator::BlobSize(const std::string& id) {
  return blobs_.Size(id);
}

common::Result<common::Bytes> Coordinator::ReadBlobRange(const std::string& id,
                                                         std::uint64_t offset,
                                                         std::uint64_t length) {
  if (length > config_.max_blob_download) {
    return MakeError(Errc::kTooLarge, "range over the download limit");
  }
  return blobs_.GetRange(id, offset, static_cast<std::size_t>(length));
}

common::Status Coordinator::ValidateResult(const common::ResultPayload& payload,
                                           const UnitRecord& unit, const JobRecord& job) {
  const auto& m = payload.metrics;
  if (!Finite(m.loss) || m.loss < 0 || !Finite(m.first_loss) || m.first_loss < 0 ||
      m.samples <= 0 || !Finite(payload.wall_seconds)) {
    return MakeError(Errc::kInvalidArgument, "result metrics out of range");
  }
  if (unit.kind == common::kUnitEval) {
    if (payload.update) return MakeError(Errc::kInvalidArgument, "eval result carries an update");
    if (!(m.accuracy >= 0 && m.accuracy <= 1)) {
      return MakeError(Errc::kInvalidArgument, "accuracy out of range");
    }
    return {};
  }
  if (!payload.update) return MakeError(Errc::kInvalidArgument, "finetune result without update");
  const common::BlobRef& ref = *payload.update;
  if (ref.raw_size > kMaxTensorBlobRaw) return MakeError(Errc::kTooLarge, "update too large");
  // The update was uploaded before the result; its bytes must match the signed id and size, and
  // decode to exactly the model's layout, before the result can count.
  UBCP_ASSIGN_OR_RETURN(common::Bytes bytes, blobs_.Get(ref.id, config_.max_update_bytes));
  if (bytes.size() != ref.size) return MakeError(Errc::kInvalidArgument, "update size mismatch");
  UBCP_ASSIGN_OR_RETURN(common::ModelSpec spec, common::ParseModelSpec(job.model_spec));
  common::TensorList layout = common::ModelLayout(spec);
  common::TensorLimits limits;
  limits.max_tensors = layout.size();
  UBCP_ASSIGN_OR_RETURN(common::TensorList update,
                        common::DecodeTensorBlob(bytes, ref.raw_size, limits));
  UBCP_RETURN_IF_ERROR(common::CheckSameLayout(layout, update));
  // A non-finite update could only poison the model (aggregation would drop it): it is refused
  // here, so it is neither stored as a result nor paid for.
  for (const common::NamedTensor& t : update) {
    for (float v : t.f32) {
      if (!std::isfinite(v)) return MakeError(Errc::kInvalidArgument, "update is not finite");
    }
  }
  return store_.RecordBlob({ref.id, ref.size, ref.raw_size, "update"}, clock_());
}

common::Result<common::ResultAck> Coordinator::SubmitResult(const HostRecord& host,
                                                            std::string_view envelope_json) {
  UBCP_ASSIGN_OR_RETURN(common::SignedEnvelope env, common::ParseEnvelope(envelope_json));
  // Signature first, parse second: nothing a host sends is interpreted before it is known to
  // come from the key this host registered.
  if (env.signer != host.public_key) {
    return MakeError(Errc::kForbidden, "result is not signed by this host's key");
  }
  UBCP_ASSIGN_OR_RETURN(common::PublicKey key, common::PublicKey::FromHex(host.public_key));
  UBCP_RETURN_IF_ERROR(common::VerifyEnvelope(env, common::kDomainResult, key));
  UBCP_ASSIGN_OR_RETURN(common::ResultPayload payload, common::ParseResultPayload(env.payload));
  if (payload.host_id != host.id) return MakeError(Errc::kForbidden, "result names another host");
  UBCP_ASSIGN_OR_RETURN(UnitRecord unit, store_.GetUnit(payload.unit_id));
  if (payload.kind != unit.kind) return MakeError(Errc::kInvalidArgument, "result kind mismatch");
  UBCP_ASSIGN_OR_RETURN(JobRecord job, store_.GetJob(unit.job_id));

  if (unit.state != UnitState::kDone) {
    if (unit.state != UnitState::kLeased || unit.host_id != host.id ||
        unit.attempt != payload.attempt || unit.manifest_hash != payload.manifest_hash) {
      return MakeError(Errc::kConflict, "result does not answer the unit's current lease");
    }
    UBCP_RETURN_IF_ERROR(ValidateResult(payload, unit, job));
  }
  // A done unit goes straight to the store: the same envelope again is a harmless retry
  // (duplicate), anything else is refused there as a conflict.
  ResultRecord record;
  record.unit_id = unit.id;
  record.host_id = host.id;
  record.attempt = payload.attempt;
  record.envelope_hash = common::ContentId(common::AsBytes(envelope_json));
  record.envelope_json = std::string(envelope_json);
  record.update_blob = payload.update ? payload.update->id : "";
  record.loss = payload.metrics.loss;
  record.accuracy = payload.metrics.accuracy;
  record.first_loss = payload.metrics.first_loss;
  record.samples = payload.metrics.samples;
  record.wall_seconds = payload.wall_seconds;
  record.received_at = clock_();
  UBCP_ASSIGN_OR_RETURN(record.credits, UnitCredits(unit, job));
  UBCP_ASSIGN_OR_RETURN(RecordOutcome outcome, store_.RecordResult(record));
  if (outcome == RecordOutcome::kDuplicate) {
    return common::ResultAck{common::kProtocolVersion, "duplicate"};
  }
  // The result is stored (pending); judging it may wait for its replicas. A failure here is
  // repaired by Reconcile, which judges every pending result again.
  if (auto judged = judge_.Judge(unit.work_id); !judged) {
    spdlog::error("job {}: judging work {} after unit {} failed: {}", job.id, unit.work_id, unit.id,
                  judged.error().ToString());
  }
  if (auto advanced = Advance(job.id); !advanced) {
    spdlog::error("job {}: advancing after unit {} failed: {}", job.id, unit.id,
                  advanced.error().ToString());
  }
  return common::ResultAck{common::kProtocolVersion, "accepted"};
}

common::Result<bool> Coordinator::AbandonUnit(const HostRecord& host,
                                              const common::UnitAbandon& report) {
  UBCP_ASSIGN_OR_RETURN(bool released, store_.ReleaseLease(report.unit_id, host.id, report.attempt,
                                                           report.manifest_hash, clock_()));
  spdlog::info("host {} gave up unit {} (attempt {}): {}{}", host.id, report.unit_id,
               report.attempt, OneLine(report.reason),
               released ? "" : " (not its current lease: unchanged)");
  if (!released) return false;
  UBCP_ASSIGN_OR_RETURN(const int given_up, store_.CountGiveUps(report.unit_id));
  if (given_up >= kMaxUnitGiveUps) {
    UBCP_ASSIGN_OR_RETURN(const UnitRecord unit, store_.GetUnit(report.unit_id));
    const std::string error = "unit " + std::to_string(unit.id) + " was given up by " +
                              std::to_string(given_up) +
                              " hosts; the last said: " + OneLine(report.reason);
    std::lock_guard lock(advance_mu_);
    if (auto failed = store_.FailJob(unit.job_id, error, clock_());
        !failed && failed.error().code != Errc::kConflict) {  // kConflict: done meanwhile
      return failed.error();
    }
    spdlog::warn("job {} failed: {}", unit.job_id, error);
  }
  return true;
}

common::Result<std::int64_t> Coordinator::UnitCredits(const UnitRecord& unit,
                                                      const JobRecord& job) {
  UBCP_ASSIGN_OR_RETURN(common::ModelSpec model, common::ParseModelSpec(job.model_spec));
  if (unit.kind == common::kUnitFinetune) {
    UBCP_ASSIGN_OR_RETURN(common::JobSpec spec, common::ParseJobSpec(job.spec_json));
    return FinetuneUnitCredits(model, spec.params.local_steps, spec.params.batch_size);
  }
  UBCP_ASSIGN_OR_RETURN(std::vector<ShardRecord> shards, store_.ListShards(job.id));
  for (const ShardRecord& shard : shards) {
    if (shard.kind == ShardKind::kTest && shard.index == unit.shard_index) {
      return EvalUnitCredits(model, shard.samples);
    }
  }
  return MakeError(Errc::kInternal, "unit " + std::to_string(unit.id) + " has no test shard");
}

common::Status Coordinator::Advance(std::int64_t job_id) {
  std::lock_guard lock(advance_mu_);
  UBCP_ASSIGN_OR_RETURN(JobRecord job, store_.GetJob(job_id));
  if (job.state != "running") return {};
  UBCP_ASSIGN_OR_RETURN(common::JobSpec spec, common::ParseJobSpec(job.spec_json));
  UBCP_ASSIGN_OR_RETURN(std::vector<RoundSummary> rounds, store_.SummarizeRounds(job_id));
  const int r = job.current_round;
  if (r < 0 || r >= static_cast<int>(rounds.size())) {
    return MakeError(Errc::kInternal, "job has no current round");
  }
  const RoundSummary& current = rounds[static_cast<std::size_t>(r)];
  const std::int64_t now = clock_();

  if (r < job.rounds) {
    const int finetune_total = current.units_total - current.eval_total;
    const int finetune_done = current.units_done - current.eval_done;
    if (current.aggregated || finetune_done < finetune_total) return {};
    auto fail = [&](const common::Error& e) -> common::Status {
      spdlog::error("job {} round {}: aggregation failed: {}", job_id, r, e.ToString());
      UBCP_RETURN_IF_ERROR(store_.FailJob(job_id, "aggregation failed: " + e.message, now));
      return e;
    };
    UBCP_ASSIGN_OR_RETURN(RoundRecord round, store_.GetRound(job_id, r));
    UBCP_ASSIGN_OR_RETURN(std::vector<ResultRecord> results,
                          store_.ListResults(job_id, r, std::string(common::kUnitFinetune)));
    auto global = GetTensorBlob(blobs_, store_, round.model_blob);
    if (!global) return fail(global.error());
    common::TensorList momentum;
    if (!round.momentum_blob.empty()) {
      auto loaded = GetTensorBlob(blobs_, store_, round.momentum_blob);
      if (!loaded) return fail(loaded.error());
      momentum = std::move(*loaded);
    }
    std::vector<common::TensorList> deltas;
    deltas.reserve(results.size());
    for (const auto& res : results) {
      auto delta = GetTensorBlob(blobs_, store_, res.update_blob);
      if (!delta) return fail(delta.error());
      deltas.push_back(std::move(*delta));
    }
    // Each update weighs as much as the train shard the coordinator gave it: the samples a
    // donor reports are its own claim, and would let a cheater buy influence over the model.
    UBCP_ASSIGN_OR_RETURN(std::vector<ShardRecord> shards, store_.ListShards(job_id));
    std::map<int, std::int64_t> train_samples;
    for (const ShardRecord& shard : shards) {
      if (shard.kind == ShardKind::kTrain) train_samples[shard.index] = shard.samples;
    }
    std::vector<WeightedUpdate> updates;
    updates.reserve(results.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
      UBCP_ASSIGN_OR_RETURN(UnitRecord unit, store_.GetUnit(results[i].unit_id));
      auto samples = train_samples.find(unit.shard_index);
      if (samples == train_samples.end() || samples->second <= 0) {
        return fail(
            MakeError(Errc::kInternal, "unit " + std::to_string(unit.id) + " has no train shard"));
      }
      updates.push_back({&deltas[i], static_cast<double>(samples->second)});
    }
    auto combine = CombineRuleFromName(spec.robust);
    if (!combine) return fail(combine.error());
    RobustRule robust;
    robust.combine = *combine;
    robust.norm_bound = spec.norm_bound;
    robust.trim_fraction = spec.trim_fraction;
    robust.krum_byzantine = spec.krum_byzantine;
    OuterOptimizer optimizer{spec.aggregator == "diloco" ? OuterRule::kDiLoCo : OuterRule::kFedAvg,
                             spec.outer_lr, spec.outer_momentum};
    auto out = Aggregate(*global, &momentum, updates, optimizer, robust);
    if (!out) return fail(out.error());
    if (out->dropped_non_finite > 0 || out->norm_clipped > 0) {
      spdlog::warn("job {} round {}: {} non-finite updates dropped, {} scaled down to {} x {:.4g}",
                   job_id, r, out->dropped_non_finite, out->norm_clipped, spec.norm_bound,
                   out->median_norm);
    }
    UBCP_ASSIGN_OR_RETURN(BlobRecord next,
                          PutTensorBlob(blobs_, store_, out->next_global,
                                        common::FloatEncoding::kFp32, "model", now));
    std::string momentum_id;
    if (!out->next_momentum.empty()) {
      UBCP_ASSIGN_OR_RETURN(BlobRecord m,
                            PutTensorBlob(blobs_, store_, out->next_momentum,
                                          common::FloatEncoding::kFp32, "state", now));
      momentum_id = m.id;
    }
    RoundAdvance advance{job_id, r, next.id, momentum_id, PlanRound(spec, r + 1), now};
    UBCP_ASSIGN_OR_RETURN(bool advanced, store_.AdvanceRound(advance));
    if (advanced) {
      spdlog::info("job {}: round {} aggregated from {} updates ({}), round {} starts", job_id, r,
                   results.size(), spec.aggregator, r + 1);
    }
    return {};
  }

  for (const auto& s : rounds) {
    if (s.units_done < s.units_total) return {};
  }
  std::optional<CatalogEntry> publish;
  if (!spec.publish_as.empty()) {
    publish = CatalogEntry{
        spec.publish_as,
        job.model_spec,
        current.model_blob,
        job_id,
        "trained by job " + std::to_string(job_id) + " (" + job.name + ") on " + spec.dataset,
        now};
  }
  auto finished = store_.FinishJob(job_id, current.model_blob, publish, now);
  if (!finished && finished.error().code == Errc::kConflict && publish) {
    spdlog::warn("job {}: catalog name '{}' taken; finishing without publishing", job_id,
                 spec.publish_as);
    finished = store_.FinishJob(job_id, current.model_blob, std::nullopt, now);
  }
  if (!finished) return finished.error();
  if (*finished) {
    spdlog::info("job {} done: final model {} (accuracy {:.4f})", job_id,
                 current.model_blob.substr(0, 12), current.eval_accuracy);
    // Its refund may let a queued job of the same recipient fit.
    if (auto admitted = economy_.AdmitQueued(); !admitted) {
      spdlog::error("allocation after job {}: {}", job_id, admitted.error().ToString());
    }
  }
  return {};
}

void Coordinator::Reconcile() {
  judge_.JudgePending();
  auto jobs = store_.ListRunningJobIds();
  if (!jobs) {
    spdlog::error("reconcile: {}", jobs.error().ToString());
    return;
  }
  for (std::int64_t id : *jobs) {
    if (auto s = Advance(id); !s) spdlog::error("reconcile job {}: {}", id, s.error().ToString());
  }
}

namespace {
constexpr std::int64_t kOnlineWindowS = 600;
// Donors' recent average: validated credits decay with a 7-day half-life (like BOINC's RAC).
constexpr double kContributionHalfLifeS = 7.0 * 86400;

double PerDay(double decayed_credits) {
  return decayed_credits * std::log(2.0) / (kContributionHalfLifeS / 86400.0);
}

common::JobSummary Summarize(const JobRecord& j) {
  return {j.id, j.name, j.state, j.rounds, j.current_round, j.price_credits};
}
}  // namespace

common::Result<common::JobQuote> Coordinator::Quote(const AccountRecord& account,
                                                    const NewJob& planned,
                                                    const common::JobSpec& spec) {
  UBCP_ASSIGN_OR_RETURN(common::ModelSpec model, common::ParseModelSpec(planned.model_spec));
  std::vector<std::int64_t> eval_samples;
  for (const ShardRecord& shard : planned.shards) {
    if (shard.kind == ShardKind::kTest) eval_samples.push_back(shard.samples);
  }
  // The planned replicas are priced in (what adaptive replication saves is refunded at the end).
  std::int64_t extra_train = 0;
  for (int r = 0; r < spec.rounds; ++r) {
    for (const UnitPlan& u : PlanRound(spec, r)) {
      if (u.kind == common::kUnitFinetune) extra_train += u.quorum - 1;
    }
  }
  UBCP_ASSIGN_OR_RETURN(JobPrice price, PriceJob(model, spec, eval_samples, extra_train,
                                                 config_.replication.eval_quorum));
  UBCP_ASSIGN_OR_RETURN(std::int64_t balance, store_.Balance(RecipientAccount(account.id)));
  common::JobQuote quote;
  quote.price_credits = price.credits;
  quote.flop = CreditsToFlop(price.credits);
  quote.pflops_days = quote.flop / kFlopPerPflopsDay;
  quote.train_units = price.train_units;
  quote.eval_units = price.eval_units;
  quote.replication = price.replication;
  quote.balance_credits = std::max<std::int64_t>(balance, 0);
  quote.affordable = balance >= price.credits;
  return quote;
}

common::Result<common::JobQuote> Coordinator::QuoteJob(const AccountRecord& account,
                                                       std::string_view spec_json) {
  UBCP_ASSIGN_OR_RETURN(common::JobSpec spec, common::ParseJobSpec(spec_json));
  UBCP_ASSIGN_OR_RETURN(NewJob planned,
                        planner_.PlanJob(spec, account.id, clock_(), PlanMode::kDryRun));
  return Quote(account, planned, spec);
}

common::Result<common::JobCreated> Coordinator::SubmitJob(const AccountRecord& account,
                                                          std::string_view spec_json) {
  UBCP_ASSIGN_OR_RETURN(common::JobSpec spec, common::ParseJobSpec(spec_json));
  if (!spec.publish_as.empty() && store_.GetCatalogModel(spec.publish_as)) {
    return MakeError(Errc::kConflict, "catalog name '" + spec.publish_as + "' is taken");
  }
  const std::int64_t now = clock_();
  // Priced once the planner has sized it, before any blob is written: a job the credits cannot
  // cover writes nothing at all.
  common::JobQuote quote;
  auto price_check = [&](const NewJob& sized) -> common::Status {
    UBCP_ASSIGN_OR_RETURN(quote, Quote(account, sized, spec));
    if (!quote.affordable) {
      return MakeError(Errc::kInsufficientCredits,
                       "the job costs " + DescribeCredits(quote.price_credits) +
                           "; available: " + DescribeCredits(quote.balance_credits));
    }
    return {};
  };
  UBCP_ASSIGN_OR_RETURN(NewJob job,
                        planner_.PlanJob(spec, account.id, now, PlanMode::kStore, price_check));
  job.round0_units = PlanRound(spec, 0);
  job.price_credits = quote.price_credits;
  UBCP_ASSIGN_OR_RETURN(std::int64_t job_id, store_.CreateJob(job));
  spdlog::info("job {} '{}' from account {}: {} on {}, {} rounds x {} units, price {}", job_id,
               spec.name, account.id, job.model_spec, spec.dataset, spec.rounds,
               spec.units_per_round, DescribeCredits(job.price_credits));
  // Queued; admitted now if the period's budget and the recipient's credits allow, otherwise
  // at a later allocation pass.
  if (auto admitted = economy_.AdmitQueued(); !admitted) {
    spdlog::error("allocation after job {}: {}", job_id, admitted.error().ToString());
  }
  return common::JobCreated{common::kProtocolVersion, job_id};
}

common::Result<common::JobList> Coordinator::ListJobs(const AccountRecord& account) {
  UBCP_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_.ListJobs(account.id));
  common::JobList list;
  for (const JobRecord& j : jobs) list.jobs.push_back(Summarize(j));
  return list;
}

common::Result<common::JobStatus> Coordinator::CancelJob(const AccountRecord& account,
                                                         std::int64_t job_id) {
  UBCP_ASSIGN_OR_RETURN(JobRecord job, OwnedJob(account, job_id));
  UBCP_ASSIGN_OR_RETURN(bool cancelled, store_.CancelJob(job.id, clock_()));
  if (cancelled) spdlog::info("job {} cancelled by account {}", job.id, account.id);
  return GetJobStatus(account, job_id);
}

common::Result<common::CreditsStatus> Coordinator::Credits(const AccountRecord& account) {
  common::CreditsStatus c;
  c.account = account.name;
  UBCP_ASSIGN_OR_RETURN(c.balance_credits, store_.Balance(RecipientAccount(account.id)));
  UBCP_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_.ListJobs(account.id));
  for (const JobRecord& j : jobs) {
    UBCP_ASSIGN_OR_RETURN(std::int64_t held, store_.Balance(JobAccount(j.id)));
    c.reserved_credits += held;
  }
  UBCP_ASSIGN_OR_RETURN(c.spent_credits, store_.SpentByAccount(account.id));
  return c;
}

common::Status Coordinator::SetProfile(const HostRecord& host,
                                       const common::DonorProfile& profile) {
  return store_.SetHostProfile(host.id, profile.public_name, profile.team);
}

common::Result<common::Contribution> Coordinator::Contribution(const HostRecord& host) {
  UBCP_ASSIGN_OR_RETURN(PeriodRecord open, economy_.OpenPeriod());
  UBCP_ASSIGN_OR_RETURN(std::vector<HostContribution> all,
                        store_.HostContributions(clock_(), kContributionHalfLifeS, open.starts_at,
                                                 /*only_public=*/false));
  for (const HostContribution& c : all) {
    if (c.host_id != host.id) continue;
    return common::Contribution{
        c.host_id, c.name, c.team, c.credits, c.units, c.period_credits, PerDay(c.recent_credits)};
  }
  return MakeError(Errc::kNotFound, "no host " + std::to_string(host.id));
}

common::Result<common::Leaderboard> Coordinator::Leaderboard() {
  UBCP_ASSIGN_OR_RETURN(PeriodRecord open, economy_.OpenPeriod());
  UBCP_ASSIGN_OR_RETURN(std::vector<HostContribution> listed,
                        store_.HostContributions(clock_(), kContributionHalfLifeS, open.starts_at,
                                                 /*only_public=*/true));
  common::Leaderboard board;
  std::map<std::string, common::TeamStanding> teams;
  for (const HostContribution& c : listed) {
    if (board.donors.size() < common::kMaxLeaderboardRows) {
      board.donors.push_back({c.host_id, c.public_name, c.team, c.credits, c.units,
                              c.period_credits, PerDay(c.recent_credits)});
    }
    if (c.team.empty()) continue;
    common::TeamStanding& t = teams[c.team];
    t.team = c.team;
    t.donors += 1;
    t.points_credits += c.credits;
    t.recent_credits_per_day += PerDay(c.recent_credits);
  }
  for (auto& [name, t] : teams) board.teams.push_back(t);
  std::sort(board.teams.begin(), board.teams.end(), [](const auto& a, const auto& b) {
    return a.points_credits != b.points_credits ? a.points_credits > b.points_credits
                                                : a.team < b.team;
  });
  if (board.teams.size() > common::kMaxLeaderboardRows) {
    board.teams.resize(common::kMaxLeaderboardRows);
  }
  return board;
}

common::Result<common::CapacityReport> Coordinator::Capacity(const AccountRecord& admin) {
  if (admin.role != Role::kAdmin) return MakeError(Errc::kForbidden, "admins only");
  UBCP_ASSIGN_OR_RETURN(PeriodRecord open, economy_.OpenPeriod());
  const std::int64_t now = clock_();
  common::CapacityReport report;
  report.now = now;
  UBCP_ASSIGN_OR_RETURN(report.hosts_registered, store_.CountHosts());
  UBCP_ASSIGN_OR_RETURN(report.hosts_online, store_.CountHostsSeenSince(now - kOnlineWindowS));
  UBCP_ASSIGN_OR_RETURN(const GpuCounts gpus, store_.CountGpusSeenSince(now - kOnlineWindowS));
  report.gpus = common::GpuCapacity{gpus.cuda_hosts, gpus.cuda_devices, gpus.unusable_hosts,
                                    gpus.unusable_gpus};
  UBCP_ASSIGN_OR_RETURN(report.validated_total_credits, store_.ValidatedCreditsBetween(0, now + 1));
  UBCP_ASSIGN_OR_RETURN(std::vector<JobRecord> queued, store_.ListQueuedJobs());
  report.queue_length = static_cast<std::int64_t>(queued.size());
  auto summarize = [&](const PeriodRecord& p) -> common::Result<common::PeriodSummary> {
    common::PeriodSummary s;
    s.id = p.id;
    s.starts_at = p.starts_at;
    s.ends_at = p.ends_at;
    s.forecast_credits = p.forecast_credits;
    s.reserve_credits = p.reserve_credits;
    s.budget_credits = p.budget_credits;
    s.share_credits = p.share_credits;
    s.recipients = p.recipients;
    s.admitted_credits = p.admitted_credits;
    s.closed = p.closed;
    if (p.closed) {
      s.validated_credits = p.validated_credits;
    } else {
      UBCP_ASSIGN_OR_RETURN(s.validated_credits,
                            store_.ValidatedCreditsBetween(p.starts_at, now + 1));
    }
    UBCP_ASSIGN_OR_RETURN(LedgerTotals totals,
                          store_.TotalsBetween(p.starts_at, p.closed ? p.ends_at : now + 1));
    s.issued_credits = totals.issued + totals.granted;
    s.spent_credits = totals.spent;
    s.expired_credits = totals.expired;
    return s;
  };
  UBCP_ASSIGN_OR_RETURN(report.period, summarize(open));
  UBCP_ASSIGN_OR_RETURN(std::vector<JobRecord> admitted, store_.ListJobsAdmittedIn(open.id));
  for (const JobRecord& j : admitted) report.admitted.push_back(Summarize(j));
  UBCP_ASSIGN_OR_RETURN(std::vector<PeriodRecord> recent, store_.RecentPeriods(13));
  for (const PeriodRecord& p : recent) {
    if (!p.closed || report.history.size() >= 12) continue;
    UBCP_ASSIGN_OR_RETURN(common::PeriodSummary s, summarize(p));
    report.history.push_back(s);
  }
  return report;
}

common::Result<common::CreditsStatus> Coordinator::Grant(const AccountRecord& admin,
                                                         const common::GrantRequest& request) {
  if (admin.role != Role::kAdmin) return MakeError(Errc::kForbidden, "admins only");
  UBCP_ASSIGN_OR_RETURN(AccountRecord to, store_.FindAccountByName(request.account));
  LedgerTxn grant =
      Transfer("grant:" + request.key, LedgerKind::kGrant, std::string(kIssuanceAccount),
               RecipientAccount(to.id), request.credits, clock_());
  grant.memo = "by " + admin.name + (request.memo.empty() ? "" : ": " + request.memo);
  UBCP_ASSIGN_OR_RETURN(bool posted, store_.PostLedger(grant));
  if (posted) {
    spdlog::info("grant {}: {} credits to '{}' by '{}'", request.key, request.credits, to.name,
                 admin.name);
  }
  return Credits(to);
}

common::Result<JobRecord> Coordinator::OwnedJob(const AccountRecord& account, std::int64_t job_id) {
  auto job = store_.GetJob(job_id);
  // Someone else's job answers exactly like a missing one: ids reveal nothing.
  if (!job || (job->account_id != account.id && account.role != Role::kAdmin)) {
    return MakeError(Errc::kNotFound, "no job " + std::to_string(job_id));
  }
  return job;
}

common::Result<common::JobStatus> Coordinator::GetJobStatus(const AccountRecord& account,
                                                            std::int64_t job_id) {
  UBCP_ASSIGN_OR_RETURN(JobRecord job, OwnedJob(account, job_id));
  UBCP_ASSIGN_OR_RETURN(std::vector<RoundSummary> rounds, store_.SummarizeRounds(job_id));
  common::JobStatus status;
  status.job_id = job.id;
  status.name = job.name;
  status.state = job.state;
  status.model_spec = job.model_spec;
  status.rounds = job.rounds;
  status.current_round = job.current_round;
  status.final_model = job.final_model;
  for (const auto& s : rounds) {
    common::RoundStatus rs;
    rs.round = s.round;
    rs.model_blob = s.model_blob;
    rs.units_done = s.units_done;
    rs.units_total = s.units_total;
    rs.evaluated = s.eval_total > 0 && s.eval_done == s.eval_total;
    rs.eval_loss = s.eval_loss;
    rs.eval_accuracy = s.eval_accuracy;
    rs.eval_samples = s.eval_samples;
    rs.train_loss = s.train_loss;
    status.history.push_back(std::move(rs));
  }
  UBCP_ASSIGN_OR_RETURN(status.hosts, store_.CountJobHosts(job_id));
  return status;
}

common::Result<std::pair<std::string, common::Bytes>> Coordinator::DownloadModel(
    const AccountRecord& account, std::int64_t job_id) {
  UBCP_ASSIGN_OR_RETURN(JobRecord job, OwnedJob(account, job_id));
  if (job.state != "done") return MakeError(Errc::kConflict, "job is not done");
  UBCP_ASSIGN_OR_RETURN(common::Bytes bytes,
                        blobs_.Get(job.final_model, config_.max_blob_download));
  return std::make_pair(job.model_spec, std::move(bytes));
}

common::Result<std::vector<CatalogEntry>> Coordinator::Catalog() { return store_.ListCatalog(); }

}  // namespace ubcp::coordinator
