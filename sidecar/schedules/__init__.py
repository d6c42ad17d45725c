"""Periodic-task schedules: starts per minute and hour, hotspots, conflicts, a health score
and recommendations.

Pure functions and frozen values: no I/O, and no clock — the caller passes `start`. Cron
expressions are evaluated by `cronsim` (the evaluator of Healthchecks.io, which follows
Debian cron, including its behaviour at daylight-saving changes); nothing here parses cron.

Inputs
    `Schedule(name, cron, queue?, expected_duration?, timezone?)` from policies.yaml's
    `schedules:`, a schedule file, or `PUT /v1/schedules` (a worker's beat schedule,
    converted by sidecar.integrations.beat). `cron` is a 5-field expression
    (`*/15 9-17 * * mon-fri`), a nickname (`@hourly`, `@daily`, `@midnight`, `@weekly`,
    `@monthly`, `@yearly`, `@annually`), or an interval `@every 30s` (validated by
    sidecar.policy.cron).
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
    Intervals (`@every`) ignore time zones and are anchored at `start`: a beat scheduler
    starts every interval entry when it starts, so entries with the same period stay in
    phase.

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
    Only a cron's minute field is changed (`advice`); they are kept only when the peak
    (most starts in one minute) drops and the score does not fall.

Modules: `model` (values, limits, errors), `parse` (schedules from plain values),
`timeline` (runs, figures, conflicts, score), `advice` (recommendations), `analysis`
(`analyse`), `document` (the report as JSON values). Pure: no I/O, no clock.
"""

from ..policy.cron import CronError, check_cron
from .advice import apply_recommendations
from .analysis import analyse
from .document import analysis_document, report_document
from .model import (
    DAY,
    DEFAULT_HOTSPOT_THRESHOLD,
    DEFAULT_QUEUE,
    MAX_HORIZON,
    MAX_RUNS,
    QUEUE_OVERLAP,
    SELF_OVERLAP,
    WEEK,
    Conflict,
    Hotspot,
    Recommendation,
    Report,
    Schedule,
    ScheduleError,
    ScheduleProblem,
)
from .parse import parse_schedule, parse_schedules

__all__ = [
    "DAY",
    "DEFAULT_HOTSPOT_THRESHOLD",
    "DEFAULT_QUEUE",
    "MAX_HORIZON",
    "MAX_RUNS",
    "QUEUE_OVERLAP",
    "SELF_OVERLAP",
    "WEEK",
    "Conflict",
    "CronError",
    "Hotspot",
    "Recommendation",
    "Report",
    "Schedule",
    "ScheduleError",
    "ScheduleProblem",
    "analyse",
    "analysis_document",
    "apply_recommendations",
    "check_cron",
    "parse_schedule",
    "parse_schedules",
    "report_document",
]
