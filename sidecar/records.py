"""The domain values of the dead-letter queue and of idempotency claims.

Plain values shared by the stores (which keep them), the services (which act on them), the
HTTP layer (which shows them) and the requeue targets (which send them back to workers).
Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

STATUSES = ("pending", "retrying", "resolved", "abandoned")

# What the stores keep in indexed text columns, in UTF-8 bytes (PostgreSQL's btree entries
# hold at most 2704 bytes, and (task_name, created_at, id) is one): the wire's character
# limits allow four times as much.
MAX_NAME_BYTES = 1024
MAX_ID_BYTES = 256


# The unix times a PostgreSQL timestamptz can hold (4714 BC to 294276 AD). Outside them
# to_timestamp() fails, which would surface as a store error rather than a bad request.
EARLIEST = -210866803200.0
LATEST = 9224318016000.0


def check_time(name: str, value: float) -> float:
    """`value` as a float, or ValueError when no store could compare a time with it."""
    if not EARLIEST <= value < LATEST:  # NaN included
        raise ValueError(f"{name} is not a usable unix time: {value}")
    return float(value)


def text_problem(value: str, limit: int) -> str | None:
    """Why a store could not keep `value` in a text column, or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        return f"at most {limit} bytes of UTF-8, got {size}"
    return None


class Claim(msgspec.Struct, frozen=True, omit_defaults=True):
    claimed: bool
    first_seen_at: float | None = None
    state: str | None = None  # "running" | "done", for a duplicate
    owner: str | None = None  # for the caller that got it: complete/release must present it


class DlqRecord(msgspec.Struct, kw_only=True):
    """A dead-lettered task: everything needed to understand it and run it again."""

    id: str
    task_id: str
    task_name: str
    queue: str | None  # the queue the task ran on
    args: list[Any]
    kwargs: dict[str, Any]
    exception: dict[str, Any]  # the wire ExceptionInfo, traceback included
    context: dict[str, Any]
    failure_type: str
    category: str
    remediation: str
    confidence: float
    rule: str
    priority: str
    priority_value: int
    target_queue: str  # where a retry goes unless an operator chooses another
    attempts: int  # retries made before it was dead-lettered
    status: str = "pending"  # pending | retrying | resolved | abandoned
    created_at: float
    updated_at: float
    dlq_retries: int = 0  # times it was retried from the DLQ
    last_error: str | None = None  # why the last requeue failed, if it did
    # What the worker needs to go on after a DLQ retry (Celery: chain, callbacks, errbacks,
    # parent/root/group ids), as its client reported it; sent back with the retry.
    workflow: dict[str, Any] | None = None


_REPORTS = uuid.UUID("3c1f6f0e-2a53-4d5e-9a49-6b7f8a7f3e01")  # our namespace for uuid5


def record_id(report_id: str | None) -> str:
    """A new DLQ record's id: derived from the client's report id when it sent one, so a
    report sent twice (a timeout, then a batch) is stored once; random otherwise."""
    return str(uuid.uuid5(_REPORTS, report_id) if report_id else uuid.uuid4())


def successor_id(record: DlqRecord) -> str:
    """The id a failure gets when the record it names cannot take it (another task's, or
    one already resolved): a record of its own, the same one however often replayed."""
    return str(uuid.uuid5(_REPORTS, f"{record.id}/{record.task_id}/{record.updated_at!r}"))


class DlqFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which DLQ records an action or a listing applies to; every field narrows."""

    status: str | None = None  # one of STATUSES
    task_name: str | None = None  # exact name
    failure_type: str | None = None
    since: float | None = None  # created_at >= since (unix seconds)
    until: float | None = None  # created_at < until
    task_id: str | None = None  # exact Celery task id
    exception_type: str | None = None  # exact exception class name
    min_dlq_retries: int | None = None  # dlq_retries >= this
    q: str | None = None  # substring (3+ characters, any case) of task id, exception
    # type, message or traceback


MIN_QUERY_CHARS = 3  # what a trigram index (pg_trgm, FTS5 trigram) can answer


class DlqPage(msgspec.Struct, frozen=True):
    records: list[DlqRecord]
    next_cursor: str | None  # opaque; None on the last page


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    actor: str  # the token's name ("anonymous" without auth)
    action: str  # retry | abandon | bulk_retry | resolve | breaker_reset | policy_reload
    record_ids: list[str] = []
    from_status: str | None = None
    reason: str | None = None
    details: dict[str, Any] = {}


class AuditPage(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]
    next_cursor: str | None


class HookEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One hook the sidecar answered, as kept in the event history (DESIGN §3.3 export)."""

    at: float
    kind: str  # failure | success | start
    task_name: str
    event: msgspec.Raw | None  # the body as decoded (JSON), traceback left out
    failure_type: str | None = None
    decision: msgspec.Raw | None = None  # failures: {"action", "delay_seconds"}


class TrendBucket(msgspec.Struct, frozen=True):
    start: float  # unix seconds, aligned to the bucket size
    failure_type: str
    count: int
