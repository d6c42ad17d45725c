"""The application factory: routes, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..metrics import Metrics
from ..operations import Operations
from ..pollers import Pollers, every
from ..requeue import NoTarget, RequeueTarget
from ..schedule_health import Schedules
from ..service import Policies, Sidecar, Stores
from ..settings import Settings
from ..store import open_stores
from ..store.base import StoreUnavailable
from . import actions, hooks, schedules
from .keys import (
    METRICS,
    OPERATIONS,
    POLICIES,
    POLLERS,
    SCHEDULES,
    SETTINGS,
    SIDECAR,
    STORES,
)
from .limits import in_flight_limit
from .openapi import openapi
from .problems import json_response, problem_middleware

log = logging.getLogger("task_sidecar")
PING_TIMEOUT = 1.0
STOP_TIMEOUT = 5.0  # how long shutdown waits for a poll in progress


def create_app(
    settings: Settings,
    *,
    stores: Stores | None = None,
    target: RequeueTarget | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> web.Application:
    """The sidecar as an aiohttp app. Stores and a requeue target given here are used (and
    not closed); otherwise they are opened from `settings` at start-up and closed at
    shutdown."""
    app = web.Application(
        client_max_size=settings.body_limit,
        middlewares=[in_flight_limit(settings.max_in_flight), problem_middleware],
    )
    metrics = Metrics(registry, task_limit=settings.task_label_limit)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[POLICIES] = Policies(settings.policies, metrics)
    app[SCHEDULES] = Schedules(metrics)

    async def open_and_close_stores(app: web.Application) -> AsyncIterator[None]:
        if stores is not None:
            app[STORES] = stores
        else:
            app[STORES] = await open_stores(settings)
        app[SIDECAR] = Sidecar(app[POLICIES], app[STORES], metrics, clock=clock, rng=rng)
        requeue = target if target is not None else open_target(settings)
        app[OPERATIONS] = Operations(app[POLICIES], app[STORES], requeue, metrics, clock=clock)
        yield
        await app[OPERATIONS].wait_jobs()
        if target is None:
            await requeue.close()
        if stores is None:
            for store in app[STORES].distinct():
                await store.close()

    app.cleanup_ctx.append(open_and_close_stores)
    app.cleanup_ctx.append(watch_policies)
    app.cleanup_ctx.append(run_pollers)
    app.add_routes(hooks.routes())
    app.add_routes(actions.routes())
    app.add_routes(schedules.routes())
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_endpoint),
            web.get("/openapi.json", openapi),
        ]
    )
    return app


async def watch_policies(app: web.Application) -> AsyncIterator[None]:
    """Reload the policy on SIGHUP and when the file changes."""
    policies, interval = app[POLICIES], app[SETTINGS].reload_interval
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        if policies.reload() is None:
            await app[SCHEDULES].refresh_gauges(policies.current)

    def on_sighup() -> None:
        task = asyncio.create_task(reload())
        background.add(task)
        task.add_done_callback(background.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Only the main thread of a process can own signals (tests run apps elsewhere too).
        loop.add_signal_handler(signal.SIGHUP, on_sighup)

    async def poll() -> None:
        while True:
            await asyncio.sleep(interval)
            if policies.changed():
                await reload()

    task = asyncio.create_task(poll()) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGHUP)


def open_target(settings: Settings) -> RequeueTarget:
    if settings.requeue == "celery":
        from ..requeue.celery import CeleryTarget

        return CeleryTarget(settings.celery_broker_url or "")
    if settings.requeue == "webhook":
        from ..requeue.webhook import WebhookTarget

        return WebhookTarget(settings.webhook_url or "", settings.webhook_secret or "")
    return NoTarget()


async def run_pollers(app: web.Application) -> AsyncIterator[None]:
    """Gauges that need a query, batched failure events, purges: in the background."""
    settings = app[SETTINGS]
    pollers = Pollers(settings, app[OPERATIONS], app[METRICS], app[SIDECAR].failure_events)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(every(settings.poll_interval, pollers.refresh, "refresh", stop)),
        asyncio.create_task(every(1.0, pollers.flush_failure_events, "failure events", stop)),
        asyncio.create_task(every(3600.0, pollers.purge, "purge", stop)),
        asyncio.create_task(
            every(
                3600.0,
                lambda: app[SCHEDULES].refresh_gauges(app[POLICIES].current),
                "schedules",
                stop,
            )
        ),
    ]
    if hasattr(app[STORES].dlq, "replay"):  # a spool in front of PostgreSQL
        app[STORES].dlq.bind(app[METRICS])
        tasks.append(asyncio.create_task(every(0.5, pollers.replay_spool, "spool", stop)))
    app[POLLERS] = pollers
    yield
    stop.set()
    _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
    for task in stuck:  # a query that hangs on a dead backend
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(StoreUnavailable):
        await pollers.flush_failure_events()
    await pollers.close()


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Which backends answer and which do not; 503 while any does not."""
    checks: dict[str, str] = {}
    metrics = request.app[METRICS]
    for store in request.app[STORES].distinct():
        try:
            await asyncio.wait_for(store.ping(), PING_TIMEOUT)
            checks[store.name] = "ok"
        except (StoreUnavailable, TimeoutError) as exc:
            checks[store.name] = f"unavailable: {exc or 'timed out'}"
        metrics.backend_up.labels(store.name).set(checks[store.name] == "ok")
    ready = all(value == "ok" for value in checks.values())
    pending = getattr(request.app[STORES].dlq, "pending", 0)
    if pending:  # informs; replaying the spool does not make the sidecar unready
        checks["spool"] = f"spooling {pending}"
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    # Rendering tens of thousands of series takes a while; in a thread, hooks keep being
    # answered between the interpreter's switches instead of waiting for the whole scrape.
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
