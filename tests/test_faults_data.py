"""Data errors are not outages: what PostgreSQL would refuse is refused with a 400 naming
the field before anything is applied, a spooled write refused for good is quarantined and
never blocks the ones behind it, a report sent twice is stored once, and a hook only
touches the record of its own task.

A real sidecar process on real PostgreSQL and Redis, spoken to over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.records import MAX_ID_BYTES, MAX_NAME_BYTES, DlqRecord
from sidecar.store.postgres import migrate
from sidecar.store.spool import QUARANTINE_FILE, SPOOL_FILE, SpoolingDlq, _Put
from sidecar.store.sqlstore import postgres_store

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess

HOOKS = "data-hooks-token-0123456789"
OPERATOR = "data-operator-token-0123456789"
VIEWER = "data-viewer-token-0123456789"
WIDE = "\U0001d7d8"  # four bytes of UTF-8, one character


def dead_letter(task: str, task_id: str, **extra: object) -> dict:
    return {
        "task_id": task_id,
        "task_name": task,
        "exception": {"type": "ValueError", "mro": ["builtins.ValueError"], "message": "bad"},
        **extra,
    }


def call(
    port: int, method: str, path: str, body: object = None, token: str = HOOKS, timeout: float = 10
):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.startswith(b"{") else raw
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def rows(dsn: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def sidecar(postgres_service, redis_service, tmp_path_factory):
    settings = {
        "postgres_dsn": postgres_service.start().dsn,
        "redis_url": redis_service.start().url,
        "operator_tokens": f"ops:{OPERATOR}",
        "viewer_tokens": f"grafana:{VIEWER}",
    }
    workdir = tmp_path_factory.mktemp("data-errors")
    with SidecarProcess(workdir, HOOKS, policies=str(DEFAULT_POLICIES), **settings) as process:
        yield process, settings["postgres_dsn"]


class TestRefusedBeforeAnythingIsWritten:
    """Values PostgreSQL cannot keep get a 400 naming the field; later writes go through."""

    def test_names_over_the_index_limit_in_bytes_then_ordinary_dead_letters(self, sidecar):
        process, dsn = sidecar
        task = f"data.{uuid.uuid4().hex[:8]}"
        huge = dead_letter(WIDE * 512, "t-huge", dlq_id=WIDE * 512)  # within the 512 chars

        status, problem = call(process.port, "POST", "/v1/hooks/failure", huge)

        assert status == 400, problem
        assert problem["errors"][0]["path"] in ("task_name", "dlq_id")
        assert "bytes" in problem["errors"][0]["message"]
        for i in range(20):
            status, answer = call(
                process.port, "POST", "/v1/hooks/failure", dead_letter(task, f"t{i}")
            )
            assert (status, answer["action"]) == (200, "dead_letter")
        stored = rows(dsn, "SELECT count(*) FROM dlq_records WHERE task_name = %s", task)
        assert stored == [(20,)]
        status, ready = call(process.port, "GET", "/readyz")
        assert status == 200
        assert "spool" not in ready["checks"], ready

    def test_an_abandon_reason_with_nul_is_refused_and_the_record_untouched(self, sidecar):
        process, dsn = sidecar
        task = f"data.{uuid.uuid4().hex[:8]}"
        _, answer = call(process.port, "POST", "/v1/hooks/failure", dead_letter(task, "t"))
        path = f"/v1/dlq/{answer['dlq_id']}/abandon"

        status, problem = call(process.port, "POST", path, {"reason": "a\u0000b"}, OPERATOR)

        assert (status, problem["errors"][0]["path"]) == (400, "reason")
        status, record = call(process.port, "GET", f"/v1/dlq/{answer['dlq_id']}", token=VIEWER)
        assert record["status"] == "pending"
        audited = rows(
            dsn, "SELECT count(*) FROM audit_log WHERE %s = ANY(record_ids)", record["id"]
        )
        assert audited == [(0,)]

    @pytest.mark.parametrize(
        ("method", "path", "body", "token", "field"),
        [
            ("GET", "/v1/dlq/a%00b", None, VIEWER, "path.id"),
            ("GET", "/v1/dlq?task_name=a%00b", None, VIEWER, "query.task_name"),
            ("GET", "/v1/dlq?since=1e309", None, VIEWER, "query.since"),
            ("GET", "/v1/dlq/export.csv?failure_type=%00", None, VIEWER, "query.failure_type"),
            ("POST", "/v1/dlq/bulk-retry", {"ids": ["a\u0000"]}, OPERATOR, "ids[0]"),
            ("POST", "/v1/idempotency/claim", {"key": "k\u0000"}, HOOKS, "key"),
            ("POST", "/v1/idempotency/claim", {"key": WIDE * 1000}, HOOKS, "key"),
        ],
    )
    def test_hostile_parameters_get_a_400_naming_them(
        self, sidecar, method, path, body, token, field
    ):
        process, _ = sidecar
        status, problem = call(process.port, method, path, body, token)
        assert status == 400, problem
        assert problem["errors"][0]["path"] == field

    def test_a_cursor_holding_nul_is_not_a_cursor(self, sidecar):
        process, _ = sidecar
        import base64

        cursor = base64.urlsafe_b64encode(b'[1.0,"a\\u0000"]').decode().rstrip("=")
        status, problem = call(process.port, "GET", f"/v1/dlq?cursor={cursor}", token=VIEWER)
        assert (status, problem["errors"][0]["path"]) == (400, "query.cursor")


class TestReportsAreAppliedOnce:
    """A report re-sent (after a timeout, in a batch, or replayed) is stored once."""

    def test_the_same_failure_report_three_ways_is_one_record(self, sidecar):
        process, dsn = sidecar
        task = f"data.{uuid.uuid4().hex[:8]}"
        report = dead_letter(task, "t-1", report_id=f"t-1:0:{uuid.uuid4().hex}")

        _, first = call(process.port, "POST", "/v1/hooks/failure", report)
        _, again = call(process.port, "POST", "/v1/hooks/failure", report)
        _, batch = call(process.port, "POST", "/v1/hooks/batch", [{"type": "failure", **report}])

        assert first["dlq_id"] == again["dlq_id"] == batch["results"][0]["dlq_id"]
        assert rows(dsn, "SELECT count(*) FROM dlq_records WHERE task_name = %s", task) == [(1,)]

    def test_a_batch_answers_each_event_and_resends_apply_nothing_twice(self, sidecar):
        process, dsn = sidecar
        task = f"data.{uuid.uuid4().hex[:8]}"
        events = [
            {"type": "failure", **dead_letter(task, f"t{i}", report_id=f"r{i}-{task}")}
            for i in range(5)
        ]
        events.append({"type": "failure", **dead_letter(WIDE * 512, "bad")})  # refused alone
        for _ in range(3):
            status, answer = call(process.port, "POST", "/v1/hooks/batch", events)
            assert status == 200
            assert [r.get("action") for r in answer["results"][:5]] == ["dead_letter"] * 5
            assert answer["results"][5]["error"]["status"] == 400
        assert rows(dsn, "SELECT count(*) FROM dlq_records WHERE task_name = %s", task) == [(5,)]


# Characters of every UTF-8 width and ones stores treat specially (quotes, backslashes).
CHARS = st.sampled_from(["a", "é", "€", WIDE, "'", '"', "\\", "\n"])
# Now and then one field gets a NUL (refused in names, kept in messages) or a lone
# surrogate (not UTF-8: the whole body is refused).
SPOILERS = st.sampled_from([None, None, None, "\x00", "\ud800"])


def at_most(chars: int, utf8_bytes: int | None = None) -> st.SearchStrategy[str]:
    """Strings at the limits (a drawn piece repeated up to `chars` characters and
    `utf8_bytes` bytes, the most the sidecar takes), or short ones."""

    def fill(piece: str) -> str:
        text = (piece * chars)[:chars]
        while utf8_bytes and len(text.encode("utf-8", "surrogatepass")) > utf8_bytes:
            text = text[:-1]
        return text

    return st.one_of(
        st.text(CHARS, min_size=1, max_size=8).map(fill),
        st.text(CHARS, max_size=min(chars, 64)),
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | at_most(64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(at_most(16), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def failures(draw: st.DrawFn) -> dict:
    """A failure the wire accepts (by schema), at or near its maximum sizes."""
    event = {
        "task_id": draw(at_most(256, MAX_ID_BYTES).filter(bool)),
        "task_name": draw(at_most(512, MAX_NAME_BYTES).filter(bool)),
        "queue": draw(st.none() | at_most(512, MAX_NAME_BYTES)),
        "attempt": draw(st.integers(0, 100_000)),
        "exception": {
            "type": draw(at_most(512, MAX_NAME_BYTES).filter(bool)),
            "module": draw(st.none() | at_most(512, MAX_NAME_BYTES)),
            # Up to the message's 65,536 characters, within the 256 KiB body as a rule.
            "message": draw(at_most(65536, 150_000)),
            "traceback": draw(st.none() | at_most(65536, 60_000)),
        },
        "args": draw(st.lists(JSON_VALUES, max_size=5)),
        "kwargs": draw(st.dictionaries(at_most(64), JSON_VALUES, max_size=5)),
        "report_id": uuid.uuid4().hex,
    }
    if spoiler := draw(SPOILERS):
        where = draw(st.sampled_from(["task_id", "task_name", "message"]))
        holder = event["exception"] if where == "message" else event
        holder[where] = spoiler + holder[where]
    return event


class TestEveryAnsweredDeadLetterIsStoredOnce:
    """Random valid-by-schema failures at the maximum sizes, direct or in a batch, some sent
    twice: each answered dead letter is one row with what was sent; a refused one none."""

    @pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # big reprs
    def test_random_payloads_at_the_limits(self, sidecar):
        process, dsn = sidecar
        marker = f"max-{uuid.uuid4().hex[:8]}"  # in every args list: finds this run's rows
        answered: dict[str, dict] = {}
        refused: list[str] = []

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(event=failures(), batched=st.booleans(), twice=st.booleans())
        def send(event: dict, batched: bool, twice: bool) -> None:
            event["args"] = [marker, *event["args"]]
            for _ in range(2 if twice else 1):
                if batched:
                    status, answer = call(
                        process.port, "POST", "/v1/hooks/batch", [{"type": "failure", **event}]
                    )
                    assert status in (200, 400, 413), answer  # 400: a lone surrogate
                    answer = answer["results"][0] if status == 200 else {"error": answer}
                else:
                    status, answer = call(process.port, "POST", "/v1/hooks/failure", event)
                    assert status in (200, 400, 413), answer
                if "error" in answer or status != 200:
                    refused.append(event["report_id"])
                    continue
                assert answer["action"] == "dead_letter", answer
                if event["report_id"] in answered:  # sent again: the same record
                    assert answered[event["report_id"]]["dlq_id"] == answer["dlq_id"]
                answered[event["report_id"]] = {"dlq_id": answer["dlq_id"], "event": event}

        send()
        stored = rows(
            dsn,
            "SELECT id, task_id, task_name, exception::text FROM dlq_records"
            " WHERE args::jsonb -> 0 = to_jsonb(%s::text)",
            marker,
        )
        by_id = {row[0]: row for row in stored}
        assert len(stored) == len(by_id) == len(answered)  # exactly once each
        for report in answered.values():
            _, task_id, task_name, exception = by_id[report["dlq_id"]]
            event = report["event"]
            assert (task_id, task_name) == (event["task_id"], event["task_name"])
            assert json.loads(exception)["message"] == event["exception"]["message"]
        assert answered, "no example was answered: the strategy only makes refusals"
        assert not set(refused) & set(answered), "a report both refused and answered"


class TestHooksTouchOnlyTheirOwnRecord:
    """A hooks token cannot resolve or rewrite another task's dead letter."""

    def test_success_and_failure_naming_another_tasks_record(self, sidecar):
        process, dsn = sidecar
        task = f"data.{uuid.uuid4().hex[:8]}"
        _, victim = call(process.port, "POST", "/v1/hooks/failure", dead_letter(task, "victim"))
        dlq_id = victim["dlq_id"]

        success = {"task_id": "intruder", "task_name": task, "dlq_id": dlq_id}
        assert call(process.port, "POST", "/v1/hooks/success", success)[0] == 200
        intruder = dead_letter(task, "intruder", dlq_id=dlq_id, args=["rewritten"])
        _, answer = call(process.port, "POST", "/v1/hooks/failure", intruder)

        _, record = call(process.port, "GET", f"/v1/dlq/{dlq_id}", token=VIEWER)
        assert (record["status"], record["task_id"], record["args"]) == ("pending", "victim", [])
        assert answer["dlq_id"] != dlq_id  # the intruder's failure is a record of its own
        owners = rows(dsn, "SELECT task_id FROM dlq_records WHERE id = %s", answer["dlq_id"])
        assert owners == [("intruder",)]


