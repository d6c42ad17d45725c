"""A Celery app for the e2e tests (tests/test_celery_e2e.py), run by a real worker:

    celery -A tests.celery_app worker -P solo …

Configured from the environment: CELERY_BROKER_URL, RUNS_REDIS_URL (where runs are
recorded), TASK_SIDECAR_URL / _TOKEN / _POLICIES (the integration). Each task records its
run (time, attempt, queue, DLQ id) in the list `runs:<tag>` and fails while the key
`fault:<tag>` is set (or for its first `fail_times` runs), so the test controls faults.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from sidecar.integrations.celery import dlq_id_of, install

app = Celery("e2e", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.task_default_queue = "default"
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = False

install(app, flush_interval=0.1)
store = redis.Redis.from_url(os.environ.get("RUNS_REDIS_URL", "redis://127.0.0.1:6379/2"))


class DeadlockDetected(Exception):
    """Named like psycopg's, so the default taxonomy calls it TRANSIENT_DATABASE."""


def _record(task, tag: str) -> int:
    request = task.request
    info = request.delivery_info or {}
    run = {
        "t": time.time(),
        "retries": request.retries,
        "queue": info.get("routing_key"),
        "dlq_id": dlq_id_of(request),
        "task_id": request.id,
    }
    return store.rpush(f"runs:{tag}", json.dumps(run))


def _faulty(tag: str, fail_times: int, runs: int) -> bool:
    return bool(store.exists(f"fault:{tag}")) or runs <= fail_times


@app.task(bind=True, name="e2e.db_write")
def db_write(self, tag: str, fail_times: int = 0) -> str:
    """A transient database error while `fault:<tag>` is set or for the first runs."""
    runs = _record(self, tag)
    if _faulty(tag, fail_times, runs):
        raise DeadlockDetected("deadlock detected")
    store.rpush(f"done:{tag}", time.time())
    return "ok"


@app.task(bind=True, name="e2e.validate")
def validate(self, tag: str) -> str:
    _record(self, tag)
    raise ValueError("Invalid data")


@app.task(bind=True, name="e2e.parse")
def parse(self, tag: str) -> str:
    """Bad input (permanent: dead-lettered at once) while `fault:<tag>` is set."""
    runs = _record(self, tag)
    if _faulty(tag, 0, runs):
        raise ValueError("Invalid data")
    store.rpush(f"done:{tag}", time.time())
    return "ok"


@app.task(bind=True, name="e2e.fetch")
def fetch(self, tag: str) -> str:
    """A network error (breaker) while `fault:<tag>` is set."""
    runs = _record(self, tag)
    if _faulty(tag, 0, runs):
        raise ConnectionError("connection reset by peer")
    return "ok"


@app.task(bind=True, name="e2e.charge", idempotent=True, idempotency_ttl=600)
def charge(self, tag: str, amount: int) -> str:
    _record(self, tag)
    return "charged"


@app.task(
    bind=True,
    name="e2e.plain",
    sidecar=False,
    autoretry_for=(KeyError,),
    retry_backoff=False,
    default_retry_delay=0.2,
    max_retries=2,
)
def plain(self, tag: str) -> str:
    """The integration is off for this task: Celery's own retry options apply."""
    _record(self, tag)
    raise KeyError("missing")
