"""End to end: a real RQ worker (`rq worker --worker-class sidecar.integrations.rq.SidecarWorker
--with-scheduler`, jobs in tests/rq_app.py) on a real Redis, the sidecar as a real process
on PostgreSQL + Redis, and the RQ requeue webhook as a real process for DLQ retries. The
scenarios are those of tests/test_celery_e2e.py.

Tests run in file order on one worker and sidecar; the last one stops the sidecar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import WorkerEnv, empty_databases
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port

rq = pytest.importorskip("rq")

ROOT = Path(__file__).resolve().parent.parent
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
QUEUES = ["default", "critical", "high_priority", "reports", "maintenance"]


def _test_policy(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "policies.yaml").read_text())
    policies = data["retry"]["policies"]
    policies["TRANSIENT_DATABASE"] = {
        "max_retries": 2,
        "initial_delay": "1s",
        "backoff": "exponential",
        "multiplier": 2.0,
        "max_delay": "2s",
        "jitter": "equal",
    }
    policies["TRANSIENT_NETWORK"] = {"max_retries": 0, "breaker": {"failures": 3, "open_for": "3s"}}
    data["retry"]["overrides"] = [
        {"task": "tests.rq_app.report", "failure_type": "*", "when_exhausted": "discard"}
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Env(WorkerEnv):
    def __init__(self, sidecar: SidecarProcess, jobs_url: str, runs_url: str, log: Path) -> None:
        super().__init__(sidecar, redis.Redis.from_url(runs_url), log, OPERATOR_TOKEN)
        self.jobs = redis.Redis.from_url(jobs_url)

    def send(self, name: str, *args: Any, queue: str = "default", **options: Any) -> str:
        from sidecar.integrations.rq import SidecarJob

        q = rq.Queue(queue, connection=self.jobs, job_class=SidecarJob)
        return q.enqueue(f"tests.rq_app.{name}", *args, **options).id

    def failed_ids(self, queue: str = "default") -> list[str]:
        return rq.Queue(queue, connection=self.jobs).failed_job_registry.get_job_ids()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rq-e2e")
    redis_service.start()
    postgres_service.start()
    jobs_url, runs_url, state_url = empty_databases(redis_service.url, 6, 7, 8)
    policies = _test_policy(tmp / "policies.yaml")
    webhook_port = free_port()
    sidecar = SidecarProcess(
        tmp,
        HOOK_TOKEN,
        policies=str(policies),
        redis_url=state_url,
        postgres_dsn=postgres_service.dsn,
        requeue="webhook",
        webhook_url=f"http://127.0.0.1:{webhook_port}/",
        webhook_secret=WEBHOOK_SECRET,
        operator_tokens=f"ops:{OPERATOR_TOKEN}",
    )
    worker = webhook = None
    try:
        sidecar.wait_ready()
        log = tmp / "worker.log"
        child_env = {
            **os.environ,
            "RUNS_REDIS_URL": runs_url,
            "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
            "TASK_SIDECAR_TOKEN": HOOK_TOKEN,
            "TASK_SIDECAR_POLICIES": str(policies),
            "TASK_SIDECAR_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONPATH": str(ROOT),
        }
        rq_cli = str(Path(sys.executable).with_name("rq"))
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [rq_cli, "worker", "--url", jobs_url, "--with-scheduler",
                 "--worker-class", "sidecar.integrations.rq.SidecarWorker", *QUEUES],
                cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            webhook = subprocess.Popen(
                [sys.executable, "-m", "sidecar.integrations.rq", "webhook",
                 "--redis-url", jobs_url, "--port", str(webhook_port)],
                cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def ready() -> bool:
            text = log.read_text(errors="replace")
            up = "Listening on" in text and "requeue webhook listening" in text
            return up or worker.poll() is not None or webhook.poll() is not None

        wait_for(ready, 30, "worker and webhook ready")
        assert worker.poll() is None, log.read_text()
        assert webhook.poll() is None, log.read_text()
        yield Env(sidecar, jobs_url, runs_url, log)
    finally:
        _stop(worker)
        _stop(webhook)
        sidecar.__exit__(None, None, None)


def test_transient_db_error_retried_after_the_decided_delay(env: Env) -> None:
    tag = "r1-" + uuid.uuid4().hex[:8]
    env.send("db_write", tag, 1)
    wait_for(lambda: env.done(tag), 20, env.log())
    first, second = env.runs_of(tag)
    assert (first["attempt"], second["attempt"]) == (0, 1)
    assert first["job_id"] == second["job_id"]
    # TRANSIENT_DATABASE: initial 1s with equal jitter: at least 0.5 s later.
    assert second["t"] - first["t"] >= 0.5


def test_permanent_validation_error_dead_lettered_once(env: Env) -> None:
    tag = "r2-" + uuid.uuid4().hex[:8]
    job_id = env.send("validate", tag)
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("tests.rq_app.validate") if r["task_id"] == job_id],
        20,
    )
    assert len(env.runs_of(tag)) == 1
    assert record["failure_type"] == "PERMANENT_VALIDATION"
    assert record["attempts"] == 0
    assert record["exception"]["type"] == "ValueError"
    wait_for(lambda: job_id in env.failed_ids(), 10, "job in RQ's FailedJobRegistry")


def test_never_clearing_error_retried_max_then_dlq_and_dlq_retry_resolves(env: Env) -> None:
    tag = "r3-" + uuid.uuid4().hex[:8]
    env.runs.set(f"fault:{tag}", 1)
    job_id = env.send("db_write", tag)
    (record,) = wait_for(
        lambda: [r for r in env.dlq_records("tests.rq_app.db_write") if r["task_id"] == job_id],
        30,
    )
    assert [r["attempt"] for r in env.runs_of(tag)] == [0, 1, 2]  # exactly max_retries (2)
    assert (record["attempts"], record["failure_type"]) == (2, "TRANSIENT_DATABASE")

    env.runs.delete(f"fault:{tag}")
    status, body = env.api("POST", f"/v1/dlq/{record['id']}/retry", {})
    assert status == 200, body
    wait_for(lambda: env.done(tag), 20, env.log())
    last = env.runs_of(tag)[-1]
    assert last["dlq_id"] == record["id"]  # came back through the RQ webhook
    wait_for(
        lambda: env.api("GET", f"/v1/dlq/{record['id']}")[1]["status"] == "resolved",
        10,
        "record resolved",
    )


def test_open_breaker_postpones_without_running_then_probe_closes(env: Env) -> None:
    tag = "r5-" + uuid.uuid4().hex[:8]
    env.runs.set(f"fault:{tag}", 1)
    for _ in range(3):
        env.send("fetch", tag)
    wait_for(lambda: len(env.runs_of(tag)) == 3, 20, env.log())
    opened = env.runs_of(tag)[-1]["t"]
    key = "tests.rq_app.fetch:TRANSIENT_NETWORK"

    wait_for(lambda: env.breaker_state(key) == "open", 10, "breaker open")
    env.runs.delete(f"fault:{tag}")
    postponed = env.send("fetch", tag)
    wait_for(lambda: env.done(tag), 20, env.log())
    probe = env.runs_of(tag)[-1]
    assert probe["job_id"] == postponed
    assert probe["attempt"] == 0  # the postponement is not counted as an attempt
    assert probe["t"] >= opened + 3 - 0.5
    assert f"tests.rq_app.fetch[{postponed}]: postponed" in env.log()
    wait_for(lambda: env.breaker_state(key) == "closed", 10, "breaker closed by the probe")


def test_idempotent_job_sent_twice_runs_once(env: Env) -> None:
    tag = "r7-" + uuid.uuid4().hex[:8]
    env.send("charge", tag, 100)
    second = env.send("charge", tag, 100)
    wait_for(lambda: f"tests.rq_app.charge[{second}]: duplicate skipped" in env.log(), 20)
    assert len(env.runs_of(tag)) == 1
    # The integration names the job's function in its claims: the duplicate is counted
    # under that task.
    scraped = env.metrics()
    hits = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "task_sidecar_idempotency_checks_total"
        and sample.labels == {"task": "tests.rq_app.charge", "scope": "global", "result": "hit"}
    ]
    assert hits == [1.0]


def test_discarded_failure_is_deleted_and_not_dead_lettered(env: Env) -> None:
    tag = "r8-" + uuid.uuid4().hex[:8]
    job_id = env.send("report", tag)
    wait_for(lambda: f"tests.rq_app.report[{job_id}]: discarded" in env.log(), 20, env.log())
    wait_for(lambda: not env.jobs.exists(f"rq:job:{job_id}"), 10, "discarded job deleted")
    assert job_id not in env.failed_ids()
    assert not [r for r in env.dlq_records("tests.rq_app.report") if r["task_id"] == job_id]


def test_integration_off_keeps_rq_retry_options(env: Env) -> None:
    tag = "off-" + uuid.uuid4().hex[:8]
    env.send("plain", tag, meta={"sidecar": False}, retry=rq.Retry(max=2))
    wait_for(lambda: len(env.runs_of(tag)) == 3, 20, env.log())  # 1 run + RQ's 2 retries


def test_sidecar_stopped_mid_run_falls_back_locally(env: Env) -> None:
    """Runs last: it stops the sidecar."""
    tag = "r6-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    env.send("db_write", tag, 2)  # fails twice, succeeds on the 3rd run
    wait_for(lambda: len(env.runs_of(tag)) >= 1, 20, env.log())
    env.sidecar.process.kill()
    env.sidecar.process.wait(timeout=10)
    bad = "r6v-" + uuid.uuid4().hex[:8]
    env.send("validate", bad)  # permanent: dead-lettered locally from the policy file
    wait_for(lambda: env.done(tag) and env.runs_of(bad), 30, env.log())
    assert [r["attempt"] for r in env.runs_of(tag)] == [0, 1, 2]
    assert time.monotonic() - started < 25  # no job hung on the dead sidecar
    wait_for(lambda: "dead-lettered (local)" in env.log(), 10, env.log())
    assert "sidecar client:" not in env.log()
