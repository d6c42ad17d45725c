"""Redis: breaker and outcome state shared by every sidecar of the fleet, and the fast path
for idempotency claims.

Breaker logic stays in the pure core: an update is read → apply the core's function →
write under WATCH/MULTI, retried when another sidecar wrote the key in between, so no
update is lost and no logic is duplicated in Lua.

The URL may name one server, a Redis Cluster or a Sentinel-watched master (redis_url.py).
On a cluster every write touches one key (WATCH/MULTI runs on the key's node), and the
reads of several keys (a snapshot's breaker and outcomes, a page of breakers) are made
per slot with MGET: the keys spread over the nodes, none of them a hot spot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, WatchError

from ..policy.breaker import BreakerState, Status
from ..policy.poison import Runs
from ..policy.window import Window
from ..records import Claim
from .codec import (
    decode_breaker,
    decode_runs,
    decode_window,
    encode_breaker,
    encode_runs,
    encode_window,
)
from .ports import BreakerUpdate, NewClaim, RunsUpdate, StoreUnavailable, WindowUpdate
from .redis_url import RedisAddress, parse_redis_url

T = TypeVar("T")
CAS_ATTEMPTS = 50

# Claims are "state:first_seen_at:owner" strings; these keep the read-modify-write atomic
# and act only for the claim's owner (ARGV[1]).
_COMPLETE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local state, first, owner = string.match(value, '^(%a+):([^:]*):(.*)$')
if owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done:' .. first .. ':' .. owner, 'PX', ARGV[2])
return 1
"""
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local state, first, owner = string.match(value, '^(%a+):([^:]*):(.*)$')
if state == 'running' and owner == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    name = "redis"

    def __init__(self, url: str, *, prefix: str = "task-sidecar:", timeout: float = 0.5) -> None:
        address = parse_redis_url(url)
        self._sentinel: Sentinel | None = None
        self.redis: Any
        if address.kind == "cluster":
            self.redis = _cluster(address, timeout)
            self._mget = self.redis.mget_nonatomic  # per slot: the keys live on many nodes
            self._ready = self.redis.initialize  # before a pipeline (see _Cluster)
        else:
            if address.kind == "sentinel":
                self._sentinel = _sentinel(address, timeout)
                self.redis = self._sentinel.master_for(
                    address.service or "", redis_class=aioredis.Redis, **_options(timeout)
                )
            else:
                self.redis = aioredis.Redis.from_url(url, **_options(timeout))
            self._mget = self.redis.mget
            self._ready = _connected
        self.prefix = prefix
        self._index = f"{prefix}breakers"
        self._complete = self.redis.register_script(_COMPLETE)
        self._release = self.redis.register_script(_RELEASE)

    def _breaker(self, key: str) -> str:
        return f"{self.prefix}breaker:{key}"

    def _outcomes(self, key: str) -> str:
        return f"{self.prefix}outcomes:{key}"

    # --- state ------------------------------------------------------------------------

    async def snapshot(
        self, breaker_key: str | None, outcomes_key: str | None
    ) -> tuple[BreakerState | None, Window | None]:
        keys = [self._breaker(breaker_key or ""), self._outcomes(outcomes_key or "")]
        async with _errors():
            breaker, outcomes = await self._mget(keys)
        return (
            decode_breaker(breaker) if breaker and breaker_key else None,
            decode_window(outcomes) if outcomes and outcomes_key else None,
        )

    async def breakers(self, keys: Sequence[str]) -> dict[str, BreakerState]:
        if not keys:
            return {}
        async with _errors():
            values = await self._mget([self._breaker(key) for key in keys])
        return {key: decode_breaker(v) for key, v in zip(keys, values, strict=True) if v}

    async def update_breaker(
        self, key: str, update: BreakerUpdate, ttl: float
    ) -> tuple[BreakerState, Status | None]:
        result = await self._cas(
            self._breaker(key), update, decode_breaker, lambda r: encode_breaker(r[0]), ttl
        )
        async with _errors():
            await self.redis.sadd(self._index, key)
        return result

    async def update_outcomes(self, key: str, update: WindowUpdate, ttl: float) -> None:
        await self._cas(self._outcomes(key), update, decode_window, encode_window, ttl)

    async def update_runs(self, task_id: str, update: RunsUpdate, ttl: float) -> Runs | None:
        """One key per task id (`runs:<task id>`), read-modify-write under WATCH; an update
        that answers None deletes it."""
        name = f"{self.prefix}runs:{task_id}"
        async with _errors():
            # Most runs end with nothing to keep: one GET (or one DEL), no WATCH/MULTI.
            if update(None) is None:
                raw = await self.redis.get(name)
                if raw is None:
                    return None
                if update(decode_runs(raw)) is None:
                    await self.redis.delete(name)
                    return None
        return await self._cas(name, update, decode_runs, encode_runs, ttl)

    async def _cas(
        self,
        name: str,
        update: Callable[[T | None], object],
        decode: Callable[[bytes], T],
        encode: Callable[..., bytes],
        ttl: float,
    ):
        async with _errors():
            await self._ready()
            for _ in range(CAS_ATTEMPTS):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        raw = await pipe.get(name)
                        result = update(decode(raw) if raw else None)
                        pipe.multi()
                        if result is None:  # the update says: nothing left to keep
                            pipe.delete(name)
                        else:
                            pipe.set(name, encode(result), px=_ms(ttl))
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue  # another sidecar wrote it: read again and re-apply
        raise StoreUnavailable("redis", f"{CAS_ATTEMPTS} conflicting writes in a row on {name}")

    async def remember_failure(self, task_id: str, failure_type: str, ttl: float) -> None:
        async with _errors():
            await self.redis.set(f"{self.prefix}last-failure:{task_id}", failure_type, px=_ms(ttl))

    async def last_failure(self, task_id: str) -> str | None:
        async with _errors():
            value = await self.redis.get(f"{self.prefix}last-failure:{task_id}")
        return value.decode() if value else None

    async def remember_answer(self, report_id: str, answer: bytes, ttl: float) -> None:
        async with _errors():
            await self.redis.set(f"{self.prefix}answer:{report_id}", answer, px=_ms(ttl))

    async def answer_for(self, report_id: str) -> bytes | None:
        async with _errors():
            return await self.redis.get(f"{self.prefix}answer:{report_id}")

    async def all_breakers(self) -> dict[str, BreakerState]:
        async with _errors():
            keys = sorted(k.decode() for k in await self.redis.smembers(self._index))
            found = await self.breakers(keys)
            gone = [key for key in keys if key not in found]
            if gone:  # expired: forget them
                await self.redis.srem(self._index, *gone)
        return found

    # --- idempotency --------------------------------------------------------------------

    async def claim(self, key: str, owner: str, ttl: float, now: float) -> Claim:
        name = f"{self.prefix}idem:{key}"
        async with _errors():
            for _ in range(3):  # the holder's claim may expire between SET and GET
                if await self.redis.set(name, f"running:{now!r}:{owner}", nx=True, px=_ms(ttl)):
                    return Claim(True, owner=owner)
                value = await self.redis.get(name)
                if value is not None:
                    state, first = value.decode().split(":", 2)[:2]
                    return Claim(False, first_seen_at=float(first), state=state)
        raise StoreUnavailable("redis", f"claim of {key} kept expiring under us")

    async def claim_many(self, claims: Sequence[NewClaim], now: float) -> list[Claim]:
        """One pipeline of SET NX for all (Redis runs them in order), one of GET for the
        keys already held; a holder that expired in between is claimed on its own."""
        names = [f"{self.prefix}idem:{c.key}" for c in claims]
        async with _errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, c in zip(names, claims, strict=True):
                    pipe.set(name, f"running:{now!r}:{c.owner}", nx=True, px=_ms(c.ttl))
                won = await pipe.execute()
            held = [i for i, ok in enumerate(won) if not ok]
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in held:
                    pipe.get(names[i])
                values = await pipe.execute() if held else []
        out = [Claim(True, owner=c.owner) for c in claims]
        for i, value in zip(held, values, strict=True):
            if value is None:
                c = claims[i]
                out[i] = await self.claim(c.key, c.owner, c.ttl, now)
            else:
                state, first = value.decode().split(":", 2)[:2]
                out[i] = Claim(False, first_seen_at=float(first), state=state)
        return out

    async def complete(self, key: str, owner: str, ttl: float, now: float) -> bool:
        async with _errors():
            done = await self._complete(keys=[f"{self.prefix}idem:{key}"], args=[owner, _ms(ttl)])
        return bool(done)

    async def release(self, key: str, owner: str) -> bool:
        async with _errors():
            return bool(await self._release(keys=[f"{self.prefix}idem:{key}"], args=[owner]))

    # --- lifecycle ----------------------------------------------------------------------

    async def ping(self) -> None:
        async with _errors():
            await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()
        for sentinel in self._sentinel.sentinels if self._sentinel else ():
            await sentinel.aclose()


