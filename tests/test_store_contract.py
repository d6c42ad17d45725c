"""One contract for every DlqStore/IdempotencyStore: the embedded SQLite twin and PostgreSQL.

Each test runs against both backends (real files, a real server). Concurrency tests fire
the calls together with asyncio.gather; the PostgreSQL store then has several pooled
connections, so the database itself arbitrates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sidecar.store.base import Claim, DlqRecord, StoreUnavailable
from sidecar.store.embedded import SqliteStore
from sidecar.store.migrations import migrate
from sidecar.store.postgres import PostgresStore
from tests.services import free_port

T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]

NOW = 1764345600.25  # exactly representable, so equality checks are fair
TTL = 600.0
SECRET = "s3cr3t-pa55word"


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
def store(request: pytest.FixtureRequest, run: Run, tmp_path) -> Iterator[Any]:
    if request.param == "sqlite":
        store: Any = SqliteStore(tmp_path / "sidecar.db")
    else:
        dsn = request.getfixturevalue("migrated_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE dlq_records, idempotency_keys")
        store = PostgresStore(dsn, min_size=4, max_size=8)
    run(store.open())
    yield store
    run(store.close())


async def concurrently(n: int, call: Callable[[], Awaitable[T]]) -> list[T]:
    return await asyncio.gather(*(call() for _ in range(n)))


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
        )
        run(store.put(record))

        stored = run(store.get(record.id))
        assert stored == record
        # Also the same types and key order (== takes 1e16 for 10**16 and -0.0 for 0).
        assert msgspec.json.encode(stored) == msgspec.json.encode(record)

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

        results = run(concurrently(20, lambda: store.resolve(record.id, NOW + 60)))

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

        assert run(store.resolve(record.id, NOW + 60)) is resolved
        expected = "resolved" if resolved else status
        assert run(store.get(record.id)).status == expected

    def test_resolve_of_an_unknown_id_is_false(self, store, run):
        assert run(store.resolve("no-such-id", NOW)) is False

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
            id=record.id,
            task_id="retry-run-id",
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


class TestIdempotencyClaims:
    """Exactly one caller holds a key until it is released or expires; others see the holder."""

    def test_the_first_claim_wins(self, store, run):
        assert run(store.claim("k", TTL, NOW)) == Claim(claimed=True)

    def test_one_of_50_concurrent_claims_wins(self, store, run):
        results = run(concurrently(50, lambda: store.claim("k", TTL, NOW)))

        assert sum(claim.claimed for claim in results) == 1
        duplicates = {claim for claim in results if not claim.claimed}
        assert duplicates == {Claim(claimed=False, first_seen_at=NOW, state="running")}

    def test_a_duplicate_sees_when_and_in_what_state(self, store, run):
        run(store.claim("k", TTL, NOW))

        assert run(store.claim("k", TTL, NOW + 5)) == Claim(False, NOW, "running")

    def test_complete_marks_done_and_keeps_the_key_for_its_ttl(self, store, run):
        run(store.claim("k", 10, NOW))

        assert run(store.complete("k", TTL, NOW + 5)) is True
        # Past the claim's own expiry, inside the TTL given to complete().
        assert run(store.claim("k", TTL, NOW + 60)) == Claim(False, NOW, "done")

    def test_complete_of_an_unknown_key_is_false(self, store, run):
        assert run(store.complete("k", TTL, NOW)) is False
        assert run(store.claim("k", TTL, NOW)).claimed

    def test_release_lets_the_key_be_claimed_again(self, store, run):
        run(store.claim("k", TTL, NOW))

        assert run(store.release("k")) is True
        assert run(store.claim("k", TTL, NOW + 1)) == Claim(claimed=True)
        assert run(store.claim("k", TTL, NOW + 2)) == Claim(False, NOW + 1, "running")

    def test_release_leaves_a_done_key_alone(self, store, run):
        run(store.claim("k", TTL, NOW))
        run(store.complete("k", TTL, NOW + 1))

        assert run(store.release("k")) is False
        assert run(store.claim("k", TTL, NOW + 2)) == Claim(False, NOW, "done")

    def test_release_of_an_unknown_key_is_false(self, store, run):
        assert run(store.release("k")) is False

    @pytest.mark.parametrize("done", [False, True], ids=["running", "done"])
    def test_an_expired_key_can_be_claimed_again(self, store, run, done):
        run(store.claim("k", 10, NOW))
        if done:
            run(store.complete("k", 10, NOW))

        assert run(store.claim("k", TTL, NOW + 9.5)).claimed is False
        assert run(store.claim("k", TTL, NOW + 10)) == Claim(claimed=True)  # expires_at <= now
        assert run(store.claim("k", TTL, NOW + 11)) == Claim(False, NOW + 10, "running")

    def test_one_of_50_concurrent_takeovers_of_an_expired_key_wins(self, store, run):
        run(store.claim("k", 10, NOW))

        results = run(concurrently(50, lambda: store.claim("k", TTL, NOW + 20)))

        assert sum(claim.claimed for claim in results) == 1
        # The losers report the new holder, never the expired one they raced against.
        duplicates = {claim for claim in results if not claim.claimed}
        assert duplicates == {Claim(claimed=False, first_seen_at=NOW + 20, state="running")}


class TestAvailability:
    """Failures surface as StoreUnavailable naming the backend, and never quote a secret."""

    def test_ping(self, store, run):
        run(store.ping())

    def test_a_closed_store_is_unavailable(self, store, run):
        run(store.close())

        with pytest.raises(StoreUnavailable) as raised:
            run(store.get("x"))
        assert raised.value.backend == store.name

    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    def test_an_unreachable_backend_is_unavailable(self, run, tmp_path, backend):
        if backend == "sqlite":
            store: Any = SqliteStore(tmp_path / "no-such-dir" / "sidecar.db")
        else:
            dsn = f"postgresql://sidecar:{SECRET}@127.0.0.1:{free_port()}/sidecar"
            store = PostgresStore(dsn, timeout=0.5)

        with pytest.raises(StoreUnavailable) as raised:
            run(store.open())

        assert raised.value.backend == backend
        assert SECRET not in str(raised.value)

    def test_a_malformed_dsn_is_refused_without_quoting_it(self):
        with pytest.raises(ValueError, match="malformed") as raised:
            PostgresStore(f"postgresql//sidecar:{SECRET}@127.0.0.1/sidecar")
        assert SECRET not in str(raised.value)

    def test_postgres_dropped_connections_fail_as_unavailable_then_recover(self, run, migrated_dsn):
        name = f"outage-{uuid.uuid4()}"  # so only this store's connections are hit
        store = PostgresStore(make_conninfo(migrated_dsn, application_name=name), max_size=2)
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
