-- Named queries of the SQL store (store/sql.py) on SQLite: the same names as
-- postgres/queries.sql. Times are REAL epoch seconds, JSON is TEXT.

-- name: dlq_record_columns
-- A DlqRecord's fields as every query that reads records selects them.
id, task_id, task_name, queue, args, kwargs, exception, context,
failure_type, category, remediation, confidence, rule, priority, priority_value,
target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error, workflow

-- name: dlq_put
INSERT INTO dlq_records (
    id, task_id, task_name, queue, args, kwargs, exception, context,
    failure_type, category, remediation, confidence, rule, priority, priority_value,
    target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error, workflow
) VALUES (
    :id, :task_id, :task_name, :queue, :args, :kwargs, :exception, :context,
    :failure_type, :category, :remediation, :confidence, :rule, :priority, :priority_value,
    :target_queue, :attempts, :status, :created_at, :updated_at, :dlq_retries, :last_error,
    :workflow
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
WHERE id = :id AND task_id = :task_id AND status IN ('retrying', 'pending');

-- name: dlq_resolve
UPDATE dlq_records
SET status = 'resolved', updated_at = :now
WHERE id = :id AND task_id = :task_id AND status IN ('retrying', 'pending');

-- name: dlq_get
SELECT {dlq_record_columns}
FROM dlq_records
WHERE id = :id;

-- name: dlq_ids_with_prefix
-- Ids compare bytewise (BINARY): the primary key serves the range.
SELECT id FROM dlq_records WHERE id >= :prefix AND id < :upper ORDER BY id LIMIT :limit;

-- name: dlq_list
-- The WHERE slot: the dlq_where_* fragments and, after the first page, dlq_before.
-- One step is enough here: without statistics (no ANALYZE), SQLite takes the index whose
-- leading column a filter pins; PostgreSQL's cost guess needs the two steps of queries.sql.
SELECT {dlq_record_columns}
FROM dlq_records
WHERE {where}
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: dlq_iterate
SELECT {dlq_record_columns}
FROM dlq_records
WHERE {where}
ORDER BY created_at, id
LIMIT :limit;

-- name: dlq_export
-- The CSV export's columns (sidecar/service/export.py), in its order, oldest first. NUL
-- characters are dropped from the exception's fields (->> would cut them at the first),
-- as in dlq_search_source (0006) and PostgreSQL's dlq_searchable.
SELECT id, status, task_name, task_id, queue, failure_type, category, remediation,
       confidence, rule, priority, target_queue, attempts, dlq_retries, created_at,
       updated_at,
       replace(replace(replace(exception, '\\', char(1)), '\u0000', ''), char(1), '\\')
           ->> 'type' AS exception_type,
       replace(replace(replace(exception, '\\', char(1)), '\u0000', ''), char(1), '\\')
           ->> 'message' AS message,
       last_error
FROM dlq_records
WHERE {where}
ORDER BY created_at, id
LIMIT :limit;

-- name: dlq_ids
SELECT id, created_at
FROM dlq_records
WHERE {where}
ORDER BY created_at, id
LIMIT :limit;

-- name: dlq_count
SELECT count(*) AS count FROM dlq_records WHERE {where};

-- name: dlq_where_status
status = :status

-- name: dlq_where_task_name
task_name = :task_name

-- name: dlq_where_failure_type
failure_type = :failure_type

-- name: dlq_where_since
created_at >= :since

-- name: dlq_where_until
created_at < :until

-- name: dlq_before
(created_at, id) < (:cursor_at, :cursor_id)

-- name: dlq_after
(created_at, id) > (:cursor_at, :cursor_id)

-- name: dlq_transition_select
-- With dlq_transition_update, inside one IMMEDIATE transaction: the rows as they were
-- before, then the same rows moved. :ids and :from_statuses are JSON arrays.
SELECT {dlq_record_columns}
FROM dlq_records
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status IN (SELECT value FROM json_each(:from_statuses));

-- name: dlq_transition_update
UPDATE dlq_records
SET status = :to,
    updated_at = :now,
    last_error = coalesce(:error, last_error),
    dlq_retries = dlq_retries + :retries,
    lease_until = :lease_until
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status IN (SELECT value FROM json_each(:from_statuses));

-- name: dlq_end_lease
-- `+status`: look the rows up by id. With a plain `status = 'retrying'` SQLite walks the
-- status index over every retrying record, and a bulk retry leaves all it sent retrying:
-- each chunk cost more than the last.
UPDATE dlq_records SET lease_until = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'retrying';

-- name: dlq_lapsed_leases
SELECT id FROM dlq_records
WHERE lease_until < :now AND status = 'retrying'
ORDER BY lease_until
LIMIT :limit;

-- name: dlq_counts_fold
-- PostgreSQL keeps counts per status (0013); an embedded DLQ is small enough to count.
SELECT 0;

-- name: dlq_counts
SELECT status, count(*) AS count FROM dlq_records GROUP BY status;

-- name: dlq_oldest_pending
SELECT min(created_at) AS oldest FROM dlq_records WHERE status = 'pending';

-- name: audit_insert
-- entry_key NULL (no key) never conflicts; a key already stored leaves the row as it is.
INSERT INTO audit_log (at, actor, action, record_ids, from_status, reason, details, entry_key)
VALUES (:at, :actor, :action, :record_ids, :from_status, :reason, :details, :entry_key)
ON CONFLICT (entry_key) DO NOTHING;

-- name: audit_list
SELECT id, at, actor, action, record_ids, from_status, reason, details
FROM audit_log
WHERE {where}
ORDER BY at DESC, id DESC
LIMIT :limit;

-- name: audit_before
(at, id) < (:cursor_at, :cursor_id)

-- name: event_insert
INSERT INTO hook_events (at, kind, task_name, failure_type, event, decision)
VALUES (:at, :kind, :task_name, :failure_type, :event, :decision);

-- name: events_page
SELECT id, at, kind, event, decision
FROM hook_events
WHERE at >= :since AND at < :until AND (at, id) > (:after_at, :after_id)
  AND event IS NOT NULL
ORDER BY at, id
LIMIT :limit;

-- name: failure_trends
-- CAST truncates, which is floor() for times after 1970; floor() itself needs a SQLite
-- built with its math functions.
SELECT CAST(at / :bucket AS INTEGER) * :bucket AS start, failure_type, count(*) AS count
FROM hook_events
WHERE kind = 'failure' AND at >= :since
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: purge_events
DELETE FROM hook_events
WHERE id IN (
    SELECT id FROM hook_events WHERE at < :events_before ORDER BY at, id LIMIT :limit
);

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE expires_at <= :now;

-- name: idempotency_claim
INSERT INTO idempotency_keys AS k (key, state, first_seen_at, expires_at, owner)
VALUES (:key, 'running', :now, :expires_at, :owner)
ON CONFLICT (key) DO UPDATE
    SET state = 'running',
        first_seen_at = excluded.first_seen_at,
        expires_at = excluded.expires_at,
        owner = excluded.owner
    WHERE k.expires_at <= excluded.first_seen_at
RETURNING 1 AS claimed;

-- name: idempotency_holder
SELECT first_seen_at, state FROM idempotency_keys WHERE key = :key;

-- name: idempotency_complete
UPDATE idempotency_keys SET state = 'done', expires_at = :expires_at
WHERE key = :key AND owner = :owner;

-- name: idempotency_release
DELETE FROM idempotency_keys WHERE key = :key AND owner = :owner AND state = 'running';

-- name: ping
SELECT 1;

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO schema_migrations (version) VALUES (:version);

-- name: dlq_where_task_id
task_id = :task_id

-- name: dlq_where_exception_type
exception ->> 'type' = :exception_type

-- name: dlq_where_min_dlq_retries
dlq_retries >= :min_dlq_retries

-- name: dlq_where_q
rowid IN (SELECT rowid FROM dlq_fts WHERE dlq_fts MATCH :q)
