// SPDX-License-Identifier: Apache-2.0
// The credit ledger on a real SQLite file: transactions are validated, idempotent by key and
// never drive a protected account negative; CheckLedger finds every kind of tampering.
#include "ubcp/coordinator/ledger.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "coordinator/raw_db.h"
#include "ubcp/coordinator/store.h"

namespace ubcp::coordinator {
namespace {

using common::Errc;

TEST(LedgerTxnTest, WellFormedTransactionsOnly) {
  EXPECT_TRUE(ValidateTxn(Transfer("k", LedgerKind::kGrant, "issuance", "recipient:1", 5, 0)));
  EXPECT_FALSE(ValidateTxn(Transfer("", LedgerKind::kGrant, "issuance", "recipient:1", 5, 0)));
  EXPECT_FALSE(ValidateTxn(Transfer("a b", LedgerKind::kGrant, "issuance", "recipient:1", 5, 0)));
  EXPECT_FALSE(
      ValidateTxn(Transfer(std::string(129, 'k'), LedgerKind::kGrant, "a", "recipient:1", 5, 0)));
  EXPECT_FALSE(ValidateTxn(Transfer("k", LedgerKind::kGrant, "issuance", "recipient:1", 0, 0)));
  EXPECT_FALSE(ValidateTxn(Transfer("k", LedgerKind::kGrant, "recipient:1", "recipient:1", 5, 0)));
  LedgerTxn unbalanced = Transfer("k", LedgerKind::kGrant, "issuance", "recipient:1", 5, 0);
  unbalanced.postings[1].amount = 6;
  EXPECT_FALSE(ValidateTxn(unbalanced));
  LedgerTxn overflow;
  overflow.key = "k";
  overflow.postings = {{"a", INT64_MAX}, {"b", INT64_MAX}, {"c", 2}};
  EXPECT_FALSE(ValidateTxn(overflow));
  EXPECT_TRUE(MustStayNonNegative("recipient:3"));
  EXPECT_TRUE(MustStayNonNegative("job:3"));
  EXPECT_TRUE(MustStayNonNegative("donor:3"));
  EXPECT_FALSE(MustStayNonNegative("issuance"));
  EXPECT_FALSE(MustStayNonNegative("spent"));
}

class LedgerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ubcp_ledger_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto store = OpenSqliteStore(dir_ / "coordinator.db");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::int64_t Balance(const std::string& account) { return *store_->Balance(account); }
  std::vector<std::string> Problems() { return *store_->CheckLedger(); }

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(LedgerStoreTest, PostingIsIdempotentByKey) {
  const LedgerTxn grant = Transfer("grant:a", LedgerKind::kGrant, "issuance", "recipient:1", 50, 7);
  EXPECT_TRUE(*store_->PostLedger(grant));
  EXPECT_FALSE(*store_->PostLedger(grant));  // the retry changes nothing
  EXPECT_EQ(Balance("recipient:1"), 50);
  EXPECT_EQ(Balance("issuance"), -50);

  // The same key for another movement is refused.
  auto other =
      store_->PostLedger(Transfer("grant:a", LedgerKind::kGrant, "issuance", "recipient:1", 60, 7));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::kConflict);
  other =
      store_->PostLedger(Transfer("grant:a", LedgerKind::kGrant, "issuance", "recipient:2", 50, 7));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::kConflict);
  EXPECT_EQ(Balance("recipient:1"), 50);
  EXPECT_EQ(Balance("recipient:2"), 0);
  EXPECT_TRUE(Problems().empty());
}

TEST_F(LedgerStoreTest, ProtectedAccountsNeverGoNegative) {
  ASSERT_TRUE(store_->PostLedger(
      Transfer("grant:a", LedgerKind::kGrant, "issuance", "recipient:1", 50, 7)));
  auto too_much = store_->PostLedger(
      Transfer("reserve:job:1", LedgerKind::kReserve, "recipient:1", "job:1", 51, 8));
  ASSERT_FALSE(too_much);
  EXPECT_EQ(too_much.error().code, Errc::kInsufficientCredits);
  EXPECT_EQ(Balance("recipient:1"), 50);
  EXPECT_EQ(Balance("job:1"), 0);
  // Nothing of the refused movement was kept, so its key is still free.
  EXPECT_TRUE(*store_->PostLedger(
      Transfer("reserve:job:1", LedgerKind::kReserve, "recipient:1", "job:1", 50, 8)));
  EXPECT_EQ(Balance("recipient:1"), 0);
  EXPECT_TRUE(Problems().empty());
}

