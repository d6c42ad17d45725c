"""`task-sidecar events export`: the hook-event history of a running sidecar as JSON
Lines, the input of `task-sidecar simulate` (docs/backtest.md)."""

from __future__ import annotations

import argparse
import sys

from . import api, output
from .api import Api
from .output import Exit


def register(commands: argparse._SubParsersAction) -> None:
    events = commands.add_parser(
        "events",
        help="the hook-event history of a running sidecar",
        description="Read the events a running sidecar answered (its history).",
    )
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    p = actions.add_parser("export", help="JSON Lines, oldest first (for `simulate`)")
    p.add_argument("--since", default="30d", help="unix seconds, ISO 8601 or an age (30d)")
    p.add_argument("--until", help="unix seconds, ISO 8601 or an age (default: now)")
    p.add_argument("-f", "--file", default="-", help="write to FILE (default: stdout)")
    api.add_arguments(p)
    p.set_defaults(run=api.command(export))


def export(client: Api, ns: argparse.Namespace) -> int:
    query = {"since": ns.since, "until": ns.until}
    data = client.request("GET", "/v1/events/export", query=query, raw=True)
    if ns.file == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return Exit.OK
    try:
        with open(ns.file, "wb") as out:
            out.write(data)
    except OSError as exc:
        output.error(f"cannot write {ns.file}: {exc.strerror or exc}")
        return Exit.USAGE
    lines = data.count(b"\n")
    output.hint(f"wrote {lines} events to {ns.file}")
    return Exit.OK
