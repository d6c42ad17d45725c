"""One DLQ listing page through `SqlStore.list` on PostgreSQL vs the same SQL on psycopg.

    .venv/bin/python bench/dlq_list.py [--dsn DSN] [--rows 1000000] [--count 300] [--explain]

Fills `dlq_records` with --rows rows in one INSERT … SELECT generate_series (20 % pending,
the rest spread over the other states, one a second, a ~600-byte exception each), then
times a page of 50 pending records, newest first: the first page, and one from deep in
the listing (through a cursor). The store path is `store.list(DlqFilter(status=...), 50)`:
pool, composed SQL, DlqRecord structs, the next cursor. The baseline runs the very SQL
text the store sends, with the same parameters, on one autocommit psycopg connection,
fetching plain tuples. Medians of alternating rounds, and their ratio (target <= 1.5x).
Then the depth poll: `store.counts()` (the counts PostgreSQL keeps per status, 0013) vs
`count(*) GROUP BY status` over the records.
--explain prints the plans. Without --dsn a throw-away server is started (and its data
dropped); with --dsn the table is TRUNCATEd first, so never point it at real data
(--reuse keeps a table that already holds --rows rows).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import postgres

from sidecar.records import DlqFilter
from sidecar.store.keyset import decode_cursor, filtered
from sidecar.store.sqlstore import SqlStore, postgres_store

LIMIT = 50
WHERE = DlqFilter(status="pending")

FILL = """
INSERT INTO dlq_records (
    id, task_id, task_name, queue, args, kwargs, exception, context,
    failure_type, category, remediation, confidence, rule, priority, priority_value,
    target_queue, attempts, status, created_at, updated_at, dlq_retries, last_error
)
SELECT md5(i::text)::uuid::text, md5((-i)::text), (ARRAY['billing.charge', 'mail.send',
       'reports.build'])[1 + i %% 3], 'default', json_build_array(i, 'EUR'),
       json_build_object('customer', i %% 1000),
       json_build_object('type', 'DeadlockDetected', 'message', 'deadlock detected',
                         'traceback', repeat('  File "/app/billing.py", line 17, in f\n', 12)),
       json_build_object('customer_tier', 'enterprise'),
       (ARRAY['TRANSIENT_DATABASE', 'EXTERNAL_API_DOWN'])[1 + i %% 2], 'transient',
       'AUTO_RETRY', 0.95, 'db-deadlock', 'HIGH', 8, 'high_priority', 5,
       (ARRAY['pending', 'pending', 'retrying', 'resolved', 'resolved', 'resolved',
              'resolved', 'resolved', 'resolved', 'abandoned'])[1 + i %% 10],
       to_timestamp(1700000000 + i), to_timestamp(1700000000 + i), 0, NULL
FROM generate_series(1, %(rows)s) AS i
"""


async def fill(dsn: str, rows: int, reuse: bool = False) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        if reuse:  # a table this filled before (10M rows take long to make)
            cur = await conn.execute("SELECT count(*) FROM dlq_records")
            (have,) = await cur.fetchone()  # type: ignore[misc]
            if have == rows:
                print(f"reusing the {rows} rows in dlq_records")
                return
        # The throw-away server commits asynchronously, and VACUUM cannot mark pages
        # all-visible before the insert's commit is on disk: without this, index-only scans
        # would fetch every heap page, which a server with the default setting would not.
        await conn.execute("SET synchronous_commit = on")
        await conn.execute("TRUNCATE dlq_records")
        began = time.perf_counter()
        await conn.execute(FILL, {"rows": rows})
        await conn.execute("VACUUM ANALYZE dlq_records")
        print(f"{rows} rows inserted and analysed in {time.perf_counter() - began:.1f} s")


async def store_round(store: SqlStore, count: int, cursor: str | None) -> float:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        page = await store.list(WHERE, LIMIT, cursor)
        samples.append(time.perf_counter() - began)
    assert len(page.records) == LIMIT
    return statistics.median(samples)


async def raw_round(
    conn: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any], count: int
) -> float:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall()
        samples.append(time.perf_counter() - began)
    assert len(rows) == LIMIT + 1
    return statistics.median(samples)


def the_sql(cursor: str | None) -> tuple[str, dict[str, Any]]:
    """What `store.list(WHERE, LIMIT, cursor)` sends."""
    position = None if cursor is None else decode_cursor(cursor, str)
    sql, params = filtered("postgres", "dlq_list", WHERE, "dlq_before", position)
    return sql, params | {"limit": LIMIT + 1}


async def explain(conn: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any]) -> None:
    cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
    for (line,) in await cur.fetchall():
        print("   ", line)


async def bench(dsn: str, count: int, rounds: int, show_plans: bool) -> None:
    store = postgres_store(dsn)
    await store.open()
    try:
        # A cursor deep in the listing: past the first 20,000 pending records.
        deep = None
        for _ in range(400):
            deep = (await store.list(WHERE, LIMIT, deep)).next_cursor
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for label, cursor in (("first page", None), ("deep page (cursor)", deep)):
                sql, params = the_sql(cursor)
                if show_plans:
                    print(f"{label}:")
                    await explain(conn, sql, params)
                through, raw = [], []
                for _ in range(rounds):
                    through.append(await store_round(store, count, cursor))
                    raw.append(await raw_round(conn, sql, params, count))
                s, r = statistics.median(through), statistics.median(raw)
                print(f"{label}: {count} lists x {rounds} rounds, median latency")
                print(f"  raw psycopg, same SQL: {r * 1e6:7.0f} µs")
                print(f"  store.list:            {s * 1e6:7.0f} µs")
                print(f"  ratio: {s / r:.2f}x (target <= 1.5x)")
            # The depth poll: counts kept per status (0013) vs counting the records.
            counted = "SELECT status, count(*) FROM dlq_records GROUP BY status"
            polls, scans = [], []
            for _ in range(rounds):
                polls.append(await timed(store.counts, max(1, count // 30)))
                scans.append(await timed(lambda: fetch(conn, counted), max(1, count // 30)))
            p, c = statistics.median(polls), statistics.median(scans)
            print("depth poll: store.counts() vs count(*) GROUP BY status, median latency")
            print(f"  count(*) GROUP BY status: {c * 1e6:9.0f} µs")
            print(f"  store.counts():           {p * 1e6:9.0f} µs")
            print(f"  ratio: {p / c:.4f}x")
    finally:
        await store.close()


async def fetch(conn: psycopg.AsyncConnection[Any], sql: str) -> list[Any]:
    return await (await conn.execute(sql)).fetchall()


async def timed(call: Any, count: int) -> float:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep a table of --rows rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres(args.dsn, Path(tmp)) as dsn:
        asyncio.run(fill(dsn, args.rows, args.reuse))
        asyncio.run(bench(dsn, args.count, args.rounds, args.explain))


if __name__ == "__main__":
    main()
