"""End to end: a real Celery worker (tests/celery_app.py) on a real Redis broker, the
sidecar as a real process on PostgreSQL + Redis, and tasks that fail in controlled ways.

The sidecar gets the default policies with short delays (see `_test_policy`) so the whole
module runs in well under a minute. Tests run in file order on one worker and sidecar; the
last one stops the sidecar.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("celery")

import redis

from tests.celery_worker import Worker
from tests.e2e import WorkerEnv, empty_databases
from tests.polling import wait_for
from tests.processes import SidecarProcess

ROOT = Path(__file__).resolve().parent.parent
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
QUEUES = "default,critical,high_priority,reports,maintenance"


def _test_policy(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "policies.yaml").read_text())
    policies = data["retry"]["policies"]
    policies["TRANSIENT_DATABASE"] = {
        "max_retries": 2,
        "initial_delay": "1s",
        "backoff": "exponential",
        "multiplier": 2.0,
        "max_delay": "2s",
        "jitter": "equal",  # delay in [base/2, base]
    }
    policies["TRANSIENT_NETWORK"] = {
        "max_retries": 0,
        "breaker": {"failures": 3, "open_for": "3s"},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Env(WorkerEnv):
    def __init__(self, sidecar: SidecarProcess, runs: redis.Redis, worker_log: Path) -> None:
        super().__init__(sidecar, runs, worker_log, OPERATOR_TOKEN)
        from tests import celery_app

        self.app = celery_app.app

    def send(
        self, name: str, *args: Any, queue: str = "default", kwargs: dict | None = None
    ) -> str:
        return self.app.send_task(name, args=args, kwargs=kwargs, queue=queue).id


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("celery-e2e")
    redis_service.start()
    postgres_service.start()
    broker, runs_url, state = empty_databases(redis_service.url, 1, 2, 3)
    policies = _test_policy(tmp / "policies.yaml")
    sidecar = SidecarProcess(
        tmp,
        HOOK_TOKEN,
        policies=str(policies),
        redis_url=state,
        postgres_dsn=postgres_service.dsn,
        requeue="celery",
        celery_broker_url=broker,
        operator_tokens=f"ops:{OPERATOR_TOKEN}",
    )
    worker = None
    try:
        sidecar.wait_ready()
        os.environ["CELERY_BROKER_URL"] = broker  # for the producer side in this process
        os.environ.setdefault("TASK_SIDECAR_URL", f"http://127.0.0.1:{sidecar.port}")
        worker = Worker(
            tmp / "worker.log",
            QUEUES,
            {
                "CELERY_BROKER_URL": broker,
                "RUNS_REDIS_URL": runs_url,
                "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
                "TASK_SIDECAR_TOKEN": HOOK_TOKEN,
                "TASK_SIDECAR_POLICIES": str(policies),
            },
        ).wait_ready()
        yield Env(sidecar, redis.Redis.from_url(runs_url), worker.log)
    finally:
        if worker is not None:
            worker.stop()
        sidecar.__exit__(None, None, None)
        os.environ.pop("CELERY_BROKER_URL", None)


def test_transient_db_error_retried_with_policy_delay_on_its_own_queue(env: Env) -> None:
    tag = "s1-" + uuid.uuid4().hex[:8]
    env.send("e2e.db_write", tag, 1)
    wait_for(lambda: env.done(tag), 20, env.log())
    first, second = env.runs_of(tag)
    assert (first["retries"], second["retries"]) == (0, 1)
    assert first["task_id"] == second["task_id"]
    # TRANSIENT_DATABASE: initial 1s, equal jitter → 0.5 … 1.0 s (+ worker scheduling)
    gap = second["t"] - first["t"]
    assert 0.5 <= gap <= 1.0 + 1.0, gap
    assert second["queue"] == "default"  # its own queue: the policy does not route retries


def test_permanent_validation_error_dead_lettered_once(env: Env) -> None:
    tag = "s2-" + uuid.uuid4().hex[:8]
    task_id = env.send("e2e.validate", tag)
    records = wait_for(
        lambda: [r for r in env.dlq_records("e2e.validate") if r["task_id"] == task_id], 20
    )
    assert len(env.runs_of(tag)) == 1
    (record,) = records
    assert record["failure_type"] == "PERMANENT_VALIDATION"
    assert record["category"] == "permanent"
    assert record["attempts"] == 0
    assert record["exception"]["type"] == "ValueError"
    assert "builtins.ValueError" in record["exception"]["mro"]


def test_never_clearing_error_retried_max_then_dlq_and_dlq_retry_resolves(env: Env) -> None:
    tag = "s3-" + uuid.uuid4().hex[:8]
    env.runs.set(f"fault:{tag}", 1)
    task_id = env.send("e2e.db_write", tag)
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("e2e.db_write") if r["task_id"] == task_id], 20
    )
    runs = env.runs_of(tag)
    assert [r["retries"] for r in runs] == [0, 1, 2]  # exactly max_retries (2) retries
    assert record["attempts"] == 2
    assert record["failure_type"] == "TRANSIENT_DATABASE"
    assert record["status"] == "pending"

    # 4: the fault is removed, an operator retries the record: it runs and is resolved.
    env.runs.delete(f"fault:{tag}")
    status, body = env.api("POST", f"/v1/dlq/{record['id']}/retry", {})
    assert status == 200, body
    wait_for(lambda: env.done(tag), 20, env.log())
    last = env.runs_of(tag)[-1]
    assert last["dlq_id"] == record["id"]
    wait_for(
        lambda: env.api("GET", f"/v1/dlq/{record['id']}")[1]["status"] == "resolved",
        10,
        "record resolved",
    )


def test_chain_with_a_dead_lettered_middle_link_completes_after_a_dlq_retry(env: Env) -> None:
    """a → b → c: b fails for good and is dead-lettered, the chain stops there; once the
    input is fixed, a DLQ retry of b runs b and then c, as if nothing had happened."""
    from celery import chain

    tag = "s9-" + uuid.uuid4().hex[:8]
    env.runs.set(f"fault:{tag}-b", 1)
    sig = env.app.signature
    result = chain(
        sig("e2e.db_write", args=(f"{tag}-a",), immutable=True),
        sig("e2e.parse", args=(f"{tag}-b",), immutable=True),
        sig("e2e.db_write", args=(f"{tag}-c",), immutable=True),
    ).apply_async(queue="default")
    middle = result.parent
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("e2e.parse") if r["task_id"] == middle.id], 20
    )
    assert (env.done(f"{tag}-a"), env.done(f"{tag}-c")) == (1, 0)  # stopped at b
    assert record["workflow"]["chain"][0]["args"] == [f"{tag}-c"]

    env.runs.delete(f"fault:{tag}-b")
    status, body = env.api("POST", f"/v1/dlq/{record['id']}/retry", {})
    assert status == 200, body
    wait_for(lambda: env.done(f"{tag}-c"), 20, env.log())  # the chain went on
    assert (env.done(f"{tag}-a"), env.done(f"{tag}-b"), env.done(f"{tag}-c")) == (1, 1, 1)
    [retried] = [r for r in env.runs_of(f"{tag}-b") if r["dlq_id"]]
    assert retried["task_id"] == middle.id
    wait_for(
        lambda: env.api("GET", f"/v1/dlq/{record['id']}")[1]["status"] == "resolved",
        10,
        "record resolved",
    )


def test_open_breaker_postpones_without_running_then_probe_closes(env: Env) -> None:
    tag = "s5-" + uuid.uuid4().hex[:8]
    env.runs.set(f"fault:{tag}", 1)
    for _ in range(3):  # breaker: 3 failures → open for 3 s
        env.send("e2e.fetch", tag)
    wait_for(lambda: len(env.runs_of(tag)) == 3, 20, env.log())
    opened = env.runs_of(tag)[-1]["t"]
    key = "e2e.fetch:TRANSIENT_NETWORK"

    wait_for(lambda: env.breaker_state(key) == "open", 10, "breaker open")
    env.runs.delete(f"fault:{tag}")
    postponed = env.send("e2e.fetch", tag)
    wait_for(lambda: len(env.runs_of(tag)) == 4, 20, env.log())
    probe = env.runs_of(tag)[-1]
    assert probe["task_id"] == postponed
    assert probe["retries"] == 0  # the postponement is not counted as an attempt
    assert probe["t"] >= opened + 3 - 0.5, probe["t"] - opened
    assert f"e2e.fetch[{postponed}] retry: postponed" in env.log()
    wait_for(lambda: env.breaker_state(key) == "closed", 10, "breaker closed by the probe")


def test_idempotent_task_sent_twice_runs_once(env: Env) -> None:
    tag = "s7-" + uuid.uuid4().hex[:8]
    env.send("e2e.charge", tag, 100)
    second = env.send("e2e.charge", tag, 100)
    wait_for(lambda: f"e2e.charge[{second}]: duplicate skipped" in env.log(), 20, env.log())
    assert len(env.runs_of(tag)) == 1


def test_positional_and_keyword_calls_are_one_idempotent_call(env: Env) -> None:
    """charge(tag, 100) and charge(tag=tag, amount=100): the same key, the second skipped."""
    tag = "s8-" + uuid.uuid4().hex[:8]
    env.send("e2e.charge", tag, 100)
    wait_for(lambda: env.runs_of(tag), 20, env.log())
    second = env.send("e2e.charge", kwargs={"tag": tag, "amount": 100})
    wait_for(lambda: f"e2e.charge[{second}]: duplicate skipped" in env.log(), 20, env.log())
    assert len(env.runs_of(tag)) == 1


def test_worker_reading_every_retry_queue_is_not_warned(env: Env) -> None:
    assert "queues it does not consume" not in env.log()


def test_integration_off_keeps_celery_retry_options(env: Env) -> None:
    tag = "off-" + uuid.uuid4().hex[:8]
    env.send("e2e.plain", tag)
    wait_for(lambda: len(env.runs_of(tag)) == 3, 20, env.log())  # 1 run + max_retries 2


def test_sidecar_stopped_mid_run_falls_back_locally(env: Env) -> None:
    """Runs last: it stops the sidecar."""
    tag = "s6-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    env.send("e2e.db_write", tag, 2)  # fails twice, succeeds on the 3rd run
    wait_for(lambda: len(env.runs_of(tag)) >= 1, 20, env.log())
    env.sidecar.process.kill()  # stopped mid-run: the next failure cannot reach it
    env.sidecar.process.wait(timeout=10)
    bad = "s6v-" + uuid.uuid4().hex[:8]
    env.send("e2e.validate", bad)  # permanent: dead-lettered locally, task fails
    ok = "s6ok-" + uuid.uuid4().hex[:8]
    env.send("e2e.db_write", ok)  # succeeds; its success event is buffered
    wait_for(lambda: env.done(tag) and env.done(ok) and env.runs_of(bad), 20, env.log())
    assert [r["retries"] for r in env.runs_of(tag)] == [0, 1, 2]
    assert time.monotonic() - started < 15  # no task hung on the dead sidecar
    log = env.log()
    assert log.count("sidecar unavailable") == 1, log  # logged once per outage
    # nothing raised out of the integration or the client: the only errors are the tasks'
    assert "sidecar client:" not in log
    assert "Unavailable" not in log
    outage = log.split("sidecar unavailable", 1)[1]
    assert outage.count("raised unexpected") == 1  # the validation task, dead-lettered locally
    assert "dead-lettered (local)" in log
