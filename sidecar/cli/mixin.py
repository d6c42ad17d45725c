"""`task-sidecar mixin render --config F --out DIR`: the Prometheus rules and Grafana
dashboards for the user's own labels, selectors, URLs and thresholds (docs/observability.md)."""

from __future__ import annotations

import argparse

from . import output
from .output import Exit


def register(commands: argparse._SubParsersAction) -> None:
    mixin = commands.add_parser(
        "mixin",
        help="rules and dashboards for your labels",
        description="Write the alert rules and dashboards, configured for your setup.",
    )
    actions = mixin.add_subparsers(dest="mixin_command", required=True, metavar="ACTION")
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
