"""An outage storm: 500 simulated workers that all start failing at once.

    .venv/bin/python bench/storm.py [--workers 500] [--seconds 20] [--processes 4]

A sidecar on a throw-away PostgreSQL (the default in-flight limit) serves workers spread
over a few processes, each worker an `AsyncSidecarClient` with its default 250 ms timeout.
For the first quarter of the run each worker reports a retryable failure a second (the
calm, the baseline); then every worker reports dead letters back to back (the storm).
Every call is timed from the worker's side, whoever answered it: the sidecar, or the
client's local fallback when the sidecar timed out or shed the request (503 +
Retry-After). Dead letters decided locally are written to the client's outbox (fsync'd,
under the run's temporary directory) and delivered from it later.

Prints per phase the p50/p99/max time to an answer and the share the sidecar answered;
the storm's p99 as a ratio to the calm's; requests shed; the sidecar's RSS; and whether
every dead letter answered became exactly one row.

On a 2-core machine the workers' own processes saturate the CPU the sidecar needs: the
figures then say as much about the load generator as about the sidecar (see
docs/performance.md for what was measured and what it shows).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import psycopg  # noqa: E402

from sidecar.client import AsyncSidecarClient  # noqa: E402
from tests.processes import SidecarProcess  # noqa: E402
from tests.services import start_postgres  # noqa: E402

TOKEN = "storm-hooks-token-0123456789"
POLICIES = str(ROOT.parent / "policies.yaml")


class ReadTimeout(Exception):  # classified TRANSIENT_NETWORK: retried
    pass


def error(kind: type[Exception], message: str) -> Exception:
    try:
        raise kind(message)
    except Exception as exc:
        return exc


async def worker(
    client: AsyncSidecarClient, times: tuple[float, float, float], tag: str, out: dict
) -> None:
    start, calm_until, end = times
    await asyncio.sleep(max(0.0, start - time.time()))
    try:
        n = 0
        while (now := time.time()) < end:
            storm = now >= calm_until
            n += 1
            task_id = f"{tag}-{n}"
            exc = error(ValueError, "Invalid data") if storm else error(ReadTimeout, "timed out")
            began = time.perf_counter()
            answer = await client.failure(task_id, "storm.import", exc, args=[task_id])
            took = time.perf_counter() - began
            phase = out["storm" if storm else "calm"]
            phase["times"].append(took)
            phase["sidecar" if "source" not in answer else "local"] += 1
            if storm and answer["action"] == "dead_letter":
                if "source" in answer:
                    out["local_dead_letters"] += 1
                else:
                    out["dlq_ids"].append(answer["dlq_id"])
            await asyncio.sleep(0.02 if storm else max(0.0, 1.0 - took))
    finally:
        await client.close(timeout=20)  # delivers what was decided locally


def run_workers(url: str, count: int, times: tuple[float, float, float], results) -> None:
    out = {
        "calm": {"times": [], "sidecar": 0, "local": 0},
        "storm": {"times": [], "sidecar": 0, "local": 0},
        "dlq_ids": [],
        "local_dead_letters": 0,
    }

    async def main() -> None:
        # Made before the clock starts: each loads the policy file for its local fallback.
        clients = [AsyncSidecarClient(url, TOKEN, policies=POLICIES) for _ in range(count)]
        # Each close waits in a thread for its outbox to be delivered: all at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(count))
        tag = uuid.uuid4().hex[:8]
        await asyncio.gather(*(worker(c, times, f"{tag}-{i}", out) for i, c in enumerate(clients)))

    asyncio.run(main())
    results.put(out)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def quantiles(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[int(len(ordered) * 0.99)]
    return (
        f"p50 {statistics.median(ordered) * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms"
        f"  max {ordered[-1] * 1e3:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_postgres(Path(tmp)) as postgres:
        workdir = Path(tmp)
        # The workers' outboxes (dead letters decided locally, fsync'd): thrown away too.
        os.environ["TASK_SIDECAR_CLIENT_OUTBOX"] = str(workdir / "outbox")
        with SidecarProcess(workdir, TOKEN, postgres_dsn=postgres.dsn, log_level="WARNING") as sc:
            url = f"http://127.0.0.1:{sc.port}"
            pid, peak, samples = sc.process.pid, [rss(sc.process.pid)], threading.Event()

            def sample() -> None:
                while not samples.wait(0.2):
                    peak.append(rss(pid))

            threading.Thread(target=sample, daemon=True).start()
            start = time.time() + 30  # every process has made its clients
            calm_until, end = start + args.seconds / 4, start + args.seconds
            spawn = multiprocessing.get_context("spawn")
            results = spawn.Queue()
            share = args.workers // args.processes
            processes = [
                spawn.Process(
                    target=run_workers, args=(url, share, (start, calm_until, end), results)
                )
                for _ in range(args.processes)
            ]
            for process in processes:
                process.start()
            outs = [results.get(timeout=args.seconds + 120) for _ in processes]
            for process in processes:
                process.join()
            samples.set()
            answered = {i for out in outs for i in out["dlq_ids"]}
            local = sum(out["local_dead_letters"] for out in outs)
            with psycopg.connect(postgres.dsn) as conn:
                deadline = time.monotonic() + 30
                while True:  # the outboxes deliver in the background
                    rows = conn.execute("SELECT id FROM dlq_records").fetchall()
                    if len(rows) >= len(answered) + local or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            stored = [r[0] for r in rows]
            metrics = urllib.request.urlopen(f"{url}/metrics").read().decode()
            end_rss = rss(pid)
    shed = sum(
        float(v)
        for v in re.findall(r"^task_sidecar_requests_rejected_total\{[^}]*\} (\S+)", metrics, re.M)
    )
    print(f"{share * args.processes} workers, {args.seconds:g} s ({args.seconds / 4:g} s calm)")
    phases = {}
    for name in ("calm", "storm"):
        times = [t for out in outs for t in out[name]["times"]]
        by_sidecar = sum(out[name]["sidecar"] for out in outs)
        phases[name] = sorted(times)
        print(
            f"{name:6} {len(times):7} answers  {quantiles(times)}"
            f"  answered by the sidecar {by_sidecar / max(1, len(times)):.0%}"
        )
    calm, storm = phases["calm"], phases["storm"]
    ratio = storm[int(len(storm) * 0.99)] / calm[int(len(calm) * 0.99)]
    print(
        f"storm p99 / calm p99: {ratio:.2f}x; answers over 250 ms: "
        f"{sum(t > 0.25 for t in storm)} of {len(storm)}"
    )
    print(f"shed (503 + Retry-After, every reason): {shed:.0f}")
    print(
        f"sidecar RSS: start {peak[0] / 2**20:.0f} MiB, peak {max(peak) / 2**20:.0f} MiB, "
        f"end {end_rss / 2**20:.0f} MiB"
    )
    print(
        f"dead letters: {len(answered)} answered by the sidecar, {local} decided locally; "
        f"rows {len(stored)} ({len(set(stored))} distinct); every answered id stored: "
        f"{answered <= set(stored)}"
    )


if __name__ == "__main__":
    main()
