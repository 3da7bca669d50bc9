// SPDX-License-Identifier: Apache-2.0
// The daemon's executor with the real `ubcp-worker serve` (worker_executor.h): consecutive units
// run in one worker process and give the same bytes as a unit run in-process; Release, a new
// thread count or memory cap, and a unit that did not end cleanly end that worker; a worker that
// died or left while idle is replaced without costing the next unit anything; a failed unit
// keeps the worker; a path outside the worker's root is refused by the worker.

#include "ubcp/client/worker_executor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

#include "support/process_gone.h"
#include "support/replica_unit.h"
#include "support/temp_dir.h"
#include "ubcp/client/in_process_executor.h"
#include "ubcp/client/unit_journal.h"
#include "ubcp/common/crypto.h"
#include "ubcp/common/model.h"

namespace ubcp::client {
namespace {

namespace fs = std::filesystem;

constexpr char kSpec[] = "mlp-i12-h16-o3";

common::TensorList Shard(int rows) {
  common::NamedTensor x{"x", common::TensorKind::kF32, {rows, 12}, {}, {}};
  common::NamedTensor y{"y", common::TensorKind::kU8, {rows}, {}, {}};
  for (std::int64_t i = 0; i < x.numel(); ++i) x.f32.push_back(static_cast<float>(i % 17) / 8.0f);
  for (int r = 0; r < rows; ++r) y.u8.push_back(static_cast<std::uint8_t>(r % 3));
  return {x, y};
}

void WriteFile(const fs::path& path, const common::Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

class WorkerExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::InitCrypto());
    auto journal = UnitJournal::Open(dir_.path());
    ASSERT_TRUE(journal) << journal.error().ToString();
    journal_.emplace(std::move(*journal));
    const common::ModelSpec spec = *common::ParseModelSpec(kSpec);
    unit_ = testing::MakeReplicaUnit(common::kUnitFinetune, kSpec, common::InitModel(spec, 4),
                                     Shard(64), {300, 8, 0.02, 0.9, 0.0, "sgd", 6}, "fp32");
    fs::create_directories(dir_.path() / "blobs");
    model_blob_ = dir_.path() / "blobs" / unit_.manifest.model.id;
    data_blob_ = dir_.path() / "blobs" / unit_.manifest.data.id;
    WriteFile(model_blob_, unit_.model.bytes);
    WriteFile(data_blob_, unit_.data.bytes);
  }

  std::shared_ptr<UnitExecutor> Executor(double idle_exit_seconds = 600,
                                         const fs::path& root = {}) {
    WorkerExecutorOptions o;
    o.worker = UBCP_WORKER_BIN;
    o.root = root.empty() ? dir_.path() : root;
    o.grace = std::chrono::milliseconds(5000);
    o.idle_exit_seconds = idle_exit_seconds;
    return MakeWorkerExecutor(o);
  }

  // Leases the unit afresh as `unit_id` and executes it; the unit's directory is removed after.
  ExecutionResult Run(UnitExecutor& executor, std::int64_t unit_id, int threads = 1,
                      std::uint64_t memory_limit_bytes = 0, bool break_manifest = false) {
    common::Manifest manifest = unit_.manifest;
    manifest.unit_id = unit_id;
    const common::SignedEnvelope envelope =
        common::SignPayload(key_, common::kDomainManifest, common::SerializeManifest(manifest));
    EXPECT_TRUE(journal_->Begin(unit_id, envelope, 0));
    ExecutionRequest request;
    request.unit_dir = journal_->Dir(unit_id);
    request.manifest_hash = break_manifest ? "b2:not-this-manifest" : common::PayloadHash(envelope);
    request.manifest = &manifest;
    request.model_blob = model_blob_;
    request.data_blob = data_blob_;
    request.threads = threads;
    request.memory_limit_bytes = memory_limit_bytes;
    ExecutionResult result = executor.Execute(request);
    EXPECT_TRUE(journal_->Finish(unit_id, result.end == ExecutionEnd::kDone, "test"));
    return result;
  }

  testing::TempDir dir_{"ubcp-worker-executor"};
  common::SigningKey key_ = common::SigningKey::Generate();
  std::optional<UnitJournal> journal_;
  testing::ReplicaUnit unit_;
  fs::path model_blob_, data_blob_;
};

