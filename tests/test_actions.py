"""The operators' action API over HTTP, on the embedded stores and on PostgreSQL + Redis,
with a real webhook receiver as the requeue target."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import hmac
import io
import json

import psycopg
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sidecar.http import create_app
from sidecar.http.keys import SERVICES
from sidecar.requeue.webhook import SIGNATURE_HEADER, WebhookTarget
from sidecar.settings import Settings, Token

from .conftest import DEFAULT_POLICIES, routing_policies_file

HOOKS = "hooks-secret-0123456789"
VIEWER = "viewer-secret-0123456789"
OPERATOR = "operator-secret-0123456789"
SECRET = "webhook-secret-0123456789"
TOKENS = {
    "hooks": (Token("worker", HOOKS),),
    "viewer": (Token("grafana", VIEWER),),
    "operator": (Token("alice", OPERATOR),),
}


def dead_letter(task="app.tasks.import_csv", message="Invalid data", task_id="t"):
    return {
        "task_id": task_id,
        "task_name": task,
        "queue": "imports",
        "args": [1],
        "kwargs": {"k": "v"},
        "exception": {"type": "ValueError", "mro": ["builtins.ValueError"], "message": message},
    }


class Receiver:
    """A real HTTP endpoint standing in for the user's requeue webhook."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp, mac = request.headers[SIGNATURE_HEADER].split(",")
        expected = hmac.new(SECRET.encode(), f"{stamp[2:]}.".encode() + body, hashlib.sha256)
        assert mac == f"v1={expected.hexdigest()}"
        if self.fail:
            return web.Response(status=500)
        self.received.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver():
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/requeue", receiver.handle)
    async with TestServer(app) as server:
        receiver.url = str(server.make_url("/requeue"))
        yield receiver


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(request, tmp_path) -> Settings:
    base = Settings(
        policies=str(DEFAULT_POLICIES),
        data_dir=tmp_path,
        tokens=TOKENS,
        reload_interval=0,
        poll_interval=3600,
    )
    if request.param == "embedded":
        return base
    dsn, url = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("redis_url")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop schema public cascade; create schema public")
    redis.Redis.from_url(url).flushall()
    return Settings(**{**base.__dict__, "postgres_dsn": dsn, "redis_url": url})


@pytest.fixture
async def client(settings, receiver):
    async with _client(settings, receiver) as client:
        yield client


@pytest.fixture
async def routing_client(settings, receiver, tmp_path):
    """A sidecar whose policy routes retries to the priority level's queue."""
    path = routing_policies_file(tmp_path)
    async with _client(dataclasses.replace(settings, policies=str(path)), receiver) as client:
        yield client


