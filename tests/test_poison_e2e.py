"""Poison tasks end to end: real workers (tests/poison_app.py) on a real Redis broker and
on the machine's RabbitMQ, the sidecar as a real process on PostgreSQL + Redis.

Prefork on Redis: a task that SIGKILLs its own process and one that allocates past a small
RLIMIT_AS limit each end in the DLQ after at most poison.max_lost_runs + 1 starts, while
other tasks on the same queue keep running; a healthy task whose whole worker is killed
mid-run is redelivered once and still succeeds; a DLQ retry of the poison record after a
fix runs it once. Solo on Redis: the task kills the whole worker, the test restarts it (the
supervisor), and the task is dead-lettered within max_lost_runs + 1 starts. Prefork on
RabbitMQ: the same, the message requeued by the parent (reject_on_worker_lost); skipped
with the reason when RabbitMQ cannot run.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("celery")

import redis

from tests.celery_worker import Worker
from tests.e2e import WorkerEnv
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import ServiceError, system_rabbitmq

ROOT = Path(__file__).resolve().parent.parent
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
MAX_LOST_RUNS = 2
REDIS_BROKER = "{base}/4"  # the prefork workers'
SOLO_BROKER = "{base}/7"  # the solo worker's: its own, so no other worker takes its tasks


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


class Stack(WorkerEnv):
    """The sidecar (a real process on PostgreSQL + Redis) and the Redis database where the
    tasks of tests/poison_app.py record their runs, shared by the workers of every broker."""

    def __init__(self, tmp: Path, sidecar: SidecarProcess, runs_url: str, policies: Path):
        super().__init__(sidecar, redis.Redis.from_url(runs_url), sidecar.log, OPERATOR_TOKEN)
        self.tmp, self.runs_url, self.policies = tmp, runs_url, policies

    def worker_env(self, broker: str) -> dict[str, str]:
        return {
            "CELERY_BROKER_URL": broker,
            "RUNS_REDIS_URL": self.runs_url,
            "TASK_SIDECAR_URL": f"http://127.0.0.1:{self.sidecar.port}",
            "TASK_SIDECAR_TOKEN": HOOK_TOKEN,
            "TASK_SIDECAR_POLICIES": str(self.policies),
        }

    def record_of(self, task_id: str) -> dict[str, Any] | None:
        status, page = self.api("GET", f"/v1/dlq?limit=500&task_id={task_id}")
        assert status == 200, page
        found = [r for r in page["records"] if r["task_id"] == task_id]
        return found[0] if found else None


class Env:
    """Workers of tests/poison_app.py on one broker (`pool`, consuming `consume`), sending
    to `queue`, next to the shared sidecar. `start_worker` starts a new one (the
    supervisor restarting a dead worker)."""

    def __init__(
        self,
        stack: Stack,
        name: str,
        broker: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        queue: str = "default",
        consume: str | None = None,
    ) -> None:
        from celery import Celery

        self.stack, self.name, self.broker, self.queue = stack, name, broker, queue
        self.pool, self.concurrency, self.consume = pool, concurrency, consume or queue
        self.sidecar, self.runs = stack.sidecar, stack.runs
        self.producer = Celery(f"poison-producer-{name}", broker=broker)
        self.worker: Worker | None = None
        self.started = 0  # workers started

    def start_worker(self) -> Worker:
        self.worker = Worker(
            self.stack.tmp / f"worker-{self.name}.log",
            self.consume,
            self.stack.worker_env(self.broker),
            app="tests.poison_app",
            pool=self.pool,
            concurrency=self.concurrency,
        ).wait_ready()
        self.started += 1
        return self.worker

    def worker_died(self) -> bool:
        return self.worker is not None and self.worker.process.poll() is not None

    def send(self, name: str, *args: Any) -> str:
        return self.producer.send_task(name, args=args, queue=self.queue).id

    def starts(self, tag: str) -> list[dict[str, Any]]:
        return self.stack.runs_of(tag)

    def done(self, tag: str) -> int:
        return self.stack.done(tag)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.stack.api(method, path, body)

    def record_of(self, task_id: str) -> dict[str, Any] | None:
        return self.stack.record_of(task_id)

    def held_by_broker(self, task_id: str) -> bool:
        """The Redis broker still holds the task's message: queued, or delivered and not
        yet acknowledged (kombu's `unacked` hash, handed out again after the visibility
        timeout)."""
        broker = redis.Redis.from_url(self.broker)
        held = [*broker.lrange(self.queue, 0, -1), *broker.hvals("unacked")]
        return any(task_id.encode() in message for message in held)

    def log(self) -> str:
        path = self.stack.tmp / f"worker-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.producer.close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("poison-e2e")
    redis_service.start()
    postgres_service.start()
    base = redis_service.url.rsplit("/", 1)[0]
    runs_url, state = f"{base}/5", f"{base}/6"
    for url in (REDIS_BROKER.format(base=base), SOLO_BROKER.format(base=base), runs_url, state):
        redis.Redis.from_url(url).flushdb()
    policies = _policy(tmp / "policies.yaml")
    sidecar = SidecarProcess(
        tmp,
        HOOK_TOKEN,
        policies=str(policies),
        redis_url=state,
        postgres_dsn=postgres_service.dsn,
        requeue="celery",  # DLQ retries go to the prefork Redis broker
        celery_broker_url=REDIS_BROKER.format(base=base),
        operator_tokens=f"ops:{OPERATOR_TOKEN}",
    )
    try:
        sidecar.wait_ready()
        yield Stack(tmp, sidecar, runs_url, policies)
    finally:
        sidecar.__exit__(None, None, None)


@contextmanager
def running(env: Env) -> Iterator[Env]:
    try:
        env.start_worker()
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def env(stack: Stack, redis_service: Any) -> Iterator[Env]:
    """Prefork workers on Redis, consuming the DLQ retries' queues too."""
    broker = REDIS_BROKER.format(base=redis_service.url.rsplit("/", 1)[0])
    queues = "default,critical,high_priority,reports,maintenance"
    with running(Env(stack, "prefork", broker, consume=queues)) as e:
        yield e


