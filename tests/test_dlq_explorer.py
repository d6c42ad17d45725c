"""The DLQ explorer dashboard end to end on PostgreSQL: a database migrated by the sidecar,
dead letters fed through its HTTP hooks and acted on through its action API, then every SQL
query of every panel and variable of the generated dashboard run as a login that is only a
member of task_sidecar_reader, with the variables and macros expanded as Grafana expands
them (tests/grafana_sql.py)."""

from __future__ import annotations

import contextlib
import json
import shlex
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from grafana.dashboards import OUTPUT_DIR
from sidecar.cli.root import build_parser
from sidecar.http import create_app
from sidecar.http.keys import SERVICES
from sidecar.requeue.webhook import WebhookTarget
from sidecar.settings import Settings

from .conftest import DEFAULT_POLICIES
from .grafana_sql import ALL, Context, expand
from .test_actions import HOOKS, OPERATOR, SECRET, TOKENS, call, receiver  # noqa: F401

BOARD = json.loads((OUTPUT_DIR / "task-sidecar-dlq-explorer.json").read_text())
VARIABLES = BOARD["templating"]["list"]
PANELS = {p["title"]: p for p in BOARD["panels"] if p["type"] != "row"}
BASE_TABLES = (
    "dlq_records",
    "audit_log",
    "hook_events",
    "idempotency_keys",
    "schema_migrations",
    "dlq_explorer_redactions",
    "dlq_explorer_settings",
    "schedule_explorer_analysis",
)
SCHEDULE_VIEWS = (
    "schedule_explorer_schedules",
    "schedule_explorer_conflicts",
    "schedule_explorer_recommendations",
)

# (task, exception type, message, kwargs): three failure types over three tasks.
LETTERS = [
    ("app.tasks.import_csv", "ValueError", "Invalid row 7", {"password": "hunter2", "row": 7}),
    ("app.tasks.import_csv", "ValueError", "Name O'Brien refused", {"Token": "t0k3n", "n": 1}),
    ("app.tasks.charge", "PermissionError", "Card declined", {"card_number": "4111", "id": 3}),
    ("app.tasks.report", "KeyError", "'user_id'", {"email": "a@example.com", "day": "mon"}),
]


@pytest.fixture
def database(empty_dsn: str) -> str:
    return empty_dsn


@pytest.fixture
def reader(database: str) -> Iterator[str]:
    """DSN of a throw-away login role whose only right is being a task_sidecar_reader (the
    role exists once the sidecar has migrated: the DSN is used after that)."""
    role = f"grafana_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield make_conninfo(database, user=role)
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def policies_file(directory: Path, *, show_args: bool) -> Path:
    path = directory / "policies.yaml"
    text = DEFAULT_POLICIES.read_text()
    old = "    show_args: false"
    assert old in text
    path.write_text(text.replace(old, f"    show_args: {str(show_args).lower()}"))
    return path


def grant_reader(database: str, reader_dsn: str) -> None:
    role = conninfo_to_dict(reader_dsn)["user"]
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT task_sidecar_reader TO {}").format(sql.Identifier(role)))