@contextlib.asynccontextmanager
async def _client(settings, receiver):
    target = WebhookTarget(receiver.url, SECRET)
    app = create_app(settings, target=target, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        client.receiver = receiver
        yield client
    await target.close()


async def call(client, method, path, body=None, token=OPERATOR, status=200):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.request(method, path, json=body, headers=headers)
    text = await response.text()
    assert response.status == status, text
    return json.loads(text) if "json" in response.content_type else text


async def seed(client, count=3, **kwargs) -> list[str]:
    ids = []
    for i in range(count):
        answer = await call(
            client, "POST", "/v1/hooks/failure", dead_letter(task_id=f"t{i}", **kwargs), token=HOOKS
        )
        ids.append(answer["dlq_id"])
    return ids


class TestList:
    """Listing filters, pages with a stable cursor, and refuses bad filters by name."""

    async def test_filters_and_paging(self, client):
        ids = await seed(client, 3)
        await seed(client, 2, task="reports.daily")
        page = await call(
            client, "GET", "/v1/dlq?task_name=app.tasks.import_csv&limit=2", token=VIEWER
        )
        assert len(page["records"]) == 2
        assert "traceback" not in page["records"][0]["exception"]
        rest = await call(
            client,
            "GET",
            f"/v1/dlq?task_name=app.tasks.import_csv&limit=2&cursor={page['next_cursor']}",
            token=VIEWER,
        )
        seen = [r["id"] for r in page["records"] + rest["records"]]
        assert sorted(seen) == sorted(ids)
        assert rest["next_cursor"] is None
        everything = await call(client, "GET", "/v1/dlq?status=pending&since=1h", token=VIEWER)
        assert len(everything["records"]) == 5
        typed = await call(client, "GET", "/v1/dlq?failure_type=TRANSIENT_NETWORK", token=VIEWER)
        assert typed["records"] == []

    @pytest.mark.parametrize(
        ("query", "path"),
        [
            ("status=lost", "query.status"),
            ("since=yesterday-ish", "query.since"),
            ("limit=0", "query.limit"),
            ("limit=many", "query.limit"),
            ("cursor=garbage", "query.cursor"),
            ("qq=frobnicator", "query.qq"),  # a typo is refused, not ignored
            ("task=app.tasks.import_csv", "query.task"),
            ("q=ab", "query.q"),
            ("min_dlq_retries=-1", "query.min_dlq_retries"),
            ("min_dlq_retries=some", "query.min_dlq_retries"),
        ],
    )
    async def test_bad_filters(self, client, query, path):
        problem = await call(client, "GET", f"/v1/dlq?{query}", token=VIEWER, status=400)
        assert problem["errors"][0]["path"] == path

    async def test_search_and_the_new_filters(self, client):
        for i in range(6):
            body = dead_letter(task_id=f"job-{i}", message=f"row {i} rejected")
            if i in (1, 3, 4):
                body["exception"]["traceback"] = f'  File "/app/frobnicator.py", line {i}\n'
            await call(client, "POST", "/v1/hooks/failure", body, token=HOOKS)
        found = await call(client, "GET", "/v1/dlq?q=FROBNICATOR", token=VIEWER)
        assert sorted(r["task_id"] for r in found["records"]) == ["job-1", "job-3", "job-4"]
        one = await call(client, "GET", "/v1/dlq?task_id=job-2", token=VIEWER)
        assert [r["task_id"] for r in one["records"]] == ["job-2"]
        typed = await call(client, "GET", "/v1/dlq?exception_type=ValueError", token=VIEWER)
        assert len(typed["records"]) == 6
        none = await call(client, "GET", "/v1/dlq?min_dlq_retries=1", token=VIEWER)
        assert none["records"] == []
        text = await call(client, "GET", "/v1/dlq/export.csv?q=frobnicator", token=VIEWER)
        assert len(list(csv.DictReader(io.StringIO(text, newline="")))) == 3
        problem = await call(client, "GET", "/v1/dlq/export.csv?search=x", token=VIEWER, status=400)
        assert problem["errors"][0]["path"] == "query.search"

    async def test_detail_and_404(self, client):
        [dlq_id] = await seed(client, 1)
        record = await call(client, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER)
        assert record["args"] == [1]
        assert record["kwargs"] == {"k": "v"}
        assert record["failure_type"] == "PERMANENT_VALIDATION"
        await call(client, "GET", "/v1/dlq/nope", token=VIEWER, status=404)


class TestRetry:
    """A retry hands the record to the target once, and the audit log says who did it."""

    async def test_retry_then_resolve(self, client):
        [dlq_id] = await seed(client, 1)
        record = await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {})
        assert (record["status"], record["dlq_retries"]) == ("retrying", 1)
        [sent] = client.receiver.received
        assert (sent["id"], sent["task_name"], sent["args"]) == (
            dlq_id,
            "app.tasks.import_csv",
            [1],
        )
        assert (sent["queue"], sent["priority"]) == ("imports", 6)  # its own queue
        await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {}, status=409)
        await call(
            client,
            "POST",
            "/v1/hooks/success",
            {"task_id": "t0", "task_name": "app.tasks.import_csv", "dlq_id": dlq_id},
            token=HOOKS,
        )
        assert (await call(client, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER))["status"] == (
            "resolved"
        )
        audit = await call(client, "GET", "/v1/audit", token=VIEWER)
        [entry] = [e for e in audit["entries"] if e["action"] == "retry"]
        assert (entry["actor"], entry["record_ids"], entry["from_status"]) == (
            "alice",
            [dlq_id],
            "pending",
        )

    async def test_retry_with_a_priority(self, client):
        [dlq_id] = await seed(client, 1)
        await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {"priority": "HIGH"})
        [sent] = client.receiver.received
        assert (sent["queue"], sent["priority"]) == ("imports", 8)  # not routed: its own queue
        problem = await call(
            client, "POST", f"/v1/dlq/{dlq_id}/retry", {"priority": "URGENT"}, status=400
        )
        assert problem["errors"][0]["path"] == "priority"

    async def test_a_routing_policy_sends_it_to_the_levels_queue(self, routing_client):
        client = routing_client
        [dlq_id] = await seed(client, 1)
        record = await call(client, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER)
        assert (record["queue"], record["target_queue"]) == ("imports", "reports")
        await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {})
        [sent] = client.receiver.received
        assert (sent["queue"], sent["priority"]) == ("reports", 6)

    async def test_failed_requeue_leaves_it_pending_with_the_error(self, client):
        [dlq_id] = await seed(client, 1)
        client.receiver.fail = True
        problem = await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {}, status=502)
        assert "webhook answered 500" in problem["detail"]
        record = await call(client, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER)
        assert (record["status"], record["last_error"]) == ("pending", "webhook answered 500")

    async def test_abandon(self, client):
        [dlq_id] = await seed(client, 1)
        await call(client, "POST", f"/v1/dlq/{dlq_id}/abandon", {}, status=400)
        record = await call(client, "POST", f"/v1/dlq/{dlq_id}/abandon", {"reason": "obsolete"})
        assert record["status"] == "abandoned"
        await call(client, "POST", f"/v1/dlq/{dlq_id}/abandon", {"reason": "again"}, status=409)
        await call(client, "POST", f"/v1/dlq/{dlq_id}/retry", {}, status=409)


