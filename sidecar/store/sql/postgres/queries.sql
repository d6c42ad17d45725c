-- Named queries of the SQL store (store/sql.py) on PostgreSQL, and of its migration
-- runner, loaded once. sqlite/queries.sql has the same names.
-- Parameters are always bound (%(name)s), never formatted into the text.

-- name: dlq_record_columns
-- A DlqRecord's fields as every query that reads records selects them (named_queries
-- puts this text where a query says {dlq_record_columns}).
id, task_id, task_name, queue, args, kwargs, exception, context,
failure_type, category, remediation, confidence, rule, priority, priority_value,
target_queue, attempts, status,
extract(epoch FROM created_at)::float8 AS created_at,
extract(epoch FROM updated_at)::float8 AS updated_at,
dlq_retries, last_error, workflow

-- name: dlq_put
-- A replayed write (spool, client retry) finds its id taken and changes nothing.
INSERT INTO dlq_records (
    id, task_id, task_name, queue, args, kwargs, exception, context,
    failure_type, category, remediation, confidence, rule, priority, priority_value,
    target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error, workflow
) VALUES (
    %(id)s, %(task_id)s, %(task_name)s, %(queue)s,
    %(args)s, %(kwargs)s, %(exception)s, %(context)s,
    %(failure_type)s, %(category)s, %(remediation)s, %(confidence)s, %(rule)s,
    %(priority)s, %(priority_value)s, %(target_queue)s, %(attempts)s, %(status)s,
    to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s), %(dlq_retries)s, %(last_error)s,
    %(workflow)s
)
ON CONFLICT (id) DO NOTHING;

-- name: dlq_failed_again
-- The new failure replaces the old one; what the task is (name, args, history) stays.
-- The status test in the WHERE makes the transition happen once under concurrency; the
-- task id, that a failure can only send back the record of its own task.
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
WHERE id = %(id)s AND task_id = %(task_id)s AND status IN ('retrying', 'pending');

-- name: dlq_resolve
-- Only the record of the task that reports the success (a hook names its own task id).
UPDATE dlq_records
SET status = 'resolved', updated_at = to_timestamp(%(now)s)
WHERE id = %(id)s AND task_id = %(task_id)s AND status IN ('retrying', 'pending');

-- name: dlq_get
SELECT {dlq_record_columns}
FROM dlq_records
WHERE id = %(id)s;

-- name: dlq_ids_with_prefix
-- text_pattern_ops (migration 0004) serves a LIKE on a prefix whatever the collation.
SELECT id FROM dlq_records WHERE id LIKE %(pattern)s ORDER BY id LIMIT %(limit)s;

-- name: dlq_list
-- Newest first. The WHERE slot takes the dlq_where_* fragments the filter asks for and,
-- after the first page, dlq_before (see keyset.py): each shape is its own statement.
-- Two steps: the page's ids come from an index alone (status, task_name and failure_type
-- each lead an index that ends in created_at, id: an index-only scan, walked backwards,
-- that stops at LIMIT), then the rows by primary key. In one step the planner must guess
-- where the matches lie, and for a common status it walks (created_at, id) checking each
-- row: slow when they are old (`resolved` behind a fresh backlog of pending records took
-- 65 ms instead of 0.7 on a million rows). The outer ORDER BY names d.created_at: a bare
-- created_at would be the epoch alias of the SELECT list.
WITH page AS (
    SELECT id
    FROM dlq_records
    WHERE {where}
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
)
SELECT {dlq_record_columns}
FROM page JOIN dlq_records AS d USING (id)
ORDER BY d.created_at DESC, d.id DESC;

-- name: dlq_iterate
-- Oldest first, one batch per call, in two steps as dlq_list; the next batch starts
-- after the last (dlq_after).
WITH batch AS (
    SELECT id
    FROM dlq_records
    WHERE {where}
    ORDER BY created_at, id
    LIMIT %(limit)s
)
SELECT {dlq_record_columns}
FROM batch JOIN dlq_records AS d USING (id)
ORDER BY d.created_at, d.id;

-- name: dlq_export
-- The CSV export's columns (sidecar/service/export.py), in its order, oldest first, a batch
-- per call after the last (dlq_after): no args, kwargs or traceback fetched or decoded.
SELECT id, status, task_name, task_id, queue, failure_type, category, remediation,
       confidence, rule, priority, target_queue, attempts, dlq_retries,
       extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM updated_at)::float8 AS updated_at,
       dlq_searchable(exception) ->> 'type' AS exception_type,
       dlq_searchable(exception) ->> 'message' AS message,
       last_error
