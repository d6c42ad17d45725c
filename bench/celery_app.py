"""The Celery app bench/celery_worker.py runs in a real worker: one trivial task with the
integration on and the same task without it (a plain `celery.Task`, as if the integration
were not installed)."""

from __future__ import annotations

import os

import redis
from celery import Celery, Task

from sidecar.integrations.celery import install

app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"])
app.conf.worker_prefetch_multiplier = 64
install(app)
counter = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])


@app.task(name="bench.on")
def with_sidecar(n: int) -> int:
    counter.incr("bench:done")
    return n


@app.task(name="bench.off", base=Task)
def without_sidecar(n: int) -> int:
    counter.incr("bench:done")
    return n