class TestBulkRetry:
    """Bulk retries by ids or filter: dry-run counts, progress, each record once."""

    async def test_dry_run_then_run_by_filter(self, client):
        await seed(client, 4)
        await seed(client, 2, task="reports.daily")
        body = {"filter": {"task_name": "app.tasks.import_csv"}, "dry_run": True}
        assert await call(client, "POST", "/v1/dlq/bulk-retry", body) == {
            "dry_run": True,
            "total": 4,
        }
        job = await call(
            client,
            "POST",
            "/v1/dlq/bulk-retry",
            {
                "filter": {"task_name": "app.tasks.import_csv"},
                "rate_per_second": 200,
                "priority": "LOW",
            },
            status=202,
        )
        assert job["total"] == 4
        await client.server.app[SERVICES].dlq.wait_jobs()
        progress = await call(client, "GET", f"/v1/dlq/bulk-retry/{job['id']}", token=VIEWER)
        assert (progress["state"], progress["requeued"], progress["done"]) == ("finished", 4, 4)
        assert {(s["queue"], s["priority"]) for s in client.receiver.received} == {("imports", 4)}
        assert len(client.receiver.received) == 4

    async def test_two_bulk_retries_together_requeue_each_record_once(self, client):
        ids = await seed(client, 30)
        body = {"filter": {"status": "pending"}}
        await asyncio.gather(
            call(client, "POST", "/v1/dlq/bulk-retry", body, status=202),
            call(client, "POST", "/v1/dlq/bulk-retry", body, status=202),
        )
        await client.server.app[SERVICES].dlq.wait_jobs()
        sent = [s["id"] for s in client.receiver.received]
        assert sorted(sent) == sorted(ids)

    async def test_sends_that_fail_leave_their_records_pending_with_the_error(self, client):
        ids = await seed(client, 3)
        client.receiver.fail = True
        job = await call(client, "POST", "/v1/dlq/bulk-retry", {"ids": ids}, status=202)
        await client.server.app[SERVICES].dlq.wait_jobs()
        progress = await call(client, "GET", f"/v1/dlq/bulk-retry/{job['id']}", token=VIEWER)
        assert (progress["requeued"], progress["failed"]) == (0, 3)
        for dlq_id in ids:
            record = await call(client, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER)
            assert (record["status"], record["last_error"]) == ("pending", "webhook answered 500")

    async def test_by_ids_and_bad_bodies(self, client):
        ids = await seed(client, 3)
        job = await call(client, "POST", "/v1/dlq/bulk-retry", {"ids": ids[:2]}, status=202)
        await client.server.app[SERVICES].dlq.wait_jobs()
        assert job["total"] == 2
        assert len(client.receiver.received) == 2
        await call(client, "POST", "/v1/dlq/bulk-retry", {}, status=400)
        await call(client, "POST", "/v1/dlq/bulk-retry", {"ids": [], "filter": {}}, status=400)
        problem = await call(
            client, "POST", "/v1/dlq/bulk-retry", {"filter": {"status": "gone"}}, status=400
        )
        assert problem["errors"][0]["path"] == "filter.status"