FROM dlq_records
WHERE {where}
-- Qualified: a bare created_at would be the output column, and no index sorts that.
ORDER BY dlq_records.created_at, dlq_records.id
LIMIT %(limit)s;

-- name: dlq_ids
-- The ids only, oldest first, a batch per call after the last (dlq_after): what a bulk
-- action moves by id, with nothing decoded that it would throw away.
SELECT id, extract(epoch FROM created_at)::float8 AS created_at
FROM dlq_records
WHERE {where}
ORDER BY dlq_records.created_at, dlq_records.id
LIMIT %(limit)s;

-- name: dlq_count
SELECT count(*) AS count FROM dlq_records WHERE {where};

-- name: dlq_where_status
status = %(status)s

-- name: dlq_where_task_name
task_name = %(task_name)s

-- name: dlq_where_failure_type
failure_type = %(failure_type)s

-- name: dlq_where_since
created_at >= to_timestamp(%(since)s)

-- name: dlq_where_until
created_at < to_timestamp(%(until)s)

-- name: dlq_before
(created_at, id) < (to_timestamp(%(cursor_at)s), %(cursor_id)s)

-- name: dlq_after
(created_at, id) > (to_timestamp(%(cursor_at)s), %(cursor_id)s)

-- name: dlq_transition_select
-- With dlq_transition_update, in one transaction: the rows as they were, then the same
-- rows moved, so each record moves once whatever the concurrency. FOR UPDATE makes a
-- concurrent caller wait for the row, then re-check the WHERE on its new version (READ
-- COMMITTED), so it skips the rows that already moved. Locking in id order keeps two bulk
-- actions over overlapping ids from deadlocking.
SELECT {dlq_record_columns}
FROM dlq_records
WHERE id = ANY(%(ids)s::text[]) AND status = ANY(%(from_statuses)s::text[])
ORDER BY id
FOR UPDATE;

-- name: dlq_transition_update
UPDATE dlq_records
SET status = %(to)s,
    updated_at = to_timestamp(%(now)s),
    last_error = coalesce(%(error)s::text, last_error),
    dlq_retries = dlq_retries + %(retries)s,
    lease_until = to_timestamp(%(lease_until)s::float8)
WHERE id = ANY(%(ids)s::text[]) AND status = ANY(%(from_statuses)s::text[]);

-- name: dlq_end_lease
-- The requeue is sent: the record stays `retrying` until the worker reports back.
UPDATE dlq_records SET lease_until = NULL
WHERE id = ANY(%(ids)s::text[]) AND status = 'retrying';

-- name: dlq_lapsed_leases
-- Records a dead sidecar took for a requeue and never confirmed as sent.
SELECT id FROM dlq_records
WHERE lease_until < to_timestamp(%(now)s) AND status = 'retrying'
ORDER BY lease_until
LIMIT %(limit)s;

-- name: dlq_counts_fold
-- The signed rows of 0013 folded into one per status, in one statement (the sum is kept).
-- One sidecar at a time: another folding meanwhile deletes nothing (its lock attempt
-- fails), so no reader ever sees a fold half done.
WITH folded AS (
    DELETE FROM dlq_status_counts
    WHERE pg_try_advisory_xact_lock(hashtext('task-sidecar:dlq_status_counts'))
    RETURNING status, n
)
INSERT INTO dlq_status_counts (status, n)
SELECT status, sum(n) FROM folded GROUP BY status;

-- name: dlq_counts
SELECT status, sum(n)::bigint AS count FROM dlq_status_counts GROUP BY status;

-- name: dlq_oldest_pending
-- min() over the (status, created_at, id) index: one descent, not a scan.
SELECT extract(epoch FROM min(created_at))::float8 AS oldest
FROM dlq_records
WHERE status = 'pending';

-- name: audit_insert
-- entry_key NULL (no key) never conflicts; a key already stored leaves the row as it is.
INSERT INTO audit_log (at, actor, action, record_ids, from_status, reason, details, entry_key)
VALUES (
    to_timestamp(%(at)s), %(actor)s, %(action)s, %(record_ids)s::text[],
    %(from_status)s, %(reason)s, %(details)s, %(entry_key)s
)
ON CONFLICT (entry_key) DO NOTHING;

-- name: audit_list
-- Newest first, keyset-paged on (at, id) like the DLQ (audit_before after the first page);
-- a.at, not the alias, as in dlq_list.
SELECT id, extract(epoch FROM at)::float8 AS at, actor, action, record_ids, from_status,
       reason, details
FROM audit_log AS a
WHERE {where}
ORDER BY a.at DESC, a.id DESC
LIMIT %(limit)s;

