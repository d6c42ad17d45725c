"""Fleet state and claims that survive a Redis outage (stopped, or hanging).

One `Outage` per shared store says whether it is down; `FallbackState` and
`FallbackIdempotency` share it, so the first call that meets the outage sends every later
one, breakers and claims alike, to its fallback at once instead of each waiting out the
store's timeout.

`FallbackState` serves breakers and adaptive statistics from the shared store (Redis) and,
while it does not answer, from this process's memory (`MemoryState`), so hooks keep being
answered. The outage is logged once when it begins and once when it ends. During an outage
the shared store is tried again at most once per `retry_interval` (one call probes, the
others stay local), so a hook never waits on a dead backend more than once per interval.
When it answers again the fleet state is used again and the local copy is dropped: what was
learnt locally during the outage is not merged back (the shared state is the reference).

`ping()` always asks the shared store, so /readyz and `backend_up` report the outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..policy.breaker import BreakerState, Status
from ..policy.poison import Runs
from ..policy.window import Window
from ..records import Claim
from .memory import MemoryState
from .ports import (
    BreakerUpdate,
    IdempotencyStore,
    NewClaim,
    RunsUpdate,
    StateStore,
    StoreUnavailable,
    WindowUpdate,
)

log = logging.getLogger("task_sidecar.store")
RETRY_INTERVAL = 1.0
T = TypeVar("T")


class Outage:
    """Whether a shared store is down; while it is, it is tried again at most once per
    `retry_interval` (one call probes, the others go to the fallback)."""

    def __init__(
        self,
        name: str,
        *,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        on_recovered: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.retry_interval = retry_interval
        self.clock = clock
        self.on_recovered = on_recovered
        self.down_since: float | None = None  # monotonic time the outage began
        self.fallbacks = 0  # calls answered by a fallback during the current outage
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self.down_since is not None

    async def call(
        self, shared: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self.down_since is not None:
            now = self.clock()
            if now < self._retry_at:
                self.fallbacks += 1
                return await fallback()
            self._retry_at = now + self.retry_interval  # this call probes; others fall back
        try:
            result = await shared()
        except StoreUnavailable as exc:
            self._failed(exc)
            self.fallbacks += 1
            return await fallback()
        if self.down_since is not None:
            self._recovered()
        return result

    def _failed(self, exc: StoreUnavailable) -> None:
        now = self.clock()
        self._retry_at = now + self.retry_interval
        if self.down_since is None:
            self.down_since = now
            self.fallbacks = 0
            log.warning(
                "%s unavailable (%s); breakers, adaptive statistics and claims are this "
                "process's own (claims: the durable store's) until it answers",
                self.name,
                exc,
            )

    def _recovered(self) -> None:
        assert self.down_since is not None
        log.warning(
            "%s answers again after %.1fs (%d calls answered by the fallback); "
            "using the fleet state again",
            self.name,
            self.clock() - self.down_since,
            self.fallbacks,
        )
        self.down_since = None
        self.on_recovered()


class FallbackState:
    def __init__(self, shared: StateStore, outage: Outage | None = None) -> None:
        self.shared = shared
        self.local = MemoryState()
        self.name = shared.name
        self.outage = outage or Outage(shared.name)
        # A later outage starts from nothing, not from what was learnt in this one.
        self.outage.on_recovered = self._forget_local

    def _forget_local(self) -> None:
        self.local = MemoryState()

    @property
    def degraded(self) -> bool:
        return self.outage.degraded

    async def _call(self, method: str, *args: Any) -> Any:
        return await self.outage.call(
            lambda: getattr(self.shared, method)(*args),
            lambda: getattr(self.local, method)(*args),
        )

    # --- StateStore ---------------------------------------------------------------------

    async def snapshot(
        self, breaker_key: str | None, outcomes_key: str | None
    ) -> tuple[BreakerState | None, Window | None]:
        return await self._call("snapshot", breaker_key, outcomes_key)

    async def breakers(self, keys: Sequence[str]) -> dict[str, BreakerState]:
        return await self._call("breakers", keys)

    async def update_breaker(
        self, key: str, update: BreakerUpdate, ttl: float
    ) -> tuple[BreakerState, Status | None]:
        return await self._call("update_breaker", key, update, ttl)

    async def update_outcomes(self, key: str, update: WindowUpdate, ttl: float) -> None:
        await self._call("update_outcomes", key, update, ttl)

    async def remember_failure(self, task_id: str, failure_type: str, ttl: float) -> None:
        await self._call("remember_failure", task_id, failure_type, ttl)

    async def last_failure(self, task_id: str) -> str | None:
        return await self._call("last_failure", task_id)

    async def remember_answer(self, report_id: str, answer: bytes, ttl: float) -> None:
        await self._call("remember_answer", report_id, answer, ttl)

    async def answer_for(self, report_id: str) -> bytes | None:
        return await self._call("answer_for", report_id)

    async def all_breakers(self) -> dict[str, BreakerState]:
        return await self._call("all_breakers")

    async def update_runs(self, task_id: str, update: RunsUpdate, ttl: float) -> Runs | None:
        return await self._call("update_runs", task_id, update, ttl)

    async def ping(self) -> None:
        await self.shared.ping()  # readiness reports the shared store, not the fallback

    async def close(self) -> None:
        await self.shared.close()


class FallbackIdempotency:
    """Claims go to the fast store; while it does not answer, to the durable one."""

    def __init__(
        self,
        fast: IdempotencyStore,
        durable: IdempotencyStore,
        outage: Outage | None = None,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        self.fast, self.durable = fast, durable
        self.name = fast.name
        self.outage = outage or Outage(fast.name)
        self.on_fallback = on_fallback  # each claim answered by the durable store

    async def _durable(self, call: Callable[[], Awaitable[T]]) -> T:
        self.on_fallback()
        return await call()

    async def claim(self, key: str, owner: str, ttl: float, now: float) -> Claim:
        return await self.outage.call(
            lambda: self.fast.claim(key, owner, ttl, now),
            lambda: self._durable(lambda: self.durable.claim(key, owner, ttl, now)),
        )

    async def claim_many(self, claims: Sequence[NewClaim], now: float) -> list[Claim]:
        return await self.outage.call(
            lambda: self.fast.claim_many(claims, now),
            lambda: self._durable(lambda: self.durable.claim_many(claims, now)),
        )

    async def complete(self, key: str, owner: str, ttl: float, now: float) -> bool:
        return await self.outage.call(
            lambda: self.fast.complete(key, owner, ttl, now),
            lambda: self.durable.complete(key, owner, ttl, now),
        )

    async def release(self, key: str, owner: str) -> bool:
        return await self.outage.call(
            lambda: self.fast.release(key, owner), lambda: self.durable.release(key, owner)
        )

    async def ping(self) -> None:
        await self.fast.ping()

    async def close(self) -> None:
        return None  # both stores are closed on their own
