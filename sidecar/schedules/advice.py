"""Recommendations: new minute offsets that spread a hotspot.

Only a cron's minute field is changed, never its hours or days; every minute of the field
moves by the same offset (`*/15` becomes `5-59/15`). The tasks starting in a hotspot minute
are taken one by one (the one listed last first, so the first-listed tends to stay); each
is tried at every distinct shift of its minutes (0–59) and put where, in this order: the
busiest minute it would start in is least busy; its runs overlap fewest runs of its queue;
it stays where it is; its starts are farthest from other starts; the shift is smallest.
Intervals and every-minute crons are never moved. `analyse` keeps the result only when the
peak drops and the score does not fall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta

from ..policy.cron import CronSpec, compact_field, cron_minutes
from .model import Recommendation, Report, Schedule, zone
from .timeline import Timeline, runs_of


def apply_recommendations(
    schedules: Sequence[Schedule], recommendations: Iterable[Recommendation]
) -> tuple[Schedule, ...]:
    """The schedules with each recommended task's cron replaced by its `new_cron`."""
    new = {r.task: r.new_cron for r in recommendations}
    return tuple(replace(s, cron=new[s.name]) if s.name in new else s for s in schedules)


def recommend(state: Timeline, report: Report) -> tuple[Recommendation, ...]:
    """Greedy minute shifts for the tasks in hotspots (see the module docstring)."""
    names = {name for hotspot in report.hotspots for name in hotspot.tasks}
    movable = [
        i
        for i, (schedule, spec) in enumerate(zip(state.schedules, state.specs, strict=True))
        if schedule.name in names and spec.cron is not None and cron_minutes(spec.cron) != _ALL
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
        utc_offset = state.start.astimezone(zone(schedule.timezone)).utcoffset()
        local = (state.start.minute + int((utc_offset or timedelta()).total_seconds() // 60)) % 60
        minute_of = [(local + int(t // 60)) % 60 for t in runs[i]]
        fields, minutes = cron.split(" "), cron_minutes(cron)
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
            new_cron = " ".join([compact_field(shifted, 0, 59), *fields[1:]])
            runs[i] = runs_of(
                CronSpec(new_cron), schedule.timezone, state.start, seconds, state.cache
            )
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
