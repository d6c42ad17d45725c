"""The small interfaces the service keeps its state behind, and the records they hold.

Three kinds of state, each with its own lifetime and backend choice:

- `StateStore`: circuit breakers and retry-outcome windows, shared by the fleet (Redis)
  or by one process (memory). Updates are pure functions applied atomically.
- `DlqStore`: dead-lettered tasks, durable (PostgreSQL, or SQLite when embedded).
- `IdempotencyStore`: claims on idempotency keys (Redis fast path, PostgreSQL or SQLite).

The decision core never imports this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from ..policy.breaker import BreakerState, Status
from ..policy.window import Window

T = TypeVar("T")

BreakerUpdate = Callable[[BreakerState | None], tuple[BreakerState, Status | None]]
WindowUpdate = Callable[[Window | None], Window]


class StoreUnavailable(Exception):
    """A backend did not answer; the message says which and why (never a secret)."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {reason}")


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


STATUSES = ("pending", "retrying", "resolved", "abandoned")


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


class StateStore(Protocol):
    name: str

    async def snapshot(
        self, breaker_key: str | None, outcomes_key: str | None
    ) -> tuple[BreakerState | None, Window | None]: ...

    async def breakers(self, keys: Sequence[str]) -> dict[str, BreakerState]: ...

    async def update_breaker(
        self, key: str, update: BreakerUpdate, ttl: float
    ) -> tuple[BreakerState, Status | None]: ...

    async def update_outcomes(self, key: str, update: WindowUpdate, ttl: float) -> None: ...

    async def remember_failure(self, task_id: str, failure_type: str, ttl: float) -> None: ...

    async def last_failure(self, task_id: str) -> str | None: ...

    async def all_breakers(self) -> dict[str, BreakerState]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class DlqStore(Protocol):
    name: str

    async def put(self, record: DlqRecord) -> None:
        """Insert; a record whose id is already stored is left as it is."""

    async def failed_again(self, record: DlqRecord) -> bool:
        """A retry from the DLQ failed for good: back to `pending` with the new failure."""

    async def resolve(self, dlq_id: str, now: float) -> bool:
        """A retry from the DLQ succeeded: `retrying|pending → resolved`, once."""

    async def get(self, dlq_id: str) -> DlqRecord | None: ...

    async def list(self, where: DlqFilter, limit: int, cursor: str | None = None) -> DlqPage:
        """Newest first, keyset-paged on (created_at, id): stable while records arrive."""

    async def count(self, where: DlqFilter) -> int: ...

    def iterate(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[DlqRecord]:
        """Every matching record, oldest first, fetched `batch` at a time (exports, bulk
        actions): never the whole result in memory."""

    async def transition(
        self,
        ids: Sequence[str],
        to: str,
        from_statuses: Sequence[str],
        now: float,
        *,
        error: str | None = None,
        count_retry: bool = False,
    ) -> list[DlqRecord]:
        """Move the records among `ids` whose status is in `from_statuses` to `to`, in one
        conditional UPDATE: under any concurrency each record moves once. Sets updated_at,
        last_error (when given), dlq_retries += 1 when `count_retry`. Returns the records
        that moved, as they were before (their old status included)."""

    async def counts(self) -> dict[str, int]:
        """Records per status (every status present, 0 when none)."""

    async def oldest_pending(self) -> float | None:
        """created_at of the oldest pending record."""

    async def audit(self, entry: AuditEntry) -> None: ...

    async def audit_log(self, limit: int, cursor: str | None = None) -> AuditPage:
        """Newest first."""

    async def record_failure(self, at: float, task_name: str, failure_type: str) -> None:
        """One failure event, for trends."""

    async def trends(self, since: float, bucket: float = 3600) -> list[TrendBucket]:
        """Failure events since `since`, counted per bucket and failure type."""

    async def purge(self, now: float, keep_failures: float) -> int:
        """Delete failure events older than `keep_failures` seconds and expired
        idempotency keys; returns how many rows went."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class IdempotencyStore(Protocol):
    name: str

    async def claim(self, key: str, ttl: float, now: float) -> Claim:
        """The first caller gets `claimed: true`; later ones see when and in what state."""

    async def complete(self, key: str, ttl: float, now: float) -> bool: ...

    async def release(self, key: str) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


# --- serialisation of core state, shared by the backends that store bytes ------------------

_breaker_encoder = msgspec.msgpack.Encoder()


def encode_breaker(state: BreakerState) -> bytes:
    return _breaker_encoder.encode(
        (state.status.value, state.opened_at, state.window.buckets, state.probes, state.probe_at)
    )


def decode_breaker(data: bytes) -> BreakerState:
    status, opened_at, buckets, probes, probe_at = msgspec.msgpack.decode(data)
    return BreakerState(
        Status(status), opened_at, Window(tuple(map(tuple, buckets))), probes, probe_at
    )


def encode_window(window: Window) -> bytes:
    return _breaker_encoder.encode(window.buckets)


def decode_window(data: bytes) -> Window:
    return Window(tuple(map(tuple, msgspec.msgpack.decode(data))))
