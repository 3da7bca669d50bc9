// SPDX-License-Identifier: Apache-2.0
// The donor client's execution efficiency (issue #5): how many training samples per second a
// fine-tune unit gets through the daemon's executor, against a bare libtorch training loop on the
// same model, data, batch size, step count and thread count, measured in the same run.
//
// For each model (by default the two zoo models the client's benchmark covers):
//   bare        a plain libtorch loop written here (torch::nn Linear/ReLU, Conv2d/MaxPool2d for
//               the CNN, SGD with momentum, index_select batches from a random permutation) over
//               the unit's shard, already converted to float: the time of the loop only.
//   worker      the same fine-tune as a real unit (signed manifest saved by UnitJournal::Begin,
//               blobs as files) run by MakeWorkerExecutor: a real `ubcp-worker serve` process
//               at nice 19 with checkpoints every --checkpoint-seconds (and/or --checkpoint-every
//               steps). The wall time around Execute() counts everything the donor pays: the
//               request, blob hash checks and decoding, checkpoints, encoding and saving the
//               output, and for the first unit of each model the worker's start (process,
//               libtorch, a cold allocator), as for a donor's first unit after an idle spell:
//               the executor keeps its worker between units, as the daemon's does while it has
//               work (it lets it go when no unit follows).
//   worker, no checkpoints / in-process (InProcessExecutor, checkpoints on): where time goes.
// The bare loop and the worker with checkpoints run --repetitions times, the other two
// --detail-repetitions times, interleaved (the bare loop is warmed up once first); the median
// counts, and the worker's first (cold) unit is shown apart. Without --steps, a unit is sized to
// about --unit-seconds of the bare loop's training, from the speed of its warm-up. Efficiency =
// variant samples/s / bare samples/s; the headline efficiency is the worker's (checkpoints on), the
// lowest over the models. cpu_s and cpu_eff: the same in CPU seconds (this process's, plus the
// worker's from /proc/<pid>/stat), which other work on a busy machine disturbs far less than wall
// time. Everything runs at the worker's niceness (--nice, default the daemon's 19): this process
// renices itself, so that on a busy machine the variants compete for the CPU alike. The load
// average before and after is printed: figures from a busy machine mean little.
// This process takes the worker's allocator settings (ConfigureAllocatorForTraining), so that
// the baseline is not slowed by glibc's dynamic malloc thresholds where the worker is not.
//
// The client's runtime prediction: `ubcp-worker benchmark` (RunWorkerBenchmark, as at
// registration) gives training samples/s per zoo model; a unit's predicted runtime is its
// samples / that figure, against the worker's measured wall time; prediction_error_pct is the
// mean of |predicted - measured| / measured x 100 over every worker run of a benchmarked model.
//
// The idle daemon: a real `ubcp-coordinator serve` on loopback with no jobs and a real
// `ubcp-client` registered with it and polling every second; its resident memory (VmRSS, the
// maximum over --idle-seconds), the CPU time it used meanwhile and whether libtorch is mapped
// into it (/proc/<pid>/maps). Both processes are stopped (SIGTERM, then SIGKILL) at the end.
//
// Ends with `client: efficiency=<r> prediction_error_pct=<e> idle_rss_mb=<m>`. Figures only:
// it fails (exit 1) only when something cannot run. Run by scripts/bench.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/replica_unit.h"
#include "support/temp_dir.h"
#include "ubcp/client/benchmark.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/unit_executor.h"
#include "ubcp/client/unit_journal.h"
#include "ubcp/client/worker_executor.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/datasets.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

extern char** environ;

