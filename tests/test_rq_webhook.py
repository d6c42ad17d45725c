"""The RQ requeue webhook accepts what the sidecar's webhook target signs, and nothing else."""

from __future__ import annotations

import json
import time

import pytest
import redis

from sidecar.requeue.webhook import sign

rq = pytest.importorskip("rq")

from sidecar.integrations.rq import DLQ_META, RequeueWebhook, verify  # noqa: E402

SECRET = "whsec-test-0123456789"
RECORD = {
    "id": "rec-1",
    "task_id": "t-1",
    "task_name": "tests.rq_app.db_write",
    "args": ["tag", 0],
    "kwargs": {},
    "queue": "reports",
    "priority": 6,
}


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> str:
    return sign(secret, body, int(time.time() if at is None else at))


class TestVerify:
    """The signature scheme is the sidecar's own (sidecar.requeue.webhook.sign)."""

    def test_good_bad_and_stale(self):
        body = json.dumps(RECORD).encode()
        assert verify(SECRET, body, signed(body))
        assert not verify(SECRET, body + b" ", signed(body))
        assert not verify(SECRET, body, signed(body, "another-secret-0123"))
        assert not verify(SECRET, body, signed(body, at=time.time() - 600))
        assert not verify(SECRET, body, None)
        assert not verify(SECRET, body, "t=abc,v1=00")


class TestHandle:
    """A signed record becomes an RQ job carrying its DLQ id; anything else is refused."""

    def test_enqueues_with_the_dlq_id(self, redis_url):
        connection = redis.Redis.from_url(redis_url)
        webhook = RequeueWebhook(connection, SECRET, queues={"default", "reports"})
        body = json.dumps(RECORD).encode()
        status, answer = webhook.handle(body, signed(body))
        assert (status, answer["queue"]) == (202, "reports")
        job = rq.job.Job.fetch(answer["job_id"], connection=connection)
        assert job.func_name == "tests.rq_app.db_write"
        assert job.args == ("tag", 0)
        assert job.meta[DLQ_META] == "rec-1"

    def test_unknown_queue_goes_to_the_default(self, redis_url):
        webhook = RequeueWebhook(redis.Redis.from_url(redis_url), SECRET, queues={"default"})
        body = json.dumps(RECORD).encode()
        assert webhook.handle(body, signed(body))[1]["queue"] == "default"

    def test_refusals(self, redis_url):
        webhook = RequeueWebhook(redis.Redis.from_url(redis_url), SECRET)
        body = json.dumps(RECORD).encode()
        assert webhook.handle(body, signed(body, "wrong-secret-0123456"))[0] == 401
        bad = b'{"no": "record"}'
        assert webhook.handle(bad, signed(bad))[0] == 400
        with pytest.raises(ValueError, match="secret"):
            RequeueWebhook(None, "")
