// SPDX-License-Identifier: Apache-2.0
// Checkpoint and resume of TrainShard (model.h) and the checkpoint codec
// (train_checkpoint.h): a run resumed from a checkpoint must end with the bits of an
// uninterrupted run, and a checkpoint that is corrupt, foreign or of another model is refused.
#include "ubcp/common/train_checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"

namespace ubcp::common {
namespace {

constexpr std::string_view kBinding = "manifest-hash-of-unit-7";
constexpr int kSteps = 10;

ModelSpec Spec(std::string_view s) {
  auto spec = ParseModelSpec(s);
  EXPECT_TRUE(spec) << s;
  return spec ? *spec : ModelSpec{};
}

// `rows` samples for `spec`: u8 28x28 images for the CNN, standardised-looking features for the
// MLP; labels < classes. 40 rows with batch 8 cross an epoch boundary within 10 steps.
TensorList Shard(const ModelSpec& spec, int rows, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  NamedTensor y{"y", TensorKind::kU8, {rows}, {}, {}};
  for (int r = 0; r < rows; ++r) y.u8.push_back(static_cast<std::uint8_t>(r % spec.classes));
  if (spec.arch == ModelSpec::Arch::kCnn28) {
    NamedTensor x{"x", TensorKind::kU8, {rows, 1, 28, 28}, {}, {}};
    for (std::int64_t i = 0; i < x.numel(); ++i) x.u8.push_back(static_cast<std::uint8_t>(rng()));
    return {x, y};
  }
  NamedTensor x{"x", TensorKind::kF32, {rows, spec.input}, {}, {}};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.f32.push_back(normal(rng));
  return {x, y};
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Bit equality of two tensor lists (names, shapes and every float's bits).
::testing::AssertionResult SameBits(const TensorList& a, const TensorList& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "tensor counts differ";
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].shape != b[i].shape || a[i].f32.size() != b[i].f32.size()) {
      return ::testing::AssertionFailure() << "layout differs at " << a[i].name;
    }
    if (std::memcmp(a[i].f32.data(), b[i].f32.data(), a[i].f32.size() * sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "bits differ in " << a[i].name;
    }
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  std::string spec;
  Optimizer optimizer;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.spec << (c.optimizer == Optimizer::kAdam ? " adam" : " sgd+momentum");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.spec.substr(0, 3);
  return name + (info.param.optimizer == Optimizer::kAdam ? "_adam" : "_sgd_momentum");
}

class TrainCheckpointTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitCrypto());
    spec_ = Spec(GetParam().spec);
    weights_ = InitModel(spec_, 11);
    data_ = Shard(spec_, 40, 5);
    params_.local_steps = kSteps;
    params_.batch_size = 8;
    params_.optimizer = GetParam().optimizer;
    params_.lr = params_.optimizer == Optimizer::kAdam ? 0.01 : 0.05;
    params_.momentum = 0.9;
    params_.weight_decay = 0.001;
    params_.seed = 3;
    params_.threads = 1;
  }

  Result<TrainOutcome> Train(const TrainParams& params) const {
    return TrainShard(spec_, weights_, data_, params);
  }

  // Trains with a checkpoint every `every` steps; returns the encoded checkpoints by step.
  std::vector<std::pair<int, Bytes>> Checkpoints(int every, TrainOutcome* outcome = nullptr) {
    std::vector<std::pair<int, Bytes>> saved;
    TrainParams p = params_;
    p.checkpoint_every = every;
    p.on_checkpoint = [&saved](const TrainCheckpoint& c) -> Status {
      saved.emplace_back(c.step, EncodeCheckpoint(c, kBinding));
      return {};
    };
    auto r = Train(p);
    EXPECT_TRUE(r) << r.error().ToString();
    if (r && outcome) *outcome = *r;
    return saved;
  }

  ModelSpec spec_;
  TensorList weights_;
  TensorList data_;
  TrainParams params_;
};

