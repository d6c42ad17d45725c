"""Replay a history under a policy on a virtual clock.

Every task of the history runs again, from the time of its first recorded run, through the
same loop as a worker with the sidecar: a run reports success or failure; a failure goes to
`decide()` with the breaker and adaptive state of the replay (replica.py); a retry runs
again `delay_seconds` later; a worker that asks `hooks/start` is postponed while a breaker
is open. The world's share of each gap (queue wait, run time) is taken from the history.

A run the policy leaves where it was recorded — same due time, same start-hook answers —
is *on script*: its outcome and times are the recorded ones. Any other run is answered by
the model (model.py). Replaying the policy the history was recorded under therefore
reproduces the history exactly, which tests/test_backtest.py checks against the service.

Jitter. The recorded delays hold the random draws the live sidecar made. The baseline pass
recovers each draw (as a quantile of the jitter's range) and uses the recorded delay; the
candidate pass makes the same draw for the same attempt of the same task (common random
numbers), so the two columns differ by policy, not by luck. Draws the history does not
hold come from a hash of (seed, task id, attempt), and the queue waits of postponed runs
from an rng seeded likewise: the same history and seed give the same result.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import msgspec

from ..policy import Policy, keys_for
from ..policy.decide import Keys, Outcome
from ..policy.events import FailureEvent, SuccessEvent
from .draws import Quantile, hashed_draw
from .history import History, TaskHistory
from .metrics import TaskResult
from .model import Model, Observer, OutageModel
from .replica import Replica

TOLERANCE = 0.0015  # decisions carry milliseconds: equal delays may differ by a rounding
HORIZON = 30 * 86400.0  # how long past the history a replay follows unfinished tasks

_GATE, _REPORT = 0, 1


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """For reading and replaying a large history: it makes millions of long-lived objects
    and no reference cycles, which the cyclic collector would only scan again and again
    (a third of the time at a million events)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True)
class Recovered:
    """What the baseline pass learns from the history for the candidate pass: the jitter
    draw of each recorded decision (a quantile, per task and run), and the wait the
    sidecar gave each refused start hook (per task, run and start)."""

    draws: dict[int, list[float | None]] = field(default_factory=dict)
    waits: dict[tuple[int, int, int], float] = field(default_factory=dict)


@dataclass(slots=True)
class Pass:
    """One policy's replay of the history."""

    results: list[TaskResult]  # of the tasks that failed (or ran where the history has no run)
    decisions_recorded: int = 0  # failure runs of the history
    decisions_reproduced: int = 0  # ... replayed on script with the recorded decision
    openings: int = 0  # every breaker opening, DLQ reruns included


class _Task:
    """A task in progress during one pass."""

    __slots__ = ("attempt", "pending", "result", "run", "script", "step", "task")

    def __init__(self, task: TaskHistory) -> None:
        self.task = task
        self.result: TaskResult | None = None
        self.run = 0  # index of the run in progress
        self.attempt = task.first_attempt
        self.script = True  # the run in progress is the recorded one, at its recorded times
        self.step = 0  # next recorded start hook of the run in progress
        self.pending = _first_line(task.runs[0])  # the recorded line awaited (-1: none)


def _first_line(run) -> int:
    return run.starts[0][1] if run.starts else run.line


