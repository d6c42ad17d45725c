-- 0007: the history of hook events (what workers reported and what they were told), for
-- trends and for backtesting policies (`task-sidecar events export`, `simulate`). It
-- replaces failure_events: trends count its failures. Events carried over from
-- failure_events have no body (event NULL): trends keep them, exports skip them.
CREATE TABLE hook_events (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('failure', 'success', 'start')),
    task_name     text NOT NULL,
    failure_type  text,          -- failures only
    event         json,          -- the hook's body as decoded, traceback left out
    decision      json           -- failures: {"action", "delay_seconds"}
);
-- Exports and retention read by time; trends count failures per type over a time range.
CREATE INDEX hook_events_at_id_idx ON hook_events (at, id);
CREATE INDEX hook_events_failures_idx ON hook_events (at, failure_type) WHERE kind = 'failure';
INSERT INTO hook_events (at, kind, task_name, failure_type)
    SELECT at, 'failure', task_name, failure_type FROM failure_events;
DROP TABLE failure_events;