TEST_P(TrainCheckpointTest, ResumedRunIsBitIdenticalToUninterruptedRun) {
  auto full = Train(params_);
  ASSERT_TRUE(full) << full.error().ToString();

  TrainOutcome checkpointed;
  const auto saved = Checkpoints(4, &checkpointed);
  ASSERT_EQ(saved.size(), 2u);  // steps 4 and 8
  // Taking checkpoints does not change the run itself.
  EXPECT_TRUE(SameBits(checkpointed.delta, full->delta));

  for (const auto& [step, bytes] : saved) {
    SCOPED_TRACE("resumed from step " + std::to_string(step));
    auto checkpoint = DecodeCheckpoint(bytes, kBinding, spec_);
    ASSERT_TRUE(checkpoint) << checkpoint.error().ToString();
    EXPECT_EQ(checkpoint->step, step);
    std::vector<int> heard;
    TrainParams p = params_;
    p.resume = &*checkpoint;
    p.progress = [&heard](int done, int total) {
      EXPECT_EQ(total, kSteps);
      heard.push_back(done);
    };
    auto resumed = Train(p);
    ASSERT_TRUE(resumed) << resumed.error().ToString();
    EXPECT_TRUE(SameBits(resumed->delta, full->delta));
    EXPECT_TRUE(SameBits(resumed->first_loss, full->first_loss));
    EXPECT_TRUE(SameBits(resumed->last_loss, full->last_loss));
    EXPECT_EQ(resumed->samples, full->samples);
    ASSERT_FALSE(heard.empty());
    EXPECT_EQ(heard.front(), step + 1);  // progress continues from the checkpoint
    EXPECT_EQ(heard.back(), kSteps);
    EXPECT_EQ(heard.size(), static_cast<std::size_t>(kSteps - step));
  }
}

// The comparison above can fail: the same weights without the optimizer's state (momentum
// buffers, Adam moments) continue to a different result.
TEST_P(TrainCheckpointTest, OptimizerStateIsWhatMakesTheResumeExact) {
  auto full = Train(params_);
  ASSERT_TRUE(full);
  const auto saved = Checkpoints(4);
  ASSERT_FALSE(saved.empty());
  auto checkpoint = DecodeCheckpoint(saved.front().second, kBinding, spec_);
  ASSERT_TRUE(checkpoint);
  for (NamedTensor& t : checkpoint->optimizer_state) {
    for (float& v : t.f32) v *= 0.5f;
  }
  TrainParams p = params_;
  p.resume = &*checkpoint;
  auto resumed = Train(p);
  ASSERT_TRUE(resumed) << resumed.error().ToString();
  EXPECT_FALSE(SameBits(resumed->delta, full->delta));
}

TEST_P(TrainCheckpointTest, CheckpointsComeEveryNStepsButNotAtTheEnd) {
  std::vector<int> steps;
  for (const auto& [step, bytes] : Checkpoints(3)) steps.push_back(step);
  EXPECT_EQ(steps, (std::vector<int>{3, 6, 9}));
  steps.clear();
  for (const auto& [step, bytes] : Checkpoints(5)) steps.push_back(step);
  EXPECT_EQ(steps, (std::vector<int>{5}));  // step 10 is the end: its result is the outcome
  EXPECT_TRUE(Checkpoints(kSteps).empty());
}

TEST_P(TrainCheckpointTest, CheckpointHoldsTheOptimizerStateLayout) {
  const auto saved = Checkpoints(4);
  ASSERT_FALSE(saved.empty());
  auto checkpoint = DecodeCheckpoint(saved.front().second, kBinding, spec_);
  ASSERT_TRUE(checkpoint);
  EXPECT_EQ(checkpoint->optimizer, params_.optimizer);
  EXPECT_TRUE(CheckSameLayout(ModelLayout(spec_), checkpoint->weights));
  const TensorList expected = OptimizerStateLayout(spec_, params_.optimizer, params_.momentum);
  EXPECT_EQ(expected.size(),
            ModelLayout(spec_).size() * (params_.optimizer == Optimizer::kAdam ? 2 : 1));
  EXPECT_TRUE(CheckSameLayout(expected, checkpoint->optimizer_state));
  EXPECT_TRUE(CheckCheckpoint(spec_, params_, *checkpoint));
}

TEST_P(TrainCheckpointTest, CheckpointErrorStopsTraining) {
  int last_step = 0;
  TrainParams p = params_;
  p.checkpoint_every = 4;
  p.progress = [&last_step](int done, int) { last_step = done; };
  p.on_checkpoint = [](const TrainCheckpoint&) -> Status {
    return MakeError(Errc::kIo, "disk full");
  };
  auto r = Train(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kIo);
  EXPECT_EQ(last_step, 4);
}

