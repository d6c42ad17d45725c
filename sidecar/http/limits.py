"""Load shedding: a bounded number of worker requests in flight.

Beyond `limit` hook, idempotency and dry-run requests being handled at once, a new one is
answered at once with 503 and `Retry-After: 1`, before its body is read, instead of
queueing behind the others: latency and memory stay bounded under a burst, and the worker
client treats the 503 like a timeout (it decides locally). Operator, metrics and health
endpoints are not counted, so they stay reachable during a flood.
"""

from __future__ import annotations

from aiohttp import web

from .problems import Problem

LIMITED = ("/v1/hooks/", "/v1/idempotency/", "/v1/classify", "/v1/decide")


class InFlight:
    """The count of limited requests being handled, and how many were turned away."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0
        self.peak = 0
        self.rejected = 0


def in_flight_limit(limit: int) -> web.Middleware:
    state = InFlight(limit)
    overloaded = Problem(
        503,
        "Overloaded",
        f"more than {limit} requests in flight; retry later",
        headers={"Retry-After": "1"},
    )

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if not request.path.startswith(LIMITED):
            return await handler(request)
        if state.current >= state.limit:
            state.rejected += 1
            return overloaded.response()
        state.current += 1
        state.peak = max(state.peak, state.current)
        try:
            return await handler(request)
        finally:
            state.current -= 1

    middleware.in_flight = state  # type: ignore[attr-defined]
    return middleware