class _Replay:
    def __init__(
        self,
        history: History,
        policy: Policy,
        model: Model,
        observer: Observer,
        recovered: Recovered,
        *,
        learn: bool,
        seed: int,
        horizon: float,
    ) -> None:
        self.history = history
        self.policy = policy
        self.model = model
        self.observer = observer
        self.draws = recovered.draws
        self.waits = recovered.waits
        self.learn = learn  # the baseline pass: recover the recorded draws and waits
        self.seed = seed
        self.until = history.last_at + horizon
        self.replica = Replica(policy)
        self.rng = Quantile()
        self.queue = random.Random(seed)  # which recorded queue wait a postponed run gets
        self.heap: list[tuple[float, int, int, object]] = []
        self.counter = 0
        self.keys: dict[tuple[int, str], Keys] = {}
        self.out = Pass([])

    # --- the event loop -------------------------------------------------------------------

    def run(self) -> Pass:
        history, out = self.history, self.out
        tasks = history.tasks
        sims: list[_Task | None] = [None] * len(tasks)  # made when a task first runs
        out.decisions_recorded = history.decisions
        # Recorded events come in order from the history; only runs the policy moved go
        # through the heap. At equal times the recorded event goes first.
        stream, heap, exogenous = history.order, self.heap, history.exogenous
        gate, report, outside, pop = self._gate, self._report, self._exogenous, heapq.heappop
        unclosed = self.replica.breakers.unclosed  # the same set for the whole pass
        keys_of = self.replica.keys_of
        i, n, until = 0, len(stream), self.until
        while True:
            if heap and (i >= n or heap[0][0] < stream[i][0]):
                at, _, code, sim = pop(heap)
                if at > until:
                    break
                if code == _REPORT:
                    report(sim, at)
                else:
                    gate(sim, at)
                continue
            if i >= n:
                break
            at, line, index, k, step = stream[i]
            i += 1
            if index < 0:
                outside(exogenous[k])
                continue
            sim = sims[index]
            if sim is None:
                sim = sims[index] = _Task(tasks[index])
            if sim.pending != line:
                continue  # the policy moved this run: it is in the heap
            if unclosed and not unclosed.isdisjoint(keys_of(sim.task.task_name)):
                if step < 0:
                    report(sim, at)
                else:
                    gate(sim, at)
                continue
            # Every breaker of the task closed: a start is allowed, a first success changes
            # nothing.
            # The common case of a history, taken here without the general path.
            run = sim.task.runs[k]
            if step >= 0:
                if step == len(run.starts) - 1:
                    sim.pending = run.line
                else:
                    gate(sim, at)  # the live sidecar refused this start: off script
            elif run.failure is None and k == 0 and run.success.attempt == 0:  # type: ignore[union-attr]
                sim.pending = -1
            else:
                report(sim, at)
        out.openings = self.replica.openings
        return out

    def _push(self, at: float, code: int, sim: _Task) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (at, self.counter, code, sim))

    def _move(self, sim: _Task, due: float) -> None:
        """The run in progress is off script from its due time on. The world's share of
        its timing is the recorded one of the same run, else the last run's run time and a
        queue wait drawn from the history (the first run's wait is not known)."""
        task, k = sim.task, sim.run
        sim.script, sim.pending = False, -1
        if task.uses_start:
            wait = task.pickup[k] if 0 < k < len(task.runs) else self._queue_wait()
            self._push(due + wait, _GATE, sim)
        elif 0 < k < len(task.runs):
            self._push(due + task.work[k], _REPORT, sim)
        else:
            self._push(due + self._queue_wait_without_start(), _REPORT, sim)

    # --- hooks/start ----------------------------------------------------------------------

    def _gate(self, sim: _Task, at: float) -> None:
        allow, wait = self.replica.start(sim.task.task_name, at)
        wait = wait or 1.0  # the worker client waits at least a second
        if sim.script:
            run = sim.task.runs[sim.run]
            if allow == (sim.step == len(run.starts) - 1):  # the answer the live sidecar gave
                if allow:
                    sim.pending = run.line
                    return
                key = (sim.task.index, sim.run, sim.step)
                if self.learn:
                    self.waits[key] = wait
                    live = wait
                else:
                    live = self.waits.get(key)
                sim.step += 1
                again, line = run.starts[sim.step]
                if live is not None and abs(wait - live) <= TOLERANCE:
                    sim.pending = line  # told to wait as long as live: back when it was
                    return
                # Told to wait another time: the queue wait after it is the world's.
                extra = max(0.0, again - at - live) if live is not None else self._queue_wait()
                sim.script, sim.pending = False, -1
                self._push(at + wait + extra, _GATE, sim)
                return
            sim.script, sim.pending = False, -1
        if allow:
            k = min(sim.run, len(sim.task.runs) - 1)
            self._push(at + sim.task.work[k], _REPORT, sim)
        else:
            # As the worker does: publish the task again to run `wait` later; it then waits
            # in the queue like any retry.
            self._push(at + wait + self._queue_wait(), _GATE, sim)

    def _queue_wait(self) -> float:
        waits = self.history.queue_waits
        return waits[int(self.queue.random() * len(waits))] if waits else 0.0

    def _queue_wait_without_start(self) -> float:
        """Due to report, for workers that do not call hooks/start."""
        gaps = self.history.report_gaps
        return gaps[int(self.queue.random() * len(gaps))] if gaps else 0.0

    # --- a run reports ------------------------------------------------------------------

    def _result(self, sim: _Task) -> TaskResult:
        """Made on first need: most tasks of a history never fail."""
        sim.result = TaskResult(sim.task.task_id, sim.task.task_name)
        self.out.results.append(sim.result)
        return sim.result

    def _report(self, sim: _Task, at: float) -> None:
        task, result, k = sim.task, sim.result, sim.run
        if sim.script:
            recorded = task.runs[k]
            failure: FailureEvent | None = recorded.failure
            sim.attempt = (failure or recorded.success).attempt  # type: ignore[union-attr]
        else:
            recorded = None
            failure, outside = self.model.outcome(task, k, at)
            result = result or self._result(sim)
            result.model_runs += 1
            result.outside_span += outside
            if failure is not None:
                failure = self._as_run_of(failure, task, sim.attempt)
        if k > 0:  # a retry: this task failed before in this pass
            result.retry_runs.append(at)  # type: ignore[union-attr]
        if failure is None:
            if recorded is not None and recorded.success is not None:
                success = recorded.success
            else:
                success = SuccessEvent(task.task_id, task.task_name, attempt=sim.attempt)
            self.replica.success(success, at)
            if result is not None and result.first_failure_at is not None:
                result.ended, result.ended_at = "succeeded", at
            return
        result = result or self._result(sim)
        outcome, delay = self._decide(sim, failure, at, recorded.decision if recorded else None)
        if self.replica.apply(failure, outcome, at):
            result.openings += 1  # type: ignore[operator]
        result.failed(at, self.observer.classify(failure)[0])
        action = outcome.decision.action
        if action != "retry":
            result.ended = "discarded" if action == "discard" else "dead_lettered"
            result.ended_at = at
            return
        result.retries += 1
        on_script = (
            recorded is not None
            and recorded.decision is not None
            and recorded.decision.action == "retry"
            and delay == recorded.decision.delay_seconds
            and k + 1 < len(task.runs)
        )
        sim.run, sim.attempt, sim.step = k + 1, sim.attempt + 1, 0
        if on_script:
            sim.pending = _first_line(task.runs[k + 1])
        else:
            self._move(sim, at + delay)

    @staticmethod
    def _as_run_of(failure: FailureEvent, task: TaskHistory, attempt: int) -> FailureEvent:
        """The model's example failure, as this task's run (it may be another task's)."""
        if (
            failure.task_id == task.task_id
            and failure.attempt == attempt
            and failure.dlq_id is None
            and failure.task_name == task.task_name
        ):
            return failure
        return msgspec.structs.replace(
            failure,
            task_id=task.task_id,
            task_name=task.task_name,
            attempt=attempt,
            dlq_id=None,
        )

    def _keys(self, event: FailureEvent) -> Keys:
        key = (id(event.exception), event.task_name)
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = keys_for(event, self.policy)
        return found

    def _draw(self, sim: _Task, k: int) -> float:
        draws = self.draws.get(sim.task.index)
        if draws is not None and k < len(draws) and draws[k] is not None:
            return draws[k]  # type: ignore[return-value]
        return hashed_draw(self.seed, sim.task.task_id, k)

    def _decide(
        self, sim: _Task, event: FailureEvent, at: float, recorded
    ) -> tuple[Outcome, float]:
        keys, rng, replica, k = self._keys(event), self.rng, self.replica, sim.run
        if self.learn and recorded is not None:
            # The live draw lies where the recorded delay sits in the range u=0 … u=1.
            rng.u, rng.span = 0.0, None
            low = replica.decide(event, keys, at, rng)
            d0 = d1 = low.decision.delay_seconds
            if rng.span is not None:
                rng.u = 1.0
                d1 = replica.decide(event, keys, at, rng).decision.delay_seconds
            wanted = recorded.delay_seconds
            draws = self.draws.setdefault(sim.task.index, [])
            while len(draws) <= k:
                draws.append(None)
            if (
                low.decision.action == recorded.action
                and d0 - TOLERANCE <= wanted <= d1 + TOLERANCE
            ):
                if d1 > d0:
                    linear = (
                        event.context.retry_after_seconds is None
                        and not {"breaker", "off_peak"} & set(low.effects.deferrals)
                        and d1 < keys.route.retry.max_delay - TOLERANCE
                    )  # no floor at u=0, no cap at u=1: the delay is a straight line in u
                    u = (wanted - d0) / (d1 - d0)
                    draws[k] = u if linear else self._invert(event, keys, at, wanted, d0, d1)
                self.out.decisions_reproduced += 1
                return low, wanted
        rng.u = self._draw(sim, k)
        outcome = replica.decide(event, keys, at, rng)
        delay = outcome.decision.delay_seconds
        if (
            recorded is not None
            and outcome.decision.action == recorded.action
            and abs(delay - recorded.delay_seconds) <= TOLERANCE
        ):
            delay = recorded.delay_seconds  # the recorded decision, to the millisecond
            self.out.decisions_reproduced += 1
        return outcome, delay

    def _invert(
        self, event: FailureEvent, keys: Keys, at: float, wanted: float, d0: float, d1: float
    ) -> float:
        """The draw u in [0, 1] for which decide() gives the recorded delay. The delay
        grows with u: linearly unless Retry-After, a breaker, off-peak or max_delay clamps
        it, so the straight line is checked, then halved towards the answer."""
        rng, replica = self.rng, self.replica
        u = (wanted - d0) / (d1 - d0)
        rng.u = u
        got = replica.decide(event, keys, at, rng).decision.delay_seconds
        if abs(got - wanted) <= TOLERANCE:
            return u
        low, high = 0.0, 1.0
        for _ in range(40):
            u = (low + high) / 2
            rng.u = u
            got = replica.decide(event, keys, at, rng).decision.delay_seconds
            if abs(got - wanted) <= TOLERANCE:
                break
            if got < wanted:
                low = u
            else:
                high = u
        return u

    # --- runs retried from the DLQ: replayed as recorded ----------------------------------

    def _exogenous(self, item) -> None:
        event, at = item.event, item.at
        if item.kind == "start":
            self.replica.start(event.task_name, at)
        elif item.kind == "success":
            self.replica.success(event, at)
        else:
            self.rng.u = hashed_draw(self.seed, event.task_id, -item.line)
            outcome = self.replica.decide(event, self._keys(event), at, self.rng)
            self.replica.apply(event, outcome, at)


