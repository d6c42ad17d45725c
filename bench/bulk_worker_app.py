"""The Celery app whose real worker runs every message bench/bulk_retry.py requeues: the
records' task, counting its runs in Redis."""

from __future__ import annotations

import os

import redis
from celery import Celery

app = Celery("bench-bulk", broker=os.environ["CELERY_BROKER_URL"])
app.conf.worker_prefetch_multiplier = 64
runs = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])


@app.task(name="billing.charge")
def charge(n: int, currency: str = "EUR") -> int:
    runs.incr("bench:runs")
    return n