@pytest.fixture
def solo_env(stack: Stack, redis_service: Any) -> Iterator[Env]:
    """One solo worker on its own Redis database: a task that kills its process kills it."""
    broker = SOLO_BROKER.format(base=redis_service.url.rsplit("/", 1)[0])
    with running(Env(stack, "solo", broker, pool="solo", concurrency=1)) as e:
        yield e


@pytest.fixture
def amqp_env(stack: Stack) -> Iterator[Env]:
    """Prefork workers on the machine's RabbitMQ, on a queue of their own."""
    try:
        broker = system_rabbitmq()
    except ServiceError as exc:
        print(f"RabbitMQ e2e skipped: {exc}")
        pytest.skip(f"RabbitMQ cannot run here: {exc}")
    queue = f"poison-{uuid.uuid4().hex[:8]}"
    with running(Env(stack, "amqp", broker, queue=queue)) as e:
        try:
            yield e
        finally:
            with e.producer.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)


def test_poison_tasks_dead_lettered_while_others_run(env: Env) -> None:
    kill_tag, oom_tag, ok_tag = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("kill", "oom", "ok"))
    kill_id = env.send("poison.kill", kill_tag)
    oom_id = env.send("poison.oom", oom_tag)
    # Queued, or running unacknowledged (acks_late); for a moment in between it is in
    # neither list (popped by the worker, not yet in `unacked`).
    wait_for(lambda: env.held_by_broker(kill_id), 5, "the broker holding the poison message")
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
    # Acknowledged, not requeued: the broker holds nothing it could hand out again.
    wait_for(lambda: not env.held_by_broker(kill_id), 10, "the poison message acknowledged")
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


