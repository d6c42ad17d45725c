"""Poison tasks end to end: real prefork workers (tests/poison_app.py) on a real Redis
broker, the sidecar as a real process on PostgreSQL + Redis.

A task that SIGKILLs its own process and one that allocates past a small RLIMIT_AS limit
each end in the DLQ after at most poison.max_lost_runs + 1 starts, while other tasks on
the same queue keep running; a healthy task whose whole worker is killed mid-run is
redelivered once and still succeeds; a DLQ retry of the poison record after a fix runs it
once.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("celery")

import redis

from tests.celery_worker import Worker
from tests.polling import wait_for
from tests.processes import SidecarProcess

ROOT = Path(__file__).resolve().parent.parent
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
MAX_LOST_RUNS = 2


def _policy(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "policies.yaml").read_text())
    data["poison"] = {"max_lost_runs": MAX_LOST_RUNS, "window": "1h"}
    data["retry"]["policies"]["SYSTEM_OUT_OF_MEMORY"] = {
        "max_retries": 1,
        "initial_delay": "0.5s",
        "backoff": "constant",
        "max_delay": "1s",
        "jitter": "none",
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Env:
    def __init__(self, tmp: Path, sidecar: SidecarProcess, runs: redis.Redis, worker_env):
        from tests import poison_app

        self.tmp, self.sidecar, self.runs, self.worker_env = tmp, sidecar, runs, worker_env
        self.app = poison_app.app
        self.worker: Worker | None = None

    def start_worker(self) -> Worker:
        self.worker = Worker(
            self.tmp / "worker.log",
            "default,critical,high_priority,reports,maintenance",  # DLQ retries' queues too
            self.worker_env,
            app="tests.poison_app",
            pool="prefork",
            concurrency=2,
        ).wait_ready()
        return self.worker

    def send(self, name: str, *args: Any) -> str:
        return self.app.send_task(name, args=args, queue="default").id

    def starts(self, tag: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.runs.lrange(f"runs:{tag}", 0, -1)]

    def done(self, tag: str) -> int:
        return self.runs.llen(f"done:{tag}")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.sidecar.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {OPERATOR_TOKEN}",
                "Content-Type": "application/json",
            },
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def record_of(self, task_id: str) -> dict[str, Any] | None:
        status, page = self.api("GET", "/v1/dlq?limit=500")
        assert status == 200, page
        found = [r for r in page["records"] if r["task_id"] == task_id]
        return found[0] if found else None

    def log(self) -> str:
        return (self.tmp / "worker.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("poison-e2e")
    redis_service.start()
    postgres_service.start()
    base = redis_service.url.rsplit("/", 1)[0]
    broker, runs_url, state = f"{base}/4", f"{base}/5", f"{base}/6"
    for url in (broker, runs_url, state):
        redis.Redis.from_url(url).flushdb()
    policies = _policy(tmp / "policies.yaml")
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
    e = None
    try:
        sidecar.wait_ready()
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ.setdefault("TASK_SIDECAR_URL", f"http://127.0.0.1:{sidecar.port}")
        worker_env = {
            "CELERY_BROKER_URL": broker,
            "RUNS_REDIS_URL": runs_url,
            "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
            "TASK_SIDECAR_TOKEN": HOOK_TOKEN,
            "TASK_SIDECAR_POLICIES": str(policies),
        }
        e = Env(tmp, sidecar, redis.Redis.from_url(runs_url), worker_env)
        e.start_worker()
        yield e
    finally:
        if e is not None and e.worker is not None:
            e.worker.stop()
        sidecar.__exit__(None, None, None)
        os.environ.pop("CELERY_BROKER_URL", None)


def test_poison_tasks_dead_lettered_while_others_run(env: Env) -> None:
    kill_tag, oom_tag, ok_tag = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("kill", "oom", "ok"))
    kill_id = env.send("poison.kill", kill_tag)
    oom_id = env.send("poison.oom", oom_tag)
    sent = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        env.send("poison.ok", ok_tag)
        sent += 1
        if env.record_of(kill_id) and env.record_of(oom_id):
            break
        time.sleep(0.2)
    killed, oom = env.record_of(kill_id), env.record_of(oom_id)
    assert killed is not None, env.log()
    assert oom is not None, env.log()
    assert len(env.starts(kill_tag)) <= MAX_LOST_RUNS + 1
    assert len(env.starts(oom_tag)) <= MAX_LOST_RUNS + 1
    assert killed["failure_type"] == "SYSTEM_OUT_OF_MEMORY", killed
    assert killed["rule"] == "worker-killed"
    assert "signal 9" in killed["exception"]["message"]
    assert killed["context"]["lost_runs"] == MAX_LOST_RUNS
    assert killed["context"]["lost_run_hosts"]
    assert oom["failure_type"] == "SYSTEM_OUT_OF_MEMORY", oom
    # Every other task on the queue ran throughout.
    wait_for(lambda: env.done(ok_tag) == sent, 20, f"{sent} ok tasks")
    time.sleep(4)  # past the visibility timeout: nothing is handed out again
    assert len(env.starts(kill_tag)) <= MAX_LOST_RUNS + 1
    assert env.done(kill_tag) == 0

    # The fix, then a DLQ retry: it runs once and the record is resolved.
    env.runs.set(f"fixed:{kill_tag}", 1)
    before = len(env.starts(kill_tag))
    status, body = env.api("POST", f"/v1/dlq/{killed['id']}/retry", {})
    assert status == 200, body
    wait_for(lambda: env.done(kill_tag), 20, "the DLQ retry ran")
    assert len(env.starts(kill_tag)) == before + 1
    wait_for(
        lambda: env.api("GET", f"/v1/dlq/{killed['id']}")[1]["status"] == "resolved",
        10,
        "record resolved",
    )
    status, text = 0, ""
    with urllib.request.urlopen(f"http://127.0.0.1:{env.sidecar.port}/metrics") as r:
        status, text = r.status, r.read().decode()
    lost = [line for line in text.splitlines() if line.startswith("task_sidecar_lost_runs_total")]
    assert 'task_sidecar_lost_runs_total{task="poison.kill"} 2.0' in lost, lost


def test_healthy_task_redelivered_once_still_succeeds(env: Env) -> None:
    tag = f"slow-{uuid.uuid4().hex[:6]}"
    task_id = env.send("poison.slow", tag)
    wait_for(lambda: env.starts(tag), 15, "first start")
    assert env.worker is not None
    env.worker.kill()  # the node dies mid-run; its supervisor starts it again
    env.start_worker()
    wait_for(lambda: env.done(tag), 30, "the redelivered run")
    starts = env.starts(tag)
    assert len(starts) == 2
    assert starts[1]["redelivered"] is True
    assert env.record_of(task_id) is None
