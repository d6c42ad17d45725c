"""The worker-side use cases: a failure (decide, store the changes, dead-letter), a
success (close breakers, learn, resolve a DLQ record), a start (the breaker gate), and
the dry runs that change nothing."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import msgspec

from ..metrics import Metrics
from ..policy import (
    Decision,
    FailureEvent,
    Snapshot,
    SuccessEvent,
    decide,
    keys_for,
    on_success,
    poison,
    task_breakers,
)
from ..policy.breaker import Status
from ..policy.decide import Effects, OutcomeChange
from ..policy.events import (
    BreakerOut,
    Classification,
    EndEvent,
    ExceptionInfo,
    StartAnswer,
    StartEvent,
)
from ..records import (
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    AuditEntry,
    DlqRecord,
    HookEvent,
    record_id,
    successor_id,
    text_problem,
)
from ..store.ports import DlqStore, StateStore
from ..store.spool import SpoolWriteFailed
from .breakers import Breakers
from .errors import InvalidInput
from .policies import Policies

V = TypeVar("V", poison.StartVerdict, poison.LostVerdict)

EMPTY_EFFECTS = Effects()
ANSWER_TTL = 3600.0  # how long a report's answer is kept for a client that sends it again
_decision = msgspec.json.Decoder(Decision)
_encode = msgspec.json.Encoder().encode


class Hooks:
    def __init__(
        self,
        policies: Policies,
        state: StateStore,
        dlq: DlqStore,
        breakers: Breakers,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.policies = policies
        self.state = state
        self.dlq = dlq
        self.breakers = breakers
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        # The event history, written to the store in batches by a poller, off the hook's
        # path (bounded: if the store and its spool fall behind, the oldest go first).
        self.events: deque[HookEvent] = deque(maxlen=100_000)

    async def failure(self, event: FailureEvent, actor: str = "anonymous") -> Decision:
        """The decision for a failure; the same report sent again gets the same answer,
        applied once."""
        storable(event)
        if event.report_id:
            known = await self.state.answer_for(f"failure:{event.report_id}")
            if known is not None:
                answer = _decision.decode(known)
                if not (event.worker_gave_up and answer.action == "retry"):
                    return answer
                decision = await self._kept_after_all(event, answer, actor)
                await self.state.remember_answer(
                    f"failure:{event.report_id}", _encode(decision), ANSWER_TTL
                )
                return decision
        decision = await self._failure(event, actor)
        if event.report_id:
            await self.state.remember_answer(
                f"failure:{event.report_id}", _encode(decision), ANSWER_TTL
            )
        return decision

    async def _kept_after_all(
        self, event: FailureEvent, answered: Decision, actor: str
    ) -> Decision:
        """The first copy of this report was answered `retry`, too late for the worker:
        it had timed out, decided a dead letter locally and now says so. The failure was
        counted then; what is left is to keep the task."""
        decision = msgspec.structs.replace(
            answered,
            action="dead_letter",
            delay_seconds=0.0,
            rationale=f"{answered.rationale} | the worker gave up (answered too late): kept",
        )
        dlq_id = await self._dead_letter(event, decision, self.clock(), actor)
        return msgspec.structs.replace(decision, dlq_id=dlq_id)

    async def _failure(self, event: FailureEvent, actor: str) -> Decision:
        policy, now = self.policies.current, self.clock()
        if poison.is_worker_lost(event.exception.type) and policy.poison.max_lost_runs > 0:
            return await self._worker_lost(event, now, actor)
        if policy.poison.max_lost_runs > 0:
            attempt = event.attempt
            await self.state.update_runs(
                event.task_id, lambda r: poison.on_end(r, attempt), policy.poison.window
            )
        keys = keys_for(event, policy)
        route = keys.route
        breaker, outcomes = await self.state.snapshot(route.breaker_key, route.outcomes_key)
        outcome = decide(event, policy, Snapshot(breaker, outcomes), now, self.rng, keys)
        decision, effects = outcome.decision, outcome.effects
        if effects.breaker is not None:
            stored = await self.breakers.apply(effects.breaker, event.task_name)
            status = stored.current(effects.breaker.settings, now).value
            decision = msgspec.structs.replace(
                decision, breaker=BreakerOut(effects.breaker.key, status)
            )
        if effects.outcome is not None:
            await self._record_outcome(effects.outcome)
        if decision.action == "retry":
            await self.state.remember_failure(
                event.task_id, decision.classification.failure_type, policy.adaptive.window
            )
        elif decision.action == "dead_letter":
            dlq_id = await self._dead_letter(event, decision, now, actor)
            decision = msgspec.structs.replace(decision, dlq_id=dlq_id)
        self.metrics.record_failure(
            event.task_name,
            event.attempt,
            decision,
            effects,
            event.queue,
            event.context.queue_depth,
        )
        self.events.append(
            HookEvent(
                at=now,
                kind="failure",
                task_name=event.task_name,
                event=_history_body(event),
                failure_type=decision.classification.failure_type,
                decision=msgspec.Raw(
                    _encode({"action": decision.action, "delay_seconds": decision.delay_seconds})
                ),
            )
        )
        return decision

    async def success(self, event: SuccessEvent, actor: str = "anonymous") -> None:
        """Record a success; the same report sent again is recorded once."""
        storable(event)
        if event.report_id:
            if await self.state.answer_for(f"success:{event.report_id}") is not None:
                return
            await self.state.remember_answer(f"success:{event.report_id}", b"1", ANSWER_TTL)
        policy, now = self.policies.current, self.clock()
        if policy.poison.max_lost_runs > 0:
            await self.state.update_runs(event.task_id, _forget, policy.poison.window)
        keys = [key for key, _ in task_breakers(policy, event.task_name)]
        breakers = await self.state.breakers(keys) if keys else {}
        last = await self.state.last_failure(event.task_id) if event.attempt > 0 else None
        changes, outcome = on_success(event, policy, breakers, last, now)
        for change in changes:
            if breakers[change.key].current(change.settings, now) is not Status.CLOSED:
                await self.breakers.apply(change, event.task_name)
        if outcome is not None:
            await self._record_outcome(outcome)
        self.metrics.record_success(event.task_name, last if outcome is not None else None)
        self.events.append(
            HookEvent(at=now, kind="success", task_name=event.task_name, event=_raw(event))
        )
        if event.dlq_id and await self.dlq.resolve(event.dlq_id, event.task_id, now):
            self.metrics.record_dlq_action("resolve")
            await self._audit(actor, "resolve", event.dlq_id, "retrying", now)

    async def start(self, event: StartEvent) -> StartAnswer:
        """Refused while one of the task's breakers is open, or its probes are taken."""
        policy, now = self.policies.current, self.clock()
        self.events.append(
            HookEvent(at=now, kind="start", task_name=event.task_name, event=_raw(event))
        )
        breakers = task_breakers(policy, event.task_name)
        states = await self.state.breakers([key for key, _ in breakers]) if breakers else {}
        for key, settings in breakers:
            state = states.get(key)
            if state is None or state.current(settings, now) is Status.CLOSED:
                continue
            allow, delay, status = await self.breakers.gate(key, settings, now)
            if not allow:  # the run is postponed, not started: no run to lose
                self.metrics.record_deferral("breaker")
                return StartAnswer(False, round(delay, 3), BreakerOut(key, status))
        if policy.poison.max_lost_runs > 0:
            return await self._start_run(event, now)
        return StartAnswer(True)

    async def end(self, event: EndEvent) -> None:
        """A run ended without a report (postponed by the worker, a duplicate skipped)."""
        window = self.policies.current.poison.window
        await self.state.update_runs(event.task_id, poison.on_end, window)

    # --- poison tasks: runs that started and never ended -----------------------------------

    async def _start_run(self, event: StartEvent, now: float) -> StartAnswer:
        settings = self.policies.current.poison
        verdict = await self._step_runs(
            event.task_id,
            lambda runs: poison.on_start(
                runs,
                event.host,
                event.redelivery,
                settings.max_lost_runs,
                event.dlq_id,
                attempt=event.attempt,
                process=event.process,
            ),
        )
        self.metrics.record_lost_runs(event.task_name, verdict.lost_now)
        if not verdict.poison:
            return StartAnswer(True)
        dlq_id = verdict.runs.dlq_id
        if dlq_id is None:  # dead-letter it now, once
            info = ExceptionInfo(
                type="WorkerLostError",
                module="billiard.exceptions",
                message=verdict.runs.reason or poison.summary(verdict.runs, settings.max_lost_runs),
            )
            failure = FailureEvent(
                task_id=event.task_id,
                task_name=event.task_name,
                exception=info,
                queue=event.queue,
                attempt=event.attempt,
                args=event.args,
                kwargs=event.kwargs,
                dlq_id=event.dlq_id,
                report_id=f"{event.task_id}:lost:{verdict.runs.starts}",
            )
            decision = self._poison_decision(failure, verdict.runs, now)
            dlq_id = await self._dead_letter(failure, decision, now, "poison", runs=verdict.runs)
            await self.state.update_runs(
                event.task_id,
                lambda r: poison.dead_lettered(r or verdict.runs, dlq_id),
                settings.window,
            )
            self.metrics.record_failure(
                event.task_name, event.attempt, decision, EMPTY_EFFECTS, event.queue, None
            )
        return StartAnswer(False, 0.0, None, dead_lettered=True, dlq_id=dlq_id or None)

    async def _worker_lost(self, event: FailureEvent, now: float, actor: str) -> Decision:
        """Celery says the run's process died (WorkerLostError): a lost run. The broker
        hands the message out again (reject_on_worker_lost); past max_lost_runs it is
        dead-lettered here and its next start refused."""
        settings = self.policies.current.poison
        verdict = await self._step_runs(
            event.task_id,
            lambda runs: poison.on_lost(
                runs,
                event.host,
                event.exception.message or None,
                attempt=event.attempt,
                process=event.process,
            ),
        )
        runs = verdict.runs
        self.metrics.record_lost_runs(event.task_name, verdict.lost_now)
        decision = self._poison_decision(event, runs, now)
        if runs.dlq_id is None and runs.lost >= settings.max_lost_runs:
            dlq_id = await self._dead_letter(event, decision, now, actor, runs=runs)
            await self.state.update_runs(
                event.task_id, lambda r: poison.dead_lettered(r or runs, dlq_id), settings.window
            )
            decision = msgspec.structs.replace(decision, action="dead_letter", dlq_id=dlq_id)
            self.metrics.record_failure(
                event.task_name, event.attempt, decision, EMPTY_EFFECTS, event.queue, None
            )
        elif runs.dlq_id is not None:
            decision = msgspec.structs.replace(decision, action="dead_letter", dlq_id=runs.dlq_id)
        return decision

    async def _step_runs(self, task_id: str, step: Callable[[poison.Runs | None], V]) -> V:
        """Apply a step of the core's run tracking to the task's runs in the state store;
        the verdict of the last application (a CAS may re-apply it)."""
        verdicts: list[V] = []

        def update(runs: poison.Runs | None) -> poison.Runs:
            verdicts.append(step(runs))
            return verdicts[-1].runs

        await self.state.update_runs(task_id, update, self.policies.current.poison.window)
        return verdicts[-1]

    def _poison_decision(self, event: FailureEvent, runs: poison.Runs, now: float) -> Decision:
        """The failure's classification, queue and priority as the core gives them; the
        action is the broker's redelivery (retry now) below the limit, else a dead letter."""
        policy = self.policies.current
        base = decide(event, policy, Snapshot(None, None), now, self.rng).decision
        limit = policy.poison.max_lost_runs
        action = "dead_letter" if runs.lost >= limit else "retry"
        return msgspec.structs.replace(
            base,
            action=action,
            delay_seconds=0.0,
            breaker=None,
            rationale=f"{poison.summary(runs, limit)} | {action}",
        )

    # --- dry runs ---------------------------------------------------------------------------

    def classify(self, event: FailureEvent) -> Classification:
        return self.policies.current.classify(event.exception, event.task_name)

    async def dry_run(self, event: FailureEvent) -> Decision:
        """The decision the failure hook would give now, changing nothing."""
        policy = self.policies.current
        route = keys_for(event, policy).route
        breaker, outcomes = await self.state.snapshot(route.breaker_key, route.outcomes_key)
        return decide(event, policy, Snapshot(breaker, outcomes), self.clock(), self.rng).decision

    # --- state changes --------------------------------------------------------------------------

    async def _audit(self, actor: str, action: str, dlq_id: str, from_status: str, at: float):
        """Every change of a record's state is in the audit log, a worker's too."""
        entry = AuditEntry(
            at=at, actor=actor, action=action, record_ids=[dlq_id], from_status=from_status
        )
        await self.dlq.audit(entry)

    async def _record_outcome(self, change: OutcomeChange) -> None:
        await self.state.update_outcomes(change.key, change.apply, 2 * change.window)

    async def _dead_letter(
        self,
        event: FailureEvent,
        decision: Decision,
        now: float,
        actor: str,
        runs: poison.Runs | None = None,
    ) -> str | None:
        c = decision.classification
        context = msgspec.to_builtins(event.context)
        if runs is not None:  # a poison task: how many runs were lost, and where
            context["lost_runs"] = runs.lost
            context["lost_run_hosts"] = list(dict.fromkeys(runs.hosts))
            context["starts"] = runs.starts
        record = DlqRecord(
            id=event.dlq_id or record_id(event.report_id),
            task_id=event.task_id,
            task_name=event.task_name,
            queue=event.queue,
            args=list(event.args),
            kwargs=event.kwargs,
            exception=msgspec.to_builtins(event.exception),
            context=context,
            failure_type=c.failure_type,
            category=c.category,
            remediation=c.remediation,
            confidence=c.confidence,
            rule=c.rule,
            priority=decision.priority,
            priority_value=decision.priority_value,
            target_queue=decision.queue or "",  # "": the task's default queue
            attempts=event.attempt,
            created_at=now,
            updated_at=now,
            workflow=event.workflow,
        )
        try:
            if event.dlq_id:
                if await self.dlq.failed_again(record):
                    await self._audit(actor, "failed_again", record.id, "retrying", now)
                    return record.id
                # Not a record this task may send back (another task's, or done): the
                # failure is kept as a record of its own.
                record = msgspec.structs.replace(record, id=successor_id(record))
            await self.dlq.put(record)
        except SpoolWriteFailed:  # neither stored nor spooled (counted and logged there)
            return None
        return record.id


__all__ = ["Hooks"]


def _forget(_: poison.Runs | None) -> None:
    return None


def _raw(event: object) -> msgspec.Raw:
    return msgspec.Raw(_encode(event))


def _history_body(event: FailureEvent) -> msgspec.Raw:
    """The failure as the history keeps it: without its traceback, which replays never
    read and which would make each row up to 256 KiB."""
    if event.exception.traceback is None:
        return _raw(event)
    exception = msgspec.structs.replace(event.exception, traceback=None)
    return _raw(msgspec.structs.replace(event, exception=exception))


def storable(event: FailureEvent | SuccessEvent) -> None:
    """Refuse, before anything is applied, what the stores could not keep: the wire counts
    characters, PostgreSQL's indexes count bytes."""
    limits = {"task_name": MAX_NAME_BYTES, "task_id": MAX_NAME_BYTES, "queue": MAX_NAME_BYTES}
    limits |= {"dlq_id": MAX_ID_BYTES, "report_id": MAX_ID_BYTES}
    for field, limit in limits.items():
        value = getattr(event, field, None)
        if value is not None and (problem := text_problem(value, limit)):
            raise InvalidInput(field, problem)
