"""Argument types shared by the commands: the one parser of times, durations and counts;
and `actions`, the shape of a command made of actions.

A bad value is an argparse error (usage and exit 2) that says what was expected.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..policy.durations import parse_duration

TIME_FORMS = (
    "unix seconds, ISO 8601 (2025-01-06, 2025-01-06T14:00Z; UTC unless a zone is given) "
    "or an age like 24h"
)


def actions(
    commands: argparse._SubParsersAction, name: str, help: str, description: str | None = None
) -> argparse._SubParsersAction:
    """The command `name`, made of actions (`task-sidecar NAME ACTION`): where its actions
    are added."""
    command = commands.add_parser(name, help=help, description=description)
    return command.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def moment(text: str, now: Callable[[], float] = time.time) -> datetime:
    """A point in time: unix seconds, ISO 8601 (no zone means UTC; a date means 00:00), or
    an age like `24h` (that long before now)."""
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        pass
    else:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    try:
        return datetime.fromtimestamp(now() - parse_duration(value), UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {TIME_FORMS}, got {text!r}") from None


def unix_time(text: str) -> float:
    """`moment` as unix seconds, as the API takes it."""
    return moment(text).timestamp()


def duration(low: timedelta, high: timedelta) -> Callable[[str], timedelta]:
    def parse(text: str) -> timedelta:
        try:
            value = timedelta(seconds=parse_duration(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected {_span(low)} to {_span(high)}, got {text!r}"
            )
        return value

    return parse


def _span(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    return f"{seconds / 3600:g}h"


def count(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {low}{upper}, got {text!r}"
            )
        return value

    return parse


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value
