// SPDX-License-Identifier: Apache-2.0
#include "ubcp/coordinator/ledger.h"

#include <set>

namespace ubcp::coordinator {
using common::Errc;
using common::MakeError;

std::string RecipientAccount(std::int64_t account_id) {
  return "recipient:" + std::to_string(account_id);
}
std::string JobAccount(std::int64_t job_id) { return "job:" + std::to_string(job_id); }
std::string DonorAccount(std::int64_t host_id) { return "donor:" + std::to_string(host_id); }

bool MustStayNonNegative(std::string_view account) {
  return account.starts_with("recipient:") || account.starts_with("job:") ||
         account.starts_with("donor:");
}

std::string_view LedgerKindName(LedgerKind kind) {
  switch (kind) {
    case LedgerKind::kIssue:
      return "issue";
    case LedgerKind::kGrant:
      return "grant";
    case LedgerKind::kReserve:
      return "reserve";
    case LedgerKind::kSpend:
      return "spend";
    case LedgerKind::kRefund:
      return "refund";
    case LedgerKind::kReverse:
      return "reverse";
    case LedgerKind::kExpire:
      return "expire";
    case LedgerKind::kPoints:
      return "points";
  }
  return "unknown";
}

LedgerTxn Transfer(std::string key, LedgerKind kind, std::string from, std::string to,
                   std::int64_t amount, std::int64_t at) {
  LedgerTxn txn;
  txn.key = std::move(key);
  txn.kind = kind;
  txn.postings = {{std::move(from), -amount}, {std::move(to), amount}};
  txn.at = at;
  return txn;
}

common::Status ValidateTxn(const LedgerTxn& txn) {
  if (txn.key.empty() || txn.key.size() > 128) {
    return MakeError(Errc::kInvalidArgument, "ledger key must be 1..128 characters");
  }
  for (char c : txn.key) {
    if (c < 0x21 || c > 0x7e) {
      return MakeError(Errc::kInvalidArgument, "ledger key must be printable ASCII");
    }
  }
  if (txn.postings.size() < 2) {
    return MakeError(Errc::kInvalidArgument, "a ledger transaction needs two postings");
  }
  std::set<std::string_view> accounts;
  std::int64_t sum = 0;
  for (const Posting& p : txn.postings) {
    if (p.amount == 0) return MakeError(Errc::kInvalidArgument, "a posting of zero");
    if (p.account.empty() || !accounts.insert(p.account).second) {
      return MakeError(Errc::kInvalidArgument, "postings need distinct, named accounts");
    }
    if (__builtin_add_overflow(sum, p.amount, &sum)) {
      return MakeError(Errc::kInvalidArgument, "ledger amounts overflow");
    }
  }
  if (sum != 0) return MakeError(Errc::kInvalidArgument, "ledger postings do not sum to zero");
  return {};
}

}  // namespace ubcp::coordinator