namespace {
namespace fs = std::filesystem;
namespace common = ubcp::common;
namespace client = ubcp::client;
using Clock = std::chrono::steady_clock;

struct Options {
  // One: on a machine shared with other work, several torch threads wait for each other's
  // descheduled peers and the figures become noise. The daemon uses all cores by default.
  int threads = 1;
  std::vector<std::string> models = {"mlp-i784-h128-o10", "cnn28-c16-c32-h64-o10"};
  std::string dataset = "fashion-mnist";
  std::string cache_dir;
  std::int64_t rows = 12000;
  int batch = 32;  // as the client's benchmark and the demo's jobs
  double lr = 0.05;
  double momentum = 0.9;
  int steps = 0;  // 0: sized from the bare loop's warm-up to last about unit_seconds
  double unit_seconds = 30.0;
  int repetitions = 3;              // of the bare loop and the worker with checkpoints
  int detail_repetitions = 1;       // of the worker without checkpoints and the in-process executor
  int nice = 19;                    // of the worker, and of this process (see main)
  int checkpoint_every = 0;         // steps between checkpoints (0: by time only)
  double checkpoint_seconds = 5.0;  // seconds between checkpoints (the daemon's default: 30)
  double bench_seconds = 1.0;       // the daemon's default --bench-seconds
  double idle_seconds = 10.0;
};

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU seconds (user + system) used by this process.
double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds (user + system, all threads) a running process has used: fields 14 and 15 of
// /proc/<pid>/stat, after the parenthesised command name. 0 when it cannot be read.
double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::strtod(field.c_str(), nullptr);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A worker's CPU seconds since the last unit it ran (all of them for a worker not seen before).
double WorkerCpuSecondsSinceLast(int pid) {
  static std::map<int, double> seen;
  const double now = ProcessCpuSeconds(pid);
  const double used = now - seen[pid];
  seen[pid] = now;
  return used;
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- The bare libtorch loop -------------------------------------------------------------------

torch::nn::Sequential BareNet(const common::ModelSpec& spec) {
  namespace nn = torch::nn;
  nn::Sequential net;
  if (spec.arch == common::ModelSpec::Arch::kCnn28) {
    net->push_back(nn::Conv2d(nn::Conv2dOptions(1, spec.c1, 3).padding(1)));
    net->push_back(nn::ReLU());
    net->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    net->push_back(nn::Conv2d(nn::Conv2dOptions(spec.c1, spec.c2, 3).padding(1)));
    net->push_back(nn::ReLU());
    net->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    net->push_back(nn::Flatten());
    net->push_back(nn::Linear(std::int64_t{spec.c2} * 7 * 7, spec.hidden));
  } else {
    net->push_back(nn::Linear(spec.input, spec.hidden));
  }
  net->push_back(nn::ReLU());
  net->push_back(nn::Linear(spec.hidden, spec.classes));
  return net;
}

// The shard as a bare program would hold it: float inputs in [0, 1] shaped for the model, long
// labels.
struct BareData {
  torch::Tensor x, y;
};

BareData ToBare(const common::ModelSpec& spec, const common::TensorList& shard) {
  const common::NamedTensor& x = *common::FindTensor(shard, "x");
  const common::NamedTensor& y = *common::FindTensor(shard, "y");
  const auto u8 = [](const common::NamedTensor& t) {
    return torch::from_blob(const_cast<std::uint8_t*>(t.u8.data()), t.shape, torch::kUInt8);
  };
  BareData d;
  d.x = u8(x).to(torch::kFloat).div_(255.0f);
  if (spec.arch == common::ModelSpec::Arch::kMlp) d.x = d.x.reshape({x.shape[0], -1});
  d.y = u8(y).to(torch::kLong);
  return d;
}

struct BareRun {
  int steps = 0;
  double seconds = 0;
  double cpu_seconds = 0;
};

// `steps` SGD steps of a freshly built model (construction included), or fewer when
// `max_seconds` (> 0) runs out first: the steps done and their seconds.
common::Result<BareRun> BareLoop(const common::ModelSpec& spec, const BareData& data,
                                 const Options& o, int steps, std::uint64_t seed,
                                 double max_seconds = 0) {
  torch::manual_seed(seed);
  const std::int64_t rows = data.y.size(0);
  const double cpu_start = CpuSeconds();
  const Clock::time_point start = Clock::now();
  torch::nn::Sequential net = BareNet(spec);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(o.lr).momentum(o.momentum));
  torch::Tensor perm = torch::randperm(rows, torch::kLong);
  std::int64_t pos = 0;
  torch::Tensor loss;
  int step = 0;
  for (; step < steps && (max_seconds <= 0 || SecondsSince(start) < max_seconds); ++step) {
    if (pos + o.batch > rows) {
      perm = torch::randperm(rows, torch::kLong);
      pos = 0;
    }
    torch::Tensor idx = perm.narrow(0, pos, o.batch);
    pos += o.batch;
    opt.zero_grad();
    loss = torch::nn::functional::cross_entropy(net->forward(data.x.index_select(0, idx)),
                                                data.y.index_select(0, idx));
    loss.backward();
    opt.step();
  }
  const double last = loss.item<double>();
  const double seconds = SecondsSince(start);
  const double cpu_seconds = CpuSeconds() - cpu_start;
  if (!std::isfinite(last)) {
    return common::MakeError(common::Errc::kInvalidArgument, "the bare loop diverged; lower --lr");
  }
  return BareRun{step, seconds, cpu_seconds};
}

// ---- The unit, as the daemon holds it ----------------------------------------------------------

struct UnitFiles {
  ubcp::testing::ReplicaUnit unit;
  fs::path model_blob, data_blob;  // the blobs as files, as in the daemon's blob cache
};

common::Status WriteBytes(const fs::path& path, const common::Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return common::MakeError(common::Errc::kIo, "cannot write " + path.string());
  return {};
}

common::Result<UnitFiles> MakeUnitFiles(const common::ModelSpec& spec,
                                        const common::TensorList& shard, const Options& o,
                                        int steps, const fs::path& dir) {
  common::UnitParams params;
  params.local_steps = steps;
  params.batch_size = o.batch;
  params.lr = o.lr;
  params.momentum = o.momentum;
  params.optimizer = "sgd";
  params.seed = 7;
  UnitFiles f;
  f.unit = ubcp::testing::MakeReplicaUnit(common::kUnitFinetune, spec.ToString(),
                                          common::InitModel(spec, 1), shard, params, "int8");
  f.model_blob = dir / f.unit.manifest.model.id;
  f.data_blob = dir / f.unit.manifest.data.id;
  UBCP_RETURN_IF_ERROR(WriteBytes(f.model_blob, f.unit.model.bytes));
  UBCP_RETURN_IF_ERROR(WriteBytes(f.data_blob, f.unit.data.bytes));
  return f;
}

struct UnitRun {
  int worker_pid = 0;
  double seconds = 0;
  double cpu_seconds = 0;  // the worker's, and this process's (supervision, or the unit itself)
  common::ResultMetrics metrics;
};

// Leases the unit afresh under `unit_id` (a signed manifest saved by UnitJournal::Begin, no
// checkpoint), executes it with `executor` and times Execute(); the unit's directory is removed
// afterwards.
common::Result<UnitRun> RunUnit(client::UnitExecutor& executor, client::UnitJournal& journal,
                                const common::SigningKey& coordinator_key, const UnitFiles& files,
                                std::int64_t unit_id, int threads, int checkpoint_every,
                                double checkpoint_seconds) {
  common::Manifest manifest = files.unit.manifest;
  manifest.unit_id = unit_id;
  const common::SignedEnvelope envelope = common::SignPayload(
      coordinator_key, common::kDomainManifest, common::SerializeManifest(manifest));
  UBCP_RETURN_IF_ERROR(journal.Begin(unit_id, envelope, 0));
  client::ExecutionRequest request;
  request.unit_dir = journal.Dir(unit_id);
  request.manifest_hash = common::PayloadHash(envelope);
  request.manifest = &manifest;
  request.model_blob = files.model_blob;
  request.data_blob = files.data_blob;
  request.threads = threads;
  request.checkpoint_every = checkpoint_every;
  request.checkpoint_seconds = checkpoint_seconds;
  const double cpu_start = CpuSeconds();
  const Clock::time_point start = Clock::now();
  client::ExecutionResult result = executor.Execute(request);
  const double seconds = SecondsSince(start);
  const double cpu_seconds =
      CpuSeconds() - cpu_start +
      (result.worker_pid > 0 ? WorkerCpuSecondsSinceLast(result.worker_pid) : 0);
  const bool checkpointed = fs::exists(journal.CheckpointPath(unit_id));
  UBCP_RETURN_IF_ERROR(journal.Finish(unit_id, result.end == client::ExecutionEnd::kDone, "bench"));
  if (result.end != client::ExecutionEnd::kDone || !result.output) {
    return common::MakeError(common::Errc::kInternal, "unit " + std::to_string(unit_id) +
                                                          " did not complete: " + result.message);
  }
  const std::int64_t samples =
      std::int64_t{manifest.params.local_steps} * manifest.params.batch_size;
  if (result.output->metrics.samples != samples || result.resumed_from_step != 0) {
    return common::MakeError(common::Errc::kInternal,
                             "unit " + std::to_string(unit_id) + " did not run from step 0 to " +
                                 std::to_string(manifest.params.local_steps));
  }
  // A unit longer than one checkpoint interval leaves its last checkpoint in its directory.
  // (By time: surely once the unit ran two intervals; never without any interval.)
  const bool must = (checkpoint_every > 0 && manifest.params.local_steps > checkpoint_every) ||
                    (checkpoint_seconds > 0 && seconds > 2 * checkpoint_seconds);
  const bool must_not = checkpoint_every == 0 && checkpoint_seconds == 0;
  if ((must && !checkpointed) || (must_not && checkpointed)) {
    return common::MakeError(common::Errc::kInternal, "unit " + std::to_string(unit_id) +
                                                          (checkpointed ? " left a" : " left no") +
                                                          " checkpoint");
  }
  return UnitRun{result.worker_pid, seconds, cpu_seconds, result.output->metrics};
}

// ---- Figures ---------------------------------------------------------------------------------

struct Variant {
  explicit Variant(std::string name) : label(std::move(name)) {}
  std::string label;
  std::vector<double> seconds;
  std::vector<double> cpu_seconds;
  std::vector<double> losses;  // executions of the unit: the last batch's loss
  std::vector<int> worker_pids;
  double SamplesPerSecond(std::int64_t samples) const {
    return static_cast<double>(samples) / Median(seconds);
  }
};

struct ModelFigures {
  std::string model;
  int steps = 0;
  std::int64_t samples = 0;
  double predicted_s = NAN;  // samples / the benchmark's samples/s (NaN: not benchmarked)
  Variant bare{"bare libtorch loop"};
  Variant worker{"worker, checkpoints"};
  Variant worker_plain{"worker, no checkpoints"};
  Variant in_process{"in-process, checkpoints"};
  double cold_seconds = NAN;  // the worker's first unit, which started it (also in worker)
  double Efficiency(const Variant& v) const {
    return v.SamplesPerSecond(samples) / bare.SamplesPerSecond(samples);
  }
  // The same in CPU time: less sensitive to other work on the machine than wall time.
  double CpuEfficiency(const Variant& v) const {
    return Median(bare.cpu_seconds) / Median(v.cpu_seconds);
  }
};

std::string Runs(const std::vector<double>& seconds) {
  std::string s;
  for (double v : seconds) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.2f", s.empty() ? "" : " ", v);
    s += buf;
  }
  return s;
}

