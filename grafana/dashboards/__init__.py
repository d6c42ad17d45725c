"""Dashboard generators (grafana-foundation-sdk): the dashboards' skeletons and their
committed output for the default mixin config.

    python -m grafana.dashboards           regenerate sidecar/mixin/skeletons/*.json and
                                           grafana/dashboards/json/*.json
    python -m grafana.dashboards --check   exit 1 if a committed file differs

`common` holds the house defaults, `queries` every PromQL query as a named function, and
one module per dashboard arranges panels. Values of the mixin config are «holes» here
(sidecar/mixin/skeleton.py); `task-sidecar mixin render` and the Helm chart fill them, so
neither needs the SDK. This package is the project's development tool, not in the wheel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from sidecar.mixin import SKELETONS, dashboard_json, load_config
from sidecar.mixin.skeleton import fill

from . import explorer, failures, idempotency, overview, retries

OUTPUT_DIR = Path(__file__).with_name("json")

# file name -> generator; the file name is the dashboard's uid
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "task-sidecar-overview": overview.build,
    "task-sidecar-failures": failures.build,
    "task-sidecar-retries": retries.build,
    "task-sidecar-idempotency": idempotency.build,
    "task-sidecar-dlq-explorer": explorer.build,
}
# Those that read PostgreSQL (its datasource variable `postgres`), not Prometheus.
SQL_DASHBOARDS = frozenset({"task-sidecar-dlq-explorer"})


def skeleton(build: Callable[[], Dashboard]) -> str:
    """The dashboard with its holes, as deterministic JSON."""
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def render(build: Callable[[], Dashboard]) -> str:
    """The dashboard for the default mixin config (the committed JSON)."""
    return dashboard_json(fill(json.loads(skeleton(build)), load_config()))


def render_all() -> dict[Path, str]:
    """{path: text} of every generated file: skeletons and default dashboards."""
    out = {}
    for name, build in DASHBOARDS.items():
        out[SKELETONS / f"{name}.json"] = skeleton(build)
        out[OUTPUT_DIR / f"{name}.json"] = render(build)
    return out
