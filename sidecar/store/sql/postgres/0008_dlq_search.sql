-- 0008: DLQ search (DESIGN §3.3, issue 18): task_id and exception_type filters, and `q`,
-- a case-insensitive substring search over task id, exception type, message and traceback.
--
-- pg_trgm rather than tsvector: operators paste fragments of what they see (a module path,
-- `KeyError: 'user_id'`, half a task id), and a tsvector's words and stemming would miss
-- those; a trigram GIN index answers ILIKE '%fragment%' for any fragment of 3 characters
-- or more, which is also what the embedded store's FTS5 trigram table answers.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The searched text of a record. `exception` is json, not jsonb, so that a message may hold
-- "\u0000" (0001); ->> refuses to turn that into text, and an index over it would refuse
-- the record. Such escapes (only unescaped ones: after an even run of backslashes) are
-- dropped first. Both functions are single expressions, which PostgreSQL inlines;
-- dlq_where_q calls dlq_search_text as the index does, so the planner matches them.
CREATE FUNCTION dlq_searchable(exception json) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN strpos(exception::text, '\u0000') = 0 THEN exception
            ELSE regexp_replace(exception::text, '(?<!\\)((?:\\\\)*)\\u0000', '\1', 'g')::json
       END;

CREATE FUNCTION dlq_search_text(task_id text, exception json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN task_id || ' ' || coalesce(dlq_searchable(exception) ->> 'type', '') || ' '
       || coalesce(dlq_searchable(exception) ->> 'message', '') || ' '
       || coalesce(dlq_searchable(exception) ->> 'traceback', '');

CREATE INDEX dlq_records_search_trgm_idx ON dlq_records
    USING gin (dlq_search_text(task_id, exception) gin_trgm_ops);
CREATE INDEX dlq_records_task_id_created_at_id_idx ON dlq_records (task_id, created_at, id);
