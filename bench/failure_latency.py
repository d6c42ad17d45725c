"""What a failure decision costs a worker: asking the sidecar vs the local fallback.

    .venv/bin/python bench/failure_latency.py [--count 2000]

The same client call, `SidecarClient.failure(...)` with a real exception, measured
sequentially against a sidecar on the embedded default, and with the sidecar away (the
client decides locally with the same core and policy file). Prints both medians and the
ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from _servers import TOKEN, free_port, sidecar  # noqa: E402

from sidecar.client import SidecarClient  # noqa: E402


class DeadlockDetected(Exception):
    pass


def median_call(client: SidecarClient, count: int) -> float:
    try:
        raise DeadlockDetected("deadlock detected")
    except DeadlockDetected as exc:
        error = exc
    samples = []
    for i in range(count):
        started = time.perf_counter()
        answer = client.failure(f"t{i}", "billing.charge", error, attempt=1)
        samples.append(time.perf_counter() - started)
        assert answer["action"] == "retry"
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    policies = str(ROOT.parent / "policies.yaml")
    with tempfile.TemporaryDirectory() as tmp, sidecar(Path(tmp) / "data") as url:
        remote = SidecarClient(url, TOKEN, policies=policies)
        # Nobody listens on that port: every call falls back (after the first, without
        # even trying, until the retry interval passes).
        local = SidecarClient(
            f"http://127.0.0.1:{free_port()}", TOKEN, policies=policies, retry_interval=3600
        )
        asked, fallback = [], []
        for _ in range(3):
            asked.append(median_call(remote, args.count))
            fallback.append(median_call(local, args.count))
        remote.close()
        local.close()
    a, f = statistics.median(asked), statistics.median(fallback)
    print(f"{args.count} failures per round, 3 rounds, median per call")
    print(f"local fallback (sidecar away): {f * 1e6:7.0f} µs")
    print(f"asking the sidecar:            {a * 1e6:7.0f} µs")
    print(f"ratio: {a / f:.2f}x; added latency of asking: {(a - f) * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
