// SPDX-License-Identifier: Apache-2.0
// Measures how far honest executions of the same work unit differ, and how far cheating ones do,
// to set the tolerance of result comparison (ubcp/coordinator/result_compare.h).
//
// For each job (the integration tests' digits MLP, then the demo's jobs from scripts/jobs), the
// training data is cut into shards as the planner does, and each measured finetune unit is run
// by the real client executor (ExecuteUnit) with every torch thread count and several times
// each: these honest results are compared pairwise. Then the same unit is run by each adversary
// of client/adversary.h, and an honest update of another shard and of the previous round stand
// in for a stale result; these are compared with the honest one. The next round's model is the
// shard-size weighted mean (FedAvg) of the round's honest updates. The final model is evaluated
// on the first held-out batch in the same way, and against the previous round's model. A job
// whose model is "catalog:<name>" starts from the last model of the job above it that publishes
// <name> (the demo's fine-tune starts from the pretrained CNN).
//
// With --reference-dir, honest results are also compared with those of an earlier run in another
// process (scripts/bench runs it again with torch, MKL and oneDNN held to older instruction
// sets, as on another donor's CPU).
//
// Prints one row per comparison (rel_l2: UpdateDistance; first_rel, last_rel: relative
// difference of the first and last batch's training loss; eval_rel, acc_diff: of the eval loss
// and accuracy; default: whether DefaultTolerance() accepts the pair), the honest maxima and the
// cheats' minima, then
//   tolerance: honest_max_rel_l2=<x> cheat_min_rel_l2=<y> chosen=<z>
// where z is 10 x the honest maximum rounded up to 1, 2 or 5 x 10^k if that is at most a tenth
// of y, and otherwise the geometric mean of x and y. Figures only: it fails only when a unit
// cannot run. Run by scripts/bench.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/replica_unit.h"
#include "ubcp/client/adversary.h"
#include "ubcp/client/executor.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/datasets.h"
#include "ubcp/common/model.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"
#include "ubcp/coordinator/planner.h"
#include "ubcp/coordinator/result_compare.h"

