"""The domain values of the dead-letter queue and of idempotency claims.

Plain values shared by the stores (which keep them), the services (which act on them), the
HTTP layer (which shows them) and the requeue targets (which send them back to workers).
Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

STATUSES = ("pending", "retrying", "resolved", "abandoned")


class Claim(msgspec.Struct, frozen=True, omit_defaults=True):
    claimed: bool
    first_seen_at: float | None = None
    state: str | None = None  # "running" | "done", for a duplicate


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


class DlqFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which DLQ records an action or a listing applies to; every field narrows."""

    status: str | None = None  # one of STATUSES
    task_name: str | None = None  # exact name
    failure_type: str | None = None
    since: float | None = None  # created_at >= since (unix seconds)
    until: float | None = None  # created_at < until


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


class TrendBucket(msgspec.Struct, frozen=True):
    start: float  # unix seconds, aligned to the bucket size
    failure_type: str
    count: int
