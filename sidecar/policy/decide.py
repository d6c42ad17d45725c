"""decide(): a failure event, the policy, a snapshot of state, the clock and an rng in;
the decision and the state changes to apply out. No I/O, no globals.

The service loads the snapshot for the event's keys (`keys_for`), calls `decide`, answers
the worker with `outcome.decision`, and applies `outcome.changes` to its stores. A change is
itself a pure function of the stored state, so a store can re-apply it atomically when
another sidecar of the fleet changed that state in between.
"""

from __future__ import annotations

import random

import msgspec

from . import adaptive, backoff, breaker, offpeak, priority
from .breaker import BreakerState, Status
from .durations import format_duration
from .events import (
    BreakerOut,
    Classification,
    Decision,
    FailureEvent,
    SuccessEvent,
)
from .model import BreakerSettings, Exhausted, Jitter, Policy, Route
from .window import Window


class Keys(msgspec.Struct, frozen=True):
    """Where the state an event needs lives: `route.breaker_key` (None: no breaker) and
    `route.outcomes_key` (retry outcomes for adaptive learning)."""

    classification: Classification
    route: Route


class Snapshot(msgspec.Struct, frozen=True):
    breaker: BreakerState | None = None
    outcomes: Window | None = None


EMPTY = Snapshot()


class BreakerChange(msgspec.Struct, frozen=True):
    key: str
    settings: BreakerSettings
    success: bool  # a run of the task succeeded (else: failed)
    now: float

    def apply(self, state: BreakerState | None) -> tuple[BreakerState, Status | None]:
        transition = breaker.on_success if self.success else breaker.on_failure
        return transition(state or breaker.CLOSED, self.settings, self.now)


class OutcomeChange(msgspec.Struct, frozen=True):
    """One retry outcome of (task, failure type) for adaptive learning."""

    key: str
    success: bool
    window: float
    now: float

    def apply(self, outcomes: Window | None) -> Window:
        return (outcomes or Window()).add(self.now, self.window, success=self.success)


class Effects(msgspec.Struct, frozen=True):
    """What the decision did, for metrics and the changes to store."""

    breaker: BreakerChange | None = None
    breaker_moved: Status | None = None
    outcome: OutcomeChange | None = None
    deferrals: tuple[str, ...] = ()  # "off_peak" | "breaker" | "load"
    adaptive: str | None = None  # "faster" | "slower"
    sla_breach_tier: str | None = None


class Outcome(msgspec.Struct, frozen=True):
    decision: Decision
    effects: Effects


def keys_for(event: FailureEvent, policy: Policy) -> Keys:
    classification = policy.classify(event.exception, event.task_name)
    return Keys(classification, policy.route(event.task_name, classification.failure_type))


