-- 0002: indexes for the action API's filters, the audit log's paging, trends and retention.
--
-- A DLQ listing is ORDER BY created_at DESC, id DESC LIMIT n under an equality filter: an
-- index on (filter column, created_at, id) returns the page in order and stops after n
-- rows. A task_name or failure_type index alone would fetch every match and sort it. The
-- composite indexes also serve every plain equality lookup, so they replace the 0001 ones.
DROP INDEX dlq_records_task_name_idx;
DROP INDEX dlq_records_failure_type_idx;
CREATE INDEX dlq_records_task_name_created_at_id_idx
    ON dlq_records (task_name, created_at, id);
CREATE INDEX dlq_records_failure_type_created_at_id_idx
    ON dlq_records (failure_type, created_at, id);

-- The audit log is paged newest first on (at, id).
CREATE INDEX audit_log_at_id_idx ON audit_log (at, id);

-- Trends count failure types over a time range: with the type in the index, an index-only
-- scan. `at` still leads, so retention deletes use it as before.
DROP INDEX failure_events_at_idx;
CREATE INDEX failure_events_at_failure_type_idx ON failure_events (at, failure_type);

-- Retention deletes expired idempotency keys.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
