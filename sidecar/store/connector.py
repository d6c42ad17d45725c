"""The connector port: what the SQL store needs of a database, and the SQL files it runs.

`SqlStore` (sqlstore.py) holds every DLQ, audit, event and claim operation once; a
connector gives it a dialect's named queries and runs them. Two adapters: `sqlite.py`
(the embedded default) and `postgres.py`. An adapter maps its driver's errors to ours —
`StoreUnavailable` for a backend that does not answer, `StoreRefused` for data it will
never take — so nothing above the store knows which database is underneath.

The SQL lives in `sql/<dialect>/`: `queries.sql` (the same `-- name: x` sections in both
dialects) and numbered migrations `NNNN_what.sql`, applied in order and recorded in
`schema_migrations`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cache
from importlib.resources import files
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Row = dict[str, Any]
Params = Mapping[str, Any]

_MIGRATION_FILE = re.compile(r"(\d+)_\w+\.sql")
_QUERY_NAME = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


class Session(Protocol):
    """Statements on one connection; inside `Connector.transaction()`, one transaction."""

    async def fetch(
        self, sql: str, params: Params | None = None, decode: Callable[[Row], T] | None = None
    ) -> list[Any]:
        """The rows, each passed through `decode` where the rows are read (the SQLite
        adapter's thread: decoding a page of tracebacks is real work)."""

    async def execute(self, sql: str, params: Params | None = None) -> int:
        """The statement's row count."""

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        """One statement for many parameter sets, in one round trip where the driver can
        (psycopg pipelines them) and one commit."""


class Connector(Session, Protocol):
    name: str  # the backend's name in metrics and errors: "sqlite" | "postgres"
    queries: Mapping[str, str]  # the dialect's named queries

    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """A transaction that holds the write lock (SQLite) or the rows it locks
        (PostgreSQL) until it ends; committed on exit, rolled back on an exception."""

    async def open(self) -> None:
        """Connect. The SQLite adapter also migrates (an embedded file is always current);
        PostgreSQL's migrations run on their own (`migrate()`, `task-sidecar migrate`)."""

    async def migrate(self) -> list[int]:
        """Apply the pending numbered files in order; the versions applied now."""

    async def close(self) -> None: ...


def sql_text(dialect: str, filename: str) -> str:
    return (files("sidecar.store") / "sql" / dialect / filename).read_text(encoding="utf-8")


@cache
def named_queries(dialect: str) -> dict[str, str]:
    """The `-- name: x` sections of a dialect's queries.sql, as {name: SQL}. The section
    `dlq_record_columns` stands where a query says `{dlq_record_columns}`: one column list
    serves every SELECT of records."""
    parts = _QUERY_NAME.split(sql_text(dialect, "queries.sql"))
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    columns = "\n".join(
        line for line in queries["dlq_record_columns"].splitlines() if not line.startswith("--")
    )
    return {name: text.replace("{dlq_record_columns}", columns) for name, text in queries.items()}


def migration_files(dialect: str) -> list[tuple[int, str]]:
    """(version, file name) of every numbered file of a dialect, in version order."""
    found = sorted(
        (int(match[1]), entry.name)
        for entry in (files("sidecar.store") / "sql" / dialect).iterdir()
        if (match := _MIGRATION_FILE.fullmatch(entry.name))
    )
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {dialect} migration files share a version: {found}")
    return found
