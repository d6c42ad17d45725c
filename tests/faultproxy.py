"""A real aiohttp server in front of the real sidecar, for the client tests: it forwards
each request, or breaks it the way the test says, and records what it saw.

    with FaultProxy(sidecar_url) as proxy:
        proxy.fault = 503                    # every path; or proxy.faults["/v1/hooks/batch"]
        client = SidecarClient(proxy.url, token)

Faults: "pass" (forward), "hold" (keep the request until `release()`, then forward it: a
sidecar that hangs and stores late), an int status (answered with a problem document),
"not_json" (200 with an HTML body), "wrong_shape" (200 with JSON no hook answers), "drop"
(close the connection without answering). It runs its own event loop in a thread, so a
sync client and an async client in another loop talk to it alike.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Seen:
    path: str
    body: Any
    peer: tuple[str, int]  # the client's address: one per connection
    fault: Any


@dataclass(frozen=True)
class Forwarded:
    path: str
    body: Any
    status: int  # what the sidecar answered


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault: Any = "pass"
        self.faults: dict[str, Any] = {}  # per path, over `fault`
        self.seen: list[Seen] = []  # every request, as it arrives
        self.forwarded: list[Forwarded] = []  # those the sidecar answered
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._released: asyncio.Event | None = None
        self._transports: set[asyncio.Transport] = set()
        self.url = ""

    # --- what tests use --------------------------------------------------------------------

    def bodies(self, path: str) -> list[Any]:
        return [s.body for s in self.seen if s.path == path]

    def release(self) -> None:
        """Let held requests go on to the sidecar."""
        self._call(self._release())

    def drop_connections(self) -> None:
        """Close every open client connection, as a server closing idle keep-alives."""
        self._call(self._drop())

    # --- the server ------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self.url = self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> str:
        self._released = asyncio.Event()
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._release()
        await self._runner.cleanup()
        await self._session.close()

    async def _release(self) -> None:
        assert self._released is not None
        self._released.set()

    async def _drop(self) -> None:
        for transport in list(self._transports):
            transport.close()
        self._transports.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data
        fault = self.faults.get(request.path, self.fault)
        transport = request.transport
        assert transport is not None
        self._transports.add(transport)  # type: ignore[arg-type]
        self.seen.append(Seen(request.path, body, transport.get_extra_info("peername")[:2], fault))
        if fault == "drop":
            transport.close()
            raise asyncio.CancelledError  # aiohttp ends the handler quietly
        if isinstance(fault, int):
            problem = {"type": "about:blank", "title": "injected", "status": fault}
            return web.json_response(problem, status=fault, content_type="application/problem+json")
        if fault == "not_json":
            return web.Response(text="<html>Bad Gateway</html>", content_type="text/html")
        if fault == "wrong_shape":
            return web.json_response({"unexpected": True})
        if fault == "hold":
            assert self._released is not None
            await self._released.wait()
        headers = {
            k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=data, headers=headers
        ) as upstream:
            payload = await upstream.read()
            self.forwarded.append(Forwarded(request.path, body, upstream.status))
            return web.Response(
                body=payload, status=upstream.status, content_type=upstream.content_type
            )
