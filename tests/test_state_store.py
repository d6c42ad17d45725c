"""One contract for breaker and outcome state: in-process memory and a real Redis, as one
server, as a 3-master Redis Cluster and as a master found through Sentinel."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis as sync_redis

from sidecar.policy.breaker import CLOSED, Status, on_failure
from sidecar.policy.model import BreakerSettings
from sidecar.policy.window import Window
from sidecar.store.memory import MemoryState
from sidecar.store.ports import StoreUnavailable
from sidecar.store.redis import RedisStore
from tests.distributed import start_redis_cluster, start_redis_sentinel
from tests.services import free_port

SETTINGS = BreakerSettings(failures=1000, open_for=60, window=600)


REDIS_KINDS = {
    "redis": "redis_url",
    "redis-cluster": "redis_cluster_service",
    "redis-sentinel": "redis_sentinel_service",
}


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def state(request):
    if request.param == "memory":
        yield MemoryState()
        return
    found = request.getfixturevalue(REDIS_KINDS[request.param])
    if request.param == "redis":
        sync_redis.Redis.from_url(found).flushall()
        store = RedisStore(found)
    else:  # shared by the session: a prefix of its own instead of FLUSHALL
        store = RedisStore(found.url, prefix=f"test-{uuid.uuid4().hex[:8]}:", timeout=5)
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


class TestCluster:
    """On a cluster the keys spread over the masters, and the reads of several still work."""

    async def test_breakers_on_every_master_are_read_together(self, redis_cluster_service):
        store = RedisStore(redis_cluster_service.url, prefix=f"spread-{uuid.uuid4().hex[:8]}:")
        try:
            keys = [f"t{i}:X" for i in range(30)]
            for key in keys:
                await store.update_breaker(key, add_failure(100.0), ttl=60)
            holders = set()
            for node in redis_cluster_service.nodes:
                with sync_redis.Redis("127.0.0.1", node.port) as client:
                    if client.keys(f"{store.prefix}breaker:*"):
                        holders.add(node.port)
            assert len(holders) == len(redis_cluster_service.nodes)

            assert set(await store.breakers(keys)) == set(keys)
            assert set(await store.all_breakers()) == set(keys)
            breaker, outcomes = await store.snapshot(keys[0], keys[1])
            assert breaker is not None
            assert outcomes is None
        finally:
            await store.close()

    async def test_a_stopped_master_fails_its_keys_only_and_comes_back(self, tmp_path):
        """Calls for its slots are StoreUnavailable (the fallback's cue), without the
        client's retries; the other masters still answer; after its restart it serves
        again."""
        with start_redis_cluster(tmp_path) as cluster:
            store = RedisStore(cluster.url, timeout=5)
            try:
                keys = [f"t{i}:X" for i in range(30)]
                for key in keys:
                    await store.update_breaker(key, add_failure(100.0), ttl=60)
                down = cluster.nodes[1]
                with sync_redis.Redis("127.0.0.1", down.port) as client:
                    held = {name.decode() for name in client.keys(f"{store.prefix}breaker:*")}
                on_down = {key for key in keys if store._breaker(key) in held}
                assert on_down
                down.stop()

                for key in keys:
                    if key in on_down:
                        with pytest.raises(StoreUnavailable):
                            await store.snapshot(key, None)
                    else:
                        breaker, _ = await store.snapshot(key, None)
                        assert breaker is not None

                down.start()  # empty (no persistence), its slots its own again
                cluster.wait_ok()
                await store.update_breaker(min(on_down), add_failure(101.0), ttl=60)
                breaker, _ = await store.snapshot(min(on_down), None)
                assert breaker.window.totals(101.0, 600) == (0, 1)
            finally:
                await store.close()


class TestSentinelFailover:
    async def test_after_a_failover_the_store_follows_the_promoted_replica(self, tmp_path):
        """The master stops; the sentinel promotes the replica; calls fail (the fallback's
        cue) until then, and afterwards read what was written and write again."""
        with start_redis_sentinel(tmp_path, replica=True) as sentinel:
            store = RedisStore(sentinel.url, timeout=2)
            try:
                written, _ = await store.update_breaker("t:F", add_failure(100.0), ttl=600)
                sentinel.wait_replica_known()
                with sync_redis.Redis("127.0.0.1", sentinel.master.port) as master:
                    assert master.execute_command("WAIT", 1, 10_000) == 1  # replicated

                sentinel.master.stop()
                breaker = await until_answered(lambda: store.snapshot("t:F", None))

                assert sentinel.master_port() == sentinel.replica.port
                assert breaker == (written, None)
                await store.update_breaker("t:F", add_failure(101.0), ttl=600)
                breaker, _ = await store.snapshot("t:F", None)
                assert breaker.window.totals(101.0, 600) == (0, 2)
            finally:
                await store.close()


async def until_answered(call, timeout: float = 60.0):
    """The call's answer once it stops raising StoreUnavailable (polling, with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.1)


class TestUnreachable:
    """A cluster or a Sentinel that does not answer is StoreUnavailable, password unquoted."""

    @pytest.mark.parametrize(
        "form",
        [
            "redis+cluster://:{secret}@127.0.0.1:{port}/",
            "redis+sentinel://:{secret}@127.0.0.1:{port}/mymaster/0",
        ],
    )
    async def test_unreachable(self, form):
        store = RedisStore(form.format(secret="hunter22", port=free_port()))
        try:
            for call in (store.ping(), store.snapshot("a", "b"), store.claim("k", "o", 60, 1.0)):
                with pytest.raises(StoreUnavailable) as raised:
                    await call
                assert raised.value.backend == "redis"
                assert "hunter22" not in str(raised.value)
        finally:
            await store.close()