void PrintModel(const ModelFigures& f, const Options& o) {
  std::printf("\n%s: %d steps x batch %d = %lld samples per unit, %d thread(s)\n", f.model.c_str(),
              f.steps, o.batch, static_cast<long long>(f.samples), o.threads);
  std::printf("  %-34s %9s %11s %10s %9s %8s  %s\n", "variant", "median_s", "samples/s",
              "efficiency", "cpu_s", "cpu_eff", "runs_s");
  for (const Variant* v : {&f.bare, &f.worker, &f.worker_plain, &f.in_process}) {
    std::string label = v->label;
    if (v != &f.bare && v != &f.worker_plain) {
      label +=
          o.checkpoint_every > 0 ? " every " + std::to_string(o.checkpoint_every) + " steps" : "";
      if (o.checkpoint_seconds > 0) {
        label += " every " + std::to_string(static_cast<int>(o.checkpoint_seconds)) + " s";
      }
    }
    std::printf("  %-34s %9.3f %11.0f %10.3f %9.3f %8.3f  %s\n", label.c_str(), Median(v->seconds),
                v->SamplesPerSecond(f.samples), f.Efficiency(*v), Median(v->cpu_seconds),
                f.CpuEfficiency(*v), Runs(v->seconds).c_str());
  }
  const std::set<int> pids(f.worker.worker_pids.begin(), f.worker.worker_pids.end());
  std::printf(
      "  the worker's first unit (its start included): %.3f s, efficiency %.3f; %zu worker "
      "process(es) ran the %zu units with checkpoints\n",
      f.cold_seconds,
      static_cast<double>(f.samples) / f.cold_seconds / f.bare.SamplesPerSecond(f.samples),
      pids.size(), f.worker.worker_pids.size());
  if (std::isnan(f.predicted_s)) {
    std::printf("  prediction: the client's benchmark does not cover this model\n");
  } else {
    std::printf(
        "  prediction: %.3f s from the benchmark, worker measured %.3f s (median): %+.1f%%\n",
        f.predicted_s, Median(f.worker.seconds),
        (f.predicted_s - Median(f.worker.seconds)) / Median(f.worker.seconds) * 100);
  }
  // Same machine, same thread count: every execution should end with the same bits.
  std::set<double> losses;
  std::string listed;
  for (const Variant* v : {&f.worker, &f.worker_plain, &f.in_process}) {
    losses.insert(v->losses.begin(), v->losses.end());
    listed += "; " + v->label + ":";
    for (double l : v->losses) {
      char buf[32];
      std::snprintf(buf, sizeof buf, " %.17g", l);
      listed += buf;
    }
  }
  std::printf("  every execution of the unit ended with the same loss: %s\n",
              losses.size() <= 1 ? "yes" : ("NO" + listed).c_str());
}

