-- 0001: dead-letter queue, its audit log, failure events for trends, idempotency claims.
--
-- Times are timestamptz (readable in psql, ready for date_trunc and Grafana); the service
-- speaks epoch seconds and converts at the edge (to_timestamp / extract(epoch ...)), which
-- keeps them to the microsecond.
--
-- A task's args, kwargs, exception and context are `json`, not `jsonb`: they are kept to
-- be handed back verbatim, and jsonb would alter them (1e16 and other large floats come
-- back as integers, -0.0 as 0) or refuse them (a "\u0000" in an exception message).
-- The ->/->> operators still work on json.

CREATE TABLE dlq_records (
    id              text PRIMARY KEY,  -- a uuid string chosen by the service
    task_id         text NOT NULL,
    task_name       text NOT NULL,
    queue           text,
    args            json NOT NULL,
    kwargs          json NOT NULL,
    exception       json NOT NULL,
    context         json NOT NULL,
    failure_type    text NOT NULL,
    category        text NOT NULL,
    remediation     text NOT NULL,
    confidence      double precision NOT NULL,
    rule            text NOT NULL,
    priority        text NOT NULL,
    priority_value  integer NOT NULL,
    target_queue    text NOT NULL,
    attempts        integer NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CONSTRAINT dlq_records_status_check
        CHECK (status IN ('pending', 'retrying', 'resolved', 'abandoned')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    dlq_retries     integer NOT NULL DEFAULT 0,
    last_error      text
);

-- Keyset paging of the action API (WHERE status = $1 AND (created_at, id) > ($2, $3));
-- its leading column also serves plain status filters and the depth-per-status gauge.
CREATE INDEX dlq_records_status_created_at_id_idx ON dlq_records (status, created_at, id);
-- Paging without a status filter, and since/until.
CREATE INDEX dlq_records_created_at_id_idx ON dlq_records (created_at, id);
CREATE INDEX dlq_records_task_name_idx ON dlq_records (task_name);
CREATE INDEX dlq_records_failure_type_idx ON dlq_records (failure_type);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,  -- the name of the operator's token, never the token
    action       text NOT NULL,
    record_ids   text[] NOT NULL DEFAULT '{}',
    from_status  text,
    reason       text,
    details      jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE failure_events (
    -- A key, so retention deletes work even if the table is ever logically replicated.
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL,
    task_name     text NOT NULL,
    failure_type  text NOT NULL
);

CREATE INDEX failure_events_at_idx ON failure_events (at);

CREATE TABLE idempotency_keys (
    key            text PRIMARY KEY,
    state          text NOT NULL
        CONSTRAINT idempotency_keys_state_check CHECK (state IN ('running', 'done')),
    first_seen_at  timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
