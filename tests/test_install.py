"""The user's path: the wheel, in a clean virtualenv, with only the extra docs/celery.md
names (`task-sidecar[celery]`), running the docs' Celery app with a real worker that
consumes only its own queue, a real `task-sidecar serve` (embedded stores, Celery
requeue) and the operator CLI as printed.

Nothing here imports the checkout: every process runs from the clean venv, in a
directory outside the repository. Slow (building and installing takes ~1 min), so the
venv is made once per session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.polling import wait_for
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
HOOKS = "hooks:" + "h" * 24
OPERATOR = "ops:" + "o" * 24

# The docs/celery.md app (section 1), with the broker and the failures the test needs.
APP = '''
import os
import redis
from celery import Celery
from sidecar.integrations.celery import install

app = Celery("proj", broker=os.environ["BROKER"])
install(app)  # TASK_SIDECAR_URL, TASK_SIDECAR_TOKEN, TASK_SIDECAR_POLICIES
runs = redis.Redis.from_url(os.environ["BROKER"])


class DeadlockDetected(Exception):
    """Named like psycopg's: TRANSIENT_DATABASE."""


def _run(tag):
    return runs.rpush("runs:" + tag, 1)


@app.task(bind=True)
def write(self, tag, fail_times=0):
    if _run(tag) <= fail_times:
        raise DeadlockDetected("deadlock detected")
    runs.rpush("done:" + tag, 1)


@app.task(bind=True)
def parse(self, tag):
    _run(tag)
    if runs.exists("fault:" + tag):
        raise ValueError("Invalid data")
    runs.rpush("done:" + tag, 1)


@app.task(bind=True, idempotent=True)
def charge(self, order_id, amount=10):
    _run(order_id)