def decide(
    event: FailureEvent,
    policy: Policy,
    state: Snapshot,
    now: float,
    rng: random.Random,
    keys: Keys | None = None,
) -> Outcome:
    """`keys`, when the caller already has them from keys_for(), saves classifying twice."""
    keys = keys or keys_for(event, policy)
    found, route = keys.classification, keys.route
    retry = route.retry
    context, attempt = event.context, event.attempt
    why = [f"{found.failure_type} by rule {found.rule} ({found.confidence:g})"]

    learned = adaptive.learn(policy.adaptive, state.outcomes, now)
    max_retries = max(0, retry.max_retries + learned.retry_delta)
    outcome = None
    if attempt > 0 and policy.adaptive.enabled:  # a retry failed again
        outcome = OutcomeChange(route.outcomes_key, False, policy.adaptive.window, now)

    breaker_change, breaker_out, moved, breaker_wait = None, None, None, 0.0
    if route.breaker_key is not None and retry.breaker is not None:
        breaker_change = BreakerChange(route.breaker_key, retry.breaker, False, now)
        after, moved = breaker_change.apply(state.breaker)
        breaker_out = BreakerOut(route.breaker_key, after.current(retry.breaker, now).value)
        breaker_wait = after.reopens_in(retry.breaker, now)

    assigned = priority.assign(
        policy.priority, route.base_level, context, route.failure_type, attempt, now
    )
    level = assigned.level

    deferrals: list[str] = []
    if attempt >= max_retries or event.worker_gave_up:
        action = "dead_letter" if retry.when_exhausted is Exhausted.DEAD_LETTER else "discard"
        if attempt < max_retries:
            why.append("no retry: the worker gave up (its fallback decided while we were away)")
        else:
            why.append(
                f"no retry: {attempt} of {max_retries} retries made"
                if max_retries
                else "not retried"
            )
        if learned.retry_delta:  # say what changed the limit, not only the limit
            why.append(
                f"limit {retry.max_retries} → {max_retries} by adaptive learning ({learned.note})"
            )
        delay = 0.0
    else:
        action = "retry"
        why.append(f"retry {attempt + 1}/{max_retries}")
        base = backoff.backoff_delay(retry, attempt)
        delay = backoff.jitter(retry, attempt, base, rng)
        why.append(f"{backoff.describe(retry, attempt)} = {format_duration(base)}")
        if retry.jitter is not Jitter.NONE:
            why.append(f"{retry.jitter.value} jitter → {delay:.1f}s")
        factor = learned.delay_factor
        if learned.note:
            why.append(learned.note)
        if adaptive.under_load(policy.load, context.queue_depth):
            factor *= policy.load.delay_factor
            deferrals.append("load")
            why.append(f"queue depth {context.queue_depth}: delays x{policy.load.delay_factor:g}")
        if factor != 1.0:
            delay = min(delay * factor, retry.max_delay)
        if context.retry_after_seconds is not None:
            asked = min(context.retry_after_seconds, policy.retry_after_cap)
            if asked > delay:
                delay = asked
                why.append(f"Retry-After {format_duration(round(asked))}")
        if breaker_wait > delay:
            delay = breaker_wait
            deferrals.append("breaker")
            why.append(f"breaker open: wait {format_duration(round(breaker_wait))}")
        if policy.off_peak.enabled and level.name in policy.off_peak.priorities:
            wait = offpeak.seconds_until_open(policy.off_peak, now)
            if wait > delay:
                delay = wait
                deferrals.append("off_peak")
                why.append(f"{level.name}: deferred {format_duration(round(wait))} to off-peak")
    why.append("priority " + ", ".join(assigned.factors))

    decision = Decision(
        action=action,
        delay_seconds=round(delay, 3),
        queue=level.queue if policy.priority.route_retries else event.queue,
        priority=level.name,
        priority_value=level.value,
        classification=found,
        breaker=breaker_out,
        rationale=" | ".join(why),
    )
    effects = Effects(
        breaker=breaker_change,
        breaker_moved=moved,
        outcome=outcome,
        deferrals=tuple(deferrals),
        adaptive=learned.direction if action == "retry" else None,
        sla_breach_tier=assigned.sla_breach_tier,
    )
    return Outcome(decision, effects)


# --- the other hooks ------------------------------------------------------------------------


def task_breakers(policy: Policy, task_name: str) -> list[tuple[str, BreakerSettings]]:
    """Every breaker a run of this task passes through, with its settings."""
    out = []
    for failure_type in policy.failure_types:
        settings = policy.retry_policy(task_name, failure_type).breaker
        if settings is not None:
            out.append((policy.breaker_key(task_name, failure_type), settings))
    return out


def on_success(
    event: SuccessEvent,
    policy: Policy,
    breakers: dict[str, BreakerState],
    last_failure_type: str | None,
    now: float,
) -> tuple[list[BreakerChange], OutcomeChange | None]:
    """A success closes half-open breakers of the task and, when it was a retry, counts as
    a successful retry of the failure type that caused it."""
    changes = [
        BreakerChange(key, settings, True, now)
        for key, settings in task_breakers(policy, event.task_name)
        if key in breakers
    ]
    outcome = None
    if event.attempt > 0 and last_failure_type is not None and policy.adaptive.enabled:
        key = policy.route(event.task_name, last_failure_type).outcomes_key
        outcome = OutcomeChange(key, True, policy.adaptive.window, now)
    return changes, outcome