ModelFactory = Callable[[History, Observer], Model]


@dataclass(slots=True)
class Simulation:
    history: History
    observer: Observer
    recorded: list[TaskResult]
    baseline: Pass
    candidate: Pass


def simulate(
    history: History,
    baseline: Policy,
    candidate: Policy,
    *,
    seed: int = 0,
    model: ModelFactory = OutageModel,
    horizon: float = HORIZON,
) -> Simulation:
    """Replay `history` under the baseline (the policy it was recorded under, normally)
    and the candidate. The model and the failure types of the output come from the
    baseline."""
    observer = Observer(baseline)
    world = model(history, observer)
    recovered = Recovered()
    # The baseline pass (learn) fills `recovered`; the candidate's pass reads it.
    base = _Replay(
        history, baseline, world, observer, recovered, learn=True, seed=seed, horizon=horizon
    ).run()
    cand = _Replay(
        history, candidate, world, observer, recovered, learn=False, seed=seed, horizon=horizon
    ).run()
    return Simulation(history, observer, recorded_results(history, observer), base, cand)


def recorded_results(history: History, observer: Observer) -> list[TaskResult]:
    """What the history itself says happened to each task (breaker openings unknown)."""
    out = []
    for task in history.tasks:
        if len(task.runs) == 1 and task.runs[0].failure is None and not task.first_attempt:
            continue  # succeeded at once
        result = TaskResult(task.task_id, task.task_name, openings=None)
        for k, run in enumerate(task.runs):
            if k > 0:
                result.retry_runs.append(run.at)
            if run.failure is None:
                if result.first_failure_at is not None:
                    result.ended, result.ended_at = "succeeded", run.at
                continue
            result.failed(run.at, observer.classify(run.failure)[0])
            action = run.decision.action  # type: ignore[union-attr]
            if action == "retry":
                result.retries += 1
            else:
                result.ended = "discarded" if action == "discard" else "dead_lettered"
                result.ended_at = run.at
        out.append(result)
    return out
