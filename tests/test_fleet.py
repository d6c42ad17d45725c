"""Several sidecar processes share breakers through one Redis, or one Redis Cluster."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import pytest

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

TOKEN = "fleet-hooks-0123456789"
VIEWER = "fleet-viewer-0123456789"


def fleet_of(n, tmp_path, redis_url, postgres_dsn, **settings):
    """`n` `task-sidecar serve` processes on one Redis (or cluster) and one PostgreSQL."""
    with ExitStack() as stack:
        # Started together, then waited for: the three start-ups overlap.
        fleet = [
            SidecarProcess(
                tmp_path,
                TOKEN,
                policies=str(DEFAULT_POLICIES),
                redis_url=redis_url,
                postgres_dsn=postgres_dsn,
                **settings,
            )
            for _ in range(n)
        ]
        for sidecar in fleet:
            stack.enter_context(sidecar)
        yield fleet
        for sidecar in fleet:
            assert sidecar.stop() == 0, sidecar.output()


@pytest.fixture
def sidecars(redis_url, postgres_dsn, tmp_path):
    """Two sidecars, one Redis, one PostgreSQL."""
    yield from fleet_of(2, tmp_path, redis_url, postgres_dsn)


@pytest.fixture
def cluster_fleet(redis_cluster_service, postgres_dsn, tmp_path):
    """Three sidecars on one 3-master Redis Cluster and one PostgreSQL."""
    yield from fleet_of(
        3, tmp_path, redis_cluster_service.url, postgres_dsn, viewer_tokens=f"tests:{VIEWER}"
    )


def failures_until_open(fleet, task):
    """Ten failures (the default threshold within 5 minutes) sent round the fleet; the
    breaker stays closed until the tenth."""
    event = {
        "task_name": task,
        "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
    }
    for i in range(10):
        status, answer = fleet[i % len(fleet)].call(
            "/v1/hooks/failure", {**event, "task_id": str(i)}
        )
        assert status == 200, answer
        assert answer["breaker"]["state"] == ("open" if i == 9 else "closed")


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
            answer = sidecar.call("/v1/hooks/start", {"task_id": "s", "task_name": task})
            assert answer[1]["allow"], answer
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


class TestClusterFleet:
    """Three sidecars on a Redis Cluster act as one: breakers and claims are fleet-wide."""

    def test_a_breaker_opened_through_one_refuses_starts_on_all(self, cluster_fleet):
        task = f"fleet.cluster_{time.monotonic_ns()}"
        # One task id per start: starts that never end are how poison tasks are found.
        for i, sidecar in enumerate(cluster_fleet):
            answer = sidecar.call("/v1/hooks/start", {"task_id": f"s{i}", "task_name": task})
            assert answer[1]["allow"], answer

        failures_until_open(cluster_fleet[:1], task)  # all ten through the first

        for i, sidecar in enumerate(cluster_fleet):
            body = {"task_id": f"t{i}", "task_name": task}
            status, start = sidecar.call("/v1/hooks/start", body)
            assert status == 200
            assert start["allow"] is False
            assert start["breaker"]["state"] == "open"
        for sidecar in cluster_fleet:  # the action API's listing reads every breaker's key
            sidecar.token = VIEWER
        states = {
            sidecar.port: {
                b["key"]: b["state"] for b in sidecar.call("/v1/breakers")[1]["breakers"]
            }
            for sidecar in cluster_fleet
        }
        for listing in states.values():
            assert listing[f"{task}:TRANSIENT_DATABASE"] == "open"

    def test_concurrent_claims_through_three_sidecars_have_one_winner(self, cluster_fleet):
        for round_ in range(5):  # several keys: several slots, so several masters
            key = f"payment-{time.monotonic_ns()}-{round_}"
            callers = [sidecar for sidecar in cluster_fleet for _ in range(8)]
            answers = claim_together(callers, {"key": key, "scope": "global", "ttl_seconds": 600})

            assert [status for status, _ in answers] == [200] * len(callers)
            winners = [answer for _, answer in answers if answer["claimed"]]
            assert len(winners) == 1, answers
            assert {answer["state"] for _, answer in answers if not answer["claimed"]} == {
                "running"
            }


def claim_together(callers, body):
    """One claim of `body` per caller, all released at once by a barrier."""
    barrier = threading.Barrier(len(callers))
    answers: list[tuple[int, dict]] = []

    def claim(sidecar):
        barrier.wait()
        answers.append(sidecar.call("/v1/idempotency/claim", body))

    threads = [threading.Thread(target=claim, args=(sidecar,)) for sidecar in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers
