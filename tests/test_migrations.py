"""PostgreSQL migrations: they build the expected schema, once, even when raced.

Each test gets a new empty database on the session's throw-away server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sidecar.errors import StoreUnavailable
from sidecar.store.connector import migration_files
from sidecar.store.postgres import migrate
from tests.services import free_port

# The schema all migrations together must produce, as `dump_schema()` prints it.
EXPECTED_SCHEMA = """
column audit_log.id bigint not null default nextval('audit_log_id_seq'::regclass)
column audit_log.at timestamp with time zone not null default now()
column audit_log.actor text not null
column audit_log.action text not null
column audit_log.record_ids ARRAY not null default '{}'::text[]
column audit_log.from_status text null
column audit_log.reason text null
column audit_log.details jsonb not null default '{}'::jsonb
column audit_log.entry_key text null
column dlq_explorer.id text null
column dlq_explorer.created_at timestamp with time zone null
column dlq_explorer.updated_at timestamp with time zone null
column dlq_explorer.status text null
column dlq_explorer.task_name text null
column dlq_explorer.task_id text null
column dlq_explorer.queue text null
column dlq_explorer.failure_type text null
column dlq_explorer.category text null
column dlq_explorer.remediation text null
column dlq_explorer.exception_type text null
column dlq_explorer.message text null
column dlq_explorer.traceback text null
column dlq_explorer.search_text text null
column dlq_explorer.dlq_retries integer null
column dlq_explorer.attempts integer null
column dlq_explorer.last_error text null
column dlq_explorer.args text null
column dlq_explorer.kwargs text null
column dlq_explorer_audit.id bigint null
column dlq_explorer_audit.at timestamp with time zone null
column dlq_explorer_audit.record_id text null
column dlq_explorer_audit.actor text null
column dlq_explorer_audit.action text null
column dlq_explorer_audit.from_status text null
column dlq_explorer_audit.reason text null
column dlq_explorer_audit.details jsonb null
column dlq_explorer_audit.record_ids ARRAY null
column dlq_explorer_redactions.key text not null
column dlq_explorer_settings.singleton boolean not null default true
column dlq_explorer_settings.show_args boolean not null default false
column dlq_explorer_settings.synced_at timestamp with time zone null
column dlq_records.id text not null
column dlq_records.task_id text not null
column dlq_records.task_name text not null
column dlq_records.queue text null
column dlq_records.args json not null
column dlq_records.kwargs json not null
column dlq_records.exception json not null
column dlq_records.context json not null
column dlq_records.failure_type text not null
column dlq_records.category text not null
column dlq_records.remediation text not null
column dlq_records.confidence double precision not null
column dlq_records.rule text not null
column dlq_records.priority text not null
column dlq_records.priority_value integer not null
column dlq_records.target_queue text not null
column dlq_records.attempts integer not null
column dlq_records.status text not null default 'pending'::text
column dlq_records.created_at timestamp with time zone not null
column dlq_records.updated_at timestamp with time zone not null
column dlq_records.dlq_retries integer not null default 0
column dlq_records.last_error text null
column dlq_records.lease_until timestamp with time zone null
column dlq_records.workflow json null
column dlq_status_counts.status text not null
column dlq_status_counts.n bigint not null
column hook_events.id bigint not null default nextval('hook_events_id_seq'::regclass)
column hook_events.at timestamp with time zone not null
column hook_events.kind text not null
column hook_events.task_name text not null
column hook_events.failure_type text null
column hook_events.event json null
column hook_events.decision json null
column idempotency_keys.key text not null
column idempotency_keys.state text not null
column idempotency_keys.first_seen_at timestamp with time zone not null
column idempotency_keys.expires_at timestamp with time zone not null
column idempotency_keys.owner text not null default ''::text
column schedule_explorer_analysis.singleton boolean not null default true
column schedule_explorer_analysis.analysed_at timestamp with time zone not null
column schedule_explorer_analysis.document jsonb not null
column schedule_explorer_conflicts.kind text null
column schedule_explorer_conflicts.tasks text null
column schedule_explorer_conflicts.queue text null
column schedule_explorer_conflicts.first_overlap timestamp with time zone null
column schedule_explorer_conflicts.occurrences integer null
column schedule_explorer_conflicts.detail text null
column schedule_explorer_conflicts.analysed_at timestamp with time zone null
column schedule_explorer_recommendations.task text null
column schedule_explorer_recommendations.cron text null
column schedule_explorer_recommendations.new_cron text null
column schedule_explorer_recommendations.minute_offset integer null
column schedule_explorer_recommendations.reason text null
column schedule_explorer_recommendations.score integer null
column schedule_explorer_recommendations.score_after integer null
column schedule_explorer_recommendations.analysed_at timestamp with time zone null
column schedule_explorer_schedules.name text null
column schedule_explorer_schedules.cron text null
column schedule_explorer_schedules.queue text null
column schedule_explorer_schedules.expected_duration_seconds double precision null
column schedule_explorer_schedules.timezone text null
column schedule_explorer_schedules.source text null
column schedule_explorer_schedules.recommended_cron text null
column schedule_explorer_schedules.analysed_at timestamp with time zone null
column schema_migrations.version integer not null
column schema_migrations.applied_at timestamp with time zone not null default now()
index audit_log_at_id_idx ON audit_log USING btree (at, id)
index audit_log_entry_key_key UNIQUE ON audit_log USING btree (entry_key)
index audit_log_pkey UNIQUE ON audit_log USING btree (id)
index audit_log_record_ids_idx ON audit_log USING gin (record_ids)
index dlq_explorer_redactions_pkey UNIQUE ON dlq_explorer_redactions USING btree (key)
index dlq_explorer_settings_pkey UNIQUE ON dlq_explorer_settings USING btree (singleton)
index dlq_records_created_at_id_idx ON dlq_records USING btree (created_at, id)
index dlq_records_failure_type_created_at_id_idx ON dlq_records USING btree (failure_type, created_at, id)
index dlq_records_id_pattern_idx ON dlq_records USING btree (id text_pattern_ops)
index dlq_records_lease_until_idx ON dlq_records USING btree (lease_until) WHERE (lease_until IS NOT NULL)
index dlq_records_pkey UNIQUE ON dlq_records USING btree (id)
index dlq_records_search_trgm_idx ON dlq_records USING gin (dlq_search_text(task_id, exception) gin_trgm_ops)
index dlq_records_status_created_at_id_idx ON dlq_records USING btree (status, created_at, id)
index dlq_records_task_id_created_at_id_idx ON dlq_records USING btree (task_id, created_at, id)
index dlq_records_task_name_created_at_id_idx ON dlq_records USING btree (task_name, created_at, id)
index hook_events_at_id_idx ON hook_events USING btree (at, id)
index hook_events_failures_idx ON hook_events USING btree (at, failure_type) WHERE (kind = 'failure'::text)
index hook_events_pkey UNIQUE ON hook_events USING btree (id)
index idempotency_keys_expires_at_idx ON idempotency_keys USING btree (expires_at)
index idempotency_keys_pkey UNIQUE ON idempotency_keys USING btree (key)
index schedule_explorer_analysis_pkey UNIQUE ON schedule_explorer_analysis USING btree (singleton)
index schema_migrations_pkey UNIQUE ON schema_migrations USING btree (version)
constraint audit_log.audit_log_pkey PRIMARY KEY (id)
constraint dlq_explorer_redactions.dlq_explorer_redactions_pkey PRIMARY KEY (key)
constraint dlq_explorer_settings.dlq_explorer_settings_pkey PRIMARY KEY (singleton)
constraint dlq_explorer_settings.dlq_explorer_settings_singleton CHECK (singleton)
constraint dlq_records.dlq_records_pkey PRIMARY KEY (id)
constraint dlq_records.dlq_records_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'retrying'::text, 'resolved'::text, 'abandoned'::text])))
constraint hook_events.hook_events_kind_check CHECK ((kind = ANY (ARRAY['failure'::text, 'success'::text, 'start'::text])))
constraint hook_events.hook_events_pkey PRIMARY KEY (id)
constraint idempotency_keys.idempotency_keys_pkey PRIMARY KEY (key)
constraint idempotency_keys.idempotency_keys_state_check CHECK ((state = ANY (ARRAY['running'::text, 'done'::text])))
constraint schedule_explorer_analysis.schedule_explorer_analysis_pkey PRIMARY KEY (singleton)
constraint schedule_explorer_analysis.schedule_explorer_analysis_singleton CHECK (singleton)
constraint schema_migrations.schema_migrations_pkey PRIMARY KEY (version)
""".strip().splitlines()  # noqa: E501

_DUMP_QUERIES = [
    """
    SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
           || CASE is_nullable WHEN 'YES' THEN ' null' ELSE ' not null' END
           || coalesce(' default ' || column_default, '')
    FROM information_schema.columns
    WHERE table_schema = 'public'
    ORDER BY table_name, ordinal_position
    """,
    """
    SELECT 'index ' || indexname || ' '
           || replace(regexp_replace(indexdef, '^CREATE (UNIQUE )?INDEX \\S+ ', '\\1'),
                      'public.', '')
    FROM pg_indexes
    WHERE schemaname = 'public'
    ORDER BY indexname
    """,
    """
    SELECT 'constraint ' || conrelid::regclass::text || '.' || conname || ' '
           || pg_get_constraintdef(oid)
    FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
    ORDER BY conrelid::regclass::text, conname
    """,
]


def dump_schema(dsn: str) -> list[str]:
    """The tables' columns, indexes and constraints, one normalised line each."""
    with psycopg.connect(dsn) as conn:
        return [line for query in _DUMP_QUERIES for (line,) in conn.execute(query)]


