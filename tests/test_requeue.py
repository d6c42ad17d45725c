"""Requeue targets against real receivers: a Celery broker on a real Redis."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from sidecar.records import DlqRecord
from sidecar.requeue import NoTarget, RequeueError
from sidecar.requeue.celery import DLQ_HEADER, CeleryTarget
from sidecar.service.pollers import QueueStalls


def record(**changes) -> DlqRecord:
    fields = {
        "id": "rec-1",
        "task_id": "t-1",
        "task_name": "billing.charge",
        "queue": "default",
        "args": [42],
        "kwargs": {"currency": "EUR"},
        "exception": {"type": "ValueError"},
        "context": {},
        "failure_type": "PERMANENT_VALIDATION",
        "category": "permanent",
        "remediation": "FIX_DATA",
        "confidence": 0.85,
        "rule": "validation-exception",
        "priority": "HIGH",
        "priority_value": 8,
        "target_queue": "high_priority",
        "attempts": 2,
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    return DlqRecord(**{**fields, **changes})


class TestCelery:
    """A retried record is published by name, with its args, on the chosen queue."""

    @pytest.fixture
    def broker(self, redis_url):
        client = redis.Redis.from_url(redis_url)
        client.flushall()
        return client

    async def test_publishes_the_task(self, redis_url, broker):
        target = CeleryTarget(redis_url)
        try:
            await target.requeue(record(), "critical", 10)
        finally:
            await target.close()
        # CRITICAL (10) is kombu's highest Redis priority, 0: the queue itself.
        assert broker.llen("critical") == 1
        message = json.loads(broker.lpop("critical"))
        headers = message["headers"]
        assert headers["task"] == "billing.charge"
        assert headers[DLQ_HEADER] == "rec-1"
        body = json.loads(base64.b64decode(message["body"]))
        assert body[0] == [42]
        assert body[1] == {"currency": "EUR"}

    async def test_a_workflow_goes_back_with_the_task(self, redis_url, broker):
        link = {"task": "reports.send", "args": [1], "kwargs": {}, "options": {}}
        workflow = {
            "chain": [link],
            "callbacks": [link],
            "errbacks": [link],
            "parent_id": "p-1",
            "root_id": "r-1",
            "group_id": "g-1",
        }
        target = CeleryTarget(redis_url)
        try:
            await target.requeue(record(workflow=workflow), "", 10)  # "": the default queue
        finally:
            await target.close()
        message = json.loads(broker.lpop("celery"))  # Celery's default queue
        headers = message["headers"]
        assert (headers["id"], headers["parent_id"], headers["root_id"], headers["group"]) == (
            "t-1",
            "p-1",
            "r-1",
            "g-1",
        )
        _, _, embed = json.loads(base64.b64decode(message["body"]))
        assert [step["task"] for step in embed["chain"]] == ["reports.send"]
        assert [c["task"] for c in embed["callbacks"]] == ["reports.send"]
        assert [e["task"] for e in embed["errbacks"]] == ["reports.send"]

    async def test_the_message_is_the_one_send_task_makes(self, redis_url, broker):
        """The target builds its messages itself (for speed): the same headers, body and
        properties as Celery's own send_task, but for the header naming the record."""
        link = {"task": "reports.send", "args": [1], "kwargs": {}, "options": {}}
        workflow = {"chain": [link], "callbacks": [link], "parent_id": "p-1", "root_id": "r-1"}
        target = CeleryTarget(redis_url)
        try:
            await target.requeue(record(workflow=workflow), "ours", 6)
            target.app.send_task(
                "billing.charge",
                args=[42],
                kwargs={"currency": "EUR"},
                queue="celerys",
                priority=target.message_priority(6),
                task_id="t-1",
                retries=2,
                chain=[link],
                link=[link],
                parent_id="p-1",
                root_id="r-1",
            )
        finally:
            await target.close()
        ours = json.loads(broker.lpop("ours\x06\x163"))
        theirs = json.loads(broker.lpop("celerys\x06\x163"))
        assert ours["headers"].pop(DLQ_HEADER) == "rec-1"
        assert ours["headers"] == theirs["headers"]
        body = json.loads(base64.b64decode(ours["body"]))
        assert body == json.loads(base64.b64decode(theirs["body"]))  # msgspec's spacing
        assert body[0] == [42]
        for message in (ours, theirs):
            message["properties"].pop("delivery_tag")
            assert message["properties"].pop("reply_to")  # this thread's id: they differ
            message["properties"]["delivery_info"].pop("routing_key")
        assert ours["properties"] == theirs["properties"]
        assert ours["content-type"] == theirs["content-type"]

    @pytest.mark.parametrize(
        ("level", "subqueue"), [(8, "q"), (6, "q\x06\x163"), (2, "q\x06\x166")]
    )
    async def test_priorities_map_to_kombu_sub_queues(self, redis_url, broker, level, subqueue):
        target = CeleryTarget(redis_url)
        try:
            await target.requeue(record(), "q", level)
        finally:
            await target.close()
        assert broker.llen(subqueue) == 1

    async def test_broker_down(self):
        target = CeleryTarget("redis://127.0.0.1:1/0")
        try:
            with pytest.raises(RequeueError, match="celery"):
                await target.requeue(record(), "q", 6)
        finally:
            await target.close()

    async def test_a_chunk_lands_every_message_on_its_queue_and_priority(self, redis_url, broker):
        sends = [(record(id=f"rec-{i}", task_id=f"t-{i}", args=[i]), "q", 8) for i in range(300)]
        sends += [(record(id="low", task_id="t-low"), "q", 2)]
        target = CeleryTarget(redis_url)
        try:
            assert await target.requeue_many(sends) == [None] * len(sends)
        finally:
            await target.close()
        messages = [json.loads(m) for m in broker.lrange("q", 0, -1)]
        assert sorted(m["headers"][DLQ_HEADER] for m in messages) == sorted(
            f"rec-{i}" for i in range(300)
        )
        assert {m["headers"]["id"] for m in messages} == {f"t-{i}" for i in range(300)}
        (low,) = broker.lrange("q\x06\x166", 0, -1)
        assert json.loads(low)["headers"][DLQ_HEADER] == "low"

    async def test_a_chunk_to_a_broker_that_is_down_fails_every_send(self):
        target = CeleryTarget("redis://127.0.0.1:1/0")
        try:
            errors = await target.requeue_many([(record(id=f"r{i}"), "q", 6) for i in range(3)])
        finally:
            await target.close()
        assert len(errors) == 3
        assert all(isinstance(e, RequeueError) and "celery" in str(e) for e in errors)


