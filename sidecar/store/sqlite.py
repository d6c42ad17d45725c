"""The SQLite adapter of the connector port: the embedded default, no server needed.

sqlite3 blocks, so every call runs on one dedicated worker thread: the event loop never
waits on disk, and the connection is only ever used from the thread that made it. Calls
are serialised by a lock, which a transaction holds from BEGIN IMMEDIATE to COMMIT, so no
other coroutine's statement can land inside it. Across processes sharing the file, BEGIN
IMMEDIATE takes the file's write lock before the transaction reads anything.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec

from .connector import Params, Row, migration_files, named_queries, sql_text
from .ports import StoreRefused, StoreUnavailable

T = TypeVar("T")

DIALECT = "sqlite"
_BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock on the file


def _bind(params: Params | None) -> dict[str, Any]:
    """SQLite has no arrays: a list parameter goes in as a JSON array (json_each reads it)."""
    if not params:
        return {}
    return {
        key: msgspec.json.encode(value).decode() if isinstance(value, list | tuple) else value
        for key, value in params.items()
    }


def store_error(exc: sqlite3.Error) -> StoreUnavailable | StoreRefused:
    reason = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreRefused(DIALECT, reason)
    return StoreUnavailable(DIALECT, reason)


class _Session:
    """Runs statements on the connector's thread; the caller holds the connector's lock."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._connector = connector

    async def fetch(
        self, sql: str, params: Params | None = None, decode: Callable[[Row], T] | None = None
    ) -> list[Any]:
        def run(db: sqlite3.Connection) -> list[Any]:
            rows = [dict(row) for row in db.execute(sql, _bind(params)).fetchall()]
            return rows if decode is None else [decode(row) for row in rows]

        return await self._connector._run(run)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        return await self._connector._run(lambda db: db.execute(sql, _bind(params)).rowcount)

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        bound = [_bind(row) for row in rows]
        await self._connector._run(lambda db: db.executemany(sql, bound))


class SqliteConnector:
    name = DIALECT

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self.queries = named_queries(DIALECT)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection  # set by open(); used on the worker thread only
        self._lock = asyncio.Lock()
        self._session = _Session(self)

    async def open(self) -> None:
        """Open the file (created if new) and bring its schema up to date."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except sqlite3.Error as exc:
            self._executor.shutdown()
            self._executor = None
            raise store_error(exc) from exc
        await self.migrate()

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._conn.close)
            executor.shutdown()

    async def fetch(
        self, sql: str, params: Params | None = None, decode: Callable[[Row], T] | None = None
    ) -> list[Any]:
        async with self._lock:
            return await self._session.fetch(sql, params, decode)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        async with self._lock:
            return await self._session.execute(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        async with self.transaction() as tx:  # one commit for them all
            await tx.execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Session]:
        async with self._lock:
            await self._run(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._session
            except BaseException:
                await self._run(lambda db: db.execute("ROLLBACK"))
                raise
            await self._run(lambda db: db.execute("COMMIT"))

    async def migrate(self) -> list[int]:
        async with self._lock:
            return await self._run(self._migrate)

    # --- on the worker thread ------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable(self.name, "store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: fn(self._conn)
            )
        except sqlite3.Error as exc:
            raise store_error(exc) from exc

    def _connect(self) -> None:
        # Autocommit (isolation_level=None): one statement is one transaction unless we
        # say BEGIN, as in PostgreSQL.
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL with WAL syncs at checkpoints, not at every commit: a crash of the
            # process loses nothing, but a power cut or OS crash can roll back the last
            # commits (the file stays consistent). FULL would fsync each commit.
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, db: sqlite3.Connection) -> list[int]:
        """Each pending file in its own transaction. A lock file beside the database keeps
        two processes starting on one file from applying a file twice."""
        with _file_lock(self.path):
            db.execute(self.queries["migrations_table"])
            done = {row[0] for row in db.execute(self.queries["migrations_applied"])}
            applied = []
            for version, filename in migration_files(DIALECT):
                if version in done:
                    continue
                try:
                    # executescript runs every statement of the file (triggers included);
                    # BEGIN/COMMIT around it make the file and its record one transaction.
                    db.executescript(
                        f"BEGIN IMMEDIATE;\n{sql_text(DIALECT, filename)}\n"
                        f"INSERT INTO schema_migrations (version) VALUES ({int(version)});\n"
                        "COMMIT;"
                    )
                except sqlite3.Error as exc:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    exc.add_note(f"while applying migration {filename}")
                    raise
                applied.append(version)
            return applied


class _file_lock:
    """An exclusive flock on `<database>.lock` (nothing to lock for ":memory:")."""

    def __init__(self, path: str) -> None:
        self.path = None if path == ":memory:" or path.startswith("file:") else path + ".lock"
        self.fd: int | None = None

    def __enter__(self) -> None:
        if self.path is not None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