ALL_VERSIONS = [version for version, _ in migration_files("postgres")]


class TestMigrationFiles:
    """The numbered files are found and form an unbroken sequence."""

    def test_versions_run_from_1_without_gaps(self):
        versions = [version for version, _ in migration_files("postgres")]
        assert versions == list(range(1, len(versions) + 1))


class TestMigrate:
    """migrate() applies each pending file once, atomically, whoever else is migrating."""

    def test_an_empty_database_gets_the_expected_schema(self, empty_dsn):
        assert asyncio.run(migrate(empty_dsn)) == ALL_VERSIONS

        assert dump_schema(empty_dsn) == EXPECTED_SCHEMA

    def test_a_second_run_applies_nothing(self, empty_dsn):
        asyncio.run(migrate(empty_dsn))
        schema = dump_schema(empty_dsn)

        assert asyncio.run(migrate(empty_dsn)) == []
        assert dump_schema(empty_dsn) == schema

    def test_concurrent_runs_apply_each_file_once(self, empty_dsn):
        async def race() -> list[list[int]]:
            return await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))

        results = asyncio.run(race())

        assert sorted(version for applied in results for version in applied) == ALL_VERSIONS
        with psycopg.connect(empty_dsn) as conn:
            recorded = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert [version for (version,) in recorded] == ALL_VERSIONS

    def test_a_failing_file_is_rolled_back_whole(self, empty_dsn):
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE failure_events (clash integer)")  # created late in 0001

        with pytest.raises(psycopg.errors.DuplicateTable) as raised:
            asyncio.run(migrate(empty_dsn))

        assert "while applying migration 0001_initial.sql" in raised.value.__notes__
        with psycopg.connect(empty_dsn) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)
        assert sorted(tables) == [("failure_events",), ("schema_migrations",)]

    def test_the_reader_role_may_exist_already(self, empty_dsn, postgres_dsn):
        """Roles are cluster-wide: a second database migrates with the role made by the
        first, and its reader may read that database's views too."""
        other = f"migrate_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
        try:
            other_dsn = make_conninfo(postgres_dsn, dbname=other)
            assert asyncio.run(migrate(other_dsn)) == ALL_VERSIONS
            assert asyncio.run(migrate(empty_dsn)) == ALL_VERSIONS
            with psycopg.connect(empty_dsn) as conn:
                granted = conn.execute(
                    "SELECT table_name, privilege_type FROM information_schema.table_privileges"
                    " WHERE grantee = 'task_sidecar_reader' ORDER BY 1"
                ).fetchall()
            assert granted == [
                ("dlq_explorer", "SELECT"),
                ("dlq_explorer_audit", "SELECT"),
                ("schedule_explorer_conflicts", "SELECT"),
                ("schedule_explorer_recommendations", "SELECT"),
                ("schedule_explorer_schedules", "SELECT"),
            ]
        finally:
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(other))
                )

    def test_an_unreachable_server_is_unavailable_without_quoting_the_password(self):
        dsn = f"postgresql://sidecar:pa55-secret@127.0.0.1:{free_port()}/sidecar"

        with pytest.raises(StoreUnavailable) as raised:
            asyncio.run(migrate(dsn))

        assert raised.value.backend == "postgres"
        assert "pa55-secret" not in str(raised.value)


