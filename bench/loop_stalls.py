"""Does heavy work hold the event loop? /healthz latency under load vs idle.

    .venv/bin/python bench/loop_stalls.py [--novel 10000]

A thread asks `/healthz` of a sidecar (embedded stores) back to back, as a liveness probe
would, in three phases: idle (the baseline), while batches of failures with never-seen
exception types and task names arrive (each new name is classified and labelled), and
while a policy file near the 1 MiB limit (6,000 message rules) is reloaded. Prints the
probe's p50, p99 and slowest answer per phase, and each phase's p99 and slowest as a ratio
to idle. The issue's bound: no request holds the loop more than 50 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from _servers import TOKEN, sidecar  # noqa: E402

from tests.conftest import big_policies_file  # noqa: E402

OPERATOR = "bench-operator-token-0123456789"


class Probe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.samples = f"{url}/healthz", threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.samples.append(time.perf_counter() - began)
            time.sleep(0.002)  # a probe, not a load generator


def probed(url: str, work) -> list[float]:
    probe = Probe(url)
    probe.start()
    try:
        work()
    finally:
        probe.stop.set()
        probe.join()
    return probe.samples


def post(url: str, body: object, token: str) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def novel_failures(url: str, count: int) -> None:
    for start in range(0, count, 200):
        events = [
            {
                "type": "failure",
                "task_id": uuid.uuid4().hex,
                "task_name": f"novel.task_{i}",
                "exception": {"type": f"NovelError{i}", "module": f"vendor.lib{i}"},
            }
            for i in range(start, start + 200)
        ]
        post(f"{url}/v1/hooks/batch", events, TOKEN)


def figures(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)], ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--novel", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policies = Path(tmp) / "policies.yaml"
        shutil.copy(ROOT.parent / "policies.yaml", policies)
        env = {
            "TASK_SIDECAR_POLICIES": str(policies),
            "TASK_SIDECAR_OPERATOR_TOKENS": f"bench:{OPERATOR}",
            "TASK_SIDECAR_RELOAD_INTERVAL": "0",
        }
        with sidecar(Path(tmp) / "data", **env) as url:
            phases = {"idle": probed(url, lambda: time.sleep(5))}
            phases["novel names"] = probed(url, lambda: novel_failures(url, args.novel))
            big_policies_file(policies)
            phases["1 MiB reload"] = probed(
                url, lambda: post(f"{url}/v1/policies/reload", {}, OPERATOR)
            )
    _, idle_p99, idle_max = figures(phases["idle"])
    print(f"{'phase':14} {'probes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  vs idle")
    for name, samples in phases.items():
        p50, p99, slowest = figures(samples)
        print(
            f"{name:14} {len(samples):7} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {slowest * 1e3:8.1f}"
            f"  p99 x{p99 / idle_p99:.1f}, max x{slowest / idle_max:.1f}"
        )


if __name__ == "__main__":
    main()
