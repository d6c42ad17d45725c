"""Redis goes away and comes back: hooks keep being answered from in-process state,
claims go to PostgreSQL, readiness says so, and the fleet state resumes without a restart."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.store.fallback import FallbackState, Outage
from sidecar.store.redis import RedisStore

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess
from .services import free_port

TOKEN = "faults-hooks-0123456789"


def deadlock(task: str, task_id: str) -> dict:
    return {
        "task_id": task_id,
        "task_name": task,
        "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
    }


class Counting:
    """A real RedisStore, counting the calls that reach it."""

    def __init__(self, store: RedisStore) -> None:
        self.store, self.calls, self.name = store, 0, store.name

    def __getattr__(self, name):
        method = getattr(self.store, name)

        async def call(*args):
            self.calls += 1
            return await method(*args)

        return call


class TestFallbackState:
    async def test_a_dead_redis_is_tried_once_per_interval(self):
        now = [0.0]
        shared = Counting(RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2))
        state = FallbackState(shared, Outage("redis", retry_interval=1.0, clock=lambda: now[0]))  # type: ignore[arg-type]
        try:
            assert await state.snapshot("b", "o") == (None, None)
            await state.remember_failure("t1", "TRANSIENT_DATABASE", 60)
            assert await state.last_failure("t1") == "TRANSIENT_DATABASE"
            assert state.degraded
            assert shared.calls == 1  # the rest stayed local
            now[0] = 1.5
            assert await state.last_failure("t1") == "TRANSIENT_DATABASE"
            assert shared.calls == 2  # one probe after the interval
            with pytest.raises(StoreUnavailable, match="redis"):
                await state.ping()  # readiness reports the shared store
        finally:
            await state.close()

    async def test_recovers_and_drops_the_local_copy(self, redis_service, redis_url):
        now = [0.0]
        state = FallbackState(
            RedisStore(redis_url), Outage("redis", retry_interval=1.0, clock=lambda: now[0])
        )
        key = f"k-{uuid.uuid4()}"
        try:
            redis_service.stop()
            await state.remember_failure(key, "LOCAL", 60)
            assert state.degraded
            redis_service.start()
            now[0] = 2.0
            assert await state.last_failure(key) is None  # Redis again: its (empty) view
            assert not state.degraded
            await state.remember_failure(key, "SHARED", 60)
            other = RedisStore(redis_url)
            assert await other.last_failure(key) == "SHARED"
            await other.close()
        finally:
            redis_service.start()
            await state.close()


def get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def backend_up(port: int) -> float | None:
    found = re.search(
        r'^task_sidecar_backend_up\{backend="redis"\} (\S+)$', get_text(port, "/metrics"), re.M
    )
    return float(found.group(1)) if found else None


def test_redis_outage_and_return(redis_service, redis_url, postgres_dsn, tmp_path):
    settings = {
        "policies": str(DEFAULT_POLICIES),
        "redis_url": redis_url,
        "postgres_dsn": postgres_dsn,
        "poll_interval": "0.2",
    }
    with (
        SidecarProcess(tmp_path, TOKEN, **settings) as a,
        SidecarProcess(tmp_path, TOKEN, **settings) as b,
    ):
        outage_task = f"faults.outage_{uuid.uuid4().hex[:8]}"
        try:
            redis_service.stop()
            slowest, states = 0.0, []
            for i in range(20):
                began = time.perf_counter()
                status, answer = a.call("/v1/hooks/failure", deadlock(outage_task, f"o{i}"))
                slowest = max(slowest, time.perf_counter() - began)
                assert status == 200, answer
                states.append(answer["breaker"]["state"])
            # The breaker still works, from this process's own count (threshold 10).
            assert states[:9] == ["closed"] * 9, states
            assert states[9] == "open", states
            status, start = a.call("/v1/hooks/start", {"task_id": "s", "task_name": outage_task})
            assert (status, start["allow"]) == (200, False)
            status, _ = a.call("/v1/hooks/success", {"task_id": "o1", "task_name": outage_task})
            assert status == 200
            assert slowest < 1.0, f"a hook took {slowest:.3f}s during the outage"
            print(f"\nslowest failure hook during the outage: {slowest * 1000:.1f} ms")

            key = f"outage-{uuid.uuid4()}"
            status, first = a.call("/v1/idempotency/claim", {"key": key})
            assert (status, first["claimed"]) == (200, True)
            status, again = a.call("/v1/idempotency/claim", {"key": key})
            assert (status, again["claimed"], again["state"]) == (200, False, "running")
            status, _ = b.call("/v1/idempotency/claim", {"key": key})
            assert status == 200  # the other sidecar sees the same claim in PostgreSQL

            status, ready = a.call("/readyz")
            assert status == 503
            assert ready["checks"]["redis"].startswith("unavailable")
            wait_for(lambda: backend_up(a.port) == 0.0)
            assert a.output().count("redis unavailable (") == 1  # logged once per outage
        finally:
            redis_service.start()

        wait_for(lambda: a.call("/readyz")[0] == 200)
        wait_for(lambda: backend_up(a.port) == 1.0)

        # The next hook after the retry interval finds Redis again: no restart needed.
        def resumed() -> bool:
            a.call("/v1/hooks/start", {"task_id": "p", "task_name": "faults.probe"})
            return "redis answers again" in a.output()

        wait_for(resumed, 10, "the fleet state resumed", interval=0.2)
        # B's pollers read breakers too: if they met the outage, B answers from its own
        # memory until its next probe of Redis (at most a retry interval later).
        wait_for(
            lambda: "redis unavailable (" not in b.output() or "redis answers again" in b.output(),
            10,
            "sidecar B resumed the fleet state",
            interval=0.2,
        )
        task = f"faults.after_{uuid.uuid4().hex[:8]}"
        for i in range(10):
            status, answer = a.call("/v1/hooks/failure", deadlock(task, f"a{i}"))
            assert status == 200
        assert answer["breaker"]["state"] == "open"
        status, start = b.call("/v1/hooks/start", {"task_id": "s", "task_name": task})
        assert (status, start["allow"], start["breaker"]["state"]) == (200, False, "open")
        for sidecar in (a, b):
            assert sidecar.stop() == 0, sidecar.output()
