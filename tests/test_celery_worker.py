"""The Celery integration inside real worker processes, with what it sends observed: the
worker talks to the real sidecar through tests/faultproxy.py (forwarding everything), so
the tests read the failure bodies as the sidecar got them. Also the warning at worker
start about retry queues nobody consumes, and idempotency keys bound to the signature."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")

import redis
from celery import Celery, chain, group

from sidecar.integrations.celery import install, stranded_retry_queues
from tests.celery_worker import Worker
from tests.conftest import routing_policies_file
from tests.faultproxy import FaultProxy
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies.yaml"
TOKEN = "hook-" + uuid.uuid4().hex
EVERY_QUEUE = "default,critical,high_priority,reports,maintenance"
FAILURE = "/v1/hooks/failure"


class Fleet:
    """A sidecar, a proxy in front of it, one worker reading every queue on `broker`, and a
    producer app for sending tasks."""

    def __init__(self, proxy: FaultProxy, broker: str, runs: redis.Redis, worker: Worker):
        self.proxy = proxy
        self.broker = broker
        self.runs = runs
        self.worker = worker
        self.app = Celery("producer", broker=broker)
        self.app.conf.task_default_queue = "default"

    def failures_of(self, task_id: str) -> list[dict[str, Any]]:
        return [b for b in self.proxy.bodies(FAILURE) if b["task_id"] == task_id]


def worker_env(broker: str, runs: str, sidecar_url: str) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": broker,
        "RUNS_REDIS_URL": runs,
        "TASK_SIDECAR_URL": sidecar_url,
        "TASK_SIDECAR_TOKEN": TOKEN,
        "TASK_SIDECAR_POLICIES": str(POLICIES),
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_service: Any) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("celery-worker")
    redis_service.start()
    base = redis_service.url.rsplit("/", 1)[0]
    broker, runs = f"{base}/5", f"{base}/6"
    for url in (broker, runs):
        redis.Redis.from_url(url).flushdb()
    with (
        SidecarProcess(tmp, TOKEN, policies=str(POLICIES)) as sidecar,
        FaultProxy(f"http://127.0.0.1:{sidecar.port}") as proxy,
    ):
        worker = Worker(tmp / "worker.log", EVERY_QUEUE, worker_env(broker, runs, proxy.url))
        try:
            worker.wait_ready()
            yield Fleet(proxy, broker, redis.Redis.from_url(runs), worker)
        finally:
            worker.stop()


class TestWorkflowOfAFailure:
    """A failure report carries what Celery needs to continue the workflow after a DLQ
    retry: the rest of the chain, callbacks, errbacks, parent/root/group ids."""

    def test_middle_link_of_a_chain(self, fleet: Fleet) -> None:
        tag = uuid.uuid4().hex[:8]
        sig = fleet.app.signature
        workflow = chain(
            sig("e2e.db_write", args=(f"a-{tag}",), immutable=True),
            sig("e2e.validate", args=(f"b-{tag}",), immutable=True),  # dead-lettered
            sig("e2e.db_write", args=(f"c-{tag}",), immutable=True),
        )
        result = workflow.apply_async(queue="default")
        middle = result.parent  # the validate link
        (body,) = wait_for(lambda: fleet.failures_of(middle.id), 20, fleet.worker.output())
        assert body["task_name"] == "e2e.validate"
        sent = body["workflow"]
        (rest,) = sent["chain"]  # the link that has not run yet, as Celery serialises it
        assert (rest["task"], rest["args"]) == ("e2e.db_write", [f"c-{tag}"])
        assert sent["parent_id"] == middle.parent.id
        assert sent["root_id"] == middle.parent.id
        assert set(sent) == {"chain", "parent_id", "root_id"}  # empty fields left out

    def test_callbacks_errbacks_and_group(self, fleet: Fleet) -> None:
        tag = uuid.uuid4().hex[:8]
        sig = fleet.app.signature
        on_success = sig("e2e.db_write", args=(f"ok-{tag}",), immutable=True)
        on_error = sig("e2e.db_write", args=(f"err-{tag}",), immutable=True)
        failing = sig("e2e.validate", args=(f"v-{tag}",))
        result = failing.apply_async(queue="default", link=on_success, link_error=on_error)
        (body,) = wait_for(lambda: fleet.failures_of(result.id), 20, fleet.worker.output())
        sent = body["workflow"]
        assert [c["args"] for c in sent["callbacks"]] == [[f"ok-{tag}"]]
        assert [e["args"] for e in sent["errbacks"]] == [[f"err-{tag}"]]
        assert set(sent) == {"callbacks", "errbacks"}  # its own root: no root_id

        members = [sig("e2e.validate", args=(f"g{i}-{tag}",)) for i in range(2)]
        grouped = group(members).apply_async(queue="default")
        first = grouped.results[0]
        (body,) = wait_for(lambda: fleet.failures_of(first.id), 20, fleet.worker.output())
        assert body["workflow"]["group_id"] == grouped.id

    def test_plain_failure_sends_no_workflow(self, fleet: Fleet) -> None:
        result = fleet.app.send_task("e2e.validate", args=(uuid.uuid4().hex,), queue="default")
        (body,) = wait_for(lambda: fleet.failures_of(result.id), 20, fleet.worker.output())
        assert "workflow" not in body  # nothing to continue (it is its own root)
        assert body["report_id"].startswith(f"{result.id}:0:")


class TestIdempotencyClaimOfARun:
    """An idempotent task's claim names the task, so the sidecar counts duplicates by task
    (`task_sidecar_idempotency_checks_total{task}`)."""

    def test_claim_carries_the_task_name(self, fleet: Fleet) -> None:
        tag = uuid.uuid4().hex[:8]
        fleet.app.send_task("e2e.charge", args=(tag, 5), queue="default")

        def claims() -> list[dict[str, Any]]:
            return [
                b
                for b in fleet.proxy.bodies("/v1/idempotency/claim")
                if b["key"].startswith("e2e.charge:")
            ]

        (body, *_) = wait_for(claims, 20, fleet.worker.output())
        assert body["task_name"] == "e2e.charge"
        assert body["scope"] == "global"


class TestACallOutsideAWorker:
    """Calling a task as a plain function runs it and tells the sidecar nothing: it is not
    a worker's run (no task id, no message to retry or dead-letter)."""

    def test_direct_call_sends_no_claim_and_no_success(self, fleet: Fleet) -> None:
        app = Celery("direct", broker=fleet.broker)
        client = install(app, fleet.proxy.url, TOKEN)
        tag = uuid.uuid4().hex

        @app.task(name="direct.charge", idempotent=True)
        def charge(order: str) -> str:
            return order.upper()

        assert charge(tag) == tag.upper()
        assert client.flush(5)
        client.close()
        seen = [
            b
            for path in ("/v1/idempotency/claim", "/v1/hooks/batch", "/v1/hooks/start")
            for b in fleet.proxy.bodies(path)
        ]
        assert not [b for b in seen if "direct.charge" in str(b)]


