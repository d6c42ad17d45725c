"""The PostgreSQL adapter of the connector port: a psycopg 3 pool, and the migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from .connector import Params, Row, migration_files, named_queries, sql_text
from .ports import StoreRefused, StoreUnavailable

T = TypeVar("T")

DIALECT = "postgres"
CONNECT_TIMEOUT = 5  # seconds (libpq rounds anything below 2 up to 2)
POOL_MAX = 4  # connections per sidecar; the pool grows to it on demand
# The server ends a statement that runs longer (listings, export batches and counts at
# 10M rows stay well below it). A server that hangs answers nothing at all: the callers
# with a budget stop waiting on their own (sidecar/timeouts.py), and TCP keepalives let
# the pool find dead connections.
STATEMENT_TIMEOUT_MS = 30_000

# SQLSTATE classes of errors about the data itself (22 data exception: a NUL byte, a value
# out of range; 23 integrity; 54 program limit exceeded: an index row too large). Retrying
# the same write cannot help, so they are not outages.
_REFUSED_CLASSES = ("22", "23", "54")


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parameters. A malformed DSN is refused here, without quoting it: libpq's
    parse error would, password and all."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ValueError("malformed PostgreSQL DSN") from None


def store_error(exc: psycopg.Error) -> StoreUnavailable | StoreRefused:
    """Our error for a driver error: its class and first line. libpq never prints the
    password, and the first line leaves out server DETAIL lines that can quote row values."""
    first_line = str(exc).strip().partition("\n")[0]
    reason = f"{type(exc).__name__}: {first_line}"[:300]
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.DataError) or sqlstate[:2] in _REFUSED_CLASSES:
        return StoreRefused(DIALECT, reason)
    return StoreUnavailable(DIALECT, reason)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # JSON comes back as its text, which the store decodes with msgspec as the SQLite
    # adapter does: the same values from both, and args kept verbatim.
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


class _Session:
    def __init__(self, conn: psycopg.AsyncConnection[Row]) -> None:
        self._conn = conn

    async def fetch(
        self, sql: str, params: Params | None = None, decode: Callable[[Row], T] | None = None
    ) -> list[Any]:
        try:
            cur = await self._conn.execute(sql, params)
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise store_error(exc) from None
        return rows if decode is None else [decode(row) for row in rows]

    async def execute(self, sql: str, params: Params | None = None) -> int:
        try:
            cur = await self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise store_error(exc) from None
        return cur.rowcount

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            async with self._conn.cursor() as cur:
                await cur.executemany(sql, rows)
        except psycopg.Error as exc:
            raise store_error(exc) from None


class PostgresConnector:
    """Each call outside a transaction is one statement in autocommit mode: no BEGIN/COMMIT
    round trips. Timestamps are kept to the microsecond."""

    name = DIALECT

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = POOL_MAX,
        timeout: float = 5.0,
    ) -> None:
        # The DSN may name the connections (e.g. per pod, to tell them apart in
        # pg_stat_activity); otherwise they are "task-sidecar".
        self._application_name = parse_dsn(dsn).get("application_name", "task-sidecar")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout  # for open(), and for a connection from a busy pool
        self.queries = named_queries(DIALECT)
        self._pool: AsyncConnectionPool | None = None

    async def open(self, *, wait: bool = True) -> None:
        """Connect `min_size` connections, or raise `StoreUnavailable` after `timeout`.

        With `wait=False` the pool connects in the background and this returns at once:
        the sidecar starts while PostgreSQL is down (operations raise `StoreUnavailable`
        until it answers)."""
        # A new pool each time: a closed psycopg pool cannot be opened again.
        pool = AsyncConnectionPool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            open=False,
            name="task-sidecar",
            configure=_configure,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": self._application_name,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        )
        try:
            await pool.open(wait=wait, timeout=self._timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise store_error(exc) from None
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        if self._pool is None:
            raise StoreUnavailable(self.name, "store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:  # the pool's PoolTimeout and PoolClosed included
            raise store_error(exc) from None

    async def fetch(
        self, sql: str, params: Params | None = None, decode: Callable[[Row], T] | None = None
    ) -> list[Any]:
        async with self._connection() as conn:
            return await _Session(conn).fetch(sql, params, decode)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        async with self._connection() as conn:
            return await _Session(conn).execute(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        async with self._connection() as conn, conn.transaction():
            await _Session(conn).execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Session]:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    yield _Session(conn)
            except psycopg.Error as exc:  # the COMMIT itself
                raise store_error(exc) from None

    async def migrate(self) -> list[int]:
        return await migrate(self._dsn)


async def migrate(dsn: str) -> list[int]:
    """Apply the pending numbered files in order, each in its own transaction, on a
    connection of its own (the pool may not be open yet).

    Returns the versions applied now (empty when the schema was current). Raises
    `StoreUnavailable` when the server cannot be reached or drops the connection. A file
    that fails rolls back alone and its psycopg error propagates, noted with the file name.
    """
    parse_dsn(dsn)
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="task-sidecar migrate",
        )
        async with conn:
            return await _apply_pending(conn)
    except psycopg.OperationalError as exc:
        raise store_error(exc) from None


async def _apply_pending(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    queries = named_queries(DIALECT)
    await conn.execute(queries["migrations_lock"])
    await conn.execute(queries["migrations_table"])
    cur = await conn.execute(queries["migrations_applied"])
    done = {version for (version,) in await cur.fetchall()}
    applied = []
    for version, filename in migration_files(DIALECT):
        if version in done:
            continue
        try:
            async with conn.transaction():
                await conn.execute(sql_text(DIALECT, filename))
                await conn.execute(queries["migrations_record"], {"version": version})
        except psycopg.Error as exc:
            exc.add_note(f"while applying migration {filename}")
            raise
        applied.append(version)
    return applied
