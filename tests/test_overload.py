"""Overload: a burst far above capacity gets fast 503 + Retry-After answers (never
unbounded latency or memory), the worker client takes them like a timeout, and the sidecar
answers normally once the burst is over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from sidecar.client import SidecarClient

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

TOKEN = "overload-hooks-0123456789"
LIMIT = 8

# A flood from another process: `connections` clients posting hooks back to back for
# `seconds` (or `count` requests), loopback only; prints status counts and latencies.
FLOOD = r"""
import asyncio, json, sys, time
import aiohttp

port, token, connections, seconds, count = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
url = f"http://127.0.0.1:{port}"
headers = {"Authorization": f"Bearer {token}"}
statuses, retry_after, latencies = {}, 0, {}
sent = 0

def event(i):
    kind = ("failure", "success", "start")[i % 3]
    body = {"task_id": f"f{i}", "task_name": f"flood.task_{i % 50}"}
    if kind == "failure":
        body["exception"] = {"type": "DeadlockDetected", "message": "deadlock detected"}
    return kind, body

async def worker(session, deadline):
    global sent, retry_after
    while time.monotonic() < deadline and sent < count:
        sent += 1
        kind, body = event(sent)
        began = time.perf_counter()
        try:
            async with session.post(f"{url}/v1/hooks/{kind}", json=body, headers=headers) as r:
                await r.read()
                status = r.status
                retry_after += r.status == 503 and r.headers.get("Retry-After") == "1"
        except aiohttp.ClientError as exc:
            status = type(exc).__name__
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        latencies.setdefault(str(status), []).append(time.perf_counter() - began)

async def main():
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(session, deadline) for _ in range(int(connections))))
    def pct(values, q):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)
    print(json.dumps({
        "statuses": statuses,
        "retry_after": retry_after,
        "p50_ms": {k: pct(v, 0.5) for k, v in latencies.items()},
        "p99_ms": {k: pct(v, 0.99) for k, v in latencies.items()},
        "max_ms": {k: pct(v, 1.0) for k, v in latencies.items()},
    }))

asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def sidecar(redis_url, postgres_dsn, tmp_path):
    with SidecarProcess(
        tmp_path,
        TOKEN,
        policies=str(DEFAULT_POLICIES),
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        max_in_flight=str(LIMIT),
        log_level="WARNING",
    ) as process:
        yield process
        assert process.stop() == 0, process.output()


def test_a_flood_gets_fast_503s_and_memory_stays_bounded(sidecar):
    for i in range(50):  # warm up: imports, connections, first metric series
        assert sidecar.call("/v1/hooks/start", {"task_id": f"w{i}", "task_name": "x"})[0] == 200
    idle = rss_kib(sidecar.process.pid)
    peak = [idle]
    flooding = threading.Event()
    flooding.set()

    def sample() -> None:
        while flooding.is_set():
            peak[0] = max(peak[0], rss_kib(sidecar.process.pid))
            time.sleep(0.05)  # sampling period

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        flood = subprocess.run(
            [sys.executable, "-c", FLOOD, str(sidecar.port), TOKEN, "400", "4", "200000"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        flooding.clear()
        sampler.join()
    assert flood.returncode == 0, flood.stderr
    report = json.loads(flood.stdout)
    print("\nflood:", report, f"RSS idle {idle} KiB, peak {peak[0]} KiB")
    statuses = report["statuses"]
    assert set(statuses) <= {"200", "503"}, statuses  # no other 5xx, no dropped connections
    assert statuses.get("503", 0) > 0, "the flood never went over the limit"
    assert report["retry_after"] == statuses["503"]  # every 503 says when to come back
    assert statuses.get("200", 0) > 0  # work kept being done at the limit
    assert peak[0] < 2 * idle + 50 * 1024, (idle, peak[0])

    # Once the flood is over, answered normally.
    assert sidecar.call("/readyz")[0] == 200
    status, answer = sidecar.call(
        "/v1/hooks/failure",
        {"task_id": "after", "task_name": "x", "exception": {"type": "DeadlockDetected"}},
    )
    assert (status, answer["action"]) == (200, "retry")


def test_the_client_takes_a_503_like_a_timeout(sidecar):
    """All slots taken by requests whose bodies are slow to come: the client's call is
    refused at once and it decides locally."""
    held = []
    try:
        for _ in range(LIMIT):
            sock = socket.create_connection(("127.0.0.1", sidecar.port))
            sock.sendall(
                b"POST /v1/hooks/failure HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            held.append(sock)
        # Once the sidecar has read those headers, every slot is taken: wait for that.
        deadline = time.monotonic() + 10
        while sidecar.call("/v1/hooks/start", {"task_id": "p", "task_name": "x"})[0] != 503:
            assert time.monotonic() < deadline, "the held requests never filled the slots"
            time.sleep(0.02)  # polling with a deadline
        client = SidecarClient(
            f"http://127.0.0.1:{sidecar.port}", token=TOKEN, policies=DEFAULT_POLICIES
        )
        try:
            decision = client.failure("c1", "x", {"type": "DeadlockDetected", "message": "d"})
            assert decision["source"] == "local"
            assert client.stats()["down"] is True
            assert client.start("c2", "x")["allow"] is True
        finally:
            client.close()
    finally:
        for sock in held:
            sock.close()
    # The sidecar sees the connections go and frees the slots.
    deadline = time.monotonic() + 10
    while sidecar.call("/v1/hooks/start", {"task_id": "s", "task_name": "x"})[0] != 200:
        assert time.monotonic() < deadline, "the slots were not freed"
        time.sleep(0.02)  # polling with a deadline
