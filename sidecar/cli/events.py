"""`task-sidecar events export`: the hook-event history of a running sidecar as JSON
Lines, the input of `task-sidecar simulate` (docs/backtest.md)."""

from __future__ import annotations

import argparse

from . import api, args, output
from .api import Api


def register(commands: argparse._SubParsersAction) -> None:
    actions = args.actions(
        commands,
        "events",
        "the hook-event history of a running sidecar",
        "Read the events a running sidecar answered (its history).",
    )
    p = actions.add_parser("export", help="JSON Lines, oldest first (for `simulate`)")
    p.add_argument("--since", default="30d", help="unix seconds, ISO 8601 or an age (30d)")
    p.add_argument("--until", help="unix seconds, ISO 8601 or an age (default: now)")
    p.add_argument("-f", "--file", default="-", help="write to FILE (default: stdout)")
    api.add_arguments(p)
    p.set_defaults(run=api.command(export))


def export(client: Api, ns: argparse.Namespace) -> int:
    query = {"since": ns.since, "until": ns.until}
    data = client.request("GET", "/v1/events/export", query=query, raw=True)
    lines = data.count(b"\n")
    return output.save(data, ns.file, f"wrote {lines} events to {ns.file}")