class TestQuarantine:
    """A spooled write the database refuses for good is set aside; the rest replay."""

    def test_a_refused_line_is_quarantined_and_the_lines_behind_it_replay(
        self, postgres_dsn, tmp_path
    ):
        task = f"data.{uuid.uuid4().hex[:8]}"

        def record(name: str) -> DlqRecord:
            return DlqRecord(
                id=str(uuid.uuid4()),
                task_id="t",
                task_name=name,
                queue=None,
                args=[],
                kwargs={},
                exception={"type": "ValueError"},
                context={},
                failure_type="PERMANENT_VALIDATION",
                category="permanent",
                remediation="FIX_DATA",
                confidence=0.9,
                rule="r",
                priority="LOW",
                priority_value=4,
                target_queue="maintenance",
                attempts=0,
                created_at=1.0,
                updated_at=1.0,
            )

        # As an older sidecar might have spooled it: a name PostgreSQL cannot store.
        lines = [record(task), record(task + "\u0000"), record(task)]
        encode = msgspec.json.Encoder().encode
        (tmp_path / SPOOL_FILE).write_bytes(b"".join(encode(_Put(r)) + b"\n" for r in lines))
        quarantined = []

        async def replay() -> SpoolingDlq:
            await migrate(postgres_dsn)
            store = postgres_store(postgres_dsn)
            await store.open()
            spool = SpoolingDlq(store, tmp_path, on_quarantine=lambda: quarantined.append(1))
            await spool.replay()
            await spool.close()
            return spool

        spool = asyncio.run(replay())

        assert (spool.pending, quarantined) == (0, [1])
        stored = rows(postgres_dsn, "SELECT count(*) FROM dlq_records WHERE task_name = %s", task)
        assert stored == [(2,)]
        [kept] = (tmp_path / QUARANTINE_FILE).read_bytes().splitlines()
        assert json.loads(kept)["operation"]["record"]["task_name"] == task + "\u0000"
        assert "NUL" in json.loads(kept)["refused"]


class TestHangs:
    """A hanging (SIGSTOPped) PostgreSQL or Redis costs a hook its budget, not minutes."""

    def test_hooks_answer_while_postgres_hangs_and_nothing_is_lost(
        self, postgres_service, tmp_path
    ):
        dsn = postgres_service.start().dsn
        task = f"data.hang_{uuid.uuid4().hex[:8]}"
        settings = {"policies": str(DEFAULT_POLICIES), "postgres_dsn": dsn}
        with SidecarProcess(tmp_path, HOOKS, **settings) as process:
            postgres_service.pause()
            try:
                answered = []
                for i in range(10):  # the client's own timeout is 3 s: a 12 s hold fails
                    status, answer = call(
                        process.port,
                        "POST",
                        "/v1/hooks/failure",
                        dead_letter(task, f"t{i}"),
                        timeout=3,
                    )
                    assert status == 200, answer
                    answered.append(answer["dlq_id"])
            finally:
                postgres_service.resume()
            wait_for(
                lambda: (
                    rows(dsn, "SELECT count(*) FROM dlq_records WHERE task_name = %s", task)
                    == [(10,)]
                ),
                30,
                "the spool drained into PostgreSQL",
            )
            stored = rows(dsn, "SELECT id FROM dlq_records WHERE task_name = %s", task)
            assert sorted(r[0] for r in stored) == sorted(answered)

    def test_claims_fall_back_at_once_while_redis_hangs(
        self, postgres_service, redis_service, tmp_path
    ):
        settings = {
            "policies": str(DEFAULT_POLICIES),
            "postgres_dsn": postgres_service.start().dsn,
            "redis_url": redis_service.start().url,
        }
        with SidecarProcess(tmp_path, HOOKS, **settings) as process:
            redis_service.pause()
            try:
                answers = [
                    call(process.port, "POST", "/v1/idempotency/claim", {"key": f"k{i}"}, timeout=3)
                    for i in range(20)
                ]
            finally:
                redis_service.resume()
        # The first claim meets the hang (and may be refused with a 503); the others go
        # to PostgreSQL at once.
        assert [status for status, _ in answers[1:]] == [200] * 19
        assert all(body["claimed"] for _, body in answers[1:])


