"""The values of schedule analysis: limits, errors and the frozen report.

A `Schedule` (sidecar.policy.model) is the input; a `Report` with its hotspots,
conflicts and recommendations the output. Every time is in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from ..policy.model import Schedule  # noqa: F401  (re-exported: the input of the analysis)

DAY = timedelta(hours=24)
WEEK = timedelta(days=7)
MAX_HORIZON = timedelta(days=31)
DEFAULT_HOTSPOT_THRESHOLD = 5
DEFAULT_QUEUE = "default"
MAX_RUNS = 250_000  # runs in one analysis, to bound the work one request can cause

SELF_OVERLAP = "self_overlap"
QUEUE_OVERLAP = "queue_overlap"


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


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """The zone a schedule runs in (UTC without one); ZoneInfoNotFoundError if unknown."""
    if name is None or name in ("UTC", "Etc/UTC"):
        return UTC
    return ZoneInfo(name)


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
