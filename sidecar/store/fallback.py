"""Fleet state that survives a Redis outage.

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
from collections.abc import Callable, Sequence
from typing import Any

from ..policy.breaker import BreakerState, Status
from ..policy.window import Window
from .base import BreakerUpdate, StateStore, StoreUnavailable, WindowUpdate
from .memory import MemoryState

log = logging.getLogger("task_sidecar.store")
RETRY_INTERVAL = 1.0


class FallbackState:
    def __init__(
        self,
        shared: StateStore,
        *,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = MemoryState()
        self.name = shared.name
        self.retry_interval = retry_interval
        self.clock = clock
        self.down_since: float | None = None  # monotonic time the outage began
        self.fallbacks = 0  # calls answered locally during the current outage
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self.down_since is not None

    async def _call(self, method: str, *args: Any) -> Any:
        if self.down_since is not None:
            now = self.clock()
            if now < self._retry_at:
                self.fallbacks += 1
                return await getattr(self.local, method)(*args)
            self._retry_at = now + self.retry_interval  # this call probes; others stay local
        try:
            result = await getattr(self.shared, method)(*args)
        except StoreUnavailable as exc:
            self._failed(exc)
            self.fallbacks += 1
            return await getattr(self.local, method)(*args)
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
                "%s unavailable (%s); breakers and adaptive statistics are this process's "
                "own until it answers",
                self.name,
                exc,
            )

    def _recovered(self) -> None:
        assert self.down_since is not None
        log.warning(
            "%s answers again after %.1fs (%d calls answered from local state); "
            "using the fleet state again",
            self.name,
            self.clock() - self.down_since,
            self.fallbacks,
        )
        self.down_since = None
        self.local = MemoryState()  # a later outage starts from nothing, not stale state

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

    async def all_breakers(self) -> dict[str, BreakerState]:
        return await self._call("all_breakers")

    async def ping(self) -> None:
        await self.shared.ping()  # readiness reports the shared store, not the fallback

    async def close(self) -> None:
        await self.shared.close()
