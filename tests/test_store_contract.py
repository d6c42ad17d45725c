"""One contract for every DlqStore/IdempotencyStore: the embedded SQLite twin and PostgreSQL.

Each test runs against both backends (real files, a real server). Concurrency tests fire
the calls together with asyncio.gather; the PostgreSQL store then has several pooled
connections, so the database itself arbitrates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sidecar.errors import StoreUnavailable
from sidecar.records import (
    STATUSES,
    AuditEntry,
    AuditPage,
    Claim,
    DlqFilter,
    DlqRecord,
    HookEvent,
    TrendBucket,
)
from sidecar.store.ports import NewClaim
from sidecar.store.postgres import migrate
from sidecar.store.redis import RedisStore
from sidecar.store.sqlstore import postgres_store, sqlite_store
from tests.services import free_port

T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]

NOW = 1764345600.25  # exactly representable, so equality checks are fair
TTL = 600.0
SECRET = "s3cr3t-pa55word"
OWNER = "owner-a"


@pytest.fixture
def run() -> Iterator[Run]:
    """Runs a coroutine on this test's own event loop (no pytest-asyncio here)."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def migrated_dsn(postgres_dsn: str, run: Run) -> str:
    run(migrate(postgres_dsn))  # after the first test, only a check that nothing is pending
    return postgres_dsn


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, run: Run, tmp_path) -> Iterator[Callable[[], Any]]:
    """Opens a store on this test's database; each call opens another one, with its own
    connections, as a second sidecar process would."""
    yield from store_opener(request.param, request, run, tmp_path)


def store_opener(
    kind: str, request: pytest.FixtureRequest, run: Run, tmp_path
) -> Iterator[Callable[[], Any]]:
    make: Callable[[], Any]
    if kind == "sqlite":
        path = tmp_path / "sidecar.db"

        def make() -> Any:
            return sqlite_store(path)
    else:
        dsn = request.getfixturevalue("migrated_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE dlq_records, idempotency_keys, audit_log, hook_events")

        def make() -> Any:
            return postgres_store(dsn, min_size=4, max_size=8)

    opened = []

    def open_one() -> Any:
        store = make()
        run(store.open())
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        run(store.close())


@pytest.fixture
def store(open_store: Callable[[], Any]) -> Any:
    return open_store()


async def concurrently(n: int, call: Callable[[], Awaitable[T]]) -> list[T]:
    return await asyncio.gather(*(call() for _ in range(n)))


def failure_event(at: float, task_name: str, failure_type: str) -> HookEvent:
    body = msgspec.Raw(msgspec.json.encode({"task_id": "t", "task_name": task_name}))
    decision = msgspec.Raw(b'{"action":"retry","delay_seconds":1.0}')
    return HookEvent(
        at=at,
        kind="failure",
        task_name=task_name,
        event=body,
        failure_type=failure_type,
        decision=decision,
    )


def make_record(**changes: Any) -> DlqRecord:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "task_id": "6f1c0b9e",
        "task_name": "billing.process_payment",
        "queue": "default",
        "args": [42],
        "kwargs": {"currency": "EUR"},
        "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
        "context": {"customer_tier": "enterprise"},
        "failure_type": "TRANSIENT_DATABASE",
        "category": "transient",
        "remediation": "AUTO_RETRY",
        "confidence": 0.95,
        "rule": "db-deadlock",
        "priority": "HIGH",
        "priority_value": 8,
        "target_queue": "high_priority",
        "attempts": 5,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return DlqRecord(**(fields | changes))


async def put_all(store: Any, records: list[DlqRecord]) -> None:
    for record in records:
        await store.put(record)


async def all_pages(store: Any, where: DlqFilter, limit: int) -> list[DlqRecord]:
    """Every page of a listing, following the cursors to the end."""
    records: list[DlqRecord] = []
    cursor = None
    while True:
        page = await store.list(where, limit, cursor)
        assert len(page.records) <= limit
        records += page.records
        if page.next_cursor is None:
            return records
        assert len(page.records) == limit  # only the last page may be short
        cursor = page.next_cursor


async def collect(records: AsyncIterator[DlqRecord]) -> list[DlqRecord]:
    return [record async for record in records]


async def id_batches(store: Any, where: DlqFilter, batch: int) -> list[str]:
    """`store.ids`, flattened, after checking that no batch is over `batch`."""
    batches = [ids async for ids in store.ids(where, batch=batch)]
    assert all(0 < len(b) <= batch for b in batches)
    return [i for b in batches for i in b]


def ids(records: list[DlqRecord]) -> list[str]:
    return [record.id for record in records]


def newest_first(records: list[DlqRecord]) -> list[str]:
    return ids(sorted(records, key=lambda r: (r.created_at, r.id), reverse=True))


def shuffled(records: list[DlqRecord]) -> list[DlqRecord]:
    """Inserted out of order, so an order that comes back is the query's, not the heap's."""
    return random.Random(7).sample(records, len(records))


