"""Load shedding: a bounded number of worker requests in flight, and a share per client.

Beyond `limit` hook, idempotency and dry-run requests being handled at once, a new one is
answered at once with 503 and `Retry-After: 1`, before its body is read, instead of
queueing behind the others: latency and memory stay bounded under a burst, and the worker
client treats the 503 like a timeout (it decides locally). One client (one token, or one
address without tokens) may hold at most half of the slots, so a few slow or hostile
clients cannot lock the others out; a body that does not arrive in time is cut off
(http/problems.py: read). Operator, metrics and health endpoints are not counted, so they
stay reachable during a flood. Every refusal is counted by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from aiohttp import web

from ..metrics import Metrics
from .problems import Problem

LIMITED = ("/v1/hooks/", "/v1/idempotency/", "/v1/classify", "/v1/decide")


class InFlight:
    """The limited requests being handled, in all and per client."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.share = max(1, limit // 2)
        self.current = 0
        self.peak = 0
        self.per_client: Counter[str] = Counter()


def client_of(request: web.Request) -> str:
    """Who is asking: a digest of the credentials (never kept in clear), else the peer."""
    credentials = request.headers.get("Authorization")
    if credentials:
        return hashlib.blake2b(
            credentials.encode(errors="surrogateescape"), digest_size=8
        ).hexdigest()
    return request.remote or "unknown"


def in_flight_limit(limit: int, metrics: Metrics) -> web.Middleware:
    state = InFlight(limit)

    def overloaded(detail: str) -> web.Response:
        return Problem(503, "Overloaded", detail, headers={"Retry-After": "1"}).response()

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if not request.path.startswith(LIMITED):
            return await handler(request)
        if state.current >= state.limit:
            metrics.record_rejection("overloaded")
            return overloaded(f"more than {limit} requests in flight; retry later")
        client = client_of(request)
        if state.per_client[client] >= state.share:
            metrics.record_rejection("client_share")
            return overloaded(f"this client has {state.share} requests in flight; retry later")
        state.current += 1
        state.per_client[client] += 1
        state.peak = max(state.peak, state.current)
        try:
            return await handler(request)
        finally:
            state.current -= 1
            state.per_client[client] -= 1
            if not state.per_client[client]:
                del state.per_client[client]

    middleware.in_flight = state  # type: ignore[attr-defined]
    return middleware
