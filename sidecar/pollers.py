"""Background work of a running sidecar: figures that need a query are read here, every
`poll_interval`, and set on gauges, so a Prometheus scrape never waits on PostgreSQL or
Redis; failure events are written in batches; old rows are purged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from .metrics import Metrics
from .operations import Operations
from .policy.breaker import Status
from .settings import Settings
from .store.base import StoreUnavailable

log = logging.getLogger("task_sidecar.pollers")

# Celery's Redis transport keeps priorities 3, 6 and 9 in sub-queues named
# "<queue>\x06\x16<priority>" beside the queue itself (kombu's priority_steps).
CELERY_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class Pollers:
    def __init__(
        self,
        settings: Settings,
        operations: Operations,
        metrics: Metrics,
        failure_events: deque[tuple[float, str, str]],
    ) -> None:
        self.settings = settings
        self.operations = operations
        self.metrics = metrics
        self.failure_events = failure_events
        self._broker = None
        if settings.queues and (settings.celery_broker_url or "").startswith(("redis", "rediss")):
            import redis.asyncio as aioredis

            self._broker = aioredis.Redis.from_url(
                settings.celery_broker_url, socket_timeout=1, socket_connect_timeout=1
            )

    async def refresh(self) -> None:
        """Read every slow figure once."""
        stores, m = self.operations.stores, self.metrics
        for store in stores.distinct():
            try:
                await asyncio.wait_for(store.ping(), 1.0)
                m.at(m.backend_up, store.name).set(1)
            except (StoreUnavailable, TimeoutError):
                m.at(m.backend_up, store.name).set(0)
        with _logged("DLQ depth"):
            for status, count in (await stores.dlq.counts()).items():
                m.at(m.dlq_depth, status).set(count)
            oldest = await stores.dlq.oldest_pending()
            m.dlq_oldest_pending_age.set(max(0.0, time.time() - oldest) if oldest else 0)
        with _logged("breakers"):
            for view in await self.operations.breakers():
                label = m.breaker(view.key)
                for status in Status:
                    m.at(m.breaker_state, label, status.value).set(view.state == status.value)
        if self._broker is not None:
            with _logged("queue depth"):
                await self._queue_depths()

    async def _queue_depths(self) -> None:
        async with self._broker.pipeline(transaction=False) as pipe:
            for queue in self.settings.queues:
                for suffix in CELERY_PRIORITY_SUFFIXES:
                    pipe.llen(queue + suffix)
            lengths = await pipe.execute()
        step = len(CELERY_PRIORITY_SUFFIXES)
        for i, queue in enumerate(self.settings.queues):
            depth = sum(lengths[i * step : (i + 1) * step])
            self.metrics.at(self.metrics.queue_depth, queue).set(depth)

    async def flush_failure_events(self) -> None:
        dlq = self.operations.stores.dlq
        while self.failure_events:
            at, task, failure_type = self.failure_events[0]
            await dlq.record_failure(at, task, failure_type)
            self.failure_events.popleft()  # only once it is stored

    async def replay_spool(self) -> None:
        """DLQ writes spooled while PostgreSQL was away, in order, once it answers."""
        await self.operations.stores.dlq.replay()  # type: ignore[attr-defined]

    async def purge(self) -> None:
        removed = await self.operations.stores.dlq.purge(
            time.time(), self.settings.failure_retention
        )
        if removed:
            log.info("purged %d old failure events and expired claims", removed)

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.aclose()


class _logged(contextlib.AbstractContextManager):
    """A poll that fails is logged and retried next time; it never stops the loop."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __exit__(self, kind, error, tb) -> bool:
        if isinstance(error, StoreUnavailable):
            log.warning("could not refresh %s: %s", self.what, error)
            return True
        return False


async def every(
    seconds: float, work: Callable[[], Awaitable[None]], name: str, stop: asyncio.Event
) -> None:
    """Run `work` now and every `seconds` until `stop` is set. Stopping by an event rather
    than by cancellation lets a poll finish its query (Python 3.11's wait_for can swallow
    a cancellation that arrives as its inner call completes)."""
    while not stop.is_set():
        try:
            await work()
        except StoreUnavailable as exc:
            log.warning("%s: %s", name, exc)
        except Exception:
            log.exception("%s failed", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