namespace {
namespace fs = std::filesystem;
using ubcp::client::Adversary;
using ubcp::client::AdversaryMode;
using ubcp::coordinator::ComparableResult;
using ubcp::coordinator::Tolerance;
using ubcp::coordinator::UpdateDistance;
namespace common = ubcp::common;

// The digits MLP job of the integration tests (tests/integration/loop_fixture.h, DigitsJob).
common::JobSpec DigitsMlpJob() {
  common::JobSpec spec;
  spec.name = "digits mlp";
  spec.model = "zoo:mlp-i784-h64-o10";
  spec.dataset = "digits";
  spec.rounds = 2;
  spec.units_per_round = 2;
  spec.eval_units = 1;
  spec.params = {30, 32, 0.05, 0.9, 0.0, "sgd", 5};
  spec.aggregator = "fedavg";
  spec.update_encoding = "int8";
  return spec;
}

struct Job {
  std::string label;
  common::JobSpec spec;
};

// The planner's cut of a data set: held-out test rows first, then disjoint training shards.
struct Shards {
  std::vector<common::TensorList> train;
  std::vector<common::TensorList> test;
};

Shards CutShards(const common::JobSpec& spec, const common::Dataset& data) {
  // Cut as the planner cuts the job.
  const ubcp::coordinator::JobRows split = ubcp::coordinator::SelectRows(spec, data);
  const std::vector<std::int64_t>& train_rows = split.train;
  const std::vector<std::int64_t>& test_rows = split.test;
  const bool own_test = split.own_test;
  Shards shards;
  for (const auto& rows : common::Partition(train_rows, spec.units_per_round)) {
    shards.train.push_back(common::TakeRows(data.x, data.y, rows));
  }
  const common::NamedTensor& test_x = own_test ? data.test_x : data.x;
  const common::NamedTensor& test_y = own_test ? data.test_y : data.y;
  for (const auto& rows : common::Partition(test_rows, spec.eval_units)) {
    shards.test.push_back(common::TakeRows(test_x, test_y, rows));
  }
  return shards;
}

using Unit = ubcp::testing::ReplicaUnit;

Unit MakeUnit(std::string_view kind, const std::string& model_spec,
              const common::TensorList& weights, const common::TensorList& shard,
              const common::JobSpec& spec, std::uint64_t seed) {
  common::UnitParams params = spec.params;
  params.seed = seed;
  return ubcp::testing::MakeReplicaUnit(kind, model_spec, weights, shard, params,
                                        spec.update_encoding);
}

// Runs `unit` with the real executor and decodes its update as the coordinator would.
common::Result<ComparableResult> Run(const Unit& unit, int threads, const Adversary& adversary = {},
                                     const std::string& encoding = "") {
  if (encoding.empty()) return ubcp::testing::RunReplica(unit, threads, adversary);
  Unit changed = unit;
  changed.manifest.update_encoding = encoding;
  return ubcp::testing::RunReplica(changed, threads, adversary);
}

double RelDiff(double a, double b) {
  const double scale = std::max(std::abs(a), std::abs(b));
  return scale == 0 ? 0 : std::abs(a - b) / scale;
}

// What one comparison measured; NaN where it does not apply.
struct Figures {
  double rel_l2 = NAN;          // finetune: UpdateDistance
  double first_loss_rel = NAN;  // finetune: first batch's loss, before any step
  double last_loss_rel = NAN;   // finetune: last batch's loss (not compared by Agree)
  double eval_loss_rel = NAN;   // eval
  double accuracy_diff = NAN;   // eval
};

Figures Compare(const ComparableResult& a, const ComparableResult& b) {
  Figures f;
  if (a.kind == common::kUnitFinetune) {
    f.rel_l2 = UpdateDistance(a.update, b.update);
    f.first_loss_rel = RelDiff(a.first_loss, b.first_loss);
    f.last_loss_rel = RelDiff(a.loss, b.loss);
  } else {
    f.eval_loss_rel = RelDiff(a.loss, b.loss);
    f.accuracy_diff = std::abs(a.accuracy - b.accuracy);
  }
  return f;
}

// NaN (not measured) on either side gives the other.
double Max(double a, double b) {
  if (std::isnan(a)) return b;
  return std::isnan(b) ? a : std::max(a, b);
}
double Min(double a, double b) {
  if (std::isnan(a)) return b;
  return std::isnan(b) ? a : std::min(a, b);
}

Figures MaxOf(const Figures& a, const Figures& b) {
  return {Max(a.rel_l2, b.rel_l2), Max(a.first_loss_rel, b.first_loss_rel),
          Max(a.last_loss_rel, b.last_loss_rel), Max(a.eval_loss_rel, b.eval_loss_rel),
          Max(a.accuracy_diff, b.accuracy_diff)};
}
Figures MinOf(const Figures& a, const Figures& b) {
  return {Min(a.rel_l2, b.rel_l2), Min(a.first_loss_rel, b.first_loss_rel),
          Min(a.last_loss_rel, b.last_loss_rel), Min(a.eval_loss_rel, b.eval_loss_rel),
          Min(a.accuracy_diff, b.accuracy_diff)};
}

// Pairwise maximum over `runs`, restricted to the pairs `take` accepts.
template <class Take>
Figures MaxPairwise(const std::vector<std::pair<int, ComparableResult>>& runs, Take take) {
  Figures m;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    for (std::size_t j = i + 1; j < runs.size(); ++j) {
      if (take(runs[i].first, runs[j].first)) m = MaxOf(m, Compare(runs[i].second, runs[j].second));
    }
  }
  return m;
}

// Whether DefaultTolerance() accepts every pair of `runs` that `take` accepts.
template <class Take>
bool AllAgree(const std::vector<std::pair<int, ComparableResult>>& runs, Take take,
              const Tolerance& tol) {
  for (std::size_t i = 0; i < runs.size(); ++i) {
    for (std::size_t j = i + 1; j < runs.size(); ++j) {
      if (take(runs[i].first, runs[j].first) &&
          !ubcp::coordinator::Agree(runs[i].second, runs[j].second, tol)) {
        return false;
      }
    }
  }
  return true;
}

class Report {
 public:
  explicit Report(Tolerance current) : current_(current) {
    std::printf("%-19s %2s %-4s %-30s %9s %9s %9s %9s %9s %s\n", "job", "r", "unit", "comparison",
                "rel_l2", "first_rel", "last_rel", "eval_rel", "acc_diff", "default");
  }

