"""The outage model: would a run at time t have failed, and how?

Transient failures cluster in time: a database that is down fails every task that needs it
until it is back. So the model is about the dependency, not the attempt number. Per
breaker owner (the dependency a task shares with others, or the task itself) and failure
type — a *key* — the history gives observations: a failure of that type at t says the key
was down at t, a success of any task of that owner says every key of the owner was up.
Between observations the nearest one holds (a state change is placed half-way between two
observations that disagree); before the first and after the last, the first and the last
hold. A run replayed at t fails with the failure type of a key that is down at t.

Permanent failures (category `permanent`) belong to the task, not to its dependency: such
a task fails the same way whenever it runs.

A run at exactly the time the history recorded it needs no model: the replay uses what was
recorded (see simulate.py). The model answers every other run, and says when t lies outside
the span observed for the task's owner (the answer is then an extrapolation).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Protocol

from ..policy import Policy
from ..policy.events import FailureEvent
from ..policy.model import Category
from .draws import hashed_draw
from .history import History, TaskHistory


class Model(Protocol):
    def outcome(self, task: TaskHistory, run: int, at: float) -> tuple[FailureEvent | None, bool]:
        """(the failure the run meets, or None for a success; whether `at` is outside the
        observed span)."""
        ...


class Observer:
    """Failure types as the baseline policy (the one in force when the history was
    recorded) names them, memoised per exception. The exceptions must stay alive while
    the observer is used (a history holds them)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._types: dict[tuple[int, str], tuple[str, bool]] = {}
        self._owners: dict[str, str] = {}

    def classify(self, event: FailureEvent) -> tuple[str, bool]:
        """(failure type, permanent?)"""
        key = (id(event.exception), event.task_name)  # the history shares equal exceptions
        found = self._types.get(key)
        if found is None:
            c = self.policy.classify(event.exception, event.task_name)
            found = (c.failure_type, c.category == Category.PERMANENT.value)
            self._types[key] = found
        return found

    def owner(self, task_name: str) -> str:
        found = self._owners.get(task_name)
        if found is None:
            found = self._owners[task_name] = self.policy.breaker_key(task_name, "").rpartition(
                ":"
            )[0]
        return found


@dataclass(slots=True)
class _Key:
    failure_type: str
    times: list[float] = field(default_factory=list)
    events: list[FailureEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Owner:
    successes: list[float] = field(default_factory=list)
    keys: dict[str, _Key] = field(default_factory=dict)
    ordered: list[_Key] = field(default_factory=list)  # most failures first
    first: float = float("inf")
    last: float = float("-inf")

    def see(self, at: float) -> None:
        self.first, self.last = min(self.first, at), max(self.last, at)


@dataclass(slots=True)
class _Own:
    """What one task's own runs say about it."""

    by_type: dict[str, list[tuple[float, FailureEvent]]] = field(default_factory=dict)
    permanent: FailureEvent | None = None


def _nearest(times: list[float], at: float) -> tuple[float, int]:
    """(distance to the nearest of the sorted `times`, its index); inf when empty."""
    i = bisect_left(times, at)
    best, where = float("inf"), -1
    if i < len(times):
        best, where = times[i] - at, i
    if i > 0 and at - times[i - 1] <= best:
        best, where = at - times[i - 1], i - 1
    return best, where


@dataclass(slots=True)
class _Kind:
    """Per task name: how many tasks showed what they are made of (a success or a
    permanent failure), how many of those were permanent, and examples of those."""

    revealed: int = 0
    permanent: list[tuple[float, FailureEvent]] = field(default_factory=list)

    def share(self) -> float:
        return len(self.permanent) / self.revealed if self.revealed else 0.0


class OutageModel:
    def __init__(self, history: History, observer: Observer) -> None:
        self.observer = observer
        self._owners: dict[str, _Owner] = {}
        self._own: dict[int, _Own] = {}
        self._kinds: dict[str, _Kind] = {}
        for task in history.tasks:
            own = _Own()
            revealed = False
            for run in task.runs:
                self._observe(task.task_name, run.at, run.failure, own)
                revealed = revealed or run.failure is None
            if own.by_type or own.permanent is not None:
                self._own[task.index] = own
            kind = self._kinds.get(task.task_name)
            if kind is None:
                kind = self._kinds[task.task_name] = _Kind()
            if own.permanent is not None:
                kind.permanent.append((task.runs[-1].at, own.permanent))
                kind.revealed += 1
            elif revealed:
                kind.revealed += 1
        for event in history.exogenous:
            if event.kind != "start":
                failure = event.event if event.kind == "failure" else None
                self._observe(event.event.task_name, event.at, failure, None)  # type: ignore[arg-type]
        for owner in self._owners.values():
            owner.successes.sort()
            for key in owner.keys.values():
                pairs = sorted(zip(key.times, range(len(key.times)), key.events, strict=True))
                key.times = [p[0] for p in pairs]
                key.events = [p[2] for p in pairs]
            owner.ordered = sorted(owner.keys.values(), key=lambda k: -len(k.times))

    def _observe(
        self, task_name: str, at: float, failure: FailureEvent | None, own: _Own | None
    ) -> None:
        name = self.observer.owner(task_name)
        owner = self._owners.get(name)
        if owner is None:
            owner = self._owners[name] = _Owner()
        owner.see(at)
        if failure is None:
            owner.successes.append(at)
            return
        failure_type, permanent = self.observer.classify(failure)
        if permanent:
            if own is not None:
                own.permanent = failure
            return
        key = owner.keys.get(failure_type)
        if key is None:
            key = owner.keys[failure_type] = _Key(failure_type)
        key.times.append(at)
        key.events.append(failure)
        if own is not None:
            own.by_type.setdefault(failure_type, []).append((at, failure))

    def outcome(self, task: TaskHistory, run: int, at: float) -> tuple[FailureEvent | None, bool]:
        owner = self._owners[self.observer.owner(task.task_name)]
        outside = at < owner.first or at > owner.last
        own = self._own.get(task.index)
        keys = owner.ordered
        if own is not None and own.by_type:  # the task's own kinds of failure first
            mine = [owner.keys[t] for t in own.by_type]
            keys = mine + [k for k in keys if k.failure_type not in own.by_type]
        up, _ = _nearest(owner.successes, at)
        for key in keys:
            down, where = _nearest(key.times, at)
            if down <= up:
                return self._example(key, where, own, at), outside
        if own is not None and own.permanent is not None:
            return own.permanent, outside
        if own is not None and own.by_type:
            hidden = self._hidden_permanent(task, at)
            if hidden is not None:
                return hidden, outside
        return None, outside

    def _hidden_permanent(self, task: TaskHistory, at: float) -> FailureEvent | None:
        """A task seen only failing transiently may also carry bad input that its runs
        never reached: as often as the tasks of its name that showed what they are made
        of did (a fixed draw per task, so all its runs agree)."""
        if any(run.failure is None for run in task.runs):
            return None  # it succeeded once: nothing permanent in it
        kind = self._kinds.get(task.task_name)
        if kind is None or not kind.permanent:
            return None
        if hashed_draw(0, task.task_id, -1) >= kind.share():
            return None
        return min(kind.permanent, key=lambda p: abs(p[0] - at))[1]

    @staticmethod
    def _example(key: _Key, where: int, own: _Own | None, at: float) -> FailureEvent:
        """The task's own failure of that type nearest in time, else the key's nearest."""
        if own is not None and key.failure_type in own.by_type:
            return min(own.by_type[key.failure_type], key=lambda p: abs(p[0] - at))[1]
        return key.events[where]
