"""End to end: the Node example (examples/node-bullmq/, a BullMQ worker) on a real Redis,
asking a real sidecar process (PostgreSQL + Redis) what to do, with dead-letter retries
coming back through the sidecar's webhook requeue target.

The example is copied to a temporary directory and installed there with `npm ci` (from
npm's cache when it has the packages). Without node or npm the module is skipped, saying
so. Tests run in file order on one worker and sidecar; the last one stops the sidecar.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.e2e import WorkerEnv, empty_databases
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "node-bullmq"
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
QUEUE = "tasks-e2e"

NODE, NPM = shutil.which("node"), shutil.which("npm")
if NODE is None or NPM is None:
    print("tests/test_node_bullmq_e2e.py: skipped, node and npm are not installed")
    pytest.skip("node and npm are not installed", allow_module_level=True)


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
    policies["TRANSIENT_NETWORK"] = {"max_retries": 0, "breaker": {"failures": 3, "open_for": "3s"}}
    data["retry"]["overrides"] = [
        {"task": "e2e.report", "failure_type": "*", "when_exhausted": "discard"}
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _install(tmp: Path) -> Path:
    app = tmp / "node-bullmq"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("node_modules"))
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return app


class Env(WorkerEnv):
    def __init__(self, sidecar: SidecarProcess, app: Path, redis_url: str, log: Path) -> None:
        super().__init__(sidecar, redis.Redis.from_url(redis_url), log, OPERATOR_TOKEN)
        self.app, self.redis_url, self.redis = app, redis_url, self.runs

    def send(self, name: str, *args: Any) -> str:
        done = subprocess.run(
            [NODE, "enqueue.js", name, json.dumps(list(args))],
            cwd=self.app,
            env={**os.environ, "REDIS_URL": self.redis_url, "QUEUE": QUEUE},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def failed_jobs(self) -> set[str]:
        return {m.decode() for m in self.redis.zrange(f"bull:{QUEUE}:failed", 0, -1)}

    def job_exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"bull:{QUEUE}:{job_id}"))


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("node-bullmq-e2e")
    app = _install(tmp)
    redis_service.start()
    postgres_service.start()
    jobs_url, state_url = empty_databases(redis_service.url, 4, 5)
    webhook_port = free_port()
    sidecar = SidecarProcess(
        tmp,
        HOOK_TOKEN,
        policies=str(_test_policy(tmp / "policies.yaml")),
        redis_url=state_url,
        postgres_dsn=postgres_service.dsn,
        requeue="webhook",
        webhook_url=f"http://127.0.0.1:{webhook_port}/",
        webhook_secret=WEBHOOK_SECRET,
        operator_tokens=f"ops:{OPERATOR_TOKEN}",
    )
    worker = None
    try:
        sidecar.wait_ready()
        log = tmp / "worker.log"
        worker_env = {
            **os.environ,
            "REDIS_URL": jobs_url,
            "QUEUE": QUEUE,
            "SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
            "SIDECAR_TOKEN": HOOK_TOKEN,
            "SIDECAR_FALLBACK_INITIAL_DELAY": "0.2",
            "WEBHOOK_PORT": str(webhook_port),
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [NODE, "main.js"], cwd=app, env=worker_env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(
            lambda: "ready:" in log.read_text(errors="replace") or worker.poll() is not None,
            30,
            "worker ready",
        )
        assert worker.poll() is None, log.read_text()
        yield Env(sidecar, app, jobs_url, log)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        sidecar.__exit__(None, None, None)


def test_transient_db_error_retried_after_the_decided_delay(env: Env) -> None:
    tag = "n1-" + uuid.uuid4().hex[:8]
    env.send("e2e.db_write", tag, 1)
    wait_for(lambda: env.done(tag), 20, env.log())
    first, second = env.runs_of(tag)
    assert (first["attempt"], second["attempt"]) == (0, 1)
    assert first["job_id"] == second["job_id"]  # the same job, back from the delayed set
    # TRANSIENT_DATABASE: initial 1s with equal jitter: at least 0.5 s later.
    assert second["t"] - first["t"] >= 0.5


def test_permanent_validation_error_dead_lettered_once(env: Env) -> None:
    tag = "n2-" + uuid.uuid4().hex[:8]
    job_id = env.send("e2e.validate", tag)
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("e2e.validate") if r["task_id"] == job_id], 20
    )
    assert len(env.runs_of(tag)) == 1
    assert record["failure_type"] == "PERMANENT_VALIDATION"
    assert record["rule"] == "node-parse-error"
    assert record["exception"]["type"] == "SyntaxError"
    assert record["exception"]["language"] == "node"
    assert record["args"] == [tag]
    wait_for(lambda: job_id in env.failed_jobs(), 10, "job in BullMQ's failed set")


def test_retried_max_then_dead_lettered_and_a_dlq_retry_resolves(env: Env) -> None:
    tag = "n3-" + uuid.uuid4().hex[:8]
    env.redis.set(f"fault:{tag}", 1)
    job_id = env.send("e2e.db_write", tag)
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("e2e.db_write") if r["task_id"] == job_id], 20
    )
    assert [r["attempt"] for r in env.runs_of(tag)] == [0, 1, 2]  # max_retries 2
    assert (record["attempts"], record["failure_type"]) == (2, "TRANSIENT_DATABASE")
    assert record["exception"]["code"] == "40P01"

    env.redis.delete(f"fault:{tag}")
    status, body = env.api("POST", f"/v1/dlq/{record['id']}/retry", {})
    assert status == 200, body
    wait_for(lambda: env.done(tag), 20, env.log())
    assert env.runs_of(tag)[-1]["dlq_id"] == record["id"]  # came through the webhook
    wait_for(
        lambda: env.api("GET", f"/v1/dlq/{record['id']}")[1]["status"] == "resolved",
        10,
        "record resolved",
    )


def test_open_breaker_postpones_without_running_then_the_probe_closes_it(env: Env) -> None:
    tag = "n4-" + uuid.uuid4().hex[:8]
    env.redis.set(f"fault:{tag}", 1)
    for _ in range(3):  # breaker: 3 failures → open for 3 s
        env.send("e2e.fetch", tag)
    wait_for(lambda: len(env.runs_of(tag)) == 3, 20, env.log())
    opened = env.runs_of(tag)[-1]["t"]
    key = "e2e.fetch:TRANSIENT_NETWORK"

    wait_for(lambda: env.breaker_state(key) == "open", 10, "breaker open")
    env.redis.delete(f"fault:{tag}")
    postponed = env.send("e2e.fetch", tag)
    wait_for(lambda: env.done(tag), 20, env.log())
    probe = env.runs_of(tag)[-1]
    assert probe["job_id"] == postponed
    assert probe["attempt"] == 0  # a postponement is not an attempt
    assert probe["t"] >= opened + 3 - 0.5
    assert f"e2e.fetch[{postponed}] postponed" in env.log()
    wait_for(lambda: env.breaker_state(key) == "closed", 10, "breaker closed by the probe")


def test_discarded_failure_leaves_no_job_and_no_dlq_record(env: Env) -> None:
    tag = "n5-" + uuid.uuid4().hex[:8]
    job_id = env.send("e2e.report", tag)
    wait_for(lambda: f"e2e.report[{job_id}] discarded" in env.log(), 20, env.log())
    wait_for(lambda: not env.job_exists(job_id), 10, "discarded job removed")
    assert job_id not in env.failed_jobs()
    assert not [r for r in env.dlq_records("e2e.report") if r["task_id"] == job_id]
    assert len(env.runs_of(tag)) == 1


def test_sidecar_stopped_the_worker_falls_back_to_its_local_default(env: Env) -> None:
    """Runs last: it stops the sidecar."""
    env.sidecar.process.kill()
    env.sidecar.process.wait(timeout=10)
    tag = "n6-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    job_id = env.send("e2e.db_write", tag, 1)  # fails once, then succeeds
    wait_for(lambda: env.done(tag), 20, env.log())
    assert [r["attempt"] for r in env.runs_of(tag)] == [0, 1]
    assert f"e2e.db_write[{job_id}] retry in" in env.log()
    assert "(default)" in env.log()
    assert time.monotonic() - started < 15  # nothing waited on the dead sidecar