  // `agree`: whether DefaultTolerance() (the tolerance compiled in now) accepts the pair.
  void Row(const std::string& job, int round, const std::string& unit, const std::string& what,
           const Figures& f, std::optional<bool> agree) {
    std::printf("%-19s %2d %-4s %-30s %9.3g %9.3g %9.3g %9.3g %9.4g %s\n", job.c_str(), round,
                unit.c_str(), what.c_str(), f.rel_l2, f.first_loss_rel, f.last_loss_rel,
                f.eval_loss_rel, f.accuracy_diff,
                !agree.has_value() ? "-"
                : *agree           ? "agree"
                                   : "differ");
    std::fflush(stdout);
  }
  void Honest(const Figures& f) { honest_ = MaxOf(honest_, f); }
  void Cheat(const std::string& kind, const Figures& f) {
    auto [it, inserted] = cheats_.try_emplace(kind, f);
    if (!inserted) it->second = MinOf(it->second, f);
  }

  // Adds the maxima and minima of an earlier run kept in `file` (if there is one), then writes
  // the combined figures back, so that the last run's summary covers every run.
  common::Status MergeWith(const fs::path& file) {
    std::ifstream in(file);
    std::string line;
    while (in && std::getline(in, line)) {
      // Written with %.17g, read with strtod: both spell a figure that was not measured "nan".
      std::istringstream fields(line);
      std::string what, kind, number[5];
      if (!(fields >> what >> number[0] >> number[1] >> number[2] >> number[3] >> number[4]) ||
          (what != "honest" && what != "cheat")) {
        return common::MakeError(common::Errc::kMalformed, "cannot parse " + file.string());
      }
      std::getline(fields >> std::ws, kind);
      const Figures f = {
          std::strtod(number[0].c_str(), nullptr), std::strtod(number[1].c_str(), nullptr),
          std::strtod(number[2].c_str(), nullptr), std::strtod(number[3].c_str(), nullptr),
          std::strtod(number[4].c_str(), nullptr)};
      if (what == "honest") {
        Honest(f);
      } else {
        Cheat(kind, f);
      }
    }
    std::ofstream out(file);
    auto write = [&](const char* what, const Figures& f, const std::string& kind) {
      char text[256];
      std::snprintf(text, sizeof text, "%s %.17g %.17g %.17g %.17g %.17g %s\n", what, f.rel_l2,
                    f.first_loss_rel, f.last_loss_rel, f.eval_loss_rel, f.accuracy_diff,
                    kind.c_str());
      out << text;
    };
    write("honest", honest_, "");
    for (const auto& [kind, f] : cheats_) write("cheat", f, kind);
    if (!out.flush()) return common::MakeError(common::Errc::kIo, "cannot write " + file.string());
    return common::Ok();
  }

  const Tolerance& current() const { return current_; }
  const Figures& honest() const { return honest_; }
  const std::map<std::string, Figures>& cheats() const { return cheats_; }

 private:
  Tolerance current_;
  Figures honest_;                         // maxima over honest pairs
  std::map<std::string, Figures> cheats_;  // minima per kind of cheat
};

// Honest results shared between runs of this benchmark in different processes (another CPU
// capability, another machine): the first run writes each one, later runs compare their own
// with it, as the coordinator compares replicas from different donors. Files <name>.txt (the
// manifest's model and data ids, seed and encoding, then the metrics) and <name>.update (the
// update as an fp32 tensor blob).
class ReferenceDir {
 public:
  explicit ReferenceDir(fs::path dir) : dir_(std::move(dir)) {}
  bool enabled() const { return !dir_.empty(); }

