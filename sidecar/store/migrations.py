"""The `sql` folder: numbered PostgreSQL migrations, named-query files, and `migrate()`.

Also home to the helpers the stores share: `named_queries()` (both stores), `parse_dsn()`
and `unavailable()` (driver error → `StoreUnavailable`, without secrets).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .base import StoreUnavailable

CONNECT_TIMEOUT = 5  # seconds (libpq rounds anything below 2 up to 2)

_MIGRATION_FILE = re.compile(r"(\d+)_\w+\.sql")
_QUERY_NAME = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


def sql_text(filename: str) -> str:
    return (files("sidecar.store") / "sql" / filename).read_text(encoding="utf-8")


@cache
def named_queries(filename: str) -> dict[str, str]:
    """The `-- name: x` sections of a file in the `sql` folder, as {name: SQL}."""
    parts = _QUERY_NAME.split(sql_text(filename))
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migration_files() -> list[tuple[int, str]]:
    """(version, file name) of every numbered file, in version order."""
    found = sorted(
        (int(match[1]), entry.name)
        for entry in (files("sidecar.store") / "sql").iterdir()
        if (match := _MIGRATION_FILE.fullmatch(entry.name))
    )
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version: {found}")
    return found


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parameters. A malformed DSN is refused here, without quoting it: libpq's
    parse error would, password and all."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ValueError("malformed PostgreSQL DSN") from None


def unavailable(exc: psycopg.Error) -> StoreUnavailable:
    """Our error for a driver error: its class and first line. libpq never prints the
    password, and the first line leaves out server DETAIL lines that can quote row values."""
    first_line = str(exc).strip().partition("\n")[0]
    return StoreUnavailable("postgres", f"{type(exc).__name__}: {first_line}"[:300])


async def migrate(dsn: str) -> list[int]:
    """Apply the pending numbered files in order, each in its own transaction.

    Returns the versions applied now (empty when the schema was current). Raises
    `StoreUnavailable` when the server cannot be reached or drops the connection. A file
    that fails rolls back alone and its psycopg error propagates, noted with the file name.
    """
    parse_dsn(dsn)
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="task-sidecar migrate",
        )
        async with conn:
            return await _apply_pending(conn)
    except psycopg.OperationalError as exc:
        raise unavailable(exc) from None


async def _apply_pending(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    queries = named_queries("queries.sql")
    await conn.execute(queries["migrations_lock"])
    await conn.execute(queries["migrations_table"])
    cur = await conn.execute(queries["migrations_applied"])
    done = {version for (version,) in await cur.fetchall()}
    applied = []
    for version, filename in migration_files():
        if version in done:
            continue
        try:
            async with conn.transaction():
                await conn.execute(sql_text(filename))
                await conn.execute(queries["migrations_record"], {"version": version})
        except psycopg.Error as exc:
            exc.add_note(f"while applying migration {filename}")
            raise
        applied.append(version)
    return applied
