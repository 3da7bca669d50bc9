// SPDX-License-Identifier: Apache-2.0
#pragma once
// Thin RAII wrappers over the sqlite3 C API for the SQLite store: a connection, prepared
// statements with bound parameters, and the mapping of SQLite result codes to common::Errc.
// Not thread-safe: the owner serializes access (SqliteStore holds one mutex per connection).

#include <sqlite3.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "ubcp/common/result.h"

namespace ubcp::coordinator::sqlite {

using common::Errc;
using common::MakeError;
using common::Result;
using common::Status;

// Upper bound on any text bound into a statement; the API limits request bodies far below this,
// so hitting it means a caller forgot a limit.
inline constexpr std::size_t kMaxTextBytes = 16u << 20;

// Maps a SQLite (extended) result code to the project's error category: uniqueness and foreign
// key violations are conflicts, lock contention is retryable, storage failures are I/O.
inline common::Error ErrorFrom(sqlite3* db, int rc, std::string_view what) {
  Errc code = Errc::kInternal;
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      code = Errc::kConflict;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = Errc::kUnavailable;
      break;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PERM:
      code = Errc::kIo;
      break;
    case SQLITE_TOOBIG:
      code = Errc::kTooLarge;
      break;
    default:
      break;
  }
  std::string message(what);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return MakeError(code, std::move(message));
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;

// One prepared statement. Values are bound with SQLITE_TRANSIENT, so arguments may be
// temporaries.
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  static Result<std::unique_ptr<Statement>> Prepare(sqlite3* db, std::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return ErrorFrom(db, rc, "prepare");
    }
    return std::make_unique<Statement>(db, stmt);
  }

  template <class T>
  Status Bind(int index, const T& value) {
    int rc = SQLITE_OK;
    if constexpr (std::is_same_v<T, bool>) {
      rc = sqlite3_bind_int(stmt_, index, value ? 1 : 0);
    } else if constexpr (std::is_integral_v<T>) {
      static_assert(sizeof(T) < sizeof(std::int64_t) || std::is_signed_v<T>,
                    "convert 64-bit unsigned values explicitly");
      rc = sqlite3_bind_int64(stmt_, index, static_cast<sqlite3_int64>(value));
    } else if constexpr (std::is_floating_point_v<T>) {
      rc = sqlite3_bind_double(stmt_, index, static_cast<double>(value));
    } else {
      std::string_view text(value);
      if (text.size() > kMaxTextBytes) {
        return MakeError(Errc::kTooLarge, "text value exceeds the store's limit");
      }
      rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT,
                               SQLITE_UTF8);
    }
    if (rc != SQLITE_OK) return ErrorFrom(db_, rc, "bind");
    return {};
  }

  // Binds args to parameters ?1, ?2, ... in order.
  template <class... Args>
  Status BindAll(const Args&... args) {
    Status status;
    int index = 0;
    ((status = status ? Bind(++index, args) : status), ...);
    return status;
  }

  // true: a row is available; false: the statement is done.
  Result<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return ErrorFrom(db_, rc, "step");
  }

  // Runs a statement that returns no rows.
  Status Run() {
    UBCP_ASSIGN_OR_RETURN(bool row, Step());
    if (row) return MakeError(Errc::kInternal, "statement unexpectedly returned a row");
    return {};
  }

  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::int64_t Int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  int Int(int col) const { return sqlite3_column_int(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// A cached statement checked out for one use; resets it (and its bindings) when released so
// the next user starts clean and no read transaction stays open.
class StatementRef {
 public:
  explicit StatementRef(Statement* stmt) : stmt_(stmt) {}
  ~StatementRef() {
    if (stmt_ != nullptr) stmt_->Reset();
  }
  StatementRef(StatementRef&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  StatementRef& operator=(StatementRef&&) = delete;
  StatementRef(const StatementRef&) = delete;

  Statement* operator->() const { return stmt_; }
  Statement& operator*() const { return *stmt_; }

 private:
  Statement* stmt_;
};

// Prepared statements keyed by their SQL text, prepared on first use. The SQL must be a string
// with static storage duration (a literal): the cache keeps a view of it.
class StatementCache {
 public:
  explicit StatementCache(sqlite3* db) : db_(db) {}

  Result<StatementRef> Get(std::string_view sql) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      UBCP_ASSIGN_OR_RETURN(auto stmt, Statement::Prepare(db_, sql));
      it = cache_.emplace(sql, std::move(stmt)).first;
    }
    return StatementRef(it->second.get());
  }

  void Clear() { cache_.clear(); }

 private:
  sqlite3* db_;
  std::unordered_map<std::string_view, std::unique_ptr<Statement>> cache_;
};

// Runs a fixed SQL script (no values: schema, pragmas, transaction control).
inline Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string message = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    common::Error error = ErrorFrom(nullptr, rc, "exec");
    error.message = "exec: " + message;
    return error;
  }
  return {};
}

}  // namespace ubcp::coordinator::sqlite