TEST_F(WorkerExecutorTest, ConsecutiveUnitsShareOneWorkerAndComputeTheSameBytes) {
  auto executor = Executor();
  const ExecutionResult first = Run(*executor, 1);
  ASSERT_EQ(first.end, ExecutionEnd::kDone) << first.message;
  const ExecutionResult second = Run(*executor, 2);
  ASSERT_EQ(second.end, ExecutionEnd::kDone) << second.message;
  EXPECT_GT(first.worker_pid, 0);
  EXPECT_EQ(second.worker_pid, first.worker_pid) << "the second unit started another worker";
  EXPECT_FALSE(testing::ProcessGone(first.worker_pid))
      << "the worker did not wait for the next unit";

  // The same bytes as a unit run in this process (and as the worker's first unit).
  auto in_process = MakeInProcessExecutor();
  const ExecutionResult reference = Run(*in_process, 3);
  ASSERT_EQ(reference.end, ExecutionEnd::kDone) << reference.message;
  ASSERT_TRUE(first.output && first.output->update && second.output->update);
  EXPECT_EQ(first.output->update->bytes, reference.output->update->bytes);
  EXPECT_EQ(second.output->update->bytes, reference.output->update->bytes);
  EXPECT_EQ(second.output->metrics.loss, reference.output->metrics.loss);

  // Release ends the worker (the runner calls it whenever no unit follows); the next unit
  // starts another.
  executor->Release();
  EXPECT_TRUE(testing::ProcessGone(first.worker_pid));
  const ExecutionResult after = Run(*executor, 4);
  ASSERT_EQ(after.end, ExecutionEnd::kDone) << after.message;
  EXPECT_NE(after.worker_pid, first.worker_pid);
}

TEST_F(WorkerExecutorTest, NewLimitsStartAFreshWorker) {
  auto executor = Executor();
  const ExecutionResult one = Run(*executor, 1, 1);
  ASSERT_EQ(one.end, ExecutionEnd::kDone) << one.message;
  const ExecutionResult two = Run(*executor, 2, 2);
  ASSERT_EQ(two.end, ExecutionEnd::kDone) << two.message;
  EXPECT_NE(two.worker_pid, one.worker_pid) << "a new thread count kept the old worker";
  EXPECT_TRUE(testing::ProcessGone(one.worker_pid));
  const ExecutionResult capped = Run(*executor, 3, 2, std::uint64_t{4} << 30);
  ASSERT_EQ(capped.end, ExecutionEnd::kDone) << capped.message;
  EXPECT_NE(capped.worker_pid, two.worker_pid) << "a new memory cap kept the old worker";
}

TEST_F(WorkerExecutorTest, AWorkerThatDiedOrLeftWhileIdleIsReplacedWithoutFailingTheUnit) {
  auto executor = Executor();
  const ExecutionResult one = Run(*executor, 1);
  ASSERT_EQ(one.end, ExecutionEnd::kDone) << one.message;
  ASSERT_EQ(::kill(one.worker_pid, SIGKILL), 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!testing::ProcessGone(one.worker_pid) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const ExecutionResult two = Run(*executor, 2);
  ASSERT_EQ(two.end, ExecutionEnd::kDone) << two.message;
  EXPECT_NE(two.worker_pid, one.worker_pid);

  // A worker whose idle time ran out exits by itself; the next unit does not notice.
  auto brief = Executor(0.3);
  const ExecutionResult three = Run(*brief, 3);
  ASSERT_EQ(three.end, ExecutionEnd::kDone) << three.message;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE(testing::ProcessGone(three.worker_pid)) << "the idle worker did not leave";
  const ExecutionResult four = Run(*brief, 4);
  ASSERT_EQ(four.end, ExecutionEnd::kDone) << four.message;
  EXPECT_NE(four.worker_pid, three.worker_pid);
}

TEST_F(WorkerExecutorTest, AFailedUnitKeepsTheWorkerAndIsFinal) {
  auto executor = Executor();
  const ExecutionResult bad = Run(*executor, 1, 1, 0, /*break_manifest=*/true);
  EXPECT_EQ(bad.end, ExecutionEnd::kFailed);
  EXPECT_NE(bad.message.find("does not match the manifest"), std::string::npos) << bad.message;
  const ExecutionResult good = Run(*executor, 2);
  ASSERT_EQ(good.end, ExecutionEnd::kDone) << good.message;
  EXPECT_EQ(good.worker_pid, bad.worker_pid);
}

TEST_F(WorkerExecutorTest, TheWorkerRefusesPathsOutsideItsRoot) {
  testing::TempDir elsewhere("ubcp-worker-root");
  auto executor = Executor(600, elsewhere.path());
  const ExecutionResult refused = Run(*executor, 1);
  EXPECT_EQ(refused.end, ExecutionEnd::kCrashed);
  EXPECT_NE(refused.message.find("outside"), std::string::npos) << refused.message;
  EXPECT_TRUE(testing::ProcessGone(refused.worker_pid));
}

}  // namespace
}  // namespace ubcp::client
