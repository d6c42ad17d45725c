"""The small interfaces (ports) the services keep their state behind.

Three kinds of state, each with its own lifetime and backend choice:

- `StateStore`: circuit breakers and retry-outcome windows, shared by the fleet (Redis)
  or by one process (memory). Updates are pure functions applied atomically.
- `DlqStore`: dead-lettered tasks, durable (PostgreSQL, or SQLite when embedded).
- `IdempotencyStore`: claims on idempotency keys (Redis fast path, PostgreSQL or SQLite).

The decision core never imports this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple, Protocol

from ..errors import StoreRefused, StoreUnavailable
from ..policy.breaker import BreakerState, Status
from ..policy.poison import Runs
from ..policy.window import Window
from ..records import (
    AuditEntry,
    AuditPage,
    Claim,
    DlqFilter,
    DlqPage,
    DlqRecord,
    HookEvent,
    TrendBucket,
)

BreakerUpdate = Callable[[BreakerState | None], tuple[BreakerState, Status | None]]
WindowUpdate = Callable[[Window | None], Window]
RunsUpdate = Callable[[Runs | None], Runs | None]


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

    async def remember_answer(self, report_id: str, answer: bytes, ttl: float) -> None:
        """Keep the answer given to a report, so that the same report sent again gets it
        back instead of being applied twice."""

    async def answer_for(self, report_id: str) -> bytes | None: ...

    async def all_breakers(self) -> dict[str, BreakerState]: ...

    async def update_runs(self, task_id: str, update: RunsUpdate, ttl: float) -> Runs | None:
        """The runs of a task id that started and have not ended (poison detection):
        `update` applied atomically; None from it forgets the task id."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class DlqStore(Protocol):
    name: str

    async def put(self, record: DlqRecord) -> None:
        """Insert; a record whose id is already stored is left as it is."""

    async def failed_again(self, record: DlqRecord) -> bool:
        """A retry from the DLQ failed for good: back to `pending` with the new failure
        (only the record of the same task id)."""

    async def resolve(self, dlq_id: str, task_id: str, now: float) -> bool:
        """A retry from the DLQ succeeded: `retrying|pending → resolved`, once, for the
        record of that task id only."""

    async def get(self, dlq_id: str) -> DlqRecord | None: ...

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids that start with `prefix`, in order."""

    async def list(self, where: DlqFilter, limit: int, cursor: str | None = None) -> DlqPage:
        """Newest first, keyset-paged on (created_at, id): stable while records arrive."""

    async def count(self, where: DlqFilter) -> int: ...

    def iterate(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[DlqRecord]:
        """Every matching record, oldest first, fetched `batch` at a time (bulk actions):
        never the whole result in memory."""

    def export_rows(
        self, where: DlqFilter, batch: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """As `iterate`, a batch of rows at a time, with only the CSV export's columns
        (`sidecar.service.export.CSV_COLUMNS`; times as unix seconds)."""

    def ids(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[list[str]]:
        """As `iterate`, the ids only, a batch at a time (what bulk actions move by id)."""

    async def transition(
        self,
        ids: Sequence[str],
        to: str,
        from_statuses: Sequence[str],
        now: float,
        *,
        error: str | None = None,
        count_retry: bool = False,
        lease_until: float | None = None,
    ) -> list[DlqRecord]:
        """Move the records among `ids` whose status is in `from_statuses` to `to`, in one
        conditional UPDATE: under any concurrency each record moves once. Sets updated_at,
        last_error (when given), dlq_retries += 1 when `count_retry`, and the lease (a
        record taken for a requeue; None clears it). Returns the records that moved, as
        they were before (their old status included)."""

    async def end_lease(self, ids: Sequence[str]) -> None:
        """The requeues of these `retrying` records were sent."""

    async def lapsed_leases(self, now: float, limit: int = 500) -> list[str]:
        """Records taken for a requeue whose lease ran out: their sidecar died."""

    async def counts(self) -> dict[str, int]:
        """Records per status (every status present, 0 when none)."""

    async def oldest_pending(self) -> float | None:
        """created_at of the oldest pending record."""

    async def audit(self, entry: AuditEntry, *, key: str | None = None) -> None:
        """`key`, when given, makes the insert idempotent: an entry with the same key is
        stored once (the spool replays entries whose first write may have committed)."""

    async def audit_log(self, limit: int, cursor: str | None = None) -> AuditPage:
        """Newest first."""

    async def record_events(self, events: Sequence[HookEvent]) -> None:
        """Hook events for the history (exports, backtests) and for trends."""

    def events(self, since: float, until: float, batch: int = 1000) -> AsyncIterator[list]:
        """Exportable events in [since, until), oldest first, a batch at a time."""

    async def trends(self, since: float, bucket: float = 3600) -> list[TrendBucket]:
        """Failure events since `since`, counted per bucket and failure type."""

    async def purge(self, now: float, keep_events: float) -> int:
        """Delete events older than `keep_events` seconds and expired idempotency keys;
        returns how many rows went."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class NewClaim(NamedTuple):
    """One claim of a batch: the stored key, the owner it would get, its TTL in seconds."""

    key: str
    owner: str
    ttl: float


class IdempotencyStore(Protocol):
    name: str

    async def claim(self, key: str, owner: str, ttl: float, now: float) -> Claim:
        """The first caller gets `claimed: true` and becomes the key's `owner`; later ones
        see when and in what state."""

    async def claim_many(self, claims: Sequence[NewClaim], now: float) -> list[Claim]:
        """`claim` of each, in order (a key twice: the second is a hit), in as few round
        trips as the store allows."""

    async def complete(self, key: str, owner: str, ttl: float, now: float) -> bool:
        """Mark the owner's claim done (kept for `ttl`); False when `owner` does not hold
        the key (it expired and was taken over, or never was)."""

    async def release(self, key: str, owner: str) -> bool:
        """Drop the owner's running claim; False when it holds none."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


__all__ = [
    "BreakerUpdate",
    "DlqStore",
    "IdempotencyStore",
    "NewClaim",
    "RunsUpdate",
    "StateStore",
    "StoreRefused",
    "StoreUnavailable",
    "WindowUpdate",
]
