// SPDX-License-Identifier: Apache-2.0
// The volunteer-computing loop end to end: the real coordinator on 127.0.0.1 over TLS and real
// clients running real libtorch on real data (sklearn digits).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <thread>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

TEST_F(LoopTest, TwoDonorsFineTuneAndAccuracyRises) {
  const std::int64_t job_id = SubmitJob(DigitsJob(3));
  ASSERT_GT(job_id, 0);
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Donor>> donors;
  std::vector<std::thread> threads;
  std::vector<client::RunSummary> summaries(2);
  for (int i = 0; i < 2; ++i) donors.push_back(NewDonor("donor-" + std::to_string(i)));
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      client::RunnerOptions options;
      options.executor = client::MakeInProcessExecutor();
      options.idle_poll_s = 0.1;
      client::Runner runner(*donors[i]->api, *donors[i]->state, *donors[i]->key,
                            signing_key_->public_key(), donors[i]->registration.host_id, options);
      summaries[i] = runner.Run(stop);
    });
  }
  common::JobStatus status;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    status = Status(job_id);
  } while (status.state == "running" && std::chrono::steady_clock::now() < deadline);
  stop = true;
  for (auto& t : threads) t.join();

  ASSERT_EQ(status.state, "done");
  ASSERT_EQ(status.history.size(), 4u);  // rounds 0..2 trained, round 3 = final evaluation
  for (const auto& r : status.history) EXPECT_TRUE(r.evaluated) << "round " << r.round;
  const double before = status.history.front().eval_accuracy;
  const double after = status.history.back().eval_accuracy;
  std::cout << "accuracy before=" << before << " after=" << after << "\n";
  EXPECT_LT(before, 0.3);
  EXPECT_GT(after, 0.8);
  EXPECT_GT(after, before + 0.5);
  EXPECT_EQ(status.hosts, 2);
  EXPECT_EQ(summaries[0].units_refused + summaries[1].units_refused, 0);
  // Each unit of each round was done exactly once: 3 x (2 finetune + 1 eval) + 1 final eval.
  EXPECT_EQ(summaries[0].units_done + summaries[1].units_done, 10);
  EXPECT_GT(summaries[0].units_done, 0);
  EXPECT_GT(summaries[1].units_done, 0);

  // The ledger: the job spent exactly its price, unit by unit, and the donors earned as much.
  auto job = store_->GetJob(job_id);
  ASSERT_TRUE(job);
  EXPECT_GT(job->price_credits, 0);
  EXPECT_EQ(*store_->SpentByAccount(alice_id_), job->price_credits);
  EXPECT_EQ(*store_->Balance(coordinator::JobAccount(job_id)), 0);
  EXPECT_EQ(*store_->Balance(coordinator::RecipientAccount(alice_id_)),
            alice_start_ - job->price_credits);
  EXPECT_EQ(*store_->Balance(coordinator::DonorAccount(donors[0]->registration.host_id)) +
                *store_->Balance(coordinator::DonorAccount(donors[1]->registration.host_id)),
            job->price_credits);
  auto problems = store_->CheckLedger();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];

  // The recipient downloads the final model, which loads and evaluates as reported.
  auto http = NewHttp();
  auto model =
      http->Request("GET", "/v1/jobs/" + std::to_string(job_id) + "/model", {}, {}, token_);
  ASSERT_TRUE(model);
  ASSERT_EQ(model->status, 200);
  EXPECT_EQ(common::ContentId(common::AsBytes(model->body)), status.final_model);
}

