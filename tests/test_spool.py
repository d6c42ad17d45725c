"""The DLQ spool on its own: a real PostgreSQL that answers, and one that does not (a
closed port), with the spool file on disk."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import msgspec
import psycopg
import pytest

from sidecar.records import AuditEntry, DlqRecord, HookEvent
from sidecar.store.postgres import migrate
from sidecar.store.spool import SPOOL_FILE, SpoolingDlq, SpoolWriteFailed, _Audit, _Put
from sidecar.store.sqlstore import SqlStore, postgres_store
from tests.services import free_port


def record(task: str, i: int) -> DlqRecord:
    now = time.time()
    return DlqRecord(
        id=str(uuid.uuid4()), task_id=f"{task}-{i}", task_name=task, queue="default",
        args=[i], kwargs={"k": i}, exception={"type": "ValueError", "message": str(i)},
        context={}, failure_type="permanent", category="input", remediation="fix",
        confidence=0.9, rule="r", priority="normal", priority_value=5,
        target_queue="default", attempts=0, created_at=now, updated_at=now,
    )  # fmt: skip


async def down_store() -> SqlStore:
    store = postgres_store(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=0.5)
    await store.db.open(wait=False)
    return store


async def up_store(dsn: str) -> SqlStore:
    await migrate(dsn)
    store = postgres_store(dsn)
    await store.open()
    return store


def rows(dsn: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def run():
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


class TestSpool:
    def test_writes_spooled_while_down_are_replayed_in_order_once(
        self, run, postgres_dsn, tmp_path
    ):
        task = f"spool.order_{uuid.uuid4().hex[:8]}"
        first, again = record(task, 1), record(task, 2)

        async def scenario() -> None:
            spool = SpoolingDlq(await down_store(), tmp_path, write_timeout=1)
            await spool.put(first)
            # A retry from the DLQ that failed again, spooled: the record is back to pending
            # with the new failure once replayed.
            changed = msgspec.structs.replace(first, attempts=3)
            assert await spool.failed_again(changed) is True
            await spool.put(again)
            await spool.audit(AuditEntry(at=time.time(), actor="t", action="retry"))
            event = HookEvent(at=time.time(), kind="success", task_name=task, event=None)
            await spool.record_events([event])
            assert spool.pending == 5
            await spool.replay()  # still down: nothing moves
            assert spool.pending == 5
            await spool.inner.close()
            spool.inner = await up_store(postgres_dsn)
            await spool.replay()
            assert spool.pending == 0
            assert (tmp_path / SPOOL_FILE).stat().st_size == 0
            await spool.put(record(task, 3))  # straight to the store again
            assert spool.pending == 0
            await spool.close()

        run(scenario())
        stored = rows(postgres_dsn, "SELECT task_id FROM dlq_records WHERE task_name = %s", task)
        assert sorted(stored) == [(f"{task}-1",), (f"{task}-2",), (f"{task}-3",)]

    def test_a_replay_of_writes_that_had_committed_stores_nothing_twice(
        self, run, postgres_dsn, tmp_path
    ):
        task = f"spool.twice_{uuid.uuid4().hex[:8]}"
        entry = AuditEntry(at=time.time(), actor="t", action=f"twice-{task}")
        rec = record(task, 1)

        async def scenario() -> None:
            store = await up_store(postgres_dsn)
            # The first writes committed, but the answers were lost: spooled as well.
            await store.put(rec)
            await store.audit(entry, key="k-" + task)
            spool = SpoolingDlq(store, tmp_path)
            await spool._spool(_Put(rec))
            await spool._spool(_Audit(entry, "k-" + task))
            await spool.replay()
            assert spool.pending == 0
            await spool.close()

        run(scenario())
        assert len(rows(postgres_dsn, "SELECT 1 FROM dlq_records WHERE task_name = %s", task)) == 1
        assert (
            len(rows(postgres_dsn, "SELECT 1 FROM audit_log WHERE action = %s", entry.action)) == 1
        )

    def test_a_torn_last_line_is_dropped_and_the_rest_replayed(self, run, postgres_dsn, tmp_path):
        task = f"spool.torn_{uuid.uuid4().hex[:8]}"

        async def spool_two() -> None:
            spool = SpoolingDlq(await down_store(), tmp_path, write_timeout=1)
            await spool.put(record(task, 1))
            await spool.put(record(task, 2))
            await spool.close()

        run(spool_two())
        path = tmp_path / SPOOL_FILE
        path.write_bytes(path.read_bytes() + b'{"op":"put","rec')  # killed mid-write

        async def restart() -> None:
            spool = SpoolingDlq(await up_store(postgres_dsn), tmp_path)
            assert spool.pending == 2
            await spool.replay()
            assert spool.pending == 0
            await spool.close()

        run(restart())
        assert len(rows(postgres_dsn, "SELECT 1 FROM dlq_records WHERE task_name = %s", task)) == 2

    def test_a_full_spool_refuses_whole_lines_and_counts_them(self, run, tmp_path: Path):
        task = f"spool.full_{uuid.uuid4().hex[:8]}"

        async def scenario() -> None:
            spool = SpoolingDlq(await down_store(), tmp_path, max_bytes=3000, write_timeout=1)
            taken = 0
            for i in range(10):
                try:
                    await spool.put(record(task, i))
                    taken += 1
                except SpoolWriteFailed:
                    pass
            assert 0 < taken < 10
            assert spool.write_failures == 10 - taken
            assert spool.pending == taken
            data = (tmp_path / SPOOL_FILE).read_bytes()
            assert data.count(b"\n") == taken
            assert data.endswith(b"\n")
            await spool.close()

        run(scenario())


def test_the_spool_offers_every_operation_of_the_dlq_port():
    """The spool stands where the store would: a port method it lacks would fail only
    when first called (a bulk retry that cannot list its records)."""
    from sidecar.store.ports import DlqStore

    operations = {name for name in vars(DlqStore) if not name.startswith("_")} - {"name"}
    assert operations, "the port lists its operations"
    assert {name for name in operations if not callable(getattr(SpoolingDlq, name, None))} == set()
