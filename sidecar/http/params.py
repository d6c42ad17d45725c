"""Reading operators' parameters: times and DLQ filters from a query string or a body,
each checked, with a 400 that names the bad one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

from aiohttp import web

from ..policy.durations import parse_duration
from ..records import (
    EARLIEST,
    LATEST,
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    MIN_QUERY_CHARS,
    STATUSES,
    DlqFilter,
    text_problem,
)
from .problems import invalid


def parse_time(value: str, name: str, now: float | None = None) -> float:
    """Unix seconds, an ISO 8601 time, or an age like `24h` (that long before now)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    try:
        return (time.time() if now is None else now) - parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{name}: expected unix seconds, an ISO 8601 time or an age like 24h, got {value!r}"
        ) from None


# The parameters of the DLQ list and its CSV export (DESIGN §3.3).
FILTER_PARAMS = (
    "status",
    "task_name",
    "failure_type",
    "task_id",
    "exception_type",
    "min_dlq_retries",
    "q",
    "since",
    "until",
)
MAX_QUERY_BYTES = 1000


def dlq_filter(values: dict[str, object], where: str = "query") -> DlqFilter:
    """Filters from a query string or a JSON body, each checked, 400 naming the bad one."""
    status = values.get("status")
    if status is not None and status not in STATUSES:
        raise invalid(f"{where}.status", f"expected one of {list(STATUSES)}, got {status!r}")
    for name in ("task_name", "failure_type", "task_id", "exception_type"):
        value = values.get(name)
        if isinstance(value, str) and (problem := text_problem(value, MAX_NAME_BYTES)):
            raise invalid(f"{where}.{name}", problem)
    q = values.get("q") or None
    if q is not None:
        if not isinstance(q, str):
            raise invalid(f"{where}.q", "expected text")
        if problem := text_problem(q, MAX_QUERY_BYTES):
            raise invalid(f"{where}.q", problem)
        if len(q) < MIN_QUERY_CHARS:
            raise invalid(f"{where}.q", f"give at least {MIN_QUERY_CHARS} characters")
    retries = values.get("min_dlq_retries")
    if retries is not None:
        try:
            retries = int(retries)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise invalid(
                f"{where}.min_dlq_retries", f"expected a whole number, got {retries!r}"
            ) from None
        if not 0 <= retries < 2**31:
            raise invalid(f"{where}.min_dlq_retries", f"expected 0 or more, got {retries}")
    times = {}
    for name in ("since", "until"):
        value = values.get(name)
        if value is not None:
            try:
                times[name] = parse_time(str(value), name)
            except ValueError as exc:
                raise invalid(f"{where}.{name}", str(exc).partition(": ")[2]) from None
            if not EARLIEST <= times[name] < LATEST:  # 1e309 reads as inf
                raise invalid(f"{where}.{name}", f"not a usable unix time: {value}")
    return DlqFilter(
        status=status,  # type: ignore[arg-type]
        task_name=values.get("task_name") or None,  # type: ignore[arg-type]
        failure_type=values.get("failure_type") or None,  # type: ignore[arg-type]
        task_id=values.get("task_id") or None,  # type: ignore[arg-type]
        exception_type=values.get("exception_type") or None,  # type: ignore[arg-type]
        min_dlq_retries=retries,  # type: ignore[arg-type]
        q=q,
        **times,
    )


def limit_of(values: dict[str, str], default: int = 50, most: int = 500) -> int:
    raw = values.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("query.limit", f"expected a whole number, got {raw!r}") from None
    if not 1 <= limit <= most:
        raise invalid("query.limit", f"expected 1 to {most}, got {limit}")
    return limit


def path_id(request: web.Request) -> str:
    """The record id (or id prefix) in the path, refused when no store could hold it."""
    value = request.match_info["id"]
    if problem := text_problem(value, MAX_ID_BYTES):
        raise invalid("path.id", problem)
    return value


def known_only(values: Mapping[str, str], known: tuple[str, ...]) -> None:
    """A parameter this endpoint does not know is a mistake: 400 naming it."""
    for name in values:
        if name not in known:
            raise invalid(f"query.{name}", f"unknown parameter; expected one of {list(known)}")


def time_param(values: Mapping[str, str], name: str, default: str | None, now: float) -> float:
    """A time parameter (unix seconds, ISO 8601, or an age like 30d); `now` if absent
    without a default."""
    raw = values.get(name, default)
    if raw is None:
        return now
    try:
        value = parse_time(raw, name, now)
    except ValueError as exc:
        raise invalid(f"query.{name}", str(exc).partition(": ")[2]) from None
    if not EARLIEST <= value < LATEST:
        raise invalid(f"query.{name}", f"not a usable unix time: {raw}")
    return value
