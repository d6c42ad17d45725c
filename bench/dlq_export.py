"""`GET /v1/dlq/export.csv` on PostgreSQL vs PostgreSQL's own CSV of the same rows.

    .venv/bin/python bench/dlq_export.py [--dsn DSN] [--rows 1000000] [--rounds 3]

Fills `dlq_records` as bench/dlq_list.py does (--rows rows, a ~600-byte exception each),
then streams every record as CSV: through the sidecar's action API (an aiohttp server on
the store, read by an aiohttp client chunk by chunk: keyset pages of 500, one CSV row per
record with formula cells neutralised), and, as the baseline, `COPY (SELECT …) TO STDOUT
WITH CSV` of the same columns through psycopg, which never leaves C. Rows per second of
each, alternating, medians; target: the API at >= 50,000 rows/s. Without --dsn a throw-away
server is started (and its data dropped); with --dsn the table is TRUNCATEd first, so never
point it at real data (--reuse keeps a table that already holds --rows rows).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import postgres
from dlq_list import fill

from sidecar.http import create_app
from sidecar.settings import Settings, Token

TOKEN = "bench-export-viewer-token-0123456789"
TARGET = 50_000  # rows per second through the API
COPY = """
COPY (
    SELECT id, status, task_name, task_id, queue, failure_type, category, remediation,
           confidence, rule, priority, target_queue, attempts, dlq_retries, created_at,
           updated_at, exception ->> 'type', exception ->> 'message', last_error
    FROM dlq_records ORDER BY created_at, id
) TO STDOUT WITH (FORMAT csv, HEADER)
"""


async def through_api(client: TestClient) -> tuple[float, int]:
    began = time.perf_counter()
    response = await client.get(
        "/v1/dlq/export.csv",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=None),  # 10M rows take minutes
    )
    assert response.status == 200, await response.text()
    lines = 0
    async for chunk in response.content.iter_any():
        lines += chunk.count(b"\n")
    return time.perf_counter() - began, lines - 1


async def through_copy(dsn: str) -> tuple[float, int]:
    began = time.perf_counter()
    lines = 0
    async with (
        await psycopg.AsyncConnection.connect(dsn) as conn,
        conn.cursor().copy(COPY) as copy,
    ):
        async for chunk in copy:
            lines += bytes(chunk).count(b"\n")
    return time.perf_counter() - began, lines - 1


async def bench(dsn: str, rows: int, rounds: int, data_dir: Path) -> bool:
    settings = Settings(
        postgres_dsn=dsn,
        data_dir=data_dir,
        tokens={"viewer": (Token("bench", TOKEN),)},
        reload_interval=0,
        poll_interval=3600,
    )
    app = create_app(settings, registry=CollectorRegistry())
    api, copy = [], []
    async with TestClient(TestServer(app)) as client:
        for _ in range(rounds):
            seconds, count = await through_api(client)
            assert count == rows, (count, rows)
            api.append(rows / seconds)
            seconds, count = await through_copy(dsn)
            assert count == rows, (count, rows)
            copy.append(rows / seconds)
    a, c = statistics.median(api), statistics.median(copy)
    print(f"{rows} records as CSV, {rounds} rounds, median rows/s")
    print(f"  COPY … TO STDOUT (CSV):  {c:10,.0f} rows/s   (runs {[round(x) for x in copy]})")
    print(f"  GET /v1/dlq/export.csv:  {a:10,.0f} rows/s   (runs {[round(x) for x in api]})")
    print(f"  ratio: {a / c:.2f}x; target >= {TARGET:,} rows/s through the API")
    return a >= TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="keep a table of --rows rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres(args.dsn, Path(tmp)) as dsn:
        asyncio.run(fill(dsn, args.rows, args.reuse))
        ok = asyncio.run(bench(dsn, args.rows, args.rounds, Path(tmp) / "data"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
