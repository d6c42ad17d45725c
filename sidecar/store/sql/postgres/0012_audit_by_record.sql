-- 0012: the explorer's audit trail of one record without reading the whole audit log.
-- dlq_explorer_audit unnests record_ids, which no index can answer; it now also shows the
-- array, and the dashboard's query adds `record_ids @> ARRAY[id]`, which this index
-- answers (the view is inlined into the query).
CREATE INDEX audit_log_record_ids_idx ON audit_log USING gin (record_ids);

CREATE OR REPLACE VIEW dlq_explorer_audit AS
SELECT a.id,
       a.at,
       record_id,
       a.actor,
       a.action,
       a.from_status,
       a.reason,
       a.details,
       a.record_ids
FROM audit_log a
CROSS JOIN LATERAL unnest(a.record_ids) AS record_id;
