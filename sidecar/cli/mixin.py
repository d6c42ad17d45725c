"""`task-sidecar mixin render --config F --out DIR`: the Prometheus rules and Grafana
dashboards for the user's own labels, selectors, URLs and thresholds (docs/observability.md)."""

from __future__ import annotations

import argparse

from . import args, output
from .output import Exit


def register(commands: argparse._SubParsersAction) -> None:
    actions = args.actions(
        commands,
        "mixin",
        "rules and dashboards for your labels",
        "Write the alert rules and dashboards, configured for your setup.",
    )
    p = actions.add_parser("render", help="write the rules and dashboards for a config")
    p.add_argument("--config", help="YAML config merged over the defaults")
    p.add_argument("--out", required=True, help="directory to write into")
    p.set_defaults(run=render)


def render(ns: argparse.Namespace) -> int:
    from ..mixin import ConfigError, render

    try:
        written = render(ns.config, ns.out)
    except ConfigError as exc:
        output.error(f"mixin render: {exc}")
        return Exit.FAILED
    except OSError as exc:
        output.error(f"mixin render: cannot write {ns.out}: {exc.strerror or exc}")
        return Exit.USAGE
    for path in written:
        print(path)
    return Exit.OK
