"""The `task-sidecar` command: the parser with every command group, and `main`, which turns
every failure into a message and an exit code (never a traceback, unless `--debug`)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib import metadata

from .. import __version__
from ..backtest import cli as simulate
from ..settings import SettingsError
from . import admin, check, completion, dlq, events, mixin, output, schedules, server
from .output import Exit

# Each group adds its commands: server (serve, migrate), check (check, explain), the API
# commands (dlq; breakers, audit, trends, policies), schedules, completion.
GROUPS = (server, check, dlq, events, simulate, admin, schedules, mixin, completion)


def version() -> str:
    try:
        return metadata.version("task-sidecar")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=output.PROG,
        description="Classifies background-task failures and tells workers what to do next.",
        epilog="Shell completion: source <(task-sidecar completion bash)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an unexpected error"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    parser.set_defaults(root_parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return int(code)
    except BrokenPipeError:
        _silence_stdout()
        return Exit.BROKEN_PIPE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except SettingsError as exc:
        output.error(str(exc))
        return Exit.USAGE
    except Exception as exc:
        if args is not None and getattr(args, "debug", False):
            traceback.print_exc()
        else:
            output.error(
                f"unexpected error: {type(exc).__name__}: {exc} "
                "(run with --debug for the traceback, and please report it)"
            )
        return Exit.SOFTWARE


def _silence_stdout() -> None:
    """The reader is gone: point stdout at /dev/null so the flush at exit cannot fail again
    (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass
