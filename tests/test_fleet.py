"""Several sidecar processes share breakers through one Redis."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

TOKEN = "fleet-hooks-0123456789"


@pytest.fixture
def sidecars(redis_url, postgres_dsn, tmp_path):
    """Two `task-sidecar serve` processes, one Redis, one PostgreSQL."""
    with ExitStack() as stack:
        fleet = [
            stack.enter_context(
                SidecarProcess(
                    tmp_path,
                    TOKEN,
                    policies=str(DEFAULT_POLICIES),
                    redis_url=redis_url,
                    postgres_dsn=postgres_dsn,
                )
            )
            for _ in range(2)
        ]
        yield fleet
        for sidecar in fleet:
            assert sidecar.stop() == 0, sidecar.output()


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
            status, answer = (a, b)[i % 2].call("/v1/hooks/failure", {**event, "task_id": str(i)})
            assert status == 200
            assert answer["breaker"]["state"] == "closed"
        for sidecar in (a, b):
            assert sidecar.call("/v1/hooks/start", {"task_id": "s", "task_name": task})[1]["allow"]
        status, answer = b.call("/v1/hooks/failure", {**event, "task_id": "last"})
        assert answer["breaker"]["state"] == "open"
        for sidecar in (a, b):
            status, start = sidecar.call("/v1/hooks/start", {"task_id": "s", "task_name": task})
            assert status == 200
            assert start["allow"] is False
            assert start["breaker"]["state"] == "open"

    def test_hooks_need_the_token(self, sidecars):
        a, _ = sidecars
        a.token = None
        status, problem = a.call("/v1/hooks/start", {"task_id": "s", "task_name": "x"})
        assert status == 401
        assert problem["title"] == "Unauthorized"
