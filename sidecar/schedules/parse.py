"""Schedules from plain values: a policy file's `schedules:`, a schedule file, the body of
`PUT /v1/schedules`. Every problem is collected and names the entry and the field:
`schedules[2] (nightly-report).cron: minute field '61' out of range 0-59`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from zoneinfo import ZoneInfoNotFoundError

from ..policy.cron import CronError, check_cron
from ..policy.durations import parse_duration
from .model import Schedule, ScheduleError, ScheduleProblem, zone

ENTRY_KEYS = ("name", "cron", "queue", "expected_duration", "timezone")


def parse_schedule(entry: object, index: int | None = None, *, strict: bool = False) -> Schedule:
    """A validated Schedule from `{name, cron, queue?, expected_duration?, timezone?}`.

    Raises ScheduleError listing every problem of the entry, each naming the entry and the
    field: `schedules[2] (nightly-report).cron: minute field '61' out of range 0-59`.
    Unknown keys are ignored (the wire contract) unless `strict`.
    """
    where = "schedule" if index is None else f"schedules[{index}]"
    problems: list[ScheduleProblem] = []
    if not isinstance(entry, Mapping):
        shown = "a list" if isinstance(entry, list) else repr(entry)
        raise ScheduleError([ScheduleProblem(where, f"expected a mapping, got {shown}")])

    name = entry.get("name")
    if isinstance(name, str) and name.strip():
        where = f"{where} ({name})"
    else:
        path = f"{where}.name"
        problems.append(
            ScheduleProblem(path, "missing required key 'name'")
            if name is None
            else ScheduleProblem(path, f"expected a non-empty string, got {name!r}")
        )

    def problem(key: str, message: str) -> None:
        problems.append(ScheduleProblem(f"{where}.{key}", message))

    cron = entry.get("cron")
    if cron is None:
        problem("cron", "missing required key 'cron'")
    elif not isinstance(cron, str):
        problem("cron", f"expected a cron expression like '*/5 * * * *', got {cron!r}")
    else:
        try:
            check_cron(cron)
        except CronError as exc:
            problem("cron", str(exc))

    queue = entry.get("queue")
    if queue is not None and not (isinstance(queue, str) and queue):
        problem("queue", f"expected a non-empty string, got {queue!r}")

    duration = entry.get("expected_duration")
    if duration is not None:
        try:
            duration = parse_duration(duration)
        except ValueError as exc:
            problem("expected_duration", str(exc))

    tz = entry.get("timezone")
    if tz is not None:
        try:
            if not isinstance(tz, str):
                raise ValueError
            zone(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problem("timezone", f"unknown time zone {tz!r}")

    if strict:
        for key in entry:
            if key not in ENTRY_KEYS:
                close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; expected {ENTRY_KEYS}"
                problem(str(key), f"unknown key '{key}'{hint}")

    if problems:
        raise ScheduleError(problems)
    return Schedule(
        name=name,  # type: ignore[arg-type]  # checked above
        cron=cron,  # type: ignore[arg-type]
        queue=queue,  # type: ignore[arg-type]
        expected_duration=duration,  # type: ignore[arg-type]
        timezone=tz,  # type: ignore[arg-type]
    )


def parse_schedules(data: object, *, strict: bool = False) -> tuple[Schedule, ...]:
    """Schedules from a list of entries, or a mapping with a `schedules:` list.

    Raises ScheduleError listing the problems of every entry (and duplicate names).
    """
    if isinstance(data, Mapping):
        if "schedules" not in data:
            raise ScheduleError([ScheduleProblem("schedules", "missing the 'schedules' key")])
        data = data["schedules"]
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ScheduleError(
            [ScheduleProblem("schedules", f"expected a list of schedules, got {data!r:.60}")]
        )
    out: list[Schedule] = []
    problems: list[ScheduleProblem] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        try:
            schedule = parse_schedule(entry, index, strict=strict)
        except ScheduleError as exc:
            problems.extend(exc.problems)
            continue
        if schedule.name in seen:
            problems.append(
                ScheduleProblem(
                    f"schedules[{index}] ({schedule.name}).name",
                    f"duplicate name, also schedules[{seen[schedule.name]}]",
                )
            )
        seen.setdefault(schedule.name, index)
        out.append(schedule)
    if problems:
        raise ScheduleError(problems)
    return tuple(out)
