// SPDX-License-Identifier: Apache-2.0
// The libtorch half of the model zoo: modules built from a ModelSpec, checked copies between
// TensorLists and module parameters, local training and evaluation. Everything that reaches
// libtorch has been validated against the spec first; libtorch exceptions stop at this file.
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ubcp/common/model.h"
#include "ubcp/common/train_checkpoint.h"

namespace ubcp::common {
namespace {

namespace F = torch::nn::functional;

constexpr int kMaxThreads = 256;
constexpr int kMaxLocalSteps = 1'000'000;
constexpr int kMaxBatch = 65536;
constexpr std::int64_t kEvalBatch = 1024;

// Parameter names and order must equal ModelLayout(spec); LoadWeights checks that they do.
class ZooNet : public torch::nn::Module {
 public:
  explicit ZooNet(const ModelSpec& spec) : spec_(spec) {
    const std::int64_t h = spec.hidden, c = spec.classes;
    if (spec.arch == ModelSpec::Arch::kCnn28) {
      conv1_ = register_module(
          "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, spec.c1, 3).padding(1)));
      conv2_ = register_module(
          "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.c1, spec.c2, 3).padding(1)));
      fc1_ = register_module("fc1", torch::nn::Linear(std::int64_t{spec.c2} * 7 * 7, h));
    } else {
      fc1_ = register_module("fc1", torch::nn::Linear(spec.input, h));
    }
    fc2_ = register_module("fc2", torch::nn::Linear(h, c));
  }

  // x: float [N, ...] holding N samples; returns logits [N, classes].
  torch::Tensor Forward(torch::Tensor x) {
    const std::int64_t n = x.size(0);
    if (spec_.arch == ModelSpec::Arch::kCnn28) {
      x = x.reshape({n, 1, 28, 28});
      x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
      x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
    }
    x = x.reshape({n, -1});
    return fc2_->forward(torch::relu(fc1_->forward(x)));
  }

 private:
  ModelSpec spec_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

torch::Tensor FloatView(const NamedTensor& t) {
  // from_blob wants a mutable pointer; these views are only read.
  return torch::from_blob(const_cast<float*>(t.f32.data()), t.shape, torch::kFloat);
}

torch::Tensor ByteView(const NamedTensor& t) {
  return torch::from_blob(const_cast<std::uint8_t*>(t.u8.data()), t.shape, torch::kUInt8);
}

Status CheckWeights(const ModelSpec& spec, const TensorList& weights) {
  UBCP_RETURN_IF_ERROR(CheckSameLayout(ModelLayout(spec), weights));
  for (const NamedTensor& w : weights) {
    if (static_cast<std::int64_t>(w.f32.size()) != w.numel()) {
      return MakeError(Errc::kMalformed, "weight '" + w.name + "' storage does not match shape");
    }
    for (float v : w.f32) {
      if (!std::isfinite(v)) {
        return MakeError(Errc::kMalformed, "weight '" + w.name + "' is not finite");
      }
    }
  }
  return {};
}

Status CheckParams(const TrainParams& p) {
  if (p.local_steps < 1 || p.local_steps > kMaxLocalSteps) {
    return MakeError(Errc::kInvalidArgument, "local_steps out of range");
  }
  if (p.batch_size < 1 || p.batch_size > kMaxBatch) {
    return MakeError(Errc::kInvalidArgument, "batch_size out of range");
  }
  if (!std::isfinite(p.lr) || p.lr <= 0 || p.lr > 100) {
    return MakeError(Errc::kInvalidArgument, "lr must be in (0, 100]");
  }
  if (!std::isfinite(p.momentum) || p.momentum < 0 || p.momentum >= 1) {
    return MakeError(Errc::kInvalidArgument, "momentum must be in [0, 1)");
  }
  if (!std::isfinite(p.weight_decay) || p.weight_decay < 0 || p.weight_decay > 1) {
    return MakeError(Errc::kInvalidArgument, "weight_decay must be in [0, 1]");
  }
  if (p.optimizer != Optimizer::kSgd && p.optimizer != Optimizer::kAdam) {
    return MakeError(Errc::kInvalidArgument, "unknown optimizer");
  }
  if (p.threads < 0 || p.threads > kMaxThreads) {
    return MakeError(Errc::kInvalidArgument, "threads out of range");
  }
  if (!std::isfinite(p.checkpoint_seconds) || p.checkpoint_seconds < 0) {
    return MakeError(Errc::kInvalidArgument, "checkpoint_seconds must be >= 0");
  }
  if (p.checkpoint_every < 0 || p.checkpoint_every > kMaxLocalSteps) {
    return MakeError(Errc::kInvalidArgument, "checkpoint_every out of range");
  }
  return {};
}

void ApplyThreads(int threads) {
  if (threads > 0 && torch::get_num_threads() != threads) torch::set_num_threads(threads);
}

Status LoadWeights(ZooNet& net, const TensorList& weights) {
  auto params = net.named_parameters(/*recurse=*/true);
  if (params.size() != weights.size()) {
    return MakeError(Errc::kInternal, "module and layout disagree on the parameter count");
  }
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const NamedTensor& w = weights[i];
    torch::Tensor& p = params[i].value();
    if (params[i].key() != w.name || !p.sizes().equals(w.shape)) {
      return MakeError(Errc::kInternal, "module parameter '" + params[i].key() +
                                            "' does not match layout entry '" + w.name + "'");
    }
    p.copy_(FloatView(w));
  }
  return {};
}

// Where training and evaluation run: the first CUDA device when this libtorch has CUDA and sees
// one, else the CPU. Inputs are checked on the CPU and copied there; what leaves (deltas,
// checkpoints, metrics) is copied back to the CPU.
torch::Device ComputeDevice() {
  static const torch::Device device = [] {
    try {
      if (torch::cuda::is_available()) return torch::Device(torch::kCUDA, 0);
    } catch (const std::exception&) {
    }
    return torch::Device(torch::kCPU);
  }();
  return device;
}

NamedTensor ToNamed(const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  NamedTensor out;
  out.name = name;
  out.kind = TensorKind::kF32;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  const float* p = c.data_ptr<float>();
  out.f32.assign(p, p + c.numel());
  return out;
}

// Rows `idx` of the shard as float; u8 pixels scale to [0, 1].
torch::Tensor Gather(const torch::Tensor& x_all, bool is_u8, const torch::Tensor& idx) {
  torch::Tensor xb = x_all.index_select(0, idx).to(torch::kFloat);
  if (is_u8) xb.div_(255.0f);
  return xb;
}

torch::Tensor DataX(const NamedTensor& x) {
  return x.kind == TensorKind::kU8 ? ByteView(x) : FloatView(x);
}

// Uniform in [0, bound) by rejection, so the sequence does not depend on the standard library's
// distribution implementation.
std::uint64_t UniformBelow(std::mt19937_64& rng, std::uint64_t bound) {
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
  std::uint64_t r;
  do {
    r = rng();
  } while (r >= limit);
  return r % bound;
}

void Shuffle(std::vector<std::int64_t>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[UniformBelow(rng, i)]);
  }
}

// Deterministic batch order: a fresh seeded permutation of the shard per epoch, consumed in
// order and continued across epoch boundaries.
class BatchSampler {
 public:
  BatchSampler(std::int64_t rows, std::uint64_t seed) : rng_(seed), perm_(rows) {
    for (std::int64_t i = 0; i < rows; ++i) perm_[i] = i;
    Shuffle(perm_, rng_);
  }
  // Draws `batches` batches and drops them: where a resumed run's order continues.
  void Skip(int batches, int batch) {
    for (int i = 0; i < batches; ++i) Next(batch);
  }
  std::vector<std::int64_t> Next(int batch) {
    std::vector<std::int64_t> out(batch);
    for (int i = 0; i < batch; ++i) {
      if (pos_ == perm_.size()) {
        Shuffle(perm_, rng_);
        pos_ = 0;
      }
      out[i] = perm_[pos_++];
    }
    return out;
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::int64_t> perm_;
  std::size_t pos_ = 0;
};

// Optimizer::state() is keyed by to_string(TensorImpl*) in libtorch 1.x and by the TensorImpl*
// itself in 2.x; the key is built the way the installed libtorch builds it, from the map's key
// type. The string form is what 1.x's c10::guts::to_string writes (operator<< of the pointer);
// a key that step() would not find is caught after the next step (state size check).
using StateMap = std::remove_cvref_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;

template <class Map = StateMap>
typename Map::key_type StateKey(const torch::Tensor& param) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;
    key << param.unsafeGetTensorImpl();
    return key.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

// An owned, contiguous fp32 copy of a checked tensor on the compute device.
torch::Tensor OwnedTensor(const NamedTensor& t) {
  return FloatView(t).to(ComputeDevice(), torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
}

// Copies the optimizer's per-parameter state out in OptimizerStateLayout order. kInternal if the
// optimizer does not hold the state that layout promises.
Result<TensorList> CaptureOptimizerState(torch::optim::Optimizer& opt, const TrainParams& params,
                                         const std::vector<std::string>& names, int step) {
  TensorList out;
  const auto& group = opt.param_groups().at(0).params();
  if (params.optimizer == Optimizer::kSgd && params.momentum == 0) return out;
  for (std::size_t i = 0; i < group.size(); ++i) {
    auto found = opt.state().find(StateKey(group[i]));
    if (found == opt.state().end()) {
      return MakeError(Errc::kInternal, "optimizer holds no state for '" + names[i] + "'");
    }
    if (params.optimizer == Optimizer::kAdam) {
      const auto& st = static_cast<const torch::optim::AdamParamState&>(*found->second);
      if (st.step() != step) {
        return MakeError(Errc::kInternal, "Adam step count of '" + names[i] + "' is not the step");
      }
      out.push_back(ToNamed(names[i] + ".exp_avg", st.exp_avg()));
      out.push_back(ToNamed(names[i] + ".exp_avg_sq", st.exp_avg_sq()));
    } else {
      const auto& st = static_cast<const torch::optim::SGDParamState&>(*found->second);
      out.push_back(ToNamed(names[i] + ".momentum_buffer", st.momentum_buffer()));
    }
  }
  return out;
}

// Puts a checked checkpoint's state into a fresh optimizer, where step() would otherwise have
// created it (keyed as step() looks it up).
void RestoreOptimizerState(torch::optim::Optimizer& opt, const TrainParams& params,
                           const TrainCheckpoint& checkpoint) {
  const auto& group = opt.param_groups().at(0).params();
  const TensorList& state = checkpoint.optimizer_state;
  if (params.optimizer == Optimizer::kAdam) {
    for (std::size_t i = 0; i < group.size(); ++i) {
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->step(static_cast<std::remove_cvref_t<decltype(st->step())>>(checkpoint.step));
      st->exp_avg(OwnedTensor(state[2 * i]));
      st->exp_avg_sq(OwnedTensor(state[2 * i + 1]));
      opt.state()[StateKey(group[i])] = std::move(st);
    }
  } else if (!state.empty()) {
    for (std::size_t i = 0; i < group.size(); ++i) {
      auto st = std::make_unique<torch::optim::SGDParamState>();
      st->momentum_buffer(OwnedTensor(state[i]));
      opt.state()[StateKey(group[i])] = std::move(st);
    }
  }
}

bool AllFinite(const TensorList& tensors) {
  for (const NamedTensor& t : tensors) {
    for (float v : t.f32) {
      if (!std::isfinite(v)) return false;
    }
  }
  return true;
}

Error FromException(const std::exception& e) {
  return MakeError(Errc::kInternal, std::string("libtorch: ") + e.what());
}

Result<TrainOutcome> TrainChecked(const ModelSpec& spec, const TensorList& weights,
                                  const TensorList& data, const TrainParams& params) {
  ApplyThreads(params.threads);
  const NamedTensor& x = *FindTensor(data, "x");
  const NamedTensor& y = *FindTensor(data, "y");
  const bool is_u8 = x.kind == TensorKind::kU8;
  const torch::Device device = ComputeDevice();
  torch::Tensor x_all = DataX(x).to(device);
  torch::Tensor y_all = ByteView(y).to(device);

  const TrainCheckpoint* resume = params.resume;
  auto net = std::make_shared<ZooNet>(spec);
  UBCP_RETURN_IF_ERROR(LoadWeights(*net, resume ? resume->weights : weights));
  net->to(device);  // before the optimizer takes the parameters
  net->train();
  std::vector<std::string> names;
  for (const NamedTensor& w : weights) names.push_back(w.name);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (params.optimizer == Optimizer::kAdam) {
    opt = std::make_unique<torch::optim::Adam>(
        net->parameters(), torch::optim::AdamOptions(params.lr).weight_decay(params.weight_decay));
  } else {
    opt = std::make_unique<torch::optim::SGD>(net->parameters(),
                                              torch::optim::SGDOptions(params.lr)
                                                  .momentum(params.momentum)
                                                  .weight_decay(params.weight_decay));
  }

  TrainOutcome outcome;
  BatchSampler sampler(y.shape[0], params.seed);
  int first_step = 0;
  if (resume) {
    RestoreOptimizerState(*opt, params, *resume);
    sampler.Skip(resume->step, params.batch_size);
    first_step = resume->step;
    outcome.first_loss = resume->first_loss;
    outcome.last_loss = resume->last_loss;
  }
  const std::size_t state_entries =
      OptimizerStateLayout(spec, params.optimizer, params.momentum).size();
  auto last_checkpoint = std::chrono::steady_clock::now();
  for (int step = first_step; step < params.local_steps; ++step) {
    std::vector<std::int64_t> rows = sampler.Next(params.batch_size);
    torch::Tensor idx = torch::from_blob(rows.data(), {params.batch_size}, torch::kLong).to(device);
    torch::Tensor xb = Gather(x_all, is_u8, idx);
    torch::Tensor yb = y_all.index_select(0, idx).to(torch::kLong);
    opt->zero_grad();
    torch::Tensor loss = F::cross_entropy(net->Forward(xb), yb);
    loss.backward();
    opt->step();
    // A restored state under a key step() does not look up would be silently replaced by a
    // fresh one: the map would then hold more entries than parameters.
    const std::size_t per_param = params.optimizer == Optimizer::kAdam ? 2 : 1;
    if (opt->state().size() * per_param != state_entries) {
      return MakeError(Errc::kInternal, "optimizer state does not match its parameters");
    }
    const double value = loss.item<double>();
    if (step == 0) outcome.first_loss = value;
    outcome.last_loss = value;
    if (params.progress) params.progress(step + 1, params.local_steps);
    const int done = step + 1;
    if (done == params.local_steps) break;  // the outcome itself is the last state
    const bool due =
        (params.checkpoint_every > 0 && done % params.checkpoint_every == 0) ||
        (params.checkpoint_seconds > 0 &&
         std::chrono::duration<double>(std::chrono::steady_clock::now() - last_checkpoint)
                 .count() >= params.checkpoint_seconds);
    const bool stop = params.should_stop && params.should_stop();
    if (params.on_checkpoint && (due || stop)) {
      TrainCheckpoint checkpoint;
      checkpoint.step = done;
      checkpoint.optimizer = params.optimizer;
      auto current = net->named_parameters(/*recurse=*/true);
      for (std::size_t i = 0; i < names.size(); ++i) {
        checkpoint.weights.push_back(ToNamed(names[i], current[i].value()));
      }
      UBCP_ASSIGN_OR_RETURN(checkpoint.optimizer_state,
                            CaptureOptimizerState(*opt, params, names, done));
      checkpoint.first_loss = outcome.first_loss;
      checkpoint.last_loss = outcome.last_loss;
      if (AllFinite(checkpoint.weights) && AllFinite(checkpoint.optimizer_state) &&
          std::isfinite(checkpoint.first_loss) && std::isfinite(checkpoint.last_loss)) {
        UBCP_RETURN_IF_ERROR(params.on_checkpoint(checkpoint));
      }
      last_checkpoint = std::chrono::steady_clock::now();
    }
    if (stop) {
      return MakeError(Errc::kUnavailable, "training stopped on request after step " +
                                               std::to_string(done) + " of " +
                                               std::to_string(params.local_steps));
    }
  }
  outcome.samples = std::int64_t{params.local_steps} * params.batch_size;

  auto trained = net->named_parameters(/*recurse=*/true);
  outcome.delta.reserve(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    NamedTensor d =
        ToNamed(weights[i].name, trained[i].value().to(torch::kCPU) - FloatView(weights[i]));
    for (float v : d.f32) {
      if (!std::isfinite(v)) {
        return MakeError(Errc::kInvalidArgument,
                         "training diverged (non-finite weights); lower the learning rate");
      }
    }
    outcome.delta.push_back(std::move(d));
  }
  return outcome;
}

Result<EvalOutcome> EvaluateChecked(const ModelSpec& spec, const TensorList& weights,
                                    const TensorList& data, int threads,
                                    const LoopProgress& progress, const StopRequest& should_stop) {
  ApplyThreads(threads);
  const NamedTensor& x = *FindTensor(data, "x");
  const NamedTensor& y = *FindTensor(data, "y");
  const bool is_u8 = x.kind == TensorKind::kU8;
  const torch::Device device = ComputeDevice();
  torch::Tensor x_all = DataX(x).to(device);
  torch::Tensor y_all = ByteView(y).to(device);

  auto net = std::make_shared<ZooNet>(spec);
  UBCP_RETURN_IF_ERROR(LoadWeights(*net, weights));
  net->to(device);
  net->eval();
  torch::NoGradGuard no_grad;
  const std::int64_t rows = y.shape[0];
  double loss_sum = 0;
  std::int64_t correct = 0;
  const int batches = EvalBatches(rows);
  int batch = 0;
  for (std::int64_t start = 0; start < rows; start += kEvalBatch) {
    const std::int64_t len = std::min(kEvalBatch, rows - start);
    torch::Tensor xb = x_all.narrow(0, start, len).to(torch::kFloat);
    if (is_u8) xb.div_(255.0f);
    torch::Tensor yb = y_all.narrow(0, start, len).to(torch::kLong);
    torch::Tensor logits = net->Forward(xb);
    loss_sum += F::cross_entropy(logits, yb, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(yb).sum().item<std::int64_t>();
    if (progress) progress(++batch, batches);
    if (batch < batches && should_stop && should_stop()) {
      return MakeError(Errc::kUnavailable, "evaluation stopped on request");
    }
  }
  EvalOutcome outcome;
  outcome.samples = rows;
  outcome.loss = loss_sum / static_cast<double>(rows);
  outcome.accuracy = static_cast<double>(correct) / static_cast<double>(rows);
  return outcome;
}

}  // namespace

Result<TrainOutcome> TrainShard(const ModelSpec& spec, const TensorList& weights,
                                const TensorList& data, const TrainParams& params) {
  UBCP_RETURN_IF_ERROR(CheckParams(params));
  UBCP_RETURN_IF_ERROR(CheckDataShard(spec, data));
  UBCP_RETURN_IF_ERROR(CheckWeights(spec, weights));
  if (params.resume) UBCP_RETURN_IF_ERROR(CheckCheckpoint(spec, params, *params.resume));
  try {
    return TrainChecked(spec, weights, data, params);
  } catch (const std::exception& e) {  // c10::Error derives from std::exception
    return FromException(e);
  }
}

int EvalBatches(std::int64_t rows) {
  return rows <= 0 ? 0 : static_cast<int>((rows + kEvalBatch - 1) / kEvalBatch);
}

Result<EvalOutcome> Evaluate(const ModelSpec& spec, const TensorList& weights,
                             const TensorList& data, int threads, const LoopProgress& progress,
                             const StopRequest& should_stop) {
  if (threads < 0 || threads > kMaxThreads) {
    return MakeError(Errc::kInvalidArgument, "threads out of range");
  }
  UBCP_RETURN_IF_ERROR(CheckDataShard(spec, data));
  UBCP_RETURN_IF_ERROR(CheckWeights(spec, weights));
  try {
    return EvaluateChecked(spec, weights, data, threads, progress, should_stop);
  } catch (const std::exception& e) {
    return FromException(e);
  }
}

void SetTorchThreads(int threads) {
  if (threads < 1 || threads > kMaxThreads) return;
  try {
    torch::set_num_threads(threads);
  } catch (const std::exception&) {
    // Only a non-positive count throws, and that was excluded above.
  }
}

void ConfigureAllocatorForTraining() {
#if defined(__GLIBC__)
  // Setting either disables glibc's dynamic adjustment of both, so both are set: the mmap
  // threshold at its 64-bit maximum, trimming only above 64 MiB of free heap top.
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

std::string TorchVersion() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

int CudaDeviceCount() {
  try {
    if (!torch::cuda::is_available()) return 0;
    return static_cast<int>(torch::cuda::device_count());
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace ubcp::common