// Measures one model: the bare loop and the three ways of executing the unit, interleaved.
common::Result<ModelFigures> MeasureModel(const std::string& model, const common::TensorList& shard,
                                          const client::BenchmarkReport& bench, const Options& o,
                                          const fs::path& worker_bin, const fs::path& dir) {
  UBCP_ASSIGN_OR_RETURN(common::ModelSpec spec, common::ParseModelSpec(model));
  ModelFigures f;
  f.model = spec.ToString();
  double bench_sps = 0;
  for (const client::ModelThroughput& t : bench.train) {
    if (t.model == f.model) bench_sps = t.samples_per_s;
  }
  // The warm-up: a quarter of the unit's time, or of its steps. Without --steps, the unit is
  // sized from the warm-up's speed (not from the benchmark: its prediction is what is measured).
  const BareData bare = ToBare(spec, shard);
  UBCP_ASSIGN_OR_RETURN(const BareRun warm_up,
                        BareLoop(spec, bare, o, o.steps > 0 ? std::max(1, o.steps / 4) : 1'000'000,
                                 1, o.steps > 0 ? 0 : o.unit_seconds / 4));
  f.steps = o.steps > 0 ? o.steps
                        : std::max(1, static_cast<int>(std::lround(o.unit_seconds * warm_up.steps /
                                                                   warm_up.seconds)));
  f.samples = std::int64_t{f.steps} * o.batch;
  if (bench_sps > 0) f.predicted_s = static_cast<double>(f.samples) / bench_sps;

  const fs::path model_dir = dir / f.model;
  fs::create_directories(model_dir / "blobs");
  UBCP_ASSIGN_OR_RETURN(UnitFiles files,
                        MakeUnitFiles(spec, shard, o, f.steps, model_dir / "blobs"));
  UBCP_ASSIGN_OR_RETURN(client::UnitJournal journal,
                        client::UnitJournal::Open(model_dir / "state"));
  const common::SigningKey coordinator_key = common::SigningKey::Generate();
  // Its worker waits between units for as long as the benchmark runs (no idle exit).
  auto worker = client::MakeWorkerExecutor({.worker = worker_bin,
                                            .root = fs::absolute(model_dir),
                                            .nice = o.nice,
                                            .idle_exit_seconds = 0});
  auto in_process = client::MakeInProcessExecutor();

  std::int64_t unit_id = 0;
  auto execute = [&](client::UnitExecutor& executor, bool checkpoints,
                     Variant& variant) -> common::Status {
    UBCP_ASSIGN_OR_RETURN(UnitRun run, RunUnit(executor, journal, coordinator_key, files, ++unit_id,
                                               o.threads, checkpoints ? o.checkpoint_every : 0,
                                               checkpoints ? o.checkpoint_seconds : 0.0));
    if (&variant == &f.worker && variant.seconds.empty()) f.cold_seconds = run.seconds;
    variant.seconds.push_back(run.seconds);
    variant.cpu_seconds.push_back(run.cpu_seconds);
    variant.losses.push_back(run.metrics.loss);
    variant.worker_pids.push_back(run.worker_pid);
    return {};
  };
  for (int rep = 0; rep < o.repetitions; ++rep) {
    std::fprintf(stderr, "client: %s, repetition %d of %d\n", f.model.c_str(), rep + 1,
                 o.repetitions);
    UBCP_ASSIGN_OR_RETURN(const BareRun bare_run, BareLoop(spec, bare, o, f.steps, rep + 2));
    f.bare.seconds.push_back(bare_run.seconds);
    f.bare.cpu_seconds.push_back(bare_run.cpu_seconds);
    UBCP_RETURN_IF_ERROR(execute(*worker, true, f.worker));
    if (rep >= o.detail_repetitions) continue;
    UBCP_RETURN_IF_ERROR(execute(*worker, false, f.worker_plain));
    UBCP_RETURN_IF_ERROR(execute(*in_process, true, f.in_process));
  }
  return f;
}