  // The result stored under `name`, or nullopt when there is none. kConflict when it was stored
  // for another manifest (another model, data, seed or encoding).
  common::Result<std::optional<ComparableResult>> Load(const std::string& name,
                                                       const common::Manifest& m) const {
    std::ifstream in(dir_ / (name + ".txt"));
    if (!in) return std::optional<ComparableResult>();
    std::string key;
    ComparableResult r;
    if (!std::getline(in, key) ||
        !(in >> r.kind >> r.loss >> r.accuracy >> r.first_loss >> r.samples)) {
      return common::MakeError(common::Errc::kMalformed, "cannot parse " + name + ".txt");
    }
    if (key != Key(m)) {
      return common::MakeError(common::Errc::kConflict,
                               name +
                                   " was stored for another manifest: start from an empty "
                                   "--reference-dir, with the same options");
    }
    if (r.kind == common::kUnitFinetune) {
      std::ifstream blob(dir_ / (name + ".update"), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(blob)),
                              std::istreambuf_iterator<char>());
      UBCP_ASSIGN_OR_RETURN(r.update,
                            common::DecodeTensorBlob(common::AsBytes(bytes), kMaxUpdateRaw));
    }
    return std::optional<ComparableResult>(std::move(r));
  }

  common::Status Save(const std::string& name, const common::Manifest& m,
                      const ComparableResult& r) const {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    std::ofstream out(dir_ / (name + ".txt"));
    char metrics[160];
    std::snprintf(metrics, sizeof metrics, "%s %.17g %.17g %.17g %lld\n", r.kind.c_str(), r.loss,
                  r.accuracy, r.first_loss, static_cast<long long>(r.samples));
    out << Key(m) << "\n" << metrics;
    if (r.kind == common::kUnitFinetune) {
      const common::EncodedBlob blob =
          common::EncodeTensorBlob(r.update, common::FloatEncoding::kFp32);
      std::ofstream update(dir_ / (name + ".update"), std::ios::binary);
      update << common::AsString(blob.bytes);
      if (!update.flush()) return common::MakeError(common::Errc::kIo, "cannot write " + name);
    }
    if (!out.flush()) return common::MakeError(common::Errc::kIo, "cannot write " + name);
    return common::Ok();
  }

 private:
  static constexpr std::size_t kMaxUpdateRaw = std::size_t{1} << 30;

  static std::string Key(const common::Manifest& m) {
    return m.model.id + " " + m.data.id + " " + std::to_string(m.params.seed) + " " +
           (m.update_encoding.empty() ? "-" : m.update_encoding);
  }

  fs::path dir_;
};

// 10 x `x`, rounded up to 1, 2 or 5 x 10^k: a margin of at least 10x over the honest maximum.
double TenfoldRounded(double x) {
  if (!(x > 0)) return 0;
  const double y = 10 * x;
  const double decade = std::pow(10.0, std::floor(std::log10(y)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * decade >= y * (1 - 1e-12)) return m * decade;
  }
  return 10 * decade;
}

struct Options {
  std::vector<int> threads = {1, 2};
  int repeats = 2;
  int rounds = 2;
  int shards = 2;
  double adversary_scale = Adversary{}.scale;
  std::string reference_dir;  // empty: no comparison between processes
};

// A job's last model, standing in for the catalog model it publishes.
struct Model {
  common::ModelSpec spec;
  common::TensorList weights;
};

