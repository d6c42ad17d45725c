"""The service's state handling, replicated in memory on a virtual clock.

`sidecar/service.py` (`Sidecar.failure`, `.success`, `.start`) loads a snapshot of the
breaker and the retry outcomes an event needs, calls the pure core, and stores the changes
with a time to live. `Replica` does the same with dictionaries whose entries expire on the
clock it is given, so a replay sees exactly the state the live sidecar saw. Keep the two in
step: tests/test_backtest.py replays histories recorded by the real `Sidecar`.
"""

from __future__ import annotations

import random

from ..policy import Policy, decide, on_success, task_breakers
from ..policy.breaker import CLOSED, BreakerState, Status, on_start
from ..policy.decide import Keys, Outcome, Snapshot
from ..policy.events import FailureEvent, SuccessEvent
from ..policy.model import BreakerSettings


def breaker_ttl(settings: BreakerSettings) -> float:
    """As the service keeps a breaker (sidecar/service/breakers.py `breaker_ttl`)."""
    return 2 * max(settings.window, settings.open_for) + 60


class Expiring:
    """A dict whose entries expire `ttl` virtual seconds after they were last written
    (as the memory store and Redis keys do on the real clock)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[str, tuple[float, object]] = {}

    def get(self, key: str, now: float) -> object | None:
        found = self.items.get(key)
        if found is None:
            return None
        if found[0] < now:
            self._expire(key)
            return None
        return found[1]

    def put(self, key: str, value: object, ttl: float, now: float) -> None:
        self.items[key] = (now + ttl, value)

    def _expire(self, key: str) -> None:
        del self.items[key]


class Breakers(Expiring):
    """Breaker states, and which of them are not closed: a stored CLOSED breaker stays
    closed until a failure is stored, so only those need looking at on a start or a
    success (the common case of a history is that all are closed)."""

    __slots__ = ("unclosed",)

    def __init__(self) -> None:
        super().__init__()
        self.unclosed: set[str] = set()

    def _expire(self, key: str) -> None:
        super()._expire(key)
        self.unclosed.discard(key)

    def put(self, key: str, value: object, ttl: float, now: float) -> None:
        super().put(key, value, ttl, now)
        if value.status is Status.CLOSED:  # type: ignore[attr-defined]
            self.unclosed.discard(key)
        else:
            self.unclosed.add(key)


class Replica:
    """One policy's sidecar state during a replay."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.breakers = Breakers()
        self.outcomes = Expiring()
        self.failures = Expiring()  # task id -> failure type of its last retried failure
        self._task_breakers: dict[str, list[tuple[str, BreakerSettings]]] = {}
        self._keys: dict[str, frozenset[str]] = {}
        self.openings = 0

    def breakers_of(self, task_name: str) -> list[tuple[str, BreakerSettings]]:
        found = self._task_breakers.get(task_name)
        if found is None:
            found = self._task_breakers[task_name] = task_breakers(self.policy, task_name)
        return found

    def keys_of(self, task_name: str) -> frozenset[str]:
        """The breaker keys a run of the task passes through."""
        found = self._keys.get(task_name)
        if found is None:
            found = self._keys[task_name] = frozenset(k for k, _ in self.breakers_of(task_name))
        return found

    # --- failure: decide (any number of times: it is pure), then apply once ---------------

    def decide(self, event: FailureEvent, keys: Keys, now: float, rng: random.Random) -> Outcome:
        route = keys.route
        breaker = self.breakers.get(route.breaker_key, now) if route.breaker_key else None
        outcomes = self.outcomes.get(route.outcomes_key, now)
        snapshot = Snapshot(breaker, outcomes)  # type: ignore[arg-type]
        return decide(event, self.policy, snapshot, now, rng, keys)

    def apply(self, event: FailureEvent, outcome: Outcome, now: float) -> bool:
        """Store the outcome's changes; True when this failure opened a breaker."""
        effects = outcome.effects
        opened = False
        change = effects.breaker
        if change is not None:
            new, moved = change.apply(self.breakers.get(change.key, now))  # type: ignore[arg-type]
            self.breakers.put(change.key, new, breaker_ttl(change.settings), now)
            opened = moved is Status.OPEN
        result = effects.outcome
        if result is not None:
            window = result.apply(self.outcomes.get(result.key, now))  # type: ignore[arg-type]
            self.outcomes.put(result.key, window, 2 * result.window, now)
        decision = outcome.decision
        if decision.action == "retry":
            failure_type = decision.classification.failure_type
            self.failures.put(event.task_id, failure_type, self.policy.adaptive.window, now)
        if opened:
            self.openings += 1
        return opened

    # --- the other hooks ------------------------------------------------------------------

    def success(self, event: SuccessEvent, now: float) -> None:
        # The service passes every stored breaker of the task to on_success and applies
        # the changes to those not closed; passing only those gives the same changes.
        unclosed = self.breakers.unclosed
        found: dict[str, BreakerState] = {}
        if unclosed:
            for key, _ in self.breakers_of(event.task_name):
                if key in unclosed:
                    state = self.breakers.get(key, now)
                    if state is not None:
                        found[key] = state  # type: ignore[assignment]
        last = self.failures.get(event.task_id, now) if event.attempt > 0 else None
        if not found and last is None:
            return  # nothing on_success could change
        changes, outcome = on_success(event, self.policy, found, last, now)  # type: ignore[arg-type]
        for change in changes:
            if found[change.key].current(change.settings, now) is not Status.CLOSED:
                new, _ = change.apply(found[change.key])
                self.breakers.put(change.key, new, breaker_ttl(change.settings), now)
        if outcome is not None:
            window = outcome.apply(self.outcomes.get(outcome.key, now))  # type: ignore[arg-type]
            self.outcomes.put(outcome.key, window, 2 * outcome.window, now)

    def start(self, task_name: str, now: float) -> tuple[bool, float]:
        """May a run start now? (allow, seconds to wait) as `hooks/start` answers."""
        unclosed = self.breakers.unclosed
        if not unclosed:
            return True, 0.0
        for key, settings in self.breakers_of(task_name):
            if key not in unclosed:
                continue  # absent or closed: nothing to gate
            state = self.breakers.get(key, now)
            if state is None or state.current(settings, now) is Status.CLOSED:  # type: ignore[union-attr]
                continue
            allow, delay, new, _ = on_start(state or CLOSED, settings, now)  # type: ignore[arg-type]
            self.breakers.put(key, new, breaker_ttl(settings), now)
            if not allow:
                return False, round(delay, 3)
        return True, 0.0
