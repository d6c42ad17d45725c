"""The two clients. Each hook method builds its exchange with the protocol, lets its
transport carry it, and settles it with the protocol: the sync and the async client
differ only in how the bytes travel.

What they share (options, the protocol, the batch buffer with its one background thread
over http.client, the durable outbox of dead letters decided locally, successes, flush and
stats) is `ClientBase`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .batcher import Batcher
from .exceptions import TRACEBACK_LIMIT
from .fallback import LocalDecider
from .keys import Owner, Scope, Ttl
from .outbox import DEFAULT_MAX_BYTES, Outbox, default_directory
from .protocol import FALL_BACK, Exchange, Protocol, Reply, reason
from .state import Health
from .transport import AiohttpTransport, HTTPTransport

log = logging.getLogger("sidecar.client")
DEFAULT_TIMEOUT = 0.25
T = TypeVar("T")


class _Default:
    def __repr__(self) -> str:
        return "<$TASK_SIDECAR_CLIENT_OUTBOX or ~/.local/state/task-sidecar/outbox>"


DEFAULT_OUTBOX: Any = _Default()


class ClientBase:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        policies: str | Path | None = None,
        retry_interval: float = 1.0,
        buffer_size: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 0.5,
        fallback_max_retries: int = 3,
        fallback_initial_delay: float = 10.0,
        fallback_max_delay: float = 300.0,
        traceback_limit: int = TRACEBACK_LIMIT,
        start_cache: float = 1.0,
        outbox_dir: str | Path | None = DEFAULT_OUTBOX,
        outbox_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """`outbox_dir`: where dead letters decided locally are kept until the sidecar has
        them (outbox.py); by default $TASK_SIDECAR_CLIENT_OUTBOX, else
        $XDG_STATE_HOME/task-sidecar/outbox or ~/.local/state/task-sidecar/outbox; None:
        in memory only."""
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # A batch may take longer than one hook: up to 1000 events in one request.
        self._batch_transport = HTTPTransport(url, token, max(timeout, 2.0))
        self._batcher = Batcher(
            self._send_batch,
            pause=lambda: self.protocol.health.retry_interval,
            closing=self._batch_transport.close,
            capacity=buffer_size,
            batch_size=batch_size,
            interval=flush_interval,
            outbox=_outbox(outbox_dir, outbox_max_bytes),
        )
        self.local = LocalDecider(
            policies, fallback_max_retries, fallback_initial_delay, fallback_max_delay
        )
        self.protocol = Protocol(
            self.local,
            self._batcher.add_durable,
            retry_interval=retry_interval,
            start_cache=start_cache,
            traceback_limit=traceback_limit,
        )

    @property
    def health(self) -> Health:
        return self.protocol.health

    @property
    def outbox_dir(self) -> Path | None:
        """Where dead letters decided locally are kept (None: in memory only)."""
        outbox = self._batcher.outbox
        return outbox.directory if outbox is not None else None

    def _send_batch(self, events: list[dict[str, Any]]) -> list[bool] | None:
        exchange = self.protocol.batch(events)
        if not self.protocol.should_send(exchange):
            return None  # during an outage: keep them, and count no fallback
        return self.protocol.settle(exchange, self._batch_transport.post(exchange))

    def failure_event(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """The failure hook body the client would send (see Protocol.failure_event)."""
        return self.protocol.failure_event(task_id, task_name, exc, **fields)

    def success(self, task_id: str, task_name: str, **fields: Any) -> None:
        """Buffered; sent in batches by a background thread. Never blocks, never raises.
        `fields`: attempt, runtime_seconds, dlq_id, report_id (Protocol.success_event)."""
        try:
            self._batcher.add(self.protocol.success_event(task_id, task_name, **fields))
        except Exception:  # defensive: never into the task
            log.debug("sidecar client: success event not buffered", exc_info=True)

    def cached_start(self, task_name: str) -> dict[str, Any] | None:
        """The answer `start()` would give from its cache, without building a start: None
        when it would ask. For integrations, whose healthy path is every run."""
        return self.protocol.allowances.get(str(task_name))

    def end(self, task_id: str, task_name: str) -> None:
        """A run ended without a success or failure report (postponed, skipped): batched,
        so the sidecar does not count it as a lost run."""
        try:
            self._batcher.add(self.protocol.end_event(task_id, task_name))
        except Exception:  # defensive: never into the task
            log.debug("sidecar client: end event not buffered", exc_info=True)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered event and outbox entry is sent (True) or `timeout`
        passes (False)."""
        self._batcher.start()
        return self._batcher.flush(timeout)

    def stats(self) -> dict[str, Any]:
        health = self.protocol.health
        return {
            "sent": self._batcher.sent,
            "dropped": self._batcher.dropped,
            "pending": self._batcher.pending(),
            "outbox": self._batcher.durable(),
            "fallbacks": health.fallbacks,
            "outages": health.outages,
            "down": health.down_since is not None,
        }