TEST_P(TrainCheckpointTest, StopSavesACheckpointThatResumesExactly) {
  auto full = Train(params_);
  ASSERT_TRUE(full);
  for (int every : {0, 3}) {
    SCOPED_TRACE("checkpoint_every " + std::to_string(every));
    int done = 0;
    std::vector<std::pair<int, Bytes>> saved;
    TrainParams p = params_;
    p.checkpoint_every = every;
    p.progress = [&done](int d, int) { done = d; };
    p.should_stop = [&done] { return done >= 6; };
    p.on_checkpoint = [&saved](const TrainCheckpoint& c) -> Status {
      saved.emplace_back(c.step, EncodeCheckpoint(c, kBinding));
      return {};
    };
    auto stopped = Train(p);
    ASSERT_FALSE(stopped);
    EXPECT_EQ(stopped.error().code, Errc::kUnavailable);
    EXPECT_EQ(done, 6);
    // One checkpoint per step: at 6 the periodic one and the stop's are the same.
    const std::vector<int> expected = every == 0 ? std::vector<int>{6} : std::vector<int>{3, 6};
    std::vector<int> steps;
    for (const auto& [step, bytes] : saved) steps.push_back(step);
    EXPECT_EQ(steps, expected);
    ASSERT_FALSE(saved.empty());

    auto checkpoint = DecodeCheckpoint(saved.back().second, kBinding, spec_);
    ASSERT_TRUE(checkpoint) << checkpoint.error().ToString();
    TrainParams resume = params_;
    resume.resume = &*checkpoint;
    auto resumed = Train(resume);
    ASSERT_TRUE(resumed) << resumed.error().ToString();
    EXPECT_TRUE(SameBits(resumed->delta, full->delta));
    EXPECT_TRUE(SameBits(resumed->first_loss, full->first_loss));
    EXPECT_TRUE(SameBits(resumed->last_loss, full->last_loss));
  }
}

INSTANTIATE_TEST_SUITE_P(MlpAndCnn, TrainCheckpointTest,
                         ::testing::Values(Case{"mlp-i12-h16-o3", Optimizer::kSgd},
                                           Case{"mlp-i12-h16-o3", Optimizer::kAdam},
                                           Case{"cnn28-c2-c4-h8-o3", Optimizer::kSgd},
                                           Case{"cnn28-c2-c4-h8-o3", Optimizer::kAdam}),
                         CaseName);

// ---- the codec and the checks on a resume ----

class CheckpointCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitCrypto());
    spec_ = Spec("mlp-i12-h16-o3");
    weights_ = InitModel(spec_, 2);
    data_ = Shard(spec_, 40, 9);
    params_.local_steps = 6;
    params_.batch_size = 8;
    params_.optimizer = Optimizer::kAdam;
    params_.lr = 0.01;
    params_.threads = 1;
    params_.checkpoint_every = 3;
    params_.on_checkpoint = [this](const TrainCheckpoint& c) -> Status {
      checkpoint_ = c;
      return {};
    };
    auto r = TrainShard(spec_, weights_, data_, params_);
    ASSERT_TRUE(r) << r.error().ToString();
    ASSERT_EQ(checkpoint_.step, 3);
    params_.checkpoint_every = 0;
    params_.on_checkpoint = nullptr;
    bytes_ = EncodeCheckpoint(checkpoint_, kBinding);
  }

  // `bytes` with its body changed by `edit` and the digest made valid again: what passes the
  // integrity check but not the parser.
  static Bytes Rehash(Bytes bytes, const std::function<void(Bytes&)>& edit) {
    bytes.resize(bytes.size() - 32);
    edit(bytes);
    const Digest d = Blake2b256(bytes);
    bytes.insert(bytes.end(), d.bytes.begin(), d.bytes.end());
    return bytes;
  }

  ModelSpec spec_;
  TensorList weights_;
  TensorList data_;
  TrainParams params_;
  TrainCheckpoint checkpoint_;
  Bytes bytes_;
};

TEST_F(CheckpointCodecTest, RoundTripsExactly) {
  auto decoded = DecodeCheckpoint(bytes_, kBinding, spec_);
  ASSERT_TRUE(decoded) << decoded.error().ToString();
  EXPECT_EQ(decoded->step, checkpoint_.step);
  EXPECT_EQ(decoded->optimizer, checkpoint_.optimizer);
  EXPECT_TRUE(SameBits(decoded->first_loss, checkpoint_.first_loss));
  EXPECT_TRUE(SameBits(decoded->last_loss, checkpoint_.last_loss));
  EXPECT_TRUE(SameBits(decoded->weights, checkpoint_.weights));
  EXPECT_TRUE(SameBits(decoded->optimizer_state, checkpoint_.optimizer_state));
  EXPECT_EQ(EncodeCheckpoint(*decoded, kBinding), bytes_);
  EXPECT_LE(bytes_.size(), MaxCheckpointSize(spec_));
}

