"""One contract for breaker and outcome state: in-process memory and a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis as sync_redis

from sidecar.policy.breaker import CLOSED, Status, on_failure
from sidecar.policy.model import BreakerSettings
from sidecar.policy.window import Window
from sidecar.store.memory import MemoryState
from sidecar.store.redis import RedisStore

SETTINGS = BreakerSettings(failures=1000, open_for=60, window=600)


@pytest.fixture(params=["memory", "redis"])
async def state(request):
    if request.param == "memory":
        yield MemoryState()
        return
    url = request.getfixturevalue("redis_url")
    sync_redis.Redis.from_url(url).flushall()
    store = RedisStore(url)
    yield store
    await store.close()


def add_failure(now):
    return lambda current: on_failure(current or CLOSED, SETTINGS, now)


class TestBreakers:
    """Breaker updates apply the core's function atomically and lose nothing."""

    async def test_missing_reads_as_none(self, state):
        assert await state.snapshot("nope", "nope") == (None, None)
        assert await state.breakers(["nope"]) == {}

    async def test_update_and_read_back(self, state):
        new, moved = await state.update_breaker("t:X", add_failure(100.0), ttl=60)
        assert moved is None
        breaker, _ = await state.snapshot("t:X", None)
        assert breaker == new
        assert breaker.window.totals(100.0, 600) == (0, 1)
        assert await state.all_breakers() == {"t:X": new}

    async def test_concurrent_updates_are_all_applied(self, state):
        await asyncio.gather(
            *(state.update_breaker("t:Y", add_failure(100.0 + i / 100), ttl=60) for i in range(40))
        )
        breaker, _ = await state.snapshot("t:Y", None)
        assert breaker.window.totals(101.0, 600) == (0, 40)

    async def test_transition_is_reported_once(self, state):
        settings = BreakerSettings(failures=3, open_for=60, window=600)
        results = await asyncio.gather(
            *(
                state.update_breaker("t:Z", lambda c: on_failure(c or CLOSED, settings, 5.0), 60)
                for _ in range(10)
            )
        )
        assert [moved for _, moved in results].count(Status.OPEN) == 1

    async def test_expiry(self, state):
        await state.update_breaker("t:gone", add_failure(1.0), ttl=0.05)
        await asyncio.sleep(0.2)  # Redis and the memory store both expire by the clock
        assert await state.breakers(["t:gone"]) == {}
        assert "t:gone" not in await state.all_breakers()


class TestOutcomes:
    """Retry outcomes accumulate in a window; a task's last failure type is remembered."""

    async def test_outcomes(self, state):
        for i in range(5):
            await state.update_outcomes(
                "t:X", lambda w, i=i: (w or Window()).add(50.0, 3600, success=i % 2 == 0), 60
            )
        _, outcomes = await state.snapshot(None, "t:X")
        assert outcomes.totals(50.0, 3600) == (3, 2)

    async def test_last_failure(self, state):
        assert await state.last_failure("task-1") is None
        await state.remember_failure("task-1", "TRANSIENT_NETWORK", ttl=60)
        assert await state.last_failure("task-1") == "TRANSIENT_NETWORK"