// ---- The idle daemon ------------------------------------------------------------------------

// A child process; the destructor stops it (SIGTERM, then SIGKILL) and reaps it, so that no
// process outlives the benchmark, whichever way it ends.
class Child {
 public:
  // Starts `args` (args[0] a path) with stdin from /dev/null, stdout and stderr appended to
  // `log`.
  static common::Result<Child> Spawn(const std::vector<std::string>& args, const fs::path& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      return common::MakeError(common::Errc::kIo,
                               "cannot start " + args[0] + ": " + std::strerror(rc));
    }
    return Child(pid);
  }
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Stop(5); }

  pid_t pid() const { return pid_; }
  // True while it runs; once it has exited it is reaped and its wait status kept.
  bool Running() {
    if (pid_ <= 0) return false;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == 0) return true;
    status_ = r == pid_ ? st : -1;
    pid_ = -1;
    return false;
  }
  // Waits up to `seconds` for it to exit; its wait status, or nullopt while it still runs.
  std::optional<int> WaitFor(double seconds) {
    const Clock::time_point start = Clock::now();
    while (Running()) {
      if (SecondsSince(start) >= seconds) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }
  // SIGTERM, then SIGKILL after `grace_s`.
  void Stop(double grace_s) {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (WaitFor(grace_s)) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    status_ = ::waitpid(pid_, &st, 0) == pid_ ? st : -1;
    pid_ = -1;
  }
  int status() const { return status_; }

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  int status_ = -1;
};

