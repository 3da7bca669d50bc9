// SPDX-License-Identifier: Apache-2.0
#pragma once
// The SQLite store's schema as an ordered list of migrations. Each one is applied once, in its
// own transaction together with its schema_version row, so a crash leaves the database at a
// whole version. Append new migrations; never edit one that has shipped.

#include <array>

namespace ubcp::coordinator::sqlite {

struct Migration {
  int version;
  const char* sql;
};

inline constexpr std::array kMigrations = {
    Migration{1, R"sql(
CREATE TABLE hosts (
  id                INTEGER PRIMARY KEY,
  public_key        TEXT NOT NULL UNIQUE,
  name              TEXT NOT NULL,
  -- Only the hash of the bearer token is stored; see FindHostByTokenHash.
  token_hash        TEXT NOT NULL UNIQUE,
  benchmark_json    TEXT NOT NULL,
  capabilities_json TEXT NOT NULL,
  registered_at     INTEGER NOT NULL,
  last_seen_at      INTEGER NOT NULL
);

CREATE TABLE accounts (
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL UNIQUE,
  token_hash TEXT NOT NULL UNIQUE,
  role       TEXT NOT NULL CHECK (role IN ('recipient', 'admin')),
  created_at INTEGER NOT NULL
);

CREATE TABLE blobs (
  id         TEXT PRIMARY KEY,
  size       INTEGER NOT NULL CHECK (size >= 0),
  raw_size   INTEGER NOT NULL CHECK (raw_size >= 0),
  kind       TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE catalog (
  name        TEXT PRIMARY KEY,
  model_spec  TEXT NOT NULL,
  blob_id     TEXT NOT NULL,
  source_job  INTEGER NOT NULL,
  description TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
  id            INTEGER PRIMARY KEY,
  account_id    INTEGER NOT NULL,
  name          TEXT NOT NULL,
  spec_json     TEXT NOT NULL,
  model_spec    TEXT NOT NULL,
  state         TEXT NOT NULL
                CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
  rounds        INTEGER NOT NULL CHECK (rounds >= 0),
  current_round INTEGER NOT NULL,
  lease_seconds INTEGER NOT NULL CHECK (lease_seconds > 0),
  final_model   TEXT NOT NULL DEFAULT '',
  error         TEXT NOT NULL DEFAULT '',
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
);
CREATE INDEX jobs_by_account ON jobs (account_id, id);

CREATE TABLE job_shards (
  job_id      INTEGER NOT NULL REFERENCES jobs (id),
  kind        TEXT NOT NULL CHECK (kind IN ('train', 'test')),
  shard_index INTEGER NOT NULL CHECK (shard_index >= 0),
  blob_id     TEXT NOT NULL,
  samples     INTEGER NOT NULL CHECK (samples >= 0),
  PRIMARY KEY (job_id, kind, shard_index)
) WITHOUT ROWID;

CREATE TABLE rounds (
  job_id        INTEGER NOT NULL REFERENCES jobs (id),
  round         INTEGER NOT NULL CHECK (round >= 0),
  model_blob    TEXT NOT NULL,
  momentum_blob TEXT NOT NULL DEFAULT '',
  aggregated    INTEGER NOT NULL DEFAULT 0 CHECK (aggregated IN (0, 1)),
  created_at    INTEGER NOT NULL,
  PRIMARY KEY (job_id, round)
) WITHOUT ROWID;

CREATE TABLE units (
  id             INTEGER PRIMARY KEY,
  job_id         INTEGER NOT NULL,
  round          INTEGER NOT NULL,
  kind           TEXT NOT NULL,
  shard_index    INTEGER NOT NULL,
  state          TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done')),
  attempt        INTEGER NOT NULL DEFAULT 0,
  host_id        INTEGER NOT NULL DEFAULT 0,
  lease_deadline INTEGER NOT NULL DEFAULT 0,
  manifest_hash  TEXT NOT NULL DEFAULT '',
  -- The 64-bit unsigned seed, stored bit-for-bit as a signed integer.
  seed           INTEGER NOT NULL,
  FOREIGN KEY (job_id, round) REFERENCES rounds (job_id, round)
);
-- LeaseUnit walks this index in (job, round, id) order within each state.
CREATE INDEX units_by_state ON units (state, job_id, round, id);
CREATE INDEX units_by_round ON units (job_id, round, kind);

CREATE TABLE results (
  unit_id       INTEGER PRIMARY KEY REFERENCES units (id),
  job_id        INTEGER NOT NULL,
  round         INTEGER NOT NULL,
  kind          TEXT NOT NULL,
  host_id       INTEGER NOT NULL,
  attempt       INTEGER NOT NULL,
  envelope_hash TEXT NOT NULL,
  envelope_json TEXT NOT NULL,
  update_blob   TEXT NOT NULL,
  -- SQLite stores a NaN as NULL; the store reads NULL back as NaN.
  loss          REAL,
  accuracy      REAL,
  first_loss    REAL,
  samples       INTEGER NOT NULL CHECK (samples >= 0),
  wall_seconds  REAL,
  received_at   INTEGER NOT NULL
);
CREATE INDEX results_by_round ON results (job_id, round, kind);
CREATE INDEX results_by_host ON results (job_id, host_id);
)sql"},
    // The credit ledger (ledger.h, docs/ECONOMY.md): double-entry transactions, each with an
    // idempotency key, written in the same transaction as the state change they pay for.
    Migration{2, R"sql(
ALTER TABLE jobs ADD COLUMN price_credits INTEGER NOT NULL DEFAULT 0 CHECK (price_credits >= 0);
-- The cost of the unit this result answered, computed by the coordinator from its manifest.
ALTER TABLE results ADD COLUMN credits INTEGER NOT NULL DEFAULT 0 CHECK (credits >= 0);

CREATE TABLE ledger_txns (
  key     TEXT PRIMARY KEY,
  kind    TEXT NOT NULL
          CHECK (kind IN ('issue', 'grant', 'reserve', 'spend', 'refund', 'expire', 'points')),
  job_id  INTEGER NOT NULL DEFAULT 0,
  host_id INTEGER NOT NULL DEFAULT 0,
  memo    TEXT NOT NULL DEFAULT '',
  at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ledger_txns_by_job ON ledger_txns (job_id, kind);

CREATE TABLE ledger_entries (
  id      INTEGER PRIMARY KEY,
  txn_key TEXT NOT NULL REFERENCES ledger_txns (key),
  account TEXT NOT NULL,
  amount  INTEGER NOT NULL CHECK (amount != 0),
  UNIQUE (txn_key, account)
);
CREATE INDEX ledger_by_account ON ledger_entries (account);

-- Allocation periods: the budget B(t) and the basic share each recipient receives.
CREATE TABLE periods (
  id                INTEGER PRIMARY KEY,
  starts_at         INTEGER NOT NULL,
  ends_at           INTEGER NOT NULL CHECK (ends_at > starts_at),
  forecast_credits  INTEGER NOT NULL CHECK (forecast_credits >= 0),
  reserve_credits   INTEGER NOT NULL CHECK (reserve_credits >= 0),
  budget_credits    INTEGER NOT NULL CHECK (budget_credits >= 0),
  share_credits     INTEGER NOT NULL CHECK (share_credits >= 0),
  recipients        INTEGER NOT NULL CHECK (recipients >= 0),
  admitted_credits  INTEGER NOT NULL DEFAULT 0 CHECK (admitted_credits >= 0),
  -- Set when the period closes: the credits of results accepted during it.
  validated_credits INTEGER NOT NULL DEFAULT 0 CHECK (validated_credits >= 0),
  closed            INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1))
);
ALTER TABLE jobs ADD COLUMN admitted_period INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_by_state ON jobs (state, created_at, id);
CREATE INDEX results_by_time ON results (received_at);

-- Donors opt in to the public leaderboard by giving a public name (and maybe a team).
ALTER TABLE hosts ADD COLUMN public_name TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN team TEXT NOT NULL DEFAULT '';
)sql"},
    // Verified results (issue #4, docs/SECURITY.md): hosts belong to donor accounts and carry a
    // reputation; a work is computed by one or more units (replicas) and judged by quorum;
    // results are pending until judged; the ledger can reverse a caught host's credit.
    Migration{3, R"sql(
ALTER TABLE hosts ADD COLUMN account_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN valid_streak INTEGER NOT NULL DEFAULT 0 CHECK (valid_streak >= 0);
ALTER TABLE hosts ADD COLUMN offences INTEGER NOT NULL DEFAULT 0 CHECK (offences >= 0);
ALTER TABLE hosts ADD COLUMN banned_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX hosts_by_account ON hosts (account_id);

CREATE TABLE works (
  id             INTEGER PRIMARY KEY,
  job_id         INTEGER NOT NULL,
  round          INTEGER NOT NULL,
  kind           TEXT NOT NULL,
  shard_index    INTEGER NOT NULL,
  seed           INTEGER NOT NULL,
  quorum         INTEGER NOT NULL CHECK (quorum BETWEEN 1 AND 4),
  adaptive       INTEGER NOT NULL DEFAULT 0 CHECK (adaptive IN (0, 1)),
  settled        INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1)),
  state          TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'valid', 'dropped')),
  canonical_unit INTEGER NOT NULL DEFAULT 0,
  FOREIGN KEY (job_id, round) REFERENCES rounds (job_id, round)
);
CREATE INDEX works_by_round ON works (job_id, round, kind);
-- Every existing unit was a work of its own with quorum 1; a done one was accepted.
INSERT INTO works (id, job_id, round, kind, shard_index, seed, quorum, settled, state,
                   canonical_unit)
  SELECT id, job_id, round, kind, shard_index, seed, 1, 1,
         CASE state WHEN 'done' THEN 'valid' ELSE 'open' END,
         CASE state WHEN 'done' THEN id ELSE 0 END
  FROM units;
