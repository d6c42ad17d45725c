-- The embedded (SQLite) twin of the PostgreSQL schema and queries: same tables, columns
-- and semantics. Times are REAL epoch seconds, JSON is TEXT; STRICT tables enforce the
-- column types as PostgreSQL would.

-- name: schema
BEGIN;

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
CREATE INDEX IF NOT EXISTS dlq_records_task_name_idx ON dlq_records (task_name);
CREATE INDEX IF NOT EXISTS dlq_records_failure_type_idx ON dlq_records (failure_type);

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

CREATE TABLE IF NOT EXISTS failure_events (
    id            INTEGER PRIMARY KEY,
    at            REAL NOT NULL,
    task_name     TEXT NOT NULL,
    failure_type  TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS failure_events_at_idx ON failure_events (at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key            TEXT PRIMARY KEY NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('running', 'done')),
    first_seen_at  REAL NOT NULL,
    expires_at     REAL NOT NULL
) STRICT;

COMMIT;

-- name: dlq_put
INSERT INTO dlq_records (
    id, task_id, task_name, queue, args, kwargs, exception, context,
    failure_type, category, remediation, confidence, rule, priority, priority_value,
    target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error
) VALUES (
    :id, :task_id, :task_name, :queue, :args, :kwargs, :exception, :context,
    :failure_type, :category, :remediation, :confidence, :rule, :priority, :priority_value,
    :target_queue, :attempts, :status, :created_at, :updated_at, :dlq_retries, :last_error
)
ON CONFLICT (id) DO NOTHING;

-- name: dlq_failed_again
UPDATE dlq_records
SET status = 'pending',
    queue = :queue,
    exception = :exception,
    context = :context,
    failure_type = :failure_type,
    category = :category,
    remediation = :remediation,
    confidence = :confidence,
    rule = :rule,
    priority = :priority,
    priority_value = :priority_value,
    target_queue = :target_queue,
    attempts = :attempts,
    updated_at = :updated_at
WHERE id = :id AND status IN ('retrying', 'pending');

-- name: dlq_resolve
UPDATE dlq_records
SET status = 'resolved', updated_at = :now
WHERE id = :id AND status IN ('retrying', 'pending');

-- name: dlq_get
SELECT id, task_id, task_name, queue, args, kwargs, exception, context,
       failure_type, category, remediation, confidence, rule, priority, priority_value,
       target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error
FROM dlq_records
WHERE id = :id;

-- name: idempotency_claim
INSERT INTO idempotency_keys AS k (key, state, first_seen_at, expires_at)
VALUES (:key, 'running', :now, :expires_at)
ON CONFLICT (key) DO UPDATE
    SET state = 'running',
        first_seen_at = excluded.first_seen_at,
        expires_at = excluded.expires_at
    WHERE k.expires_at <= excluded.first_seen_at;

-- name: idempotency_holder
SELECT first_seen_at, state FROM idempotency_keys WHERE key = :key;

-- name: idempotency_complete
UPDATE idempotency_keys SET state = 'done', expires_at = :expires_at WHERE key = :key;

-- name: idempotency_release
DELETE FROM idempotency_keys WHERE key = :key AND state = 'running';

-- name: ping
SELECT 1;