def _explorer_only(line: str) -> bool:
    """The DLQ explorer's views and tables (0010, 0011) exist in PostgreSQL only: Grafana reads
    them with its PostgreSQL datasource, and the embedded store has no such reader. So do
    the maintained DLQ counts (0013): an embedded DLQ is small enough to count."""
    return line.split()[1].startswith(("dlq_explorer", "schedule_explorer", "dlq_status_counts"))


def sqlite_schema(path) -> sqlite3.Connection:
    """A SQLite file migrated by the embedded store's own connector."""
    from sidecar.store.sqlite import SqliteConnector

    async def migrate_file() -> None:
        connector = SqliteConnector(path)
        await connector.open()  # migrates
        await connector.close()

    asyncio.run(migrate_file())
    return sqlite3.connect(path)


class TestEmbeddedTwin:
    """After their migrations, SQLite and PostgreSQL carry the same tables and columns."""

    def test_same_tables_and_columns_as_postgres(self, tmp_path):
        conn = sqlite_schema(tmp_path / "sidecar.db")
        try:
            tables = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
            columns = [
                f"{table}.{column}"
                for (table,) in sorted(tables.fetchall())
                # The FTS5 table of `q` (and its shadow tables: dlq_fts_data, _idx, ...)
                # is SQLite's stand-in for PostgreSQL's trigram index, not a table.
                if not table.startswith("dlq_fts")
                for (_, column, *_) in conn.execute(f"PRAGMA table_info({table})")
            ]
        finally:
            conn.close()

        postgres = [
            line.split()[1]
            for line in EXPECTED_SCHEMA
            if line.startswith("column ") and not _explorer_only(line)
        ]
        assert sorted(columns) == sorted(postgres)

    def test_same_secondary_indexes_as_postgres(self, tmp_path):
        """The listings, trends and retention deletes find the same indexes in both."""
        conn = sqlite_schema(tmp_path / "sidecar.db")
        try:
            # sql IS NULL: the indexes SQLite makes itself for primary keys.
            names = conn.execute(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' AND sql NOT NULL"
            )
            indexes = []
            for name, table in names.fetchall():
                columns = [column for (_, _, column) in conn.execute(f"PRAGMA index_info({name})")]
                unique = "UNIQUE " if name.endswith("_key") else ""
                indexes.append(
                    f"index {name} {unique}ON {table} USING btree ({', '.join(columns)})"
                )
        finally:
            conn.close()

        # (SQLite's index_info does not show a partial index's WHERE.)
        postgres = [
            line.partition(" WHERE ")[0] for line in EXPECTED_SCHEMA if line.startswith("index ")
        ]
        # Primary keys are implicit in SQLite; text_pattern_ops serves PostgreSQL's LIKE
        # on ids, where SQLite's bytewise ids need nothing more than the primary key.
        # The trigram GIN index of `q` is the dlq_fts FTS5 table in SQLite. The GIN index
        # on audit_log.record_ids serves the explorer's views (PostgreSQL only).
        wanted = [
            line
            for line in postgres
            if "_pkey " not in line
            and not _explorer_only(line)
            and "text_pattern_ops" not in line
            and "gin_trgm_ops" not in line
            and "audit_log_record_ids_idx" not in line
        ]
        assert sorted(indexes) == wanted

    def test_a_file_made_before_numbered_migrations_is_adopted(self, tmp_path):
        """Files created by the schema script of earlier versions upgrade in place."""
        path = tmp_path / "old.db"
        old = sqlite3.connect(path)
        old.executescript(OLD_SQLITE_SCHEMA)
        old.execute("INSERT INTO failure_events (at, task_name, failure_type) VALUES (1, 't', 'X')")
        old.commit()
        old.close()

        conn = sqlite_schema(path)
        try:
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
            kept = conn.execute("SELECT task_name FROM hook_events").fetchall()
            columns = [c for (_, c, *_) in conn.execute("PRAGMA table_info(audit_log)")]
        finally:
            conn.close()
        assert versions == [v for v, _ in migration_files("sqlite")]
        assert kept == [("t",)]
        assert "entry_key" in columns


