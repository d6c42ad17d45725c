"""The SQL store: the DLQ, its audit log, failure events and idempotency claims, written
once over the connector port (connector.py) for SQLite and PostgreSQL alike.

Every state change is a conditional statement (or a transaction that locks what it
reads), so each transition happens once whatever the concurrency. Values cross the port
as plain parameters: JSON documents as their text (msgspec both ways, so the two
databases hand back the same values), lists as lists (the SQLite adapter makes them JSON
arrays), times as unix seconds (the PostgreSQL queries convert to timestamptz).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import msgspec

from ..records import (
    STATUSES,
    AuditEntry,
    AuditPage,
    Claim,
    DlqFilter,
    DlqPage,
    DlqRecord,
    HookEvent,
    TrendBucket,
)
from .connector import Connector, Row
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
from .ports import NewClaim

_JSON_FIELDS = ("args", "kwargs", "exception", "context", "workflow")
PURGE_BATCH = 5000
_encode = msgspec.json.Encoder().encode


def _json_text(value: Any) -> str:
    return _encode(value).decode()


def _from_json(value: Any) -> Any:
    """A JSON column as read: its text (json, TEXT), already a value (text[]), or NULL."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


def _record(row: Row) -> DlqRecord:
    for field in _JSON_FIELDS:
        row[field] = _from_json(row[field])
    return DlqRecord(**row)


def _audit_row(row: Row) -> tuple[int, AuditEntry]:
    row["record_ids"] = _from_json(row["record_ids"])
    row["details"] = _from_json(row["details"])
    return row.pop("id"), AuditEntry(**row)