def _supervised(env: Env, check: Any, timeout: float, what: str) -> Any:
    """wait_for(check), acting as the worker's supervisor: a worker that died is started
    again (a SIGKILLed solo worker takes its whole node down)."""

    def step() -> Any:
        if env.worker_died():
            env.start_worker()
        return check()

    return wait_for(step, timeout, what, interval=0.2)


def test_solo_worker_killed_by_its_poison_task(solo_env: Env) -> None:
    """`-P solo`: the task SIGKILLs the worker itself, so no WorkerLostError is reported;
    the sidecar sees each lost run through the redelivery (after the visibility timeout)
    of the restarted worker. Dead-lettered within max_lost_runs + 1 starts; a healthy task
    on the same queue runs."""
    kill_tag, ok_tag = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("solo-kill", "solo-ok"))
    kill_id = solo_env.send("poison.kill", kill_tag)
    sent = 0

    def dead_lettered() -> dict[str, Any] | None:
        nonlocal sent
        solo_env.send("poison.ok", ok_tag)
        sent += 1
        return solo_env.record_of(kill_id)

    record = _supervised(solo_env, dead_lettered, 120, "the poison task dead-lettered")
    runs = len(solo_env.starts(kill_tag))
    assert 1 <= runs <= MAX_LOST_RUNS + 1, solo_env.log()
    assert solo_env.started - 1 == runs  # each run took its worker down
    assert record["exception"]["type"] == "WorkerLostError", record
    assert record["context"]["lost_runs"] == MAX_LOST_RUNS
    assert record["context"]["starts"] <= MAX_LOST_RUNS + 1
    _supervised(solo_env, lambda: solo_env.done(ok_tag) == sent, 60, f"{sent} ok tasks")
    assert not solo_env.worker_died()  # the refused start was acknowledged, not run
    assert "not run: poison task, dead-lettered" in solo_env.log()
    assert len(solo_env.starts(kill_tag)) == runs
    assert solo_env.done(kill_tag) == 0


def test_poison_task_on_rabbitmq(amqp_env: Env) -> None:
    """Prefork on RabbitMQ: the dead child's message goes back at once (acks_late +
    reject_on_worker_lost: the parent rejects it with requeue) and is redelivered with
    `redelivered` set; dead-lettered within max_lost_runs + 1 starts while a healthy task
    on the same queue runs."""
    kill_tag, ok_tag = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("amqp-kill", "amqp-ok"))
    kill_id = amqp_env.send("poison.kill", kill_tag)
    sent = 0

    def dead_lettered() -> dict[str, Any] | None:
        nonlocal sent
        amqp_env.send("poison.ok", ok_tag)
        sent += 1
        return amqp_env.record_of(kill_id)

    record = wait_for(dead_lettered, 60, "the poison task dead-lettered", interval=0.2)
    starts = amqp_env.starts(kill_tag)
    assert 1 <= len(starts) <= MAX_LOST_RUNS + 1, amqp_env.log()
    assert all(run["redelivered"] for run in starts[1:])
    assert record["failure_type"] == "SYSTEM_OUT_OF_MEMORY", record
    assert record["rule"] == "worker-killed"
    assert "signal 9" in record["exception"]["message"]
    assert record["context"]["lost_runs"] == MAX_LOST_RUNS
    wait_for(lambda: amqp_env.done(ok_tag) == sent, 30, f"{sent} ok tasks")
    assert not amqp_env.worker_died()
    # Dead-lettered by the last WorkerLostError report, the message comes back once more:
    # its start is refused and it is acknowledged without running, a moment later.
    wait_for(lambda: "not run: poison task, dead-lettered" in amqp_env.log(), 30, amqp_env.log())
    assert len(amqp_env.starts(kill_tag)) == len(starts)
    assert amqp_env.done(kill_tag) == 0