# The embedded schema as earlier versions created it (no schema_migrations, no entry_key).
OLD_SQLITE_SCHEMA = """
CREATE TABLE dlq_records (id TEXT PRIMARY KEY NOT NULL, task_id TEXT NOT NULL,
    task_name TEXT NOT NULL, queue TEXT, args TEXT NOT NULL, kwargs TEXT NOT NULL,
    exception TEXT NOT NULL, context TEXT NOT NULL, failure_type TEXT NOT NULL,
    category TEXT NOT NULL, remediation TEXT NOT NULL, confidence REAL NOT NULL,
    rule TEXT NOT NULL, priority TEXT NOT NULL, priority_value INTEGER NOT NULL,
    target_queue TEXT NOT NULL, attempts INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', created_at REAL NOT NULL,
    updated_at REAL NOT NULL, dlq_retries INTEGER NOT NULL DEFAULT 0, last_error TEXT
) STRICT;
CREATE INDEX dlq_records_task_name_idx ON dlq_records (task_name);
CREATE TABLE audit_log (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, record_ids TEXT NOT NULL DEFAULT '[]', from_status TEXT,
    reason TEXT, details TEXT NOT NULL DEFAULT '{}') STRICT;
CREATE TABLE failure_events (id INTEGER PRIMARY KEY, at REAL NOT NULL,
    task_name TEXT NOT NULL, failure_type TEXT NOT NULL) STRICT;
CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL,
    first_seen_at REAL NOT NULL, expires_at REAL NOT NULL) STRICT;
"""
