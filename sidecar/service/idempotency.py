"""Idempotency claims: the policy's TTLs per scope, counted hits and misses."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..records import Claim, text_problem
from ..store.ports import IdempotencyStore
from ..timeouts import within
from .errors import InvalidInput
from .policies import Policies

# A claim waits at most this long for its store (the worker's client gives up at 250 ms and
# runs the task: a claim answered late is a claim lost anyway).
CLAIM_BUDGET = 0.5
MAX_KEY_BYTES = 2048  # the key is the primary key of idempotency_keys (btree: 2704 bytes)


def _stored_key(scope: str, key: str) -> str:
    if problem := text_problem(key, MAX_KEY_BYTES):
        raise InvalidInput("key", problem)
    return f"{scope}:{key}"


T = TypeVar("T")


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
        stored = _stored_key(scope, key)
        started = time.perf_counter()
        result = "error"
        try:
            claim = await _within_budget(
                self.store.claim(stored, self._ttl(scope, ttl), self.clock())
            )
            result = "miss" if claim.claimed else "hit"
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_claim(scope, result, self.store.name, elapsed)
        return claim

    async def complete(self, key: str, scope: str, ttl: float | None) -> bool:
        return await self.store.complete(
            _stored_key(scope, key), self._ttl(scope, ttl), self.clock()
        )

    async def release(self, key: str, scope: str) -> bool:
        return await _within_budget(self.store.release(_stored_key(scope, key)))


__all__ = ["Idempotency"]


async def _within_budget(call: Awaitable[T]) -> T:
    try:
        return await within(call, CLAIM_BUDGET)
    except TimeoutError:
        raise StoreUnavailable("idempotency", f"no answer within {CLAIM_BUDGET:g}s") from None
