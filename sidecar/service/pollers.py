"""Background work of a running sidecar: figures that need a query are read here, every
`poll_interval`, and set on gauges, so a Prometheus scrape never waits on PostgreSQL or
Redis; failure events are written in batches; the spool is replayed; old rows are purged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import StoreUnavailable
from ..integrations import kombu
from ..metrics import Metrics
from ..records import HookEvent
from ..store.ports import DlqStore, IdempotencyStore, StateStore
from ..store.spool import SpoolingDlq
from .breakers import Breakers

log = logging.getLogger("task_sidecar.pollers")
PING_TIMEOUT = 1.0
EVENT_BATCH = 500


class Pollers:
    def __init__(
        self,
        backends: Sequence[StateStore | DlqStore | IdempotencyStore],
        dlq: DlqStore,
        breakers: Breakers,
        metrics: Metrics,
        events: deque[HookEvent],
        *,
        event_retention: float,
        queues: Sequence[str] = (),
        broker_url: str | None = None,
        spool: SpoolingDlq | None = None,
        release_lapsed: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.backends = backends
        self.dlq = dlq
        self.breakers = breakers
        self.metrics = metrics
        self.events = events
        # A flush pops its events only once they are stored: a second flush meanwhile (the
        # last one at shutdown, a caller's own) would store them again.
        self._flushing = asyncio.Lock()
        self.event_retention = event_retention
        self.queues = tuple(queues)
        self.spool = spool
        self.release_lapsed = release_lapsed
        self._broker: Any = None
        self._stalls = QueueStalls()
        if self.queues and (broker_url or "").startswith(("redis", "rediss")):
            import redis.asyncio as aioredis

            self._broker = aioredis.Redis.from_url(
                broker_url, socket_timeout=1, socket_connect_timeout=1
            )

    async def check_backends(self) -> dict[str, str]:
        """Ping each backend: "ok" or why not, and `backend_up` to match."""
        checks: dict[str, str] = {}
        for store in self.backends:
            try:
                await asyncio.wait_for(store.ping(), PING_TIMEOUT)
                checks[store.name] = "ok"
            except (StoreUnavailable, TimeoutError) as exc:
                checks[store.name] = f"unavailable: {exc or 'timed out'}"
            self.metrics.set_backend_up(store.name, checks[store.name] == "ok")
        return checks

    async def refresh(self) -> None:
        """Read every slow figure once."""
        await self.check_backends()
        if self.spool is not None:
            self.metrics.set_spool_stalled(self.spool.stalled_for())
        with _logged("DLQ depth"):
            counts = await self.dlq.counts()
            oldest = await self.dlq.oldest_pending()
            self.metrics.set_dlq_depth(counts, max(0.0, time.time() - oldest) if oldest else 0)
        with _logged("breakers"):
            await self.breakers.refresh_gauges()
        if self.release_lapsed is not None:
            with _logged("lapsed requeues"):
                await self.release_lapsed()
        if self._broker is not None:
            with _logged("queue depth"):
                await self._queue_depths()

    async def _queue_depths(self) -> None:
        async with self._broker.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for name in kombu.redis_lists(queue):
                    pipe.llen(name)
            lengths = await pipe.execute()
        now = time.time()
        for queue, depth in kombu.queue_depths(self.queues, lengths).items():
            self.metrics.set_queue_depth(queue, depth)
            self.metrics.set_queue_stalled(queue, self._stalls.seconds(queue, depth, now))

    async def flush_events(self) -> None:
        """The hook events answered since the last flush, in batches; one flush at a time."""
        async with self._flushing:
            await self._flush_events()

    async def _flush_events(self) -> None:
        while self.events:
            batch = [self.events[i] for i in range(min(EVENT_BATCH, len(self.events)))]
            await self.dlq.record_events(batch)
            for _ in batch:  # only once they are stored (or spooled)
                self.events.popleft()

    async def purge(self) -> None:
        removed = await self.dlq.purge(time.time(), self.event_retention)
        if removed:
            log.info("purged %d old hook events and expired claims", removed)

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.aclose()


class QueueStalls:
    """How long each queue has held tasks without shrinking. A queue some worker reads
    empties or shrinks between polls now and then; one that only holds or grows for many
    minutes has no consumer (retries routed to a queue no worker reads, a stopped fleet)
    or one far too slow."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float]] = {}  # queue -> (depth, stalled since)

    def seconds(self, queue: str, depth: int, now: float) -> float:
        last_depth, since = self._last.get(queue, (0, now))
        if last_depth == 0 or depth < last_depth:  # was empty, or a worker took some
            since = now
        self._last[queue] = (depth, since)
        return 0.0 if depth == 0 else now - since


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
