"""What operators do: retry, abandon and export dead-lettered tasks, bulk retries with a
rate limit and readable progress, breaker resets, trends and the audit log.

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

from .metrics import Metrics
from .policy.breaker import BreakerState, Status, reset
from .policy.durations import parse_duration
from .policy.model import BreakerSettings
from .requeue import RequeueError, RequeueTarget
from .service import Policies, Stores
from .store.base import AuditEntry, DlqFilter, DlqRecord

log = logging.getLogger("task_sidecar.operations")
BATCH = 200


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The record is not in a state the action applies to."""

    def __init__(self, record: DlqRecord, action: str) -> None:
        self.record = record
        super().__init__(f"record {record.id} is {record.status}; cannot {action} it")


@dataclass(frozen=True)
class Route:
    queue: str
    priority: str
    priority_value: int


class BreakerView(msgspec.Struct, frozen=True):
    key: str
    state: str
    failures_in_window: int
    opened_at: float | None
    half_open_in_seconds: float | None


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


class Operations:
    def __init__(
        self,
        policies: Policies,
        stores: Stores,
        target: RequeueTarget,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.stores = stores
        self.target = target
        self.metrics = metrics
        self.clock = clock
        self.jobs: dict[str, BulkJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- single records ----------------------------------------------------------------

    async def get(self, dlq_id: str) -> DlqRecord:
        record = await self.stores.dlq.get(dlq_id)
        if record is None:
            raise NotFound(f"no DLQ record {dlq_id}")
        return record

    def route(self, record: DlqRecord, priority: str | None, queue: str | None) -> Route:
        """The record's own queue and priority, or the level an operator chose."""
        if priority is None:
            return Route(queue or record.target_queue, record.priority, record.priority_value)
        level = self.policies.current.priority.level(priority)
        return Route(queue or level.queue, level.name, level.value)

    async def retry(
        self, dlq_id: str, actor: str, priority: str | None = None, queue: str | None = None
    ) -> DlqRecord:
        record = await self.get(dlq_id)
        route = self.route(record, priority, queue)  # KeyError: unknown priority
        [moved] = await self._take([dlq_id]) or [None]
        if moved is None:
            raise Conflict(await self.get(dlq_id), "retry")
        await self._requeue(moved, route)
        await self.stores.dlq.audit(
            AuditEntry(
                at=self.clock(),
                actor=actor,
                action="retry",
                record_ids=[dlq_id],
                from_status=moved.status,
                details={"queue": route.queue, "priority": route.priority},
            )
        )
        return await self.get(dlq_id)

    async def abandon(self, dlq_id: str, actor: str, reason: str) -> DlqRecord:
        record = await self.get(dlq_id)
        moved = await self.stores.dlq.transition(
            [dlq_id], "abandoned", ("pending", "retrying"), self.clock(), error=None
        )
        if not moved:
            raise Conflict(record, "abandon")
        self.metrics.at(self.metrics.dlq_actions, "abandon").inc()
        await self.stores.dlq.audit(
            AuditEntry(
                at=self.clock(),
                actor=actor,
                action="abandon",
                record_ids=[dlq_id],
                from_status=moved[0].status,
                reason=reason,
            )
        )
        return await self.get(dlq_id)

    async def _take(self, ids: list[str]) -> list[DlqRecord]:
        """pending → retrying, once: the records this call may requeue."""
        return await self.stores.dlq.transition(
            ids, "retrying", ("pending",), self.clock(), count_retry=True
        )

    async def _requeue(self, record: DlqRecord, route: Route) -> bool:
        """Hand a record (already `retrying`) to the target; on failure back to pending."""
        try:
            await self.target.requeue(record, route.queue, route.priority_value)
        except RequeueError as exc:
            await self.stores.dlq.transition(
                [record.id], "pending", ("retrying",), self.clock(), error=str(exc)
            )
            log.warning("requeue of %s failed: %s", record.id, exc)
            raise
        self.metrics.at(self.metrics.dlq_actions, "retry").inc()
        return True

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
            found = [await self.stores.dlq.get(i) for i in ids]
            total = sum(1 for r in found if r is not None and r.status == "pending")
        else:
            # Only what is pending now: records dead-lettered while it runs are left alone.
            now = self.clock()
            where = where or DlqFilter()
            until = now if where.until is None else min(where.until, now)
            where = msgspec.structs.replace(where, status="pending", until=until)
            total = await self.stores.dlq.count(where)
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
                found = [await self.stores.dlq.get(i) for i in ids[start : start + BATCH]]
                yield [r for r in found if r is not None]
            return
        batch: list[DlqRecord] = []
        async for record in self.stores.dlq.iterate(where or DlqFilter(), batch=BATCH):
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
                    await self.stores.dlq.audit(
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
            self.metrics.at(self.metrics.dlq_actions, "bulk_retry").inc()

    async def wait_jobs(self) -> None:
        """Let running bulk retries finish (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- breakers ---------------------------------------------------------------------------

    def _breaker_settings(self, key: str) -> BreakerSettings | None:
        owner, _, failure_type = key.rpartition(":")
        policy = self.policies.current
        if failure_type not in policy.failure_types:
            return None
        return policy.retry_policy(owner, failure_type).breaker

    async def breakers(self) -> list[BreakerView]:
        now = self.clock()
        views = []
        for key, state in sorted((await self.stores.state.all_breakers()).items()):
            settings = self._breaker_settings(key)
            if settings is None:
                continue  # its failure type has no breaker any more
            views.append(self._view(key, state, settings, now))
        return views

    def _view(
        self, key: str, state: BreakerState, settings: BreakerSettings, now: float
    ) -> BreakerView:
        current = state.current(settings, now)
        return BreakerView(
            key=key,
            state=current.value,
            failures_in_window=state.window.totals(now, settings.window)[1],
            opened_at=state.opened_at if current is not Status.CLOSED else None,
            half_open_in_seconds=round(state.reopens_in(settings, now), 3)
            if current is Status.OPEN
            else None,
        )

    async def reset_breaker(self, key: str, actor: str) -> BreakerView:
        settings = self._breaker_settings(key)
        found = await self.stores.state.breakers([key])
        if settings is None or key not in found:
            raise NotFound(f"no breaker {key}")
        now = self.clock()
        state, moved = await self.stores.state.update_breaker(
            key, lambda s: reset(s or found[key], settings, now), 2 * settings.open_for + 60
        )
        if moved is not None:
            label = self.metrics.breaker(key)
            self.metrics.at(self.metrics.breaker_transitions, label, moved.value).inc()
        await self.stores.dlq.audit(
            AuditEntry(
                at=now,
                actor=actor,
                action="breaker_reset",
                from_status=found[key].current(settings, now).value,
                details={"breaker": key},
            )
        )
        return self._view(key, state, settings, now)

    # --- trends, policy -----------------------------------------------------------------------

    async def trends(self, hours: float) -> list[dict[str, object]]:
        since = self.clock() - hours * 3600
        buckets = await self.stores.dlq.trends(since, 3600)
        return [msgspec.to_builtins(b) for b in buckets]

    async def reload_policy(self, actor: str) -> list[str]:
        error = self.policies.reload()
        await self.stores.dlq.audit(
            AuditEntry(
                at=self.clock(), actor=actor, action="policy_reload", details={"ok": error is None}
            )
        )
        return [] if error is None else [str(p) for p in error.problems]


def parse_time(value: str, name: str) -> float:
    """Unix seconds, an ISO 8601 time, or an age like `24h` (that long ago)."""
    from datetime import datetime

    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{name}: expected unix seconds, an ISO 8601 time or an age like 24h, got {value!r}"
        ) from None