// `start`: the model of a "catalog:" job (nullptr for "zoo:" jobs).
common::Result<Model> MeasureJob(const Job& job, const Model* start,
                                 const common::DatasetPaths& paths, const Options& o,
                                 Report& report) {
  const common::JobSpec& spec = job.spec;
  common::ModelSpec model_spec;
  common::TensorList global;
  if (spec.model.starts_with("catalog:")) {
    if (start == nullptr) {
      return common::MakeError(common::Errc::kNotFound,
                               "no job above publishes " + spec.model.substr(8));
    }
    model_spec = start->spec;
    global = start->weights;
  } else if (spec.model.starts_with("zoo:")) {
    UBCP_ASSIGN_OR_RETURN(model_spec, common::ParseModelSpec(spec.model.substr(4)));
    global = common::InitModel(model_spec, spec.params.seed);
  } else {
    return common::MakeError(common::Errc::kInvalidArgument, "unknown model " + spec.model);
  }
  const std::string model_name = model_spec.ToString();
  UBCP_ASSIGN_OR_RETURN(common::Dataset data, common::LoadDataset(spec.dataset, paths));
  const Shards shards = CutShards(spec, data);
  const int shard_count = std::min<int>(o.shards, static_cast<int>(shards.train.size()));
  const Tolerance& tol = report.current();
  const ReferenceDir refs(o.reference_dir);

  // Compares `own` with the result another process stored under `name`, or stores `own` there.
  // Returns the result the next round builds on: the stored one where there is one, so that every
  // process runs the same manifests.
  auto share = [&](const std::string& name, int round, const std::string& unit,
                   const std::string& what, const common::Manifest& m,
                   const ComparableResult& own) -> common::Result<ComparableResult> {
    if (!refs.enabled()) return own;
    UBCP_ASSIGN_OR_RETURN(std::optional<ComparableResult> stored, refs.Load(name, m));
    if (!stored) {
      UBCP_RETURN_IF_ERROR(refs.Save(name, m, own));
      return own;
    }
    const Figures f = Compare(*stored, own);
    report.Row(job.label, round, unit, what + ", other process", f,
               ubcp::coordinator::Agree(*stored, own, tol));
    report.Honest(f);
    return std::move(*stored);
  };

  std::vector<ComparableResult> previous_round;  // honest reference of each shard
  common::TensorList previous_global;
  for (int round = 0; round < o.rounds; ++round) {
    std::vector<ComparableResult> references;  // this process's honest result per shard
    std::vector<ComparableResult> basis;       // what FedAvg combines (see `share`)
    for (int s = 0; s < shard_count; ++s) {
      const std::string unit = "s" + std::to_string(s);
      // Any seed serves: what is measured is the spread between executions of one manifest.
      const std::uint64_t seed = spec.params.seed * 1000 + static_cast<std::uint64_t>(round) * 10 +
                                 static_cast<std::uint64_t>(s);
      const Unit u =
          MakeUnit(common::kUnitFinetune, model_name, global, shards.train[s], spec, seed);

      // Honest runs, with the job's encoding and with fp32: (threads, result).
      std::vector<std::string> encodings = {spec.update_encoding};
      if (spec.update_encoding != "fp32") encodings.push_back("fp32");
      for (const std::string& encoding : encodings) {
        std::vector<std::pair<int, ComparableResult>> runs;
        for (int t : o.threads) {
          for (int k = 0; k < o.repeats; ++k) {
            UBCP_ASSIGN_OR_RETURN(ComparableResult r, Run(u, t, {}, encoding));
            runs.emplace_back(t, std::move(r));
          }
        }
        const Figures same = MaxPairwise(runs, [](int a, int b) { return a == b; });
        const Figures across = MaxPairwise(runs, [](int a, int b) { return a != b; });
        report.Row(job.label, round, unit, "honest " + encoding + ", same threads", same,
                   AllAgree(
                       runs, [](int a, int b) { return a == b; }, tol));
        report.Row(job.label, round, unit, "honest " + encoding + ", threads differ", across,
                   AllAgree(
                       runs, [](int a, int b) { return a != b; }, tol));
        report.Honest(MaxOf(same, across));
        common::Manifest m = u.manifest;
        m.update_encoding = encoding;
        UBCP_ASSIGN_OR_RETURN(
            ComparableResult shared,
            share(job.label + "-r" + std::to_string(round) + "-" + unit + "-" + encoding, round,
                  unit, "honest " + encoding, m, runs[0].second));
        if (encoding == spec.update_encoding) {
          references.push_back(runs[0].second);
          basis.push_back(std::move(shared));
        } else if (!references.empty()) {
          // Quantisation error: the same execution, fp32 against the job's encoding.
          report.Row(job.label, round, unit, encoding + " vs " + spec.update_encoding + " (quant.)",
                     Compare(references.back(), runs[0].second), std::nullopt);
        }
      }
      const ComparableResult& honest = references.back();
      const int t0 = o.threads.front();
      for (AdversaryMode mode :
           {AdversaryMode::kSignFlip, AdversaryMode::kScale, AdversaryMode::kNoise,
            AdversaryMode::kZeros, AdversaryMode::kLabelFlip}) {
        UBCP_ASSIGN_OR_RETURN(ComparableResult cheat, Run(u, t0, {mode, o.adversary_scale}));
        const char* name = mode == AdversaryMode::kSignFlip ? "sign_flip"
                           : mode == AdversaryMode::kScale  ? "scale"
                           : mode == AdversaryMode::kNoise  ? "noise"
                           : mode == AdversaryMode::kZeros  ? "zeros"
                                                            : "label_flip";
        const Figures f = Compare(honest, cheat);
        report.Row(job.label, round, unit, std::string("cheat ") + name, f,
                   ubcp::coordinator::Agree(honest, cheat, tol));
        report.Cheat(name, f);
      }
      if (!previous_round.empty()) {
        const Figures f = Compare(honest, previous_round[s]);
        report.Row(job.label, round, unit, "stale: previous round", f,
                   ubcp::coordinator::Agree(honest, previous_round[s], tol));
        report.Cheat("stale previous round", f);
      }
      if (s > 0) {
        const Figures f = Compare(references[s - 1], honest);
        report.Row(job.label, round, unit, "stale: shard s" + std::to_string(s - 1), f,
                   ubcp::coordinator::Agree(references[s - 1], honest, tol));
        report.Cheat("stale other shard", f);
      }
    }
    // FedAvg over the measured shards, weighted by their sizes.
    previous_global = global;
    double total = 0;
    for (int s = 0; s < shard_count; ++s) total += static_cast<double>(shards.train[s][1].numel());
    for (int s = 0; s < shard_count; ++s) {
      const double w = static_cast<double>(shards.train[s][1].numel()) / total;
      for (std::size_t i = 0; i < global.size(); ++i) {
        for (std::size_t j = 0; j < global[i].f32.size(); ++j) {
          global[i].f32[j] += static_cast<float>(w * basis[s].update[i].f32[j]);
        }
      }
    }
    previous_round = std::move(references);
  }

  // Eval of the final model on the first held-out batch; a stale model as the cheat.
  const Unit eval = MakeUnit(common::kUnitEval, model_name, global, shards.test.front(), spec, 0);
  std::vector<std::pair<int, ComparableResult>> runs;
  for (int t : o.threads) {
    for (int k = 0; k < o.repeats; ++k) {
      UBCP_ASSIGN_OR_RETURN(ComparableResult r, Run(eval, t));
      runs.emplace_back(t, std::move(r));
    }
  }
  const auto any = [](int, int) { return true; };
  const Figures across = MaxPairwise(runs, any);
  report.Row(job.label, o.rounds, "eval", "honest, all runs", across, AllAgree(runs, any, tol));
  report.Honest(across);
  UBCP_RETURN_IF_ERROR(
      share(job.label + "-eval", o.rounds, "eval", "honest", eval.manifest, runs[0].second));
  const Unit stale =
      MakeUnit(common::kUnitEval, model_name, previous_global, shards.test.front(), spec, 0);
  UBCP_ASSIGN_OR_RETURN(ComparableResult stale_result, Run(stale, o.threads.front()));
  const Figures f = Compare(runs[0].second, stale_result);
  report.Row(job.label, o.rounds, "eval", "cheat: previous round's model", f,
             ubcp::coordinator::Agree(runs[0].second, stale_result, tol));
  report.Cheat("eval of a stale model", f);
  return Model{model_spec, std::move(global)};
}