class SidecarClient(ClientBase):
    """Blocking client for workers (Celery, RQ, plain threads). No method raises into the
    task: without a usable answer each falls back (see sidecar.client.fallback)."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._transport = HTTPTransport(url, token, self.timeout)

    def _run(self, exchange: Exchange[T]) -> T:
        reply = None
        if self.protocol.should_send(exchange):
            try:
                reply = self._transport.post(exchange)
            except Exception as exc:  # pragma: no cover - the transport catches what it knows
                reply = unexpected(exc)
        return self.protocol.settle(exchange, reply)

    def failure(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """The decision for a failed run: the sidecar's (`source` absent), else a local one
        (`source`: "local" from the policies file, "default" without it). `fields`:
        attempt, queue, args, kwargs, context, dlq_id, workflow, report_id."""
        self._batcher.start()
        return self._run(self.protocol.failure(task_id, task_name, exc, **fields))

    def start(
        self,
        task_id: str,
        task_name: str,
        *,
        attempt: int = 0,
        queue: str | None = None,
        ask: bool = False,
        **run: Any,
    ) -> dict[str, Any]:
        """May the task run now? Falls back to allowing it. `run`: delivery_count,
        redelivered, host, process, dlq_id, args, kwargs; `ask`: do not answer from the cache."""
        return self._run(
            self.protocol.start(task_id, task_name, attempt=attempt, queue=queue, ask=ask, **run)
        )

    def claim(
        self,
        key: str,
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> dict[str, Any]:
        """Falls back to `{"claimed": true, "source": "fallback"}`: the work runs."""
        return self._run(self.protocol.claim(key, scope, ttl_seconds, task_name))

    def claim_many(
        self,
        keys: Sequence[str],
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """`claim` of each key in one request (at most 1,000), answered in order."""
        return self._run(self.protocol.claim_many(keys, scope, ttl_seconds, task_name))

    def complete(
        self, key: str, scope: Scope = "global", ttl_seconds: Ttl = None, owner: Owner = None
    ) -> bool:
        return self._run(self.protocol.complete(key, scope, ttl_seconds, owner))

    def release(self, key: str, scope: Scope = "global", owner: str | None = None) -> bool:
        return self._run(self.protocol.release(key, scope, owner))

    def close(self, timeout: float = 2.0) -> None:
        self._batcher.close(timeout)
        self._transport.close_all()
        self._batch_transport.close_all()


class AsyncSidecarClient(ClientBase):
    """asyncio client (aiohttp, one keep-alive session): the same methods as coroutines,
    the same answers and fallbacks. `success()` is a plain call: success events share the
    background batching thread."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._transport = AiohttpTransport(url, token, self.timeout)

    async def _run(self, exchange: Exchange[T]) -> T:
        reply = None
        if self.protocol.should_send(exchange):
            try:
                reply = await self._transport.post(exchange)
            except Exception as exc:  # pragma: no cover - the transport catches what it knows
                reply = unexpected(exc)
        result = self.protocol.answer(exchange, reply)
        if result is not FALL_BACK:
            return result
        # In a thread: a dead letter decided locally is fsync'd to the outbox before it is
        # answered, and the other tasks on this loop must not wait for the disk meanwhile.
        return await asyncio.get_running_loop().run_in_executor(None, exchange.fallback)

    async def failure(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        self._batcher.start()
        return await self._run(self.protocol.failure(task_id, task_name, exc, **fields))

    async def start(
        self,
        task_id: str,
        task_name: str,
        *,
        attempt: int = 0,
        queue: str | None = None,
        ask: bool = False,
        **run: Any,
    ) -> dict[str, Any]:
        return await self._run(
            self.protocol.start(task_id, task_name, attempt=attempt, queue=queue, ask=ask, **run)
        )

    async def claim(
        self,
        key: str,
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> dict[str, Any]:
        return await self._run(self.protocol.claim(key, scope, ttl_seconds, task_name))

    async def claim_many(
        self,
        keys: Sequence[str],
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self._run(self.protocol.claim_many(keys, scope, ttl_seconds, task_name))

    async def complete(
        self, key: str, scope: Scope = "global", ttl_seconds: Ttl = None, owner: Owner = None
    ) -> bool:
        return await self._run(self.protocol.complete(key, scope, ttl_seconds, owner))

    async def release(self, key: str, scope: Scope = "global", owner: str | None = None) -> bool:
        return await self._run(self.protocol.release(key, scope, owner))

    async def close(self, timeout: float = 2.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._batcher.close, timeout)
        self._batch_transport.close_all()
        await self._transport.close()


def _outbox(directory: str | Path | None, max_bytes: int) -> Outbox | None:
    if directory is DEFAULT_OUTBOX:
        directory = default_directory()
    return Outbox(directory, max_bytes) if directory is not None else None


def unexpected(exc: Exception) -> Reply:
    log.exception("sidecar client: transport error")
    return Reply(error=reason(exc))
