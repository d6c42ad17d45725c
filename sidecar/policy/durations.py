"""Durations as people write them in policy files: `30s`, `5m`, `1h30m`, `1d`, or seconds."""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with the expected form for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):  # from an environment variable: seconds
            return float(text)
        if _WHOLE.fullmatch(text):
            return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    raise ValueError(f"expected a duration like 30s, got {shown}")


@lru_cache(maxsize=1024)  # called with the policy's constants on the hot path
def format_duration(seconds: float) -> str:
    """The shortest exact spelling of `seconds` (`90` → `1m30s`), for rationales."""
    if seconds != int(seconds) or seconds < 1:
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_age(seconds: float) -> str:
    """A task's age, to a tenth of an hour (cheap: ages differ on every event)."""
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
