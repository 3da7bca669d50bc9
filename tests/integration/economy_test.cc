// SPDX-License-Identifier: Apache-2.0
// The credit economy through the real API: quotes, refusals for insufficient credits, cancelled
// jobs refunding what they did not use, admin grants, and the ledger's invariants afterwards.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "integration/loop_fixture.h"
#include "ubcp/coordinator/cost_model.h"

namespace ubcp::itest {
namespace {

class EconomyTest : public LoopTest {
 protected:
  std::string NewAccount(const std::string& name, coordinator::Role role) {
    std::string token = common::NewToken();
    auto id = store_->CreateAccount(name, common::TokenHash(token), role, now_);
    EXPECT_TRUE(id);
    ids_[token] = *id;
    return token;
  }
  common::CreditsStatus Credits(const std::string& token) {
    auto r = NewHttp()->Request("GET", "/v1/credits", {}, {}, token);
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : r.error().ToString());
    auto c = common::ParseCreditsStatus(r->body);
    EXPECT_TRUE(c) << r->body;
    return *c;
  }
  std::size_t BlobFiles() {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "blobs")) {
      if (e.is_regular_file()) ++n;
    }
    return n;
  }
  void ExpectLedgerSound() {
    auto problems = store_->CheckLedger();
    ASSERT_TRUE(problems);
    for (const auto& p : *problems) ADD_FAILURE() << p;
  }
  std::map<std::string, std::int64_t> ids_;
};

TEST_F(EconomyTest, QuoteShowsThePriceAndWritesNothing) {
  const std::size_t blobs_before = BlobFiles();
  auto r = Post(*NewHttp(), "/v1/jobs/quote", DigitsJob(3), token_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto quote = common::ParseJobQuote(r->body);
  ASSERT_TRUE(quote) << r->body;
  EXPECT_GT(quote->price_credits, 0);
  EXPECT_EQ(quote->train_units, 3 * 2);
  EXPECT_EQ(quote->eval_units, 4 * 1);
  EXPECT_DOUBLE_EQ(quote->flop, quote->price_credits * 1e6);
  EXPECT_TRUE(quote->affordable);
  EXPECT_EQ(quote->balance_credits, alice_start_);
  EXPECT_EQ(BlobFiles(), blobs_before);
  EXPECT_TRUE(store_->ListJobs(alice_id_)->empty());

  // The job then costs exactly the quoted price.
  const std::int64_t job_id = SubmitJob(DigitsJob(3));
  EXPECT_EQ(store_->GetJob(job_id)->price_credits, quote->price_credits);
  EXPECT_EQ(Credits(token_).reserved_credits, quote->price_credits);
  EXPECT_EQ(Credits(token_).balance_credits, alice_start_ - quote->price_credits);
  ExpectLedgerSound();
}

TEST_F(EconomyTest, AJobTheCreditsCannotCoverIsRefusedAndStoresNothing) {
  const std::string bob = NewAccount("bob", coordinator::Role::kRecipient);
  ASSERT_TRUE(store_->PostLedger(coordinator::Transfer(
      "grant:bob", coordinator::LedgerKind::kGrant, std::string(coordinator::kIssuanceAccount),
      coordinator::RecipientAccount(ids_[bob]), 5, now_)));
  const std::size_t blobs_before = BlobFiles();
  auto r = Post(*NewHttp(), "/v1/jobs", DigitsJob(3), bob);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 402) << r->body;
  auto error = common::ParseErrorBody(r->body);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, common::Errc::kInsufficientCredits);
  EXPECT_NE(error->message.find("PFLOP/s-days"), std::string::npos) << error->message;
  EXPECT_TRUE(store_->ListJobs(ids_[bob])->empty());
  EXPECT_EQ(BlobFiles(), blobs_before);
  EXPECT_EQ(Credits(bob).balance_credits, 5);
  ExpectLedgerSound();
}

