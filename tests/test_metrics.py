"""Every DESIGN §5 metric, read back through a parser after a scripted run of hooks."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sidecar.http import create_app
from sidecar.http.keys import SERVICES
from sidecar.metrics import BoundedLabels, Metrics
from sidecar.settings import Settings

from .conftest import DEFAULT_POLICIES

DEADLOCK = {"type": "DeadlockDetected", "module": "psycopg.errors", "message": "deadlock detected"}
OOM = {"type": "MemoryError", "mro": ["builtins.MemoryError"]}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def scraped(tmp_path):
    """A scripted run: failures of several kinds, a retry that succeeds, a breaker that
    opens, idempotency claims, then one refresh of the slow gauges and a scrape."""
    settings = Settings(
        policies=str(DEFAULT_POLICIES), data_dir=tmp_path, reload_interval=0, poll_interval=3600
    )
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:

        async def post(path, body):
            response = await client.post(path, json=body)
            assert response.status == 200, await response.text()
            return await response.json()

        for i in range(10):  # the 10th deadlock opens the breaker
            await post(
                "/v1/hooks/failure",
                {
                    "task_id": f"d{i}",
                    "task_name": "billing.charge",
                    "queue": "default",
                    "attempt": 1 if i == 0 else 0,
                    "exception": DEADLOCK,
                    "context": {
                        "customer_tier": "enterprise",
                        "age_seconds": 3600,
                        "queue_depth": 150,
                    },
                },
            )
        await post(
            "/v1/hooks/success", {"task_id": "d0", "task_name": "billing.charge", "attempt": 1}
        )
        await post(
            "/v1/hooks/failure", {"task_id": "m", "task_name": "reports.build", "exception": OOM}
        )
        for i in range(2):
            await post(
                "/v1/hooks/failure",
                {
                    "task_id": f"v{i}",
                    "task_name": "imports.csv",
                    "exception": {"type": "ValueError"},
                },
            )
        await post("/v1/hooks/start", {"task_id": "s", "task_name": "billing.charge"})
        for _ in range(3):
            await post("/v1/idempotency/claim", {"key": "k", "scope": "user"})
        for _ in range(2):  # a client that names the task
            claim = {"key": "c", "scope": "global", "task_name": "billing.charge"}
            await post("/v1/idempotency/claim", claim)
        await app[SERVICES].pollers.refresh()
        text = await (await client.get("/metrics")).text()
    return text, samples(text)


class TestDesignMetrics:
    """Each metric of DESIGN §5 exists with its labels and counts what happened."""

    def test_task_events(self, scraped):
        _, s = scraped
        name = "task_sidecar_task_events_total"
        assert value(s, name, task="billing.charge", outcome="failure") == 10
        assert value(s, name, task="billing.charge", outcome="retry") == 10
        assert value(s, name, task="billing.charge", outcome="success") == 1
        assert value(s, name, task="imports.csv", outcome="dead_letter") == 2

    def test_failures_confidence_and_delays(self, scraped):
        _, s = scraped
        assert (
            value(
                s,
                "task_sidecar_failures_total",
                task="billing.charge",
                failure_type="TRANSIENT_DATABASE",
                remediation="AUTO_RETRY",
            )
            == 10
        )
        assert (
            value(
                s, "task_sidecar_classification_confidence_count", failure_type="TRANSIENT_DATABASE"
            )
            == 10
        )
        assert (
            value(s, "task_sidecar_retry_delay_seconds_count", failure_type="TRANSIENT_DATABASE")
            == 10
        )
        assert (
            value(s, "task_sidecar_retry_delay_seconds_count", failure_type="PERMANENT_VALIDATION")
            == 0
        )  # exists at zero

    def test_retry_outcomes(self, scraped):
        _, s = scraped
        name = "task_sidecar_retry_outcomes_total"
        assert (
            value(
                s, name, task="billing.charge", failure_type="TRANSIENT_DATABASE", result="failure"
            )
            == 1
        )
        assert (
            value(
                s, name, task="billing.charge", failure_type="TRANSIENT_DATABASE", result="success"
            )
            == 1
        )

    def test_dlq_gauges(self, scraped):
        _, s = scraped
        assert value(s, "task_sidecar_dlq_depth", status="pending") == 2  # the ValueErrors
        assert value(s, "task_sidecar_dlq_depth", status="resolved") == 0
        assert 0 <= value(s, "task_sidecar_dlq_oldest_pending_age_seconds") < 60
        assert ("task_sidecar_dlq_actions_total", frozenset({("action", "retry")})) in s

    def test_breakers(self, scraped):
        _, s = scraped
        breaker = "billing.charge:TRANSIENT_DATABASE"
        assert value(s, "task_sidecar_breaker_state", breaker=breaker, state="open") == 1
        assert value(s, "task_sidecar_breaker_state", breaker=breaker, state="closed") == 0
        assert value(s, "task_sidecar_breaker_transitions_total", breaker=breaker, to="open") == 1
        assert value(s, "task_sidecar_deferrals_total", reason="breaker") == 2  # failure, start

    def test_priority_sla_load(self, scraped):
        _, s = scraped
        assert (
            value(
                s, "task_sidecar_priority_assignments_total", priority="CRITICAL", queue="default"
            )
            >= 10
        )  # HIGH + SLA breach; OOM's urgency too; kept on the task's queue (not routed)
        assert value(s, "task_sidecar_sla_breaches_total", tier="enterprise") == 10
        assert value(s, "task_sidecar_sla_breaches_total", tier="basic") == 0
        assert value(s, "task_sidecar_deferrals_total", reason="load") == 10
        assert value(s, "task_sidecar_queue_depth", queue="default") == 150
        assert value(s, "task_sidecar_adaptive_adjustments_total", direction="faster") == 0

    def test_idempotency(self, scraped):
        _, s = scraped
        name = "task_sidecar_idempotency_checks_total"
        # A claim without task_name (an older client) counts under task "__unnamed__".
        assert value(s, name, task="__unnamed__", scope="user", result="miss") == 1
        assert value(s, name, task="__unnamed__", scope="user", result="hit") == 2
        assert value(s, name, task="billing.charge", scope="global", result="miss") == 1
        assert value(s, name, task="billing.charge", scope="global", result="hit") == 1
        # The task's first claim in a scope made its other results, at zero.
        assert (
            name,
            frozenset({"task": "billing.charge", "scope": "global", "result": "error"}.items()),
        ) in s
        assert (
            name,
            frozenset({"task": "billing.charge", "scope": "user", "result": "hit"}.items()),
        ) not in s
        assert (
            value(s, "task_sidecar_idempotency_check_duration_seconds_count", backend="sqlite") == 5
        )

    def test_idempotency_task_is_bounded(self):
        metrics = Metrics(CollectorRegistry(), task_limit=2)
        for task in ("a", "b", "c", "d"):
            metrics.record_claim("global", "hit", "memory", 0.001, task_name=task)
        registry = metrics.registry
        get = registry.get_sample_value
        labels = {"scope": "global", "result": "hit"}
        assert get("task_sidecar_idempotency_checks_total", {"task": "a", **labels}) == 1
        assert get("task_sidecar_idempotency_checks_total", {"task": "c", **labels}) is None
        assert get("task_sidecar_idempotency_checks_total", {"task": "__other__", **labels}) == 2

    def test_operations(self, scraped):
        _, s = scraped
        assert value(s, "task_sidecar_backend_up", backend="sqlite") == 1
        assert value(s, "task_sidecar_backend_up", backend="memory") == 1
        assert value(s, "task_sidecar_spool_pending") == 0
        assert value(s, "task_sidecar_policy_reloads_total", result="failure") == 0
        assert value(s, "task_sidecar_hook_duration_seconds_count", hook="failure") == 13
        for name in (
            "task_sidecar_schedule_health_score",
            "task_sidecar_schedule_hotspots",
            "task_sidecar_schedule_conflicts",
        ):
            assert (name, frozenset()) in s

    def test_promtool_check_metrics_is_clean(self, scraped):
        text, _ = scraped
        assert shutil.which("promtool"), "promtool is missing: run scripts/install-test-deps.sh"
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestTaskLabel:
    """The task label is bounded: names past the limit become __other__."""

    def test_bounded(self):
        labels = BoundedLabels(limit=2)
        assert [labels(n) for n in ("a", "b", "c", "a")] == ["a", "b", "__other__", "a"]

    def test_breaker_label_follows_the_task_bound(self):
        metrics = Metrics(CollectorRegistry(), task_limit=1)
        assert metrics.breaker("a:X") == "a:X"
        assert metrics.breaker("b:X") == "__other__:X"


async def test_queue_label_is_bounded_like_the_task_label(tmp_path):
    """2,000 queue names (each failure reporting its queue's depth): at most 500 names plus
    `__other__`, one bound for every metric with a queue label."""
    settings = Settings(
        policies=str(DEFAULT_POLICIES), data_dir=tmp_path, reload_interval=0, poll_interval=3600
    )
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        for first in range(0, 2000, 1000):
            batch = [
                {
                    "type": "failure",
                    "task_id": f"q{i}",
                    "task_name": "billing.charge",
                    "queue": f"queue-{i}",
                    "exception": DEADLOCK,
                    "context": {"queue_depth": i},
                }
                for i in range(first, first + 1000)
            ]
            response = await client.post("/v1/hooks/batch", json=batch)
            assert response.status == 200, await response.text()
            assert all("action" in r for r in (await response.json())["results"])
        text = await (await client.get("/metrics")).text()
    found = [(name, dict(labels)) for name, labels in samples(text)]
    depths = {labels["queue"] for name, labels in found if name == "task_sidecar_queue_depth"}
    queues = {labels["queue"] for _, labels in found if "queue" in labels}
    assert len(queues) <= 501
    assert len(depths) >= 490
    assert "__other__" in depths
    assert "queue-0" in depths
    assert "queue-1999" not in depths
