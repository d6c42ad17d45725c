"""`task-sidecar serve` and `migrate`: the service itself, and its PostgreSQL schema."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import logging
from datetime import UTC, datetime

from .. import settings
from ..policy import PolicyError
from ..settings import Settings, SettingsError
from . import output
from .output import Exit


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the sidecar (embedded stores unless URLs are set)",
        description="Run the sidecar. Every flag has a TASK_SIDECAR_* variable; a flag wins.",
    )
    settings.add_arguments(serve)
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply PostgreSQL migrations")
    settings.add_arguments(migrate, names=["postgres_dsn"])
    migrate.set_defaults(run=cmd_migrate)


class JsonLines(logging.Formatter):
    """One JSON object per log line (`--log-format json`), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(config: Settings) -> None:
    handler = logging.StreamHandler()
    if config.log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level, handlers=[handler], force=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ..http import create_app

    try:
        config = settings.from_sources(args)
        config.check()
    except SettingsError as exc:
        output.error(str(exc))
        return Exit.USAGE
    configure_logging(config)
    log = logging.getLogger("task_sidecar")
    try:
        app = create_app(config)
    except PolicyError as exc:
        output.problems(exc.source, exc.problems)
        return Exit.FAILED
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
    app.on_startup.append(_freeze_startup_objects)
    try:
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_grace,
            access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
            print=None,
        )
    except OSError as exc:
        if exc.filename:  # the data directory (or a file in it) cannot be made or opened
            output.error(f"cannot start: {exc.strerror or exc}: {exc.filename}")
        else:  # the address: in use, not ours, unknown host
            output.error(f"cannot listen on {config.host}:{config.port}: {_why(exc)}")
        return Exit.FAILED
    return Exit.OK


async def _freeze_startup_objects(app: object) -> None:
    """Modules, the policy and the stores live as long as the process: keep them out of
    the cycle collector's full passes, which otherwise scan them all, holding the loop."""
    gc.collect()
    gc.freeze()


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another sidecar?)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no such address on this machine"
    return exc.strerror or str(exc)


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..errors import StoreUnavailable
    from ..store.postgres import migrate

    try:
        dsn = settings.value("postgres_dsn", args)
    except SettingsError as exc:
        output.error(str(exc))
        return Exit.USAGE
    if not dsn:
        output.error("migrate: set --postgres-dsn or TASK_SIDECAR_POSTGRES_DSN")
        return Exit.USAGE
    try:
        applied = asyncio.run(migrate(dsn))
    except StoreUnavailable as exc:
        output.error(f"migrate: {exc}")
        return Exit.FAILED
    output.write(f"applied migrations {applied}" if applied else "the schema is up to date")
    return Exit.OK
