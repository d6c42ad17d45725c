"""The embedded store: the DLQ and idempotency claims in one SQLite file, no server needed.

The twin of `PostgresStore` (same tables, columns and semantics) for `task-sidecar serve`
without PostgreSQL. sqlite3 blocks, so every call runs on one dedicated worker thread:
the event loop never waits on disk, the connection is only ever used from the thread
that made it, and the calls are serialised, which makes each transition trivially
atomic within the process. Across processes sharing the file, the conditional UPDATEs
and the IMMEDIATE transaction of `claim` keep them atomic.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from .base import Claim, DlqRecord, StoreUnavailable
from .migrations import named_queries

T = TypeVar("T")

_JSON_FIELDS = ("args", "kwargs", "exception", "context")
_BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock on the file


class SqliteStore:
    """`DlqStore` and `IdempotencyStore` on a SQLite file (":memory:" for a private one)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self._path = os.fspath(path)
        self._queries = named_queries("sqlite.sql")
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection  # set by open(); used on the worker thread only

    async def open(self) -> None:
        """Open the file and create the schema if it is new."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._call(self._connect)
        except StoreUnavailable:
            self._executor.shutdown()
            self._executor = None
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
            executor.shutdown()

    async def ping(self) -> None:
        await self._call(self._query, "ping", {})

    # --- DlqStore ------------------------------------------------------------------------

    async def put(self, record: DlqRecord) -> None:
        await self._call(self._rowcount, "dlq_put", _record_params(record))

    async def failed_again(self, record: DlqRecord) -> bool:
        return await self._call(self._rowcount, "dlq_failed_again", _record_params(record)) > 0

    async def resolve(self, dlq_id: str, now: float) -> bool:
        params = {"id": dlq_id, "now": float(now)}
        return await self._call(self._rowcount, "dlq_resolve", params) > 0

    async def get(self, dlq_id: str) -> DlqRecord | None:
        row = await self._call(self._query, "dlq_get", {"id": dlq_id})
        if row is None:
            return None
        fields = dict(row)
        for field in _JSON_FIELDS:
            fields[field] = msgspec.json.decode(fields[field])
        return DlqRecord(**fields)

    # --- IdempotencyStore ----------------------------------------------------------------

    async def claim(self, key: str, ttl: float, now: float) -> Claim:
        params = {"key": key, "now": float(now), "expires_at": float(now + ttl)}
        return await self._call(self._claim, params)

    async def complete(self, key: str, ttl: float, now: float) -> bool:
        params = {"key": key, "expires_at": float(now + ttl)}
        return await self._call(self._rowcount, "idempotency_complete", params) > 0

    async def release(self, key: str) -> bool:
        return await self._call(self._rowcount, "idempotency_release", {"key": key}) > 0

    # --- on the event loop ---------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreUnavailable(self.name, "store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    # --- on the worker thread ------------------------------------------------------------

    def _connect(self) -> None:
        # Autocommit (isolation_level=None): one statement is one transaction unless we
        # say BEGIN, as in PostgreSQL.
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL with WAL syncs at checkpoints, not at every commit: a crash of the
            # process loses nothing, but a power cut or OS crash can roll back the last
            # commits (the file stays consistent). FULL would fsync each commit.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(self._queries["schema"])
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        self._conn.close()

    def _rowcount(self, query: str, params: dict[str, Any]) -> int:
        return self._conn.execute(self._queries[query], params).rowcount

    def _query(self, query: str, params: dict[str, Any]) -> sqlite3.Row | None:
        return self._conn.execute(self._queries[query], params).fetchone()

    def _claim(self, params: dict[str, Any]) -> Claim:
        db = self._conn
        # IMMEDIATE takes the write lock first, so another process cannot change the key
        # between our two statements.
        db.execute("BEGIN IMMEDIATE")
        with db:  # COMMIT, or ROLLBACK on an exception
            if db.execute(self._queries["idempotency_claim"], params).rowcount:
                return Claim(claimed=True)
            holder = db.execute(self._queries["idempotency_holder"], params).fetchone()
        return Claim(claimed=False, first_seen_at=holder["first_seen_at"], state=holder["state"])


def _record_params(record: DlqRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(record)
    for field in _JSON_FIELDS:
        params[field] = msgspec.json.encode(params[field]).decode()
    return params
