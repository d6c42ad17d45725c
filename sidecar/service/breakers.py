"""Circuit breakers as the running sidecar keeps them: one owner for the key ↔ settings
mapping, how long a breaker is stored, applying the core's changes, the start gate,
operator views and resets."""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from ..metrics import Metrics
from ..policy.breaker import CLOSED, BreakerState, Status, on_start, reset
from ..policy.decide import BreakerChange
from ..policy.model import BreakerSettings
from ..records import AuditEntry
from ..store.ports import DlqStore, StateStore
from .errors import NotFound
from .policies import Policies

log = logging.getLogger("task_sidecar")


class BreakerView(msgspec.Struct, frozen=True):
    key: str
    state: str
    failures_in_window: int
    opened_at: float | None
    half_open_in_seconds: float | None


def breaker_ttl(settings: BreakerSettings) -> float:
    """Keep a breaker long enough to see it through a full open period and window."""
    return 2 * max(settings.window, settings.open_for) + 60


class Breakers:
    def __init__(
        self,
        policies: Policies,
        state: StateStore,
        audit: DlqStore,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.policies = policies
        self.state = state
        self.audit = audit
        self.metrics = metrics
        self.clock = clock

    async def apply(self, change: BreakerChange, task_name: str) -> BreakerState:
        """Store the core's change; report and log a transition."""
        stored, moved = await self.state.update_breaker(
            change.key, change.apply, breaker_ttl(change.settings)
        )
        self._report(change.key, stored, change.settings, moved, change.now)
        if moved is Status.OPEN:
            log.warning("breaker %s opened (task %s)", change.key, task_name)
        elif moved is Status.CLOSED:
            log.info("breaker %s closed", change.key)
        return stored

    async def gate(
        self, key: str, settings: BreakerSettings, now: float
    ) -> tuple[bool, float, str]:
        """May a run pass this (not closed) breaker now: (allow, delay, state after)."""
        verdict: dict[str, float] = {}

        def update(current: BreakerState | None) -> tuple[BreakerState, Status | None]:
            allow, delay, new, moved = on_start(current or CLOSED, settings, now)
            verdict.update(allow=allow, delay=delay)
            return new, moved

        stored, moved = await self.state.update_breaker(key, update, breaker_ttl(settings))
        self._report(key, stored, settings, moved, now)
        return bool(verdict["allow"]), verdict["delay"], stored.current(settings, now).value

    def _report(
        self,
        key: str,
        state: BreakerState,
        settings: BreakerSettings,
        moved: Status | None,
        now: float,
    ) -> None:
        current = state.current(settings, now).value
        self.metrics.record_breaker(key, current, None if moved is None else moved.value)

    # --- operators -------------------------------------------------------------------------

    async def views(self) -> list[BreakerView]:
        now, policy = self.clock(), self.policies.current
        views = []
        for key, state in sorted((await self.state.all_breakers()).items()):
            settings = policy.breaker_settings(key)
            if settings is not None:  # else its failure type has no breaker any more
                views.append(_view(key, state, settings, now))
        return views

    async def refresh_gauges(self) -> None:
        """The state set of every breaker, as the fleet sees it (for the poller)."""
        for view in await self.views():
            self.metrics.set_breaker_state(view.key, view.state)

    async def reset(self, key: str, actor: str) -> BreakerView:
        settings = self.policies.current.breaker_settings(key)
        found = await self.state.breakers([key])
        if settings is None or key not in found:
            raise NotFound(f"no breaker {key}")
        now = self.clock()
        state, moved = await self.state.update_breaker(
            key, lambda s: reset(s or found[key], settings, now), breaker_ttl(settings)
        )
        self._report(key, state, settings, moved, now)
        await self.audit.audit(
            AuditEntry(
                at=now,
                actor=actor,
                action="breaker_reset",
                from_status=found[key].current(settings, now).value,
                details={"breaker": key},
            )
        )
        return _view(key, state, settings, now)


def _view(key: str, state: BreakerState, settings: BreakerSettings, now: float) -> BreakerView:
    current = state.current(settings, now)
    return BreakerView(
        key=key,
        state=current.value,
        failures_in_window=state.window.totals(now, settings.window)[1],
        opened_at=state.opened_at if current is not Status.CLOSED else None,
        half_open_in_seconds=round(state.reopens_in(settings, now), 3)
        if current is Status.OPEN
        else None,
    )
