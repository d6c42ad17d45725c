-- 0007: as PostgreSQL's 0009, DLQ search. `q` reads an FTS5 table with the trigram
-- tokenizer (case-insensitive substrings of 3 characters or more, as pg_trgm's ILIKE).
-- It is an external-content table over the view dlq_search_source (the searched fields
-- come out of the exception JSON), kept by triggers; an update re-indexes a record only
-- when its task id or exception changes, not on every status change.
CREATE INDEX IF NOT EXISTS dlq_records_task_id_created_at_id_idx
    ON dlq_records (task_id, created_at, id);

CREATE VIEW dlq_search_source AS
    SELECT rowid AS rid, task_id,
           coalesce(exception ->> 'type', '') AS exception_type,
           coalesce(exception ->> 'message', '') AS message,
           coalesce(exception ->> 'traceback', '') AS traceback
    FROM dlq_records;

CREATE VIRTUAL TABLE dlq_fts USING fts5(
    task_id, exception_type, message, traceback,
    content = 'dlq_search_source', content_rowid = 'rid', tokenize = 'trigram'
);

CREATE TRIGGER dlq_fts_insert AFTER INSERT ON dlq_records BEGIN
    INSERT INTO dlq_fts (rowid, task_id, exception_type, message, traceback)
    VALUES (new.rowid, new.task_id, coalesce(new.exception ->> 'type', ''),
            coalesce(new.exception ->> 'message', ''),
            coalesce(new.exception ->> 'traceback', ''));
END;

CREATE TRIGGER dlq_fts_delete AFTER DELETE ON dlq_records BEGIN
    INSERT INTO dlq_fts (dlq_fts, rowid, task_id, exception_type, message, traceback)
    VALUES ('delete', old.rowid, old.task_id, coalesce(old.exception ->> 'type', ''),
            coalesce(old.exception ->> 'message', ''),
            coalesce(old.exception ->> 'traceback', ''));
END;

CREATE TRIGGER dlq_fts_update AFTER UPDATE OF task_id, exception ON dlq_records BEGIN
    INSERT INTO dlq_fts (dlq_fts, rowid, task_id, exception_type, message, traceback)
    VALUES ('delete', old.rowid, old.task_id, coalesce(old.exception ->> 'type', ''),
            coalesce(old.exception ->> 'message', ''),
            coalesce(old.exception ->> 'traceback', ''));
    INSERT INTO dlq_fts (rowid, task_id, exception_type, message, traceback)
    VALUES (new.rowid, new.task_id, coalesce(new.exception ->> 'type', ''),
            coalesce(new.exception ->> 'message', ''),
            coalesce(new.exception ->> 'traceback', ''));
END;

-- Records stored before this migration.
INSERT INTO dlq_fts (dlq_fts) VALUES ('rebuild');
