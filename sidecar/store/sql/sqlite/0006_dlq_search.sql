-- 0006: as PostgreSQL's 0008, DLQ search. `q` reads an FTS5 table with the trigram
-- tokenizer (case-insensitive substrings of 3 characters or more, as pg_trgm's ILIKE).
-- It is an external-content table over the view dlq_search_source (the searched fields
-- come out of the exception JSON), kept by triggers; an update re-indexes a record only
-- when its task id or exception changes, not on every status change. NUL characters are
-- left out of the indexed text: ->> would cut it at the first one. Their JSON escapes
-- are dropped (escaped backslashes, "\\", set aside as char(1) meanwhile: valid JSON
-- never holds that character raw), as PostgreSQL's dlq_searchable does.
CREATE INDEX IF NOT EXISTS dlq_records_task_id_created_at_id_idx
    ON dlq_records (task_id, created_at, id);

CREATE VIEW dlq_search_source AS
    SELECT rowid AS rid, task_id,
           coalesce(replace(replace(replace(exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'type', '') AS exception_type,
           coalesce(replace(replace(replace(exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'message', '') AS message,
           coalesce(replace(replace(replace(exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'traceback', '') AS traceback
    FROM dlq_records;

CREATE VIRTUAL TABLE dlq_fts USING fts5(
    task_id, exception_type, message, traceback,
    content = 'dlq_search_source', content_rowid = 'rid', tokenize = 'trigram'
);

CREATE TRIGGER dlq_fts_insert AFTER INSERT ON dlq_records BEGIN
    INSERT INTO dlq_fts (rowid, task_id, exception_type, message, traceback)
    VALUES (new.rowid, new.task_id, coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'type', ''),
            coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'message', ''),
            coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'traceback', ''));
END;

CREATE TRIGGER dlq_fts_delete AFTER DELETE ON dlq_records BEGIN
    INSERT INTO dlq_fts (dlq_fts, rowid, task_id, exception_type, message, traceback)
    VALUES ('delete', old.rowid, old.task_id, coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'type', ''),
            coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'message', ''),
            coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'traceback', ''));
END;

CREATE TRIGGER dlq_fts_update AFTER UPDATE OF task_id, exception ON dlq_records BEGIN
    INSERT INTO dlq_fts (dlq_fts, rowid, task_id, exception_type, message, traceback)
    VALUES ('delete', old.rowid, old.task_id, coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'type', ''),
            coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'message', ''),
            coalesce(replace(replace(replace(old.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'traceback', ''));
    INSERT INTO dlq_fts (rowid, task_id, exception_type, message, traceback)
    VALUES (new.rowid, new.task_id, coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'type', ''),
            coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'message', ''),
            coalesce(replace(replace(replace(new.exception, '\\', char(1)), '\u0000', ''), char(1), '\\') ->> 'traceback', ''));
END;

-- Records stored before this migration.
INSERT INTO dlq_fts (dlq_fts) VALUES ('rebuild');