def _ms(ttl: float) -> int:
    """A TTL as Redis' PX takes it: whole milliseconds, at least one."""
    return max(1, int(ttl * 1000))


async def _connected() -> None:
    return None


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
    }


class _Cluster(RedisCluster):
    """RedisCluster, made to learn the topology before a command is looked at.

    redis-py (8.1) initialises on first use, but when several first commands run at once
    (with a socket timeout set) some fail with an AttributeError from a connection whose
    writer is None: 6 runs of 20 with 10 concurrent SETs on a fresh client here, 0 of 20
    once initialize() had run. So it runs first, under redis-py's own lock (once done, a
    flag check)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def _cluster(address: RedisAddress, timeout: float) -> RedisCluster:
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
        username=address.username,
        password=address.password,
        ssl=address.ssl,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # Its default retries a command on a master that does not answer 3 times with
        # backoff (3.6 s here); fail at once, as with one server: the fallback answers,
        # and the next call learns the new topology (a promoted replica).
        retry=Retry(NoBackoff(), 0),
    )


def _sentinel(address: RedisAddress, timeout: float) -> Sentinel:
    """The sentinels answer where the master is; the master's connections (master_for)
    take the URL's user, password, database and TLS."""
    sentinel_options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # A Redis client's default is 3 retries with backoff (4 s for a sentinel that is
        # down); fail at once like the master's connections, and let the fallback answer.
        "retry": Retry(NoBackoff(), 0),
        "username": address.sentinel_username,
        "password": address.sentinel_password,
        "ssl": address.ssl,
    }
    return Sentinel(
        list(address.nodes),
        sentinel_kwargs=sentinel_options,
        username=address.username,
        password=address.password,
        db=address.db,
        ssl=address.ssl,
    )


class _errors:
    """Turn redis-py errors into StoreUnavailable (without the URL: it may hold a password)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind, error, tb) -> bool:
        unavailable = RedisError | RedisClusterException | OSError
        if isinstance(error, unavailable) and not isinstance(error, WatchError):
            raise StoreUnavailable("redis", type(error).__name__) from error
        return False
