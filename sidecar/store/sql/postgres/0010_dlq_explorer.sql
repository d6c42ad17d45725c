-- 0010: the DLQ explorer (issue 18): views that Grafana's PostgreSQL datasource reads as
-- the role task_sidecar_reader, which may read these views and nothing else.
--
-- PostgreSQL only (the embedded SQLite store has no explorer). A view reads its tables with
-- its owner's rights, so the reader needs no grant on dlq_records or audit_log. The
-- dashboard is grafana/dashboards/json/task-sidecar-dlq-explorer.json; grafana/README.md
-- tells how to give the role a login.

-- What the views may show, written by the sidecar from its policy (`dlq.explorer` in
-- policies.yaml) at start-up and whenever it changes (sidecar/service/explorer.py).
-- Until a sidecar has written it (synced_at NULL), kwargs and args are hidden: the views
-- fail closed.
CREATE TABLE dlq_explorer_settings (
    singleton  boolean PRIMARY KEY DEFAULT true CONSTRAINT dlq_explorer_settings_singleton
        CHECK (singleton),
    show_args  boolean NOT NULL DEFAULT false,
    synced_at  timestamptz
);
INSERT INTO dlq_explorer_settings DEFAULT VALUES;

-- The kwargs keys the views mask, lower-cased (matched without regard to case).
CREATE TABLE dlq_explorer_redactions (
    key  text PRIMARY KEY
);

-- One row per record. Exception fields go through dlq_searchable (0008): ->> refuses a
-- message holding "\u0000". Top-level kwargs keys listed in dlq_explorer_redactions show
-- "[redacted]"; args (positional, nameless, so unmaskable by key) show only when the
-- policy says `show_args: true`.
CREATE VIEW dlq_explorer AS
SELECT r.id,
       r.created_at,
       r.updated_at,
       r.status,
       r.task_name,
       r.task_id,
       r.queue,
       r.failure_type,
       r.category,
       r.remediation,
       dlq_searchable(r.exception) ->> 'type' AS exception_type,
       dlq_searchable(r.exception) ->> 'message' AS message,
       dlq_searchable(r.exception) ->> 'traceback' AS traceback,
       -- What `q` searches, as the action API does: `search_text ILIKE '%…%'` is answered
       -- by the trigram index of 0008 (the view is inlined into the query).
       dlq_search_text(r.task_id, r.exception) AS search_text,
       r.dlq_retries,
       r.attempts,
       r.last_error,
       CASE WHEN s.synced_at IS NOT NULL AND s.show_args THEN r.args::text
            ELSE '[hidden]'
       END AS args,
       CASE WHEN s.synced_at IS NULL OR json_typeof(r.kwargs) <> 'object' THEN '[hidden]'
            ELSE (SELECT coalesce(json_object_agg(
                             k.key,
                             CASE WHEN lower(k.key) IN (SELECT x.key FROM dlq_explorer_redactions x)
                                  THEN to_json('[redacted]'::text)
                                  ELSE k.value
                             END), '{}'::json)::text
                  FROM json_each(dlq_searchable(r.kwargs)) AS k)
       END AS kwargs
FROM dlq_records r
CROSS JOIN dlq_explorer_settings s;

-- The audit log, one row per record an entry names (a bulk action names many).
CREATE VIEW dlq_explorer_audit AS
SELECT a.id,
       a.at,
       record_id,
       a.actor,
       a.action,
       a.from_status,
       a.reason,
       a.details
FROM audit_log a
CROSS JOIN LATERAL unnest(a.record_ids) AS record_id;

-- Roles are cluster-wide: another database (or a concurrent migration of one) may have
-- made it already. Creating it needs CREATEROLE; without that, create it beforehand as a
-- superuser (`CREATE ROLE task_sidecar_reader NOLOGIN`) and this step is skipped.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'task_sidecar_reader') THEN
        BEGIN
            CREATE ROLE task_sidecar_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- made meanwhile by a concurrent migration
        END;
    END IF;
END
$$;

-- The views, and nothing else (no table of this database is granted to it).
GRANT SELECT ON dlq_explorer, dlq_explorer_audit TO task_sidecar_reader;
