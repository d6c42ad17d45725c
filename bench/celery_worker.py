"""Celery worker throughput for a trivial task with the integration on vs off.

    .venv/bin/python bench/celery_worker.py [--tasks 3000]

A real worker process (prefork pool off: `-P solo`, one process, as the baseline) on a
throw-away Redis broker, next to a sidecar on the embedded default. N tasks are queued
up front; the time from the worker taking the first to finishing the last is measured,
with the integration on (the start answered from the cached allowance, the success
batched) and off (`sidecar=False`), three rounds each, alternating. Prints tasks/s and
the ratio (target ≥ 0.97×), and the worker process's CPU time per task over the same
interval: the machine is shared, and CPU per task moves much less with its load than wall
time does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

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
    off, on = statistics.median(rates["bench.off"]), statistics.median(rates["bench.on"])
    cpu_off, cpu_on = statistics.median(cpus["bench.off"]), statistics.median(cpus["bench.on"])
    print(f"{args.tasks} trivial tasks, one solo worker, Redis broker, {args.rounds} rounds")
    rows = (("off:", "bench.off", off, cpu_off), ("on: ", "bench.on", on, cpu_on))
    for label, task, rate, cpu in rows:
        runs = [round(r) for r in rates[task]]
        print(f"integration {label} {rate:7.0f} tasks/s  (runs {runs})  "
              f"worker CPU {cpu * 1e6:5.0f} us/task")  # fmt: skip
    print(f"ratio: {on / off:.2f}x (target >= 0.97x)")
    print(f"worker CPU ratio (off/on per task): {cpu_off / cpu_on:.2f}x")


if __name__ == "__main__":
    main()
