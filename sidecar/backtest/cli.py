"""`task-sidecar simulate`: backtest a candidate policy on an exported event history.

    task-sidecar simulate --events HISTORY.jsonl --policies CANDIDATE.yaml
                          [--baseline BASELINE.yaml] [--output json|table]
                          [--task GLOB] [--failure-type TYPE] [--seed N]

Exit 0 with the result; 1 when the history or a policy is unusable (the message names the
line or the YAML path and line).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import IO

import msgspec

from .. import settings
from ..policy import PolicyError, load_policy
from .history import HistoryError, parse
from .report import report, table
from .simulate import cyclic_gc_paused, simulate


def default_baseline() -> str:
    """The policy in force: TASK_SIDECAR_POLICIES, else policies.yaml (as `serve` does)."""
    return os.environ.get("TASK_SIDECAR_POLICIES") or settings.default_policies()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate",
        help="backtest a policy on recorded history (task-sidecar events export)",
        description="Replay an exported hook-event history under the baseline policy and "
        "a candidate, on a virtual clock, and compare what each would have done.",
    )
    parser.add_argument(
        "--events", required=True, metavar="HISTORY.jsonl", help="JSON Lines history, - for stdin"
    )
    parser.add_argument(
        "--policies", required=True, metavar="CANDIDATE.yaml", help="the policy to try"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="BASELINE.yaml",
        help="the policy the history was recorded under "
        "(default: TASK_SIDECAR_POLICIES, else policies.yaml)",
    )
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument("--task", default=None, metavar="GLOB", help="only tasks named so")
    parser.add_argument("--failure-type", default=None, metavar="TYPE", help="only this type")
    parser.add_argument(
        "--seed", type=int, default=0, help="for jitter draws the history does not hold"
    )
    parser.set_defaults(run=run)
    return parser


def register(commands: argparse._SubParsersAction) -> None:
    """As the command line's other groups (sidecar/cli/root.py)."""
    add_parser(commands)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(stream, start=1)


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    baseline_path = args.baseline or default_baseline()
    try:
        baseline = load_policy(baseline_path)
        candidate = load_policy(args.policies)
    except PolicyError as exc:
        print(f"task-sidecar simulate: {exc}", file=err)
        return 1
    if args.failure_type is not None and args.failure_type not in baseline.failure_types:
        known = ", ".join(sorted(baseline.failure_types))
        print(
            f"task-sidecar simulate: --failure-type: unknown failure type "
            f"{args.failure_type!r} (known: {known})",
            file=err,
        )
        return 1
    name = "stdin" if args.events == "-" else args.events
    with cyclic_gc_paused():
        try:
            if args.events == "-":
                history = parse(_lines(sys.stdin.buffer))
            else:
                with open(args.events, "rb") as stream:
                    history = parse(_lines(stream))
        except HistoryError as exc:
            print(f"task-sidecar simulate: {name}: {exc}", file=err)
            return 1
        except OSError as exc:
            print(f"task-sidecar simulate: {name}: {exc.strerror or exc}", file=err)
            return 1
        result = simulate(history, baseline, candidate, seed=args.seed)
        doc = report(result, task=args.task, failure_type=args.failure_type)
    out = sys.stdout
    if args.output == "json":
        out.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        out.write(f"baseline {baseline_path}, candidate {args.policies}\n\n")
        out.write(table(doc))
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sidecar.backtest.cli …`, the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="task-sidecar")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
