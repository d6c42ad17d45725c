"""The embedded store: the DLQ and idempotency claims in one SQLite file, no server needed.

The twin of `PostgresStore` (same tables, columns and semantics) for `task-sidecar serve`
without PostgreSQL. sqlite3 blocks, so every call runs on one dedicated worker thread:
the event loop never waits on disk, the connection is only ever used from the thread
that made it, and the calls are serialised, which makes each transition trivially
atomic within the process. Across processes sharing the file, the conditional UPDATEs
and the IMMEDIATE transactions of `claim`, `transition` and `purge` keep them atomic.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

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
from .migrations import named_queries

T = TypeVar("T")

_QUERIES = "sqlite.sql"
_JSON_FIELDS = ("args", "kwargs", "exception", "context")
_BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock on the file


class SqliteStore:
    """`DlqStore` and `IdempotencyStore` on a SQLite file (":memory:" for a private one)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self._path = os.fspath(path)
        self._queries = named_queries(_QUERIES)
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
        return None if row is None else _record(row)

    async def list(self, where: DlqFilter, limit: int, cursor: str | None = None) -> DlqPage:
        check_limit(limit)
        position = None if cursor is None else decode_cursor(cursor, str)
        query, params = filtered(_QUERIES, "dlq_list", where, "dlq_before", position)
        params["limit"] = limit + 1
        return dlq_page(await self._call(self._records, query, params), limit)

    async def count(self, where: DlqFilter) -> int:
        query, params = filtered(_QUERIES, "dlq_count", where)
        return (await self._call(self._fetchall, query, params))[0]["count"]

    async def iterate(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[DlqRecord]:
        check_limit(batch)
        position: tuple[float, str] | None = None
        while True:
            query, params = filtered(_QUERIES, "dlq_iterate", where, "dlq_after", position)
            params["limit"] = batch
            records = await self._call(self._records, query, params)
            for record in records:
                yield record
            if len(records) < batch:
                return
            position = (records[-1].created_at, records[-1].id)

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
            "ids": msgspec.json.encode(ids).decode(),
            "to": to,
            "from_statuses": msgspec.json.encode(from_statuses).decode(),
            "now": float(now),
            "error": error,
            "retries": int(count_retry),
        }
        return await self._call(self._transition, params)

    async def counts(self) -> dict[str, int]:
        rows = await self._call(self._fetchall, self._queries["dlq_counts"], {})
        return dict.fromkeys(STATUSES, 0) | {row["status"]: row["count"] for row in rows}

    async def oldest_pending(self) -> float | None:
        row = await self._call(self._query, "dlq_oldest_pending", {})
        return None if row is None else row["oldest"]

    async def audit(self, entry: AuditEntry) -> None:
        params = msgspec.structs.asdict(entry)
        params["at"] = float(entry.at)
        params["record_ids"] = msgspec.json.encode(entry.record_ids).decode()
        params["details"] = msgspec.json.encode(entry.details).decode()
        await self._call(self._rowcount, "audit_insert", params)

    async def audit_log(self, limit: int, cursor: str | None = None) -> AuditPage:
        check_limit(limit)
        params: dict[str, Any] = {"limit": limit + 1}
        fragments: tuple[str, ...] = ()
        if cursor is not None:
            params["cursor_at"], params["cursor_id"] = decode_cursor(cursor, int)
            fragments = ("audit_before",)
        query = compose(_QUERIES, "audit_list", fragments)
        rows = await self._call(self._fetchall, query, params)
        return audit_page([_audit_entry(row) for row in rows], limit)

    async def record_failure(self, at: float, task_name: str, failure_type: str) -> None:
        params = {"at": float(at), "task_name": task_name, "failure_type": failure_type}
        await self._call(self._rowcount, "failure_event_insert", params)

    async def trends(self, since: float, bucket: float = 3600) -> list[TrendBucket]:
        params = {"since": check_time("since", since), "bucket": check_bucket(bucket)}
        rows = await self._call(self._fetchall, self._queries["failure_trends"], params)
        return [TrendBucket(row["start"], row["failure_type"], row["count"]) for row in rows]

    async def purge(self, now: float, keep_failures: float) -> int:
        params = {"now": float(now), "events_before": float(now - keep_failures)}
        return await self._call(self._purge, params)

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

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        """Takes the SQL itself: a named query, or one composed by `keyset.filtered()`."""
        return self._conn.execute(sql, params).fetchall()

    def _records(self, sql: str, params: dict[str, Any]) -> list[DlqRecord]:
        # Decoded here rather than on the event loop: a page of large tracebacks is
        # real work.
        return [_record(row) for row in self._fetchall(sql, params)]

    def _transition(self, params: dict[str, Any]) -> list[DlqRecord]:
        db = self._conn
        # IMMEDIATE takes the write lock before the SELECT: no other process can move the
        # rows between reading them as they were and updating them.
        db.execute("BEGIN IMMEDIATE")
        with db:
            rows = db.execute(self._queries["dlq_transition_select"], params).fetchall()
            if rows:
                db.execute(self._queries["dlq_transition_update"], params)
        return [_record(row) for row in rows]

    def _purge(self, params: dict[str, Any]) -> int:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        with db:
            events = db.execute(self._queries["purge_failure_events"], params).rowcount
            keys = db.execute(self._queries["purge_idempotency_keys"], params).rowcount
        return events + keys

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


def _record(row: sqlite3.Row) -> DlqRecord:
    fields = dict(row)
    for field in _JSON_FIELDS:
        fields[field] = msgspec.json.decode(fields[field])
    return DlqRecord(**fields)


def _audit_entry(row: sqlite3.Row) -> tuple[int, AuditEntry]:
    fields = dict(row)
    fields["record_ids"] = msgspec.json.decode(fields["record_ids"])
    fields["details"] = msgspec.json.decode(fields["details"])
    return fields.pop("id"), AuditEntry(**fields)


def _record_params(record: DlqRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(record)
    for field in _JSON_FIELDS:
        params[field] = msgspec.json.encode(params[field]).decode()
    return params