def run(reader_dsn: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(reader_dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return cur.fetchall()


def options(reader_dsn: str, context: Context, name: str) -> list[str]:
    """A query variable's values, as Grafana would offer them (its first column)."""
    variable = next(v for v in VARIABLES if v["name"] == name)
    rows = run(reader_dsn, expand(variable["query"], VARIABLES, context))
    return [next(iter(row.values())) for row in rows]


def panel_sql(title: str) -> str:
    (target,) = PANELS[title]["targets"]
    return target["rawSql"]


def context(now: datetime, **values: Any) -> Context:
    chosen = {"status": ALL, "task": ALL, "failure_type": ALL, "q": "", "record": ""}
    return Context(now - timedelta(hours=1), now + timedelta(minutes=1), "1m", chosen | values)


class Sidecar:
    """The sidecar's app on the test database, and a way to make it write its explorer
    policy now (its poller does it at start-up; waiting for that would be a sleep)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def sync(self) -> None:
        await self.client.server.app[SERVICES].explorer.sync()


@contextlib.asynccontextmanager
async def running_sidecar(database: str, receiver_url: str, tmp_path: Path):
    settings = Settings(
        policies=str(policies_file(tmp_path, show_args=False)),
        data_dir=tmp_path,
        tokens=TOKENS,
        postgres_dsn=database,
        reload_interval=0,
        poll_interval=3600,
    )
    target = WebhookTarget(receiver_url, SECRET)
    app = create_app(settings, target=target, registry=CollectorRegistry())
    try:
        async with TestClient(TestServer(app)) as client:
            yield Sidecar(client)
    finally:
        await target.close()


@pytest.fixture
async def sidecar(database, receiver, tmp_path):  # noqa: F811
    async with running_sidecar(database, receiver.url, tmp_path) as sidecar:
        yield sidecar


async def feed(client: TestClient) -> dict[str, dict[str, Any]]:
    """Dead letters through the failure hook: {dlq id: what was sent}."""
    fed = {}
    for i, (task, exc_type, message, kwargs) in enumerate(LETTERS):
        letter = {
            "task_id": f"task-{i}",
            "task_name": task,
            "queue": "default",
            "args": ["alice@example.com", i],
            "kwargs": kwargs,
            "exception": {
                "type": exc_type,
                "mro": [f"builtins.{exc_type}"],
                "message": message,
                "traceback": f'Traceback (most recent call last):\n  File "tasks.py"\n{exc_type}',
            },
        }
        answer = await call(client, "POST", "/v1/hooks/failure", letter, token=HOOKS)
        assert answer["dlq_id"], answer
        fed[answer["dlq_id"]] = letter
    return fed


async def test_every_query_of_the_explorer_as_the_reader(sidecar, database, reader, tmp_path):
    client = sidecar.client
    fed = await feed(client)
    ids = list(fed)
    retried, abandoned = ids[0], ids[2]
    await call(client, "POST", f"/v1/dlq/{retried}/retry", {})
    await call(client, "POST", f"/v1/dlq/{abandoned}/abandon", {"reason": "card expired"})
    await sidecar.sync()
    grant_reader(database, reader)
    now = datetime.now(UTC)
    with psycopg.connect(database) as admin:
        truth = {
            row[0]: row[1:]
            for row in admin.execute("SELECT id, status, failure_type, task_name FROM dlq_records")
        }
    assert set(truth) == set(ids)
    assert truth[retried][0] == "retrying"
    assert truth[abandoned][0] == "abandoned"

    # Every query of the dashboard runs, as the reader, with All everywhere.
    everything = context(now, record=retried)
    queries = [(title, panel_sql(title)) for title, p in PANELS.items() if p.get("targets")]
    queries += [(f"${v['name']}", v["query"]) for v in VARIABLES if v["type"] == "query"]
    assert len(queries) == 13
    results = {where: run(reader, expand(text, VARIABLES, everything)) for where, text in queries}

    # Variables offer what the DLQ holds.
    assert options(reader, everything, "task") == sorted({t for t, *_ in LETTERS})
    assert options(reader, everything, "failure_type") == sorted({t for _, t, _ in truth.values()})

    # Records: exactly those fed, with their task, type, message and status.
    records = {row["id"]: row for row in results["Records"]}
    assert set(records) == set(ids)
    for dlq_id, letter in fed.items():
        row = records[dlq_id]
        assert row["task"] == letter["task_name"]
        assert row["message"] == letter["exception"]["message"]
        assert (row["status"], row["failure_type"]) == truth[dlq_id][:2]
        assert row["dlq_retries"] == (1 if dlq_id == retried else 0)
        assert row["age"].startswith("00:0"), row["age"]  # fed seconds ago

    # Filters: a multi-value status and task, a failure type, and a search with a quote.
    pending = context(now, status=["pending"])
    found = run(reader, expand(panel_sql("Records"), VARIABLES, pending))
    assert {r["id"] for r in found} == set(ids) - {retried, abandoned}
    two_tasks = context(now, task=["app.tasks.charge", "app.tasks.report"])
    found = run(reader, expand(panel_sql("Records"), VARIABLES, two_tasks))
    assert {r["id"] for r in found} == {ids[2], ids[3]}
    logic = context(now, failure_type=["PERMANENT_LOGIC"])
    assert [r["id"] for r in run(reader, expand(panel_sql("Records"), VARIABLES, logic))] == [
        ids[3]
    ]
    quoted = context(now, q="o'brien")
    assert [r["id"] for r in run(reader, expand(panel_sql("Records"), VARIABLES, quoted))] == [
        ids[1]
    ]
    by_task_id = context(now, q="task-3")
    assert [r["id"] for r in run(reader, expand(panel_sql("Records"), VARIABLES, by_task_id))] == [
        ids[3]
    ]
    injection = context(now, q="x' OR 'a' = 'a")
    assert run(reader, expand(panel_sql("Records"), VARIABLES, injection)) == []
    earlier = Context(now - timedelta(days=2), now - timedelta(days=1), "1h", everything.values)
    assert run(reader, expand(panel_sql("Records"), VARIABLES, earlier)) == []

    # The record's section.
    fields = {row["field"]: row["value"] for row in results["Record"]}
    assert fields["id"] == retried
    assert fields["task id"] == "task-0"
    assert fields["status"] == "retrying"
    assert fields["DLQ retries"] == "1"
    (traceback,) = results["Traceback"]
    assert traceback["traceback"] == fed[retried]["exception"]["traceback"]
    (arguments,) = results["Arguments"]
    assert arguments["args"] == "[hidden]"
    assert json.loads(arguments["kwargs"]) == {"password": "[redacted]", "row": 7}
    trail = results["Audit trail"]
    assert [(r["action"], r["actor"], r["from_status"]) for r in trail] == [
        ("retry", "alice", "pending")
    ]
    commands = {row["action"]: row["command"] for row in results["Act on this record"]}
    assert commands["retry (pending records)"] == f"task-sidecar dlq retry {retried}"
    for command in commands.values():  # the CLI takes them as they are
        argv = shlex.split(command.replace("…", "a reason"))
        assert argv[0] == "task-sidecar"
        build_parser().parse_args(argv[1:])

    # Every kwargs key of the policy is masked, whatever its case; other keys are kept.
    for dlq_id, letter in fed.items():
        only = context(now, record=dlq_id)
        (row,) = run(reader, expand(panel_sql("Arguments"), VARIABLES, only))
        masked = json.loads(row["kwargs"])
        assert set(masked) == set(letter["kwargs"])
        for key, value in letter["kwargs"].items():
            redacted = key.lower() in {"password", "token", "card_number", "email"}
            assert masked[key] == ("[redacted]" if redacted else value), (key, masked)
    # The trail of one record is read through the index on record_ids (0012), not by
    # unnesting the whole audit log: the plan can use it (seq scans off: tiny tables).
    with psycopg.connect(database) as admin:
        admin.execute("SET enable_seqscan = off")
        plan = admin.execute(
            "EXPLAIN " + expand(panel_sql("Audit trail"), VARIABLES, everything)
        ).fetchall()
    assert "audit_log_record_ids_idx" in "\n".join(line for (line,) in plan)
    abandoned_trail = run(
        reader, expand(panel_sql("Audit trail"), VARIABLES, context(now, record=abandoned))
    )
    assert [(r["action"], r["reason"]) for r in abandoned_trail] == [("abandon", "card expired")]

    # Trends: every arrival counted once, by failure type; the oldest pending per task.
    arrivals = results["Arrivals by failure type"]
    assert sum(r["value"] for r in arrivals) == len(ids)
    assert {r["metric"] for r in arrivals} == {t for _, t, _ in truth.values()}
    assert all(now - timedelta(hours=1) <= _epoch(r["time"]) <= now for r in arrivals)
    oldest = {r["task"]: r["pending"] for r in results["Oldest pending by task"]}
    assert oldest == {"app.tasks.import_csv": 1, "app.tasks.report": 1}

    # The reader reads the views and nothing else.
    with psycopg.connect(reader, autocommit=True) as conn:
        for table in BASE_TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(table)))
        for view in ("dlq_explorer", "dlq_explorer_audit", *SCHEDULE_VIEWS):
            rights = conn.execute(
                "SELECT has_table_privilege(%(v)s, 'SELECT'), has_table_privilege(%(v)s,"
                " 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
                {"v": view},
            ).fetchone()
            assert rights == (True, False), view

    # A policy that shows args, reloaded: the views show them.
    policies_file(tmp_path, show_args=True)
    assert await call(client, "POST", "/v1/policies/reload") == {"reloaded": True}
    await sidecar.sync()
    (row,) = run(reader, expand(panel_sql("Arguments"), VARIABLES, everything))
    assert json.loads(row["args"]) == ["alice@example.com", 0]


# Six reports at 03:00 on one queue (a hotspot the analysis advises moving), two hourly
# half-hour runs on another (a queue overlap), one every 5 minutes for 10 (a self overlap).
REPORTED = [
    *({"name": f"nightly-{i}", "cron": "0 3 * * *", "queue": "reports"} for i in range(6)),
    {"name": "sync-a", "cron": "0 * * * *", "queue": "sync", "expected_duration": "30m"},
    {"name": "sync-b", "cron": "10 * * * *", "queue": "sync", "expected_duration": "30m"},
    {"name": "poll", "cron": "*/5 * * * *", "expected_duration": "10m", "timezone": "UTC"},
]


async def test_the_schedule_panels_show_the_last_analysis(sidecar, database, reader):
    """The seed's conflicts list, recommendations and schedules table: what a worker
    reported, analysed, stored by the sidecar and read back as the reader, row for row as
    `GET /v1/schedules/health` reports them."""
    client = sidecar.client
    assert await call(client, "PUT", "/v1/schedules", REPORTED, token=HOOKS) == {"schedules": 9}
    await sidecar.sync()
    grant_reader(database, reader)
    health = await call(client, "GET", "/v1/schedules/health")
    assert health["conflicts"]
    assert health["recommendations"]
    everything = context(datetime.now(UTC))

    rows = run(reader, expand(panel_sql("Schedules"), VARIABLES, everything))
    assert [r["name"] for r in rows] == sorted(e["name"] for e in REPORTED)
    by_name = {r["name"]: r for r in rows}
    assert by_name["sync-a"]["queue"] == "sync"
    assert by_name["poll"]["queue"] == "default"
    assert by_name["sync-a"]["expected_duration"] == 1800.0
    assert {r["source"] for r in rows} == {"reported"}
    advised = {r["task"]: r["new_cron"] for r in health["recommendations"]}
    assert {n: r["recommended_cron"] for n, r in by_name.items() if r["recommended_cron"]} == (
        advised
    )

    conflicts = run(reader, expand(panel_sql("Schedule conflicts"), VARIABLES, everything))
    expected = {
        (c["kind"], ", ".join(c["tasks"]), c["queue"], c["occurrences"])
        for c in health["conflicts"]
    }
    assert {(r["kind"], r["tasks"], r["queue"], r["occurrences"]) for r in conflicts} == expected
    assert {r["kind"] for r in conflicts} == {"queue_overlap", "self_overlap"}

    advice = run(reader, expand(panel_sql("Schedule recommendations"), VARIABLES, everything))
    assert {(r["task"], r["new_cron"], r["minute_offset"]) for r in advice} == {
        (r["task"], r["new_cron"], r["minute_offset"]) for r in health["recommendations"]
    }
    assert {r["score"] for r in advice} == {health["score"]}

    # A new report replaces the last: the panels follow the next sync.
    assert await call(client, "PUT", "/v1/schedules", REPORTED[:1], token=HOOKS)
    await sidecar.sync()
    rows = run(reader, expand(panel_sql("Schedules"), VARIABLES, everything))
    assert [r["name"] for r in rows] == ["nightly-0"]
    assert run(reader, expand(panel_sql("Schedule conflicts"), VARIABLES, everything)) == []


def _epoch(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


async def test_the_views_hide_kwargs_and_args_until_a_sidecar_writes_its_policy(
    database,
    reader,
    receiver,  # noqa: F811
    tmp_path,
):
    """Fail closed: a database where no sidecar has written its policy shows no arguments
    (the sidecar is stopped first, so that its poller cannot write meanwhile)."""
    async with running_sidecar(database, receiver.url, tmp_path) as sidecar:
        dlq_id = next(iter(await feed(sidecar.client)))
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute("UPDATE dlq_explorer_settings SET synced_at = NULL")
    grant_reader(database, reader)
    only = context(datetime.now(UTC), record=dlq_id)
    (row,) = run(reader, expand(panel_sql("Arguments"), VARIABLES, only))
    assert (row["args"], row["kwargs"]) == ("[hidden]", "[hidden]")


def test_the_expander_follows_grafanas_documented_examples():
    """tests/grafana_sql.py on the examples of Grafana's PostgreSQL docs."""
    variables = [
        {"name": "hosts", "multi": True, "includeAll": True, "allValue": "'*'"},
        {"name": "listed", "multi": True, "includeAll": True, "options": [{"value": "a"}]},
        {"name": "one"},
        {"name": "text"},
    ]
    at = Context(
        datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC),
        datetime(2017, 4, 21, 5, 6, 17, tzinfo=UTC),
        "5m",
        {"hosts": ["a", "b'c"], "listed": ALL, "one": "it's", "text": "x'y"},
    )
    assert expand(
        "$__timeFilter(at) AND h IN ($hosts) AND l IN (${listed}) AND o = '$one' AND "
        "t = ${text:sqlstring} AND at > $__timeFrom() AND at < $__timeTo()",
        variables,
        at,
    ) == (
        "at BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z' AND h IN ('a','b''c') "
        "AND l IN ('a') AND o = 'it''s' AND t = 'x''y' AND at > '2017-04-21T05:01:17Z' "
        "AND at < '2017-04-21T05:06:17Z'"
    )
    assert (
        expand("SELECT $__timeGroupAlias(at, $__interval), $__timeGroup(at, '1h')", variables, at)
        == 'SELECT floor(extract(epoch from at)/300)*300 AS "time", '
        "floor(extract(epoch from at)/3600)*3600"
    )
    every = Context(at.time_from, at.time_to, "1m", {"hosts": ALL})
    assert expand("h IN ($hosts)", variables, every) == "h IN ('*')"
