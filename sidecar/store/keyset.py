"""Keyset paging shared by the SQL stores: opaque cursors, and the optional WHERE clauses.

A listing's SQL is a named query with a `{where}` slot, filled with the named fragments
(`dlq_where_status`, `dlq_before`, ...) that the filter asks for, joined with AND. Every
value stays a bound parameter; only fixed fragments from our own SQL files are joined, and
each combination has its own text, so PostgreSQL plans (and psycopg prepares) each shape
for what it is, rather than one catch-all `($1 IS NULL OR status = $1)` plan.
"""

from __future__ import annotations

import base64
import math
from functools import cache
from typing import Any, TypeVar

import msgspec

from ..records import (
    EARLIEST,
    LATEST,
    MIN_QUERY_CHARS,
    STATUSES,
    AuditEntry,
    AuditPage,
    DlqFilter,
    DlqPage,
    DlqRecord,
    check_time,
)
from .connector import named_queries

K = TypeVar("K", str, int)

_FILTER_FIELDS = (
    "status",
    "task_name",
    "failure_type",
    "since",
    "until",
    "task_id",
    "exception_type",
    "min_dlq_retries",
    "q",
)


def search_param(dialect: str, q: str) -> str:
    """`q` as the dialect's search wants it: an ILIKE pattern matching it anywhere (its
    own % _ and \\ taken literally) for PostgreSQL, one FTS5 phrase for SQLite."""
    if len(q) < MIN_QUERY_CHARS:
        raise ValueError(f"q must have at least {MIN_QUERY_CHARS} characters, got {q!r}")
    if dialect == "sqlite":
        return '"' + q.replace('"', '""') + '"'
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_cursor(at: float, key: str | int) -> str:
    """The position after a row, as URL-safe text. msgspec writes the shortest float that
    reads back as the same double, so the position is exact."""
    return base64.urlsafe_b64encode(msgspec.json.encode((at, key))).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type[K]) -> tuple[float, K]:
    """The (time, key) in a cursor from `encode_cursor`; ValueError for anything else (the
    HTTP layer answers 400)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = msgspec.json.decode(raw, type=tuple[float, key_type])
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        raise ValueError("invalid cursor") from None
    if not EARLIEST <= at < LATEST or (isinstance(key, str) and "\x00" in key):
        raise ValueError("invalid cursor")
    return at, key


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def check_statuses(*statuses: str) -> None:
    """A status the schema would refuse is the caller's mistake, not an unavailable store."""
    for status in statuses:
        if status not in STATUSES:
            raise ValueError(f"unknown DLQ status {status!r}; expected one of {STATUSES}")


def check_bucket(bucket: float) -> float:
    if not 0 < bucket < math.inf:
        raise ValueError(f"bucket must be a positive number of seconds, got {bucket}")
    return float(bucket)


def filtered(
    dialect: str,
    query: str,
    where: DlqFilter,
    keyset: str | None = None,
    position: tuple[float, str | int] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The SQL of `query` narrowed by `where` (and past `position`, with the `keyset`
    fragment), with its parameters."""
    fragments = []
    params: dict[str, Any] = {}
    if where.status is not None:
        check_statuses(where.status)
    for field in _FILTER_FIELDS:
        value = getattr(where, field)
        if value is not None:
            fragments.append(f"dlq_where_{field}")
            if field in ("since", "until"):
                value = check_time(field, value)
            elif field == "q":
                value = search_param(dialect, value)
            params[field] = value
    if position is not None and keyset is not None:
        fragments.append(keyset)
        params["cursor_at"], params["cursor_id"] = position
    return compose(dialect, query, tuple(fragments)), params


@cache  # a few dozen shapes at most: 2**9 filter combinations per query
def compose(dialect: str, query: str, fragments: tuple[str, ...]) -> str:
    queries = named_queries(dialect)
    text = queries[query]
    if text.count("{where}") != 1:  # e.g. a comment that names the slot
        raise RuntimeError(f"{dialect}: {query} needs exactly one {{where}}")
    # Fragments hold no comments, and a newline ends any that might: AND stays live.
    condition = "\n  AND ".join(queries[name] for name in fragments) or "TRUE"
    return text.replace("{where}", condition)


def dlq_page(records: list[DlqRecord], limit: int) -> DlqPage:
    """A page from up to `limit + 1` records: the extra one only says another page follows."""
    if len(records) <= limit:
        return DlqPage(records, None)
    del records[limit:]
    last = records[-1]
    return DlqPage(records, encode_cursor(last.created_at, last.id))


def audit_page(rows: list[tuple[int, AuditEntry]], limit: int) -> AuditPage:
    """As `dlq_page`, for (id, entry) pairs: the id breaks ties between equal times."""
    entries = [entry for _, entry in rows[:limit]]
    if len(rows) <= limit:
        return AuditPage(entries, None)
    last_id, last = rows[limit - 1]
    return AuditPage(entries, encode_cursor(last.at, last_id))