def big_traceback(size: int = 200 * 1024) -> str:
    frame = '  File "/app/billing/ünïcode_módulo.py", line 17, in process_payment — 支払い ✓\n'
    body = frame * (size // len(frame) + 1)
    return ("Traceback (most recent call last):\n" + body)[:size]


class TestDlqRecords:
    """Records are stored losslessly, once, and change state only along the allowed edges."""

    def test_get_of_an_unknown_id_is_none(self, store, run):
        assert run(store.get("no-such-id")) is None

    def test_round_trip_is_lossless(self, store, run):
        record = make_record(
            task_name="rapports.générer_📈",
            queue=None,
            args=[
                "naïve café 日本語 مرحبا 🦄 e\u0301",
                [1, -(2**63), 2**70, 0.1, 1e-300, 1e16, 1.7976931348623157e308, 2.0, -0.0],
                {"nested": {"deeper": [{"deepest": None}, True, False, "", []]}},
            ],
            kwargs={"clé": {"列表": [1, {"x": [None]}]}, "empty": {}},
            exception={
                "type": "DeadlockDetected",
                "module": "psycopg.errors",
                "mro": ["psycopg.errors.DeadlockDetected", "builtins.Exception"],
                "message": "détecté «quoted» 'single' \"double\" \\ back\tslash \x00 nul",
                "traceback": big_traceback(),
                "errno": None,
                "http_status": 503,
            },
            context={"enqueued_at": 1764345000.5, "safety_critical": False, "user_id": "u-1"},
            status="retrying",
            dlq_retries=2,
            last_error="requeue failed: broker unreachable ☃",
            workflow={
                "chain": [{"task": "reports.send", "args": [1e16], "options": {}}],
                "parent_id": "a1",
                "root_id": "a0",
            },
        )
        run(store.put(record))

        stored = run(store.get(record.id))
        assert stored == record
        # Also the same types and key order (== takes 1e16 for 10**16 and -0.0 for 0).
        assert msgspec.json.encode(stored) == msgspec.json.encode(record)

    def test_a_record_without_workflow_keeps_none(self, store, run):
        record = make_record()
        run(store.put(record))
        assert run(store.get(record.id)).workflow is None
        [listed] = run(store.list(DlqFilter(), 10, None)).records
        assert listed.workflow is None

    def test_timestamps_keep_microseconds(self, store, run):
        record = make_record(created_at=1764345600.123456789, updated_at=1764345601.000001)
        run(store.put(record))

        stored = run(store.get(record.id))

        assert stored.created_at == pytest.approx(record.created_at, abs=1e-6)
        assert stored.updated_at == pytest.approx(record.updated_at, abs=1e-6)

    def test_put_is_idempotent_on_id(self, store, run):
        record = make_record()
        replay = make_record(id=record.id, attempts=99, status="resolved", task_name="other")

        run(store.put(record))
        run(store.put(replay))

        assert run(store.get(record.id)) == record

    def test_resolve_happens_once_under_concurrency(self, store, run):
        record = make_record(status="retrying")
        run(store.put(record))

        results = run(concurrently(20, lambda: store.resolve(record.id, record.task_id, NOW + 60)))

        assert results.count(True) == 1
        stored = run(store.get(record.id))
        assert (stored.status, stored.updated_at) == ("resolved", NOW + 60)

    @pytest.mark.parametrize(
        ("status", "resolved"),
        [
            ("pending", True),  # a retry the operator started by hand, reported back
            ("retrying", True),
            ("resolved", False),  # already done: a second success report changes nothing
            ("abandoned", False),  # an operator gave up on it; a late success does not revive
        ],
    )
    def test_resolve_follows_the_state_machine(self, store, run, status, resolved):
        record = make_record(status=status)
        run(store.put(record))

        assert run(store.resolve(record.id, record.task_id, NOW + 60)) is resolved
        expected = "resolved" if resolved else status
        assert run(store.get(record.id)).status == expected

    def test_resolve_of_an_unknown_id_is_false(self, store, run):
        assert run(store.resolve("no-such-id", "6f1c0b9e", NOW)) is False

    def test_resolve_and_failed_again_touch_only_their_own_tasks_record(self, store, run):
        """A success or failure hook naming another task's dlq_id changes nothing."""
        record = make_record(status="retrying", task_id="mine")
        run(store.put(record))

        assert run(store.resolve(record.id, "someone-else", NOW + 60)) is False
        intruder = make_record(id=record.id, task_id="someone-else", status="pending")
        assert run(store.failed_again(intruder)) is False
        assert run(store.get(record.id)) == record

    @pytest.mark.parametrize(
        ("status", "moved"),
        [
            ("retrying", True),  # the retry from the DLQ failed for good
            ("pending", True),  # a duplicate report of that failure
            ("resolved", False),
            ("abandoned", False),
        ],
    )
    def test_failed_again_follows_the_state_machine(self, store, run, status, moved):
        record = make_record(status=status, dlq_retries=1)
        run(store.put(record))
        failure = make_record(
            id=record.id,  # the retried run keeps the record's task id
            args=["not", "stored"],
            exception={"type": "OperationalError", "message": "server closed the connection"},
            failure_type="TRANSIENT_NETWORK",
            attempts=8,
            created_at=NOW + 300,
            updated_at=NOW + 300,
        )

        assert run(store.failed_again(failure)) is moved

        stored = run(store.get(record.id))
        if moved:
            # The new failure replaces the old one; the task itself and its history stay.
            expected = make_record(
                id=record.id,
                exception=failure.exception,
                failure_type="TRANSIENT_NETWORK",
                attempts=8,
                updated_at=NOW + 300,
                status="pending",
                dlq_retries=1,
            )
            assert stored == expected
        else:
            assert stored == record

    def test_failed_again_of_an_unknown_id_stores_nothing(self, store, run):
        record = make_record()

        assert run(store.failed_again(record)) is False
        assert run(store.get(record.id)) is None


# A 72-record DLQ for the filter table: every status, task and failure type combination,
# times a microsecond off whole seconds (the cursor must carry them exactly), and records
# i, i+24 and i+48 alike in every filtered column and time, so only the id orders them.
TASKS = ("billing.charge", "mail.send", "reports.build")
TYPES = ("TRANSIENT_DATABASE", "EXTERNAL_API_DOWN")
STEP = 10.000001


def filter_dataset() -> list[DlqRecord]:
    return [
        make_record(
            status=STATUSES[i % 4],
            task_name=TASKS[i % 3],
            failure_type=TYPES[(i // 12) % 2],
            created_at=NOW + (i % 24) * STEP,
        )
        for i in range(72)
    ]


def matches(record: DlqRecord, where: DlqFilter) -> bool:
    return (
        where.status in (None, record.status)
        and where.task_name in (None, record.task_name)
        and where.failure_type in (None, record.failure_type)
        and (where.since is None or record.created_at >= where.since)
        and (where.until is None or record.created_at < where.until)
    )


GARBAGE_CURSORS = [
    pytest.param("", id="empty"),
    pytest.param("garbage", id="not-json"),
    pytest.param("%%%%", id="not-base64"),
    pytest.param("é", id="not-ascii"),
    pytest.param(base64.urlsafe_b64encode(b'{"a": 1}').decode(), id="an-object"),
    pytest.param(base64.urlsafe_b64encode(b"[1764345600.25]").decode(), id="too-short"),
    pytest.param(base64.urlsafe_b64encode(b'["soon", "x"]').decode(), id="time-not-a-number"),
    pytest.param(base64.urlsafe_b64encode(b'[1e999, "x"]').decode(), id="time-infinite"),
    pytest.param(base64.urlsafe_b64encode(b'[1e300, "x"]').decode(), id="time-out-of-range"),
]


class TestDlqListing:
    """Listings are filtered, newest first, and page without gaps or repeats."""

    @pytest.mark.parametrize(
        "where",
        [
            pytest.param(DlqFilter(), id="everything"),
            pytest.param(DlqFilter(status="pending"), id="status"),
            pytest.param(DlqFilter(task_name="mail.send"), id="task_name"),
            pytest.param(DlqFilter(failure_type="EXTERNAL_API_DOWN"), id="failure_type"),
            # since is inclusive and until exclusive: both fall exactly on records' times.
            pytest.param(DlqFilter(since=NOW + 5 * STEP), id="since"),
            pytest.param(DlqFilter(until=NOW + 20 * STEP), id="until"),
            pytest.param(DlqFilter(since=NOW + 5 * STEP, until=NOW + 20 * STEP), id="window"),
            pytest.param(
                DlqFilter(
                    status="retrying",
                    task_name="reports.build",
                    failure_type="TRANSIENT_DATABASE",
                    since=NOW + 3 * STEP,
                    until=NOW + 22 * STEP,
                ),
                id="all-combined",
            ),
            pytest.param(DlqFilter(status="pending", task_name="mail.send"), id="two-combined"),
            pytest.param(DlqFilter(task_name="no.such.task"), id="nothing-matches"),
        ],
    )
    def test_list_count_and_iterate_agree_with_the_filter(self, store, run, where):
        records = filter_dataset()
        run(put_all(store, shuffled(records)))
        expected = newest_first([record for record in records if matches(record, where)])

        assert ids(run(all_pages(store, where, limit=7))) == expected
        assert run(store.count(where)) == len(expected)
        assert ids(run(collect(store.iterate(where, batch=5)))) == expected[::-1]
        assert run(id_batches(store, where, batch=5)) == expected[::-1]

    def test_a_page_holds_the_newest_records_in_full(self, store, run):
        records = [make_record(created_at=NOW + i) for i in range(10)]
        run(put_all(store, shuffled(records)))

        page = run(store.list(DlqFilter(), 3))

        assert page.records == records[:-4:-1]  # whole records, not just their ids
        assert page.next_cursor is not None

    def test_an_exactly_full_last_page_has_no_cursor(self, store, run):
        run(put_all(store, [make_record(created_at=NOW + i) for i in range(14)]))

        first = run(store.list(DlqFilter(), 7))
        second = run(store.list(DlqFilter(), 7, first.next_cursor))

        assert len(second.records) == 7
        assert second.next_cursor is None

    def test_an_empty_dlq_is_one_empty_page(self, store, run):
        page = run(store.list(DlqFilter(status="pending"), 50))

        assert (page.records, page.next_cursor) == ([], None)

    def test_records_arriving_between_pages_neither_repeat_nor_hide_older_ones(self, store, run):
        old = [make_record(created_at=NOW + i // 3) for i in range(30)]  # ties of three
        run(put_all(store, shuffled(old)))
        where = DlqFilter(status="pending")

        seen = []
        page = run(store.list(where, 8))
        while True:
            seen += page.records
            # New failures keep arriving while an operator pages through the listing.
            run(
                put_all(store, [make_record(created_at=NOW + 1000 + len(seen) + i) for i in (0, 1)])
            )
            if page.next_cursor is None:
                break
            page = run(store.list(where, 8, page.next_cursor))

        assert ids(seen) == newest_first(old)

    @pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
    def test_a_garbage_cursor_is_a_value_error(self, store, run, cursor):
        with pytest.raises(ValueError, match="invalid cursor"):
            run(store.list(DlqFilter(), 10, cursor))

    def test_an_audit_cursor_is_not_a_dlq_cursor(self, store, run):
        for i in range(3):
            run(store.audit(AuditEntry(at=NOW + i, actor="alice", action="retry")))
        cursor = run(store.audit_log(1)).next_cursor

        with pytest.raises(ValueError, match="invalid cursor"):
            run(store.list(DlqFilter(), 10, cursor))

    def test_an_unknown_status_is_a_value_error(self, store, run):
        with pytest.raises(ValueError, match="unknown DLQ status"):
            run(store.list(DlqFilter(status="lost"), 10))

    @pytest.mark.parametrize(
        "where",
        [DlqFilter(since=1e300), DlqFilter(until=-1e300), DlqFilter(since=float("nan"))],
        ids=["since-beyond-any-calendar", "until-before-any-calendar", "nan"],
    )
    def test_an_unusable_time_is_a_value_error(self, store, run, where):
        with pytest.raises(ValueError, match="not a usable unix time"):
            run(store.list(where, 10))
        with pytest.raises(ValueError, match="not a usable unix time"):
            run(store.count(where))

    @pytest.mark.parametrize("limit", [0, -1])
    def test_a_limit_below_one_is_a_value_error(self, store, run, limit):
        with pytest.raises(ValueError, match="limit"):
            run(store.list(DlqFilter(), limit))


def search_dataset() -> list[DlqRecord]:
    """30 records; the word `frobnicator` is only in the tracebacks of records 4, 11, 23."""
    records = []
    for i in range(30):
        traceback = f'Traceback (most recent call last):\n  File "/app/jobs/step_{i}.py"\n'
        if i in (4, 11, 23):
            traceback += "    Frobnicator.run()\n"
        records.append(
            make_record(
                task_id=f"task-{i:03d}-{'a' if i % 2 else 'b'}",
                exception={
                    "type": ("KeyError", "TimeoutError", "DeadlockDetected")[i % 3],
                    "message": f"quota 100% used_by tenant{i}" if i == 7 else f"failed #{i}",
                    "traceback": traceback,
                },
                dlq_retries=i % 4,
                status=STATUSES[i % 2],  # pending or retrying
                created_at=NOW + i,
            )
        )
    return records


def search_matches(record: DlqRecord, where: DlqFilter) -> bool:
    exc = record.exception
    text = " ".join(
        [record.task_id, exc["type"], exc.get("message", ""), exc.get("traceback") or ""]
    )
    return (
        matches(record, where)
        and where.task_id in (None, record.task_id)
        and where.exception_type in (None, exc["type"])
        and (where.min_dlq_retries is None or record.dlq_retries >= where.min_dlq_retries)
        and (where.q is None or where.q.lower() in text.lower())
    )


class TestDlqSearch:
    """DESIGN §3.3's task_id, exception_type, min_dlq_retries and q: one table, both stores."""

    @pytest.mark.parametrize(
        ("where", "expected_count"),
        [
            pytest.param(DlqFilter(q="frobnicator"), 3, id="q-a-word-in-three-tracebacks"),
            pytest.param(DlqFilter(q="FROBNIC"), 3, id="q-any-case-any-part"),
            pytest.param(DlqFilter(q="TimeoutErr"), 10, id="q-exception-type"),
            pytest.param(DlqFilter(q="task-017"), 1, id="q-task-id"),
            pytest.param(DlqFilter(q="100% used_by"), 1, id="q-like-wildcards-are-literal"),
            pytest.param(DlqFilter(q="100%_used"), 0, id="q-percent-is-not-a-wildcard"),
            pytest.param(DlqFilter(q='say "hi"'), 0, id="q-quotes-are-text"),
            pytest.param(DlqFilter(q="nowhere-to-be-found"), 0, id="q-nothing"),
            pytest.param(DlqFilter(task_id="task-005-a"), 1, id="task_id"),
            pytest.param(DlqFilter(task_id="task-005"), 0, id="task_id-is-exact"),
            pytest.param(DlqFilter(exception_type="KeyError"), 10, id="exception_type"),
            pytest.param(DlqFilter(min_dlq_retries=2), 14, id="min_dlq_retries"),
            pytest.param(DlqFilter(min_dlq_retries=0), 30, id="min_dlq_retries-zero"),
            pytest.param(
                DlqFilter(q="frobnicator", status="retrying", min_dlq_retries=3),
                2,
                id="q-status-retries",
            ),
            pytest.param(
                DlqFilter(q="step_", exception_type="DeadlockDetected", until=NOW + 20),
                6,
                id="q-type-until",
            ),
        ],
    )
    def test_each_filter_narrows_and_pages(self, store, run, where, expected_count):
        records = search_dataset()
        run(put_all(store, shuffled(records)))
        expected = newest_first([r for r in records if search_matches(r, where)])
        assert len(expected) == expected_count  # the table says what the dataset holds

        assert ids(run(all_pages(store, where, limit=2))) == expected
        assert run(store.count(where)) == len(expected)
        assert ids(run(collect(store.iterate(where, batch=2)))) == expected[::-1]
        assert run(id_batches(store, where, batch=2)) == expected[::-1]

    def test_search_follows_deletes_and_status_changes(self, store, run):
        records = search_dataset()
        run(put_all(store, records))
        run(store.transition([records[4].id], "abandoned", ("pending", "retrying"), NOW + 99))

        found = run(store.list(DlqFilter(q="frobnicator", status="abandoned"), 10)).records
        assert ids(found) == [records[4].id]
        assert run(store.count(DlqFilter(q="frobnicator"))) == 3

    def test_a_message_with_nul_is_kept_and_found(self, store, run):
        """PostgreSQL's text cannot hold NUL: the searched text drops it, the record keeps it."""
        exception = {"type": "ValueError", "message": "bad \x00 byte, a \\u0000 literal"}
        record = make_record(exception=exception)
        run(store.put(record))

        assert ids(run(store.list(DlqFilter(q="bad "), 10)).records) == [record.id]
        assert ids(run(store.list(DlqFilter(q="a \\u0000 lit"), 10)).records) == [record.id]
        assert run(store.get(record.id)).exception == exception

    def test_a_query_shorter_than_a_trigram_is_a_value_error(self, store, run):
        with pytest.raises(ValueError, match="at least 3 characters"):
            run(store.list(DlqFilter(q="ab"), 10))


class TestDlqIterate:
    """iterate() yields every match oldest first, reading one batch at a time."""

    def test_1200_records_in_batches_of_500_oldest_first(self, store, run):
        records = [make_record(created_at=NOW + i // 2) for i in range(1200)]  # ties of two
        run(put_all(store, shuffled(records)))

        seen = run(collect(store.iterate(DlqFilter(status="pending"), batch=500)))

        assert ids(seen) == newest_first(records)[::-1]

    def test_each_batch_is_read_when_needed(self, store, run):
        records = [make_record(created_at=NOW + i) for i in range(1200)]
        run(put_all(store, records))

        async def read_while_abandoning() -> list[DlqRecord]:
            iterator = store.iterate(DlqFilter(status="pending"), batch=500)
            seen = [await anext(iterator)]
            # Not yet read: records 600 on leave the filter before their batch is fetched.
            await store.transition(ids(records[600:]), "abandoned", ["pending"], NOW)
            return seen + [record async for record in iterator]

        assert ids(run(read_while_abandoning())) == ids(records[:600])


class TestDlqTransition:
    """transition() moves each matching record once and reports it as it was."""

    def test_moves_and_returns_the_records_as_they_were(self, store, run):
        record = make_record(last_error="broker unreachable")
        run(store.put(record))

        moved = run(
            store.transition([record.id], "retrying", ["pending"], NOW + 60, count_retry=True)
        )

        assert moved == [record]
        # No error given: the last one stays.
        assert run(store.get(record.id)) == msgspec.structs.replace(
            record, status="retrying", updated_at=NOW + 60, dlq_retries=1
        )

    def test_an_error_is_recorded_and_retries_are_counted_only_when_asked(self, store, run):
        record = make_record(status="retrying", dlq_retries=2)
        run(store.put(record))

        run(store.transition([record.id], "pending", ["retrying"], NOW + 5, error="no broker"))

        assert run(store.get(record.id)) == msgspec.structs.replace(
            record, status="pending", updated_at=NOW + 5, last_error="no broker"
        )

    @pytest.mark.parametrize("status", ["retrying", "resolved", "abandoned"])
    def test_from_a_wrong_state_nothing_moves(self, store, run, status):
        records = [make_record(status=status) for _ in range(3)]
        run(put_all(store, records))

        assert run(store.transition(ids(records), "retrying", ["pending"], NOW + 60)) == []

        assert [run(store.get(record.id)) for record in records] == records

    def test_only_the_matching_records_among_the_ids_move(self, store, run):
        pending = make_record(status="pending")
        retrying = make_record(status="retrying")
        resolved = make_record(status="resolved")
        untouched = make_record(status="pending")  # not among the ids
        run(put_all(store, [pending, retrying, resolved, untouched]))
        chosen = [pending.id, retrying.id, resolved.id, "no-such-id", pending.id]

        moved = run(store.transition(chosen, "abandoned", ["pending", "retrying"], NOW + 1))

        assert sorted(ids(moved)) == sorted([pending.id, retrying.id])
        assert {r.id: r.status for r in moved} == {pending.id: "pending", retrying.id: "retrying"}
        assert run(store.get(resolved.id)) == resolved
        assert run(store.get(untouched.id)) == untouched

    @pytest.mark.parametrize(("chosen", "from_statuses"), [([], ["pending"]), (["x"], [])])
    def test_nothing_to_choose_from_moves_nothing(self, store, run, chosen, from_statuses):
        assert run(store.transition(chosen, "retrying", from_statuses, NOW)) == []

    @pytest.mark.parametrize(("to", "from_statuses"), [("lost", ["pending"]), ("retrying", ["?"])])
    def test_an_unknown_status_is_a_value_error(self, store, run, to, from_statuses):
        with pytest.raises(ValueError, match="unknown DLQ status"):
            run(store.transition(["x"], to, from_statuses, NOW))

    def test_two_concurrent_bulk_retries_move_each_record_once(self, open_store, run):
        # Two stores, two connections (pools; for SQLite, threads): the database arbitrates.
        first, second = open_store(), open_store()
        records = [make_record(created_at=NOW + i) for i in range(200)]
        run(put_all(first, records))

        async def race() -> list[list[DlqRecord]]:
            return await asyncio.gather(
                *(
                    s.transition(ids(records), "retrying", ["pending"], NOW + 60)
                    for s in (first, second)
                )
            )

        moved = run(race())

        assert sorted(ids(moved[0] + moved[1])) == sorted(ids(records))  # each exactly once
        assert {record.status for record in moved[0] + moved[1]} == {"pending"}
        assert run(first.counts())["retrying"] == 200

    def test_postgres_transitions_that_wait_on_each_other_move_each_record_once(
        self, run, migrated_dsn
    ):
        """Provably concurrent: a third session holds one row, so both statements are
        running, blocked on row locks, when it lets go (having abandoned that record)."""
        name = f"race-{uuid.uuid4()}"
        stores = [postgres_store(make_conninfo(migrated_dsn, application_name=name)) for _ in "ab"]
        records = [make_record(created_at=NOW + i) for i in range(200)]
        held = sorted(ids(records))[100]

        async def race() -> list[list[DlqRecord]]:
            for s in stores:
                await s.open()
            try:
                await put_all(stores[0], records)
                async with await psycopg.AsyncConnection.connect(migrated_dsn) as blocker:
                    await blocker.execute(
                        "UPDATE dlq_records SET status = 'abandoned' WHERE id = %s", [held]
                    )
                    moves = [
                        asyncio.create_task(
                            s.transition(ids(records), "retrying", ["pending"], NOW + 60)
                        )
                        for s in stores
                    ]
                    await wait_for_lock_waits(migrated_dsn, name, 2)
                    await blocker.commit()
                return await asyncio.gather(*moves)
            finally:
                for s in stores:
                    await s.close()

        first, second = run(race())

        moved = sorted(ids(first + second))
        assert moved == sorted(set(ids(records)) - {held})
        with psycopg.connect(migrated_dsn) as conn:
            row = conn.execute("SELECT status FROM dlq_records WHERE id = %s", [held]).fetchone()
        assert row == ("abandoned",)  # re-checked on its new version, not moved


@pytest.fixture
def open_pg_store(
    request: pytest.FixtureRequest, run: Run, tmp_path
) -> Iterator[Callable[[], Any]]:
    yield from store_opener("postgres", request, run, tmp_path)


class TestPostgresMaintainedCounts:
    """PostgreSQL keeps counts per status (0013) rather than counting 10 million records on
    each poll: they agree with count(*) after concurrent moves, deletes and a truncate,
    whichever sidecar folds them, and folding leaves one row per status."""

    @staticmethod
    def counted(dsn: str) -> dict[str, int]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT status, count(*) FROM dlq_records GROUP BY status")
            return dict.fromkeys(STATUSES, 0) | dict(rows.fetchall())

    def test_counts_follow_concurrent_moves_and_folds(self, open_pg_store, run, migrated_dsn):
        first, second = open_pg_store(), open_pg_store()
        records = [make_record(created_at=NOW + i) for i in range(300)]
        run(put_all(first, records))

        async def race() -> None:
            await asyncio.gather(
                first.transition(ids(records[:200]), "retrying", ["pending"], NOW + 60),
                second.transition(ids(records[100:]), "abandoned", ["pending", "retrying"], NOW),
                *(s.counts() for s in (first, second, first, second)),
            )

        run(race())
        expected = self.counted(migrated_dsn)
        assert expected["retrying"] > 0
        assert expected["abandoned"] > 0
        assert run(first.counts()) == expected
        assert run(second.counts()) == expected
        with psycopg.connect(migrated_dsn) as conn:
            conn.execute("DELETE FROM dlq_records WHERE status = 'abandoned'")
            per_status = conn.execute(
                "SELECT status, count(*) FROM dlq_status_counts GROUP BY status"
            ).fetchall()
        assert {n for _, n in per_status if _ != "abandoned"} == {1}  # folded, then one delta
        assert run(second.counts()) == self.counted(migrated_dsn)
        assert run(second.counts())["abandoned"] == 0

        with psycopg.connect(migrated_dsn) as conn:
            conn.execute("TRUNCATE dlq_records")
        assert run(first.counts()) == dict.fromkeys(STATUSES, 0)
        run(first.put(make_record()))
        assert run(second.counts()) == dict.fromkeys(STATUSES, 0) | {"pending": 1}


class TestExportRows:
    """export_rows: the CSV export's columns, in its order, of every matching record, oldest
    first, a batch at a time; the exception's type and message read from its JSON, without
    NUL characters on either store."""

    def test_rows_carry_the_export_columns_of_each_record(self, store, run):
        from sidecar.service.export import CSV_COLUMNS

        # A NUL, and the six characters \u0000 written out (kept: not a NUL).
        message = "=bad\u0000 row, " + "\\" + "u0000 kept"
        exception = {"type": "ValueError", "message": message, "traceback": "t"}
        records = [
            make_record(created_at=NOW + i, exception=exception, status=STATUSES[i % 4])
            for i in range(7)
        ]
        run(put_all(store, records))

        async def collect(where: DlqFilter) -> list[list[dict[str, Any]]]:
            return [batch async for batch in store.export_rows(where, batch=3)]

        batches = run(collect(DlqFilter()))
        assert [len(b) for b in batches] == [3, 3, 1]
        rows = [row for batch in batches for row in batch]
        assert [row["id"] for row in rows] == ids(records)
        for row, record in zip(rows, records, strict=True):
            assert tuple(row) == CSV_COLUMNS
            assert row["exception_type"] == "ValueError"
            assert row["message"] == "=bad row, " + "\\" + "u0000 kept"
            assert row["created_at"] == record.created_at
            assert (row["status"], row["task_name"], row["attempts"]) == (
                record.status,
                record.task_name,
                record.attempts,
            )
        pending = run(collect(DlqFilter(status="pending")))
        assert [row["id"] for batch in pending for row in batch] == ids(records[::4])


class TestDlqCounts:
    """counts() and oldest_pending() feed the depth gauges."""

    def test_an_empty_dlq(self, store, run):
        assert run(store.counts()) == dict.fromkeys(STATUSES, 0)
        assert run(store.oldest_pending()) is None

    def test_every_status_is_counted_and_the_oldest_pending_found(self, store, run):
        records = [
            make_record(status="retrying", created_at=NOW),  # older, but not pending
            make_record(status="pending", created_at=NOW + 7.5),
            make_record(status="pending", created_at=NOW + 1.5),
            make_record(status="pending", created_at=NOW + 3),
            make_record(status="resolved", created_at=NOW + 1),
        ]
        run(put_all(store, records))

        assert run(store.counts()) == {"pending": 3, "retrying": 1, "resolved": 1, "abandoned": 0}
        assert run(store.oldest_pending()) == NOW + 1.5


class TestAuditLog:
    """Every action is kept as written and listed newest first, in stable pages."""

    def test_round_trip(self, store, run):
        entry = AuditEntry(
            at=NOW,
            actor="alice",
            action="bulk_retry",
            record_ids=["a", "b", "ç-✓"],
            from_status="pending",
            reason="broker back after the outage",
            details={"filter": {"status": "pending"}, "rate_per_second": 5.5, "dry": False},
        )
        minimal = AuditEntry(at=NOW + 1, actor="bob", action="policy_reload")
        run(store.audit(entry))
        run(store.audit(minimal))

        assert run(store.audit_log(10)) == AuditPage([minimal, entry], None)

    def test_pages_newest_first_without_repeats_while_entries_arrive(self, store, run):
        entries = [AuditEntry(at=NOW + i // 4, actor="alice", action="retry") for i in range(25)]
        entries = [msgspec.structs.replace(e, record_ids=[str(i)]) for i, e in enumerate(entries)]
        for entry in entries:
            run(store.audit(entry))

        seen = []
        page = run(store.audit_log(10))
        while True:
            seen += page.entries
            run(store.audit(AuditEntry(at=NOW + 100 + len(seen), actor="bob", action="retry")))
            if page.next_cursor is None:
                break
            page = run(store.audit_log(10, page.next_cursor))

        # Equal times keep their order of arrival: newest first is the reverse.
        assert seen == entries[::-1]

    @pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
    def test_a_garbage_cursor_is_a_value_error(self, store, run, cursor):
        with pytest.raises(ValueError, match="invalid cursor"):
            run(store.audit_log(10, cursor))

    def test_a_dlq_cursor_is_not_an_audit_cursor(self, store, run):
        run(put_all(store, [make_record(), make_record()]))
        cursor = run(store.list(DlqFilter(), 1)).next_cursor

        with pytest.raises(ValueError, match="invalid cursor"):
            run(store.audit_log(10, cursor))


HOUR = 1764345600.0  # NOW's hour: a multiple of 3600 (and of 300) since the epoch


TREND_EVENTS = [
    (HOUR - 3600.5, "TRANSIENT_DATABASE"),  # before `since`
    (HOUR - 3600, "TRANSIENT_DATABASE"),  # at `since`: counted
    (HOUR - 1, "TRANSIENT_DATABASE"),
    (HOUR - 1, "EXTERNAL_API_DOWN"),
    (HOUR, "TRANSIENT_DATABASE"),  # a boundary belongs to the bucket it starts
    (HOUR + 1799.999999, "TRANSIENT_DATABASE"),
]


class TestFailureTrends:
    """Failure events are counted per failure type in buckets aligned to the epoch."""

    @pytest.mark.parametrize(
        ("bucket", "expected"),
        [
            (
                3600,
                [
                    (HOUR - 3600, "EXTERNAL_API_DOWN", 1),
                    (HOUR - 3600, "TRANSIENT_DATABASE", 2),
                    (HOUR, "TRANSIENT_DATABASE", 2),
                ],
            ),
            (
                300,
                [
                    (HOUR - 3600, "TRANSIENT_DATABASE", 1),
                    (HOUR - 300, "EXTERNAL_API_DOWN", 1),
                    (HOUR - 300, "TRANSIENT_DATABASE", 1),
                    (HOUR, "TRANSIENT_DATABASE", 1),
                    (HOUR + 1500, "TRANSIENT_DATABASE", 1),
                ],
            ),
        ],
    )
    def test_buckets(self, store, run, bucket, expected):
        for at, failure_type in TREND_EVENTS:
            run(store.record_events([failure_event(at, "billing.charge", failure_type)]))

        trends = run(store.trends(since=HOUR - 3600, bucket=bucket))

        assert trends == [TrendBucket(*row) for row in expected]

    def test_the_default_bucket_is_an_hour(self, store, run):
        run(
            store.record_events(
                [failure_event(HOUR + 3599, "billing.charge", "TRANSIENT_DATABASE")]
            )
        )

        assert run(store.trends(since=0)) == [TrendBucket(HOUR, "TRANSIENT_DATABASE", 1)]

    @pytest.mark.parametrize("bucket", [0, -60, float("inf"), float("nan")])
    def test_a_bucket_that_is_not_a_positive_number_is_a_value_error(self, store, run, bucket):
        with pytest.raises(ValueError, match="bucket"):
            run(store.trends(since=0, bucket=bucket))

    def test_an_unusable_since_is_a_value_error(self, store, run):
        with pytest.raises(ValueError, match="not a usable unix time"):
            run(store.trends(since=-1e300))


class TestEventHistory:
    """record_events() keeps each event's body and decision as sent, a batch at a time;
    events() gives back those with a body, oldest first."""

    def test_a_batch_comes_back_as_it_was_written(self, store, run):
        awkward = {
            "task_id": "t-1",
            "task_name": "billing.charge",
            "exception": {"message": 'a \x00 NUL, "quotes", \\ back\tslash, détecté «»'},
            "args": [1.5, None, True, {"k": []}],
        }
        events = [
            HookEvent(
                at=NOW + 0.000001,
                kind="failure",
                task_name="billing.charge",
                event=msgspec.Raw(msgspec.json.encode(awkward)),
                failure_type="TRANSIENT_DATABASE",
                decision=msgspec.Raw(b'{"action":"retry","delay_seconds":12.5}'),
            ),
            HookEvent(
                at=NOW + 1,
                kind="success",
                task_name="billing.charge",
                event=msgspec.Raw(b'{"task_id":"t-1","attempt":1}'),
            ),
            HookEvent(at=NOW + 2, kind="start", task_name="billing.charge", event=None),
        ]
        run(store.record_events(events))

        async def read() -> list[dict[str, Any]]:
            return [row async for rows in store.events(NOW - 1, NOW + 10) for row in rows]

        rows = run(read())
        assert [r["kind"] for r in rows] == ["failure", "success"]  # no body: not exported
        assert json.loads(rows[0]["event"]) == awkward
        assert json.loads(rows[0]["decision"]) == {"action": "retry", "delay_seconds": 12.5}
        assert json.loads(rows[1]["event"]) == {"task_id": "t-1", "attempt": 1}
        assert rows[1]["decision"] is None
        assert float(rows[0]["at"]) == pytest.approx(NOW + 0.000001, abs=1e-6)
        assert run(store.trends(since=NOW - 3600)) == [
            TrendBucket(NOW - NOW % 3600, "TRANSIENT_DATABASE", 1)
        ]


class TestPurge:
    """purge() deletes old hook events and expired idempotency keys, nothing else."""

    def test_deletes_what_is_past_retention_and_counts_it(self, store, run):
        day = 86400.0
        for at in (NOW - 2 * day, NOW - day - 0.5, NOW - day, NOW - 10):
            run(store.record_events([failure_event(at, "billing.charge", "TRANSIENT_DATABASE")]))
        run(store.claim("expired", OWNER, 10, NOW - 100))
        run(store.claim("expires-now", OWNER, 100, NOW - 100))  # expires_at == now: expired
        run(store.claim("live", OWNER, TTL, NOW))
        record = make_record(status="resolved", created_at=NOW - 30 * day)
        run(store.put(record))

        assert run(store.purge(NOW, keep_events=day)) == 4
        assert run(store.purge(NOW, keep_events=day)) == 0

        remaining = run(store.trends(since=0, bucket=0.25))  # one bucket per event left
        assert [bucket.start for bucket in remaining] == [NOW - day, NOW - 10]
        assert run(store.claim("live", OWNER, TTL, NOW + 1)) == Claim(False, NOW, "running")
        assert run(store.get(record.id)) == record  # DLQ records are not purged


async def wait_for_lock_waits(dsn: str, name: str, n: int) -> None:
    """Until `n` sessions named `name` wait for a lock: a poll with a deadline."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = %s AND wait_event_type = 'Lock'"
    )
    # Autocommit: each poll is a new transaction, with a fresh view of pg_stat_activity.
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as monitor:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cur = await monitor.execute(query, [name])
            if await cur.fetchone() == (n,):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {n} statements waiting on each other")


REDIS_URLS = {
    "redis": lambda request: request.getfixturevalue("redis_url"),
    "redis-cluster": lambda request: request.getfixturevalue("redis_cluster_service").url,
    "redis-sentinel": lambda request: request.getfixturevalue("redis_sentinel_service").url,
}


@pytest.fixture(params=["sqlite", "postgres", *REDIS_URLS])
def claims(request: pytest.FixtureRequest, run: Run, tmp_path) -> Iterator[Any]:
    """An IdempotencyStore: the two SQL stores and Redis (one server, a cluster, a master
    found through Sentinel) keep one contract."""
    if request.param not in REDIS_URLS:
        opener = store_opener(request.param, request, run, tmp_path)
        yield next(opener)()
        next(opener, None)  # closes what it opened
        return
    url = REDIS_URLS[request.param](request)
    store = RedisStore(url, prefix=f"test-{uuid.uuid4()}:", timeout=5)  # a contract, not speed
    yield store
    run(store.close())


def virtual_clock_only(store: Any) -> None:
    """Redis expires keys on its own clock (PX), not on the `now` the tests pass."""
    if isinstance(store, RedisStore):
        pytest.skip("expiry on Redis follows the server's clock, not a virtual one")


class TestIdempotencyClaims:
    """Exactly one caller holds a key until it is released or expires; others see the holder."""

    def test_the_first_claim_wins(self, claims, run):
        assert run(claims.claim("k", OWNER, TTL, NOW)) == Claim(claimed=True, owner=OWNER)

    def test_one_of_50_concurrent_claims_wins(self, claims, run):
        results = run(concurrently(50, lambda: claims.claim("k", OWNER, TTL, NOW)))

        assert sum(claim.claimed for claim in results) == 1
        duplicates = {claim for claim in results if not claim.claimed}
        assert duplicates == {Claim(claimed=False, first_seen_at=NOW, state="running")}

    def test_a_batch_claims_each_in_order(self, claims, run):
        run(claims.claim("held", "o0", TTL, NOW))
        batch = [NewClaim("a", "o1", TTL), NewClaim("held", "o2", TTL), NewClaim("a", "o3", TTL)]
        batch.append(NewClaim("b", "o4", TTL))

        assert run(claims.claim_many(batch, NOW + 1)) == [
            Claim(claimed=True, owner="o1"),
            Claim(False, NOW, "running"),  # held before the batch
            Claim(False, NOW + 1, "running"),  # the batch's own first claim of "a" holds it
            Claim(claimed=True, owner="o4"),
        ]
        assert run(claims.release("a", "o1")) is True  # its winners own their keys
        assert run(claims.complete("b", "o4", TTL, NOW + 2)) is True

    def test_concurrent_batches_give_each_key_one_winner(self, claims, run):
        keys = [f"k{i}" for i in range(20)]

        async def race() -> list[list[Claim]]:
            return await asyncio.gather(
                *(
                    claims.claim_many([NewClaim(k, f"o{j}", TTL) for k in keys], NOW)
                    for j in range(5)
                )
            )

        results = run(race())
        assert [sum(batch[i].claimed for batch in results) for i in range(len(keys))] == [1] * 20

    def test_a_duplicate_sees_when_and_in_what_state(self, claims, run):
        run(claims.claim("k", OWNER, TTL, NOW))

        assert run(claims.claim("k", OWNER, TTL, NOW + 5)) == Claim(False, NOW, "running")

    def test_complete_marks_done_and_keeps_the_key_for_its_ttl(self, claims, run):
        virtual_clock_only(claims)
        run(claims.claim("k", OWNER, 10, NOW))

        assert run(claims.complete("k", OWNER, TTL, NOW + 5)) is True
        # Past the claim's own expiry, inside the TTL given to complete().
        assert run(claims.claim("k", OWNER, TTL, NOW + 60)) == Claim(False, NOW, "done")

    def test_complete_of_an_unknown_key_is_false(self, claims, run):
        assert run(claims.complete("k", OWNER, TTL, NOW)) is False
        assert run(claims.claim("k", OWNER, TTL, NOW)).claimed

    def test_release_lets_the_key_be_claimed_again(self, claims, run):
        run(claims.claim("k", OWNER, TTL, NOW))

        assert run(claims.release("k", OWNER)) is True
        assert run(claims.claim("k", OWNER, TTL, NOW + 1)) == Claim(claimed=True, owner=OWNER)
        assert run(claims.claim("k", OWNER, TTL, NOW + 2)) == Claim(False, NOW + 1, "running")

    def test_release_leaves_a_done_key_alone(self, claims, run):
        run(claims.claim("k", OWNER, TTL, NOW))
        run(claims.complete("k", OWNER, TTL, NOW + 1))

        assert run(claims.release("k", OWNER)) is False
        assert run(claims.claim("k", OWNER, TTL, NOW + 2)) == Claim(False, NOW, "done")

    def test_only_the_owner_completes_or_releases(self, claims, run):
        """A caller whose claim was taken over (or who never held it) changes nothing."""
        run(claims.claim("k", OWNER, TTL, NOW))

        assert run(claims.complete("k", "owner-b", TTL, NOW + 1)) is False
        assert run(claims.release("k", "owner-b")) is False
        assert run(claims.claim("k", "owner-c", TTL, NOW + 2)) == Claim(False, NOW, "running")
        assert run(claims.complete("k", OWNER, TTL, NOW + 3)) is True

    def test_release_of_an_unknown_key_is_false(self, claims, run):
        assert run(claims.release("k", OWNER)) is False

    @pytest.mark.parametrize("done", [False, True], ids=["running", "done"])
    def test_an_expired_key_can_be_claimed_again(self, claims, run, done):
        virtual_clock_only(claims)
        run(claims.claim("k", OWNER, 10, NOW))
        if done:
            run(claims.complete("k", OWNER, 10, NOW))

        assert run(claims.claim("k", OWNER, TTL, NOW + 9.5)).claimed is False
        assert run(claims.claim("k", OWNER, TTL, NOW + 10)) == Claim(
            claimed=True, owner=OWNER
        )  # expires_at <= now
        assert run(claims.claim("k", OWNER, TTL, NOW + 11)) == Claim(False, NOW + 10, "running")

    def test_one_of_50_concurrent_takeovers_of_an_expired_key_wins(self, claims, run):
        virtual_clock_only(claims)
        run(claims.claim("k", OWNER, 10, NOW))

        results = run(concurrently(50, lambda: claims.claim("k", OWNER, TTL, NOW + 20)))

        assert sum(claim.claimed for claim in results) == 1
        # The losers report the new holder, never the expired one they raced against.
        duplicates = {claim for claim in results if not claim.claimed}
        assert duplicates == {Claim(claimed=False, first_seen_at=NOW + 20, state="running")}


class TestAvailability:
    """Failures surface as StoreUnavailable naming the backend, and never quote a secret."""

    def test_ping(self, store, run):
        run(store.ping())

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda s: s.get("x"), id="get"),
            pytest.param(lambda s: s.list(DlqFilter(), 10), id="list"),
            pytest.param(lambda s: collect(s.iterate(DlqFilter())), id="iterate"),
            pytest.param(lambda s: s.transition(["x"], "retrying", ["pending"], NOW), id="move"),
            pytest.param(lambda s: s.counts(), id="counts"),
            pytest.param(lambda s: s.audit_log(10), id="audit_log"),
            pytest.param(lambda s: s.trends(NOW), id="trends"),
            pytest.param(lambda s: s.purge(NOW, 3600), id="purge"),
        ],
    )
    def test_a_closed_store_is_unavailable(self, store, run, call):
        run(store.close())

        with pytest.raises(StoreUnavailable) as raised:
            run(call(store))
        assert raised.value.backend == store.name

    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    def test_an_unreachable_backend_is_unavailable(self, run, tmp_path, backend):
        if backend == "sqlite":
            store: Any = sqlite_store(tmp_path / "no-such-dir" / "sidecar.db")
        else:
            dsn = f"postgresql://sidecar:{SECRET}@127.0.0.1:{free_port()}/sidecar"
            store = postgres_store(dsn, timeout=0.5)

        with pytest.raises(StoreUnavailable) as raised:
            run(store.open())

        assert raised.value.backend == backend
        assert SECRET not in str(raised.value)

    def test_a_malformed_dsn_is_refused_without_quoting_it(self):
        with pytest.raises(ValueError, match="malformed") as raised:
            postgres_store(f"postgresql//sidecar:{SECRET}@127.0.0.1/sidecar")
        assert SECRET not in str(raised.value)

    def test_postgres_dropped_connections_fail_as_unavailable_then_recover(self, run, migrated_dsn):
        name = f"outage-{uuid.uuid4()}"  # so only this store's connections are hit
        store = postgres_store(make_conninfo(migrated_dsn, application_name=name), max_size=2)
        run(store.open())
        try:
            run(store.ping())
            with psycopg.connect(migrated_dsn, autocommit=True) as admin:
                # What a server restart does to the pool: every connection dies at once.
                admin.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    [name],
                )
            outcomes = []
            for _ in range(3):  # each dead pooled connection can fail one call, no more
                try:
                    run(store.ping())
                except StoreUnavailable:
                    outcomes.append("unavailable")
                else:
                    outcomes.append("ok")
        finally:
            run(store.close())

        assert "unavailable" in outcomes
        assert outcomes[-1] == "ok"