common::Result<common::JobSpec> ReadJob(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return common::MakeError(common::Errc::kNotFound, "cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  return common::ParseJobSpec(text.str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UBCP replicated-result tolerance benchmark"};
  Options o;
  std::vector<std::string> job_files = {"scripts/jobs/pretrain-fmnist-cnn.json",
                                        "scripts/jobs/finetune-digits.json"};
  std::string cache_dir = (fs::temp_directory_path() / "ubcp-bench-datasets").string();
  app.add_option("--threads", o.threads, "torch thread counts compared")->delimiter(',');
  app.add_option("--repeats", o.repeats, "runs per thread count")->check(CLI::Range(1, 20));
  app.add_option("--rounds", o.rounds, "rounds measured per job")->check(CLI::Range(1, 10));
  app.add_option("--shards", o.shards, "finetune units measured per round")
      ->check(CLI::Range(1, 64));
  app.add_option("--adversary-scale", o.adversary_scale, "the adversaries' factor");
  app.add_option("--jobs", job_files, "job specs measured after the digits MLP")->delimiter(',');
  app.add_option("--cache-dir", cache_dir, "decoded data-set cache");
  app.add_option("--reference-dir", o.reference_dir,
                 "honest results shared with another run of this benchmark: the first run "
                 "stores them, later runs (e.g. under ATEN_CPU_CAPABILITY=default) compare");
  CLI11_PARSE(app, argc, argv);
  if (o.threads.empty()) {
    std::fprintf(stderr, "tolerance: --threads is empty\n");
    return 1;
  }
  if (auto ok = common::InitCrypto(); !ok) {
    std::fprintf(stderr, "tolerance: %s\n", ok.error().ToString().c_str());
    return 1;
  }

  std::vector<Job> jobs = {{"digits-mlp", DigitsMlpJob()}};
  for (const std::string& file : job_files) {
    if (file.empty()) continue;  // --jobs "": the digits MLP only
    auto spec = ReadJob(file);
    if (!spec) {
      std::fprintf(stderr, "tolerance: %s: %s\n", file.c_str(), spec.error().ToString().c_str());
      return 1;
    }
    jobs.push_back({fs::path(file).stem().string(), std::move(*spec)});
  }
  common::DatasetPaths paths;
  paths.cache_dir = cache_dir;

  Report report(ubcp::coordinator::DefaultTolerance());
  std::map<std::string, Model> published;
  for (const Job& job : jobs) {
    const Model* start = nullptr;
    if (job.spec.model.starts_with("catalog:")) {
      if (auto it = published.find(job.spec.model.substr(8)); it != published.end()) {
        start = &it->second;
      }
    }
    auto outcome = MeasureJob(job, start, paths, o, report);
    if (!outcome) {
      std::fprintf(stderr, "tolerance: job %s: %s\n", job.label.c_str(),
                   outcome.error().ToString().c_str());
      return 1;
    }
    if (!job.spec.publish_as.empty()) published[job.spec.publish_as] = std::move(*outcome);
  }

  if (!o.reference_dir.empty()) {
    if (auto merged = report.MergeWith(fs::path(o.reference_dir) / "summary.txt"); !merged) {
      std::fprintf(stderr, "tolerance: %s\n", merged.error().ToString().c_str());
      return 1;
    }
    std::printf("(figures below: this run and the earlier runs in %s)\n", o.reference_dir.c_str());
  }
  const Figures& h = report.honest();
  const double honest_loss = Max(h.first_loss_rel, h.eval_loss_rel);
  std::printf(
      "honest maxima: rel_l2=%.3g first_loss_rel=%.3g eval_loss_rel=%.3g accuracy=%.4g "
      "(last_loss_rel=%.3g, not compared)\n",
      h.rel_l2, h.first_loss_rel, h.eval_loss_rel, h.accuracy_diff, h.last_loss_rel);
  double cheat_rel_l2 = NAN, cheat_loss = NAN;
  for (const auto& [kind, f] : report.cheats()) {
    std::printf(
        "cheat minima, %-22s rel_l2=%.3g first_loss_rel=%.3g eval_loss_rel=%.3g "
        "accuracy=%.4g\n",
        kind.c_str(), f.rel_l2, f.first_loss_rel, f.eval_loss_rel, f.accuracy_diff);
    cheat_rel_l2 = Min(cheat_rel_l2, f.rel_l2);
    // Only the cheats that start from other inputs show in the losses: the others train honestly
    // and then replace the update.
    if (kind.starts_with("stale") || kind.starts_with("eval") || kind == "label_flip") {
      cheat_loss = Min(cheat_loss, Max(f.first_loss_rel, f.eval_loss_rel));
    }
  }
  // 10x the honest maximum when that stays 10x below the nearest cheat; otherwise the geometric
  // mean of the two, the same factor away from both.
  double chosen = TenfoldRounded(h.rel_l2);
  if (!(chosen * 10 <= cheat_rel_l2)) {
    char mean[32];
    std::snprintf(mean, sizeof mean, "%.2g", std::sqrt(h.rel_l2 * cheat_rel_l2));
    chosen = std::strtod(mean, nullptr);
    std::printf(
        "note: honest (%.3g) and cheating (%.3g) updates are less than 100x apart: no tolerance is "
        "10x from both; chosen = their geometric mean, %.2gx from each\n",
        h.rel_l2, cheat_rel_l2, std::sqrt(cheat_rel_l2 / h.rel_l2));
  }
  std::printf(
      "proposed: update_rel_l2=%.3g loss_rel=%.3g (cheats from other inputs: >= %.3g) "
      "accuracy_abs=%.3g\n",
      chosen, TenfoldRounded(honest_loss), cheat_loss, TenfoldRounded(h.accuracy_diff));
  std::printf("tolerance: honest_max_rel_l2=%.3g cheat_min_rel_l2=%.3g chosen=%.3g\n", h.rel_l2,
              cheat_rel_l2, chosen);
  return 0;
}
