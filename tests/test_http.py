"""The sidecar over HTTP, on the embedded stores and on real PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sidecar.http import create_app
from sidecar.http.keys import SERVICES
from sidecar.settings import Settings, Token

from .conftest import DEFAULT_POLICIES, big_policies_file

HOOKS = "hooks-secret-0123456789"
VIEWER = "viewer-secret-0123456789"
OPERATOR = "operator-secret-0123456789"
TOKENS = {
    "hooks": (Token("worker", HOOKS),),
    "viewer": (Token("grafana", VIEWER),),
    "operator": (Token("alice", OPERATOR),),
}


def failure_event(
    task="app.tasks.sync", exc_type="DeadlockDetected", message="deadlock detected", **extra
):
    return {
        "task_id": extra.pop("task_id", "t-1"),
        "task_name": task,
        "queue": "default",
        "exception": {
            "type": exc_type,
            "module": "psycopg.errors",
            "mro": [f"psycopg.errors.{exc_type}", "psycopg.errors.OperationalError"],
            "message": message,
        },
        **extra,
    }


VALUE_ERROR = {
    "task_id": "t-2",
    "task_name": "app.tasks.import_csv",
    "exception": {"type": "ValueError", "mro": ["builtins.ValueError"], "message": "Invalid data"},
    "args": [1, {"nested": ["é", None]}],
    "kwargs": {"currency": "EUR"},
}


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(request, tmp_path) -> Settings:
    base = Settings(
        policies=str(DEFAULT_POLICIES), data_dir=tmp_path, tokens=TOKENS, reload_interval=0
    )
    if request.param == "embedded":
        return base
    dsn, url = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("redis_url")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop schema public cascade; create schema public")
    redis.Redis.from_url(url).flushall()
    return Settings(**{**base.__dict__, "postgres_dsn": dsn, "redis_url": url})


@pytest.fixture
async def client(settings):
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        yield client


def auth(token: str = HOOKS) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(client, path, body, token=HOOKS, status=200):
    response = await client.post(path, json=body, headers=auth(token))
    payload = await response.json(content_type=None)
    assert response.status == status, payload
    return payload


class TestFailureHook:
    """A failure gets a decision in the DESIGN §3.1 shape; dead letters are stored."""

    async def test_transient_failure_is_retried(self, client):
        answer = await post(client, "/v1/hooks/failure", failure_event(attempt=2))
        assert set(answer) == {
            "action",
            "delay_seconds",
            "queue",
            "priority",
            "priority_value",
            "classification",
            "breaker",
            "rationale",
            "dlq_id",
        }
        assert answer["action"] == "retry"
        assert 0 <= answer["delay_seconds"] <= 120
        assert answer["classification"] == {
            "failure_type": "TRANSIENT_DATABASE",
            "category": "transient",
            "confidence": 0.95,
            "remediation": "AUTO_RETRY",
            "rule": "db-deadlock",
        }
        assert answer["breaker"] == {"key": "app.tasks.sync:TRANSIENT_DATABASE", "state": "closed"}
        assert answer["dlq_id"] is None

    async def test_permanent_failure_is_dead_lettered_with_an_id(self, client):
        answer = await post(client, "/v1/hooks/failure", VALUE_ERROR)
        assert answer["action"] == "dead_letter"
        assert answer["classification"]["failure_type"] == "PERMANENT_VALIDATION"
        record = await client.server.app[SERVICES].stores.dlq.get(answer["dlq_id"])
        assert record.status == "pending"
        assert record.args == [1, {"nested": ["é", None]}]
        assert record.kwargs == {"currency": "EUR"}
        assert record.failure_type == "PERMANENT_VALIDATION"
        assert record.exception["message"] == "Invalid data"

    async def test_a_dlq_retry_that_succeeds_resolves_its_record(self, client):
        dlq_id = (await post(client, "/v1/hooks/failure", VALUE_ERROR))["dlq_id"]
        await post(
            client,
            "/v1/hooks/success",
            {"task_id": "t-2", "task_name": "app.tasks.import_csv", "dlq_id": dlq_id},
        )
        assert (await client.server.app[SERVICES].stores.dlq.get(dlq_id)).status == "resolved"

    async def test_breaker_opens_and_start_refuses(self, client):
        for i in range(9):
            answer = await post(client, "/v1/hooks/failure", failure_event(task_id=f"t{i}"))
            assert answer["breaker"]["state"] == "closed"
        answer = await post(client, "/v1/hooks/failure", failure_event(task_id="t10"))
        assert answer["breaker"]["state"] == "open"
        assert answer["delay_seconds"] == 300
        start = await post(
            client, "/v1/hooks/start", {"task_id": "t11", "task_name": "app.tasks.sync"}
        )
        assert start["allow"] is False
        assert 299 <= start["delay_seconds"] <= 300
        assert start["breaker"] == {"key": "app.tasks.sync:TRANSIENT_DATABASE", "state": "open"}
        other = await post(client, "/v1/hooks/start", {"task_id": "x", "task_name": "other"})
        assert other == {
            "allow": True,
            "delay_seconds": 0.0,
            "breaker": None,
            "dead_lettered": False,
            "dlq_id": None,
        }

    async def test_a_report_answered_too_late_is_kept_when_the_worker_gave_up(self, client):
        """The worker timed out on the first copy (the sidecar answered `retry`, but nobody
        heard it), dead-lettered the task locally and re-sends the report saying so: the
        sidecar keeps the task rather than repeating an answer that went nowhere."""
        event = {**failure_event(task_id="late-1"), "report_id": "late-1:r"}
        first = await post(client, "/v1/hooks/failure", event)
        assert first["action"] == "retry"
        assert await post(client, "/v1/hooks/failure", event) == first  # a plain resend
        kept = await post(client, "/v1/hooks/failure", {**event, "worker_gave_up": True})
        assert kept["action"] == "dead_letter"
        assert kept["rationale"].endswith("the worker gave up (answered too late): kept")
        record = await client.server.app[SERVICES].stores.dlq.get(kept["dlq_id"])
        assert (record.task_id, record.failure_type) == ("late-1", "TRANSIENT_DATABASE")
        again = await post(client, "/v1/hooks/failure", {**event, "worker_gave_up": True})
        assert again == kept  # applied once: one record

    async def test_dry_runs_change_no_state(self, client):
        for _ in range(15):
            answer = await post(client, "/v1/decide", failure_event(), token=VIEWER)
            assert answer["breaker"]["state"] == "closed"
        classified = await post(client, "/v1/classify", VALUE_ERROR)
        assert classified["rule"] == "validation-exception"
        start = await post(
            client, "/v1/hooks/start", {"task_id": "x", "task_name": "app.tasks.sync"}
        )
        assert start["allow"] is True


class TestBatch:
    """A batch answers each event in order; a bad one gets its own error."""

    async def test_mixed_batch(self, client):
        answer = await post(
            client,
            "/v1/hooks/batch",
            [
                {"type": "start", "task_id": "a", "task_name": "x"},
                {"type": "success", "task_id": "a", "task_name": "x", "runtime_seconds": 0.1},
                {"type": "failure", **VALUE_ERROR},
                {"type": "success", "task_id": 5},
                {"type": "unknown"},
            ],
        )
        results = answer["results"]
        assert results[0]["allow"] is True
        assert results[1] == {"recorded": True}
        assert results[2]["action"] == "dead_letter"
        assert results[3] == {
            "error": {
                "status": 400,
                "errors": [{"path": "[3].task_id", "message": "Expected `str`, got `int`"}],
            }
        }
        assert results[4]["error"]["errors"][0]["path"] == "[4].type"


class TestIdempotency:
    """The first claim of a key wins; duplicates see when it was first seen."""

    async def test_claim_complete_release(self, client):
        body = {"key": "billing.charge:[42]", "scope": "global", "ttl_seconds": 60}
        first = await post(client, "/v1/idempotency/claim", body)
        assert first["claimed"] is True
        dup = await post(client, "/v1/idempotency/claim", body)
        assert dup["claimed"] is False
        assert dup["state"] == "running"
        assert dup["first_seen_at"] > 0
        assert "owner" not in dup
        owned = {**body, "owner": first["owner"]}
        assert await post(client, "/v1/idempotency/release", owned) == {"released": True}
        second = await post(client, "/v1/idempotency/claim", body)
        owned = {**body, "owner": second["owner"]}
        assert await post(client, "/v1/idempotency/complete", owned) == {"completed": True}
        assert (await post(client, "/v1/idempotency/claim", body))["state"] == "done"

    async def test_many_claims_in_one_request(self, client):
        """Answered in order; a key twice: the second is a hit. Each counts as a claim."""
        held = {"key": "held", "scope": "global", "ttl_seconds": 60}
        await post(client, "/v1/idempotency/claim", held)
        body = {
            "claims": [
                {"key": "new", "task_name": "billing.charge"},
                held,
                {"key": "new", "task_name": "billing.charge"},
                {"key": "new", "scope": "user"},  # scopes are separate
            ]
        }
        results = (await post(client, "/v1/idempotency/claims", body))["results"]
        assert [r["claimed"] for r in results] == [True, False, False, True]
        assert results[1]["state"] == results[2]["state"] == "running"
        assert "owner" not in results[1]
        owned = {"key": "new", "owner": results[0]["owner"]}
        assert await post(client, "/v1/idempotency/release", owned) == {"released": True}
        metrics = await (await client.get("/metrics")).text()
        labels = 'result="hit",scope="global",task="billing.charge"'
        assert f"task_sidecar_idempotency_checks_total{{{labels}}} 1.0" in metrics

    @pytest.mark.parametrize(
        ("claims", "path"),
        [
            ([{"key": "a"}, {"key": ""}], "claims[1].key"),
            ([{"key": "a"}, {"key": "b\u0000"}], "claims[1].key"),
            ([], "claims"),
            ([{"key": str(i)} for i in range(1001)], "claims"),
        ],
    )
    async def test_a_bad_batch_names_the_claim(self, client, claims, path):
        problem = await post(client, "/v1/idempotency/claims", {"claims": claims}, status=400)
        assert [e["path"] for e in problem["errors"]] == [path], problem
        for claim in claims[:1]:  # nothing of a refused batch was claimed
            first = await post(client, "/v1/idempotency/claim", claim)
            assert first["claimed"] is True

    async def test_a_stale_owner_gets_409_and_changes_nothing(self, client):
        """A holder whose claim expired and was taken over cannot end the new claim."""
        body = {"key": f"stale-{uuid.uuid4()}", "ttl_seconds": 60}
        first = await post(client, "/v1/idempotency/claim", body)
        stale = {**body, "owner": first["owner"] + "x"}
        await post(client, "/v1/idempotency/complete", stale, status=409)
        await post(client, "/v1/idempotency/release", stale, status=409)
        assert (await post(client, "/v1/idempotency/claim", body))["state"] == "running"
        await post(client, "/v1/idempotency/complete", {**body, "owner": "no spaces"}, status=400)

    async def test_scopes_are_separate(self, client):
        for scope in ("global", "user", "device", "task"):
            answer = await post(client, "/v1/idempotency/claim", {"key": "k", "scope": scope})
            assert answer["claimed"] is True, scope

    async def test_concurrent_claims_give_exactly_one_winner(self, client):
        body = {"key": "race", "ttl_seconds": 60}
        answers = await asyncio.gather(
            *(post(client, "/v1/idempotency/claim", body) for _ in range(50))
        )
        assert sum(a["claimed"] for a in answers) == 1


class TestBadInput:
    """Every class of bad input gets a 4xx problem document naming what is wrong."""

    @pytest.mark.parametrize(
        ("body", "path", "message"),
        [
            ({**VALUE_ERROR, "attempt": "2"}, "attempt", "Expected `int`, got `str`"),
            ({**VALUE_ERROR, "attempt": -1}, "attempt", "Expected `int` >= 0"),
            (
                {k: v for k, v in VALUE_ERROR.items() if k != "task_id"},
                "task_id",
                "required field is missing",
            ),
            (
                {**VALUE_ERROR, "exception": {"message": "x"}},
                "exception.type",
                "required field is missing",
            ),
            (
                {**VALUE_ERROR, "exception": {"type": "E", "http_status": 9999}},
                "exception.http_status",
                "Expected `int` <= 599",
            ),
            (
                {**VALUE_ERROR, "context": {"enqueued_at": 1e400}},
                "context.enqueued_at",
                "Number out of range",
            ),
            (
                {**VALUE_ERROR, "context": {"age_seconds": 1e12}},
                "context.age_seconds",
                "Expected `float` <= 100000000000.0",
            ),
            ([1, 2], "", "Expected `object`, got `array`"),
            (
                {**VALUE_ERROR, "task_name": "a\u0000b"},
                "task_name",
                "must not contain NUL characters",
            ),
        ],
    )
    async def test_wrong_fields(self, client, body, path, message):
        response = await client.post(
            "/v1/hooks/failure", data=json.dumps(body).replace("Infinity", "1e400"), headers=auth()
        )
        assert response.status == 400
        assert response.content_type == "application/problem+json"
        problem = await response.json(content_type=None)
        assert problem["status"] == 400
        assert problem["errors"] == [{"path": path, "message": message}]

    @pytest.mark.parametrize("raw", [b"", b"{", b"nope", b'{"task_id": NaN}', b"\xff\xfe"])
    async def test_invalid_json(self, client, raw):
        response = await client.post("/v1/hooks/failure", data=raw, headers=auth())
        assert response.status == 400
        problem = await response.json(content_type=None)
        assert problem["errors"][0]["message"].startswith("invalid JSON")

    async def test_huge_body(self, client):
        body = {**VALUE_ERROR, "args": ["x" * (300 * 1024)]}
        response = await client.post("/v1/hooks/failure", json=body, headers=auth())
        assert response.status == 413
        assert (await response.json(content_type=None))["title"] == "Request body too large"

    async def test_no_token(self, client):
        response = await client.post("/v1/hooks/failure", json=VALUE_ERROR)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    async def test_wrong_token(self, client):
        response = await client.post(
            "/v1/hooks/failure", json=VALUE_ERROR, headers=auth("not-a-token-at-all")
        )
        assert response.status == 401
        assert "not-a-token" not in await response.text()

    async def test_viewer_token_on_a_hook(self, client):
        response = await client.post("/v1/hooks/failure", json=VALUE_ERROR, headers=auth(VIEWER))
        assert response.status == 403

    async def test_unknown_route_and_method(self, client):
        response = await client.get("/v1/nope")
        assert (response.status, response.content_type) == (404, "application/problem+json")
        response = await client.get("/v1/hooks/failure")
        assert response.status == 405
        assert "POST" in response.headers["Allow"]


class TestHealth:
    """Liveness, readiness per backend, and the Prometheus exposition."""

    async def test_healthz_and_readyz(self, client):
        assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
        response = await client.get("/readyz")
        ready = await response.json()
        assert response.status == 200
        assert ready["status"] == "ready"
        assert set(ready["checks"].values()) == {"ok"}

    async def test_metrics_count_hooks(self, client):
        await post(client, "/v1/hooks/failure", VALUE_ERROR)
        text = await (await client.get("/metrics")).text()
        assert (
            'task_sidecar_task_events_total{outcome="dead_letter",task="app.tasks.import_csv"} 1.0'
        ) in text
        assert 'task_sidecar_dlq_actions_total{action="retry"} 0.0' in text


class TestReload:
    """A reload swaps the policy; an invalid file is refused and the old policy stays."""

    @pytest.fixture
    async def reloadable(self, tmp_path):
        path = tmp_path / "policies.yaml"
        path.write_text(DEFAULT_POLICIES.read_text())
        settings = Settings(policies=str(path), data_dir=tmp_path, reload_interval=0)
        app = create_app(settings, registry=CollectorRegistry())
        async with TestClient(TestServer(app)) as client:
            yield path, app[SERVICES].policies, client

    async def test_reload(self, reloadable):
        path, policies, client = reloadable
        path.write_text(
            path.read_text().replace("      max_retries: 5\n", "      max_retries: 1\n", 1)
        )
        assert await policies.reload() is None
        answer = await post(client, "/v1/decide", failure_event(attempt=1), token=None)
        assert answer["action"] == "dead_letter"
        path.write_text("retry: [broken")
        assert await policies.reload() is not None
        answer = await post(client, "/v1/decide", failure_event(attempt=0), token=None)
        assert answer["action"] == "retry"

    async def test_hooks_are_answered_while_a_big_policy_compiles(self, reloadable):
        path, policies, client = reloadable
        big_policies_file(path)
        assert 900_000 < path.stat().st_size < 1 << 20  # near the loader's 1 MiB limit
        reload = asyncio.create_task(policies.reload())
        answered = 0
        while not reload.done():
            answer = await post(client, "/v1/decide", failure_event(attempt=0), token=None)
            assert answer["action"] == "retry"
            answered += 1
        assert await reload is None
        assert len(policies.current.rules) > 6000
        # Compiled on the loop, the reload would hold every request until it ended.
        assert answered > 1


class TestPoison:
    """A task id that starts again with no end for its previous start is a lost run; past
    poison.max_lost_runs (2) it is dead-lettered and its start refused."""

    def start(self, task_id, host, **extra):
        return {
            "task_id": task_id,
            "task_name": "app.tasks.crash",
            "queue": "default",
            "host": host,
            "args": [7],
            **extra,
        }

    async def test_restarted_without_end_is_dead_lettered(self, client):
        first = await post(client, "/v1/hooks/start", self.start("p-1", "w1"))
        assert first["allow"] is True
        second = await post(client, "/v1/hooks/start", self.start("p-1", "w2", redelivered=True))
        assert second["allow"] is True
        third = await post(client, "/v1/hooks/start", self.start("p-1", "w3", delivery_count=3))
        assert third["allow"] is False
        assert third["dead_lettered"] is True
        dlq_id = third["dlq_id"]
        record = await client.server.app[SERVICES].stores.dlq.get(dlq_id)
        assert record.task_id == "p-1"
        assert record.args == [7]
        assert record.context["lost_runs"] == 2
        assert record.context["lost_run_hosts"] == ["w1", "w2"]
        assert record.exception["type"] == "WorkerLostError"
        again = await post(client, "/v1/hooks/start", self.start("p-1", "w4", redelivered=True))
        assert (again["allow"], again["dlq_id"]) == (False, dlq_id)
        # A retry from the DLQ (after a fix) runs, and counting starts over.
        retried = await post(client, "/v1/hooks/start", self.start("p-1", "w5", dlq_id=dlq_id))
        assert retried["allow"] is True
        metrics = await (await client.get("/metrics")).text()
        assert 'task_sidecar_lost_runs_total{task="app.tasks.crash"} 2.0' in metrics

    async def test_worker_lost_sigkill_is_out_of_memory(self, client):
        lost = failure_event(
            task="app.tasks.crash",
            task_id="p-2",
            exc_type="WorkerLostError",
            message="Worker exited prematurely: signal 9 (SIGKILL) Job: 0.",
            host="w1",
        )
        lost["exception"]["module"] = "billiard.exceptions"
        lost["exception"]["mro"] = []
        await post(client, "/v1/hooks/start", self.start("p-2", "w1"))
        answer = await post(client, "/v1/hooks/failure", lost)
        assert answer["action"] == "retry"
        await post(client, "/v1/hooks/start", self.start("p-2", "w1", redelivered=True))
        answer = await post(client, "/v1/hooks/failure", {**lost, "report_id": "r2"})
        assert answer["action"] == "dead_letter"
        assert answer["classification"]["failure_type"] == "SYSTEM_OUT_OF_MEMORY"
        assert answer["classification"]["rule"] == "worker-killed"
        refused = await post(client, "/v1/hooks/start", self.start("p-2", "w1", redelivered=True))
        assert refused == {
            "allow": False,
            "delay_seconds": 0.0,
            "breaker": None,
            "dead_lettered": True,
            "dlq_id": answer["dlq_id"],
        }
        record = await client.server.app[SERVICES].stores.dlq.get(answer["dlq_id"])
        assert record.exception["message"].startswith("Worker exited prematurely: signal 9")
        assert record.context["lost_runs"] == 2

    async def test_runs_that_end_are_not_lost(self, client):
        for _ in range(4):
            assert (await post(client, "/v1/hooks/start", self.start("p-3", "w1")))["allow"]
            await post(
                client,
                "/v1/hooks/batch",
                [{"type": "end", "task_id": "p-3", "task_name": "app.tasks.crash"}],
            )
        await post(client, "/v1/hooks/start", self.start("p-3", "w1"))
        await post(client, "/v1/hooks/success", {"task_id": "p-3", "task_name": "app.tasks.crash"})
        assert (await post(client, "/v1/hooks/start", self.start("p-3", "w1")))["allow"]