class TestSlowAndMalformedClients:
    """Slow uploads hold at most their client's share; odd headers get 4xx, no token
    reaches the log."""

    OTHER = "data-hooks-other-0123456789"

    @pytest.fixture
    def small(self, tmp_path):
        tokens = f"a:{HOOKS},b:{self.OTHER}"
        with SidecarProcess(
            tmp_path, None, policies=str(DEFAULT_POLICIES), hook_tokens=tokens, max_in_flight="4"
        ) as process:
            yield process

    @staticmethod
    def slow_upload(port: int, token: str) -> socket.socket:
        """Headers and half a body, then nothing: the request holds its slot."""
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/hooks/failure HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"task_id": "slow"'
        )
        return sock

    def test_a_slow_client_holds_half_the_slots_and_then_gets_408(self, small):
        slow = [self.slow_upload(small.port, HOOKS) for _ in range(2)]
        try:
            wait_for(lambda: metric(small, "task_sidecar_requests_rejected_total", "client_share")
                     or self.third_refused(small), 10, "the client's share taken")  # fmt: skip
            # Another client is still answered.
            status, answer = call(
                small.port, "POST", "/v1/hooks/failure", dead_letter("data.ok", "b"), self.OTHER
            )
            assert (status, answer["action"]) == (200, "dead_letter")
            # The slow bodies are cut off.
            for sock in slow:
                sock.settimeout(15)
                assert sock.recv(100).startswith(b"HTTP/1.1 408")
        finally:
            for sock in slow:
                sock.close()
        assert metric(small, "task_sidecar_requests_rejected_total", "body_timeout") == 2

    @staticmethod
    def third_refused(process) -> bool:
        status, _ = call(
            process.port, "POST", "/v1/hooks/failure", dead_letter("data.x", "c"), HOOKS
        )
        return status == 503

    def test_undecodable_authorization_is_a_401_and_tokens_never_reach_the_log(self, small):
        for header in (b"Authorization: Bearer \xff\xfe" + HOOKS.encode(),
                       b" Authorization: Bearer " + HOOKS.encode()):  # fmt: skip
            with socket.create_connection(("127.0.0.1", small.port)) as sock:
                sock.sendall(
                    b"POST /v1/hooks/start HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    + header + b"\r\n\r\n{}"
                )  # fmt: skip
                sock.settimeout(10)
                status = sock.recv(100).split(b" ")[1]
            assert status in (b"400", b"401")
        assert HOOKS not in small.output()


def metric(process, name: str, reason: str) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{process.port}/metrics")
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'{name}{{reason="{reason}"}}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