ALTER TABLE units ADD COLUMN work_id INTEGER NOT NULL DEFAULT 0;
UPDATE units SET work_id = id;
CREATE INDEX units_by_work ON units (work_id);

ALTER TABLE results ADD COLUMN work_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN status TEXT NOT NULL DEFAULT 'valid'
  CHECK (status IN ('pending', 'valid', 'invalid'));
UPDATE results SET work_id = unit_id;
CREATE INDEX results_by_work ON results (work_id);
CREATE INDEX results_by_host_status ON results (host_id, status);

-- Donor accounts: hosts attach to them; they receive no credit share. A wider CHECK means a
-- new table (see below).
CREATE TABLE accounts_v3 (
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL UNIQUE,
  token_hash TEXT NOT NULL UNIQUE,
  role       TEXT NOT NULL CHECK (role IN ('recipient', 'admin', 'donor')),
  created_at INTEGER NOT NULL
);
INSERT INTO accounts_v3 (id, name, token_hash, role, created_at)
  SELECT id, name, token_hash, role, created_at FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_v3 RENAME TO accounts;

-- A new ledger kind needs a new CHECK: SQLite's way is a new table, copied, renamed (foreign
-- keys are off while migrations run and checked before the migration commits).
CREATE TABLE ledger_txns_v3 (
  key     TEXT PRIMARY KEY,
  kind    TEXT NOT NULL
          CHECK (kind IN ('issue', 'grant', 'reserve', 'spend', 'refund', 'expire', 'points',
                          'reverse')),
  job_id  INTEGER NOT NULL DEFAULT 0,
  host_id INTEGER NOT NULL DEFAULT 0,
  memo    TEXT NOT NULL DEFAULT '',
  at      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ledger_txns_v3 (key, kind, job_id, host_id, memo, at)
  SELECT key, kind, job_id, host_id, memo, at FROM ledger_txns;
DROP TABLE ledger_txns;
ALTER TABLE ledger_txns_v3 RENAME TO ledger_txns;
CREATE INDEX ledger_txns_by_job ON ledger_txns (job_id, kind);
)sql"},
    // Units a host gave up (issue #5, POST /v1/units/{id}/abandon): that host is not offered the
    // unit again, and a unit given up by too many hosts fails its job.
    Migration{4, R"sql(
CREATE TABLE unit_giveups (
  unit_id INTEGER NOT NULL REFERENCES units (id),
  host_id INTEGER NOT NULL REFERENCES hosts (id),
  at      INTEGER NOT NULL,
  PRIMARY KEY (unit_id, host_id)
) WITHOUT ROWID;
)sql"},
};

}  // namespace ubcp::coordinator::sqlite
