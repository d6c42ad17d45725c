-- 0001: the embedded store's tables, as PostgreSQL's 0001 and 0002 leave them. Times are
-- REAL epoch seconds, JSON is TEXT; STRICT tables enforce the column types as PostgreSQL
-- would. IF NOT EXISTS (and the DROPs of 0002's replaced indexes) adopt files made before
-- the embedded store had numbered migrations.

CREATE TABLE IF NOT EXISTS dlq_records (
    id              TEXT PRIMARY KEY NOT NULL,
    task_id         TEXT NOT NULL,
    task_name       TEXT NOT NULL,
    queue           TEXT,
    args            TEXT NOT NULL,
    kwargs          TEXT NOT NULL,
    exception       TEXT NOT NULL,
    context         TEXT NOT NULL,
    failure_type    TEXT NOT NULL,
    category        TEXT NOT NULL,
    remediation     TEXT NOT NULL,
    confidence      REAL NOT NULL,
    rule            TEXT NOT NULL,
    priority        TEXT NOT NULL,
    priority_value  INTEGER NOT NULL,
    target_queue    TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'retrying', 'resolved', 'abandoned')),
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    dlq_retries     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS dlq_records_status_created_at_id_idx
    ON dlq_records (status, created_at, id);
CREATE INDEX IF NOT EXISTS dlq_records_created_at_id_idx ON dlq_records (created_at, id);
-- As PostgreSQL's 0002: equality filters page through (column, created_at, id). The DROPs
-- upgrade files made before it.
DROP INDEX IF EXISTS dlq_records_task_name_idx;
DROP INDEX IF EXISTS dlq_records_failure_type_idx;
CREATE INDEX IF NOT EXISTS dlq_records_task_name_created_at_id_idx
    ON dlq_records (task_name, created_at, id);
CREATE INDEX IF NOT EXISTS dlq_records_failure_type_created_at_id_idx
    ON dlq_records (failure_type, created_at, id);

CREATE TABLE IF NOT EXISTS audit_log (
    id           INTEGER PRIMARY KEY,
    at           REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    record_ids   TEXT NOT NULL DEFAULT '[]',  -- JSON array (PostgreSQL: text[])
    from_status  TEXT,
    reason       TEXT,
    details      TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE INDEX IF NOT EXISTS audit_log_at_id_idx ON audit_log (at, id);

CREATE TABLE IF NOT EXISTS failure_events (
    id            INTEGER PRIMARY KEY,
    at            REAL NOT NULL,
    task_name     TEXT NOT NULL,
    failure_type  TEXT NOT NULL
) STRICT;

DROP INDEX IF EXISTS failure_events_at_idx;
CREATE INDEX IF NOT EXISTS failure_events_at_failure_type_idx
    ON failure_events (at, failure_type);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key            TEXT PRIMARY KEY NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('running', 'done')),
    first_seen_at  REAL NOT NULL,
    expires_at     REAL NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

