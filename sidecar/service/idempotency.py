"""Idempotency claims: the policy's TTLs per scope, counted hits and misses."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..metrics import Metrics
from ..records import Claim
from ..store.ports import IdempotencyStore
from .policies import Policies


class Idempotency:
    def __init__(
        self,
        policies: Policies,
        store: IdempotencyStore,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.policies = policies
        self.store = store
        self.metrics = metrics
        self.clock = clock

    def _ttl(self, scope: str, ttl: float | None) -> float:
        return ttl if ttl is not None else self.policies.current.idempotency.ttl[scope]

    async def claim(self, key: str, scope: str, ttl: float | None) -> Claim:
        started = time.perf_counter()
        result = "error"
        try:
            claim = await self.store.claim(f"{scope}:{key}", self._ttl(scope, ttl), self.clock())
            result = "miss" if claim.claimed else "hit"
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_claim(scope, result, self.store.name, elapsed)
        return claim

    async def complete(self, key: str, scope: str, ttl: float | None) -> bool:
        return await self.store.complete(f"{scope}:{key}", self._ttl(scope, ttl), self.clock())

    async def release(self, key: str, scope: str) -> bool:
        return await self.store.release(f"{scope}:{key}")


__all__ = ["Idempotency"]
