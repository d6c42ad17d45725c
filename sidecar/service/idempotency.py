"""Idempotency claims: the policy's TTLs per scope, counted hits and misses."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, TypeVar

from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..records import Claim, text_problem
from ..store.ports import IdempotencyStore, NewClaim
from ..timeouts import within
from .errors import InvalidInput, NotHolder
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


class ClaimOrder(NamedTuple):
    """One claim of a batch as the worker asks it."""

    key: str
    scope: str
    ttl: float | None = None
    task_name: str | None = None


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

    async def claim(
        self, key: str, scope: str, ttl: float | None, task_name: str | None = None
    ) -> Claim:
        """The first caller gets the claim and an owner token that its `complete` or
        `release` must present. `task_name` only labels the claim's metric."""
        stored = _stored_key(scope, key)
        owner = secrets.token_urlsafe(12)
        started = time.perf_counter()
        result = "error"
        try:
            ttl = self._ttl(scope, ttl)
            claim = await _within_budget(self.store.claim(stored, owner, ttl, self.clock()))
            result = "miss" if claim.claimed else "hit"
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_claim(scope, result, self.store.name, elapsed, task_name)
        return claim

    async def claim_many(self, claims: Sequence[ClaimOrder]) -> list[Claim]:
        """`claim` of each, in order, in one round trip to the store where it has them
        (Redis pipelines): a worker claiming many keys pays for the HTTP hop once. Each
        claim is counted as `claim` counts it, its latency the batch's."""
        stored = []
        for i, c in enumerate(claims):
            try:
                key = _stored_key(c.scope, c.key)
            except InvalidInput as exc:
                raise InvalidInput(f"claims[{i}].{exc.path}", exc.message) from None
            stored.append(NewClaim(key, secrets.token_urlsafe(12), self._ttl(c.scope, c.ttl)))
        started = time.perf_counter()
        answers: list[Claim] | None = None
        try:
            answers = await _within_budget(self.store.claim_many(stored, self.clock()))
        finally:
            elapsed = time.perf_counter() - started
            for i, c in enumerate(claims):
                result = "error" if answers is None else "miss" if answers[i].claimed else "hit"
                self.metrics.record_claim(c.scope, result, self.store.name, elapsed, c.task_name)
        return answers

    async def complete(self, key: str, scope: str, owner: str, ttl: float | None) -> None:
        stored, ttl = _stored_key(scope, key), self._ttl(scope, ttl)
        if not await _within_budget(self.store.complete(stored, owner, ttl, self.clock())):
            self.metrics.record_stale_owner("complete")
            raise NotHolder(key)

    async def release(self, key: str, scope: str, owner: str) -> None:
        if not await _within_budget(self.store.release(_stored_key(scope, key), owner)):
            self.metrics.record_stale_owner("release")
            raise NotHolder(key)


async def _within_budget(call: Awaitable[T]) -> T:
    try:
        return await within(call, CLAIM_BUDGET)
    except TimeoutError:
        raise StoreUnavailable("idempotency", f"no answer within {CLAIM_BUDGET:g}s") from None
