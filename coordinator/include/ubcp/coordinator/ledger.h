// SPDX-License-Identifier: Apache-2.0
#pragma once
// The credit ledger's vocabulary: accounts, double-entry transactions and their rules. Pure: the
// store writes a LedgerTxn in the same SQL transaction as the state change it pays for
// (store.h), and `ubcp-coordinator check-ledger` verifies the invariants below. Amounts are
// whole credits of 1 MFLOP (cost_model.h).
//
// Accounts and how credit moves between them (docs/ECONOMY.md):
//   issuance        -> recipient:<id>   basic issue each period, admin grants
//   recipient:<id>  -> job:<id>         reservation of a job's price when it is admitted
//   job:<id>        -> spent            the cost of each accepted unit
//   job:<id>        -> recipient:<id>   refund of what a finished, failed or cancelled job did
//                                       not use
//   recipient:<id>  -> expired          unspent credit above the carry-over cap at period end
//   points          -> donor:<host>     a donor's points for each accepted unit it computed
//   spent, donor:<host> -> job:<id>, points   reversal of both for a result later found invalid
//                                       (its host was caught cheating): one transaction
// recipient:, job: and donor: accounts never go below zero; issuance and points are sources
// (negative), spent and expired are sinks. Every transaction has an idempotency key, unique in
// the ledger: writing the same key twice changes nothing.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ubcp/common/result.h"

namespace ubcp::coordinator {

inline constexpr std::string_view kIssuanceAccount = "issuance";
inline constexpr std::string_view kSpentAccount = "spent";
inline constexpr std::string_view kExpiredAccount = "expired";
inline constexpr std::string_view kPointsAccount = "points";

std::string RecipientAccount(std::int64_t account_id);
std::string JobAccount(std::int64_t job_id);
std::string DonorAccount(std::int64_t host_id);
// True for the accounts that must never be negative (recipient:, job:, donor:).
bool MustStayNonNegative(std::string_view account);

enum class LedgerKind { kIssue, kGrant, kReserve, kSpend, kRefund, kExpire, kPoints, kReverse };
std::string_view LedgerKindName(LedgerKind kind);

struct Posting {
  std::string account;
  std::int64_t amount = 0;  // positive: credited to the account; negative: debited
};

struct LedgerTxn {
  std::string key;  // idempotency key, e.g. "spend:unit:42"
  LedgerKind kind = LedgerKind::kGrant;
  std::vector<Posting> postings;
  std::int64_t job_id = 0;   // 0 when not about a job
  std::int64_t host_id = 0;  // 0 when not about a donor
  std::string memo;
  std::int64_t at = 0;  // unix seconds
};

// A two-posting transaction moving `amount` (> 0) from `from` to `to`.
LedgerTxn Transfer(std::string key, LedgerKind kind, std::string from, std::string to,
                   std::int64_t amount, std::int64_t at);

// Well-formed: a non-empty key of at most 128 printable characters, at least two postings with
// non-zero amounts on distinct accounts, summing to zero without overflow. kInvalidArgument
// otherwise.
common::Status ValidateTxn(const LedgerTxn& txn);

}  // namespace ubcp::coordinator