TEST_F(CheckpointCodecTest, AnyFlippedByteIsRefusedBeforeParsing) {
  // Every byte: the magic, the header, the tensors and the digest itself. A flipped magic or
  // version would be kMalformed / kUnsupportedVersion if it were parsed first.
  for (std::size_t i = 0; i < bytes_.size(); i += (i < 64 ? 1 : 97)) {
    Bytes bad = bytes_;
    bad[i] ^= 0x01;
    auto r = DecodeCheckpoint(bad, kBinding, spec_);
    ASSERT_FALSE(r) << "byte " << i;
    EXPECT_EQ(r.error().code, Errc::kHashMismatch) << "byte " << i;
  }
  Bytes last = bytes_;
  last.back() ^= 0x80;
  EXPECT_EQ(DecodeCheckpoint(last, kBinding, spec_).error().code, Errc::kHashMismatch);
  Bytes truncated(bytes_.begin(), bytes_.end() - 1);
  EXPECT_EQ(DecodeCheckpoint(truncated, kBinding, spec_).error().code, Errc::kHashMismatch);
  EXPECT_EQ(DecodeCheckpoint({}, kBinding, spec_).error().code, Errc::kMalformed);
}

TEST_F(CheckpointCodecTest, OtherBindingIsAConflict) {
  auto r = DecodeCheckpoint(bytes_, "manifest-hash-of-unit-8", spec_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_EQ(DecodeCheckpoint(bytes_, "", spec_).error().code, Errc::kConflict);
}

TEST_F(CheckpointCodecTest, LayoutOfAnotherSpecIsRefused) {
  // A slightly larger model: within its size bound, refused by the layout check.
  auto same_size = DecodeCheckpoint(bytes_, kBinding, Spec("mlp-i13-h16-o3"));
  ASSERT_FALSE(same_size);
  EXPECT_EQ(same_size.error().code, Errc::kMalformed);
  // A smaller model: refused on size before the digest is even computed.
  auto smaller = DecodeCheckpoint(bytes_, kBinding, Spec("mlp-i4-h4-o2"));
  ASSERT_FALSE(smaller);
  EXPECT_EQ(smaller.error().code, Errc::kTooLarge);
  // A larger model of another shape.
  EXPECT_FALSE(DecodeCheckpoint(bytes_, kBinding, Spec("cnn28-c2-c4-h8-o3")));
  // Through TrainShard: a decoded checkpoint of another model is refused as well.
  const ModelSpec other = Spec("mlp-i12-h8-o3");
  TrainParams p = params_;
  p.resume = &checkpoint_;
  auto r = TrainShard(other, InitModel(other, 2), data_, p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kMalformed);
}

TEST_F(CheckpointCodecTest, ParserRefusesWhatTheDigestCannotCatch) {
  // Offsets in the body: magic 0, version 4, binding digest 6, optimizer 38, step 39.
  const Bytes version = Rehash(bytes_, [](Bytes& b) { b[4] = 2; });
  EXPECT_EQ(DecodeCheckpoint(version, kBinding, spec_).error().code, Errc::kUnsupportedVersion);
  const Bytes magic = Rehash(bytes_, [](Bytes& b) { b[0] = 'X'; });
  EXPECT_EQ(DecodeCheckpoint(magic, kBinding, spec_).error().code, Errc::kMalformed);
  const Bytes optimizer = Rehash(bytes_, [](Bytes& b) { b[38] = 7; });
  EXPECT_EQ(DecodeCheckpoint(optimizer, kBinding, spec_).error().code, Errc::kMalformed);
  const Bytes zero_step =
      Rehash(bytes_, [](Bytes& b) { std::fill(b.begin() + 39, b.begin() + 43, 0); });
  EXPECT_EQ(DecodeCheckpoint(zero_step, kBinding, spec_).error().code, Errc::kMalformed);
  const Bytes trailing = Rehash(bytes_, [](Bytes& b) { b.push_back(0); });
  EXPECT_EQ(DecodeCheckpoint(trailing, kBinding, spec_).error().code, Errc::kMalformed);
  // An SGD header over Adam's state: the state does not fit an SGD checkpoint.
  const Bytes sgd = Rehash(bytes_, [](Bytes& b) { b[38] = 1; });
  EXPECT_EQ(DecodeCheckpoint(sgd, kBinding, spec_).error().code, Errc::kMalformed);
  // A tensor-list length past the end.
  const Bytes long_list = Rehash(bytes_, [](Bytes& b) { b[66] = 0x7f; });
  EXPECT_EQ(DecodeCheckpoint(long_list, kBinding, spec_).error().code, Errc::kMalformed);
}

TEST_F(CheckpointCodecTest, ResumeIsCheckedAgainstTheParams) {
  TrainParams p = params_;
  p.resume = &checkpoint_;
  ASSERT_TRUE(TrainShard(spec_, weights_, data_, p));

  TrainParams shorter = p;  // the checkpoint's step is not inside the unit
  shorter.local_steps = checkpoint_.step;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, shorter).error().code, Errc::kInvalidArgument);
  TrainParams sgd = p;  // another optimizer
  sgd.optimizer = Optimizer::kSgd;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, sgd).error().code, Errc::kInvalidArgument);

  TrainCheckpoint nan_weight = checkpoint_;
  nan_weight.weights[0].f32[0] = std::numeric_limits<float>::quiet_NaN();
  p.resume = &nan_weight;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kMalformed);
  TrainCheckpoint inf_state = checkpoint_;
  inf_state.optimizer_state[1].f32[0] = std::numeric_limits<float>::infinity();
  p.resume = &inf_state;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kMalformed);
  TrainCheckpoint no_state = checkpoint_;
  no_state.optimizer_state.clear();
  p.resume = &no_state;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kMalformed);
  TrainCheckpoint step0 = checkpoint_;
  step0.step = 0;
  p.resume = &step0;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kInvalidArgument);
}

