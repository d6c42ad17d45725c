-- 0005: as PostgreSQL's 0007, the history of hook events, replacing failure_events.
CREATE TABLE hook_events (
    id            INTEGER PRIMARY KEY,
    at            REAL NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('failure', 'success', 'start')),
    task_name     TEXT NOT NULL,
    failure_type  TEXT,
    event         TEXT,
    decision      TEXT
) STRICT;
CREATE INDEX hook_events_at_id_idx ON hook_events (at, id);
CREATE INDEX hook_events_failures_idx ON hook_events (at, failure_type) WHERE kind = 'failure';
INSERT INTO hook_events (at, kind, task_name, failure_type)
    SELECT at, 'failure', task_name, failure_type FROM failure_events;
DROP TABLE failure_events;