TEST_F(LoopTest, RefusedResultsLeaveTheStoreUnchanged) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  auto b = NewDonor("b");
  const common::SignedEnvelope manifest = LeaseEval(*a->api);

  // Signed by a key that is not the host's registered key.
  {
    const Snapshot before = Take(job_id);
    auto stranger = common::SigningKey::Generate();
    auto forged = EvalResult(stranger, manifest, 0.5);
    auto r =
        Post(*a->http, "/v1/results", common::SerializeEnvelope(forged), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    // Even claiming the right signer, a signature by another key fails verification.
    forged.signer = a->key->public_key().Hex();
    r = Post(*a->http, "/v1/results", common::SerializeEnvelope(forged), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    ExpectSame(before, Take(job_id));
  }

  // An oversized body is refused before it is read.
  {
    const Snapshot before = Take(job_id);
    std::string huge(common::kMaxEnvelopeJson + 1, ' ');
    auto r = Post(*a->http, "/v1/results", huge, a->registration.token);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(r->status, 413);
    ExpectSame(before, Take(job_id));
  }

  // The genuine result is accepted once; the same envelope again is a harmless duplicate.
  const common::SignedEnvelope genuine = EvalResult(*a->key, manifest, 0.5);
  {
    auto ack = a->api->PostResult(genuine);
    ASSERT_TRUE(ack) << ack.error().ToString();
    EXPECT_EQ(ack->status, "accepted");
    const Snapshot after_first = Take(job_id);
    auto again = a->api->PostResult(genuine);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, "duplicate");
    ExpectSame(after_first, Take(job_id));
  }

  // Replays: another host sending it, or a different result for the now finished unit.
  {
    const Snapshot before = Take(job_id);
    auto r =
        Post(*b->http, "/v1/results", common::SerializeEnvelope(genuine), b->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    auto changed = EvalResult(*a->key, manifest, 0.99);
    r = Post(*a->http, "/v1/results", common::SerializeEnvelope(changed), a->registration.token);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 409) << r->body;
    ExpectSame(before, Take(job_id));
  }
}

TEST_F(LoopTest, ExpiredLeaseIsReissuedAndTheStaleResultRefused) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  auto b = NewDonor("b");
  const common::SignedEnvelope first = LeaseEval(*a->api);
  now_ += 121;  // past the 120 s lease
  const common::SignedEnvelope second = LeaseEval(*b->api);
  auto m1 = common::ParseManifest(first.payload);
  auto m2 = common::ParseManifest(second.payload);
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(m1->unit_id, m2->unit_id);
  EXPECT_EQ(m2->attempt, m1->attempt + 1);
  EXPECT_EQ(m2->host_id, b->registration.host_id);

  const Snapshot before = Take(job_id);
  auto stale = EvalResult(*a->key, first, 0.5);
  auto r = Post(*a->http, "/v1/results", common::SerializeEnvelope(stale), a->registration.token);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  ExpectSame(before, Take(job_id));
  auto ack = b->api->PostResult(EvalResult(*b->key, second, 0.5));
  ASSERT_TRUE(ack) << ack.error().ToString();
  EXPECT_EQ(ack->status, "accepted");
}

TEST_F(LoopTest, AGivenUpUnitGoesToAnotherHostAndThreeGiveUpsFailTheJob) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto give_up = [](Donor& donor, const common::SignedEnvelope& lease) {
    auto m = common::ParseManifest(lease.payload);
    EXPECT_TRUE(m);
    common::UnitAbandon report;
    report.unit_id = m->unit_id;
    report.attempt = m->attempt;
    report.manifest_hash = common::PayloadHash(lease);
    report.reason = "the worker used more memory than the donor's limit";
    return donor.api->AbandonUnit(report);
  };
  std::int64_t unit_id = 0;
  for (const std::string name : {"a", "b", "c"}) {
    EXPECT_EQ(Status(job_id).state, "running") << "before " << name << " gave up";
    auto donor = NewDonor(name);
    const common::SignedEnvelope lease = LeaseEval(*donor->api);
    const auto m = common::ParseManifest(lease.payload);
    ASSERT_TRUE(m);
    // The released unit goes to the next host at once, and never back to one that gave it up.
    if (unit_id == 0) unit_id = m->unit_id;
    EXPECT_EQ(m->unit_id, unit_id) << name;
    auto released = give_up(*donor, lease);
    ASSERT_TRUE(released) << released.error().ToString();
    EXPECT_TRUE(*released) << name;
    // The job has one evaluation unit: asked again, the donor gets none.
    common::WorkRequest eval;
    eval.kinds = {"eval_batch"};
    auto next = donor->api->RequestWork(eval);
    ASSERT_TRUE(next) << next.error().ToString();
    EXPECT_FALSE(next->has_value()) << name << " was offered the unit it gave up";
  }
  // Given up by three hosts: the job cannot run here; it fails and nothing more is handed out.
  EXPECT_EQ(Status(job_id).state, "failed");
  auto late = NewDonor("d");
  auto work = late->api->RequestWork({});
  ASSERT_TRUE(work) << work.error().ToString();
  EXPECT_FALSE(work->has_value());
}

