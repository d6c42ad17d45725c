-- 0009: DLQ search (DESIGN §3.3, issue 18): task_id and exception_type filters, and `q`,
-- a case-insensitive substring search over task id, exception type, message and traceback.
--
-- pg_trgm rather than tsvector: operators paste fragments of what they see (a module path,
-- `KeyError: 'user_id'`, half a task id), and a tsvector's words and stemming would miss
-- those; a trigram GIN index answers ILIKE '%fragment%' for any fragment of 3 characters
-- or more, which is also what the embedded store's FTS5 trigram table answers. The indexed
-- expression is repeated verbatim by dlq_where_q in queries.sql (the planner matches it).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX dlq_records_search_trgm_idx ON dlq_records USING gin (
    (task_id || ' ' || coalesce(exception ->> 'type', '') || ' '
     || coalesce(exception ->> 'message', '') || ' '
     || coalesce(exception ->> 'traceback', '')) gin_trgm_ops
);
CREATE INDEX dlq_records_task_id_created_at_id_idx ON dlq_records (task_id, created_at, id);
