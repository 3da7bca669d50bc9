// SPDX-License-Identifier: Apache-2.0
#pragma once
// Wire types of the /v1 protocol and their strict JSON codec (Boost.JSON behind the .cc).
// Every Parse* function: refuses input over its size limit before parsing (kTooLarge), requires
// every field, refuses unknown fields, wrong types, out-of-range numbers and over-long strings
// (kMalformed), and a protocol other than kProtocolVersion (kUnsupportedVersion). Never throws.
//
// Signed messages travel in a SignedEnvelope: the payload is the exact JSON text that was signed,
// carried as a string, so the receiver verifies the signature over those bytes *before* parsing
// the payload (see docs/PROTOCOL.md).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/crypto.h"
#include "ubcp/common/result.h"

namespace ubcp::common {

inline constexpr int kProtocolVersion = 1;

// Size limits of JSON bodies (bytes).
inline constexpr std::size_t kMaxEnvelopeJson = 64 * 1024;
inline constexpr std::size_t kMaxPayloadJson = 48 * 1024;
inline constexpr std::size_t kMaxRequestJson = 64 * 1024;
inline constexpr std::size_t kMaxStringField = 256;

// ---- signed envelope ----
struct SignedEnvelope {
  std::string payload;    // JSON text, signed as-is
  std::string signer;     // hex Ed25519 public key
  std::string signature;  // hex
};
std::string SerializeEnvelope(const SignedEnvelope& env);
Result<SignedEnvelope> ParseEnvelope(std::string_view json);
SignedEnvelope SignPayload(const SigningKey& key, std::string_view domain, std::string payload);
// Checks that the signer is `expected` and the signature covers the payload in `domain`.
// kBadSignature otherwise. Does not parse the payload.
Status VerifyEnvelope(const SignedEnvelope& env, std::string_view domain,
                      const PublicKey& expected);
// BLAKE2b-256 hex of the payload bytes: what a result binds to.
std::string PayloadHash(const SignedEnvelope& env);

// ---- blobs ----
struct BlobRef {
  std::string id;              // content id: BLAKE2b-256 hex of the stored (compressed) bytes
  std::uint64_t size = 0;      // stored bytes
  std::uint64_t raw_size = 0;  // bytes after decompression: the cap used when decompressing
};

// ---- host registration: POST /v1/hosts ----
struct ModelThroughputMsg {
  std::string model;
  double samples_per_s = 0;
};
// What the host's NVIDIA driver (NVML) reports, whether or not libtorch can use it, so that
// admins see GPUs that exist but do no work (client/include/ubcp/client/gpu_probe.h).
inline constexpr std::size_t kMaxGpuStatus = 256;
inline constexpr std::size_t kMaxGpuDriver = 64;
inline constexpr std::size_t kMaxGpuDevices = 16;
struct GpuDeviceMsg {
  std::string name;             // at most kMaxStringField bytes, e.g. "NVIDIA H200"
  std::uint64_t memory_mb = 0;  // total memory, MiB
};
struct GpuReport {
  // One line, at most kMaxGpuStatus bytes, e.g. "present, not usable: this libtorch has no CUDA:
  // ..."; "usable: ..." when libtorch sees CUDA devices; "none: ..." without NVIDIA GPUs.
  std::string status;
  std::string driver;                 // NVML's driver version, at most kMaxGpuDriver; may be empty
  std::vector<GpuDeviceMsg> devices;  // as NVML lists them, at most kMaxGpuDevices
};
struct HostBenchmark {
  double matmul_gflops = 0;
  std::vector<ModelThroughputMsg> train;  // at most 8
  int cpu_threads = 0;
  int cuda_devices = 0;
  std::vector<std::string> cuda_names;  // at most 16
  double cuda_matmul_gflops = 0;
  std::string torch_version;
  // Optional on the wire: absent or null is "not reported" (clients older than the field), and
  // nullopt is serialised by leaving the key out, so such a message is unchanged.
  std::optional<GpuReport> gpu;
};
// The benchmark object alone, exactly as inside a HostRegistration (no protocol field): the form
// in which the coordinator stores it with the host. ParseHostBenchmark applies the same checks
// as ParseHostRegistration does to its "benchmark" (limit kMaxPayloadJson).
std::string SerializeHostBenchmark(const HostBenchmark& b);
Result<HostBenchmark> ParseHostBenchmark(std::string_view json);
// `s` cut to at most `max_bytes` bytes without splitting a UTF-8 character, each invalid byte
// replaced by '?': for senders fitting text they did not write (driver messages, device names)
// into a bounded string field, since the parser refuses over-long strings and invalid UTF-8.
std::string FitUtf8(std::string_view s, std::size_t max_bytes);
struct HostCapabilities {
  int cpu_cores = 0;
  std::uint64_t memory_mb = 0;
  bool cuda = false;
  std::string client_version;
};
// Signed by the host key (domain "register") as proof of possession; issued_at must be recent.
struct HostRegistration {
  int protocol = kProtocolVersion;
  std::string public_key;      // hex; must equal the envelope signer
  std::string name;            // donor-chosen label, may be empty
  std::int64_t issued_at = 0;  // unix seconds
  HostBenchmark benchmark;
  HostCapabilities capabilities;
};
std::string SerializeHostRegistration(const HostRegistration& r);
Result<HostRegistration> ParseHostRegistration(std::string_view json);

struct HostRegistered {
  int protocol = kProtocolVersion;
  std::int64_t host_id = 0;
  std::string token;  // bearer token for later requests (shown once)
};
std::string SerializeHostRegistered(const HostRegistered& r);
Result<HostRegistered> ParseHostRegistered(std::string_view json);

// ---- work: POST /v1/work ----
struct WorkRequest {
  int protocol = kProtocolVersion;
  std::vector<std::string>
      kinds;  // unit kinds the host accepts, e.g. {"finetune_shard","eval_batch"}
};
std::string SerializeWorkRequest(const WorkRequest& r);
Result<WorkRequest> ParseWorkRequest(std::string_view json);

inline constexpr std::string_view kUnitFinetune = "finetune_shard";
inline constexpr std::string_view kUnitEval = "eval_batch";

struct UnitParams {
  int local_steps = 0;
  int batch_size = 0;
  double lr = 0;
  double momentum = 0;
  double weight_decay = 0;
  std::string optimizer;  // "sgd" | "adam"
  std::uint64_t seed = 0;
};

// Signed by the coordinator's online key (domain "manifest").
struct Manifest {
  int protocol = kProtocolVersion;
  std::int64_t unit_id = 0;
  std::int64_t job_id = 0;
  int round = 0;
  int attempt = 0;           // increases each time the unit is issued again
  std::int64_t host_id = 0;  // the only host this manifest is for
  std::string kind;          // kUnitFinetune | kUnitEval
  std::string model_spec;
  BlobRef model;
  BlobRef data;
  UnitParams params;            // finetune only (zeros for eval)
  std::string update_encoding;  // "fp32" | "int8" (finetune)
  std::int64_t issued_at = 0;
  std::int64_t deadline = 0;
};
std::string SerializeManifest(const Manifest& m);
Result<Manifest> ParseManifest(std::string_view json);

// ---- results: POST /v1/results ----
struct ResultMetrics {
  double loss = 0;        // eval: mean loss; finetune: last batch loss
  double accuracy = 0;    // eval only
  double first_loss = 0;  // finetune only
  std::int64_t samples = 0;
};
// Signed by the host key (domain "result"); binds the manifest by its payload hash.
struct ResultPayload {
  int protocol = kProtocolVersion;
  std::int64_t unit_id = 0;
  std::int64_t host_id = 0;
  int attempt = 0;
  std::string manifest_hash;  // PayloadHash of the manifest envelope
  std::string kind;
  std::optional<BlobRef> update;  // finetune: the encoded delta, uploaded first
  ResultMetrics metrics;
  double wall_seconds = 0;
};
std::string SerializeResultPayload(const ResultPayload& r);
Result<ResultPayload> ParseResultPayload(std::string_view json);

struct ResultAck {
  int protocol = kProtocolVersion;
  std::string status;  // "accepted" | "duplicate"
};
std::string SerializeResultAck(const ResultAck& a);
Result<ResultAck> ParseResultAck(std::string_view json);

// ---- giving a unit up: POST /v1/units/{id}/abandon ----
// A host that gives up a unit it cannot complete (execution failed, over the donor's memory
// limit, inputs unobtainable) says so at once, so that the coordinator re-issues the unit
// without waiting for its lease deadline. Best effort: the deadline remains the fallback. Not
// signed: it can only end the sender's own lease, which its bearer token already proves, and
// (unit, attempt, manifest hash) must name that lease exactly.
// Its body is bounded like every request's (kMaxRequestJson); the reason takes at most six
// times kMaxAbandonReason bytes of it, once escaped.
inline constexpr std::size_t kMaxAbandonReason = 1000;
struct UnitAbandon {
  int protocol = kProtocolVersion;
  std::int64_t unit_id = 0;
  int attempt = 0;
  std::string manifest_hash;  // PayloadHash of the manifest envelope
  // Why, for the coordinator's log: at most kMaxAbandonReason bytes of valid UTF-8 (a sender
  // cuts its own text with FitUtf8; the parser refuses anything longer).
  std::string reason;
};
std::string SerializeUnitAbandon(const UnitAbandon& a);
Result<UnitAbandon> ParseUnitAbandon(std::string_view json);

// The answer: whether that lease was released now (false: it was not, or no longer, the
// sender's current lease, e.g. a repeated report, a stale attempt, a unit done or re-issued).
struct UnitAbandonAck {
  int protocol = kProtocolVersion;
  bool released = false;
};
std::string SerializeUnitAbandonAck(const UnitAbandonAck& a);
Result<UnitAbandonAck> ParseUnitAbandonAck(std::string_view json);

// ---- jobs: POST /v1/jobs, GET /v1/jobs/{id} ----
struct JobSpec {
  int protocol = kProtocolVersion;
  std::string name;
  std::string model;        // "catalog:<name>" or "zoo:<spec>"
  std::string dataset;      // a KnownDatasets() name
  int rounds = 1;           // 1..1000
  int units_per_round = 2;  // 1..1024 (disjoint shards)
  int eval_units = 1;       // 1..64 held-out batches per evaluated model
  UnitParams params;        // seed = job seed
  std::string aggregator;   // "fedavg" | "diloco"
  double outer_lr = 1.0;
  double outer_momentum = 0.0;  // diloco Nesterov momentum
  // How the round's updates are combined before the outer step (docs/SECURITY.md):
  // "mean" | "median" | "trimmed_mean" | "multi_krum" | "centered_clip".
  std::string robust = "centered_clip";
  double trim_fraction = 0.2;   // trimmed_mean: dropped at each end per coordinate, [0, 0.45]
  int krum_byzantine = 1;       // multi_krum: Byzantine updates tolerated, 0..64
  double norm_bound = 3.0;      // every rule: update norms capped at this x the median, [1, 1000]
  std::string update_encoding;  // "fp32" | "int8"
  double test_fraction = 0.2;   // held out, never trained on (ignored when the set has its own)
  std::int64_t max_train_samples = 0;  // 0 = all
  std::int64_t max_test_samples = 0;   // 0 = all
  int deadline_s = 600;                // per unit lease
  std::string publish_as;              // catalog name for the final model, may be empty
};
std::string SerializeJobSpec(const JobSpec& s);
Result<JobSpec> ParseJobSpec(std::string_view json);

struct JobCreated {
  int protocol = kProtocolVersion;
  std::int64_t job_id = 0;
};
std::string SerializeJobCreated(const JobCreated& c);
Result<JobCreated> ParseJobCreated(std::string_view json);

// POST /v1/jobs/quote (a JobSpec): what the job would cost, before anything is stored.
// Credits are whole MFLOP (10^6 FLOP); `flop` and `pflops_days` say the same for people.
struct JobQuote {
  int protocol = kProtocolVersion;
  std::int64_t price_credits = 0;
  double flop = 0;
  double pflops_days = 0;
  std::int64_t train_units = 0;
  std::int64_t eval_units = 0;
  int replication = 1;
  std::int64_t balance_credits = 0;  // the recipient's available credits now
  bool affordable = false;
};
std::string SerializeJobQuote(const JobQuote& q);
Result<JobQuote> ParseJobQuote(std::string_view json);

// GET /v1/credits (own account); POST /v1/admin/grants answers the same for the grantee.
struct CreditsStatus {
  int protocol = kProtocolVersion;
  std::string account;
  std::int64_t balance_credits = 0;   // available to new jobs
  std::int64_t reserved_credits = 0;  // held for the account's running jobs
  std::int64_t spent_credits = 0;     // spent on accepted units of the account's jobs
};
std::string SerializeCreditsStatus(const CreditsStatus& c);
Result<CreditsStatus> ParseCreditsStatus(std::string_view json);

// POST /v1/admin/grants (admin token). `key` makes the grant idempotent: the same key again
// changes nothing.
struct GrantRequest {
  int protocol = kProtocolVersion;
  std::string account;       // account name
  std::int64_t credits = 0;  // 1..10^15
  std::string key;           // 1..64 characters [A-Za-z0-9._:-]
  std::string memo;
};
std::string SerializeGrantRequest(const GrantRequest& g);
Result<GrantRequest> ParseGrantRequest(std::string_view json);

// GET /v1/jobs: the caller's jobs, newest last.
struct JobSummary {
  std::int64_t job_id = 0;
  std::string name;
  std::string state;
  int rounds = 0;
  int current_round = 0;
  std::int64_t price_credits = 0;
};
struct JobList {
  int protocol = kProtocolVersion;
  std::vector<JobSummary> jobs;
};
inline constexpr std::size_t kMaxListedJobs = 10000;
std::string SerializeJobList(const JobList& l);
Result<JobList> ParseJobList(std::string_view json);

// GET /v1/admin/capacity (admin token): what capacity exists and how it is shared out.
struct PeriodSummary {
  std::int64_t id = 0;
  std::int64_t starts_at = 0, ends_at = 0;
  std::int64_t forecast_credits = 0, reserve_credits = 0, budget_credits = 0;
  std::int64_t share_credits = 0, recipients = 0;
  std::int64_t admitted_credits = 0;   // prices of the jobs admitted in the period
  std::int64_t validated_credits = 0;  // work accepted in the period (so far, if open)
  std::int64_t issued_credits = 0;     // basic shares and grants
  std::int64_t spent_credits = 0;
  std::int64_t expired_credits = 0;
  bool closed = false;
};
// The GPUs of the hosts online, from what each reported at registration (HostBenchmark).
struct GpuCapacity {
  std::int64_t cuda_hosts = 0;    // hosts whose libtorch sees CUDA devices
  std::int64_t cuda_devices = 0;  // the devices those hosts' libtorch sees
  // Hosts whose NVIDIA GPUs (as NVML lists them) their libtorch cannot use (a CPU-only build,
  // an old driver), and how many such GPUs: capacity a donor could unlock.
  std::int64_t unusable_hosts = 0;
  std::int64_t unusable_gpus = 0;
};
struct CapacityReport {
  int protocol = kProtocolVersion;
  std::int64_t now = 0;
  std::int64_t hosts_registered = 0;
  std::int64_t hosts_online = 0;  // seen in the last 10 minutes
  // Of the hosts online. Optional on the wire: absent from older coordinators' reports.
  std::optional<GpuCapacity> gpus;
  std::int64_t validated_total_credits = 0;
  std::int64_t queue_length = 0;       // jobs waiting for the allocator
  PeriodSummary period;                // the open period
  std::vector<JobSummary> admitted;    // the open period's allocation
  std::vector<PeriodSummary> history;  // closed periods, newest first (at most 12)
};
std::string SerializeCapacityReport(const CapacityReport& r);
Result<CapacityReport> ParseCapacityReport(std::string_view json);

// PUT /v1/hosts/me/profile (host token): opting in to the public leaderboard. Empty
// public_name: not listed. Names: at most 64 characters, printable.
struct DonorProfile {
  int protocol = kProtocolVersion;
  std::string public_name;
  std::string team;
};
std::string SerializeDonorProfile(const DonorProfile& p);
Result<DonorProfile> ParseDonorProfile(std::string_view json);

// A donor's validated contribution, in credits (10^6 FLOP). `recent_credits_per_day` is the
// recent average: validated credits weighted 2^(-age / 7 days), times ln 2 / 7 days, so a donor
// validating the same every day converges to exactly that daily figure.
struct Contribution {
  std::int64_t host_id = 0;
  std::string name;  // the public name on the leaderboard; the host's own label for itself
  std::string team;
  std::int64_t points_credits = 0;  // all validated work
  std::int64_t units = 0;
  std::int64_t period_credits = 0;  // validated in the open period
  double recent_credits_per_day = 0;
};
// GET /v1/hosts/me/contribution (host token) answers one Contribution as an object.
std::string SerializeContribution(const Contribution& c);
Result<Contribution> ParseContribution(std::string_view json);

// GET /v1/leaderboard (public): donors who opted in, and teams, by points.
struct TeamStanding {
  std::string team;
  std::int64_t donors = 0;
  std::int64_t points_credits = 0;
  double recent_credits_per_day = 0;
};
struct Leaderboard {
  int protocol = kProtocolVersion;
  std::vector<Contribution> donors;
  std::vector<TeamStanding> teams;
};
inline constexpr std::size_t kMaxLeaderboardRows = 1000;
std::string SerializeLeaderboard(const Leaderboard& l);
Result<Leaderboard> ParseLeaderboard(std::string_view json);

// GET /v1/catalog: the models recipients can fine-tune (`"model": "catalog:<name>"`).
struct CatalogModel {
  std::string name;
  std::string model_spec;
  std::string blob;  // content id of the weights
  std::int64_t source_job = 0;
  std::string description;
  std::int64_t created_at = 0;  // unix seconds
};
struct Catalog {
  int protocol = kProtocolVersion;
  std::vector<CatalogModel> models;
};
inline constexpr std::size_t kMaxCatalogModels = 1000;
std::string SerializeCatalog(const Catalog& c);
Result<Catalog> ParseCatalog(std::string_view json);

struct RoundStatus {
  int round = 0;
  std::string model_blob;  // the global model evaluated in this round
  int units_done = 0;
  int units_total = 0;
  bool evaluated = false;
  double eval_loss = 0;
  double eval_accuracy = 0;
  std::int64_t eval_samples = 0;
  double train_loss = 0;  // mean last loss of the round's finetune units
};
struct JobStatus {
  int protocol = kProtocolVersion;
  std::int64_t job_id = 0;
  std::string name;
  std::string state;  // "queued" | "running" | "done" | "failed"
  std::string model_spec;
  int rounds = 0;
  int current_round = 0;
  std::vector<RoundStatus> history;
  std::string final_model;  // blob id when done
  std::int64_t hosts = 0;   // distinct hosts that returned accepted results
};
std::string SerializeJobStatus(const JobStatus& s);
Result<JobStatus> ParseJobStatus(std::string_view json);

// Error body of every 4xx/5xx answer: {"error": "<code name>", "message": "..."}.
std::string SerializeError(const Error& e);
Result<Error> ParseErrorBody(std::string_view json);

}  // namespace ubcp::common
