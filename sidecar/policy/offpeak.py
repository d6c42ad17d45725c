"""Off-peak windows: how long until low-priority work may run."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from .model import OffPeak


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def seconds_until_open(off_peak: OffPeak, now: float) -> float:
    """0 inside the window, else the seconds until it next opens (in its time zone)."""
    zone = _zone(off_peak.timezone)
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    start, end = off_peak.start_minute, off_peak.end_minute
    inside = start <= minute < end if start <= end else (minute >= start or minute < end)
    if inside or start == end:
        return 0.0
    day = local.date() + timedelta(days=1 if minute >= start else 0)
    # Wall-clock time in the zone, then real seconds: a DST day is 23 or 25 hours long.
    opens = datetime(day.year, day.month, day.day, start // 60, start % 60, tzinfo=zone)
    return max(0.0, opens.timestamp() - now)
