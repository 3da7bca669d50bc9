// SPDX-License-Identifier: Apache-2.0
#pragma once
// The model zoo and the two kinds of work a donor runs: K local optimizer steps on a shard
// (finetune_shard) and metrics of a model on a batch (eval_batch). libtorch is used only in the
// .cc files behind this header: callers see framework-free TensorLists, so a model is loaded by
// copying checked tensors into a freshly built module, never by unpickling anything.
//
// Model spec strings name an architecture with its hyper-parameters:
//   "mlp-i<in>-h<hidden>-o<classes>"            e.g. mlp-i784-h128-o10, mlp-i30-h32-o2
//   "cnn28-c<c1>-c<c2>-h<hidden>-o<classes>"    e.g. cnn28-c16-c32-h64-o10 (1x28x28 input)
// Models have parameters only (no buffers, no batch norm), so a TensorList of parameters in
// named_parameters() order is the whole state.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"

namespace ubcp::common {

struct ModelSpec {
  enum class Arch { kMlp, kCnn28 };
  Arch arch = Arch::kMlp;
  int input = 0;  // mlp: input features (data x is [N, input] or [N,1,28,28] flattened)
  int c1 = 0, c2 = 0;
  int hidden = 0;
  int classes = 0;
  std::string ToString() const;  // canonical spec string
};
// Strict parse of a spec string; kInvalidArgument on anything else. Sizes bounded (<= 4096).
Result<ModelSpec> ParseModelSpec(std::string_view spec);

// Deterministic initialisation from a seed (same seed -> bit-identical tensors).
TensorList InitModel(const ModelSpec& spec, std::uint64_t seed);
// Names, kinds and shapes of the model's parameters (values zero): the expected layout against
// which every received weight or update TensorList is checked.
TensorList ModelLayout(const ModelSpec& spec);
// Forward+backward FLOP for one training sample (~3x forward), used for pricing and capacity.
std::int64_t TrainFlopsPerSample(const ModelSpec& spec);
std::int64_t EvalFlopsPerSample(const ModelSpec& spec);

// Data shard layout: "x" is kU8 [N,1,28,28] (pixels 0..255, scaled to [0,1] when used) or kF32
// [N,F] (already standardised features); "y" is kU8 [N] class labels < classes.
Status CheckDataShard(const ModelSpec& spec, const TensorList& data);

enum class Optimizer { kSgd, kAdam };
// Progress of a loop: `done` of `total` iterations. Called on the calling thread after each
// iteration; must not throw. An empty function is never called.
using LoopProgress = std::function<void(int done, int total)>;
// Asked on the calling thread after each iteration but the last: true stops the loop, which then
// returns kUnavailable (and nothing else in these loops does). Must be cheap and not throw.
using StopRequest = std::function<bool()>;

// TrainShard's state after `step` optimizer steps: enough to continue and end with the bits an
// uninterrupted run ends with (same machine, same torch thread count). The batch order is not
// stored: it is replayed from TrainParams::seed. Bytes: ubcp/common/train_checkpoint.h.
struct TrainCheckpoint {
  int step = 0;  // optimizer steps done; resumable when 1 <= step < local_steps
  Optimizer optimizer = Optimizer::kSgd;
  TensorList weights;          // after `step` steps, in ModelLayout order
  TensorList optimizer_state;  // OptimizerStateLayout (train_checkpoint.h) of the optimizer
  double first_loss = 0;       // mean loss of step 1's batch
  double last_loss = 0;        // mean loss of step `step`'s batch
};
using CheckpointSink = std::function<Status(const TrainCheckpoint&)>;

struct TrainParams {
  int local_steps = 10;
  int batch_size = 32;
  double lr = 0.05;
  double momentum = 0.9;  // SGD only
  double weight_decay = 0.0;
  Optimizer optimizer = Optimizer::kSgd;
  std::uint64_t seed = 1;  // batch sampling order
  int threads = 0;         // torch intra-op threads; 0 = leave as configured
  LoopProgress progress;   // optional: hears (step, local_steps) after each optimizer step
  // Every checkpoint_every-th step except the last (0 = never), and when should_stop stops the
  // run, on_checkpoint (when set) gets the state; an error from it stops training and
  // TrainShard returns it. A state that is not finite (training diverging) is not handed out.
  int checkpoint_every = 0;
  // Also after the first step that ends checkpoint_seconds or more after the previous checkpoint
  // (or the start): 0 = never. Which steps these are depends on the machine's speed, never the
  // result.
  double checkpoint_seconds = 0;
  CheckpointSink on_checkpoint;
  StopRequest should_stop;  // optional: stops (kUnavailable) after a checkpoint, to resume later
  // Not owned; when set, training continues from it instead of from step 0 (`weights` stay the
  // initial weights the delta is taken against). It must pass CheckCheckpoint for these params.
  const TrainCheckpoint* resume = nullptr;
};

struct TrainOutcome {
  TensorList delta;          // trained - initial, same layout as the weights
  double first_loss = 0;     // mean loss of the first step's batch
  double last_loss = 0;      // mean loss of the last step's batch
  std::int64_t samples = 0;  // local_steps x batch, also when resumed
};
// Runs local_steps optimizer steps from `weights` on `data` (or the rest of them from
// params.resume). Errors: kMalformed when weights, data or the resumed checkpoint do not fit the
// spec, kInvalidArgument for bad params, kUnavailable when should_stop stopped it, on_checkpoint's
// error.
Result<TrainOutcome> TrainShard(const ModelSpec& spec, const TensorList& weights,
                                const TensorList& data, const TrainParams& params);

struct EvalOutcome {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // fraction correct
  std::int64_t samples = 0;
};
// `progress`, when set, hears (batch, batches) after each evaluation batch; `should_stop` stops
// the evaluation (kUnavailable).
Result<EvalOutcome> Evaluate(const ModelSpec& spec, const TensorList& weights,
                             const TensorList& data, int threads = 0,
                             const LoopProgress& progress = {},
                             const StopRequest& should_stop = {});
// The number of batches Evaluate runs over `rows` samples (the `total` its progress hears).
int EvalBatches(std::int64_t rows);

// Sets torch's intra-op thread count (call once at start; torch here defaults to 1).
void SetTorchThreads(int threads);
// For a process that trains (the worker, and the benchmarks' baselines): fixes glibc's malloc
// thresholds (mmap at 32 MiB, heap trimming at 64 MiB) instead of its dynamic ones. A training
// step allocates and frees temporaries of a few MiB (a CNN's activations); depending on what the
// process freed before, the dynamic thresholds send them through mmap/munmap or grow and trim
// the heap at every step, and the page faults cost up to half the step: the same CNN trained at
// 3,300 to 6,300 samples/s from one process to the next, and at 6,400 to 6,500 with this.
// Resident memory stays bounded by the peak use. No effect with another C library.
void ConfigureAllocatorForTraining();
std::string TorchVersion();
// Number of CUDA devices libtorch can use (0 when built without CUDA or none present).
int CudaDeviceCount();

}  // namespace ubcp::common
