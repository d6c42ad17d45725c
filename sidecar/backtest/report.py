"""The result of a simulation as a JSON document and as a side-by-side table."""

from __future__ import annotations

from typing import Any

from .metrics import METRICS, Selector, TaskResult, by_failure_type, selector, summarize
from .simulate import HORIZON, Simulation

COLUMNS = ("recorded", "baseline", "candidate")
_HORIZON_DAYS = round(HORIZON / 86400)


def report(sim: Simulation, task: str | None = None, failure_type: str | None = None) -> dict:
    """{"baseline": M, "candidate": M, "recorded": M, "by_failure_type": {TYPE: {...}},
    "uncertainty": {...}}, narrowed to tasks matching `task` (a glob) and `failure_type`."""
    keep = selector(task, failure_type)
    columns = {
        "recorded": sim.recorded,
        "baseline": sim.baseline.results,
        "candidate": sim.candidate.results,
    }
    chosen = {name: [r for r in results if keep(r)] for name, results in columns.items()}
    history = sim.history
    recorded = {r.task_id: r for r in chosen["recorded"]}
    tasks = [t for t in history.tasks if t.task_id in recorded]
    return {
        "baseline": summarize(chosen["baseline"]),
        "candidate": summarize(chosen["candidate"]),
        "recorded": summarize(chosen["recorded"]),
        "by_failure_type": by_failure_type(columns, keep),
        "uncertainty": {
            "observed_span": {"from": history.first_at, "until": history.last_at},
            "attempts_outside_observed_span": _per_pass(chosen, lambda r: r.outside_span),
            "attempts_inferred": _per_pass(chosen, lambda r: r.model_runs),
            "tasks_unfinished": _per_pass(chosen, _unfinished),
            "recorded_tasks_in_flight": sum(1 for t in tasks if t.in_flight),
            "tasks_started_before_history": sum(1 for t in tasks if t.first_attempt > 0),
            "recorded_decisions": sim.baseline.decisions_recorded,
            "baseline_decisions_reproduced": sim.baseline.decisions_reproduced,
            "events": history.lines,
            "events_ignored": history.ignored,
        },
    }


def _per_pass(chosen: dict[str, list[TaskResult]], count) -> dict[str, int]:
    return {name: sum(count(r) for r in chosen[name]) for name in ("baseline", "candidate")}


def _unfinished(result: TaskResult) -> int:
    return int(result.first_failure_at is not None and result.ended is None)


# --- the table ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _change(old: Any, new: Any) -> str:
    if old is None or new is None:
        return "-"
    diff = new - old
    if diff == 0:
        return "0"
    text = f"{diff:+.1f}" if isinstance(diff, float) else f"{diff:+d}"
    if old:
        text += f" ({diff / old:+.0%})"
    return text


def _block(rows: dict[str, dict[str, Any]], indent: str = "") -> list[str]:
    width = max(len(name) for name in METRICS) + 2
    head = f"{indent}{'':<{width}}" + "".join(f"{c:>12}" for c in COLUMNS) + f"{'change':>18}"
    lines = [head]
    for name in METRICS:
        cells = "".join(f"{_cell(rows[c][name]):>12}" for c in COLUMNS)
        change = _change(rows["baseline"][name], rows["candidate"][name])
        lines.append(f"{indent}{name:<{width}}{cells}{change:>18}")
    return lines


def table(doc: dict) -> str:
    """Recorded, baseline and candidate side by side; change = candidate − baseline."""
    lines = _block(doc)
    for failure_type, rows in doc["by_failure_type"].items():
        lines += ["", failure_type]
        lines += _block(rows, "  ")
    u = doc["uncertainty"]
    outside, inferred = u["attempts_outside_observed_span"], u["attempts_inferred"]
    unfinished = u["tasks_unfinished"]
    lines += [
        "",
        "uncertainty",
        f"  attempts inferred by the outage model: baseline {inferred['baseline']}, "
        f"candidate {inferred['candidate']}",
        f"  ... outside the observed span (last state held): baseline {outside['baseline']}, "
        f"candidate {outside['candidate']}",
        f"  tasks unfinished {_HORIZON_DAYS} days after the history: "
        f"baseline {unfinished['baseline']}, candidate {unfinished['candidate']}",
        f"  recorded tasks still in flight when the history ends: {u['recorded_tasks_in_flight']}",
        f"  tasks whose first failure is older than the history: "
        f"{u['tasks_started_before_history']}",
        f"  recorded decisions reproduced by the baseline: "
        f"{u['baseline_decisions_reproduced']} of {u['recorded_decisions']}",
        f"  events read: {u['events']} ({u['events_ignored']} ignored)",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["Selector", "report", "table"]
