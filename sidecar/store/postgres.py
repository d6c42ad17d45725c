"""The PostgreSQL store: durable DLQ records and idempotency claims on a psycopg 3 pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool

from .base import Claim, DlqRecord, StoreUnavailable
from .migrations import CONNECT_TIMEOUT, named_queries, parse_dsn, unavailable

_JSON_FIELDS = ("args", "kwargs", "exception", "context")


class PostgresStore:
    """`DlqStore` and `IdempotencyStore` on the schema that `migrate()` creates.

    Each operation is one statement in autocommit mode: no BEGIN/COMMIT round trips, and
    the conditional UPDATEs make every state transition happen once, whatever the
    concurrency. Timestamps are kept to the microsecond. Every driver or pool error comes
    out as `StoreUnavailable`.
    """

    name = "postgres"

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 5.0
    ) -> None:
        # The DSN may name the connections (e.g. per pod, to tell them apart in
        # pg_stat_activity); otherwise they are "task-sidecar".
        self._application_name = parse_dsn(dsn).get("application_name", "task-sidecar")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout  # for open(), and for a connection from a busy pool
        self._queries = named_queries("queries.sql")
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        """Connect `min_size` connections, or raise `StoreUnavailable` after `timeout`."""
        # A new pool each time: a closed psycopg pool cannot be opened again.
        pool = AsyncConnectionPool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            open=False,
            name="task-sidecar",
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": self._application_name,
            },
        )
        try:
            await pool.open(wait=True, timeout=self._timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise unavailable(exc) from None
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        await self._fetchone("ping")

    # --- DlqStore ------------------------------------------------------------------------

    async def put(self, record: DlqRecord) -> None:
        await self._rowcount("dlq_put", _record_params(record))

    async def failed_again(self, record: DlqRecord) -> bool:
        return await self._rowcount("dlq_failed_again", _record_params(record)) > 0

    async def resolve(self, dlq_id: str, now: float) -> bool:
        return await self._rowcount("dlq_resolve", {"id": dlq_id, "now": float(now)}) > 0

    async def get(self, dlq_id: str) -> DlqRecord | None:
        row = await self._fetchone("dlq_get", {"id": dlq_id})
        return None if row is None else DlqRecord(**row)

    # --- IdempotencyStore ----------------------------------------------------------------

    async def claim(self, key: str, ttl: float, now: float) -> Claim:
        params = {"key": key, "now": float(now), "expires_at": float(now + ttl)}
        # No row means the holder changed under us (see the query); each pass sees a newer
        # state, so this ends as soon as the key stops changing hands.
        while True:
            row = await self._fetchone("idempotency_claim", params)
            if row is not None:
                if row["claimed"]:
                    return Claim(claimed=True)
                return Claim(claimed=False, first_seen_at=row["first_seen_at"], state=row["state"])

    async def complete(self, key: str, ttl: float, now: float) -> bool:
        params = {"key": key, "expires_at": float(now + ttl)}
        return await self._rowcount("idempotency_complete", params) > 0

    async def release(self, key: str) -> bool:
        return await self._rowcount("idempotency_release", {"key": key}) > 0

    # --- plumbing ------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        if self._pool is None:
            raise StoreUnavailable(self.name, "store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:  # the pool's PoolTimeout and PoolClosed included
            raise unavailable(exc) from None

    async def _rowcount(self, query: str, params: dict[str, Any]) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(self._queries[query], params)
            return cur.rowcount

    async def _fetchone(
        self, query: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        async with self._connection() as conn:
            cur = await conn.execute(self._queries[query], params)
            return await cur.fetchone()


def _record_params(record: DlqRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(record)
    for field in _JSON_FIELDS:
        # msgspec, as in the SQLite twin: the same JSON text from both stores.
        params[field] = Json(params[field], dumps=msgspec.json.encode)
    return params
