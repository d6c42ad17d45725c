"""Periodic-task schedules: starts per minute and hour, hotspots, conflicts, a health score
and recommendations.

Pure functions and frozen values: no I/O, and no clock — the caller passes `start`. Cron
expressions are evaluated by `cronsim` (the evaluator of Healthchecks.io, which follows
Debian cron, including its behaviour at daylight-saving changes); nothing here parses cron.

Inputs
    `Schedule(name, cron, queue?, expected_duration?, timezone?)` from policies.yaml's
    `schedules:`, a schedule file, `PUT /v1/schedules`, or a Celery beat entry through
    `schedule_from_celery`. `cron` is a 5-field expression (`*/15 9-17 * * mon-fri`), a
    nickname (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`,
    `@annually`), or an interval `@every 30s` (Celery's number/timedelta schedules).
    A schedule without a time zone runs in UTC; one without a queue is counted on the queue
    `default`; one without an expected duration takes no time: it counts in hotspots but never
    overlaps anything (give a duration to the tasks whose overlaps matter).

Time zones
    A cron runs on the wall clock of its IANA zone, exactly as cronsim (Debian cron) does:
    - a job at a fixed time (neither minute nor hour field starts with `*`) that falls in the
      hour skipped by a spring-forward change runs at the first valid minute after it
      (`30 2 * * *` in Europe/Berlin on 2025-03-30 runs at 03:00 CEST = 01:00 UTC); at a
      fall-back change it runs once, at the first of the two 01:30s (`30 1 * * *` in
      America/New_York on 2025-11-02 runs at 01:30 EDT = 05:30 UTC);
    - a job whose minute or hour field starts with `*` follows the clock: `30 * * * *` runs
      23 times on a spring-forward day and 25 times on a fall-back day.
    Intervals (`@every`) ignore time zones and are anchored at `start`: Celery beat starts
    every interval entry when it starts, so entries with the same period stay in phase.

The analysis (`analyse`) covers `[start, start + horizon)`, with `start` floored to the
minute; a run that began before `start` is not seen. Every figure is in UTC.

    starts per minute / per hour   runs starting in each minute / hour of the horizon
    load by hour                   the same per queue
    hotspot                        a minute in which more than `hotspot_threshold` runs start
    conflict "self_overlap"        a run starts while the previous run of the same task is
                                   still running (start + expected_duration)
    conflict "queue_overlap"       runs of two tasks on the same queue overlap: the later
                                   starts before the earlier ends (both need a duration)

Health score (0–100)
    H = excess starts / all starts, where the excess of a minute is max(0, starts −
        threshold): the share of starts that would have to move for no minute to be a
        hotspot;
    C = runs in at least one conflict / all runs;
    score = 100 × (1 − (H + C) / 2), rounded half up: 100 for an empty or a clean schedule,
    50 when every run conflicts (or nearly every start is excess), 0 when both are total.
    Both parts are shares, so a schedule that repeats daily scores the same over 24 h and 7 d.

Recommendations
    Only a cron's minute field is changed, never its hours or days. The tasks starting in a
    hotspot minute are taken one by one (the one listed last first, so the first-listed tends
    to stay); each is tried at every distinct shift of its minutes (0–59) and put where, in
    this order: the busiest minute it would start in is least busy; its runs overlap fewest
    runs of its queue; it stays where it is; its starts are farthest from other starts;
    the shift is smallest. The new schedules are analysed again: the recommendations are
    kept only when the peak (most starts in one minute) drops and the score does not fall.
    Intervals and every-minute crons are never moved.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .durations import format_duration, parse_duration
from .model import Schedule

DAY = timedelta(hours=24)
WEEK = timedelta(days=7)
MAX_HORIZON = timedelta(days=31)
DEFAULT_HOTSPOT_THRESHOLD = 5
DEFAULT_QUEUE = "default"
MIN_INTERVAL = 1.0  # seconds; shorter `@every` intervals are refused
MAX_RUNS = 250_000  # runs in one analysis, to bound the work one request can cause

SELF_OVERLAP = "self_overlap"
QUEUE_OVERLAP = "queue_overlap"

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES_HINT = ("", "", "", " or JAN-DEC", " or SUN-SAT")
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_ENTRY_KEYS = ("name", "cron", "queue", "expected_duration", "timezone")


# --- errors -------------------------------------------------------------------------------


class CronError(ValueError):
    """A cron expression cannot be used; `field` names the bad field when one is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ScheduleProblem:
    path: str  # e.g. "schedules[2] (nightly-report).cron"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ScheduleError(ValueError):
    """Schedules cannot be used; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[ScheduleProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


# --- cron expressions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    """A validated schedule expression: a 5-field cron, or an interval in seconds."""

    cron: str | None
    every: float | None = None


def check_cron(expr: object) -> None:
    """Raise CronError (naming the field) unless `expr` is a usable schedule expression."""
    _spec(expr)


def _spec(expr: object) -> _Spec:
    if not isinstance(expr, str):
        raise CronError(f"expected a cron expression like '*/5 * * * *', got {expr!r}")
    return _parsed(expr)


@lru_cache(maxsize=4096)
def _parsed(expr: str) -> _Spec:
    text = " ".join(expr.split())
    lowered = text.lower()
    if lowered.startswith("@every"):
        return _Spec(None, _interval(text[len("@every") :].strip()))
    if lowered.startswith("@"):
        if lowered == "@reboot":
            raise CronError("@reboot runs once at start, not periodically")
        if lowered not in _NICKNAMES:
            known = ", ".join([*_NICKNAMES, "@every <duration>"])
            raise CronError(f"unknown nickname {text!r}; expected one of {known}")
        return _Spec(_NICKNAMES[lowered])
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts) if text else 0} in {expr!r}"
        )
    try:
        CronSim(text, _EPOCH)
    except CronSimError as exc:
        raise _field_error(parts, str(exc)) from None
    except (ValueError, IndexError, AssertionError):  # defensive: report, never crash
        raise CronError(f"invalid cron expression {text!r}") from None
    return _Spec(text)


def _interval(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise CronError(f"@every expects a duration like 30s or 5m, got {text!r}") from None
    if seconds < MIN_INTERVAL:
        raise CronError(f"@every interval {text!r} is below {MIN_INTERVAL:g}s")
    return seconds


def _field_error(parts: list[str], reason: str, names: Sequence[str] = FIELDS) -> CronError:
    """A message naming the field cronsim refused ("Bad minute") and, if we can, why."""
    index = next((i for i, name in enumerate(FIELDS) if reason.endswith(f" {name}")), None)
    if index is None:
        return CronError(f"invalid cron expression {' '.join(parts)!r}: {reason}")
    name, text = names[index], parts[index]
    low, high = _RANGES[index]
    # Numbers that are values (not steps after '/' nor ordinals after '#'):
    for number in re.findall(r"(?<![/#\d])\d+", text):
        if not low <= int(number) <= high:
            if number == text:
                return CronError(f"{name} field '{text}' out of range {low}-{high}", name)
            return CronError(f"{name} field '{text}': {number} out of range {low}-{high}", name)
    if index == 2:  # in range, but maybe never together with the months
        try:
            CronSim(f"0 0 {text} * *", _EPOCH)
        except CronSimError:
            pass
        else:
            return CronError(f"{name} field '{text}' never occurs in the months '{parts[3]}'", name)
    return CronError(
        f"{name} field '{text}' is not valid: expected numbers {low}-{high}"
        f"{_NAMES_HINT[index]}, ranges (1-5), steps (*/15) or lists (0,30)",
        name,
    )


@lru_cache(maxsize=64)
def _zone(name: str | None) -> tzinfo:
    if name is None or name in ("UTC", "Etc/UTC"):
        return UTC
    return ZoneInfo(name)


# --- building schedules from plain values ---------------------------------------------------


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

    zone = entry.get("timezone")
    if zone is not None:
        try:
            if not isinstance(zone, str):
                raise ValueError
            _zone(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problem("timezone", f"unknown time zone {zone!r}")

    if strict:
        for key in entry:
            if key not in _ENTRY_KEYS:
                close = difflib.get_close_matches(str(key), _ENTRY_KEYS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; expected {_ENTRY_KEYS}"
                problem(str(key), f"unknown key '{key}'{hint}")

    if problems:
        raise ScheduleError(problems)
    return Schedule(
        name=name,  # type: ignore[arg-type]  # checked above
        cron=cron,  # type: ignore[arg-type]
        queue=queue,  # type: ignore[arg-type]
        expected_duration=duration,  # type: ignore[arg-type]
        timezone=zone,  # type: ignore[arg-type]
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


def schedule_from_celery(
    name: str,
    entry: Mapping[str, Any],
    *,
    timezone: str | None = None,
    expected_duration: float | None = None,
    queue: str | None = None,
) -> Schedule:
    """A Schedule from one `beat_schedule` entry (`{"task", "schedule", "options"?}`).

    `schedule` may be a `celery.schedules.crontab` (its expanded minute, hour, day_of_week,
    day_of_month and month_of_year sets), a `celery.schedules.schedule` (`run_every`), a
    number of seconds or a timedelta; the last three become `@every <interval>`. Celery is
    not imported: any object with those attributes will do. `timezone` is the app's
    (`app.conf.timezone`); the queue is `queue`, else the entry's `options.queue`.
    Raises ScheduleError naming the entry.
    """
    where = f"beat_schedule[{name!r}]"
    if not isinstance(entry, Mapping) or "schedule" not in entry:
        raise ScheduleError([ScheduleProblem(where, "expected a mapping with a 'schedule'")])
    value = entry["schedule"]
    try:
        cron = _celery_cron(value)
    except CronError as exc:
        raise ScheduleError([ScheduleProblem(f"{where}.schedule", str(exc))]) from None
    options = entry.get("options") or {}
    if queue is None and isinstance(options, Mapping):
        queue = options.get("queue")
    return parse_schedule(
        {
            "name": name,
            "cron": cron,
            "queue": queue,
            "expected_duration": expected_duration,
            "timezone": timezone,
        }
    )


_CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
_CRONTAB_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _celery_cron(value: object) -> str:
    if all(hasattr(value, attribute) for attribute in _CRONTAB_FIELDS):
        return _crontab_cron(value)
    if hasattr(value, "run_every"):
        value = value.run_every
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not value >= MIN_INTERVAL:
            raise CronError(f"interval of {value!r} seconds is below {MIN_INTERVAL:g}s")
        return f"@every {format_duration(float(value))}"
    raise CronError(
        f"unsupported schedule {type(value).__name__}: expected a crontab, an interval "
        "(schedule, seconds or timedelta); solar schedules are not analysed"
    )


def _crontab_cron(value: object) -> str:
    sets: list[set[int]] = []
    for attribute, (low, high) in zip(_CRONTAB_FIELDS, _CRONTAB_RANGES, strict=True):
        try:
            values = {int(v) for v in getattr(value, attribute)}
        except (TypeError, ValueError):
            raise CronError(f"crontab {attribute} is not a set of numbers", attribute) from None
        if not values or not all(low <= v <= high for v in values):
            raise CronError(f"crontab {attribute} {sorted(values)} outside {low}-{high}", attribute)
        sets.append(values)
    dom, dow = sets[2], sets[4]
    texts = [_compact(s, low, high) for s, (low, high) in zip(sets, _CRONTAB_RANGES, strict=True)]
    if texts[2] != "*" and texts[4] != "*":
        # Celery runs on days in day_of_month AND day_of_week; cron would run on either.
        # Whole weeks of the month (1-7, 8-14, …) AND weekdays are "MON#1"-style ordinals.
        texts[2], texts[4] = "*", _ordinal_weekdays(dom, dow)
    return " ".join(texts)


_WEEKS = {n: set(range(7 * n - 6, min(7 * n, 31) + 1)) for n in range(1, 6)}


def _ordinal_weekdays(days: set[int], weekdays: set[int]) -> str:
    weeks = [n for n, week in _WEEKS.items() if week <= days]
    if set().union(*(_WEEKS[n] for n in weeks)) != days:
        raise CronError(
            "Celery runs only on days in both day_of_month and day_of_week, which a cron "
            f"expression can say only for whole weeks of the month (1-7, 8-14, …); got "
            f"day_of_month {_compact(days, 1, 31)!r} with day_of_week "
            f"{_compact(weekdays, 0, 6)!r}",
            "day_of_month",
        )
    return ",".join(f"{d}#{n}" for d in sorted(weekdays) for n in weeks)


def _compact(values: Iterable[int], low: int, high: int) -> str:
    """The shortest usual spelling of a set of field values: `*`, `*/15`, `5-59/15`, `1-5,7`."""
    vals = sorted(set(values))
    if vals == list(range(low, high + 1)):
        return "*"
    if len(vals) >= 3:
        steps = {b - a for a, b in pairwise(vals)}
        if len(steps) == 1 and (step := steps.pop()) > 1:
            end = high if vals[-1] + step > high else vals[-1]  # `5-59/15`, not `5-50/15`
            return f"*/{step}" if vals[0] == low and end == high else f"{vals[0]}-{end}/{step}"
    runs: list[list[int]] = []
    for v in vals:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hotspot:
    minute: datetime  # UTC
    starts: int
    tasks: tuple[str, ...]  # names, in schedule order


@dataclass(frozen=True, slots=True)
class Conflict:
    kind: str  # "queue_overlap" | "self_overlap"
    tasks: tuple[str, ...]  # two names, or one for self_overlap
    queue: str
    first: datetime  # UTC: when the first overlap begins (the later run's start)
    occurrences: int  # overlapping pairs of runs within the horizon
    detail: str


@dataclass(frozen=True, slots=True)
class Recommendation:
    task: str
    cron: str
    new_cron: str
    minute_offset: int  # minutes added to each minute of the cron (mod 60)
    reason: str


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime  # UTC, floored to the minute
    horizon: timedelta
    hotspot_threshold: int
    schedules: int
    starts: int  # all runs starting in the horizon
    starts_per_minute: tuple[int, ...]
    starts_per_hour: tuple[int, ...]
    load_by_hour: dict[str, tuple[int, ...]] = field(hash=False)  # queue → starts per hour
    peak: int  # most starts in one minute
    peak_minute: datetime | None
    hotspots: tuple[Hotspot, ...]
    conflicts: tuple[Conflict, ...]
    hotspot_share: float  # H of the score
    conflict_share: float  # C of the score
    score: int
    recommendations: tuple[Recommendation, ...] = ()
    score_after: int | None = None  # score and peak with the recommendations applied
    peak_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (datetimes as ISO 8601 in UTC)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return {
            "start": iso(self.start),
            "horizon_seconds": self.horizon.total_seconds(),
            "hotspot_threshold": self.hotspot_threshold,
            "schedules": self.schedules,
            "starts": self.starts,
            "score": self.score,
            "score_parts": {
                "hotspot_share": round(self.hotspot_share, 4),
                "conflict_share": round(self.conflict_share, 4),
            },
            "peak": {"starts": self.peak, "minute": iso(self.peak_minute)},
            "hotspots": [
                {"minute": iso(h.minute), "starts": h.starts, "tasks": list(h.tasks)}
                for h in self.hotspots
            ],
            "conflicts": [
                {
                    "kind": c.kind,
                    "tasks": list(c.tasks),
                    "queue": c.queue,
                    "first": iso(c.first),
                    "occurrences": c.occurrences,
                    "detail": c.detail,
                }
                for c in self.conflicts
            ],
            "recommendations": [
                {
                    "task": r.task,
                    "cron": r.cron,
                    "new_cron": r.new_cron,
                    "minute_offset": r.minute_offset,
                    "reason": r.reason,
                }
                for r in self.recommendations
            ],
            "after_recommendations": (
                {"score": self.score_after, "peak": self.peak_after}
                if self.recommendations
                else None
            ),
            "starts_per_hour": list(self.starts_per_hour),
            "load_by_hour": {queue: list(v) for queue, v in self.load_by_hour.items()},
            "starts_per_minute": list(self.starts_per_minute),
        }


# --- the analysis -----------------------------------------------------------------------------


def analyse(
    schedules: Sequence[Schedule],
    start: datetime,
    horizon: timedelta = DAY,
    *,
    hotspot_threshold: int = DEFAULT_HOTSPOT_THRESHOLD,
    recommend: bool = True,
) -> Report:
    """Analyse `schedules` over `[start, start + horizon)`; see the module docstring.

    `start` must be time-zone aware (it is converted to UTC and floored to the minute);
    `horizon` is at most 31 days. Raises ScheduleError for an unusable schedule (naming it)
    and ValueError for bad arguments or more than MAX_RUNS runs.
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be time-zone aware")
    if not timedelta(minutes=1) <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon must be between 1 minute and {MAX_HORIZON.days} days")
    if isinstance(hotspot_threshold, bool) or hotspot_threshold < 1:
        raise ValueError("hotspot_threshold must be a whole number of at least 1")
    start = start.astimezone(UTC).replace(second=0, microsecond=0)
    specs = _specs(schedules)
    cache: _RunCache = {}
    state = _State.build(schedules, specs, start, horizon, cache)
    report = state.report(hotspot_threshold)
    if not (recommend and report.hotspots):
        return report
    moves = _recommend(state, report)
    if not moves:
        return report
    moved = apply_recommendations(schedules, moves)
    after = _State.build(moved, _specs(moved), start, horizon, cache).report(hotspot_threshold)
    if after.peak >= report.peak or after.score < report.score:
        return report  # the check the recommendations must pass
    return replace(report, recommendations=moves, score_after=after.score, peak_after=after.peak)


