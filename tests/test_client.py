"""The worker client. One table of faults runs over both clients (sync over http.client,
async over aiohttp) against the real sidecar process, through a real aiohttp proxy that
breaks requests the way each row says (tests/faultproxy.py): both must answer, count and
log every error alike. Also: exception serialisation, idempotency keys, report ids kept
across re-sends, batching of success events."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import ssl
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import (
    AsyncSidecarClient,
    SidecarClient,
    idempotency_key,
    new_report_id,
    serialize_exception,
)
from tests.faultproxy import FaultProxy
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port

TOKEN = "client-test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies.yaml"
FAILURE, START, BATCH = "/v1/hooks/failure", "/v1/hooks/start", "/v1/hooks/batch"


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


# --- serialisation -----------------------------------------------------------------------


def test_os_error_carries_errno_mro_and_traceback() -> None:
    exc = raised(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    info = serialize_exception(exc)
    assert info["type"] == "ConnectionRefusedError"
    assert info["module"] == "builtins"
    assert info["mro"][:3] == [
        "builtins.ConnectionRefusedError",
        "builtins.ConnectionError",
        "builtins.OSError",
    ]
    assert info["errno"] == errno.ECONNREFUSED
    assert "raise exc" in info["traceback"]
    assert info["http_status"] is None
    assert "sqlstate" not in info


def test_ssl_error_errno_is_not_sent() -> None:
    exc = raised(ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    info = serialize_exception(exc)
    assert info["errno"] is None
    assert "builtins.OSError" in info["mro"]


def test_traceback_is_size_capped() -> None:
    exc = raised(ValueError("x" * 100_000))
    info = serialize_exception(exc, traceback_limit=1000)
    assert len(info["traceback"]) == 1000
    assert len(info["message"]) <= 4096


def test_requests_http_error_status() -> None:
    requests = pytest.importorskip("requests")
    response = requests.Response()
    response.status_code = 503
    response.headers["Retry-After"] = "30"
    response.url = "http://example.invalid/x"
    exc = raised(requests.HTTPError("503 Server Error", response=response))
    info = serialize_exception(exc)
    assert info["http_status"] == 503
    assert info["module"] == "requests.exceptions"
    assert "requests.exceptions.RequestException" in info["mro"]
    client = SidecarClient(f"http://127.0.0.1:{free_port()}")
    event = client.failure_event("t1", "x", exc)
    assert event["context"]["retry_after_seconds"] == 30.0


def test_aiohttp_response_error_status() -> None:
    import aiohttp

    exc = raised(
        aiohttp.ClientResponseError(None, (), status=429, message="Too Many Requests")  # type: ignore[arg-type]
    )
    assert serialize_exception(exc)["http_status"] == 429


def test_urllib_http_error_status() -> None:
    exc = raised(urllib.error.HTTPError("http://x", 404, "Not Found", None, None))  # type: ignore[arg-type]
    info = serialize_exception(exc)
    assert info["http_status"] == 404
    assert info["errno"] is None


def test_botocore_client_error_status() -> None:
    botocore = pytest.importorskip("botocore.exceptions")
    response = {
        "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
        "ResponseMetadata": {"HTTPStatusCode": 503, "HTTPHeaders": {}},
    }
    exc = raised(botocore.ClientError(response, "PutObject"))
    assert serialize_exception(exc)["http_status"] == 503


def test_httpx_status_error() -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("GET", "http://example.invalid")
    response = httpx.Response(502, request=request)
    exc = raised(httpx.HTTPStatusError("bad gateway", request=request, response=response))
    assert serialize_exception(exc)["http_status"] == 502


def test_psycopg_sqlstate() -> None:
    errors = pytest.importorskip("psycopg.errors")
    info = serialize_exception(raised(errors.DeadlockDetected("deadlock detected")))
    assert info["sqlstate"] == "40P01"
    assert info["mro"][0] == "psycopg.errors.DeadlockDetected"


def test_psycopg2_style_pgcode_and_sdk_status() -> None:
    class PgError(Exception):
        pgcode = "23505"

    class SdkError(Exception):
        status_code = 409

    assert serialize_exception(raised(PgError("dup")))["sqlstate"] == "23505"
    assert serialize_exception(raised(SdkError("conflict")))["http_status"] == 409


def test_unprintable_exception_does_not_break() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    info = serialize_exception(raised(Weird()))
    assert info["type"] == "Weird"
    assert "unprintable" in info["message"]


# --- idempotency keys --------------------------------------------------------------------


def test_idempotency_keys_are_canonical_and_scoped() -> None:
    a = idempotency_key("billing.charge", [1, "x"], {"b": 2, "a": 1})
    b = idempotency_key("billing.charge", (1, "x"), {"a": 1, "b": 2})
    assert a == b
    assert a.startswith("billing.charge:")
    assert idempotency_key("billing.charge", [2], {}) != idempotency_key("billing.charge", [1], {})
    u1 = idempotency_key("t", [], {}, "user", user_id="u1")
    u2 = idempotency_key("t", [], {}, "user", user_id="u2")
    assert u1 != u2
    assert idempotency_key("t", [], {}, "device", device_id="d") != a
    assert idempotency_key("t", [], {}, "task", task_id="id-1") != idempotency_key(
        "t", [], {}, "task", task_id="id-2"
    )
    with pytest.raises(ValueError, match="user_id"):
        idempotency_key("t", [], {}, "user")
    with pytest.raises(ValueError, match="scope"):
        idempotency_key("t", [], {}, "tenant")  # type: ignore[arg-type]


def test_failure_event_carries_a_report_id_and_a_small_workflow() -> None:
    client = SidecarClient(f"http://127.0.0.1:{free_port()}")
    first = client.failure_event("task-1", "x", raised(KeyError("k")), attempt=2)
    again = client.failure_event("task-1", "x", raised(KeyError("k")), attempt=2)
    assert first["report_id"].startswith("task-1:2:")
    assert first["report_id"] != again["report_id"]  # one per report, not per task
    assert "workflow" not in first  # nothing to continue: not sent at all
    given = client.failure_event("t", "x", {"type": "E"}, report_id="r-1")
    assert given["report_id"] == "r-1"  # a caller re-sending its report keeps its id
    chained = client.failure_event(
        "t",
        "x",
        {"type": "E"},
        workflow={"chain": [{"task": "next", "args": [1]}], "callbacks": [], "root_id": "r"},
    )
    assert chained["workflow"] == {"chain": [{"task": "next", "args": [1]}], "root_id": "r"}
    client.close(timeout=0.1)


# --- both clients, driven alike ------------------------------------------------------------


class Driver:
    """The same calls on a SidecarClient or an AsyncSidecarClient (run in its own loop)."""

    def __init__(self, kind: str, url: str, token: str | None, **options: Any) -> None:
        self.kind = kind
        self._runner = asyncio.Runner() if kind == "async" else None
        cls = AsyncSidecarClient if kind == "async" else SidecarClient
        self.client: Any = cls(url, token, **options)
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if self._runner is not None and inspect.iscoroutinefunction(attr):
            runner = self._runner
            return lambda *args, **kwargs: runner.run(attr(*args, **kwargs))
        return attr

    def close(self, timeout: float = 2.0) -> None:
        if self.closed:
            return
        self.closed = True
        self.__getattr__("close")(timeout)
        if self._runner is not None:
            self._runner.close()


Make = Callable[..., Driver]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with SidecarProcess(
        tmp_path_factory.mktemp("client"), TOKEN, policies=str(POLICIES)
    ) as process:
        yield process


@pytest.fixture
def proxy(sidecar: SidecarProcess) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{sidecar.port}") as proxy:
        yield proxy


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driver]]:
    """Builds clients of the parametrised kind; closes them after the test."""
    made: list[Driver] = []

    def make(url: str, token: str | None = TOKEN, **options: Any) -> Driver:
        made.append(Driver(request.param, url, token, **options))
        return made[-1]

    yield make
    for driver in made:
        driver.close(timeout=0.2)


def outage_lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


FAULTS = [  # (fault injected by the proxy, requests it sees for the one call that is made)
    pytest.param("refused", 0, id="connection-refused"),
    pytest.param("hold", 1, id="timeout"),
    pytest.param("drop", 2, id="dropped-connection"),  # re-sent once, dropped again
    pytest.param(429, 1, id="429-overloaded"),
    pytest.param(503, 1, id="503-unavailable"),
    pytest.param(500, 1, id="500"),
    pytest.param(404, 1, id="404-wrong-prefix"),
    pytest.param("bad-token", 1, id="401-wrong-token"),
    pytest.param("not_json", 1, id="200-not-json"),
    pytest.param("wrong_shape", 1, id="200-wrong-shape"),
]


class TestEveryErrorFallsBackAlike:
    """Whatever goes wrong, both clients decide locally, allow the start, grant the claim,
    say False to complete/release, log the outage once and stop asking for a while."""

    @pytest.mark.parametrize(("fault", "requests"), FAULTS)
    def test_fault(
        self,
        make_client: Make,
        proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture,
        fault: Any,
        requests: int,
    ) -> None:
        caplog.set_level(logging.WARNING, "sidecar.client")
        url = f"http://127.0.0.1:{free_port()}" if fault == "refused" else proxy.url
        token = "wrong-token" if fault == "bad-token" else TOKEN
        proxy.fault = "pass" if fault == "bad-token" else fault
        client = make_client(url, token, timeout=0.2, policies=POLICIES, retry_interval=3600)

        decision = client.failure("t-1", "billing.charge", raised(ValueError("Invalid data")))
        assert decision["source"] == "local"
        assert decision["action"] == "dead_letter"
        assert decision["classification"]["failure_type"] == "PERMANENT_VALIDATION"
        again = client.failure("t-2", "billing.charge", raised(ValueError("Invalid data")))
        assert again["source"] == "local"
        assert client.start("t-3", "billing.charge") == {
            "allow": True, "delay_seconds": 0.0, "breaker": None, "source": "fallback"
        }  # fmt: skip
        assert client.claim("k") == {"claimed": True, "source": "fallback"}
        assert client.claim_many(["a", "b"]) == [{"claimed": True, "source": "fallback"}] * 2
        assert client.complete("k") is False
        assert client.release("k") is False

        assert len(proxy.seen) == requests  # after the first error the sidecar is not asked
        stats = client.stats()
        assert (stats["fallbacks"], stats["outages"], stats["down"]) == (7, 1, True)
        assert stats["pending"] == 2  # both dead letters wait for the sidecar to store them
        (line,) = outage_lines(caplog, "sidecar unavailable")
        assert "deciding locally until it answers" in line

    def test_fault_reasons_are_worded_alike(
        self,
        make_client: Make,
        proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The outage line names the cause in the same words for both transports."""
        caplog.set_level(logging.WARNING, "sidecar.client")
        refused = make_client(f"http://127.0.0.1:{free_port()}", timeout=0.2)
        refused.start("t", "x")
        proxy.fault = "hold"
        slow = make_client(proxy.url, timeout=0.2)
        slow.start("t", "x")
        proxy.fault = 503
        busy = make_client(proxy.url, timeout=0.2)
        busy.start("t", "x")
        assert outage_lines(caplog, "sidecar unavailable") == [
            f"sidecar unavailable ({why}); deciding locally until it answers"
            for why in ("Connection refused (ECONNREFUSED)", "timed out", "HTTP 503")
        ]

    def test_sidecar_asked_again_after_the_retry_interval(
        self,
        make_client: Make,
        proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Once it answers again: its decisions, the end of the outage logged once, and the
        dead letter decided locally delivered in a batch."""
        caplog.set_level(logging.WARNING, "sidecar.client")
        proxy.fault = 503
        client = make_client(proxy.url, policies=POLICIES, retry_interval=0.05, start_cache=0)
        local = client.failure("t-back", "billing.charge", raised(ValueError("Invalid data")))
        assert local["source"] == "local"
        proxy.fault = "pass"
        # A new task id each time: starts of one id with no end count as lost runs.
        answer = wait_for(
            lambda: "source" not in (a := client.start(uuid.uuid4().hex, "x")) and a, 10
        )
        assert answer["allow"] is True
        assert len(outage_lines(caplog, "sidecar answers again")) == 1
        assert client.flush(10)
        (batch,) = [f.body for f in proxy.forwarded if f.path == BATCH]
        assert [(e["type"], e["task_id"]) for e in batch] == [("failure", "t-back")]


class TestTheRealSidecar:
    """Both clients against the sidecar itself: its decisions, one kept-alive connection,
    idempotency claims, batched successes, start allowances."""

    def test_decides_claims_and_keeps_the_connection(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        client = make_client(proxy.url, start_cache=0)
        exc = raised(ValueError("Invalid data"))
        first = client.failure("t-1", "billing.process_payment", exc, args=[1], kwargs={"a": 2})
        assert "source" not in first
        assert first["action"] == "dead_letter"
        assert first["dlq_id"]
        retried = client.failure(
            "t-2", "e2e.job", raised(ConnectionResetError(errno.ECONNRESET, "reset"))
        )
        assert (retried["action"], "source" in retried) == ("retry", False)
        assert client.start("t-3", "billing.process_payment")["allow"] is True
        key = idempotency_key("billing.process_payment", [client.kind], {})
        assert client.claim(key)["claimed"] is True
        assert client.claim(key)["claimed"] is False
        assert client.complete(key) is True
        other = idempotency_key("billing.process_payment", [client.kind, 2], {})
        assert client.claim(other, task_name="billing.process_payment")["claimed"] is True
        assert client.release(other) is True
        claims = [f.body for f in proxy.forwarded if f.path == "/v1/idempotency/claim"]
        assert "task_name" not in claims[0]  # not named: the sidecar counts "__unnamed__"
        assert claims[-1]["task_name"] == "billing.process_payment"
        assert {p.peer for p in proxy.seen} == {proxy.seen[0].peer}  # one connection
        assert all(f.status == 200 for f in proxy.forwarded)
        client.success("t-1", "billing.process_payment", dlq_id=first["dlq_id"])
        assert client.flush(5)
        assert client.stats()["sent"] == 1
        assert client.stats()["fallbacks"] == 0

    def test_claims_many_keys_in_one_request(self, make_client: Make, proxy: FaultProxy) -> None:
        client = make_client(proxy.url, start_cache=0)
        keys = [f"batch-{client.kind}-{uuid.uuid4().hex}-{i}" for i in range(3)]
        assert client.claim(keys[1])["claimed"] is True
        answers = client.claim_many([*keys, keys[0]], task_name="billing.charge")
        assert [a["claimed"] for a in answers] == [True, False, True, False]
        assert client.complete(keys[0]) is True  # the owner its batch claim got
        assert client.release(keys[2]) is True
        (batch,) = [f.body for f in proxy.forwarded if f.path == "/v1/idempotency/claims"]
        assert [c["key"] for c in batch["claims"]] == [*keys, keys[0]]
        assert {c["task_name"] for c in batch["claims"]} == {"billing.charge"}

    def test_connection_closed_by_the_server_between_calls_is_reopened(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        client = make_client(proxy.url, start_cache=0)
        assert "source" not in client.start("t", "x")
        proxy.drop_connections()  # a server closing an idle keep-alive connection
        assert "source" not in client.start("t", "x")
        assert client.stats()["fallbacks"] == 0
        assert len({p.peer for p in proxy.seen}) == 2

    def test_start_answers_are_cached_until_a_breaker_opens(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        """A run the sidecar let start lets the next start without a round trip; a failure
        answer reporting an open breaker ends that at once."""
        client = make_client(proxy.url, start_cache=60)
        task = f"cache.{client.kind}"
        assert "source" not in client.start("t1", task)
        assert client.start("t2", task)["source"] == "cache"
        deadlock = {"type": "DeadlockDetected", "message": "deadlock detected"}
        answers = [client.failure(f"f{i}", task, deadlock) for i in range(10)]
        assert answers[-1]["breaker"]["state"] == "open"
        refused = client.start("t3", task)
        assert refused["allow"] is False
        assert "source" not in refused
        assert len(proxy.bodies(START)) == 2  # the cached start never reached it

    def test_a_healthy_run_sends_only_its_end_and_a_redelivery_asks(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        """A first delivery answered from the cache sends nothing (not even a batched
        start): its success is the run's one event. A redelivery asks before it runs."""
        client = make_client(proxy.url, start_cache=60, flush_interval=0.02)
        task = f"healthy.{client.kind}"
        run = {"host": "w1", "process": "b0-1", "delivery_count": 1}
        assert "source" not in client.start("h1", task, **run)  # the first fills the cache
        assert client.start("h2", task, **run)["source"] == "cache"
        client.success("h2", task)
        assert client.flush(10)
        assert [e["type"] for batch in proxy.bodies(BATCH) for e in batch] == ["success"]
        again = client.start("h2", task, ask=True, redelivered=True, **run)
        assert "source" not in again
        assert [b["task_id"] for b in proxy.bodies(START)] == ["h1", "h2"]
        assert proxy.bodies(START)[1]["redelivered"] is True


def test_a_forked_child_does_not_share_the_parents_connection(proxy: FaultProxy) -> None:
    """A prefork pool child forked after its parent used the client (a WorkerLostError
    report) opens its own connection: on the parent's socket it would read answers meant
    for the parent or its other children (seen: an ok task refused with the poison
    task's dead letter)."""
    client = SidecarClient(proxy.url, TOKEN, start_cache=0, flush_interval=0.02)
    try:
        assert "source" not in client.start("fork-1", "fork.parent")  # keep-alive open
        client.success("fork-1", "fork.parent")  # the batcher's thread and connection too
        pid = os.fork()
        if pid == 0:  # the child: a start and a success of its own, then out, whatever happens
            code = 1
            try:
                ok = "source" not in client.start("fork-2", "fork.child")
                client.success("fork-2", "fork.child")
                code = 0 if ok and client.flush(5) else 2
            finally:
                os._exit(code)
        try:  # (status,) once the child is reaped
            (status,) = wait_for(
                lambda: (r := os.waitpid(pid, os.WNOHANG))[0] and (r[1],), 20, "the child"
            )
        except AssertionError:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        assert os.waitstatus_to_exitcode(status) == 0
        assert "source" not in client.start("fork-3", "fork.parent")  # the parent's still works
        assert client.flush(10)
        peers = {s.body["task_id"]: s.peer for s in proxy.seen if s.path == START}
        assert peers["fork-1"] == peers["fork-3"]
        assert peers["fork-2"] != peers["fork-1"]
        sent = [e["task_id"] for batch in proxy.bodies(BATCH) for e in batch]
        assert sorted(sent) == ["fork-1", "fork-2"]  # the parent's buffer is not sent twice
    finally:
        client.close(0.2)


class TestReportIds:
    """A report is made once: every re-send of it carries the same report_id."""

    def test_timed_out_failure_resent_in_a_batch_keeps_its_report_id(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        proxy.faults[FAILURE] = "hold"  # the sidecar hangs on the hook, then stores late
        client = make_client(
            proxy.url, timeout=0.2, policies=POLICIES, retry_interval=0.05, flush_interval=0.02
        )
        decision = client.failure("t-late", "billing.charge", raised(ValueError("Invalid data")))
        assert (decision["source"], decision["action"]) == ("local", "dead_letter")
        assert client.flush(10)  # the batch re-sends the dead letter
        proxy.release()  # and the held original reaches the sidecar after all
        wait_for(lambda: len(proxy.forwarded) == 2, 10, "both copies forwarded")
        (original,) = proxy.bodies(FAILURE)
        ((resent,),) = proxy.bodies(BATCH)
        assert resent["report_id"] == original["report_id"]
        assert resent == {"type": "failure", **original, "worker_gave_up": True}
        assert {f.status for f in proxy.forwarded} == {200}

    def test_refused_batch_resends_successes_with_the_same_report_ids(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        proxy.faults[BATCH] = 503
        client = make_client(proxy.url, flush_interval=0.02, retry_interval=0.05)
        client.success("s-1", "x", runtime_seconds=0.1)
        client.success("s-2", "x", attempt=1)
        wait_for(lambda: proxy.seen, 10, "a batch tried")
        proxy.faults[BATCH] = "pass"
        assert client.flush(10)
        batches = proxy.bodies(BATCH)
        assert len(batches) >= 2
        ids = [[e["report_id"] for e in batch] for batch in batches]
        assert all(i == ids[0] for i in ids)  # the same two reports each time
        assert ids[0][0].startswith("s-1:0:")
        assert ids[0][1].startswith("s-2:1:")

    def test_ids_are_unique_in_a_process_and_across_a_fork(self) -> None:
        """Prefork children made by one parent must not repeat each other's ids."""
        parent = [new_report_id("t", 0) for _ in range(1000)]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            os.write(write, "\n".join(new_report_id("t", 0) for _ in range(1000)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = pipe.read().split("\n")
        os.waitpid(pid, 0)
        assert len(set(parent)) == len(set(child)) == 1000
        assert not set(parent) & set(child)
        assert len({i.rsplit(":", 1)[1][:32] for i in parent + child}) == 2  # one prefix each


class TestLocalDecisions:
    """Without the sidecar and without a readable policy: a conservative default."""

    def test_without_policies_a_conservative_default(self, make_client: Make) -> None:
        client = make_client(f"http://127.0.0.1:{free_port()}", fallback_max_retries=2)
        exc = raised(ConnectionResetError(errno.ECONNRESET, "reset"))
        first = client.failure("id", "x", exc, attempt=0)
        assert (first["source"], first["action"]) == ("default", "retry")
        assert 5 <= first["delay_seconds"] <= 10
        second = client.failure("id", "x", exc, attempt=1)
        assert 10 <= second["delay_seconds"] <= 20
        assert client.failure("id", "x", exc, attempt=2)["action"] == "dead_letter"

    def test_bad_policies_file_falls_back_to_default(
        self, make_client: Make, tmp_path: Path
    ) -> None:
        bad = tmp_path / "p.yaml"
        bad.write_text("version: 1\nretry: [")
        client = make_client(f"http://127.0.0.1:{free_port()}", policies=bad)
        assert client.failure("id", "x", raised(KeyError("k")))["source"] == "default"


class TestBatching:
    """Successes cost the task a buffer append; a thread sends them in batches."""

    def test_successes_are_batched_in_background(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        client = make_client(proxy.url, batch_size=20, flush_interval=0.05)
        for i in range(50):
            client.success(f"id-{i}", "x", runtime_seconds=0.01)
        assert client.flush(5)
        assert {s.path for s in proxy.seen} == {BATCH}
        events = [e for batch in proxy.bodies(BATCH) for e in batch]
        assert [e["task_id"] for e in events] == [f"id-{i}" for i in range(50)]
        assert all(e["type"] == "success" for e in events)
        assert len(proxy.seen) <= 5
        assert client.stats()["sent"] == 50

    def test_buffer_is_bounded_and_drops_are_counted(
        self, make_client: Make, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, "sidecar.client")
        client = make_client(f"http://127.0.0.1:{free_port()}", buffer_size=10, flush_interval=0.02)
        for i in range(25):
            client.success(f"id-{i}", "x")
        assert client.stats()["dropped"] >= 15
        assert not client.flush(0.2)
        client.close(timeout=0.2)
        assert outage_lines(caplog, "dropped")

    def test_buffered_events_are_sent_once_the_sidecar_answers(
        self, make_client: Make, proxy: FaultProxy
    ) -> None:
        proxy.fault = 503
        client = make_client(proxy.url, flush_interval=0.02, retry_interval=0.05)
        client.success("id-1", "x")
        wait_for(lambda: proxy.seen, 10, "a batch tried")
        proxy.fault = "pass"
        assert client.flush(5)
        assert (client.stats()["sent"], client.stats()["dropped"]) == (1, 0)
        assert [f.status for f in proxy.forwarded] == [200]

    def test_events_the_sidecar_refuses_one_by_one_are_not_resent(
        self,
        make_client: Make,
        proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 400 for one item would come back on every re-send: logged, not retried."""
        caplog.set_level(logging.WARNING, "sidecar.client")
        client = make_client(proxy.url, flush_interval=0.02)
        client.success("ok", "x")
        client.success("bad", "x" * 600)  # over the sidecar's 512-character limit
        assert client.flush(5)
        assert len(proxy.bodies(BATCH)) == 1
        (line,) = outage_lines(caplog, "refused 1 of 2 batched events")
        assert "task_name" in line
