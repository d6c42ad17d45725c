"""A short soak (bench/soak.py for 15 s): a steady mix of hooks against a sidecar on real
Redis + PostgreSQL, with no error and no leak of memory, file descriptors or PostgreSQL
connections. The full run is `.venv/bin/python bench/soak.py` (10 minutes)."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def test_short_soak(redis_url, postgres_dsn):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--seconds", "15",
            "--warmup", "3",
            "--rate", "100",  # errors and leaks at a steady rate; capacity is bench/soak.py's
            "--report-every", "5",
            "--redis-url", redis_url,
            "--postgres-dsn", postgres_dsn,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert run.stdout.strip(), run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    print("\nsoak:", summary)
    assert run.returncode == 0, (summary, run.stderr)
    assert summary["errors"] == {}
    assert summary["leaks"] == []
    assert summary["ok"] == summary["sent"] > 0
