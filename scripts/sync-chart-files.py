#!/usr/bin/env python3
"""Copy the generated monitoring files (and the default policies) into the Helm chart.

    scripts/sync-chart-files.py          write helm/task-sidecar/files/
    scripts/sync-chart-files.py --check  exit 1 listing every copy that differs (no writes)

The chart includes these copies with `.Files.Get`, so Helm never templates Prometheus' own
`{{ $labels }}`. Run it after `make alerting` / `make dashboards`; tests/test_helm.py fails
when a copy has drifted from its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "helm" / "task-sidecar" / "files"


def sources() -> dict[Path, Path]:
    """{copy inside the chart: source in the repository}."""
    pairs: dict[Path, Path] = {FILES / "policies.yaml": ROOT / "policies.yaml"}
    for rules in sorted((ROOT / "alerting").glob("*.rules.y*ml")):
        pairs[FILES / "rules" / rules.name] = rules
    pairs[FILES / "alertmanager.yml"] = ROOT / "alerting" / "alertmanager.yml"
    for dashboard in sorted((ROOT / "grafana" / "dashboards" / "json").glob("*.json")):
        pairs[FILES / "dashboards" / dashboard.name] = dashboard
    return pairs


def drift() -> list[str]:
    """Every copy that is missing, stale, or has no source any more."""
    pairs = sources()
    problems = [
        f"{copy.relative_to(ROOT)} differs from {source.relative_to(ROOT)}"
        for copy, source in pairs.items()
        if not copy.is_file() or copy.read_bytes() != source.read_bytes()
    ]
    for folder in ("rules", "dashboards"):
        for copy in sorted((FILES / folder).glob("*")):
            if copy not in pairs:
                problems.append(f"{copy.relative_to(ROOT)} has no source any more")
    return problems


def sync() -> None:
    pairs = sources()
    for folder in ("rules", "dashboards"):
        for copy in (FILES / folder).glob("*"):
            if copy not in pairs:
                copy.unlink()
    for copy, source in pairs.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for problem in problems:
            print(f"{problem}: run scripts/sync-chart-files.py", file=sys.stderr)
        return 1 if problems else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
