// SPDX-License-Identifier: Apache-2.0
// ExecuteUnit's checkpoint options (executor.h): a finetune unit stopped or killed after a
// checkpoint and executed again from it uploads the bytes an uninterrupted execution uploads; a
// checkpoint that is corrupt, bound to another unit or made under other parameters is ignored
// (the unit starts from step 0, never from a wrong state).

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support/replica_unit.h"
#include "ubcp/client/executor.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {
namespace {

constexpr char kSpec[] = "mlp-i12-h16-o3";
constexpr int kSteps = 10;

common::TensorList Shard(int rows) {
  std::mt19937_64 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  common::NamedTensor x{"x", common::TensorKind::kF32, {rows, 12}, {}, {}};
  common::NamedTensor y{"y", common::TensorKind::kU8, {rows}, {}, {}};
  for (std::int64_t i = 0; i < x.numel(); ++i) x.f32.push_back(normal(rng));
  for (int r = 0; r < rows; ++r) y.u8.push_back(static_cast<std::uint8_t>(r % 3));
  return {x, y};
}

class ExecutorCheckpointTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::InitCrypto());
    const common::ModelSpec spec = *common::ParseModelSpec(kSpec);
    unit_ =
        testing::MakeReplicaUnit(common::kUnitFinetune, kSpec, common::InitModel(spec, 4),
                                 Shard(48), {kSteps, 8, 0.02, 0.9, 0.001, GetParam(), 6}, "fp32");
    binding_ = common::ContentId(common::AsBytes("manifest of unit 1"));
    auto full = Run({});
    ASSERT_TRUE(full) << full.error().ToString();
    full_ = std::move(*full);
  }

  common::Result<UnitOutput> Run(const CheckpointOptions& options,
                                 std::vector<std::int64_t>* heard = nullptr) const {
    ProgressFn progress;
    if (heard) progress = [heard](std::int64_t done, std::int64_t) { heard->push_back(done); };
    return ExecuteUnit(unit_.manifest, unit_.model.bytes, unit_.data.bytes, 1, {}, progress,
                       options);
  }

  // Checkpoints every `every` steps into `saved`; with `done` (the progress heard), stops once
  // step `stop_at` is done.
  CheckpointOptions Saving(int every, std::vector<common::Bytes>& saved, int stop_at = 0,
                           const std::int64_t* done = nullptr) const {
    CheckpointOptions o;
    o.every_steps = every;
    o.binding = binding_;
    o.save = [&saved](common::ByteSpan b) -> common::Status {
      saved.emplace_back(b.begin(), b.end());
      return {};
    };
    if (done) o.should_stop = [done, stop_at] { return *done >= stop_at; };
    return o;
  }

  void ExpectSameAsUninterrupted(const common::Result<UnitOutput>& out) const {
    ASSERT_TRUE(out) << out.error().ToString();
    ASSERT_TRUE(out->update);
    EXPECT_EQ(out->update->bytes, full_.update->bytes);  // the uploaded blob, byte for byte
    EXPECT_EQ(out->metrics.loss, full_.metrics.loss);
    EXPECT_EQ(out->metrics.first_loss, full_.metrics.first_loss);
    EXPECT_EQ(out->metrics.samples, full_.metrics.samples);
  }

  testing::ReplicaUnit unit_;
  std::string binding_;
  UnitOutput full_;
};

TEST_P(ExecutorCheckpointTest, StoppedUnitResumesToTheSameUpload) {
  std::vector<common::Bytes> saved;
  std::vector<std::int64_t> heard;
  // should_stop reads the progress the executor reports: it stops once step 5 is done.
  std::int64_t done = 0;
  auto stopped = ExecuteUnit(
      unit_.manifest, unit_.model.bytes, unit_.data.bytes, 1, {},
      [&done](std::int64_t d, std::int64_t) { done = d; }, Saving(4, saved, 5, &done));
  ASSERT_FALSE(stopped);
  EXPECT_TRUE(IsStopped(stopped.error())) << stopped.error().ToString();
  EXPECT_EQ(done, 5);
  ASSERT_EQ(saved.size(), 2u);  // the periodic one at 4, the stop's at 5

  CheckpointOptions resume;
  resume.binding = binding_;
  resume.resume_from = saved.back();
  auto resumed = Run(resume, &heard);
  ExpectSameAsUninterrupted(resumed);
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard.front(), 5);  // progress continues from the checkpoint
  EXPECT_EQ(heard.back(), kSteps);

  resume.resume_from = saved.front();  // as after a SIGKILL between steps 4 and 5
  ExpectSameAsUninterrupted(Run(resume));
}

