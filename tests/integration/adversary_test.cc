// SPDX-License-Identifier: Apache-2.0
// A third of the donors sign-flip their updates (x10). With the default robust rule (centered
// clipping) the job still learns; with the plain mean it does not.
#include <gtest/gtest.h>

#include <atomic>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

class AdversaryLoopTest : public LoopTest {
 protected:
  // Runs the job to the end with 3 donors, each training exactly one shard per round, donor 0 a
  // cheater; an honest fourth host evaluates. Returns the final model's accuracy.
  double RunWithOneCheater(const std::string& robust,
                           client::Adversary cheat = {client::AdversaryMode::kSignFlip, 10.0}) {
    auto spec = common::ParseJobSpec(DigitsJob(3));
    EXPECT_TRUE(spec);
    spec->units_per_round = 3;
    spec->robust = robust;
    const std::int64_t job_id = SubmitJob(common::SerializeJobSpec(*spec));
    std::vector<std::unique_ptr<Donor>> donors;
    for (int i = 0; i < 4; ++i) donors.push_back(NewDonor("donor-" + std::to_string(i)));
    auto run_one = [&](int i, const char* kind) {
      client::RunnerOptions options;
      options.executor = client::MakeInProcessExecutor();
      options.max_units = 1;
      options.max_idle_polls = 20;
      options.idle_poll_s = 0.05;
      options.kinds = {kind};
      if (i == 0) options.adversary = cheat;
      client::Runner runner(*donors[i]->api, *donors[i]->state, *donors[i]->key,
                            signing_key_->public_key(), donors[i]->registration.host_id, options);
      std::atomic<bool> stop{false};
      return runner.Run(stop).units_done;
    };
    for (int round = 0; round < spec->rounds; ++round) {
      EXPECT_EQ(run_one(3, "eval_batch"), 1) << "round " << round;
      for (int i = 0; i < 3; ++i) EXPECT_EQ(run_one(i, "finetune_shard"), 1) << "round " << round;
    }
    EXPECT_EQ(run_one(3, "eval_batch"), 1);  // the final model
    const common::JobStatus status = Status(job_id);
    EXPECT_EQ(status.state, "done");
    return status.history.empty() ? 0.0 : status.history.back().eval_accuracy;
  }
};

TEST_F(AdversaryLoopTest, CenteredClippingResistsASignFlippingThird) {
  const double robust = RunWithOneCheater("centered_clip");
  std::cout << "one sign-flipping donor of three: centered_clip accuracy " << robust << "\n";
  EXPECT_GT(robust, 0.8);
}

TEST_F(AdversaryLoopTest, ThePlainMeanDoesNot) {
  const double plain = RunWithOneCheater("mean");
  std::cout << "one sign-flipping donor of three: mean accuracy " << plain << "\n";
  EXPECT_LT(plain, 0.5);
}

TEST_F(AdversaryLoopTest, CenteredClippingResistsALabelFlippingThird) {
  const double robust =
      RunWithOneCheater("centered_clip", {client::AdversaryMode::kLabelFlip, 1.0});
  std::cout << "one label-flipping donor of three: centered_clip accuracy " << robust << "\n";
  EXPECT_GT(robust, 0.8);
}

}  // namespace
}  // namespace ubcp::itest