'''


class Installed:
    def __init__(self, venv: Path, work: Path, broker: str, env: dict[str, str]) -> None:
        self.venv, self.work, self.broker, self.env = venv, work, broker, env
        self.runs = redis.Redis.from_url(broker)

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [self.bin("task-sidecar"), *args],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def send(self, name: str, *args: Any, **kwargs: Any) -> str:
        code = (
            "import json, sys; from proj import app; "
            "r = app.send_task(sys.argv[1], args=json.loads(sys.argv[2]), "
            "kwargs=json.loads(sys.argv[3]), **json.loads(sys.argv[4])); print(r.id)"
        )
        options = kwargs.pop("options", {})
        done = subprocess.run(
            [self.bin("python"), "-c", code, name, *map(json.dumps, (args, kwargs, options))],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    def dead_letters(self, task_id: str) -> list[dict[str, Any]]:
        listed = json.loads(self.cli("dlq", "list", "-o", "json"))["records"]
        return [r for r in listed if r["task_id"] == task_id]

    def count(self, key: str) -> int:
        return self.runs.llen(key)


def _venv(tmp: Path) -> Path:
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ROOT],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("task_sidecar-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", f"task-sidecar[celery] @ {wheel.as_uri()}"],
        check=True,
        timeout=600,
    )
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, redis_service: Any) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("install")
    venv = _venv(tmp)
    work = tmp / "work"
    (work / "proj").mkdir(parents=True)
    (work / "proj" / "__init__.py").write_text("from .celery import app\n")
    (work / "proj" / "celery.py").write_text(textwrap.dedent(APP))
    redis_service.start()
    broker = redis_service.url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp),
        "BROKER": broker,
        "TASK_SIDECAR_URL": f"http://127.0.0.1:{port}",
        "TASK_SIDECAR_TOKEN": HOOKS.split(":", 1)[1],
        "TASK_SIDECAR_HOOK_TOKENS": HOOKS,
        "TASK_SIDECAR_OPERATOR_TOKENS": OPERATOR,
        "TASK_SIDECAR_REQUEUE": "celery",
        "TASK_SIDECAR_CELERY_BROKER_URL": broker,
        "TASK_SIDECAR_DATA_DIR": str(tmp / "data"),
    }
    worker_log = tmp / "worker.log"
    with open(tmp / "sidecar.log", "wb") as out, open(worker_log, "wb") as worker_out:
        sidecar = subprocess.Popen(
            [venv / "bin" / "task-sidecar", "serve", "--port", str(port)],
            env=env,
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [venv / "bin" / "celery", "-A", "proj", "worker", "-P", "solo", "-Q", "celery", *QUIET],
            env=env,
            cwd=work,
            stdout=worker_out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "sidecar up")
        wait_for(lambda: b"ready." in worker_log.read_bytes(), 30, "worker ready")
        yield Installed(venv, work, broker, env | {"TASK_SIDECAR_TOKEN": OPERATOR[4:]})
    finally:
        for process in (worker, sidecar):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_installed_package_is_not_the_checkout(installed: Installed) -> None:
    where = subprocess.run(
        [installed.bin("python"), "-c", "import sidecar; print(sidecar.__file__)"],
        cwd=installed.work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed.venv) in where
    assert str(ROOT) not in where


def test_a_transient_failure_is_retried_on_the_workers_own_queue(installed: Installed) -> None:
    tag = uuid.uuid4().hex[:8]
    installed.send("proj.celery.write", tag, 1)
    wait_for(lambda: installed.count(f"done:{tag}"), 60, "the retry ran")
    assert installed.count(f"runs:{tag}") == 2


def test_a_dead_letter_retried_from_the_cli_by_its_listed_id_runs(installed: Installed) -> None:
    tag = uuid.uuid4().hex[:8]
    installed.runs.set(f"fault:{tag}", 1)
    task_id = installed.send("proj.celery.parse", tag)
    listed = wait_for(
        lambda: installed.dead_letters(task_id),
        30,
        "dead-lettered",
    )
    installed.runs.delete(f"fault:{tag}")
    short = listed[0]["id"][:8]  # as `dlq list` prints it
    installed.cli("dlq", "retry", short)
    wait_for(lambda: installed.count(f"done:{tag}"), 30, "the DLQ retry ran")
    shown = wait_for(
        lambda: (
            (r := json.loads(installed.cli("dlq", "show", short, "-o", "json")))["status"]
            == "resolved"
            and r
        ),
        30,
        "resolved",
    )
    assert shown["dlq_retries"] == 1


def test_a_chain_goes_on_after_its_middle_link_is_retried(installed: Installed) -> None:
    tag = uuid.uuid4().hex[:8]
    installed.runs.set(f"fault:{tag}-b", 1)
    code = textwrap.dedent(
        f"""
        from celery import chain
        from proj import app
        s = app.signature
        r = chain(s("proj.celery.write", args=("{tag}-a",), immutable=True),
                  s("proj.celery.parse", args=("{tag}-b",), immutable=True),
                  s("proj.celery.write", args=("{tag}-c",), immutable=True)).apply_async()
        print(r.parent.id)
        """
    )
    middle = subprocess.run(
        [installed.bin("python"), "-c", code],
        env=installed.env,
        cwd=installed.work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    records = wait_for(
        lambda: installed.dead_letters(middle),
        30,
        "middle link dead-lettered",
    )
    assert installed.count(f"done:{tag}-c") == 0
    installed.runs.delete(f"fault:{tag}-b")
    installed.cli("dlq", "retry", records[0]["id"])
    wait_for(lambda: installed.count(f"done:{tag}-c"), 30, "the chain went on")


def test_positional_and_keyword_calls_are_one_idempotent_call(installed: Installed) -> None:
    order = uuid.uuid4().hex[:8]
    installed.send("proj.celery.charge", order, 10)
    wait_for(lambda: installed.count(f"runs:{order}"), 30, "charged once")
    installed.send("proj.celery.charge", order_id=order, amount=10)
    installed.send("proj.celery.write", f"{order}-after")  # runs after the duplicate
    wait_for(lambda: installed.count(f"done:{order}-after"), 30, "the queue moved on")
    # One solo worker takes them in order: the duplicate was settled before `write` ran.
    assert installed.count(f"runs:{order}") == 1
