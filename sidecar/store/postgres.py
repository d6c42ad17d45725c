"""The PostgreSQL store: durable DLQ records and idempotency claims on a psycopg 3 pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb
from psycopg_pool import AsyncConnectionPool

from .base import (
    STATUSES,
    AuditEntry,
    AuditPage,
    Claim,
    DlqFilter,
    DlqPage,
    DlqRecord,
    StoreUnavailable,
    TrendBucket,
)
from .keyset import (
    audit_page,
    check_bucket,
    check_limit,
    check_statuses,
    check_time,
    compose,
    decode_cursor,
    dlq_page,
    filtered,
)
from .migrations import CONNECT_TIMEOUT, named_queries, parse_dsn, unavailable

_QUERIES = "queries.sql"
POOL_MAX = 4  # connections per sidecar; the pool grows to it on demand

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
        self, dsn: str, *, min_size: int = 1, max_size: int = POOL_MAX, timeout: float = 5.0
    ) -> None:
        # The DSN may name the connections (e.g. per pod, to tell them apart in
        # pg_stat_activity); otherwise they are "task-sidecar".
        self._application_name = parse_dsn(dsn).get("application_name", "task-sidecar")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout  # for open(), and for a connection from a busy pool
        self._queries = named_queries(_QUERIES)
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
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": self._application_name,
            },
        )
        try:
            await pool.open(wait=wait, timeout=self._timeout)
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

    async def list(self, where: DlqFilter, limit: int, cursor: str | None = None) -> DlqPage:
        check_limit(limit)
        position = None if cursor is None else decode_cursor(cursor, str)
        query, params = filtered(_QUERIES, "dlq_list", where, "dlq_before", position)
        params["limit"] = limit + 1
        rows = await self._fetchall(query, params)
        return dlq_page([DlqRecord(**row) for row in rows], limit)

    async def count(self, where: DlqFilter) -> int:
        query, params = filtered(_QUERIES, "dlq_count", where)
        (row,) = await self._fetchall(query, params)
        return row["count"]

    async def iterate(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[DlqRecord]:
        check_limit(batch)
        position: tuple[float, str] | None = None
        while True:
            query, params = filtered(_QUERIES, "dlq_iterate", where, "dlq_after", position)
            params["limit"] = batch
            # The connection goes back to the pool before the caller sees a record: a slow
            # consumer (a rate-limited bulk retry) holds none between batches.
            rows = await self._fetchall(query, params)
            for row in rows:
                yield DlqRecord(**row)
            if len(rows) < batch:
                return
            position = (rows[-1]["created_at"], rows[-1]["id"])

    async def transition(
        self,
        ids: Sequence[str],
        to: str,
        from_statuses: Sequence[str],
        now: float,
        *,
        error: str | None = None,
        count_retry: bool = False,
    ) -> list[DlqRecord]:
        check_statuses(to, *from_statuses)
        if not ids or not from_statuses:
            return []
        params = {
            "ids": [*ids],
            "to": to,
            "from_statuses": [*from_statuses],
            "now": float(now),
            "error": error,
            "retries": int(count_retry),
        }
        rows = await self._fetchall(self._queries["dlq_transition"], params)
        return [DlqRecord(**row) for row in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._fetchall(self._queries["dlq_counts"])
        return dict.fromkeys(STATUSES, 0) | {row["status"]: row["count"] for row in rows}

    async def oldest_pending(self) -> float | None:
        row = await self._fetchone("dlq_oldest_pending")
        return None if row is None else row["oldest"]

    async def audit(self, entry: AuditEntry, *, key: str | None = None) -> None:
        """`key`, when given, makes the insert idempotent: an entry with the same key is
        stored once (the spool replays entries whose first write may have committed)."""
        params = msgspec.structs.asdict(entry)
        params["entry_key"] = key
        params["at"] = float(entry.at)
        params["details"] = Jsonb(entry.details, dumps=msgspec.json.encode)
        await self._rowcount("audit_insert", params)

    async def audit_log(self, limit: int, cursor: str | None = None) -> AuditPage:
        check_limit(limit)
        params: dict[str, Any] = {"limit": limit + 1}
        fragments: tuple[str, ...] = ()
        if cursor is not None:
            params["cursor_at"], params["cursor_id"] = decode_cursor(cursor, int)
            fragments = ("audit_before",)
        rows = await self._fetchall(compose(_QUERIES, "audit_list", fragments), params)
        return audit_page([(row.pop("id"), AuditEntry(**row)) for row in rows], limit)

    async def record_failure(self, at: float, task_name: str, failure_type: str) -> None:
        params = {"at": float(at), "task_name": task_name, "failure_type": failure_type}
        await self._rowcount("failure_event_insert", params)

    async def trends(self, since: float, bucket: float = 3600) -> list[TrendBucket]:
        params = {"since": check_time("since", since), "bucket": check_bucket(bucket)}
        rows = await self._fetchall(self._queries["failure_trends"], params)
        return [TrendBucket(**row) for row in rows]

    async def purge(self, now: float, keep_failures: float) -> int:
        params = {"now": float(now), "events_before": float(now - keep_failures)}
        (row,) = await self._fetchall(self._queries["purge"], params)
        return row["deleted"]

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

    async def _fetchall(
        self, sql: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Takes the SQL itself: a named query, or one composed by `keyset.filtered()`."""
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()


def _record_params(record: DlqRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(record)
    for field in _JSON_FIELDS:
        # msgspec, as in the SQLite twin: the same JSON text from both stores.
        params[field] = Json(params[field], dumps=msgspec.json.encode)
    return params
