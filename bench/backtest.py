"""`simulate` over a generated history of 1,000,000 events, against decide() alone.

    .venv/bin/python bench/backtest.py [--events 1000000] [--keep FILE]

Generates the history of a day of the canonical outage world (sidecar/backtest/synthetic.py:
three task kinds, a database outage and a 503-ing API every eight hours) under policy A,
decided by the pure replica (the service would take minutes to record a million events),
writes it to a file, then times what `task-sidecar simulate` does with it: read and validate
every line, build the outage model, replay under A (baseline) and B (candidate), summarise.
It then times decide() alone over the same failure events (parsed beforehand), the floor
any replay pays, and prints events/s and the ratio. Target: simulate under 60 s.
Absolute times are for this machine; it is shared, so the ratio is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.backtest import parse, report, simulate, table  # noqa: E402
from sidecar.backtest import synthetic as syn  # noqa: E402
from sidecar.backtest.simulate import cyclic_gc_paused  # noqa: E402
from sidecar.policy import EMPTY, FailureEvent, decide, parse_policy  # noqa: E402

POLICY = (ROOT / "policies.yaml").read_text()

# Policy A (recorded) retries the database quickly; B waits longer and retries more.
A_DATABASE = {
    "max_retries": 3,
    "initial_delay": "30s",
    "backoff": "exponential",
    "multiplier": 2.0,
    "max_delay": "5m",
    "jitter": "full",
}
B_DATABASE = {
    "max_retries": 5,
    "initial_delay": "5m",
    "backoff": "exponential",
    "multiplier": 2.0,
    "max_delay": "1h",
    "jitter": "full",
    "breaker": {"failures": 10, "open_for": "5m"},
}


def policy_text(database: dict) -> str:
    return syn.with_retry_policies(POLICY, {"TRANSIENT_DATABASE": database})


def world(hours: float, every: float) -> syn.World:
    base = syn.outage_world(hours=hours, every=every)
    outages = []
    for day in range(int(hours // 8) + 1):
        shift = day * 8 * 3600
        for outage in base.outages:
            outages.append(
                syn.Outage(outage.task, outage.start + shift, outage.end + shift, outage.failure)
            )
    return syn.World(base.start, hours, base.kinds, tuple(outages), seed=base.seed)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", default=None, help="write the history here and keep it")
    args = parser.parse_args()

    a, b = parse_policy(policy_text(A_DATABASE), "A"), parse_policy(policy_text(B_DATABASE), "B")
    # About 2.4 events per task in this world; 24 hours of arrivals.
    every = 24 * 3600 * 2.5 * 2.4 / args.events
    started = time.perf_counter()
    recording = asyncio.run(syn.record(world(24.0, every), syn.ReplicaHooks(a, seed=1)))
    lines = recording.lines[: args.events]  # an export cut at a moment: tasks in flight
    generated = time.perf_counter() - started
    path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp()) / "history.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    print(f"generated {len(lines)} events in {generated:.1f}s -> {path}")
    del recording

    # --- simulate, as the command does it -----------------------------------------------
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    with cyclic_gc_paused():  # as the command does
        with path.open("rb") as stream:
            history = parse(enumerate(stream, start=1))
        parsed = time.perf_counter()
        result = simulate(history, a, b)
        doc = report(result)
        text = table(doc)
    simulated, cpu = time.perf_counter() - started, time.process_time() - cpu
    read = parsed - started

    # --- decide() alone over the same failure events --------------------------------------
    failures = []
    decoder = msgspec.json.Decoder()
    for line in lines:
        doc_line = decoder.decode(line)
        if doc_line["kind"] == "failure":
            failures.append((doc_line["at"], msgspec.convert(doc_line["event"], FailureEvent)))
    rng = random.Random(1)
    started = time.perf_counter()
    for at, event in failures:
        decide(event, a, EMPTY, at, rng)
    alone = time.perf_counter() - started

    print(text)
    print(
        f"simulate: {len(lines)} events ({history.starts} start, {len(failures)} failure) "
        f"in {simulated:.1f}s ({cpu:.1f}s CPU) = {len(lines) / simulated:,.0f} events/s "
        f"(reading and validating {read:.1f}s, replaying twice {simulated - read:.1f}s)"
    )
    print(
        f"decide() alone over the {len(failures)} failure events: {alone:.2f}s; "
        f"simulate / decide() alone = {simulated / alone:.1f}x"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of the process (generation included): {peak:,.0f} MiB")
    verdict = "PASS" if simulated < 60 else "FAIL"
    print(f"{verdict}: simulate of {len(lines)} events took {simulated:.1f}s (target < 60 s)")
    if not args.keep:
        path.unlink()
        path.parent.rmdir()
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