-- name: audit_before
(at, id) < (to_timestamp(%(cursor_at)s), %(cursor_id)s)

-- name: event_insert
INSERT INTO hook_events (at, kind, task_name, failure_type, event, decision)
VALUES (
    to_timestamp(%(at)s), %(kind)s, %(task_name)s, %(failure_type)s, %(event)s, %(decision)s
);

-- name: events_page
-- Oldest first, keyset-paged on (at, id): an export streams page after page.
SELECT id, extract(epoch FROM at)::float8 AS at, kind, event, decision
FROM hook_events
WHERE at >= to_timestamp(%(since)s) AND at < to_timestamp(%(until)s)
  AND (at, id) > (to_timestamp(%(after_at)s), %(after_id)s)
  AND event IS NOT NULL
ORDER BY at, id
LIMIT %(limit)s;

-- name: failure_trends
-- Buckets start at multiples of the bucket size since the epoch, so every caller (and
-- every sidecar of a fleet) draws the same boundaries. The partial index on failures
-- holds (at, failure_type):
-- an index-only scan.
SELECT floor(extract(epoch FROM at)::float8 / %(bucket)s) * %(bucket)s AS start,
       failure_type,
       count(*) AS count
FROM hook_events
WHERE kind = 'failure' AND at >= to_timestamp(%(since)s)
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: purge_events
-- One batch of old events: short statements, no long lock however large the backlog.
-- SKIP LOCKED: sidecars purging at once (a fleet deployed together runs its hourly purges
-- together) take disjoint batches instead of deadlocking on each other's rows.
DELETE FROM hook_events
WHERE id IN (
    SELECT id FROM hook_events WHERE at < to_timestamp(%(events_before)s)
    ORDER BY at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: purge_idempotency_keys
-- A key taken over while we wait for its row lock is re-checked on its new version, and
-- kept.
DELETE FROM idempotency_keys WHERE expires_at <= to_timestamp(%(now)s);

-- name: idempotency_claim
-- A new key is inserted; an expired one is taken over. Otherwise no row comes back, and
-- ON CONFLICT has locked the holder's row (it does even when the WHERE is false), so
-- idempotency_holder, next in the same transaction, reads a holder that cannot change.
INSERT INTO idempotency_keys AS k (key, state, first_seen_at, expires_at, owner)
VALUES (%(key)s, 'running', to_timestamp(%(now)s), to_timestamp(%(expires_at)s), %(owner)s)
ON CONFLICT (key) DO UPDATE
    SET state = 'running',
        first_seen_at = excluded.first_seen_at,
        expires_at = excluded.expires_at,
        owner = excluded.owner
    WHERE k.expires_at <= excluded.first_seen_at
RETURNING true AS claimed;

-- name: idempotency_holder
SELECT extract(epoch FROM first_seen_at)::float8 AS first_seen_at, state
FROM idempotency_keys
WHERE key = %(key)s;

-- name: idempotency_complete
-- Only by the claim's owner (a late caller whose claim was taken over changes nothing).
UPDATE idempotency_keys
SET state = 'done', expires_at = to_timestamp(%(expires_at)s)
WHERE key = %(key)s AND owner = %(owner)s;

-- name: idempotency_release
-- Only a running claim: a finished task must not run again because of a late release.
DELETE FROM idempotency_keys
WHERE key = %(key)s AND owner = %(owner)s AND state = 'running';

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

-- name: dlq_where_task_id
task_id = %(task_id)s

-- name: dlq_where_exception_type
exception ->> 'type' = %(exception_type)s

-- name: dlq_where_min_dlq_retries
dlq_retries >= %(min_dlq_retries)s

-- name: dlq_where_q
dlq_search_text(task_id, exception) ILIKE %(q)s

-- name: explorer_redactions_delete
-- The DLQ explorer's views (0010) read what the policy allows them to show from these.
DELETE FROM dlq_explorer_redactions WHERE NOT (key = ANY(%(keys)s::text[]));

-- name: explorer_redactions_insert
INSERT INTO dlq_explorer_redactions (key)
SELECT unnest(%(keys)s::text[])
ON CONFLICT DO NOTHING;

-- name: explorer_settings_update
UPDATE dlq_explorer_settings SET show_args = %(show_args)s, synced_at = now();

-- name: schedule_analysis_save
-- The schedule panels of the explorer (0011) read the last analysis from here.
INSERT INTO schedule_explorer_analysis (analysed_at, document)
VALUES (now(), %(document)s::jsonb)
ON CONFLICT (singleton) DO UPDATE
SET analysed_at = excluded.analysed_at, document = excluded.document;
