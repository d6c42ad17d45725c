"""`task-sidecar check` and `explain`: the policy file on its own, no sidecar needed."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from typing import IO

import msgspec

from .. import settings
from ..policy import EMPTY, FailureEvent, PolicyError, decide, load_policy
from ..policy.events import decode_error_path
from . import output
from .output import Exit


def register(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="validate a policy file (exit 1 listing every problem)",
        description="Validate a policy file; every problem is listed with its YAML path and line.",
    )
    check.add_argument(
        "policies",
        nargs="?",
        default=None,
        metavar="POLICIES",
        help="the file (default: TASK_SIDECAR_POLICIES, ./policies.yaml, the packaged one)",
    )
    check.set_defaults(run=cmd_check)

    explain = commands.add_parser(
        "explain",
        help="dry-run decisions for failure events (JSON or JSON Lines)",
        description="Print the decision for each failure event, one JSON line per event.",
    )
    settings.add_arguments(explain, names=["policies"])
    explain.add_argument("--seed", type=int, default=None, help="seed the jitter (repeatable)")
    explain.add_argument("events", metavar="EVENTS", help="a file of events, or - for stdin")
    explain.set_defaults(run=cmd_explain)


def policies_file(given: str | None) -> str:
    return given or settings.value("policies")


def cmd_check(args: argparse.Namespace) -> int:
    path = policies_file(args.policies)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        output.problems(exc.source, exc.problems)
        return Exit.FAILED
    output.write(
        f"SUCCESS: {path}: {len(policy.failure_types)} failure types, "
        f"{len(policy.rules)} rules, {len(policy.retry_policies)} retry policies, "
        f"{len(policy.schedules)} schedules"
    )
    return Exit.OK


def _events(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """One JSON document, or JSON Lines: (line number, raw event) pairs."""
    data = stream.read()
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                yield number, line
    else:
        yield 1, data


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(policies_file(args.policies))
    except PolicyError as exc:
        output.problems(exc.source, exc.problems)
        return Exit.FAILED
    rng = random.Random(args.seed)
    encoder = msgspec.json.Encoder()
    failed = 0
    try:
        stream = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    except OSError as exc:
        output.error(f"cannot read {args.events}: {exc.strerror or exc}")
        return Exit.USAGE
    out = sys.stdout.buffer
    sys.stdout.flush()
    with stream:
        for number, raw in _events(stream):
            try:
                event = msgspec.json.decode(raw, type=FailureEvent)
            except msgspec.ValidationError as exc:
                path, message = decode_error_path(exc)
                error = {"line": number, "path": path, "message": message}
            except msgspec.DecodeError as exc:
                error = {"line": number, "path": "", "message": f"invalid JSON: {exc}"}
            else:
                outcome = decide(event, policy, EMPTY, time.time(), rng)
                out.write(encoder.encode(outcome.decision) + b"\n")
                continue
            failed += 1
            out.write(encoder.encode({"error": error}) + b"\n")
    out.flush()
    return Exit.FAILED if failed else Exit.OK
