"""Job functions for the RQ e2e tests (tests/test_rq_e2e.py), run by a real worker:

    rq worker --worker-class sidecar.integrations.rq.SidecarWorker --with-scheduler …

Configured from the environment: RUNS_REDIS_URL (where runs are recorded) and
TASK_SIDECAR_URL / _TOKEN / _POLICIES (read by the integration). Each job records its run
(time, attempt, queue, DLQ id) in the list `runs:<tag>` and fails while the key
`fault:<tag>` is set (or for its first `fail_times` runs), so the test controls faults.
"""

from __future__ import annotations

import json
import os
import time

import redis
from rq import get_current_job

from sidecar.integrations.rq import ATTEMPT_META, DLQ_META, idempotent

store = redis.Redis.from_url(os.environ.get("RUNS_REDIS_URL", "redis://127.0.0.1:6379/2"))


class DeadlockDetected(Exception):
    """Named like psycopg's, so the default taxonomy calls it TRANSIENT_DATABASE."""


def _record(tag: str) -> int:
    job = get_current_job()
    run = {
        "t": time.time(),
        "attempt": int(job.meta.get(ATTEMPT_META) or 0),
        "queue": job.origin,
        "dlq_id": job.meta.get(DLQ_META),
        "job_id": job.id,
    }
    return store.rpush(f"runs:{tag}", json.dumps(run))


def _faulty(tag: str, fail_times: int, runs: int) -> bool:
    return bool(store.exists(f"fault:{tag}")) or runs <= fail_times


def db_write(tag: str, fail_times: int = 0) -> str:
    """A transient database error while `fault:<tag>` is set or for the first runs."""
    runs = _record(tag)
    if _faulty(tag, fail_times, runs):
        raise DeadlockDetected("deadlock detected")
    store.rpush(f"done:{tag}", time.time())
    return "ok"


def validate(tag: str) -> str:
    _record(tag)
    raise ValueError("Invalid data")


def fetch(tag: str) -> str:
    """A network error (breaker) while `fault:<tag>` is set."""
    runs = _record(tag)
    if _faulty(tag, 0, runs):
        raise ConnectionError("connection reset by peer")
    store.rpush(f"done:{tag}", time.time())
    return "ok"


@idempotent(ttl=600)
def charge(tag: str, amount: int) -> str:
    _record(tag)
    return "charged"


def report(tag: str) -> str:
    """The test's policy discards this job's failures."""
    _record(tag)
    raise ValueError("Invalid report range")


def plain(tag: str) -> str:
    """Enqueued with meta={"sidecar": False} and an RQ Retry: RQ's own retries apply."""
    _record(tag)
    raise KeyError("missing")
