"""The two transports: they carry an exchange's bytes and bring back a `Reply`; they never
raise and never decide anything (protocol.py does).

Both keep connections alive (the sync one per thread, the async one in one pooled
session), and both re-send once when the server drops the connection before answering
(a keep-alive connection it closed while idle): a report keeps its report id, so a
re-send is safe. A timeout is not re-sent.

The sync transport is fork-safe: a forked child (a Celery prefork pool child, forked after
the parent reported a lost run) starts with no connection, rather than sharing the
parent's socket and reading the answers meant for the parent or its other children.
"""

from __future__ import annotations

import http.client
import os
import threading
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

from .protocol import Exchange, Reply, reason

DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
CLOSED = "connection closed without an answer"


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def after_fork_in_child(obj: Any, reset: Callable[[Any], None]) -> None:
    """Call `reset(obj)` in a forked child while `obj` lives (the registration holds only
    a weak reference)."""
    ref = weakref.ref(obj)

    def child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=child)


class HTTPTransport:
    """http.client with one keep-alive connection per thread."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sidecar url: expected http(s)://host:port, got {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {**_headers(token), "Connection": "keep-alive"}
        self._forked()
        after_fork_in_child(self, HTTPTransport._forked)

    def _forked(self) -> None:
        """No connections (in a forked child: the parent's sockets stay the parent's)."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for close_all

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()

    def post(self, exchange: Exchange[Any]) -> Reply:
        data = exchange.encode()
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", self.prefix + exchange.path, data, self.headers)
                response = conn.getresponse()
                payload = response.read()
            except DROPPED:
                self.close()
                if attempt == 0:
                    continue
                return Reply(error=CLOSED)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.close()
                return Reply(error=reason(exc))
            if response.will_close:
                self.close()
            return Reply(response.status, payload)
        raise AssertionError("unreachable")  # pragma: no cover


class AiohttpTransport:
    """aiohttp with one pooled keep-alive session, opened on first use inside the loop."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        HTTPTransport(url, token, timeout)  # the same validation of the URL
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = _headers(token)
        self._session: Any = None

    async def _get_session(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self.headers,
            )
        return self._session

    async def post(self, exchange: Exchange[Any]) -> Reply:
        import aiohttp

        data = exchange.encode()
        for attempt in (0, 1):
            try:
                session = await self._get_session()
                async with session.post(self.url + exchange.path, data=data) as response:
                    return Reply(response.status, await response.read())
            except Exception as exc:  # aiohttp.ClientError, TimeoutError, OSError, ValueError
                # After connecting (a connector error is a refusal): the server closed it.
                dropped = isinstance(exc, (aiohttp.ServerDisconnectedError, *DROPPED)) or (
                    isinstance(exc, aiohttp.ClientOSError)
                    and not isinstance(exc, aiohttp.ClientConnectorError)
                )
                if dropped and attempt == 0:
                    continue
                return Reply(error=CLOSED if dropped else reason(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
