"""In-process breaker and outcome state: the embedded default, and the fallback while
Redis is away. One process's view only; the event loop serialises every update."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..policy.breaker import BreakerState, Status
from ..policy.poison import Runs
from ..policy.window import Window
from .ports import BreakerUpdate, RunsUpdate, WindowUpdate

MAX_KEYS = 100_000  # bounds memory whatever task names clients invent
MAX_RUNS = 50_000  # task ids with runs remembered (poison detection); the oldest go first


class _Expiring(dict):
    """A dict whose entries carry a deadline; expired entries read as missing."""

    def __init__(self, limit: int = MAX_KEYS) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: object, ttl: float) -> None:
        if len(self) >= self.limit and key not in self:
            self.sweep()
        self[key] = (time.monotonic() + ttl, value)

    def fetch(self, key: str) -> object | None:
        found = self.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self[key]
            return None
        return found[1]

    def sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self.items() if deadline < now]:
            del self[key]
        while len(self) >= self.limit:  # still full of live keys: drop the oldest
            del self[next(iter(self))]


class MemoryState:
    name = "memory"

    def __init__(self) -> None:
        self._breakers = _Expiring()
        self._outcomes = _Expiring()
        self._failures = _Expiring()
        self._answers = _Expiring()
        self._runs = _Expiring(MAX_RUNS)

    async def snapshot(
        self, breaker_key: str | None, outcomes_key: str | None
    ) -> tuple[BreakerState | None, Window | None]:
        breaker = self._breakers.fetch(breaker_key) if breaker_key else None
        outcomes = self._outcomes.fetch(outcomes_key) if outcomes_key else None
        return breaker, outcomes  # type: ignore[return-value]

    async def breakers(self, keys: Sequence[str]) -> dict[str, BreakerState]:
        found = {key: self._breakers.fetch(key) for key in keys}
        return {key: state for key, state in found.items() if state is not None}  # type: ignore[misc]

    async def update_breaker(
        self, key: str, update: BreakerUpdate, ttl: float
    ) -> tuple[BreakerState, Status | None]:
        new, moved = update(self._breakers.fetch(key))  # type: ignore[arg-type]
        self._breakers.put(key, new, ttl)
        return new, moved

    async def update_outcomes(self, key: str, update: WindowUpdate, ttl: float) -> None:
        self._outcomes.put(key, update(self._outcomes.fetch(key)), ttl)  # type: ignore[arg-type]

    async def remember_failure(self, task_id: str, failure_type: str, ttl: float) -> None:
        self._failures.put(task_id, failure_type, ttl)

    async def last_failure(self, task_id: str) -> str | None:
        return self._failures.fetch(task_id)  # type: ignore[return-value]

    async def remember_answer(self, report_id: str, answer: bytes, ttl: float) -> None:
        self._answers.put(report_id, answer, ttl)

    async def answer_for(self, report_id: str) -> bytes | None:
        return self._answers.fetch(report_id)  # type: ignore[return-value]

    async def all_breakers(self) -> dict[str, BreakerState]:
        self._breakers.sweep()
        return {key: state for key, (_, state) in self._breakers.items()}

    async def update_runs(self, task_id: str, update: RunsUpdate, ttl: float) -> Runs | None:
        new = update(self._runs.fetch(task_id))  # type: ignore[arg-type]
        if new is None:
            self._runs.pop(task_id, None)
        else:
            self._runs.put(task_id, new, ttl)
        return new

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
