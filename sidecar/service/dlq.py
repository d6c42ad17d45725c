"""What operators do with dead letters: look them up (by id or a unique prefix of it),
retry, abandon, bulk retries with a rate limit and readable progress, the audit log.

Every state change is a conditional transition in the store (so it happens once however
many operators or sidecars try at the same time) and is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec

from ..metrics import Metrics
from ..records import AuditEntry, AuditPage, DlqFilter, DlqPage, DlqRecord
from ..requeue import RequeueError, RequeueTarget
from ..store.ports import DlqStore
from .errors import Ambiguous, Conflict, NotFound
from .policies import Policies

log = logging.getLogger("task_sidecar.dlq")
BATCH = 200


@dataclass(frozen=True)
class Route:
    queue: str
    priority: str
    priority_value: int


@dataclass
class BulkJob:
    """A bulk retry running in this sidecar; its counters are read while it runs."""

    id: str
    actor: str
    total: int
    rate_per_second: float | None
    started_at: float
    requeued: int = 0
    skipped: int = 0  # no longer pending when reached (another action took it)
    failed: int = 0
    finished_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def view(self) -> dict[str, object]:
        done = self.requeued + self.skipped + self.failed
        return {
            "id": self.id,
            "state": "finished" if self.finished_at else "running",
            "total": self.total,
            "done": done,
            "requeued": self.requeued,
            "skipped": self.skipped,
            "failed": self.failed,
            "rate_per_second": self.rate_per_second,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "errors": self.errors[-10:],
        }


class DeadLetters:
    def __init__(
        self,
        policies: Policies,
        store: DlqStore,
        target: RequeueTarget,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.policies = policies
        self.store = store
        self.target = target
        self.metrics = metrics
        self.clock = clock
        self.jobs: dict[str, BulkJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- reading -----------------------------------------------------------------------

    async def get(self, id_or_prefix: str) -> DlqRecord:
        """The record with this id, or the one record whose id starts with it."""
        record = await self.store.get(id_or_prefix)
        if record is not None:
            return record
        ids = await self.store.ids_with_prefix(id_or_prefix, limit=20)
        if len(ids) > 1:
            raise Ambiguous(id_or_prefix, ids)
        if ids and (record := await self.store.get(ids[0])) is not None:
            return record
        raise NotFound(f"no DLQ record {id_or_prefix}")

    async def list(self, where: DlqFilter, limit: int, cursor: str | None) -> DlqPage:
        return await self.store.list(where, limit, cursor)

    def iterate(self, where: DlqFilter) -> AsyncIterator[DlqRecord]:
        return self.store.iterate(where)

    async def audit_log(self, limit: int, cursor: str | None) -> AuditPage:
        return await self.store.audit_log(limit, cursor)

    def route(self, record: DlqRecord, priority: str | None, queue: str | None) -> Route:
        """The record's own queue and priority, or the level an operator chose."""
        if priority is None:
            return Route(queue or record.target_queue, record.priority, record.priority_value)
        level = self.policies.current.priority.level(priority)
        return Route(queue or level.queue, level.name, level.value)

    # --- single records ----------------------------------------------------------------

    async def retry(
        self, dlq_id: str, actor: str, priority: str | None = None, queue: str | None = None
    ) -> DlqRecord:
        record = await self.get(dlq_id)
        route = self.route(record, priority, queue)  # KeyError: unknown priority
        [moved] = await self._take([record.id]) or [None]
        if moved is None:
            raise Conflict(await self.get(record.id), "retry")
        await self._requeue(moved, route)
        await self.store.audit(
            AuditEntry(
                at=self.clock(),
                actor=actor,
                action="retry",
                record_ids=[record.id],
                from_status=moved.status,
                details={"queue": route.queue, "priority": route.priority},
            )
        )
        return await self.get(record.id)

    async def abandon(self, dlq_id: str, actor: str, reason: str) -> DlqRecord:
        record = await self.get(dlq_id)
        moved = await self.store.transition(
            [record.id], "abandoned", ("pending", "retrying"), self.clock(), error=None
        )
        if not moved:
            raise Conflict(record, "abandon")
        self.metrics.record_dlq_action("abandon")
        await self.store.audit(
            AuditEntry(
                at=self.clock(),
                actor=actor,
                action="abandon",
                record_ids=[record.id],
                from_status=moved[0].status,
                reason=reason,
            )
        )
        return await self.get(record.id)

    async def _take(self, ids: list[str]) -> list[DlqRecord]:
        """pending → retrying, once: the records this call may requeue."""
        return await self.store.transition(
            ids, "retrying", ("pending",), self.clock(), count_retry=True
        )

    async def _requeue(self, record: DlqRecord, route: Route) -> None:
        """Hand a record (already `retrying`) to the target; on failure back to pending."""
        try:
            await self.target.requeue(record, route.queue, route.priority_value)
        except RequeueError as exc:
            await self.store.transition(
                [record.id], "pending", ("retrying",), self.clock(), error=str(exc)
            )
            log.warning("requeue of %s failed: %s", record.id, exc)
            raise
        self.metrics.record_dlq_action("retry")

    # --- bulk -----------------------------------------------------------------------------

    async def bulk_retry(
        self,
        actor: str,
        *,
        ids: list[str] | None,
        where: DlqFilter | None,
        priority: str | None,
        rate_per_second: float | None,
        dry_run: bool,
    ) -> dict[str, object]:
        """Start a bulk retry of pending records (by ids or by filter) in the background;
        a dry run only counts them."""
        if priority is not None:
            self.policies.current.priority.level(priority)  # KeyError: unknown priority
        if ids is not None:
            found = [await self.store.get(i) for i in ids]
            total = sum(1 for r in found if r is not None and r.status == "pending")
        else:
            # Only what is pending now: records dead-lettered while it runs are left alone.
            now = self.clock()
            where = where or DlqFilter()
            until = now if where.until is None else min(where.until, now)
            where = msgspec.structs.replace(where, status="pending", until=until)
            total = await self.store.count(where)
        if dry_run:
            return {"dry_run": True, "total": total}
        job = BulkJob(str(uuid.uuid4()), actor, total, rate_per_second, self.clock())
        self.jobs[job.id] = job
        task = asyncio.create_task(self._run_bulk(job, ids, where, priority))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job.view()

    async def _records(
        self, ids: list[str] | None, where: DlqFilter | None
    ) -> AsyncIterator[list[DlqRecord]]:
        if ids is not None:
            for start in range(0, len(ids), BATCH):
                found = [await self.store.get(i) for i in ids[start : start + BATCH]]
                yield [r for r in found if r is not None]
            return
        batch: list[DlqRecord] = []
        async for record in self.store.iterate(where or DlqFilter(), batch=BATCH):
            batch.append(record)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _run_bulk(
        self, job: BulkJob, ids: list[str] | None, where: DlqFilter | None, priority: str | None
    ) -> None:
        started = time.monotonic()
        try:
            async for batch in self._records(ids, where):
                moved = await self._take([r.id for r in batch])
                job.skipped += len(batch) - len(moved)
                for record in moved:
                    if job.rate_per_second:  # pace: record n leaves at n / rate seconds
                        due = started + job.requeued / job.rate_per_second
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                    try:
                        await self._requeue(record, self.route(record, priority, None))
                        job.requeued += 1
                    except RequeueError as exc:
                        job.failed += 1
                        job.errors.append(f"{record.id}: {exc}")
                if moved:
                    await self.store.audit(
                        AuditEntry(
                            at=self.clock(),
                            actor=job.actor,
                            action="bulk_retry",
                            record_ids=[r.id for r in moved],
                            from_status="pending",
                            details={"job": job.id, "priority": priority},
                        )
                    )
        except Exception as exc:  # a store outage: the job stops, saying why
            job.errors.append(f"stopped: {type(exc).__name__}: {exc}")
            log.exception("bulk retry %s stopped", job.id)
        finally:
            job.finished_at = self.clock()
            self.metrics.record_dlq_action("bulk_retry")

    async def wait_jobs(self) -> None:
        """Let running bulk retries finish (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