TEST_P(ExecutorCheckpointTest, CheckpointingDoesNotChangeTheUpload) {
  std::vector<common::Bytes> saved;
  ExpectSameAsUninterrupted(Run(Saving(3, saved)));
  EXPECT_EQ(saved.size(), 3u);  // steps 3, 6, 9
}

TEST_P(ExecutorCheckpointTest, UnusableCheckpointIsIgnoredAndTheUnitStartsOver) {
  std::vector<common::Bytes> saved;
  ASSERT_TRUE(Run(Saving(4, saved)));
  ASSERT_FALSE(saved.empty());

  std::vector<CheckpointOptions> unusable(4);
  for (CheckpointOptions& o : unusable) {
    o.binding = binding_;
    o.resume_from = saved.front();
  }
  (*unusable[0].resume_from)[50] ^= 0x04;  // corrupt
  unusable[1].binding = common::ContentId(common::AsBytes("manifest of unit 2"));
  unusable[2].resume_from->resize(10);  // truncated
  // Bound to this unit, but made under the other optimizer.
  const std::string other = GetParam() == "adam" ? "sgd" : "adam";
  testing::ReplicaUnit other_unit = unit_;
  other_unit.manifest.params.optimizer = other;
  std::vector<common::Bytes> other_saved;
  ASSERT_TRUE(ExecuteUnit(other_unit.manifest, unit_.model.bytes, unit_.data.bytes, 1, {}, {},
                          Saving(4, other_saved)));
  ASSERT_FALSE(other_saved.empty());
  unusable[3].resume_from = other_saved.front();

  for (std::size_t i = 0; i < unusable.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    std::vector<std::int64_t> heard;
    ExpectSameAsUninterrupted(Run(unusable[i], &heard));
    ASSERT_FALSE(heard.empty());
    EXPECT_EQ(heard.front(), 0);
    EXPECT_EQ(heard.size(), static_cast<std::size_t>(kSteps + 2));  // 0, 1..10, 10
  }
}

TEST_P(ExecutorCheckpointTest, SaveErrorStopsTheUnitAndIsNotAStop) {
  for (common::Errc code : {common::Errc::kIo, common::Errc::kUnavailable}) {
    CheckpointOptions o;
    o.every_steps = 4;
    o.binding = binding_;
    o.save = [code](common::ByteSpan) -> common::Status {
      return common::MakeError(code, "disk full");
    };
    auto r = Run(o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, common::Errc::kIo);
    EXPECT_FALSE(IsStopped(r.error()));
  }
}

INSTANTIATE_TEST_SUITE_P(SgdAndAdam, ExecutorCheckpointTest, ::testing::Values("sgd", "adam"),
                         [](const auto& info) { return info.param; });

TEST(ExecutorStopTest, EvalUnitStops) {
  ASSERT_TRUE(common::InitCrypto());
  const common::ModelSpec spec = *common::ParseModelSpec(kSpec);
  const testing::ReplicaUnit eval = testing::MakeReplicaUnit(
      common::kUnitEval, kSpec, common::InitModel(spec, 4), Shard(1500), {}, "");
  CheckpointOptions o;
  o.should_stop = [] { return true; };
  auto r = ExecuteUnit(eval.manifest, eval.model.bytes, eval.data.bytes, 1, {}, {}, o);
  ASSERT_FALSE(r);
  EXPECT_TRUE(IsStopped(r.error()));
  o.should_stop = [] { return false; };
  EXPECT_TRUE(ExecuteUnit(eval.manifest, eval.model.bytes, eval.data.bytes, 1, {}, {}, o));
}

}  // namespace
}  // namespace ubcp::client
