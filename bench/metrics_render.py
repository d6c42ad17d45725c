"""GET /metrics vs generate_latest on the same registry, at 500 tasks × 15 failure types.

    .venv/bin/python bench/metrics_render.py [--rounds 20]

Fills a sidecar's registry with the series a large fleet produces (500 task names, each
failing with each of the 15 failure types; every counter and histogram touched), then
times a scrape through the HTTP endpoint against `generate_latest` called directly on
the same registry, alternating. Prints the median of each and the ratio. Target ≤ 1.2×.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from sidecar.http import create_app  # noqa: E402
from sidecar.http.keys import METRICS  # noqa: E402
from sidecar.policy import load_policy  # noqa: E402
from sidecar.settings import Settings  # noqa: E402


async def main(rounds: int) -> None:
    registry = CollectorRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            policies=str(ROOT / "policies.yaml"),
            data_dir=Path(tmp),
            reload_interval=0,
            poll_interval=3600,
        )
        app = create_app(settings, registry=registry)
        m = app[METRICS]
        failure_types = list(load_policy(ROOT / "policies.yaml").failure_types)
        for t in range(500):
            task = f"app.tasks.task_{t}"
            for ft in failure_types:
                m._at(m.failures, task, ft, "AUTO_RETRY").inc()
                m._at(m.retry_outcomes, task, ft, "failure").inc()
            for outcome in ("success", "failure", "retry", "dead_letter"):
                m._at(m.task_events, task, outcome).inc()
        series = sum(len(f.samples) for f in registry.collect())
        async with TestClient(TestServer(app)) as client:
            http, direct = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                body = await (await client.get("/metrics")).read()
                http.append(time.perf_counter() - started)
                started = time.perf_counter()
                generate_latest(registry)
                direct.append(time.perf_counter() - started)
    h, d = statistics.median(http), statistics.median(direct)
    print(f"{series:,} samples, {len(body) / 1e6:.1f} MB exposition")
    print(f"generate_latest: {d * 1000:7.1f} ms")
    print(f"GET /metrics:    {h * 1000:7.1f} ms")
    print(f"ratio: {h / d:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(parser.parse_args().rounds))
