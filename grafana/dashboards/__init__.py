"""Dashboard generators (grafana-foundation-sdk) and their committed JSON output.

    python -m grafana.dashboards           regenerate grafana/dashboards/json/*.json
    python -m grafana.dashboards --check   exit 1 if a committed file differs

`common` holds the house defaults, `queries` every PromQL query as a named function, and
one module per dashboard arranges panels.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from . import failures, idempotency, overview, retries

OUTPUT_DIR = Path(__file__).with_name("json")

# file name -> generator; the file name is the dashboard's uid
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "task-sidecar-overview": overview.build,
    "task-sidecar-failures": failures.build,
    "task-sidecar-retries": retries.build,
    "task-sidecar-idempotency": idempotency.build,
}


def render(build: Callable[[], Dashboard]) -> str:
    """Deterministic JSON (sorted keys, 2-space indent, final newline): a golden file."""
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def render_all() -> dict[Path, str]:
    return {OUTPUT_DIR / f"{name}.json": render(build) for name, build in DASHBOARDS.items()}