async def test_no_target_says_how_to_configure_one():
    with pytest.raises(RequeueError, match="TASK_SIDECAR_REQUEUE"):
        await NoTarget().requeue(record(), "q", 6)


async def test_queue_depth_probe_counts_priority_sub_queues(redis_url, tmp_path):
    """The poller reads Celery's queue lengths, priority sub-queues included."""
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import CollectorRegistry

    from sidecar.http import create_app
    from sidecar.http.keys import SERVICES
    from sidecar.settings import Settings

    from .conftest import DEFAULT_POLICIES

    redis.Redis.from_url(redis_url).flushall()
    target = CeleryTarget(redis_url)
    try:
        for level in (10, 8, 6, 2):  # sub-queues 0, 0, 3 and 6
            await target.requeue(record(), "reports", level)
    finally:
        await target.close()
    settings = Settings(
        policies=str(DEFAULT_POLICIES),
        data_dir=tmp_path,
        reload_interval=0,
        poll_interval=3600,
        celery_broker_url=redis_url,
        queues=("reports", "critical"),
    )
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        await app[SERVICES].pollers.refresh()
        text = await (await client.get("/metrics")).text()
        assert 'task_sidecar_queue_depth{queue="reports"} 4.0' in text
        assert 'task_sidecar_queue_depth{queue="critical"} 0.0' in text

        # Nobody consumes `reports`: the next poll finds it no smaller, and it counts as
        # stalled since the first; once a task is taken from it, it is draining again.
        await app[SERVICES].pollers.refresh()
        after = stalled(await (await client.get("/metrics")).text())
        assert after["reports"] > 0
        assert after["critical"] == 0
        redis.Redis.from_url(redis_url).rpop("reports")
        await app[SERVICES].pollers.refresh()
        assert stalled(await (await client.get("/metrics")).text()) == {
            "reports": 0.0, "critical": 0.0
        }  # fmt: skip


def stalled(text: str) -> dict[str, float]:
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "task_sidecar_queue_stalled_seconds"
        for sample in family.samples
    }


class TestQueueStalls:
    """A queue is stalled from the first poll that finds it holding tasks until one finds
    it empty or smaller."""

    def test_a_table_of_polls(self):
        stalls = QueueStalls()
        polls = [  # (time, depth, stalled seconds)
            (0, 0, 0),  # empty
            (10, 3, 0),  # holds tasks from now on
            (20, 3, 10),  # no smaller
            (30, 5, 20),  # growing: still stalled since 10
            (40, 4, 0),  # smaller: a worker took one
            (50, 4, 10),
            (60, 0, 0),  # empty
        ]
        assert [stalls.seconds("q", depth, at) for at, depth, _ in polls] == [
            expected for *_, expected in polls
        ]
