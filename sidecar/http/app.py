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

from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..requeue import RequeueTarget
from ..service.compose import Stores, open_services
from ..service.policies import Policies
from ..service.pollers import every
from ..settings import Settings
from . import actions, hooks, redact, schedules
from .keys import METRICS, SERVICES, SETTINGS
from .limits import in_flight_limit
from .openapi import openapi
from .problems import json_response, problem_middleware

log = logging.getLogger("task_sidecar")
MAIN = web.AppKey("main", web.Application)  # the sidecar's app, seen from the metrics one
STOP_TIMEOUT = 5.0  # how long shutdown waits for a poll in progress
STALLED_AFTER = 10.0  # a spool replay that applied nothing for this long is called stalled


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
    redact.install()
    metrics = Metrics(registry, task_limit=settings.task_label_limit)
    app = web.Application(
        client_max_size=settings.body_limit,
        middlewares=[in_flight_limit(settings.max_in_flight, metrics), problem_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    policies = Policies(settings.policies, metrics)  # a bad file stops the start here

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_services(
            settings, metrics, policies=policies, stores=stores, target=target, clock=clock, rng=rng
        ) as services:
            app[SERVICES] = services
            yield

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(watch_policies)
    app.cleanup_ctx.append(run_pollers)
    if settings.metrics_address is not None:
        app.cleanup_ctx.append(serve_metrics)
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
    services = app[SERVICES]
    policies, interval = services.policies, app[SETTINGS].reload_interval
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        if await policies.reload() is None:
            await services.schedules.refresh_gauges(policies.current)

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


async def run_pollers(app: web.Application) -> AsyncIterator[None]:
    """Gauges that need a query, batched failure events, purges: in the background."""
    services, settings = app[SERVICES], app[SETTINGS]
    pollers = services.pollers
    stop = asyncio.Event()
    work = [
        (settings.poll_interval, pollers.refresh, "refresh"),
        (1.0, pollers.flush_events, "hook events"),
        (3600.0, pollers.purge, "purge"),
        (
            3600.0,
            lambda: services.schedules.refresh_gauges(services.policies.current),
            "schedules",
        ),
    ]
    if services.stores.spool is not None:
        work.append((0.5, services.stores.spool.replay, "spool"))
    if services.explorer is not None:
        explorer = services.explorer
        work.append((settings.poll_interval, explorer.sync, "dlq explorer"))
    tasks = [asyncio.create_task(every(seconds, fn, name, stop)) for seconds, fn, name in work]
    yield
    stop.set()
    _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
    for task in stuck:  # a query that hangs on a dead backend
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(StoreUnavailable):
        await pollers.flush_events()


async def serve_metrics(app: web.Application) -> AsyncIterator[None]:
    """/metrics, /healthz and /readyz on a listener of their own (`--metrics-port`), for
    Prometheus and the kubelet to reach while the API stays on loopback in the pod."""
    host, port = app[SETTINGS].metrics_address  # type: ignore[misc]
    probe = web.Application()
    probe[MAIN] = app
    probe.add_routes(
        [
            web.get("/metrics", metrics_endpoint),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    runner = web.AppRunner(probe, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics and health on http://%s:%d", host, port)
    yield
    await runner.cleanup()


def _main(request: web.Request) -> web.Application:
    """The sidecar's app, from its own listener or from the metrics one."""
    return request.app.get(MAIN, request.app)


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Which backends answer and which do not; 503 while any does not."""
    services = _main(request)[SERVICES]
    checks = await services.pollers.check_backends()
    ready = all(value == "ok" for value in checks.values())
    spool = services.stores.spool
    if spool is not None and spool.pending:  # informs; replaying does not make it unready
        checks["spool"] = f"spooling {spool.pending}"
        stalled = spool.stalled_for()
        if stalled > STALLED_AFTER:
            checks["spool"] += f"; replay stalled for {stalled:.0f}s"
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    # Rendering tens of thousands of series takes a while; in a thread, hooks keep being
    # answered between the interpreter's switches instead of waiting for the whole scrape.
    body = await asyncio.to_thread(generate_latest, _main(request)[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
