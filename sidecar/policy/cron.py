"""Schedule expressions: validation of 5-field crons, nicknames and `@every` intervals.

Crons are evaluated by `cronsim` (Debian cron's semantics, daylight-saving changes
included); nothing here parses cron. This module only checks an expression and, when
cronsim refuses one, says which field is to blame and why:
`minute field '61' out of range 0-59`. The policy loader and the schedule analysis
(`sidecar.schedules`) validate through it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import pairwise

from cronsim import CronSim, CronSimError

from .durations import parse_duration

MIN_INTERVAL = 1.0  # seconds; shorter `@every` intervals are refused
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES_HINT = ("", "", "", " or JAN-DEC", " or SUN-SAT")
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # any fixed moment: cronsim needs a start


class CronError(ValueError):
    """A cron expression cannot be used; `field` names the bad field when one is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated schedule expression: a 5-field cron, or an interval in seconds."""

    cron: str | None
    every: float | None = None


def check_cron(expr: object) -> None:
    """Raise CronError (naming the field) unless `expr` is a usable schedule expression."""
    cron_spec(expr)


def cron_spec(expr: object) -> CronSpec:
    """The validated form of `expr`: nicknames expanded, intervals in seconds."""
    if not isinstance(expr, str):
        raise CronError(f"expected a cron expression like '*/5 * * * *', got {expr!r}")
    return _parsed(expr)


@lru_cache(maxsize=4096)
def _parsed(expr: str) -> CronSpec:
    text = " ".join(expr.split())
    lowered = text.lower()
    if lowered.startswith("@every"):
        return CronSpec(None, _interval(text[len("@every") :].strip()))
    if lowered.startswith("@"):
        if lowered == "@reboot":
            raise CronError("@reboot runs once at start, not periodically")
        if lowered not in NICKNAMES:
            known = ", ".join([*NICKNAMES, "@every <duration>"])
            raise CronError(f"unknown nickname {text!r}; expected one of {known}")
        return CronSpec(NICKNAMES[lowered])
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts) if text else 0} in {expr!r}"
        )
    try:
        CronSim(text, EPOCH)
    except CronSimError as exc:
        raise _field_error(parts, str(exc)) from None
    except (ValueError, IndexError, AssertionError):  # defensive: report, never crash
        raise CronError(f"invalid cron expression {text!r}") from None
    return CronSpec(text)


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
    low, high = RANGES[index]
    # Numbers that are values (not steps after '/' nor ordinals after '#'):
    for number in re.findall(r"(?<![/#\d])\d+", text):
        if not low <= int(number) <= high:
            if number == text:
                return CronError(f"{name} field '{text}' out of range {low}-{high}", name)
            return CronError(f"{name} field '{text}': {number} out of range {low}-{high}", name)
    if index == 2:  # in range, but maybe never together with the months
        try:
            CronSim(f"0 0 {text} * *", EPOCH)
        except CronSimError:
            pass
        else:
            return CronError(f"{name} field '{text}' never occurs in the months '{parts[3]}'", name)
    return CronError(
        f"{name} field '{text}' is not valid: expected numbers {low}-{high}"
        f"{_NAMES_HINT[index]}, ranges (1-5), steps (*/15) or lists (0,30)",
        name,
    )


@lru_cache(maxsize=4096)
def cron_minutes(cron: str) -> frozenset[int]:
    """The minutes of a valid 5-field cron (cronsim's evaluated minute field)."""
    return frozenset(CronSim(cron, EPOCH).minutes)


def compact_field(values: Iterable[int], low: int, high: int) -> str:
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
