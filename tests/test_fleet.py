"""Several sidecar processes share breakers through one Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from .conftest import DEFAULT_POLICIES
from .services import free_port

TOKEN = "fleet-hooks-0123456789"


def call(port: int, path: str, body: object | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def sidecars(redis_url, postgres_dsn, tmp_path):
    """Two `task-sidecar serve` processes on their own ports, one Redis, one PostgreSQL."""
    processes, ports = [], []
    for i in range(2):
        port = free_port()
        env = {
            **os.environ,
            "TASK_SIDECAR_POLICIES": str(DEFAULT_POLICIES),
            "TASK_SIDECAR_REDIS_URL": redis_url,
            "TASK_SIDECAR_POSTGRES_DSN": postgres_dsn,
            "TASK_SIDECAR_HOOK_TOKENS": f"worker:{TOKEN}",
            "TASK_SIDECAR_PORT": str(port),
            "TASK_SIDECAR_DATA_DIR": str(tmp_path / f"s{i}"),
        }
        with open(tmp_path / f"s{i}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sidecar.cli", "serve"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        ports.append(port)
    deadline = time.monotonic() + 30
    for process, port in zip(processes, ports, strict=True):
        while True:
            try:
                if call(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / f"s{ports.index(port)}.log").read_text()
            assert time.monotonic() < deadline, "sidecar did not become ready"
            time.sleep(0.05)
    yield ports
    for process in processes:
        process.terminate()
    for process in processes:
        assert process.wait(timeout=20) == 0


class TestSharedBreakers:
    """A breaker opened through failures sent to either sidecar is open for both."""

    def test_threshold_crossed_across_two_processes(self, sidecars):
        a, b = sidecars
        task = f"fleet.task_{time.monotonic_ns()}"
        event = {
            "task_name": task,
            "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
        }
        for i in range(9):  # the threshold is 10 failures within 5 minutes
            status, answer = call((a, b)[i % 2], "/v1/hooks/failure", {**event, "task_id": str(i)})
            assert status == 200
            assert answer["breaker"]["state"] == "closed"
        for port in (a, b):
            assert call(port, "/v1/hooks/start", {"task_id": "s", "task_name": task})[1]["allow"]
        status, answer = call(b, "/v1/hooks/failure", {**event, "task_id": "last"})
        assert answer["breaker"]["state"] == "open"
        for port in (a, b):
            status, start = call(port, "/v1/hooks/start", {"task_id": "s", "task_name": task})
            assert status == 200
            assert start["allow"] is False
            assert start["breaker"]["state"] == "open"
