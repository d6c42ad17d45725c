"""Read and validate an exported event history (JSON Lines, issue 16 §1) into task chains.

One line per hook event the sidecar answered:

    {"at": 1764345600.0, "kind": "failure", "event": {<FailureEvent>},
     "decision": {"action": "retry", "delay_seconds": 42.7}}
    {"at": 1764345642.9, "kind": "success", "event": {<SuccessEvent>}}
    {"at": 1764345641.2, "kind": "start", "event": {<StartEvent>}}

Pure: the caller hands in (line number, bytes) pairs, so the file is read at the edge
(`cli.py`). Every problem names its line: `line 12: event.exception.type: required field
is missing`.

What a chain is. The events of one task id, oldest first, group into runs: the start hooks
of a run (when the worker reported them), then its failure (with the decision) or success.
A chain ends at its first success, dead letter or discard; anything after that is ignored
(counted). Events with a `dlq_id` are runs an operator retried from the dead-letter queue:
they changed the sidecar's state, so the replay feeds them at their recorded times, but
they are not consequences of the retry policy and are not part of any chain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from ..policy.events import (
    ExceptionInfo,
    FailureEvent,
    Seconds,
    StartEvent,
    SuccessEvent,
    decode_error_path,
)


class HistoryError(ValueError):
    """A line of the history is unusable."""

    def __init__(self, line: int, path: str, message: str) -> None:
        self.line, self.path, self.message = line, path, message
        where = f"{path}: " if path else ""
        super().__init__(f"line {line}: {where}{message}")


class RecordedDecision(msgspec.Struct, frozen=True):
    action: Literal["retry", "dead_letter", "discard"]
    delay_seconds: Seconds


class _Line(msgspec.Struct):
    at: Seconds
    kind: str
    event: msgspec.Raw
    decision: RecordedDecision | None = None


_KINDS = {"failure": FailureEvent, "success": SuccessEvent, "start": StartEvent}
_decode_line = msgspec.json.Decoder(_Line).decode
_decoders = {kind: msgspec.json.Decoder(cls).decode for kind, cls in _KINDS.items()}


@dataclass(slots=True)
class Run:
    """One recorded run of a task: reported at `at` (line `line`), after the start hooks
    `starts` ((at, line) pairs, oldest first; empty when the worker did not report them)."""

    at: float
    line: int
    failure: FailureEvent | None  # None: the run succeeded
    success: SuccessEvent | None
    decision: RecordedDecision | None
    starts: tuple[tuple[float, int], ...] = ()


@dataclass(slots=True)
class TaskHistory:
    index: int
    task_id: str
    task_name: str
    runs: list[Run]
    first_attempt: int  # > 0: the task's first failures are older than the history
    uses_start: bool  # the worker asks `hooks/start` before a run (some run had starts)
    # Seconds the world added to each run, replayed when a policy moves the run in time:
    # `pickup[k]` from due to the first start hook, `work[k]` from the last start hook (or
    # from due, without start hooks) to the report.
    pickup: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)

    @property
    def in_flight(self) -> bool:
        """The history ends while the task waits for a retry."""
        last = self.runs[-1]
        return last.decision is not None and last.decision.action == "retry"


@dataclass(slots=True)
class Exogenous:
    """An event outside any chain (a run retried from the DLQ), replayed as recorded."""

    at: float
    line: int
    kind: str
    event: FailureEvent | SuccessEvent | StartEvent


@dataclass(slots=True)
class History:
    tasks: list[TaskHistory]
    exogenous: list[Exogenous]
    lines: int  # events read
    starts: int
    ignored: int  # events after a chain's end, or start hooks of runs that never reported
    first_at: float
    last_at: float
    order: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    # Seconds from a retry's due time to its first start hook (queue waits), sorted: a run
    # the replay postpones is published again and waits in the queue as long as one of these.
    queue_waits: list[float] = field(default_factory=list)
    # The same without start hooks: seconds from a retry's due time to its report.
    report_gaps: list[float] = field(default_factory=list)

    @property
    def decisions(self) -> int:
        """Recorded failure decisions in the chains."""
        return sum(1 for task in self.tasks for run in task.runs if run.failure is not None)


def parse(lines: Iterable[tuple[int, bytes]]) -> History:
    """Validate every line and build the chains. Raises HistoryError at the first bad line."""
    by_task: dict[str, list[tuple[float, int, str, object, RecordedDecision | None]]] = {}
    exogenous: list[Exogenous] = []
    count = starts = 0
    first_at, last_at = float("inf"), float("-inf")
    exceptions: dict[tuple, ExceptionInfo] = {}  # one object per distinct exception
    decode_line, decoders = _decode_line, _decoders
    for number, raw in lines:
        try:  # the two decodes inline: this loop runs once per event of a month
            line = decode_line(raw)
            kind, at = line.kind, line.at
            event = decoders[kind](line.event)
        except (msgspec.DecodeError, KeyError) as exc:
            if isinstance(exc, msgspec.DecodeError) and not raw.strip():
                continue  # a blank line
            raise _problem(number, raw, exc) from None
        if kind == "failure":
            if line.decision is None:
                raise HistoryError(number, "decision", "required on failure lines")
            event = _lean(event, exceptions)  # type: ignore[arg-type]
        elif kind == "start":
            starts += 1
        count += 1
        if at < first_at:
            first_at = at
        if at > last_at:
            last_at = at
        if kind != "start" and event.dlq_id:  # type: ignore[union-attr]
            exogenous.append(Exogenous(at, number, kind, event))
            continue
        found = by_task.get(event.task_id)
        if found is None:
            found = by_task[event.task_id] = []
        found.append((at, number, kind, event, line.decision))
    tasks: list[TaskHistory] = []
    ignored = 0
    for task_id, events in by_task.items():
        task, dropped = _chain(len(tasks), task_id, events)
        ignored += dropped
        if task is not None:
            tasks.append(task)
    exogenous.sort(key=lambda e: (e.at, e.line))
    if not count:
        first_at = last_at = 0.0
    history = History(tasks, exogenous, count, starts, ignored, first_at, last_at)
    history.order = _order(history)
    history.queue_waits = sorted(
        t.pickup[k] for t in tasks for k in range(1, len(t.runs)) if t.runs[k].starts
    )
    history.report_gaps = sorted(
        t.work[k] for t in tasks for k in range(1, len(t.runs)) if not t.runs[k].starts
    )
    return history


def _problem(number: int, raw: bytes, exc: Exception) -> HistoryError:
    """Say what is wrong with a line that did not decode: decode it again step by step."""
    try:
        line = _decode_line(raw)
    except msgspec.ValidationError as error:
        return HistoryError(number, *decode_error_path(error))
    except msgspec.DecodeError as error:
        return HistoryError(number, "", f"invalid JSON: {error}")
    decoder = _decoders.get(line.kind)
    if decoder is None:
        known = ", ".join(f'"{k}"' for k in _KINDS)
        return HistoryError(number, "kind", f"expected one of {known}, got {line.kind!r}")
    try:
        decoder(line.event)
    except msgspec.ValidationError as error:
        path, message = decode_error_path(error)
        return HistoryError(number, f"event.{path}".rstrip("."), message)
    return HistoryError(number, "", str(exc))  # pragma: no cover - it decoded the 1st time


def _order(history: History) -> list[tuple[float, int, int, int, int]]:
    """Every recorded start and report as (at, line, task index, run index, start step or
    -1 for the report), and the exogenous events (task index -1), oldest first."""
    out: list[tuple[float, int, int, int, int]] = []
    append = out.append
    for task in history.tasks:
        index = task.index
        for k, run in enumerate(task.runs):
            for step, (at, line) in enumerate(run.starts):
                append((at, line, index, k, step))
            append((run.at, run.line, index, k, -1))
    for k, event in enumerate(history.exogenous):
        append((event.at, event.line, -1, k, -1))
    out.sort()
    return out


def _lean(event: FailureEvent, seen: dict[tuple, ExceptionInfo]) -> FailureEvent:
    """Drop what the replay never reads (traceback, args, kwargs) and share equal
    exceptions: a month of history holds the same few exceptions many times."""
    exc = event.exception
    key = (exc.type, exc.module, exc.mro, exc.message, exc.errno, exc.http_status, exc.sqlstate)
    shared = seen.get(key)
    if shared is None:
        shared = seen[key] = msgspec.structs.replace(exc, traceback=None)
    return msgspec.structs.replace(event, exception=shared, args=(), kwargs={})


def _chain(
    index: int,
    task_id: str,
    events: list[tuple[float, int, str, object, RecordedDecision | None]],
) -> tuple[TaskHistory | None, int]:
    if len(events) > 1:
        events.sort()  # by (at, line): lines are unique, so nothing else is compared
    runs: list[Run] = []
    pickup: list[float] = []
    work: list[float] = []
    pending: list[tuple[float, int]] = []
    ended = uses_start = False
    ignored = 0
    due = None  # when the run in progress was due (None: the first run, or unknown)
    last_due = None  # ... and when the last reported run was
    for at, number, kind, event, decision in events:
        if kind == "start" and runs and _late_start(event, runs[-1]):  # type: ignore[arg-type]
            _attach_late_start(runs[-1], number, last_due, pickup, work)
            uses_start = True
            continue
        if ended:
            ignored += 1
            continue
        if kind == "start":
            pending.append((at, number))
            continue
        if kind == "failure":
            run = Run(at, number, event, None, decision, tuple(pending))  # type: ignore[arg-type]
            ended = decision.action != "retry"  # type: ignore[union-attr]
        else:
            run = Run(at, number, None, event, None, tuple(pending))  # type: ignore[arg-type]
            ended = True
        if pending:
            uses_start = True
            pickup.append(max(0.0, pending[0][0] - due) if due is not None else 0.0)
            work.append(max(0.0, at - pending[-1][0]))
            pending = []
        else:
            pickup.append(0.0)
            work.append(max(0.0, at - due) if due is not None else 0.0)
        last_due = due
        due = at + decision.delay_seconds if decision is not None else None
        runs.append(run)
    ignored += len(pending)  # a run that started and never reported (or is still running)
    if not runs:
        return None, ignored
    first = runs[0].failure or runs[0].success
    task = TaskHistory(
        index,
        task_id,
        first.task_name,
        runs,
        first.attempt,
        uses_start,
        pickup,
        work,  # type: ignore[union-attr]
    )
    return task, ignored


def _late_start(start: StartEvent, run: Run) -> bool:
    """A start hook of a run that has already reported. Workers send the starts they need
    no answer to in their batch, which can reach the sidecar after the run's own (direct)
    failure report: the start carries the run's attempt. A redelivery or a run from the DLQ
    is a new run of the same attempt, never a late start."""
    if start.redelivery or start.dlq_id:
        return False
    report = run.failure or run.success
    return report is not None and start.attempt == report.attempt


def _attach_late_start(
    run: Run, line: int, due: float | None, pickup: list[float], work: list[float]
) -> None:
    """Give `run` the start it reported late, placed just before its report (the run
    started between its due time and its report; when exactly, the history does not say)
    so that the replay meets the start first."""
    at = math.nextafter(run.at, -math.inf)
    run.starts = (*run.starts, (at, line))
    first = run.starts[0][0]
    pickup[-1] = max(0.0, first - due) if due is not None else 0.0
    work[-1] = max(0.0, run.at - run.starts[-1][0])
