"""The composition root: the only place where stores, the requeue target, the services
and the pollers are made from the settings, and closed again.

    async with open_services(settings, metrics) as services:
        decision = await services.hooks.failure(event)

With nothing configured the stores are embedded: SQLite (DLQ, audit, claims) and
in-process breaker state. TASK_SIDECAR_POSTGRES_DSN puts the DLQ and durable claims in
PostgreSQL, behind a local spool for its outages; TASK_SIDECAR_REDIS_URL shares breakers
and statistics with the fleet and takes claims on the fast path, each falling back while
Redis does not answer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..requeue import NoTarget, RequeueTarget
from ..settings import Settings
from ..store.memory import MemoryState
from ..store.ports import DlqStore, IdempotencyStore, StateStore
from ..store.spool import SpoolingDlq
from .breakers import Breakers
from .dlq import DeadLetters
from .explorer import ExplorerSync
from .export import Exports
from .hooks import Hooks
from .idempotency import Idempotency
from .policies import Policies
from .pollers import Pollers
from .schedules import Schedules

if TYPE_CHECKING:
    from ..store.sqlstore import SqlStore

log = logging.getLogger("task_sidecar")


@dataclass(frozen=True)
class Stores:
    state: StateStore
    dlq: DlqStore
    idempotency: IdempotencyStore
    spool: SpoolingDlq | None = None  # in front of the DLQ store, when it has one
    explorer: SqlStore | None = None  # PostgreSQL's store, where the DLQ explorer's views are

    def distinct(self) -> list[StateStore | DlqStore | IdempotencyStore]:
        """Each backend once (one SQLite store can serve the DLQ and claims)."""
        out: list = []
        for store in (self.state, self.dlq, self.idempotency):
            if all(store is not seen for seen in out):
                out.append(store)
        return out

    async def close(self) -> None:
        for store in self.distinct():
            await store.close()


@dataclass(frozen=True)
class Services:
    settings: Settings
    metrics: Metrics
    policies: Policies
    stores: Stores
    target: RequeueTarget
    breakers: Breakers
    hooks: Hooks
    idempotency: Idempotency
    dlq: DeadLetters
    exports: Exports
    schedules: Schedules
    pollers: Pollers
    explorer: ExplorerSync | None = None  # with PostgreSQL only


@asynccontextmanager
async def open_services(
    settings: Settings,
    metrics: Metrics,
    *,
    policies: Policies | None = None,
    stores: Stores | None = None,
    target: RequeueTarget | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> AsyncIterator[Services]:
    """Stores and a requeue target given here are used and not closed; the others are
    opened from `settings` and closed on exit."""
    policies = policies or Policies(settings.policies, metrics)
    own_stores = stores is None
    stores = stores or await open_stores(settings, metrics)
    own_target = target is None
    target = target or open_target(settings)
    try:
        breakers = Breakers(policies, stores.state, stores.dlq, metrics, clock)
        hooks = Hooks(
            policies,
            stores.state,
            stores.dlq,
            breakers,
            metrics,
            clock=clock,
            rng=rng or random.Random(),
        )
        dlq = DeadLetters(policies, stores.dlq, target, metrics, clock, settings.requeue_lease)
        schedules = Schedules(metrics)
        services = Services(
            settings=settings,
            metrics=metrics,
            policies=policies,
            stores=stores,
            target=target,
            breakers=breakers,
            hooks=hooks,
            idempotency=Idempotency(policies, stores.idempotency, metrics, clock),
            dlq=dlq,
            exports=Exports(stores.dlq, metrics, clock),
            schedules=schedules,
            pollers=Pollers(
                stores.distinct(),
                stores.dlq,
                breakers,
                metrics,
                hooks.events,
                event_retention=settings.event_retention,
                queues=settings.queues,
                broker_url=settings.celery_broker_url,
                spool=stores.spool,
                release_lapsed=dlq.release_lapsed,
            ),
            explorer=(
                ExplorerSync(policies, schedules, stores.explorer) if stores.explorer else None
            ),
        )
        yield services
        await services.dlq.stop_jobs(timeout=max(1.0, settings.shutdown_grace / 2))
        await services.pollers.close()
    finally:
        if own_target:
            await target.close()
        if own_stores:
            await stores.close()


async def open_stores(settings: Settings, metrics: Metrics) -> Stores:
    from ..store.sqlstore import SqlStore

    spool: SpoolingDlq | None = None
    if settings.postgres_dsn:
        from ..store.postgres import PostgresConnector, migrate

        # Starts while PostgreSQL is down: DLQ writes are spooled until it answers, and
        # the migrations run then, before the spool is replayed.
        prepare = (
            await _migrate_now(lambda: migrate(settings.postgres_dsn)) if settings.migrate else None
        )
        connector = PostgresConnector(settings.postgres_dsn)
        durable = SqlStore(connector)
        await connector.open(wait=False)
        spool = SpoolingDlq(
            durable,
            settings.data_dir / "spool",
            prepare=prepare,
            on_pending=metrics.set_spool_pending,
            on_write_failure=metrics.record_spool_write_failure,
            on_quarantine=metrics.record_spool_quarantined,
        )
        dlq: DlqStore = spool
    else:
        from ..store.sqlite import SqliteConnector

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        durable = SqlStore(SqliteConnector(settings.data_dir / "sidecar.sqlite3"))
        await durable.open()
        dlq = durable
    explorer = durable if settings.postgres_dsn else None
    if settings.redis_url:
        from ..store.fallback import FallbackIdempotency, FallbackState, Outage
        from ..store.redis import RedisStore

        fast = RedisStore(settings.redis_url)
        outage = Outage(fast.name)  # one view of Redis for breakers and claims alike
        return Stores(
            state=FallbackState(fast, outage),
            dlq=dlq,
            idempotency=FallbackIdempotency(
                fast, durable, outage, on_fallback=metrics.record_claim_fallback
            ),
            spool=spool,
            explorer=explorer,
        )
    return Stores(state=MemoryState(), dlq=dlq, idempotency=durable, spool=spool, explorer=explorer)


def open_target(settings: Settings) -> RequeueTarget:
    if settings.requeue == "celery":
        from ..requeue.celery import CeleryTarget

        return CeleryTarget(settings.celery_broker_url or "")
    if settings.requeue == "webhook":
        from ..requeue.webhook import WebhookTarget

        return WebhookTarget(settings.webhook_url or "", settings.webhook_secret or "")
    return NoTarget()


async def _migrate_now(
    run: Callable[[], Awaitable[list[int]]],
) -> Callable[[], Awaitable[None]] | None:
    """Apply the migrations now; if PostgreSQL does not answer, the call to make later."""

    async def apply() -> None:
        applied = await run()
        if applied:
            log.info("applied migrations %s", applied)

    try:
        await apply()
    except StoreUnavailable as exc:
        log.warning("cannot migrate yet, PostgreSQL does not answer (%s): spooling", exc)
        return apply
    return None