def apply_recommendations(
    schedules: Sequence[Schedule], recommendations: Iterable[Recommendation]
) -> tuple[Schedule, ...]:
    """The schedules with each recommended task's cron replaced by its `new_cron`."""
    new = {r.task: r.new_cron for r in recommendations}
    return tuple(replace(s, cron=new[s.name]) if s.name in new else s for s in schedules)


def _specs(schedules: Sequence[Schedule]) -> list[_Spec]:
    out, problems = [], []
    for index, schedule in enumerate(schedules):
        try:
            out.append(_spec(schedule.cron))
            _zone(schedule.timezone)
        except CronError as exc:
            problems.append(ScheduleProblem(f"schedules[{index}] ({schedule.name}).cron", str(exc)))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                ScheduleProblem(
                    f"schedules[{index}] ({schedule.name}).timezone",
                    f"unknown time zone {schedule.timezone!r}",
                )
            )
    if problems:
        raise ScheduleError(problems)
    return out


_RunCache = dict[tuple[_Spec, str | None], tuple[float, ...]]


def _runs(
    spec: _Spec, zone: str | None, start: datetime, seconds: float, cache: _RunCache
) -> tuple[float, ...]:
    """Start times of the runs in the horizon, in seconds after `start` (memoised in `cache`,
    which must be used for one start and horizon only)."""
    key = (spec, zone)
    if key not in cache:
        cache[key] = tuple(_generate(spec, zone, start, seconds))
    return cache[key]