class TestBulkAbandon:
    """Bulk abandon by ids or filter: a reason, dry-run counts, each record once, audited."""

    async def test_by_filter_with_a_dry_run(self, client):
        await seed(client, 4)
        keep = await seed(client, 2, task="reports.daily")
        body = {"filter": {"task_name": "app.tasks.import_csv"}, "reason": "bad import"}
        dry = await call(client, "POST", "/v1/dlq/bulk-abandon", {**body, "dry_run": True})
        assert dry == {"dry_run": True, "total": 4}
        answer = await call(client, "POST", "/v1/dlq/bulk-abandon", body)
        assert (answer["abandoned"], answer["skipped"]) == (4, 0)
        left = await call(client, "GET", "/v1/dlq?status=pending", token=VIEWER)
        assert sorted(r["id"] for r in left["records"]) == sorted(keep)
        audit = await call(client, "GET", "/v1/audit", token=VIEWER)
        [entry] = [e for e in audit["entries"] if e["action"] == "bulk_abandon"]
        assert (entry["actor"], entry["reason"], len(entry["record_ids"])) == (
            "alice",
            "bad import",
            4,
        )

    async def test_two_bulk_abandons_together_move_each_record_once(self, client):
        ids = await seed(client, 30)
        body = {"filter": {"status": "pending"}, "reason": "duplicate"}
        answers = await asyncio.gather(
            *(call(client, "POST", "/v1/dlq/bulk-abandon", body) for _ in range(3))
        )
        assert sum(a["abandoned"] for a in answers) == 30
        audit = await call(client, "GET", "/v1/audit?limit=100", token=VIEWER)
        moved = [
            i for e in audit["entries"] if e["action"] == "bulk_abandon" for i in e["record_ids"]
        ]
        assert sorted(moved) == sorted(ids)

    async def test_by_ids_and_bad_bodies(self, client):
        ids = await seed(client, 3)
        answer = await call(
            client, "POST", "/v1/dlq/bulk-abandon", {"ids": [*ids[:2], "nope"], "reason": "x"}
        )
        assert answer["abandoned"] == 2
        await call(client, "POST", "/v1/dlq/bulk-abandon", {"ids": ids}, status=400)  # reason
        await call(client, "POST", "/v1/dlq/bulk-abandon", {"reason": "x"}, status=400)
        problem = await call(
            client,
            "POST",
            "/v1/dlq/bulk-abandon",
            {"filter": {"query": "x"}, "reason": "x"},
            status=400,
        )
        assert "query" in json.dumps(problem)


