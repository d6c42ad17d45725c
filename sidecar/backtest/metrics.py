"""What a replay (or the recorded history) did to each task, and the figures M of issue 16:

    tasks                        distinct task ids that failed at least once
    succeeded                    of those, the ones that later succeeded
    dead_lettered, discarded     of those, the ones the policy gave up on
    retries                      retries scheduled (decisions "retry")
    time_to_success_p50_seconds  first failure → success, over the tasks that succeeded
    time_to_success_p95_seconds  (nearest rank; null when none succeeded)
    breaker_openings             breakers opened by these tasks' failures
    peak_retries_per_minute      most retry runs reported within one clock minute

A task belongs to the failure type its first failure has under the baseline policy (the
policy the history was recorded under), in every column, so columns compare the same kind
of work.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

METRICS = (
    "tasks",
    "succeeded",
    "dead_lettered",
    "discarded",
    "retries",
    "time_to_success_p50_seconds",
    "time_to_success_p95_seconds",
    "breaker_openings",
    "peak_retries_per_minute",
)


@dataclass(slots=True)
class TaskResult:
    task_id: str
    task_name: str
    failure_type: str | None = None  # of the first failure; None: never failed
    first_failure_at: float | None = None
    ended: str | None = None  # "succeeded" | "dead_lettered" | "discarded" | None
    ended_at: float | None = None
    retries: int = 0
    retry_runs: list[float] = field(default_factory=list)  # report times of retry runs
    openings: int | None = 0  # None: not known (the recorded history does not say)
    model_runs: int = 0  # runs whose outcome the model inferred (not observed)
    outside_span: int = 0  # of those, runs outside the observed span of their dependency

    def failed(self, at: float, failure_type: str) -> None:
        if self.first_failure_at is None:
            self.first_failure_at, self.failure_type = at, failure_type


Selector = Callable[[TaskResult], bool]


def selector(task: str | None = None, failure_type: str | None = None) -> Selector:
    """Tasks whose name matches the glob `task` and whose failure type is `failure_type`."""

    def keep(result: TaskResult) -> bool:
        if task is not None and not fnmatchcase(result.task_name, task):
            return False
        return failure_type is None or result.failure_type == failure_type

    return keep


def percentile(values: list[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least `share` of the values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarize(results: Iterable[TaskResult]) -> dict[str, float | int | None]:
    tasks = succeeded = dead = discarded = retries = 0
    openings: int | None = 0
    waits: list[float] = []
    per_minute: Counter[int] = Counter()
    for r in results:
        if r.first_failure_at is None:
            continue
        tasks += 1
        retries += r.retries
        if r.ended == "succeeded":
            succeeded += 1
            waits.append(r.ended_at - r.first_failure_at)  # type: ignore[operator]
        elif r.ended == "dead_lettered":
            dead += 1
        elif r.ended == "discarded":
            discarded += 1
        if r.openings is None or openings is None:
            openings = None
        else:
            openings += r.openings
        for at in r.retry_runs:
            per_minute[int(at // 60)] += 1
    p50, p95 = percentile(waits, 0.50), percentile(waits, 0.95)
    return {
        "tasks": tasks,
        "succeeded": succeeded,
        "dead_lettered": dead,
        "discarded": discarded,
        "retries": retries,
        "time_to_success_p50_seconds": None if p50 is None else round(p50, 3),
        "time_to_success_p95_seconds": None if p95 is None else round(p95, 3),
        "breaker_openings": openings,
        "peak_retries_per_minute": max(per_minute.values(), default=0),
    }


def by_failure_type(
    columns: dict[str, list[TaskResult]], keep: Selector
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """{TYPE: {column: M}} for every failure type seen in any column."""
    grouped: dict[str, dict[str, list[TaskResult]]] = {}
    for column, results in columns.items():
        for r in results:
            if r.failure_type is not None and keep(r):
                grouped.setdefault(r.failure_type, {c: [] for c in columns})[column].append(r)
    return {
        failure_type: {column: summarize(found) for column, found in sorted_columns.items()}
        for failure_type, sorted_columns in sorted(grouped.items())
    }