def _record_params(record: DlqRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(record)
    for field in _JSON_FIELDS:
        if params[field] is not None:  # workflow: NULL, not the JSON text "null"
            params[field] = _json_text(params[field])
    return params


class SqlStore:
    """`DlqStore` and `IdempotencyStore` on the schema that the connector's migrations make."""

    def __init__(self, connector: Connector) -> None:
        self.db = connector
        self.name = connector.name
        self.q = connector.queries

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.fetch(self.q["ping"])

    # --- DlqStore ------------------------------------------------------------------------

    async def put(self, record: DlqRecord) -> None:
        await self.db.execute(self.q["dlq_put"], _record_params(record))

    async def failed_again(self, record: DlqRecord) -> bool:
        return await self.db.execute(self.q["dlq_failed_again"], _record_params(record)) > 0

    async def resolve(self, dlq_id: str, task_id: str, now: float) -> bool:
        params = {"id": dlq_id, "task_id": task_id, "now": float(now)}
        return await self.db.execute(self.q["dlq_resolve"], params) > 0

    async def get(self, dlq_id: str) -> DlqRecord | None:
        rows = await self.db.fetch(self.q["dlq_get"], {"id": dlq_id}, _record)
        return rows[0] if rows else None

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        # LIKE with its wildcards escaped: PostgreSQL serves it from a text_pattern_ops
        # index whatever the database's collation; SQLite's query uses a plain range.
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params = {"pattern": pattern, "prefix": prefix, "upper": prefix + "\U0010ffff"}
        params["limit"] = limit
        rows = await self.db.fetch(self.q["dlq_ids_with_prefix"], params)
        return [row["id"] for row in rows]

    async def list(self, where: DlqFilter, limit: int, cursor: str | None = None) -> DlqPage:
        check_limit(limit)
        position = None if cursor is None else decode_cursor(cursor, str)
        query, params = filtered(self.name, "dlq_list", where, "dlq_before", position)
        params["limit"] = limit + 1
        return dlq_page(await self.db.fetch(query, params, _record), limit)

    async def count(self, where: DlqFilter) -> int:
        query, params = filtered(self.name, "dlq_count", where)
        (row,) = await self.db.fetch(query, params)
        return row["count"]

    async def iterate(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[DlqRecord]:
        async for records in self._batches("dlq_iterate", where, batch, _record):
            for record in records:
                yield record

    def export_rows(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[list[Row]]:
        return self._batches("dlq_export", where, batch)

    async def ids(self, where: DlqFilter, batch: int = 500) -> AsyncIterator[list[str]]:
        async for rows in self._batches("dlq_ids", where, batch):
            yield [row["id"] for row in rows]

    async def _batches(
        self,
        query_name: str,
        where: DlqFilter,
        batch: int,
        decode: Callable[[Row], Any] | None = None,
    ) -> AsyncIterator[list[Any]]:
        """`query_name`'s rows oldest first, `batch` at a time, each batch after the last."""
        check_limit(batch)
        position: tuple[float, str] | None = None
        while True:
            query, params = filtered(self.name, query_name, where, "dlq_after", position)
            params["limit"] = batch
            # The connection goes back to the pool before the caller sees a row: a slow
            # consumer (a rate-limited bulk retry) holds none between batches.
            rows = await self.db.fetch(query, params, decode)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            last = rows[-1]
            position = (last.created_at, last.id) if decode else (last["created_at"], last["id"])

    async def transition(
        self,
        ids: Sequence[str],
        to: str,
        from_statuses: Sequence[str],
        now: float,
        *,
        error: str | None = None,
        count_retry: bool = False,
        lease_until: float | None = None,
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
            "lease_until": None if lease_until is None else float(lease_until),
        }
        async with self.db.transaction() as tx:
            moved = await tx.fetch(self.q["dlq_transition_select"], params, _record)
            if moved:
                await tx.execute(self.q["dlq_transition_update"], params)
        return moved

    async def end_lease(self, ids: Sequence[str]) -> None:
        if ids:
            await self.db.execute(self.q["dlq_end_lease"], {"ids": [*ids]})

    async def lapsed_leases(self, now: float, limit: int = 500) -> list[str]:
        rows = await self.db.fetch(self.q["dlq_lapsed_leases"], {"now": float(now), "limit": limit})
        return [row["id"] for row in rows]

    async def counts(self) -> dict[str, int]:
        await self.db.execute(self.q["dlq_counts_fold"])
        rows = await self.db.fetch(self.q["dlq_counts"])
        return dict.fromkeys(STATUSES, 0) | {row["status"]: row["count"] for row in rows}

    async def oldest_pending(self) -> float | None:
        (row,) = await self.db.fetch(self.q["dlq_oldest_pending"])
        return row["oldest"]

    async def audit(self, entry: AuditEntry, *, key: str | None = None) -> None:
        params = msgspec.structs.asdict(entry)
        params["entry_key"] = key
        params["at"] = float(entry.at)
        params["details"] = _json_text(entry.details)
        await self.db.execute(self.q["audit_insert"], params)

    async def audit_log(self, limit: int, cursor: str | None = None) -> AuditPage:
        check_limit(limit)
        params: dict[str, Any] = {"limit": limit + 1}
        fragments: tuple[str, ...] = ()
        if cursor is not None:
            params["cursor_at"], params["cursor_id"] = decode_cursor(cursor, int)
            fragments = ("audit_before",)
        query = compose(self.name, "audit_list", fragments)
        return audit_page(await self.db.fetch(query, params, _audit_row), limit)

    async def record_events(self, events: Sequence[HookEvent]) -> None:
        if not events:
            return
        rows = [
            {
                "at": float(e.at),
                "kind": e.kind,
                "task_name": e.task_name,
                "failure_type": e.failure_type,
                "event": None if e.event is None else bytes(e.event).decode(),
                "decision": None if e.decision is None else bytes(e.decision).decode(),
            }
            for e in events
        ]
        await self.db.execute_many(self.q["event_insert"], rows)

    async def events(
        self, since: float, until: float, batch: int = 1000
    ) -> AsyncIterator[list[Row]]:
        """Exportable events (those with a body) in [since, until), oldest first, a batch
        at a time: rows of at, kind, event (JSON text) and decision (JSON text or None)."""
        check_limit(batch)
        params: dict[str, Any] = {
            "since": check_time("since", since),
            "until": check_time("until", until),
            "after_at": check_time("since", since) - 1,
            "after_id": 0,
            "limit": batch,
        }
        while True:
            rows = await self.db.fetch(self.q["events_page"], params)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            params["after_at"], params["after_id"] = rows[-1]["at"], rows[-1]["id"]

    async def trends(self, since: float, bucket: float = 3600) -> list[TrendBucket]:
        params = {"since": check_time("since", since), "bucket": check_bucket(bucket)}
        rows = await self.db.fetch(self.q["failure_trends"], params)
        return [TrendBucket(float(r["start"]), r["failure_type"], r["count"]) for r in rows]

    async def purge(self, now: float, keep_events: float, batch: int = PURGE_BATCH) -> int:
        """Delete events older than `keep_events` seconds, a batch per statement (a large
        backlog never holds a long lock), and expired claims; how many rows went."""
        params = {"now": float(now), "events_before": float(now - keep_events), "limit": batch}
        removed = 0
        while (deleted := await self.db.execute(self.q["purge_events"], params)) > 0:
            removed += deleted
            if deleted < batch:
                break
            await asyncio.sleep(0)  # let hooks in between batches
        return removed + await self.db.execute(self.q["purge_idempotency_keys"], params)

    # --- IdempotencyStore ----------------------------------------------------------------

    async def claim(self, key: str, owner: str, ttl: float, now: float) -> Claim:
        params = {"key": key, "owner": owner, "now": float(now), "expires_at": float(now + ttl)}
        async with self.db.transaction() as tx:
            if await tx.fetch(self.q["idempotency_claim"], params):
                return Claim(claimed=True, owner=owner)
            (holder,) = await tx.fetch(self.q["idempotency_holder"], params)
        return Claim(claimed=False, first_seen_at=holder["first_seen_at"], state=holder["state"])

    async def claim_many(self, claims: Sequence[NewClaim], now: float) -> list[Claim]:
        return [await self.claim(c.key, c.owner, c.ttl, now) for c in claims]

    async def complete(self, key: str, owner: str, ttl: float, now: float) -> bool:
        params = {"key": key, "owner": owner, "expires_at": float(now + ttl)}
        return await self.db.execute(self.q["idempotency_complete"], params) > 0

    async def release(self, key: str, owner: str) -> bool:
        params = {"key": key, "owner": owner}
        return await self.db.execute(self.q["idempotency_release"], params) > 0

    # --- the DLQ explorer (PostgreSQL only: 0010_dlq_explorer.sql) -----------------------

    async def sync_explorer(self, redact_kwargs: Sequence[str], show_args: bool) -> None:
        """Write what the explorer's views may show; they hide kwargs and args until then."""
        keys = {"keys": list(redact_kwargs)}
        async with self.db.transaction() as tx:
            await tx.execute(self.q["explorer_redactions_delete"], keys)
            await tx.execute(self.q["explorer_redactions_insert"], keys)
            await tx.execute(self.q["explorer_settings_update"], {"show_args": show_args})

    async def save_schedule_analysis(self, document: Mapping[str, Any]) -> None:
        """The last schedule analysis, for the explorer's schedule views (0011)."""
        await self.db.execute(self.q["schedule_analysis_save"], {"document": _json_text(document)})


def sqlite_store(path: str | os.PathLike[str] = ":memory:") -> SqlStore:
    """The embedded store on a SQLite file (":memory:" for a private one)."""
    from .sqlite import SqliteConnector

    return SqlStore(SqliteConnector(path))


def postgres_store(dsn: str, **pool: Any) -> SqlStore:
    """The store on PostgreSQL; `pool`: min_size, max_size, timeout of the pool."""
    from .postgres import PostgresConnector

    return SqlStore(PostgresConnector(dsn, **pool))
