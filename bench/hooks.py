"""Failure-hook throughput of the sidecar vs a bare aiohttp JSON echo handler.

    .venv/bin/python bench/hooks.py [--seconds 8] [--connections 10] [--redis-url URL]

Load comes from wrk (Debian package `wrk`): one thread, 10 keep-alive connections, POSTing
the same transient-failure event (a deadlock: classified, backoff computed, breaker and
adaptive state updated, retried). Baseline and sidecar each run in their own process on
this machine, alternately, twice each; the figure is the ratio of requests/s. Target ≥ 0.6×.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import TOKEN, echo_server, sidecar

EVENT = {
    "task_id": "6f1c2d3e-0000-4a5b-9c8d-0123456789ab",
    "task_name": "billing.process_payment",
    "queue": "default",
    "attempt": 1,
    "exception": {
        "type": "DeadlockDetected",
        "module": "psycopg.errors",
        "mro": [
            "psycopg.errors.DeadlockDetected",
            "psycopg.errors.OperationalError",
            "psycopg.DatabaseError",
            "psycopg.Error",
            "builtins.Exception",
        ],
        "message": "deadlock detected",
        "traceback": "Traceback…\n" * 20,
    },
    "context": {"customer_tier": "enterprise", "queue_depth": 40},
    "args": [42],
    "kwargs": {"currency": "EUR"},
}


def wrk(url: str, seconds: int, connections: int, script: Path) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors[1]} failed responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(EVENT))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        )
        env = {"TASK_SIDECAR_REDIS_URL": args.redis_url} if args.redis_url else {}
        rates: dict[str, list[float]] = {"echo": [], "sidecar": []}
        for _ in range(2):
            with echo_server() as url:
                rates["echo"].append(
                    wrk(f"{url}/v1/hooks/failure", args.seconds, args.connections, script)
                )
            with sidecar(Path(tmp) / "data", **env) as url:
                rates["sidecar"].append(
                    wrk(f"{url}/v1/hooks/failure", args.seconds, args.connections, script)
                )
    echo, side = statistics.median(rates["echo"]), statistics.median(rates["sidecar"])
    state = "Redis" if args.redis_url else "in-process state"
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, sidecar on {state}")
    print(f"bare aiohttp echo: {echo:,.0f} req/s   (runs: {rates['echo']})")
    print(f"failure hook:      {side:,.0f} req/s   (runs: {rates['sidecar']})")
    print(f"ratio: {side / echo:.2f}x (target >= 0.6x)")


if __name__ == "__main__":
    main()