def _generate(spec: _Spec, zone: str | None, start: datetime, seconds: float) -> list[float]:
    if spec.every is not None:
        count = math.ceil(seconds / spec.every)
        if count > MAX_RUNS:
            raise ValueError(f"more than {MAX_RUNS} runs in the horizon; shorten it")
        return [i * spec.every for i in range(count)]
    assert spec.cron is not None
    base = start.timestamp()
    out: list[float] = []
    # cronsim yields times strictly after the one given.
    for moment in CronSim(spec.cron, (start - timedelta(seconds=1)).astimezone(_zone(zone))):
        offset = moment.timestamp() - base
        if offset >= seconds:
            break
        if offset >= 0:  # (after a fall-back, a first run may come before `start`)
            out.append(offset)
            if len(out) > MAX_RUNS:
                raise ValueError(f"more than {MAX_RUNS} runs in the horizon; shorten it")
    out.sort()
    return out


@dataclass(slots=True)
class _State:
    """The runs of every schedule over one horizon (mutable, private to the analysis)."""

    schedules: Sequence[Schedule]
    specs: list[_Spec]
    start: datetime
    horizon: timedelta
    runs: list[tuple[float, ...]]
    cache: _RunCache

    @classmethod
    def build(
        cls,
        schedules: Sequence[Schedule],
        specs: list[_Spec],
        start: datetime,
        horizon: timedelta,
        cache: _RunCache,
    ) -> _State:
        seconds = horizon.total_seconds()
        runs, total = [], 0
        for schedule, spec in zip(schedules, specs, strict=True):
            runs.append(_runs(spec, schedule.timezone, start, seconds, cache))
            total += len(runs[-1])
            if total > MAX_RUNS:
                raise ValueError(f"more than {MAX_RUNS} runs in the horizon; shorten it")
        return cls(schedules, specs, start, horizon, runs, cache)

    @property
    def minutes(self) -> int:
        return math.ceil(self.horizon.total_seconds() / 60)

    def queue(self, index: int) -> str:
        return self.schedules[index].queue or DEFAULT_QUEUE

    def duration(self, index: int) -> float:
        return self.schedules[index].expected_duration or 0.0

    def per_minute(self) -> list[int]:
        counts = [0] * self.minutes
        for runs in self.runs:
            for offset in runs:
                counts[int(offset // 60)] += 1
        return counts

    def report(self, threshold: int) -> Report:
        counts = self.per_minute()
        hours = math.ceil(self.minutes / 60)
        per_hour = [sum(counts[h * 60 : h * 60 + 60]) for h in range(hours)]
        load: dict[str, list[int]] = {}
        for index, runs in enumerate(self.runs):
            row = load.setdefault(self.queue(index), [0] * hours)
            for offset in runs:
                row[int(offset // 3600)] += 1

        hot = {m for m, count in enumerate(counts) if count > threshold}
        tasks: dict[int, list[str]] = {m: [] for m in hot}
        for index, runs in enumerate(self.runs):
            for m in {int(offset // 60) for offset in runs} & hot:
                tasks[m].append(self.schedules[index].name)

        def at(minutes: int) -> datetime:
            return self.start + timedelta(minutes=minutes)

        hotspots = tuple(
            Hotspot(at(m), counts[m], tuple(dict.fromkeys(tasks[m]))) for m in sorted(hot)
        )

        conflicts, involved = self.conflicts()
        total = sum(counts)
        excess = sum(count - threshold for count in counts if count > threshold)
        h_share = excess / total if total else 0.0
        c_share = involved / total if total else 0.0
        score = max(0, min(100, math.floor(100 * (1 - (h_share + c_share) / 2) + 0.5)))
        peak = max(counts, default=0)
        return Report(
            start=self.start,
            horizon=self.horizon,
            hotspot_threshold=threshold,
            schedules=len(self.schedules),
            starts=total,
            starts_per_minute=tuple(counts),
            starts_per_hour=tuple(per_hour),
            load_by_hour={queue: tuple(row) for queue, row in sorted(load.items())},
            peak=peak,
            peak_minute=at(counts.index(peak)) if peak else None,
            hotspots=hotspots,
            conflicts=conflicts,
            hotspot_share=h_share,
            conflict_share=c_share,
            score=score,
        )

    def conflicts(self) -> tuple[tuple[Conflict, ...], int]:
        """Overlapping runs per queue (a sweep over start times) and how many runs overlap.

        Runs are the intervals [start, start + expected_duration); two overlap when the later
        starts before the earlier ends. Runs without a duration overlap nothing. A conflict's
        `occurrences` counts the runs that start while the other task (or, for a self-overlap,
        an earlier run of the same task) is running.
        """
        by_queue: dict[str, list[tuple[float, float, int, int]]] = {}
        run_id = 0
        for index, runs in enumerate(self.runs):
            duration = self.duration(index)
            if duration <= 0:
                continue
            rows = by_queue.setdefault(self.queue(index), [])
            for offset in runs:
                rows.append((offset, offset + duration, index, run_id))
                run_id += 1
        pairs: dict[tuple[int, int], list[float]] = {}  # (i, j) → [first, occurrences]
        involved: set[int] = set()
        for rows in by_queue.values():
            rows.sort()
            running: dict[int, deque[tuple[float, int]]] = {}  # task → (end, run id) in progress
            marked: dict[int, int] = {}  # task → its last run id counted in `involved`
            for begin, end, index, rid in rows:
                for other in list(running):
                    ends = running[other]
                    while ends and ends[0][0] <= begin:
                        ends.popleft()
                    if not ends:
                        del running[other]
                        continue
                    seen = pairs.setdefault((min(index, other), max(index, other)), [begin, 0])
                    seen[1] += 1
                    involved.add(rid)
                    last = marked.get(other, -1)
                    for _, other_rid in reversed(ends):  # run ids grow: unmarked ones are last
                        if other_rid <= last:
                            break
                        involved.add(other_rid)
                    marked[other] = ends[-1][1]
                running.setdefault(index, deque()).append((end, rid))
        out = []
        for (i, j), (first, occurrences) in sorted(pairs.items(), key=lambda kv: kv[1][0]):
            a, b = self.schedules[i], self.schedules[j]
            when = self.start + timedelta(seconds=first)
            if i == j:
                gap = _smallest_gap(self.runs[i])
                detail = (
                    f"runs for {_human(self.duration(i))} but starts every {_human(gap)}"
                    if gap
                    else f"runs for {_human(self.duration(i))}"
                )
                out.append(
                    Conflict(SELF_OVERLAP, (a.name,), self.queue(i), when, occurrences, detail)
                )
            else:
                detail = (
                    f"{a.name} ({_human(self.duration(i))}) and {b.name} "
                    f"({_human(self.duration(j))}) overlap on queue {self.queue(i)}"
                )
                out.append(
                    Conflict(
                        QUEUE_OVERLAP, (a.name, b.name), self.queue(i), when, occurrences, detail
                    )
                )
        return tuple(out), len(involved)


def _smallest_gap(runs: list[float]) -> float:
    return min((b - a for a, b in pairwise(runs)), default=0.0)


def _human(seconds: float) -> str:
    return format_duration(float(round(seconds))) if seconds >= 1 else "0s"


# --- recommendations --------------------------------------------------------------------------


def _recommend(state: _State, report: Report) -> tuple[Recommendation, ...]:
    """Greedy minute shifts for the tasks in hotspots (see the module docstring)."""
    names = {name for hotspot in report.hotspots for name in hotspot.tasks}
    movable = [
        i
        for i, (schedule, spec) in enumerate(zip(state.schedules, state.specs, strict=True))
        if schedule.name in names and spec.cron is not None and _minutes(spec.cron) != _ALL
    ]
    worst: dict[str, int] = {}
    for hotspot in report.hotspots:
        for name in hotspot.tasks:
            worst[name] = max(worst.get(name, 0), hotspot.starts)
    size = state.minutes
    seconds = state.horizon.total_seconds()
    counts = state.per_minute()
    runs = list(state.runs)
    # Per queue: +1 where a run with a duration begins, -1 where it ends (minutes).
    edges: dict[str, list[int]] = {}
    for j, starts in enumerate(runs):
        _edges(edges.setdefault(state.queue(j), [0] * (size + 1)), starts, state.duration(j), +1)
    moves: list[Recommendation] = []
    for i in reversed(movable):
        schedule, cron = state.schedules[i], state.specs[i].cron
        assert cron is not None
        duration, queue_edges = state.duration(i), edges[state.queue(i)]
        for offset in runs[i]:
            counts[int(offset // 60)] -= 1
        _edges(queue_edges, runs[i], duration, -1)
        busy = _busy_prefix(queue_edges)
        distance = _distance_to_starts(counts)
        # Candidates are scored on the current runs shifted within their local hour (exact
        # but for DST oddities); the chosen one is evaluated by cronsim below.
        utc_offset = state.start.astimezone(_zone(schedule.timezone)).utcoffset()
        local = (state.start.minute + int((utc_offset or timedelta()).total_seconds() // 60)) % 60
        minute_of = [(local + int(t // 60)) % 60 for t in runs[i]]
        fields, minutes = cron.split(" "), _minutes(cron)
        best: tuple[tuple[float, ...], int, frozenset[int]] | None = None
        seen: set[frozenset[int]] = set()
        for shift in range(60):
            shifted = frozenset((m + shift) % 60 for m in minutes)
            if shifted in seen:
                continue
            seen.add(shifted)
            moved = [
                t + ((m + shift) % 60 - m) * 60 for t, m in zip(runs[i], minute_of, strict=True)
            ]
            candidate = [t for t in moved if 0 <= t < seconds]
            cost = _cost(candidate, counts, busy, duration, distance, shift, size)
            if best is None or cost < best[0]:
                best = (cost, shift, shifted)
        assert best is not None
        _, shift, shifted = best
        if shift:
            new_cron = " ".join([_compact(shifted, 0, 59), *fields[1:]])
            runs[i] = _runs(_Spec(new_cron), schedule.timezone, state.start, seconds, state.cache)
            moves.append(
                Recommendation(
                    task=schedule.name,
                    cron=schedule.cron,
                    new_cron=new_cron,
                    minute_offset=shift,
                    reason=f"starts in minutes with up to {worst[schedule.name]} starts",
                )
            )
        for offset in runs[i]:
            counts[int(offset // 60)] += 1
        _edges(queue_edges, runs[i], duration, +1)
    return tuple(reversed(moves))


_ALL = frozenset(range(60))


@lru_cache(maxsize=4096)
def _minutes(cron: str) -> frozenset[int]:
    """The minutes of a valid 5-field cron (cronsim's evaluated minute field)."""
    return frozenset(CronSim(cron, _EPOCH).minutes)


def _edges(edges: list[int], starts: Iterable[float], duration: float, sign: int) -> None:
    if duration <= 0:
        return
    size = len(edges) - 1
    for offset in starts:
        edges[int(offset // 60)] += sign
        edges[min(size, math.ceil((offset + duration) / 60))] -= sign


def _busy_prefix(edges: list[int]) -> list[int]:
    """Prefix sums over minutes: how many minutes up to each have a run in progress."""
    level, prefix = 0, [0] * len(edges)
    for m in range(len(edges) - 1):
        level += edges[m]
        prefix[m + 1] = prefix[m] + (level > 0)
    return prefix


def _distance_to_starts(counts: list[int]) -> list[int]:
    """For each minute, how many minutes away the nearest other start is."""
    size = len(counts)
    far = size
    out = [far] * size
    last = None
    for m in range(size):
        if counts[m]:
            last = m
        if last is not None:
            out[m] = m - last
    last = None
    for m in range(size - 1, -1, -1):
        if counts[m]:
            last = m
        if last is not None:
            out[m] = min(out[m], last - m)
    return out


def _cost(
    runs: list[float],
    counts: list[int],
    busy: list[int],
    duration: float,
    distance: list[int],
    shift: int,
    size: int,
) -> tuple[float, ...]:
    own: dict[int, int] = {}
    for offset in runs:
        m = int(offset // 60)
        own[m] = own.get(m, 0) + 1
    peak = max((counts[m] + n for m, n in own.items()), default=0)
    overlaps = 0
    if duration > 0:
        for offset in runs:
            first = int(offset // 60)
            last = min(size, max(first + 1, math.ceil((offset + duration) / 60)))
            overlaps += busy[last] - busy[first] > 0
    nearest = min((distance[m] for m in own), default=size)
    spread = sum(distance[m] for m in own)
    return (peak, overlaps, 1 if shift else 0, -nearest, -spread, shift)
