"""Requeue targets against real receivers: a Celery broker on a real Redis."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from sidecar.records import DlqRecord
from sidecar.requeue import NoTarget, RequeueError
from sidecar.requeue.celery import DLQ_HEADER, CeleryTarget


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