TEST_F(CheckpointCodecTest, SgdWithoutMomentumHasNoState) {
  TrainParams p = params_;
  p.optimizer = Optimizer::kSgd;
  p.momentum = 0;
  p.lr = 0.05;
  p.checkpoint_every = 2;
  TrainCheckpoint got;
  p.on_checkpoint = [&got](const TrainCheckpoint& c) -> Status {
    if (c.step == 2) got = c;
    return {};
  };
  auto full = TrainShard(spec_, weights_, data_, p);
  ASSERT_TRUE(full);
  EXPECT_TRUE(got.optimizer_state.empty());
  auto decoded = DecodeCheckpoint(EncodeCheckpoint(got, kBinding), kBinding, spec_);
  ASSERT_TRUE(decoded) << decoded.error().ToString();
  p.checkpoint_every = 0;
  p.resume = &*decoded;
  auto resumed = TrainShard(spec_, weights_, data_, p);
  ASSERT_TRUE(resumed);
  EXPECT_TRUE(SameBits(resumed->delta, full->delta));
  EXPECT_TRUE(SameBits(resumed->last_loss, full->last_loss));
  // The same checkpoint under momentum: its missing buffers are refused.
  p.momentum = 0.9;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kMalformed);
}

TEST_F(CheckpointCodecTest, StopIsNotAskedAfterTheLastStep) {
  int asked = 0;
  TrainParams p = params_;
  p.local_steps = 1;
  p.should_stop = [&asked] {
    ++asked;
    return true;
  };
  EXPECT_TRUE(TrainShard(spec_, weights_, data_, p));  // the only step is the last
  EXPECT_EQ(asked, 0);
  p.local_steps = 3;
  auto r = TrainShard(spec_, weights_, data_, p);  // no on_checkpoint: stops all the same
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
  EXPECT_EQ(asked, 1);
}

TEST_F(CheckpointCodecTest, EvaluationStopsBetweenBatches) {
  const TensorList eval_data = Shard(spec_, 1500, 4);  // two evaluation batches
  int batches = 0;
  const LoopProgress progress = [&batches](int done, int) { batches = done; };
  auto stopped = Evaluate(spec_, weights_, eval_data, 1, progress, [] { return true; });
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().code, Errc::kUnavailable);
  EXPECT_EQ(batches, 1);
  auto full = Evaluate(spec_, weights_, eval_data, 1, progress, [] { return false; });
  ASSERT_TRUE(full);
  EXPECT_EQ(batches, 2);
}

TEST_F(CheckpointCodecTest, CheckpointEveryIsValidated) {
  TrainParams p = params_;
  p.checkpoint_every = -1;
  EXPECT_EQ(TrainShard(spec_, weights_, data_, p).error().code, Errc::kInvalidArgument);
}

}  // namespace
}  // namespace ubcp::common