// Runs a tool to completion (at most 60 s); its output, or an error with it.
common::Result<std::string> RunTool(const std::vector<std::string>& args, const fs::path& log) {
  fs::remove(log);
  UBCP_ASSIGN_OR_RETURN(Child child, Child::Spawn(args, log));
  const std::optional<int> st = child.WaitFor(60);
  std::string out = ReadText(log);
  if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
    return common::MakeError(common::Errc::kInternal, args[0] + " " + args[1] + " failed: " + out);
  }
  return out;
}

// Waits up to `seconds` for `ready`, giving up early when `child` exits.
common::Status WaitUntil(Child& child, const std::string& what, double seconds,
                         const std::function<bool()>& ready) {
  const Clock::time_point start = Clock::now();
  while (!ready()) {
    if (!child.Running()) {
      return common::MakeError(
          common::Errc::kInternal,
          "exited (status " + std::to_string(child.status()) + ") before " + what);
    }
    if (SecondsSince(start) > seconds) {
      return common::MakeError(common::Errc::kUnavailable,
                               "not " + what + " within " + std::to_string(seconds) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return {};
}

// The value of `key` ("VmRSS:") in /proc/<pid>/status, in kB.
common::Result<std::int64_t> ProcStatusKb(pid_t pid, const std::string& key) {
  std::istringstream in(ReadText("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key)) return std::stoll(line.substr(key.size()));
  }
  return common::MakeError(common::Errc::kNotFound, key + " not in /proc/<pid>/status");
}

// utime + stime of `pid` in clock ticks (/proc/<pid>/stat fields 14 and 15).
common::Result<std::int64_t> CpuTicks(pid_t pid) {
  const std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos) {
    return common::MakeError(common::Errc::kNotFound, "no /proc/<pid>/stat");
  }
  std::istringstream in(stat.substr(paren + 2));  // field 3 (state) onwards
  std::vector<std::string> fields;
  std::string field;
  while (in >> field) fields.push_back(field);
  if (fields.size() < 13) return common::MakeError(common::Errc::kMalformed, "short stat");
  return std::stoll(fields[11]) + std::stoll(fields[12]);
}

bool MapsLibtorch(pid_t pid) {
  return ReadText("/proc/" + std::to_string(pid) + "/maps").find("libtorch") != std::string::npos;
}

struct IdleFigures {
  double rss_max_mb = 0;
  double cpu_pct = 0;
  double seconds = 0;
  bool libtorch_mapped = false;
  bool poll_failed = false;  // the daemon logged a failed work request
};

common::Result<IdleFigures> MeasureIdleDaemon(const Options& o, const fs::path& dir,
                                              const fs::path& worker_bin) {
  const fs::path data = dir / "coordinator", port_file = dir / "port",
                 coordinator_log = dir / "coordinator.log", state = dir / "donor",
                 donor_log = dir / "donor.log", tool_log = dir / "tool.log";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return common::MakeError(common::Errc::kIo, "cannot create " + dir.string());
  UBCP_ASSIGN_OR_RETURN(
      Child coordinator,
      Child::Spawn({UBCP_COORDINATOR_BIN, "serve", "--data", data.string(), "--listen", "127.0.0.1",
                    "--port", "0", "--port-file", port_file.string()},
                   coordinator_log));
  if (auto s = WaitUntil(coordinator, "listening", 30, [&] { return fs::exists(port_file); }); !s) {
    return common::MakeError(s.error().code,
                             "coordinator " + s.error().message + "\n" + ReadText(coordinator_log));
  }
  const std::string port = std::to_string(std::stoi(ReadText(port_file)));
  UBCP_ASSIGN_OR_RETURN(std::string account,
                        RunTool({UBCP_COORDINATOR_BIN, "add-account", "--data", data.string(),
                                 "--name", "bench-donor", "--donor"},
                                tool_log));
  std::string token;
  std::istringstream(account) >> token;
  UBCP_ASSIGN_OR_RETURN(std::string info,
                        RunTool({UBCP_COORDINATOR_BIN, "info", "--data", data.string()}, tool_log));
  std::smatch key;
  if (!std::regex_search(info, key, std::regex(R"(signing_key ([0-9a-f]{64}))"))) {
    return common::MakeError(common::Errc::kMalformed, "no signing key in: " + info);
  }
  UBCP_ASSIGN_OR_RETURN(
      Child donor,
      Child::Spawn({UBCP_CLIENT_BIN, "--coordinator", "https://127.0.0.1:" + port, "--ca-file",
                    (data / "tls" / "cert.pem").string(), "--coordinator-key", key[1].str(),
                    "--state", state.string(), "--account-token", token, "--worker",
                    worker_bin.string(), "--poll", "1", "--bench-seconds", "0.3"},
                   donor_log));
  // Registered (after the benchmark worker has exited) and in its work loop.
  const auto polling = [&] {
    return fs::exists(state / "registration.json") &&
           ReadText(donor_log).find("may work") != std::string::npos;
  };
  if (auto s = WaitUntil(donor, "polling for work", 60, polling); !s) {
    return common::MakeError(s.error().code,
                             "ubcp-client " + s.error().message + "\n" + ReadText(donor_log));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past its first polls

  IdleFigures f;
  const pid_t pid = donor.pid();
  f.libtorch_mapped = MapsLibtorch(pid);
  UBCP_ASSIGN_OR_RETURN(const std::int64_t ticks_before, CpuTicks(pid));
  const Clock::time_point start = Clock::now();
  std::int64_t rss_max_kb = 0;
  while (SecondsSince(start) < o.idle_seconds) {
    if (!donor.Running()) {
      return common::MakeError(common::Errc::kInternal,
                               "ubcp-client exited while idle\n" + ReadText(donor_log));
    }
    UBCP_ASSIGN_OR_RETURN(const std::int64_t rss_kb, ProcStatusKb(pid, "VmRSS:"));
    rss_max_kb = std::max(rss_max_kb, rss_kb);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  UBCP_ASSIGN_OR_RETURN(const std::int64_t ticks_after, CpuTicks(pid));
  f.seconds = SecondsSince(start);
  f.libtorch_mapped = f.libtorch_mapped || MapsLibtorch(pid);
  f.rss_max_mb = static_cast<double>(rss_max_kb) / 1024.0;
  f.cpu_pct = static_cast<double>(ticks_after - ticks_before) /
              static_cast<double>(::sysconf(_SC_CLK_TCK)) / f.seconds * 100.0;
  donor.Stop(10);
  coordinator.Stop(10);
  f.poll_failed = ReadText(donor_log).find("work request failed") != std::string::npos;
  return f;
}

// Fashion-MNIST (or --dataset) rows of a seeded shuffle: the unit's data shard.
common::Result<common::TensorList> LoadShard(const Options& o) {
  common::DatasetPaths paths;
  paths.cache_dir = o.cache_dir;
  UBCP_ASSIGN_OR_RETURN(common::Dataset data, common::LoadDataset(o.dataset, paths));
  std::vector<std::int64_t> rows = common::SplitIndices(data.size(), 0.0, 3).train;
  if (static_cast<std::int64_t>(rows.size()) > o.rows)
    rows.resize(static_cast<std::size_t>(o.rows));
  return common::TakeRows(data.x, data.y, rows);
}

// The first three fields of /proc/loadavg: how busy the machine was.
std::string LoadAverage() {
  std::istringstream in(ReadText("/proc/loadavg"));
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

int Fail(const std::string& what, const common::Error& e) {
  std::fprintf(stderr, "client: %s: %s\n", what.c_str(), e.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"The donor client's execution efficiency, runtime prediction and idle footprint"};
  app.add_option("--threads", o.threads,
                 "torch threads, for every variant (the daemon's default: all cores)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--models", o.models, "zoo model specs")->capture_default_str();
  app.add_option("--dataset", o.dataset, "data set of the shards")->capture_default_str();
  app.add_option("--cache-dir", o.cache_dir, "decoded data set cache (default: none)");
  app.add_option("--rows", o.rows, "rows in the unit's shard")
      ->check(CLI::Range(std::int64_t{64}, std::int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "SGD learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps per unit (default: --unit-seconds' worth)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--unit-seconds", o.unit_seconds,
                 "bare-loop training time a unit is sized to, when --steps is not given")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  app.add_option("--repetitions", o.repetitions,
                 "runs of the bare loop and of the worker with checkpoints (the median counts)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--detail-repetitions", o.detail_repetitions,
                 "runs of the worker without checkpoints and of the in-process executor")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--nice", o.nice,
                 "niceness of the worker and of this benchmark's own loops (default: the "
                 "daemon's)")
      ->check(CLI::Range(0, 19))
      ->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "steps between checkpoints (0: by time only)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--checkpoint-seconds", o.checkpoint_seconds,
                 "seconds between checkpoints (0: by steps only)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--bench-seconds", o.bench_seconds, "duration of the client's benchmark")
      ->check(CLI::Range(0.3, 600.0))
      ->capture_default_str();
  app.add_option("--idle-seconds", o.idle_seconds, "how long the idle daemon is watched")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.batch > o.rows) {
    std::fprintf(stderr, "client: --batch is larger than --rows\n");
    return 1;
  }
  if (auto ok = common::InitCrypto(); !ok) return Fail("crypto", ok.error());
  // The worker runs at the daemon's niceness; the bare loop and the in-process executor run here
  // at the same one, so that on a busy machine every variant competes for the CPU alike.
  if (::setpriority(PRIO_PROCESS, 0, o.nice) != 0) {
    return Fail("setpriority", common::MakeError(common::Errc::kIo, std::strerror(errno)));
  }
  const std::string load_before = LoadAverage();
  common::SetTorchThreads(o.threads);
  // The allocator settings the worker runs with (model.h), so that the bare loop and the
  // in-process variant are not slowed by glibc's dynamic thresholds where the worker is not.
  common::ConfigureAllocatorForTraining();
  const fs::path worker_bin = UBCP_WORKER_BIN;
  ubcp::testing::TempDir dir("ubcp-bench-client");

  auto shard = LoadShard(o);
  if (!shard) return Fail("data set " + o.dataset, shard.error());
  std::fprintf(stderr, "client: the client's benchmark (ubcp-worker benchmark, %.1f s)\n",
               o.bench_seconds);
  auto bench = client::RunWorkerBenchmark({.worker = worker_bin, .nice = o.nice}, o.bench_seconds,
                                          o.threads);
  if (!bench) return Fail("benchmark", bench.error());

  std::vector<ModelFigures> figures;
  for (const std::string& model : o.models) {
    auto f = MeasureModel(model, *shard, *bench, o, worker_bin, dir.path());
    if (!f) return Fail(model, f.error());
    figures.push_back(std::move(*f));
  }
  std::fprintf(stderr, "client: the idle daemon (%.0f s)\n", o.idle_seconds);
  auto idle = MeasureIdleDaemon(o, dir.path() / "idle", worker_bin);
  if (!idle) return Fail("idle daemon", idle.error());

  std::printf(
      "client efficiency: %lld %s rows per shard, batch %d, lr %g, momentum %g; median of %d "
      "(bare, worker with checkpoints) and %d (others) run(s); everything at nice %d; load "
      "average %s before, %s after, %u cores\n",
      static_cast<long long>(common::FindTensor(*shard, "y")->shape[0]), o.dataset.c_str(), o.batch,
      o.lr, o.momentum, o.repetitions, std::min(o.repetitions, o.detail_repetitions), o.nice,
      load_before.c_str(), LoadAverage().c_str(), std::thread::hardware_concurrency());
  std::printf("the client's benchmark (%.1f s, %d threads):", o.bench_seconds, bench->cpu_threads);
  for (const client::ModelThroughput& t : bench->train) {
    std::printf(" %s %.0f samples/s;", t.model.c_str(), t.samples_per_s);
  }
  std::printf("\n");
  double efficiency = NAN, error_sum = 0;
  int predicted_units = 0;
  for (const ModelFigures& f : figures) {
    PrintModel(f, o);
    const double e = f.Efficiency(f.worker);
    if (std::isnan(efficiency) || e < efficiency) efficiency = e;
    if (std::isnan(f.predicted_s)) continue;
    for (double measured : f.worker.seconds) {
      error_sum += std::abs(f.predicted_s - measured) / measured * 100;
      ++predicted_units;
    }
  }
  const double prediction_error = predicted_units > 0 ? error_sum / predicted_units : NAN;
  std::printf(
      "\nidle daemon over %.1f s (registered, polling every 1 s, no jobs): rss_max_mb=%.1f "
      "cpu_pct=%.2f libtorch_mapped=%s%s\n",
      idle->seconds, idle->rss_max_mb, idle->cpu_pct, idle->libtorch_mapped ? "YES" : "no",
      idle->poll_failed ? " (some work requests failed)" : "");
  std::printf(
      "efficiency: the worker with checkpoints (median of its units, the first of which started "
      "the worker), lowest over the models; prediction error: mean over %d worker unit(s)\n",
      predicted_units);
  std::printf("client: efficiency=%.3f prediction_error_pct=%.1f idle_rss_mb=%.1f\n", efficiency,
              prediction_error, idle->rss_max_mb);
  return 0;
}
