"""Bulk retry of DLQ records into a real Redis-backed Celery broker, vs bare send_task.

    .venv/bin/python bench/bulk_retry.py [--records 100000] [--redis-url URL]

Seeds the embedded store (SQLite) with N pending records, then times a bulk retry by
filter with the rate limit off: conditional transitions of 500 records at a time, each
chunk published in one kombu publish batch (one Redis pipeline), audit entries. The
baseline is Celery's own `send_task` of the same N messages in a plain loop, on the same
broker, in the same run. Then a real Celery worker (bench/bulk_worker_app.py, prefork)
runs every requeued message, and the run count is checked. Prints records/s of both and
their ratio. Target: >= 10,000 records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from sidecar.metrics import Metrics  # noqa: E402
from sidecar.records import DlqFilter, DlqRecord  # noqa: E402
from sidecar.requeue.celery import CeleryTarget  # noqa: E402
from sidecar.service.dlq import DeadLetters  # noqa: E402
from sidecar.service.policies import Policies  # noqa: E402
from sidecar.store.sqlstore import sqlite_store  # noqa: E402


def record(i: int, now: float) -> DlqRecord:
    return DlqRecord(
        id=str(uuid.uuid4()),
        task_id=f"t{i}",
        task_name="billing.charge",
        queue="default",
        args=[i],
        kwargs={"currency": "EUR"},
        exception={"type": "ValueError"},
        context={},
        failure_type="PERMANENT_VALIDATION",
        category="permanent",
        remediation="FIX_DATA",
        confidence=0.85,
        rule="validation-exception",
        priority="HIGH",
        priority_value=8,
        target_queue="bench",
        attempts=0,
        created_at=now + i / 1e6,
        updated_at=now,
    )


async def run(records: int, broker: str, data: Path) -> tuple[float, float]:
    store = sqlite_store(data / "bench.sqlite3")
    await store.open()
    now = time.time()
    for i in range(records):
        await store.put(record(i, now))
    metrics = Metrics(CollectorRegistry())
    policies = Policies(ROOT / "policies.yaml", metrics)
    target = CeleryTarget(broker)
    operations = DeadLetters(policies, store, target, metrics, time.time)

    started = time.perf_counter()
    job = await operations.bulk_retry(
        "bench", ids=None, where=DlqFilter(), priority=None, rate_per_second=None, dry_run=False
    )
    await operations.wait_jobs()
    bulk = time.perf_counter() - started
    view = operations.jobs[job["id"]].view()
    assert view["requeued"] == records, view

    started = time.perf_counter()
    for i in range(records):
        target.app.send_task(
            "billing.charge",
            args=[i],
            kwargs={"currency": "EUR"},
            queue="bench-baseline",
            priority=2,
        )
    baseline = time.perf_counter() - started
    await target.close()
    await store.close()
    return records / bulk, records / baseline


def run_every_message(broker: str, records: int, timeout: float = 600) -> float:
    """Start a real worker on the bench queue and wait until it ran `records` tasks;
    returns the seconds it took."""
    import redis

    runs = redis.Redis.from_url(broker)
    runs.delete("bench:runs")
    env = {**os.environ, "CELERY_BROKER_URL": broker, "PYTHONPATH": str(ROOT / "bench")}
    command = [sys.executable, "-m", "celery", "-A", "bulk_worker_app", "worker", "-Q", "bench"]
    command += ["-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = subprocess.Popen(
        [*command, "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    try:
        while int(runs.get("bench:runs") or 0) < records:
            if time.perf_counter() - started > timeout or worker.poll() is not None:
                raise RuntimeError(f"the worker ran {runs.get('bench:runs')} of {records}")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = args.redis_url
        if url is None:
            from tests.services import start_redis

            url = stack.enter_context(start_redis(tmp)).url
        bulk, baseline = asyncio.run(run(args.records, url, Path(tmp)))
        ran = run_every_message(url, args.records)
    print(f"{args.records:,} records, Celery on Redis, rate limit off")
    print(f"bare send_task loop: {baseline:8,.0f} records/s")
    print(f"bulk retry:          {bulk:8,.0f} records/s (target >= 10,000)")
    print(f"ratio: {bulk / baseline:.2f}x")
    print(f"a real worker (prefork, 2 processes) ran all {args.records:,} in {ran:.1f} s")


if __name__ == "__main__":
    main()
