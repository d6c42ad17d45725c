"""What operators do with dead letters: look them up (by id or a unique prefix of it),
retry, abandon, bulk retries with a rate limit and readable progress, the audit log.

Every state change is a conditional transition in the store (so it happens once however
many operators or sidecars try at the same time) and is written to the audit log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
BATCH = 1000  # records read from the store at a time
CHUNK = 1000  # records taken (pending → retrying) at a time, just before they are sent


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
    stopped: bool = False  # the sidecar shut down before the job was through
    finished_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def view(self) -> dict[str, object]:
        done = self.requeued + self.skipped + self.failed
        return {
            "id": self.id,
            "state": "stopped" if self.stopped else "finished" if self.finished_at else "running",
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
        lease: float = 60.0,
    ) -> None:
        self.policies = policies
        self.store = store
        self.target = target
        self.lease = lease  # how long a taken record may wait for its send
        self.metrics = metrics
        self.clock = clock
        self.jobs: dict[str, BulkJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    # --- reading -----------------------------------------------------------------------

    async def get(self, id_or_prefix: str) -> DlqRecord:
        """The record with this id, or the one record whose id starts with it."""
        record = await self.store.get(id_or_prefix)
        if record is not None:
            return record
        ids = await self.store.ids_with_prefix(id_or_prefix, limit=100)
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
        """The record's own queue and priority, or the level an operator chose. A chosen
        level moves the retry to the level's queue only where the policy routes retries."""
        if priority is None:
            return Route(queue or record.target_queue, record.priority, record.priority_value)
        policy = self.policies.current.priority
        level = policy.level(priority)
        routed = level.queue if policy.route_retries else record.target_queue
        return Route(queue or routed, level.name, level.value)

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
        await self.store.end_lease([record.id])
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
        """pending → retrying, once: the records this call may requeue now, leased until
        their sends are confirmed (`end_lease`)."""
        now = self.clock()
        return await self.store.transition(
            ids, "retrying", ("pending",), now, count_retry=True, lease_until=now + self.lease
        )

    async def release_lapsed(self) -> list[str]:
        """Records a dead sidecar took for a requeue and never confirmed: back to
        pending, audited. (Their message may have left: a requeue is at least once.)"""
        ids = await self.store.lapsed_leases(self.clock())
        moved = await self.store.transition(ids, "pending", ("retrying",), self.clock())
        if moved:
            log.warning("released %d records left retrying by a stopped requeue", len(moved))
            await self.store.audit(
                AuditEntry(
                    at=self.clock(),
                    actor="task-sidecar",
                    action="release_lapsed",
                    record_ids=[r.id for r in moved],
                    from_status="retrying",
                    reason="taken for a requeue that was never confirmed as sent",
                )
            )
        return [r.id for r in moved]

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

    async def bulk_abandon(
        self,
        actor: str,
        *,
        ids: list[str] | None,
        where: DlqFilter | None,
        reason: str,
        dry_run: bool,
    ) -> dict[str, object]:
        """Abandon pending and retrying records (by ids, or by filter: those there now),
        at once. Each moves once however many calls race (the store's conditional
        transition); each batch moved is one audit entry. A dry run only counts them."""
        states = ("pending", "retrying")
        if where is not None:
            now = self.clock()
            until = now if where.until is None else min(where.until, now)
            where = msgspec.structs.replace(where, until=until)
            if where.status is not None and where.status not in states:
                return {"dry_run": dry_run, "total": 0, "abandoned": 0, "skipped": 0}
        if dry_run:
            if ids is not None:
                found = [await self.store.get(i) for i in ids]
                total = sum(1 for r in found if r is not None and r.status in states)
            else:
                assert where is not None
                total = sum(
                    [
                        await self.store.count(msgspec.structs.replace(where, status=s))
                        for s in ((where.status,) if where.status else states)
                    ]
                )
            return {"dry_run": True, "total": total}
        abandoned = skipped = 0
        async for batch in self._records(ids, where):
            wanted = [r.id for r in batch if r.status in states]
            moved = await self.store.transition(wanted, "abandoned", states, self.clock())
            abandoned += len(moved)
            skipped += len(wanted) - len(moved)
            if moved:
                by_status: dict[str, list[str]] = {}
                for record in moved:
                    by_status.setdefault(record.status, []).append(record.id)
                for from_status, record_ids in by_status.items():
                    await self.store.audit(
                        AuditEntry(
                            at=self.clock(),
                            actor=actor,
                            action="bulk_abandon",
                            record_ids=record_ids,
                            from_status=from_status,
                            reason=reason,
                        )
                    )
        if abandoned:
            self.metrics.record_dlq_action("bulk_abandon")
        return {
            "dry_run": False,
            "total": abandoned + skipped,
            "abandoned": abandoned,
            "skipped": skipped,
        }

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

    async def _ids(self, ids: list[str] | None, where: DlqFilter) -> AsyncIterator[list[str]]:
        """As `_records`, the ids only: a bulk retry moves records by id, and its store
        transition returns them whole."""
        if ids is not None:
            async for batch in self._records(ids, None):
                yield [r.id for r in batch]
            return
        async for batch in self.store.ids(where, batch=BATCH):
            yield batch

    async def _run_bulk(
        self, job: BulkJob, ids: list[str] | None, where: DlqFilter | None, priority: str | None
    ) -> None:
        started = time.monotonic()
        # Paced jobs take one record when it is due; others a chunk at a time. Either way
        # a record is `retrying` only just before its send, so a stop strands none. The
        # next chunk is taken while the one before is handed over: the store's thread and
        # the target's work at once.
        chunk = 1 if job.rate_per_second else CHUNK
        handing: asyncio.Task[None] | None = None
        try:
            async for batch in self._ids(ids, where or DlqFilter()):
                for start in range(0, len(batch), chunk):
                    if self._stopping.is_set():
                        job.stopped = True
                        return
                    if job.rate_per_second:  # pace: record n leaves at n / rate seconds
                        due = started + job.requeued / job.rate_per_second
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                self._stopping.wait(), max(0.0, due - time.monotonic())
                            )
                        if self._stopping.is_set():
                            job.stopped = True
                            return
                    taking = batch[start : start + chunk]
                    moved = await self._take(taking)
                    job.skipped += len(taking) - len(moved)
                    previous, handing = handing, None
                    if previous is not None:
                        await previous
                    handing = asyncio.create_task(self._hand_over(job, moved, priority))
        except Exception as exc:  # a store outage: the job stops, saying why
            job.errors.append(f"stopped: {type(exc).__name__}: {exc}")
            log.exception("bulk retry %s stopped", job.id)
        finally:
            if handing is not None:
                try:  # what is taken is sent (or put back), stop or not
                    await handing
                except Exception as exc:
                    job.errors.append(f"stopped: {type(exc).__name__}: {exc}")
                    log.exception("bulk retry %s stopped", job.id)
            job.finished_at = self.clock()
            self.metrics.record_dlq_action("bulk_retry")

    async def _hand_over(self, job: BulkJob, moved: list[DlqRecord], priority: str | None):
        """Send records taken for a bulk retry; the ones the target refused go back to
        pending, saying why."""
        if not moved:
            return
        routes = [self.route(record, priority, None) for record in moved]
        errors = await self.target.requeue_many(
            [(r, route.queue, route.priority_value) for r, route in zip(moved, routes, strict=True)]
        )
        sent, failed = [], collections.defaultdict(list)
        for record, error in zip(moved, errors, strict=True):
            if error is None:
                sent.append(record.id)
            else:
                failed[str(error)].append(record.id)
                job.errors.append(f"{record.id}: {error}")
        for error, ids in failed.items():
            log.warning("requeue of %d records failed: %s", len(ids), error)
            await self.store.transition(ids, "pending", ("retrying",), self.clock(), error=error)
        self.metrics.record_dlq_action("retry", len(sent))
        job.requeued += len(sent)
        job.failed += len(moved) - len(sent)
        await self.store.end_lease(sent)
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

    async def stop_jobs(self, timeout: float) -> None:
        """Shutdown: bulk retries stop before their next record and are waited for at
        most `timeout` seconds; what they had not taken stays pending."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def wait_jobs(self) -> None:
        """Let running bulk retries finish (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
