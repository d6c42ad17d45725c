"""An idempotency claim through the sidecar vs a raw `SET NX PX` with redis-py.

    .venv/bin/python bench/claim.py [--redis-url URL] [--count 3000]

Both run from the worker's side, one at a time on a keep-alive connection, each claim a
new key: the raw baseline is redis-py's asyncio `SET key value NX PX ttl` against the same
Redis the sidecar uses; the sidecar path is `POST /v1/idempotency/claim` (HTTP, auth,
validation, then the same SET). Prints the median latency of each and their ratio, from
alternating rounds. Target ≤ 2×.

Then the same claims in batches of --batch (default 100): `POST /v1/idempotency/claims`
(one request, one Redis pipeline) per claim vs the raw SET NX per claim above, and vs
redis-py pipelining the batch's SETs itself (the best a worker could do alone).
Without --redis-url a throw-away Redis is started.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _servers import TOKEN, sidecar


async def raw_round(url: str, count: int) -> float:
    client = aioredis.Redis.from_url(url)
    prefix = uuid.uuid4().hex
    samples = []
    for i in range(count):
        start = time.perf_counter()
        await client.set(f"raw:{prefix}:{i}", "running:0", nx=True, px=60_000)
        samples.append(time.perf_counter() - start)
    await client.aclose()
    return statistics.median(samples)


async def sidecar_round(base: str, count: int) -> float:
    prefix = uuid.uuid4().hex
    samples = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(count):
            start = time.perf_counter()
            async with session.post(
                f"{base}/v1/idempotency/claim", json={"key": f"{prefix}:{i}", "ttl_seconds": 60}
            ) as r:
                assert (await r.json())["claimed"] is True
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def raw_pipeline_round(url: str, count: int, batch: int) -> float:
    """Seconds per claim, the SETs sent `batch` at a time in one pipeline."""
    client = aioredis.Redis.from_url(url)
    prefix = uuid.uuid4().hex
    start = time.perf_counter()
    for first in range(0, count, batch):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(first, min(count, first + batch)):
                pipe.set(f"raw:{prefix}:{i}", "running:0", nx=True, px=60_000)
            await pipe.execute()
    elapsed = time.perf_counter() - start
    await client.aclose()
    return elapsed / count


async def sidecar_batch_round(base: str, count: int, batch: int) -> float:
    """Seconds per claim through `POST /v1/idempotency/claims`, `batch` per request."""
    prefix = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        start = time.perf_counter()
        for first in range(0, count, batch):
            claims = [
                {"key": f"{prefix}:{i}", "ttl_seconds": 60}
                for i in range(first, min(count, first + batch))
            ]
            async with session.post(f"{base}/v1/idempotency/claims", json={"claims": claims}) as r:
                results = (await r.json())["results"]
                assert all(result["claimed"] for result in results)
        elapsed = time.perf_counter() - start
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = args.redis_url
        if url is None:
            from tests.services import start_redis

            url = stack.enter_context(start_redis(tmp)).url
        base = stack.enter_context(sidecar(Path(tmp) / "data", TASK_SIDECAR_REDIS_URL=url))
        raw, through, piped, batched = [], [], [], []
        for _ in range(3):
            raw.append(asyncio.run(raw_round(url, args.count)))
            through.append(asyncio.run(sidecar_round(base, args.count)))
            piped.append(asyncio.run(raw_pipeline_round(url, args.count, args.batch)))
            batched.append(asyncio.run(sidecar_batch_round(base, args.count, args.batch)))
    r, s = statistics.median(raw), statistics.median(through)
    p, b = statistics.median(piped), statistics.median(batched)
    print(f"{args.count} claims per round, 3 rounds, median latency")
    print(f"raw SET NX PX (redis-py):    {r * 1e6:7.0f} µs")
    print(f"POST /v1/idempotency/claim: {s * 1e6:7.0f} µs")
    print(f"ratio: {s / r:.2f}x (target <= 2x)")
    print(f"in batches of {args.batch}, per claim:")
    print(f"raw SETs in one pipeline:    {p * 1e6:7.1f} µs")
    print(f"POST /v1/idempotency/claims: {b * 1e6:7.1f} µs")
    print(f"ratio to one raw SET NX each: {b / r:.2f}x (target <= 2x); to the raw pipeline: "
          f"{b / p:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
