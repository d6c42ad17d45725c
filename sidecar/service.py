"""The sidecar's use cases: load state, call the pure core, store the changes, count.

HTTP handlers stay thin by calling these; tests and benchmarks can call them directly.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .metrics import Metrics
from .policy import (
    Decision,
    FailureEvent,
    Policy,
    PolicyError,
    Snapshot,
    SuccessEvent,
    decide,
    keys_for,
    load_policy,
    on_success,
    task_breakers,
)
from .policy.breaker import CLOSED, BreakerState, Status, on_start
from .policy.decide import BreakerChange, Effects, OutcomeChange
from .policy.events import BreakerOut, Classification, StartAnswer, StartEvent
from .policy.model import BreakerSettings
from .store.base import Claim, DlqRecord, DlqStore, IdempotencyStore, StateStore, StoreUnavailable
from .store.spool import SpoolWriteFailed

log = logging.getLogger("task_sidecar")


class Policies:
    """The current policy, swapped atomically by a reload; a bad file keeps the old one."""

    def __init__(self, path: str | Path, metrics: Metrics) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self.current: Policy = load_policy(self.path)
        self._stamp = self._file_stamp()
        self._precreate()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _precreate(self) -> None:
        policy = self.current
        self.metrics.precreate_policy(list(policy.failure_types), list(policy.priority.tier_sla))

    def reload(self) -> PolicyError | None:
        """Load the file again; on error keep the current policy and return the error."""
        self._stamp = self._file_stamp()
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self.metrics.policy_reloads.labels("failure").inc()
            log.error("policy reload refused, keeping the current policy: %s", exc)
            return exc
        self.current = policy
        self._precreate()
        self.metrics.policy_reloads.labels("success").inc()
        log.info("policy reloaded from %s", self.path)
        return None

    def changed(self) -> bool:
        return self._file_stamp() != self._stamp


@dataclass(frozen=True)
class Stores:
    state: StateStore
    dlq: DlqStore
    idempotency: IdempotencyStore

    def distinct(self) -> list[StateStore | DlqStore | IdempotencyStore]:
        out: list = []
        for store in (self.state, self.dlq, self.idempotency):
            if all(store is not seen for seen in out):
                out.append(store)
        return out


def _breaker_ttl(settings: BreakerSettings) -> float:
    """Keep a breaker long enough to see it through a full open period and window."""
    return 2 * max(settings.window, settings.open_for) + 60


class Sidecar:
    def __init__(
        self,
        policies: Policies,
        stores: Stores,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.policies = policies
        self.stores = stores
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self._breakers_seen: set[str] = set()
        # Written to the store in batches by a poller, off the hook's path (bounded: while
        # the store is away the oldest are dropped first).
        self.failure_events: deque[tuple[float, str, str]] = deque(maxlen=100_000)

    # --- hooks ----------------------------------------------------------------------------

    async def failure(self, event: FailureEvent) -> Decision:
        policy, now = self.policies.current, self.clock()
        keys = keys_for(event, policy)
        route = keys.route
        breaker, outcomes = await self.stores.state.snapshot(route.breaker_key, route.outcomes_key)
        outcome = decide(event, policy, Snapshot(breaker, outcomes), now, self.rng, keys)
        decision = outcome.decision
        effects = outcome.effects
        if effects.breaker is not None:
            stored, _ = await self._update_breaker(effects.breaker, event.task_name)
            status = stored.current(effects.breaker.settings, now).value
            decision = msgspec.structs.replace(
                decision, breaker=BreakerOut(effects.breaker.key, status)
            )
        if effects.outcome is not None:
            await self._record_outcome(effects.outcome)
        if decision.action == "retry":
            await self.stores.state.remember_failure(
                event.task_id, decision.classification.failure_type, policy.adaptive.window
            )
        elif decision.action == "dead_letter":
            dlq_id = await self._dead_letter(event, decision, now)
            decision = msgspec.structs.replace(decision, dlq_id=dlq_id)
        self._count_failure(event, decision, effects)
        self.failure_events.append((now, event.task_name, decision.classification.failure_type))
        return decision

    async def success(self, event: SuccessEvent) -> None:
        policy, now = self.policies.current, self.clock()
        m = self.metrics
        task = m.task(event.task_name)
        m.at(m.task_events, task, "success").inc()
        keys = [key for key, _ in task_breakers(policy, event.task_name)]
        breakers = await self.stores.state.breakers(keys) if keys else {}
        last = await self.stores.state.last_failure(event.task_id) if event.attempt > 0 else None
        changes, outcome = on_success(event, policy, breakers, last, now)
        for change in changes:
            if breakers[change.key].current(change.settings, now) is not Status.CLOSED:
                await self._update_breaker(change, event.task_name)
        if outcome is not None:
            await self._record_outcome(outcome)
            m.at(m.retry_outcomes, task, last, "success").inc()
        if event.dlq_id and await self.stores.dlq.resolve(event.dlq_id, now):
            m.at(m.dlq_actions, "resolve").inc()

    async def start(self, event: StartEvent) -> StartAnswer:
        """Refused while one of the task's breakers is open, or its probes are taken."""
        policy, now = self.policies.current, self.clock()
        breakers = task_breakers(policy, event.task_name)
        states = await self.stores.state.breakers([key for key, _ in breakers]) if breakers else {}
        for key, settings in breakers:
            state = states.get(key)
            if state is None or state.current(settings, now) is Status.CLOSED:
                continue
            verdict: dict[str, float] = {}

            def gate(current: BreakerState | None, settings=settings, verdict=verdict):
                allow, delay, new, moved = on_start(current or CLOSED, settings, now)
                verdict.update(allow=allow, delay=delay)
                return new, moved

            stored, moved = await self.stores.state.update_breaker(
                key, gate, _breaker_ttl(settings)
            )
            self._count_breaker(key, stored, settings, moved, now)
            if not verdict["allow"]:
                self.metrics.at(self.metrics.deferrals, "breaker").inc()
                status = stored.current(settings, now).value
                return StartAnswer(False, round(verdict["delay"], 3), BreakerOut(key, status))
        return StartAnswer(True)

    # --- dry runs ---------------------------------------------------------------------------

    def classify(self, event: FailureEvent) -> Classification:
        return self.policies.current.classify(event.exception, event.task_name)

    async def dry_run(self, event: FailureEvent) -> Decision:
        """The decision the failure hook would give now, changing nothing."""
        policy = self.policies.current
        route = keys_for(event, policy).route
        breaker, outcomes = await self.stores.state.snapshot(route.breaker_key, route.outcomes_key)
        return decide(event, policy, Snapshot(breaker, outcomes), self.clock(), self.rng).decision

    # --- idempotency --------------------------------------------------------------------------

    async def claim(self, key: str, scope: str, ttl: float | None) -> Claim:
        policy, now = self.policies.current, self.clock()
        ttl = ttl if ttl is not None else policy.idempotency.ttl[scope]
        store = self.stores.idempotency
        started = time.perf_counter()
        try:
            claim = await store.claim(f"{scope}:{key}", ttl, now)
        except StoreUnavailable:
            self.metrics.at(self.metrics.idempotency_checks, scope, "error").inc()
            raise
        finally:
            self.metrics.at(self.metrics.idempotency_duration, store.name).observe(
                time.perf_counter() - started
            )
        result = "miss" if claim.claimed else "hit"
        self.metrics.at(self.metrics.idempotency_checks, scope, result).inc()
        return claim

    async def complete(self, key: str, scope: str, ttl: float | None) -> bool:
        policy = self.policies.current
        ttl = ttl if ttl is not None else policy.idempotency.ttl[scope]
        return await self.stores.idempotency.complete(f"{scope}:{key}", ttl, self.clock())

    async def release(self, key: str, scope: str) -> bool:
        return await self.stores.idempotency.release(f"{scope}:{key}")

    # --- state changes --------------------------------------------------------------------------

    async def _update_breaker(
        self, change: BreakerChange, task_name: str
    ) -> tuple[BreakerState, Status | None]:
        stored, moved = await self.stores.state.update_breaker(
            change.key, change.apply, _breaker_ttl(change.settings)
        )
        self._count_breaker(change.key, stored, change.settings, moved, change.now)
        if moved is Status.OPEN:
            log.warning("breaker %s opened (task %s)", change.key, task_name)
        elif moved is Status.CLOSED:
            log.info("breaker %s closed", change.key)
        return stored, moved

    async def _record_outcome(self, change: OutcomeChange) -> None:
        await self.stores.state.update_outcomes(change.key, change.apply, 2 * change.window)

    async def _dead_letter(self, event: FailureEvent, decision: Decision, now: float) -> str | None:
        c = decision.classification
        record = DlqRecord(
            id=event.dlq_id or str(uuid.uuid4()),
            task_id=event.task_id,
            task_name=event.task_name,
            queue=event.queue,
            args=list(event.args),
            kwargs=event.kwargs,
            exception=msgspec.to_builtins(event.exception),
            context=msgspec.to_builtins(event.context),
            failure_type=c.failure_type,
            category=c.category,
            remediation=c.remediation,
            confidence=c.confidence,
            rule=c.rule,
            priority=decision.priority,
            priority_value=decision.priority_value,
            target_queue=decision.queue,
            attempts=event.attempt,
            created_at=now,
            updated_at=now,
        )
        try:
            if event.dlq_id and await self.stores.dlq.failed_again(record):
                return record.id
            await self.stores.dlq.put(record)
        except SpoolWriteFailed:  # neither stored nor spooled (counted and logged there)
            return None
        return record.id

    # --- metrics ------------------------------------------------------------------------------

    def _count_failure(self, event: FailureEvent, decision: Decision, effects: Effects) -> None:
        m = self.metrics
        task = m.task(event.task_name)
        c = decision.classification
        m.at(m.task_events, task, "failure").inc()
        m.at(m.task_events, task, decision.action).inc()
        m.at(m.failures, task, c.failure_type, c.remediation).inc()
        m.at(m.classification_confidence, c.failure_type).observe(c.confidence)
        m.at(m.priority_assignments, decision.priority, decision.queue).inc()
        if decision.action == "retry":
            m.at(m.retry_delay, c.failure_type).observe(decision.delay_seconds)
        if event.attempt > 0:
            m.at(m.retry_outcomes, task, c.failure_type, "failure").inc()
        if effects.sla_breach_tier:
            m.at(m.sla_breaches, effects.sla_breach_tier).inc()
        for reason in effects.deferrals:
            m.at(m.deferrals, reason).inc()
        if effects.adaptive:
            m.at(m.adaptive_adjustments, effects.adaptive).inc()
        if event.queue and event.context.queue_depth is not None:
            m.at(m.queue_depth, event.queue).set(event.context.queue_depth)

    def _count_breaker(
        self,
        key: str,
        state: BreakerState,
        settings: BreakerSettings,
        moved: Status | None,
        now: float,
    ) -> None:
        m = self.metrics
        label = m.breaker(key)
        if moved is None and label in self._breakers_seen:
            return  # the state set only changes on a transition
        self._breakers_seen.add(label)
        current = state.current(settings, now)
        for status in Status:
            m.at(m.breaker_state, label, status.value).set(status is current)
        if moved is not None:
            m.at(m.breaker_transitions, label, moved.value).inc()


__all__ = ["Policies", "Sidecar", "Stores"]
