"""The `task-sidecar` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import IO

import msgspec

from . import operator_cli, schedules_cli, settings
from .backtest.cli import add_parser as add_simulate_parser  # backtest branch; lead wires it
from .policy import EMPTY, FailureEvent, PolicyError, decide, load_policy
from .policy.events import decode_error_path


def default_policies() -> str:
    return os.environ.get("TASK_SIDECAR_POLICIES") or settings.default_policies()


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policies)
    except PolicyError as exc:
        print(f"FAILED: {exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"SUCCESS: {args.policies}: {len(policy.failure_types)} failure types, "
        f"{len(policy.rules)} rules, {len(policy.retry_policies)} retry policies, "
        f"{len(policy.schedules)} schedules"
    )
    return 0


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
        policy = load_policy(args.policies)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer
    failed = 0
    with sys.stdin.buffer if args.events == "-" else open(args.events, "rb") as stream:
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
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .http import create_app

    try:
        config = settings.from_sources(args)
        config.check()
    except settings.SettingsError as exc:
        print(f"task-sidecar: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("task_sidecar")
    try:
        app = create_app(config)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not config.auth_enabled:
        log.warning(
            "no tokens configured: serving without authentication on loopback %s only",
            config.host,
        )
    stores = "PostgreSQL" if config.postgres_dsn else f"SQLite in {config.data_dir}"
    state = "Redis" if config.redis_url else "in-process state"
    log.info(
        "task-sidecar on http://%s:%d (%s, %s, policies %s)",
        config.host,
        config.port,
        stores,
        state,
        config.policies,
    )
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        shutdown_timeout=config.shutdown_grace,
        access_log=None,
        print=None,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store.base import StoreUnavailable
    from .store.migrations import migrate

    dsn = args.postgres_dsn or os.environ.get("TASK_SIDECAR_POSTGRES_DSN")
    if not dsn:
        print(
            "task-sidecar migrate: set --postgres-dsn or TASK_SIDECAR_POSTGRES_DSN", file=sys.stderr
        )
        return 2
    try:
        applied = asyncio.run(migrate(dsn))
    except StoreUnavailable as exc:
        print(f"task-sidecar migrate: {exc}", file=sys.stderr)
        return 1
    print(f"applied migrations {applied}" if applied else "the schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task-sidecar",
        description="Classifies background-task failures and tells workers what to do next.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a policy file (exit 1 listing errors)")
    check.add_argument("policies", nargs="?", default=default_policies(), metavar="POLICIES")
    check.set_defaults(run=cmd_check)

    explain = commands.add_parser(
        "explain", help="dry-run decisions for failure events (JSON or JSON Lines)"
    )
    explain.add_argument("--policies", default=default_policies(), metavar="FILE")
    explain.add_argument("--seed", type=int, default=None, help="seed the jitter (repeatable)")
    explain.add_argument("events", metavar="EVENTS", help="a file of events, or - for stdin")
    explain.set_defaults(run=cmd_explain)

    serve = commands.add_parser(
        "serve", help="run the sidecar (embedded stores unless URLs are set)"
    )
    settings.add_arguments(serve)
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply PostgreSQL migrations")
    migrate.add_argument("--postgres-dsn", default=None, help="[TASK_SIDECAR_POSTGRES_DSN]")
    migrate.set_defaults(run=cmd_migrate)

    operator_cli.add_parsers(commands)
    schedules_cli.add_parser(commands)
    add_simulate_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FileNotFoundError as exc:
        print(f"task-sidecar: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
