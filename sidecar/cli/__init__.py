"""The `task-sidecar` command line: one entry point (`main`), one module per command group,
one output module.

    root        the parser, `main`, --version, --debug; error and exit-code handling
    server      serve, migrate
    check       check, explain (a policy file on its own)
    dlq         dlq list|show|retry|abandon|bulk-retry|export   (through the action API)
    admin       breakers, audit, trends, policies               (through the action API)
    schedules   schedules analyse
    completion  completion bash|zsh
    api         the HTTP client of the API commands
    args        argument types: times, durations, counts
    output      tables, JSON, errors and problems, exit codes, the progress bar

A new group is a module with `register(commands)`, listed in root.GROUPS.
"""

from .root import build_parser, main
from .server import cmd_migrate, cmd_serve

__all__ = ["build_parser", "cmd_migrate", "cmd_serve", "main"]
