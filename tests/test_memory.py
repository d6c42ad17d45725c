"""Clients choose exception types, task names and queues; the sidecar's memory does not
grow with them, and the loop keeps answering the liveness probe meanwhile.

A real `task-sidecar serve` process (embedded stores) gets 10,000 failures, each with an
exception type and a task name it has never seen, in batches of 200, while a thread asks
`/healthz` the way the chart's liveness probe does (2 s timeout).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from tests.processes import SidecarProcess

NOVEL = 10_000
BATCH = 200
# The classifier's memo is bounded at 8 MiB of keys, metric labels at 500 names per label;
# the rest is SQLite's page cache and Python's allocator. Unbounded, this grew ~150 KB per
# new type (1.5 GB for 10,000).
GROWTH_LIMIT = 96 << 20


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def batch(start: int) -> list[dict]:
    return [
        {
            "type": "failure",
            "task_id": uuid.uuid4().hex,
            "task_name": f"novel.task_{i}",
            "queue": f"queue-{i}",
            "exception": {
                "type": f"NovelError{i}",
                "module": f"vendor.lib{i}",
                "mro": [f"vendor.lib{i}.NovelError{i}", "builtins.Exception"],
                "message": f"unexpected condition {i}",
            },
        }
        for i in range(start, start + BATCH)
    ]


class Probe(threading.Thread):
    """Asks /healthz in a loop until stopped; counts answers and misses within 2 s."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.stop = threading.Event()
        self.answered, self.missed, self.slowest = 0, [], 0.0  # slowest: for reports only

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    response.read()
                self.answered += 1
                self.slowest = max(self.slowest, time.monotonic() - began)
            except OSError as exc:
                self.missed.append(repr(exc))


def test_novel_names_keep_memory_bounded_and_the_probe_answered(tmp_path):
    with SidecarProcess(tmp_path) as sidecar:
        sidecar.call("/v1/hooks/batch", batch(-BATCH))  # warm: first SQLite pages, imports
        before = rss(sidecar.process.pid)
        probe = Probe(sidecar.port)
        probe.start()
        try:
            for start in range(0, NOVEL, BATCH):
                status, answer = sidecar.call("/v1/hooks/batch", batch(start))
                assert status == 200, answer
                assert {a["action"] for a in answer["results"]} == {"dead_letter"}
        finally:
            probe.stop.set()
            probe.join()
        growth = rss(sidecar.process.pid) - before
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/metrics").read().decode()
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB for {NOVEL} novel types"
    assert probe.missed == [], probe.missed[:3]
    assert probe.answered > 0
    tasks = set(re.findall(r'task_sidecar_task_events_total\{[^}]*task="([^"]*)"', metrics))
    assert "__other__" in tasks
    assert len(tasks) == 501  # 500 names, then one for the rest
