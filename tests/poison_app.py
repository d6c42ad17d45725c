"""A Celery app for tests/test_poison_e2e.py: tasks that kill the process running them.

acks_late + reject_on_worker_lost (the message goes back to the broker when the pool child
dies) and a short visibility timeout (a message whose whole worker died is handed out
again within seconds), as docs/celery.md asks of poison detection.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time

import redis
from celery import Celery

from sidecar.integrations.celery import install

app = Celery("poison", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.task_default_queue = "default"
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True
app.conf.broker_transport_options = {"visibility_timeout": 3, "unacked_restore_interval": 1}

install(app, flush_interval=0.1)
store = redis.Redis.from_url(os.environ.get("RUNS_REDIS_URL", "redis://127.0.0.1:6379/2"))


def _record(task, tag: str) -> int:
    info = task.request.delivery_info or {}
    run = {"t": time.time(), "pid": os.getpid(), "redelivered": bool(info.get("redelivered"))}
    return store.rpush(f"runs:{tag}", json.dumps(run))


@app.task(bind=True, name="poison.kill")
def kill(self, tag: str) -> str:
    """SIGKILLs its own process until `fixed:<tag>` is set."""
    _record(self, tag)
    if not store.exists(f"fixed:{tag}"):
        os.kill(os.getpid(), signal.SIGKILL)
    store.rpush(f"done:{tag}", time.time())
    return "ok"


@app.task(bind=True, name="poison.oom")
def oom(self, tag: str) -> str:
    """Allocates past a small address-space limit (RLIMIT_AS), as a leak would."""
    _record(self, tag)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, hard))
    try:
        block = bytearray(512 * 2**20)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return str(len(block))


@app.task(bind=True, name="poison.ok")
def ok(self, tag: str) -> str:
    store.rpush(f"done:{tag}", time.time())
    return "ok"


@app.task(bind=True, name="poison.slow")
def slow(self, tag: str) -> str:
    """A healthy task that takes a while (its worker is killed under it on purpose)."""
    _record(self, tag)
    time.sleep(4)
    store.rpush(f"done:{tag}", time.time())
    return "ok"
