-- Named queries of the PostgreSQL store and of the migration runner, loaded once.
-- Parameters are always bound (%(name)s), never formatted into the text.

-- name: dlq_put
-- A replayed write (spool, client retry) finds its id taken and changes nothing.
INSERT INTO dlq_records (
    id, task_id, task_name, queue, args, kwargs, exception, context,
    failure_type, category, remediation, confidence, rule, priority, priority_value,
    target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error
) VALUES (
    %(id)s, %(task_id)s, %(task_name)s, %(queue)s,
    %(args)s, %(kwargs)s, %(exception)s, %(context)s,
    %(failure_type)s, %(category)s, %(remediation)s, %(confidence)s, %(rule)s,
    %(priority)s, %(priority_value)s, %(target_queue)s, %(attempts)s, %(status)s,
    to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s), %(dlq_retries)s, %(last_error)s
)
ON CONFLICT (id) DO NOTHING;

-- name: dlq_failed_again
-- The new failure replaces the old one; what the task is (name, args, history) stays.
-- The status test in the WHERE makes the transition happen once under concurrency.
UPDATE dlq_records
SET status = 'pending',
    queue = %(queue)s,
    exception = %(exception)s,
    context = %(context)s,
    failure_type = %(failure_type)s,
    category = %(category)s,
    remediation = %(remediation)s,
    confidence = %(confidence)s,
    rule = %(rule)s,
    priority = %(priority)s,
    priority_value = %(priority_value)s,
    target_queue = %(target_queue)s,
    attempts = %(attempts)s,
    updated_at = to_timestamp(%(updated_at)s)
WHERE id = %(id)s AND status IN ('retrying', 'pending');

-- name: dlq_resolve
UPDATE dlq_records
SET status = 'resolved', updated_at = to_timestamp(%(now)s)
WHERE id = %(id)s AND status IN ('retrying', 'pending');

-- name: dlq_get
SELECT id, task_id, task_name, queue, args, kwargs, exception, context,
       failure_type, category, remediation, confidence, rule, priority, priority_value,
       target_queue, attempts, status,
       extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM updated_at)::float8 AS updated_at,
       dlq_retries, last_error
FROM dlq_records
WHERE id = %(id)s;

-- name: idempotency_claim
-- One round trip for both answers. A new key is inserted; an expired one is taken over
-- (ON CONFLICT locks the row, so only one caller can). Otherwise the second branch
-- reports the holder. That branch reads the statement's snapshot, which misses (or sees
-- the expired version of) a holder that committed while we waited for its row lock:
-- then no row comes back and the caller asks again.
WITH taken AS (
    INSERT INTO idempotency_keys AS k (key, state, first_seen_at, expires_at)
    VALUES (%(key)s, 'running', to_timestamp(%(now)s), to_timestamp(%(expires_at)s))
    ON CONFLICT (key) DO UPDATE
        SET state = 'running',
            first_seen_at = excluded.first_seen_at,
            expires_at = excluded.expires_at
        WHERE k.expires_at <= excluded.first_seen_at
    RETURNING true AS claimed, first_seen_at, state
)
SELECT claimed, extract(epoch FROM first_seen_at)::float8 AS first_seen_at, state
FROM taken
UNION ALL
SELECT false, extract(epoch FROM first_seen_at)::float8, state
FROM idempotency_keys
WHERE key = %(key)s
  AND expires_at > to_timestamp(%(now)s)
  AND NOT EXISTS (SELECT FROM taken);

-- name: idempotency_complete
UPDATE idempotency_keys
SET state = 'done', expires_at = to_timestamp(%(expires_at)s)
WHERE key = %(key)s;

-- name: idempotency_release
-- Only a running claim: a finished task must not run again because of a late release.
DELETE FROM idempotency_keys WHERE key = %(key)s AND state = 'running';

-- name: ping
SELECT 1;

-- name: migrations_lock
-- Session lock, released when the connection closes: a second sidecar starting at the
-- same time waits, then finds nothing left to apply.
SELECT pg_advisory_lock(hashtext('task-sidecar/migrations'));

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO schema_migrations (version) VALUES (%(version)s);