class TestRetryQueuesAtWorkerStart:
    """A worker that does not read the queues the policy routes its tasks' retries to is
    told so once, at start, in words that say what to do."""

    def test_worker_reading_only_its_own_queue_is_warned_once(
        self, fleet: Fleet, tmp_path: Path, redis_service: Any
    ) -> None:
        broker = redis_service.url.rsplit("/", 1)[0] + "/7"  # its own broker: steals nothing
        env = worker_env(broker, broker, f"http://127.0.0.1:{free_port()}")
        env["TASK_SIDECAR_POLICIES"] = str(routing_policies_file(tmp_path))
        worker = Worker(tmp_path / "lonely.log", "default", env)
        try:
            log = worker.wait_ready().output()
        finally:
            worker.stop()
        (line,) = [x for x in log.splitlines() if "queues it does not consume" in x]
        assert "this worker consumes default but the policy may send retries" in line
        for queue in ("critical", "high_priority", "reports"):
            assert f"{queue} (" in line
        assert "e2e.db_write" in line
        assert "e2e.plain" not in line  # sidecar=False: Celery's own retries
        assert "celery worker -Q default,critical,high_priority,reports" in line
        assert "priority.route_retries: false" in line

    def test_worker_reading_every_queue_is_not_warned(self, fleet: Fleet) -> None:
        assert "queues it does not consume" not in fleet.worker.output()

    def test_no_check_without_routing_or_without_a_policy(self, tmp_path: Path) -> None:
        routing = str(routing_policies_file(tmp_path))
        routed = Celery("routed")
        install(routed, url=f"http://127.0.0.1:{free_port()}", policies=routing)
        unrouted = Celery("unrouted")  # the worker keeps its queue whatever the policy
        install(unrouted, url="http://127.0.0.1:1", policies=routing, route_retries=False)
        default = Celery("default")  # the default policy does not route retries
        install(default, url="http://127.0.0.1:1", policies=str(POLICIES))
        blind = Celery("blind")
        install(blind, url="http://127.0.0.1:1")  # no policies file: nothing to check against
        for app in (routed, unrouted, default, blind):
            app.task(name="reports.build", shared=False)(build_report)

        assert set(stranded_retry_queues(routed, {"celery"})) == {
            "critical", "high_priority", "reports"
        }  # fmt: skip
        assert (
            stranded_retry_queues(routed, {"celery", "critical", "high_priority", "reports"}) == {}
        )
        assert stranded_retry_queues(unrouted, {"celery"}) == {}
        assert stranded_retry_queues(default, {"celery"}) == {}
        assert stranded_retry_queues(blind, {"celery"}) == {}
        for app in (routed, unrouted, default, blind):
            app.Task.sidecar_client.close(timeout=0.1)


def build_report() -> None: ...


class TestIdempotencyKeyOfACall:
    """The key is built from the arguments bound to the task's signature."""

    def test_positional_keyword_and_default_arguments_give_one_key(self) -> None:
        app = Celery("keys")
        install(app, url=f"http://127.0.0.1:{free_port()}")

        @app.task(bind=True, name="billing.charge", idempotent=True, shared=False)
        def charge(self: Any, order_id: str, amount: int = 10) -> None: ...

        @app.task(name="billing.refund", idempotent=True, shared=False)
        def refund(order_id: str, *reasons: str, **extra: Any) -> None: ...

        key = charge._idempotency_key
        same = {
            key(("o1", 10), {}),
            key((), {"order_id": "o1", "amount": 10}),
            key(("o1",), {"amount": 10}),
            key(("o1",), {}),  # the default applied
        }
        assert len(same) == 1
        assert key(("o2", 10), {}) not in same
        assert key(("o1", 11), {}) not in same
        assert key(("o1", 10, "extra"), {}) not in same  # does not bind: raw arguments
        refund_key = refund._idempotency_key  # *reasons and **extra bind by name too
        assert refund_key(("o1",), {"by": "me", "at": 1}) == refund_key(
            (), {"at": 1, "order_id": "o1", "by": "me"}
        )
        assert refund_key(("o1", "late"), {}) != refund_key(("o1",), {})
        app.Task.sidecar_client.close(timeout=0.1)
