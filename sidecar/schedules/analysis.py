"""`analyse`: the report of a set of schedules over a horizon, with the advice that passes
its check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from . import advice
from .model import DAY, DEFAULT_HOTSPOT_THRESHOLD, MAX_HORIZON, Report, Schedule
from .timeline import RunCache, Timeline, specs


def analyse(
    schedules: Sequence[Schedule],
    start: datetime,
    horizon: timedelta = DAY,
    *,
    hotspot_threshold: int = DEFAULT_HOTSPOT_THRESHOLD,
    recommend: bool = True,
) -> Report:
    """Analyse `schedules` over `[start, start + horizon)`; see the package docstring.

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
    cache: RunCache = {}  # runs per (expression, zone), shared by both passes
    timeline = Timeline.build(schedules, specs(schedules), start, horizon, cache)
    report = timeline.report(hotspot_threshold)
    if not (recommend and report.hotspots):
        return report
    moves = advice.recommend(timeline, report)
    if not moves:
        return report
    moved = advice.apply_recommendations(schedules, moves)
    after = Timeline.build(moved, specs(moved), start, horizon, cache).report(hotspot_threshold)
    if after.peak >= report.peak or after.score < report.score:
        return report  # the check the recommendations must pass
    return replace(report, recommendations=moves, score_after=after.score, peak_after=after.peak)