TEST_F(LedgerStoreTest, CheckLedgerFindsTampering) {
  ASSERT_TRUE(store_->PostLedger(
      Transfer("grant:a", LedgerKind::kGrant, "issuance", "recipient:1", 50, 7)));
  ASSERT_TRUE(Problems().empty());
  RawDb raw(dir_ / "coordinator.db");

  // An entry changed after the fact: the transaction and the whole ledger no longer balance.
  raw.Exec("UPDATE ledger_entries SET amount = 70 WHERE account = 'recipient:1'");
  auto problems = Problems();
  ASSERT_GE(problems.size(), 2u);
  EXPECT_NE(problems[0].find("sum to 20"), std::string::npos) << problems[0];
  raw.Exec("UPDATE ledger_entries SET amount = 50 WHERE account = 'recipient:1'");
  EXPECT_TRUE(Problems().empty());

  // A protected account driven negative by a forged, balanced movement.
  raw.Exec("INSERT INTO ledger_txns (key, kind, at) VALUES ('forged', 'spend', 1)");
  raw.Exec(
      "INSERT INTO ledger_entries (txn_key, account, amount) VALUES "
      "('forged', 'donor:4', -5), ('forged', 'spent', 5)");
  problems = Problems();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("donor:4 is negative"), std::string::npos) << problems[0];
  raw.Exec("DELETE FROM ledger_entries WHERE txn_key = 'forged'");

  // A transaction with one leg only, and entries without a transaction.
  raw.Exec(
      "INSERT INTO ledger_entries (txn_key, account, amount) VALUES ('ghost', 'x', 3), "
      "('ghost', 'y', -3)");
  problems = Problems();
  ASSERT_EQ(problems.size(), 2u);  // 'forged' has no entries left; 'ghost' has no transaction
  EXPECT_NE(problems[0].find("forged"), std::string::npos) << problems[0];
  EXPECT_NE(problems[1].find("ghost"), std::string::npos) << problems[1];
}

TEST_F(LedgerStoreTest, CheckLedgerComparesSpendingWithAcceptedWork) {
  auto account = store_->CreateAccount("alice", "alice-token", Role::kRecipient, 1);
  ASSERT_TRUE(account);
  RawDb raw(dir_ / "coordinator.db");
  raw.Exec(
      "INSERT INTO jobs (id, account_id, name, spec_json, model_spec, state, rounds, "
      "current_round, lease_seconds, created_at, updated_at, price_credits) VALUES "
      "(1, 1, 'j', '{}', 'mlp', 'running', 1, 0, 60, 1, 1, 10)");
  ASSERT_TRUE(store_->PostLedger(
      Transfer("grant:a", LedgerKind::kGrant, "issuance", RecipientAccount(*account), 10, 1)));
  LedgerTxn reserve = Transfer("reserve:job:1", LedgerKind::kReserve, RecipientAccount(*account),
                               JobAccount(1), 10, 1);
  reserve.job_id = 1;
  ASSERT_TRUE(store_->PostLedger(reserve));
  // A spend with no accepted result behind it.
  LedgerTxn spend = Transfer("spend:unit:1", LedgerKind::kSpend, JobAccount(1), "spent", 4, 2);
  spend.job_id = 1;
  ASSERT_TRUE(store_->PostLedger(spend));
  auto problems = Problems();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("job 1 spent 4"), std::string::npos) << problems[0];

  // A finished job that still holds credits.
  raw.Exec("DELETE FROM ledger_entries WHERE txn_key = 'spend:unit:1'");
  raw.Exec("DELETE FROM ledger_txns WHERE key = 'spend:unit:1'");
  raw.Exec("UPDATE jobs SET state = 'done' WHERE id = 1");
  problems = Problems();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("still holds 10"), std::string::npos) << problems[0];
}

}  // namespace
}  // namespace ubcp::coordinator
