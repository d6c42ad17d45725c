"""libpq multi-host DSNs: a real primary and a real streaming standby (pg_basebackup -R),
and a DSN that lists the standby first with target_session_attrs=read-write."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from sidecar.store.postgres import migrate
from sidecar.store.sqlstore import postgres_store
from tests.distributed import StandbyService, start_standby
from tests.services import HOST, PG_DATABASE, PG_SUPERUSER, PostgresService, start_postgres

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess
from .test_store_contract import make_record

TOKEN = "multihost-hooks-0123456789"


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    with start_postgres(tmp_path_factory.mktemp("primary")) as service:
        yield service


@pytest.fixture(scope="module")
def standby(primary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandbyService]:
    with start_standby(primary, tmp_path_factory.mktemp("standby")) as service:
        yield service


def dsn(*servers: PostgresService, **params: str) -> str:
    """A key/value DSN naming the servers in this order."""
    parts = {
        "host": ",".join(HOST for _ in servers),
        "port": ",".join(str(server.port) for server in servers),
        "dbname": PG_DATABASE,
        "user": PG_SUPERUSER,
        **params,
    }
    return " ".join(f"{key}={value}" for key, value in parts.items())


def fetch_one(server: PostgresService, query: str, *params: object) -> tuple | None:
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        return conn.execute(query, params).fetchone()


def wait_for_row(server: PostgresService, query: str, *params: object) -> tuple:
    """The row once the standby has replayed it (and, before that, the table)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if (row := fetch_one(server, query, *params)) is not None:
                return row
        except psycopg.errors.UndefinedTable:
            pass  # the migration has not been replayed yet
        assert time.monotonic() < deadline, f"no row on {server!r} after 30s"
        time.sleep(0.05)  # polling with a deadline: replay is asynchronous


@pytest.fixture(scope="module")
def standby_first(primary, standby) -> str:
    return dsn(standby, primary, target_session_attrs="read-write")


def test_the_standby_is_read_only(standby):
    assert standby.in_recovery()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(migrate(dsn(standby)))


def uri(*servers: PostgresService) -> str:
    hosts = ",".join(f"{HOST}:{server.port}" for server in servers)
    return f"postgresql://{PG_SUPERUSER}@{hosts}/{PG_DATABASE}?target_session_attrs=read-write"


@pytest.mark.parametrize("form", ["key-value", "uri"])
def test_migrate_and_the_pool_skip_the_standby(primary, standby, standby_first, form):
    url = standby_first if form == "key-value" else uri(standby, primary)

    async def write() -> tuple[object, object]:
        await migrate(url)
        store = postgres_store(url, min_size=2, max_size=2)
        await store.open()
        try:
            record = make_record(task_id=f"multihost-{form}")
            await store.put(record)
            return await store.get(record.id), record
        finally:
            await store.close()

    found, record = asyncio.run(write())

    assert found == record
    query = "SELECT task_id FROM dlq_records WHERE id = %s"
    assert fetch_one(primary, query, record.id) == (f"multihost-{form}",)
    assert wait_for_row(standby, query, record.id) == (f"multihost-{form}",)  # streamed


def test_a_sidecar_dead_letters_through_a_dsn_listing_the_standby_first(
    primary, standby, standby_first, tmp_path
):
    event = {
        "task_id": "multihost-1",
        "task_name": "billing.process_payment",
        "attempt": 99,  # retries exhausted: dead-lettered
        "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
    }
    with SidecarProcess(
        tmp_path, TOKEN, policies=str(DEFAULT_POLICIES), postgres_dsn=standby_first
    ) as sidecar:
        status, answer = sidecar.call("/v1/hooks/failure", event)
        assert sidecar.stop() == 0, sidecar.output()

    assert status == 200, answer
    assert answer["action"] == "dead_letter"
    query = "SELECT task_id, status FROM dlq_records WHERE id = %s"
    # On the primary: the only server that takes writes, found through the standby-first DSN.
    assert fetch_one(primary, query, answer["dlq_id"]) == ("multihost-1", "pending")
    assert wait_for_row(standby, query, answer["dlq_id"]) == ("multihost-1", "pending")


def test_task_sidecar_migrate_takes_the_multi_host_dsn(primary, standby):
    with psycopg.connect(dsn(primary), autocommit=True) as admin:
        admin.execute("CREATE DATABASE migrate_cli")
    url = dsn(standby, primary, target_session_attrs="read-write").replace(
        f"dbname={PG_DATABASE}", "dbname=migrate_cli"
    )
    env = {**os.environ, "TASK_SIDECAR_POSTGRES_DSN": url}

    done = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("applied migrations [1, "), done.stdout
