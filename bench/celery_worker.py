"""Celery worker throughput for a trivial task with the integration on vs off.

    .venv/bin/python bench/celery_worker.py [--tasks 3000]

A real worker process (prefork pool off: `-P solo`, one process, as the baseline) on a
throw-away Redis broker, next to a sidecar on the embedded default. N tasks are queued
up front; the time from the worker taking the first to finishing the last is measured,
with the integration on (the start answered from the cached allowance, the success
batched) and off (a plain `celery.Task`), three rounds each, alternating. Prints tasks/s,
the ratio (target >= 0.97x) and the worker process's CPU time per task over the same
interval. On a shared machine the rounds of one mode vary more than the 3 % asked about,
so it also times the same trivial task through Celery's tracer in this process, with and
without the integration: that cost, against the worker's CPU per task, gives the ratio
the integration alone would cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from _servers import TOKEN, sidecar  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(
    client: redis.Redis, env: dict[str, str], task: str, count: int
) -> tuple[float, float]:
    """(tasks/s, worker CPU seconds per task) from the first task's end to the last's."""
    from celery import Celery

    client.flushdb()
    app = Celery("bench-producer", broker=env["CELERY_BROKER_URL"])
    for i in range(count):
        app.send_task(task, args=[i], queue="bench")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "-P",
            "solo",
            "-Q",
            "bench",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while client.get("bench:done") is None:  # the clock starts with the first task
            time.sleep(0.001)
        started, cpu = time.perf_counter(), cpu_seconds(worker.pid)
        deadline = time.monotonic() + 300
        while int(client.get("bench:done") or 0) < count:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the worker stalled or died")
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(worker.pid) - cpu
        return (count - 1) / elapsed, cpu / (count - 1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def tracer_cost(url: str, calls: int = 20_000, rounds: int = 7) -> tuple[float, float]:
    """(plain, with integration) CPU seconds per run of a trivial task through Celery's own
    tracer in this process: the worker's per-task work without the broker, so the
    integration's own cost is seen apart from the broker's noise."""
    from celery import Celery, Task
    from celery.app.trace import build_tracer

    from sidecar.integrations.celery import install

    app = Celery("bench-tracer", broker="memory://")
    client = install(app, url, TOKEN)
    # This loop makes success events faster than any worker (~30,000/s) and overflows the
    # client's buffer on purpose: the count is not what is measured here.
    logging.getLogger("sidecar.client").setLevel(logging.ERROR)

    @app.task(name="tracer.on")
    def on(n: int) -> int:
        return n

    @app.task(name="tracer.off", base=Task)
    def off(n: int) -> int:
        return n

    def per_call(task: Any) -> float:
        trace = build_tracer(task.name, task, app=app, eager=False, propagate=False)
        ids = [f"{task.name}-{i}" for i in range(calls)]
        delivery = {"routing_key": "bench", "exchange": "", "redelivered": False}
        request = {"delivery_info": delivery, "hostname": "bench@host", "retries": 0}
        started = time.thread_time()
        for task_id in ids:
            trace(task_id, (1,), {}, {**request, "id": task_id})
        return (time.thread_time() - started) / calls

    costs: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        costs["off"].append(per_call(off))
        costs["on"].append(per_call(on))
    client.close()
    return statistics.median(costs["off"]), statistics.median(costs["on"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.services import start_redis

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        broker = stack.enter_context(start_redis(tmp)).url
        url = stack.enter_context(sidecar(Path(tmp) / "data"))
        env = {
            **os.environ,
            "CELERY_BROKER_URL": broker,
            "TASK_SIDECAR_URL": url,
            "TASK_SIDECAR_TOKEN": TOKEN,
            "PYTHONPATH": f"{ROOT}:{ROOT.parent}",
        }
        client = redis.Redis.from_url(broker)
        rates: dict[str, list[float]] = {"bench.off": [], "bench.on": []}
        cpus: dict[str, list[float]] = {"bench.off": [], "bench.on": []}
        for _ in range(args.rounds):
            for task in rates:
                rate, cpu = run_round(client, env, task, args.tasks)
                rates[task].append(rate)
                cpus[task].append(cpu)
        plain, integrated = tracer_cost(url)
    # Each round's pair ran back to back: the median of their ratios cancels the drift of
    # a shared machine's load better than a ratio of medians.
    paired = [on / off for on, off in zip(rates["bench.on"], rates["bench.off"], strict=True)]
    cpu_paired = [off / on for on, off in zip(cpus["bench.on"], cpus["bench.off"], strict=True)]
    cpu_off = statistics.median(cpus["bench.off"])
    print(f"{args.tasks} trivial tasks, one solo worker, Redis broker, {args.rounds} rounds")
    for label, task in (("off:", "bench.off"), ("on: ", "bench.on")):
        runs = [round(r) for r in rates[task]]
        rate, cpu = statistics.median(rates[task]), statistics.median(cpus[task])
        print(f"integration {label} {rate:7.0f} tasks/s  (runs {runs})  "
              f"worker CPU {cpu * 1e6:5.0f} us/task")  # fmt: skip
    print(f"ratio: {statistics.median(paired):.2f}x, median of the rounds' pairs "
          f"{[round(r, 2) for r in paired]} (target >= 0.97x)")  # fmt: skip
    print(f"worker CPU ratio (off/on per task): {statistics.median(cpu_paired):.2f}x")
    overhead = integrated - plain
    print(f"in-process, Celery's tracer alone: plain {plain * 1e6:.1f} us/task, with the "
          f"integration {integrated * 1e6:.1f} us/task (+{overhead * 1e6:.1f} us)")  # fmt: skip
    print(f"expected ratio from that cost and the worker's CPU per task off: "
          f"{cpu_off / (cpu_off + overhead):.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
