"""decide() of this working tree against an earlier commit's, in one process, interleaved.

    .venv/bin/python bench/decide_ab.py REV [--rounds 41]

bench/decide.py gives the ratio to json.loads for the tree it sits in; on a shared, busy
machine two such runs minutes apart differ by more than any change to the core. This
script loads REV's `sidecar/policy` (from `git archive`) beside the current one under
another name, builds each side's policy (its own default file, and that file grown to 500
rules as bench/decide.py grows it), and alternates the two on the same events, measuring
CPU time of this process. It prints the median ratio to json.loads of each side.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import decide as bench  # noqa: E402  (bench/decide.py: the events and the 500-rule policy)


def checkout(rev: str, into: Path) -> Path:
    """REV's sidecar/policy as the package `policy_<rev>` and its policies.yaml, in `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "sidecar/policy", "policies.yaml"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / f"policy_{rev.replace('-', '_').replace('.', '_')}"
    (into / "sidecar" / "policy").rename(package)
    return package


def side(package, text: str):
    events = [msgspec.json.decode(r, type=package.FailureEvent) for r in bench.events()]
    policy = package.parse_policy(text)
    rng, now = random.Random(1), time.time()

    def run(event):
        return package.decide(event, policy, package.EMPTY, now, rng)

    for event in events:  # warm the memo, as in a running sidecar
        run(event)
    return run, events, len(policy.rules)


def cost(fn, items, reps: int = 20) -> float:
    start = time.process_time_ns()
    for _ in range(reps):
        for item in items:
            fn(item)
    return (time.process_time_ns() - start) / (reps * len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with, e.g. HEAD~3 or main")
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    raw = bench.events()
    with tempfile.TemporaryDirectory(prefix="decide-ab-") as tmp:
        package_dir = checkout(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        old = importlib.import_module(package_dir.name)
        new = importlib.import_module("sidecar.policy")
        old_text = (Path(tmp) / "policies.yaml").read_text()
        new_text = (ROOT / "policies.yaml").read_text()
        grown = {}
        for label, root, text in (("old", Path(tmp), old_text), ("new", ROOT, new_text)):
            bench.ROOT = root
            grown[label] = bench.policy_with_extra_rules(500 - text.count("  - name: "))
        bench.ROOT = ROOT
        print(f"{args.rev} against the working tree; median ratio to json.loads, CPU time")
        print(f"{'policy':<10}{'rules':>12}{args.rev:>14}{'now':>10}")
        for label, old_policy, new_policy in (
            ("default", old_text, new_text),
            ("500 rules", grown["old"], grown["new"]),
        ):
            a, a_events, a_rules = side(old, old_policy)
            b, b_events, b_rules = side(new, new_policy)
            ratios_a, ratios_b = [], []
            for _ in range(args.rounds):
                ratios_a.append(cost(a, a_events) / cost(json.loads, raw))
                ratios_b.append(cost(b, b_events) / cost(json.loads, raw))
            print(
                f"{label:<10}{f'{a_rules} / {b_rules}':>12}"
                f"{statistics.median(ratios_a):>13.2f}×{statistics.median(ratios_b):>9.2f}×"
            )


if __name__ == "__main__":
    main()
