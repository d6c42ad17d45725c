"""Celery beat entries as schedules: `beat_schedule` → `Schedule` for the analysis.

Celery is not imported: any object with a crontab's or an interval schedule's attributes
will do, so the conversion is tested without a broker (and with real `celery.schedules`
objects when Celery is installed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..policy.cron import MIN_INTERVAL, CronError, compact_field
from ..policy.durations import format_duration
from ..schedules import Schedule, ScheduleError, ScheduleProblem, parse_schedule


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
    texts = [
        compact_field(s, low, high) for s, (low, high) in zip(sets, _CRONTAB_RANGES, strict=True)
    ]
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
            f"day_of_month {compact_field(days, 1, 31)!r} with day_of_week "
            f"{compact_field(weekdays, 0, 6)!r}",
            "day_of_month",
        )
    return ",".join(f"{d}#{n}" for d in sorted(weekdays) for n in weeks)
