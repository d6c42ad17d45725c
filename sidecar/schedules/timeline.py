"""The runs of every schedule over one horizon, and the figures read from them: starts per
minute, hour and queue, hotspots, conflicts (a sweep over start times) and the score.

Crons are evaluated by cronsim on the wall clock of each schedule's zone (see the package
docstring for daylight-saving changes); intervals are anchored at `start`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfoNotFoundError

from cronsim import CronSim

from ..policy.cron import CronError, CronSpec, cron_spec
from ..policy.durations import format_duration
from .model import (
    DEFAULT_QUEUE,
    MAX_RUNS,
    QUEUE_OVERLAP,
    SELF_OVERLAP,
    Conflict,
    Hotspot,
    Report,
    Schedule,
    ScheduleError,
    ScheduleProblem,
    zone,
)


def specs(schedules: Sequence[Schedule]) -> list[CronSpec]:
    out, problems = [], []
    for index, schedule in enumerate(schedules):
        try:
            out.append(cron_spec(schedule.cron))
            zone(schedule.timezone)
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


RunCache = dict[tuple[CronSpec, str | None], tuple[float, ...]]


def runs_of(
    spec: CronSpec, tz: str | None, start: datetime, seconds: float, cache: RunCache
) -> tuple[float, ...]:
    """Start times of the runs in the horizon, in seconds after `start` (memoised in `cache`,
    which must be used for one start and horizon only)."""
    key = (spec, tz)
    if key not in cache:
        cache[key] = tuple(_generate(spec, tz, start, seconds))
    return cache[key]


def _generate(spec: CronSpec, tz: str | None, start: datetime, seconds: float) -> list[float]:
    if spec.every is not None:
        count = math.ceil(seconds / spec.every)
        if count > MAX_RUNS:
            raise ValueError(f"more than {MAX_RUNS} runs in the horizon; shorten it")
        return [i * spec.every for i in range(count)]
    assert spec.cron is not None
    base = start.timestamp()
    out: list[float] = []
    # cronsim yields times strictly after the one given.
    for moment in CronSim(spec.cron, (start - timedelta(seconds=1)).astimezone(zone(tz))):
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
class Timeline:
    """The runs of every schedule over one horizon (mutable, private to the analysis and
    the advice)."""

    schedules: Sequence[Schedule]
    specs: list[CronSpec]
    start: datetime
    horizon: timedelta
    runs: list[tuple[float, ...]]
    cache: RunCache

    @classmethod
    def build(
        cls,
        schedules: Sequence[Schedule],
        specs: list[CronSpec],
        start: datetime,
        horizon: timedelta,
        cache: RunCache,
    ) -> Timeline:
        seconds = horizon.total_seconds()
        runs, total = [], 0
        for schedule, spec in zip(schedules, specs, strict=True):
            runs.append(runs_of(spec, schedule.timezone, start, seconds, cache))
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
                gap = smallest_gap(self.runs[i])
                detail = (
                    f"runs for {human(self.duration(i))} but starts every {human(gap)}"
                    if gap
                    else f"runs for {human(self.duration(i))}"
                )
                out.append(
                    Conflict(SELF_OVERLAP, (a.name,), self.queue(i), when, occurrences, detail)
                )
            else:
                detail = (
                    f"{a.name} ({human(self.duration(i))}) and {b.name} "
                    f"({human(self.duration(j))}) overlap on queue {self.queue(i)}"
                )
                out.append(
                    Conflict(
                        QUEUE_OVERLAP, (a.name, b.name), self.queue(i), when, occurrences, detail
                    )
                )
        return tuple(out), len(involved)


def smallest_gap(runs: list[float]) -> float:
    return min((b - a for a, b in pairwise(runs)), default=0.0)


def human(seconds: float) -> str:
    return format_duration(float(round(seconds))) if seconds >= 1 else "0s"