class TestExport:
    """The CSV export streams every filtered record with formula cells neutralised."""

    @pytest.mark.parametrize(
        "dangerous", ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    )
    async def test_formula_cells_are_neutralised(self, client, dangerous):
        await seed(client, 1, message=dangerous)
        text = await call(client, "GET", "/v1/dlq/export.csv", token=VIEWER)
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert len(rows) == 1
        assert rows[0]["message"] == "'" + dangerous
        assert rows[0]["task_name"] == "app.tasks.import_csv"


class TestRoles:
    """Every action needs a token; reads take a viewer, actions an operator."""

    ROUTES = (
        ("GET", "/v1/dlq", "viewer"),
        ("GET", "/v1/dlq/x", "viewer"),
        ("GET", "/v1/dlq/export.csv", "viewer"),
        ("GET", "/v1/breakers", "viewer"),
        ("GET", "/v1/failure-trends", "viewer"),
        ("GET", "/v1/policies", "viewer"),
        ("GET", "/v1/audit", "viewer"),
        ("GET", "/v1/dlq/bulk-retry/x", "viewer"),
        ("POST", "/v1/dlq/x/retry", "operator"),
        ("POST", "/v1/dlq/x/abandon", "operator"),
        ("POST", "/v1/dlq/bulk-retry", "operator"),
        ("POST", "/v1/dlq/bulk-abandon", "operator"),
        ("POST", "/v1/breakers/x/reset", "operator"),
        ("POST", "/v1/policies/reload", "operator"),
    )

    @pytest.mark.parametrize(("method", "path", "role"), ROUTES)
    async def test_roles(self, client, method, path, role):
        await call(client, method, path, {}, token=None, status=401)
        await call(client, method, path, {}, token=HOOKS, status=403)
        if role == "operator":
            await call(client, method, path, {}, token=VIEWER, status=403)


class TestBreakersTrendsPolicy:
    """Breakers can be listed and reset; trends count failures; the policy reloads."""

    async def test_breaker_list_and_reset(self, client):
        event = {
            "task_name": "app.sync",
            "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
        }
        for i in range(10):
            await call(
                client, "POST", "/v1/hooks/failure", {**event, "task_id": str(i)}, token=HOOKS
            )
        [breaker] = (await call(client, "GET", "/v1/breakers", token=VIEWER))["breakers"]
        assert (breaker["key"], breaker["state"]) == ("app.sync:TRANSIENT_DATABASE", "open")
        assert breaker["failures_in_window"] == 0  # the window restarts when it opens
        assert 0 < breaker["half_open_in_seconds"] <= 300
        after = await call(client, "POST", "/v1/breakers/app.sync:TRANSIENT_DATABASE/reset")
        assert after["state"] == "closed"
        start = await call(
            client,
            "POST",
            "/v1/hooks/start",
            {"task_id": "s", "task_name": "app.sync"},
            token=HOOKS,
        )
        assert start["allow"] is True
        await call(client, "POST", "/v1/breakers/nope:X/reset", status=404)

    async def test_failure_trends(self, client):
        await seed(client, 3)
        await client.server.app[SERVICES].pollers.flush_events()
        trends = await call(client, "GET", "/v1/failure-trends?hours=2", token=VIEWER)
        counts = {b["failure_type"]: b["count"] for b in trends["buckets"]}
        assert counts == {"PERMANENT_VALIDATION": 3}
        await call(client, "GET", "/v1/failure-trends?hours=-1", token=VIEWER, status=400)

    async def test_policy_view(self, client):
        view = await call(client, "GET", "/v1/policies", token=VIEWER)
        policy = view["policy"]
        assert policy["retry_policies"]["TRANSIENT_DATABASE"]["max_retries"] == 5
        assert policy["priority"]["tier_sla"]["enterprise"] == 900
        assert await call(client, "POST", "/v1/policies/reload") == {"reloaded": True}
