"""Soak: a steady mix of hooks for minutes against a sidecar on real Redis + PostgreSQL,
watching for errors and leaks.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 300] [--redis-url URL]
                                   [--postgres-dsn DSN] [--json]

Without --redis-url / --postgres-dsn, throw-away servers are started (tests/services.py).
The sidecar runs as its own process; requests are sent open-loop at `--rate` per second
(failures that retry, failures that are dead-lettered, successes, starts, idempotency
claims) over at most `--connections` connections. After a warm-up the sidecar's RSS, its
open file descriptors and its PostgreSQL connections (pg_stat_activity) are taken, and
again at the end. Exits 1 on any error (a non-200 answer, a refused or timed-out request,
a rate more than 10% short of the target) or a leak (file descriptors or PostgreSQL
connections that grew, RSS that grew by more than max(30 MiB, 25%)).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _servers import ROOT, TOKEN, free_port, wait_ready

from sidecar.store.postgres import POOL_MAX

TASKS = [f"soak.task_{i}" for i in range(20)]
FD_SLACK = 8  # sockets being opened/closed at the moment of a reading
PG_SLACK = 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pg_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def request(i: int, run: str) -> tuple[str, dict]:
    """The i-th request of the mix: 40% retried failures, 5% dead letters, 35% successes,
    15% starts, 5% claims."""
    task, task_id = TASKS[i % len(TASKS)], f"{run}-{i}"
    slot = i % 20
    if slot < 8:
        return "/v1/hooks/failure", {
            "task_id": task_id,
            "task_name": task,
            "attempt": i % 3,
            "exception": {"type": "ConnectionResetError", "message": "connection reset"},
        }
    if slot < 9:
        return "/v1/hooks/failure", {
            "task_id": task_id,
            "task_name": task,
            "exception": {"type": "ValueError", "message": "Invalid data"},
            "args": [i, {"k": "v"}],
        }
    if slot < 16:
        return "/v1/hooks/success", {"task_id": task_id, "task_name": task, "attempt": i % 2}
    if slot < 19:
        return "/v1/hooks/start", {"task_id": task_id, "task_name": task}
    return "/v1/idempotency/claim", {"key": task_id, "ttl_seconds": 600}


class Load:
    def __init__(self, base: str, rate: float, connections: int) -> None:
        self.base, self.rate, self.connections = base, rate, connections
        self.sent = self.ok = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []
        self.run = uuid.uuid4().hex[:8]

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def one(self, session: aiohttp.ClientSession, i: int, slots: asyncio.Semaphore):
        path, body = request(i, self.run)
        began = time.perf_counter()
        try:
            async with session.post(self.base + path, json=body) as response:
                await response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.error(f"HTTP {response.status} on {path}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error(f"{type(exc).__name__} on {path}")
        finally:
            slots.release()
            self.latencies.append(time.perf_counter() - began)

    async def until(self, session: aiohttp.ClientSession, deadline: float) -> None:
        """Open loop: request i is due at start + i / rate, whatever the answers do."""
        slots = asyncio.Semaphore(self.connections)
        pending: set[asyncio.Task] = set()
        start = time.monotonic()
        first = self.sent
        while (now := time.monotonic()) < deadline:
            due = first + int((now - start) * self.rate)
            while self.sent < due:
                if slots.locked():
                    self.error("behind: every connection busy")
                    self.sent = due  # skip what cannot be sent rather than queue it
                    break
                await slots.acquire()
                task = asyncio.create_task(self.one(session, self.sent, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
            await asyncio.sleep(0.005)  # the pacing tick
        if pending:
            await asyncio.wait(pending, timeout=10)


async def soak(base: str, args, pid: int, dsn: str, progress) -> dict:
    load = Load(base, args.rate, args.connections)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as s:
        began = time.monotonic()
        await load.until(s, began + args.warmup)
        warm_errors, warm_sent = dict(load.errors), load.sent
        start = {
            "rss_kib": rss_kib(pid),
            "fds": open_fds(pid),
            "pg_connections": await asyncio.to_thread(pg_connections, dsn),
        }
        measured = time.monotonic()
        deadline = measured + args.seconds
        while (now := time.monotonic()) < deadline:
            await load.until(s, min(deadline, now + args.report_every))
            progress(
                f"{now - began + args.report_every:6.0f}s sent {load.sent} ok {load.ok} "
                f"errors {sum(load.errors.values())} rss {rss_kib(pid) // 1024} MiB "
                f"fds {open_fds(pid)}"
            )
        elapsed = time.monotonic() - measured
    end = {
        "rss_kib": rss_kib(pid),
        "fds": open_fds(pid),
        "pg_connections": await asyncio.to_thread(pg_connections, dsn),
    }
    latencies = sorted(load.latencies)
    achieved = (load.sent - warm_sent) / elapsed if elapsed else 0.0
    if achieved < 0.9 * args.rate:
        load.error(f"rate {achieved:.0f}/s is more than 10% short of {args.rate:.0f}/s")
    leaks = []
    if end["fds"] > start["fds"] + FD_SLACK:
        leaks.append(f"file descriptors {start['fds']} -> {end['fds']}")
    # The pool opens connections on demand up to its bound: only more than that leaks.
    if end["pg_connections"] > max(start["pg_connections"] + PG_SLACK, POOL_MAX):
        leaks.append(f"PostgreSQL connections {start['pg_connections']} -> {end['pg_connections']}")
    if end["rss_kib"] - start["rss_kib"] > max(30 * 1024, start["rss_kib"] // 4):
        leaks.append(f"RSS {start['rss_kib']} KiB -> {end['rss_kib']} KiB")
    return {
        "seconds": round(elapsed, 1),
        "target_rate": args.rate,
        "achieved_rate": round(achieved, 1),
        "sent": load.sent,
        "ok": load.ok,
        "errors": load.errors,
        "warmup_errors": warm_errors,
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2)
            if latencies
            else None,
            "max": round(latencies[-1] * 1000, 2) if latencies else None,
        },
        "start": start,
        "end": end,
        "leaks": leaks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the readings")
    parser.add_argument("--report-every", type=float, default=10.0)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--postgres-dsn", default=None)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = args.minutes * 60

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_url, dsn = args.redis_url, args.postgres_dsn
        if redis_url is None or dsn is None:
            from tests.services import start_postgres, start_redis

            if redis_url is None:
                redis_url = stack.enter_context(start_redis(tmp)).url
            if dsn is None:
                dsn = stack.enter_context(start_postgres(tmp)).dsn
        port = free_port()
        env = {
            **os.environ,
            "TASK_SIDECAR_PORT": str(port),
            "TASK_SIDECAR_POLICIES": str(ROOT / "policies.yaml"),
            "TASK_SIDECAR_DATA_DIR": str(Path(tmp) / "data"),
            "TASK_SIDECAR_HOOK_TOKENS": f"soak:{TOKEN}",
            "TASK_SIDECAR_LOG_LEVEL": "WARNING",
            "TASK_SIDECAR_REDIS_URL": redis_url,
            "TASK_SIDECAR_POSTGRES_DSN": dsn,
        }
        log = open(Path(tmp) / "sidecar.log", "wb")  # noqa: SIM115 - closed by the stack
        stack.callback(log.close)
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_ready(port, process)
            base = f"http://127.0.0.1:{port}"
            summary = asyncio.run(soak(base, args, process.pid, dsn, progress))
            alive = process.poll() is None
        finally:
            process.terminate()
            process.wait(timeout=30)
        log.flush()
        tail = (Path(tmp) / "sidecar.log").read_text(errors="replace").splitlines()[-20:]
    if not alive:
        summary["errors"]["sidecar exited"] = 1
    failed = bool(summary["errors"] or summary["leaks"])
    summary["result"] = "fail" if failed else "ok"
    if args.json:
        print(json.dumps(summary))
    else:
        s, e = summary["start"], summary["end"]
        print(f"{summary['seconds']}s at {summary['achieved_rate']}/s (target {args.rate:.0f}/s)")
        print(f"sent {summary['sent']}, ok {summary['ok']}, errors {summary['errors'] or 0}")
        print(f"latency ms {summary['latency_ms']}")
        print(f"RSS {s['rss_kib'] // 1024} -> {e['rss_kib'] // 1024} MiB")
        print(f"open fds {s['fds']} -> {e['fds']}")
        print(f"PostgreSQL connections {s['pg_connections']} -> {e['pg_connections']}")
        print(f"leaks: {summary['leaks'] or 'none'}")
        print(summary["result"])
    if failed:
        print("sidecar log tail:\n" + "\n".join(tail), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
