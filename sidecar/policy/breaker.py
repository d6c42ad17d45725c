"""The circuit breaker as a pure state machine.

    closed ──(failures ≥ N, or failure rate ≥ R over ≥ M calls, within the window)──▶ open
    open ──(open_for elapsed: derived from the clock, nothing has to fire)──▶ half_open
    half_open ──(a probe succeeds)──▶ closed
    half_open ──(a probe fails)──▶ open

While half-open, at most `half_open_probes` runs are let through by `on_start`; a probe
that never reports frees its place after `open_for`. Every function returns the new state
and the state it moved to (or None); storing it is the caller's business.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from .model import BreakerSettings
from .window import Window

EMPTY_WINDOW = Window()


class Status(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerState(msgspec.Struct, frozen=True):
    status: Status = Status.CLOSED
    opened_at: float = 0.0
    window: Window = EMPTY_WINDOW  # calls while closed
    probes: int = 0  # probe runs let through while half-open
    probe_at: float = 0.0  # when the last one was let through

    def current(self, settings: BreakerSettings, now: float) -> Status:
        """The status at `now`: an open breaker whose time is up is half-open."""
        if self.status is Status.OPEN and now >= self.opened_at + settings.open_for:
            return Status.HALF_OPEN
        return self.status

    def reopens_in(self, settings: BreakerSettings, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.current(settings, now) is not Status.OPEN:
            return 0.0
        return self.opened_at + settings.open_for - now


CLOSED = BreakerState()
Transition = Status | None


def _moved(before: Status, new: BreakerState) -> tuple[BreakerState, Transition]:
    """`new` and its status when that differs from the status `before` (as observed)."""
    return new, (new.status if new.status is not before else None)


def _open(now: float) -> BreakerState:
    return BreakerState(status=Status.OPEN, opened_at=now)


def on_failure(
    state: BreakerState, settings: BreakerSettings, now: float
) -> tuple[BreakerState, Transition]:
    status = state.current(settings, now)
    if status is Status.OPEN:
        return state, None  # a run that started before the breaker opened
    if status is Status.HALF_OPEN:
        return _moved(status, _open(now))
    window = state.window.add(now, settings.window, success=False)
    successes, failures = window.totals(now, settings.window)
    calls = successes + failures
    tripped = failures >= settings.failures or (
        settings.failure_rate is not None
        and calls >= settings.min_calls
        and failures / calls >= settings.failure_rate
    )
    if tripped:
        return _moved(status, _open(now))
    return BreakerState(state.status, state.opened_at, window, state.probes, state.probe_at), None


def on_success(
    state: BreakerState, settings: BreakerSettings, now: float
) -> tuple[BreakerState, Transition]:
    status = state.current(settings, now)
    if status is Status.OPEN:
        return state, None
    if status is Status.HALF_OPEN:
        return _moved(status, CLOSED)
    return state if settings.failure_rate is None else msgspec.structs.replace(
        state, window=state.window.add(now, settings.window, success=True)
    ), None


def on_start(
    state: BreakerState, settings: BreakerSettings, now: float
) -> tuple[bool, float, BreakerState, Transition]:
    """May a run start now? (allow, delay before asking again, new state, transition)."""
    status = state.current(settings, now)
    if status is Status.CLOSED:
        return True, 0.0, state, None
    if status is Status.OPEN:
        return False, state.reopens_in(settings, now), state, None
    probes = state.probes if state.status is Status.HALF_OPEN else 0
    if probes and now - state.probe_at >= settings.open_for:
        probes = 0  # the probes never reported back: free their places
    if probes >= settings.half_open_probes:
        wait = max(1.0, state.probe_at + settings.open_for - now)
        return False, wait, state, None
    new = msgspec.structs.replace(state, status=Status.HALF_OPEN, probes=probes + 1, probe_at=now)
    return (True, 0.0, *_moved(state.status, new))  # counts open → half_open once


def reset(
    state: BreakerState, settings: BreakerSettings, now: float
) -> tuple[BreakerState, Transition]:
    return _moved(state.current(settings, now), CLOSED)
