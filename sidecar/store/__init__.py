"""Stores behind small interfaces (see base.py), chosen from the settings:

- nothing configured: SQLite (DLQ, idempotency) + in-process breaker state — the embedded
  default, so `task-sidecar serve` runs with no other service;
- TASK_SIDECAR_POSTGRES_DSN: PostgreSQL for the DLQ and durable idempotency;
- TASK_SIDECAR_REDIS_URL: Redis for fleet-wide breaker state and fast idempotency claims,
  with the durable store taking claims while Redis does not answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .base import Claim, DlqStore, IdempotencyStore, StoreUnavailable
from .memory import MemoryState

if TYPE_CHECKING:
    from ..service import Stores
    from ..settings import Settings

log = logging.getLogger("task_sidecar.store")


class FallbackIdempotency:
    """Claims go to the fast store; while it does not answer, to the durable one."""

    def __init__(self, fast: IdempotencyStore, durable: IdempotencyStore) -> None:
        self.fast, self.durable = fast, durable
        self.name = fast.name

    async def claim(self, key: str, ttl: float, now: float) -> Claim:
        try:
            return await self.fast.claim(key, ttl, now)
        except StoreUnavailable:
            return await self.durable.claim(key, ttl, now)

    async def complete(self, key: str, ttl: float, now: float) -> bool:
        try:
            return await self.fast.complete(key, ttl, now)
        except StoreUnavailable:
            return await self.durable.complete(key, ttl, now)

    async def release(self, key: str) -> bool:
        try:
            return await self.fast.release(key)
        except StoreUnavailable:
            return await self.durable.release(key)

    async def ping(self) -> None:
        await self.fast.ping()

    async def close(self) -> None:
        return None  # both stores are closed on their own


async def open_stores(settings: Settings) -> Stores:
    from ..service import Stores

    dlq: DlqStore
    if settings.postgres_dsn:
        from .postgres import PostgresStore
        from .spool import SpoolingDlq

        # Starts while PostgreSQL is down: DLQ writes are spooled until it answers, and
        # the migrations run then, before the spool is replayed.
        prepare = await _migrate_now(settings.postgres_dsn) if settings.migrate else None
        durable = PostgresStore(settings.postgres_dsn)
        await durable.open(wait=False)
        dlq = SpoolingDlq(durable, settings.data_dir / "spool", prepare=prepare)
    else:
        from .embedded import SqliteStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        durable = dlq = SqliteStore(settings.data_dir / "sidecar.sqlite3")
        await durable.open()
    if settings.redis_url:
        from .fallback import FallbackState
        from .redis import RedisStore

        fast = RedisStore(settings.redis_url)
        return Stores(
            state=FallbackState(fast), dlq=dlq, idempotency=FallbackIdempotency(fast, durable)
        )
    return Stores(state=MemoryState(), dlq=dlq, idempotency=durable)


async def _migrate_now(dsn: str) -> Callable[[], Awaitable[None]] | None:
    """Apply the migrations now; if PostgreSQL does not answer, the call to make later."""
    from .migrations import migrate

    async def run() -> None:
        applied = await migrate(dsn)
        if applied:
            log.info("applied migrations %s", applied)

    try:
        await run()
    except StoreUnavailable as exc:
        log.warning("cannot migrate yet, PostgreSQL does not answer (%s): spooling", exc)
        return run
    return None