TEST_F(EconomyTest, CancellingRefundsWhatTheJobDidNotUse) {
  const std::int64_t job_id = SubmitJob(DigitsJob(2));
  const std::int64_t price = store_->GetJob(job_id)->price_credits;
  auto donor = NewDonor("donor");
  // One eval unit is done and paid for; a second unit stays leased.
  auto ack = donor->api->PostResult(EvalResult(*donor->key, LeaseEval(*donor->api), 0.1));
  ASSERT_TRUE(ack) << ack.error().ToString();
  const std::int64_t spent = *store_->SpentByAccount(alice_id_);
  EXPECT_GT(spent, 0);
  EXPECT_LT(spent, price);
  common::WorkRequest finetune;
  finetune.kinds = {"finetune_shard"};
  auto leased = donor->api->RequestWork(finetune);
  ASSERT_TRUE(leased && leased->has_value());

  auto r = Post(*NewHttp(), "/v1/jobs/" + std::to_string(job_id) + "/cancel", "", token_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(common::ParseJobStatus(r->body)->state, "cancelled");
  EXPECT_EQ(Credits(token_).balance_credits, alice_start_ - spent);
  EXPECT_EQ(Credits(token_).reserved_credits, 0);
  EXPECT_EQ(Credits(token_).spent_credits, spent);
  // Cancelling again changes nothing; a cancelled job hands out no work.
  r = Post(*NewHttp(), "/v1/jobs/" + std::to_string(job_id) + "/cancel", "", token_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Credits(token_).balance_credits, alice_start_ - spent);
  auto none = donor->api->RequestWork(finetune);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  // Someone else cannot cancel it, or even see it.
  const std::string eve = NewAccount("eve", coordinator::Role::kRecipient);
  r = Post(*NewHttp(), "/v1/jobs/" + std::to_string(job_id) + "/cancel", "", eve);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  ExpectLedgerSound();
}

TEST_F(EconomyTest, GrantsNeedAnAdminAndCountOncePerKey) {
  const std::string admin = NewAccount("root", coordinator::Role::kAdmin);
  common::GrantRequest grant;
  grant.account = "alice";
  grant.credits = 1000;
  grant.key = "pilot-2026-11";
  grant.memo = "pilot programme";
  const std::string body = common::SerializeGrantRequest(grant);

  auto r = Post(*NewHttp(), "/v1/admin/grants", body, token_);  // a recipient's token
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  r = Post(*NewHttp(), "/v1/admin/grants", body, "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(Credits(token_).balance_credits, alice_start_);

  for (int i = 0; i < 2; ++i) {  // the retry changes nothing
    r = Post(*NewHttp(), "/v1/admin/grants", body, admin);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(common::ParseCreditsStatus(r->body)->balance_credits, alice_start_ + 1000);
  }
  grant.credits = 2000;  // the same key for another amount is a conflict
  r = Post(*NewHttp(), "/v1/admin/grants", common::SerializeGrantRequest(grant), admin);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  grant.account = "nobody";
  grant.key = "other";
  r = Post(*NewHttp(), "/v1/admin/grants", common::SerializeGrantRequest(grant), admin);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_EQ(Credits(token_).balance_credits, alice_start_ + 1000);
  ExpectLedgerSound();
}

TEST_F(EconomyTest, DonorsSeeTheirContributionAndOptInToTheLeaderboard) {
  SubmitJob(DigitsJob(1));
  auto ann = NewDonor("ann-laptop");
  auto ben = NewDonor("ben-desktop");
  // ann computes one eval unit; ben nothing yet.
  ASSERT_TRUE(ann->api->PostResult(EvalResult(*ann->key, LeaseEval(*ann->api), 0.1)));

  auto mine = ann->api->GetContribution();
  ASSERT_TRUE(mine) << mine.error().ToString();
  EXPECT_EQ(mine->units, 1);
  EXPECT_GT(mine->points_credits, 0);
  EXPECT_EQ(mine->period_credits, mine->points_credits);
  // Validated just now: the recent average is points x ln 2 / 7 days.
  EXPECT_NEAR(mine->recent_credits_per_day, mine->points_credits * std::log(2.0) / 7.0,
              mine->points_credits * 1e-3);
  EXPECT_EQ(*store_->Balance(coordinator::DonorAccount(ann->registration.host_id)),
            mine->points_credits);
  auto bens = ben->api->GetContribution();
  ASSERT_TRUE(bens);
  EXPECT_EQ(bens->units, 0);

  // Nobody is listed until they opt in.
  auto r = NewHttp()->Request("GET", "/v1/leaderboard", {}, {}, {});
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_TRUE(common::ParseLeaderboard(r->body)->donors.empty());
  ASSERT_TRUE(ann->api->SetProfile({common::kProtocolVersion, "Ann", "Physics Dept"}));
  ASSERT_TRUE(ben->api->SetProfile({common::kProtocolVersion, "Ben", "Physics Dept"}));
  r = NewHttp()->Request("GET", "/v1/leaderboard", {}, {}, {});
  ASSERT_TRUE(r && r->status == 200);
  auto board = common::ParseLeaderboard(r->body);
  ASSERT_TRUE(board) << r->body;
  ASSERT_EQ(board->donors.size(), 2u);
  EXPECT_EQ(board->donors[0].name, "Ann");  // most validated work first
  EXPECT_EQ(board->donors[1].name, "Ben");
  ASSERT_EQ(board->teams.size(), 1u);
  EXPECT_EQ(board->teams[0].donors, 2);
  EXPECT_EQ(board->teams[0].points_credits, mine->points_credits);
  // A name with control characters is refused; the profile stays.
  auto bad = ann->api->SetProfile({common::kProtocolVersion, "An\x01n", ""});
  EXPECT_FALSE(bad);
  // Only a host token sees a contribution.
  r = NewHttp()->Request("GET", "/v1/hosts/me/contribution", {}, {}, token_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

}  // namespace
}  // namespace ubcp::itest
