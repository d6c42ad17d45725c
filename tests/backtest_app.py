"""A Celery app for the end-to-end backtest (tests/test_backtest_e2e.py), run by a real
worker:

    celery -A tests.backtest_app worker -P threads …

Two tasks with a real dependency each, which the test takes down and brings back on a
schedule:

- `bt.sync_invoice` connects to PostgreSQL (psycopg). While the Redis key `down:db` is set
  it connects to a port nothing listens on, so psycopg raises its real OperationalError
  ("connection refused"); otherwise it runs `select 1` on the real server. An invoice sent
  with `bad=True` fails validation (ValueError) whenever it runs.
- `bt.fetch_rates` calls a stand-in rates API over HTTP (urllib); the test's stand-in
  answers 503 while it is down, so urllib raises its real HTTPError.

Configured from the environment: CELERY_BROKER_URL, RUNS_REDIS_URL (flags and the run
log), BT_DB_DSN, BT_DEAD_DSN, BT_RATES_URL, TASK_SIDECAR_URL / _TOKEN / _POLICIES. Each run
appends `{"task_id", "number", "name", "retries", "t", "ok"}` to the list `runs` (t: when the run
ended), the test's ground truth.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import psycopg
import redis
from celery import Celery

from sidecar.integrations.celery import install

app = Celery("backtest", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.task_default_queue = "default"
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = False

install(app, flush_interval=0.1)
store = redis.Redis.from_url(os.environ.get("RUNS_REDIS_URL", "redis://127.0.0.1:6379/2"))


def _record(task, ok: bool) -> None:
    run = {
        "task_id": task.request.id,
        "number": task.request.args[0],
        "name": task.name,
        "retries": task.request.retries,
        "t": time.time(),
        "ok": ok,
    }
    store.rpush("runs", json.dumps(run))


def _query_database() -> None:
    down = store.exists("down:db")
    dsn = os.environ["BT_DEAD_DSN" if down else "BT_DB_DSN"]
    with psycopg.connect(dsn, connect_timeout=2) as connection:
        connection.execute("select 1")


@app.task(bind=True, name="bt.sync_invoice")
def sync_invoice(self, number: int, bad: bool = False) -> str:
    try:
        _query_database()
        if bad:
            raise ValueError("Invalid data")
    except Exception:
        _record(self, ok=False)
        raise
    _record(self, ok=True)
    return "synced"


@app.task(bind=True, name="bt.fetch_rates")
def fetch_rates(self, number: int) -> str:
    try:
        with urllib.request.urlopen(os.environ["BT_RATES_URL"], timeout=2) as response:
            response.read()
    except Exception:
        _record(self, ok=False)
        raise
    _record(self, ok=True)
    return "fetched"