TEST_F(LoopTest, ForgedManifestIsRefusedByTheClient) {
  SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  common::SignedEnvelope manifest = LeaseEval(*a->api);
  EXPECT_TRUE(
      common::VerifyEnvelope(manifest, common::kDomainManifest, signing_key_->public_key()));
  manifest.payload[manifest.payload.size() / 2] ^= 1;
  EXPECT_FALSE(
      common::VerifyEnvelope(manifest, common::kDomainManifest, signing_key_->public_key()));
}

TEST_F(LoopTest, RecipientsSeeOnlyTheirOwnJobs) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  std::string other = common::NewToken();
  ASSERT_TRUE(
      store_->CreateAccount("bob", common::TokenHash(other), coordinator::Role::kRecipient, now_));
  auto http = NewHttp();
  auto r = http->Request("GET", "/v1/jobs/" + std::to_string(job_id), {}, {}, other);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = http->Request("GET", "/v1/jobs/" + std::to_string(job_id), {}, {}, "not-a-token");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = http->Request("POST", "/v1/jobs", DigitsJob(1), "application/json", {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

TEST_F(LoopTest, NonFiniteUpdatesAreRefusedAndNotPaidFor) {
  const std::int64_t job_id = SubmitJob(DigitsJob(1));
  auto a = NewDonor("a");
  common::WorkRequest finetune;
  finetune.kinds = {"finetune_shard"};
  auto work = a->api->RequestWork(finetune);
  ASSERT_TRUE(work && work->has_value());
  auto m = common::ParseManifest((**work).payload);
  ASSERT_TRUE(m);
  // The model's layout, with one NaN.
  common::TensorList update = common::InitModel(*common::ParseModelSpec(m->model_spec), 1);
  update[0].f32[0] = std::numeric_limits<float>::quiet_NaN();
  const common::EncodedBlob blob = common::EncodeTensorBlob(update, common::FloatEncoding::kFp32);
  const std::string id = common::ContentId(blob.bytes);
  ASSERT_TRUE(a->api->PutBlob(id, blob.bytes));
  common::ResultPayload r;
  r.unit_id = m->unit_id;
  r.host_id = m->host_id;
  r.attempt = m->attempt;
  r.manifest_hash = common::PayloadHash(**work);
  r.kind = m->kind;
  r.update = common::BlobRef{id, blob.bytes.size(), blob.raw_size};
  r.metrics = {0.5, 0, 2.3, 32};
  const Snapshot before = Take(job_id);
  auto posted = Post(*a->http, "/v1/results",
                     common::SerializeEnvelope(common::SignPayload(
                         *a->key, common::kDomainResult, common::SerializeResultPayload(r))),
                     a->registration.token);
  ASSERT_TRUE(posted);
  EXPECT_EQ(posted->status, 400) << posted->body;
  ExpectSame(before, Take(job_id));
  EXPECT_EQ(*store_->Balance(coordinator::DonorAccount(a->registration.host_id)), 0);
}

}  // namespace
}  // namespace ubcp::itest
