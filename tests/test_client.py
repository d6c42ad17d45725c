"""The worker client: exception serialisation, idempotency keys, fail-open (closed port,
slow server, 429/503), batching of success events, and the real sidecar."""

from __future__ import annotations

import errno
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import (
    AsyncSidecarClient,
    SidecarClient,
    idempotency_key,
    serialize_exception,
)
from tests.processes import SidecarProcess
from tests.services import free_port

TOKEN = "client-test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies.yaml"


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


# --- fail-open ---------------------------------------------------------------------------


def test_closed_port_falls_back_to_policies_quickly_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = SidecarClient(f"http://127.0.0.1:{free_port()}", "t", policies=POLICIES)
    caplog.set_level(logging.WARNING, "sidecar.client")
    started = time.monotonic()
    decisions = [
        client.failure("id", "billing.process_payment", raised(ValueError("Invalid data")))
        for _ in range(20)
    ]
    assert time.monotonic() - started < 2
    assert {d["source"] for d in decisions} == {"local"}
    assert decisions[0]["action"] == "dead_letter"
    assert decisions[0]["classification"]["failure_type"] == "PERMANENT_VALIDATION"
    assert client.start("id", "x") == {
        "allow": True, "delay_seconds": 0.0, "breaker": None, "source": "fallback"
    }  # fmt: skip
    assert client.claim("k")["claimed"] is True
    assert client.release("k") is False
    outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_logs) == 1
    assert client.stats()["fallbacks"] >= 20
    client.close(timeout=0.1)


def test_without_policies_a_conservative_default() -> None:
    client = SidecarClient(f"http://127.0.0.1:{free_port()}", fallback_max_retries=2)
    exc = raised(ConnectionResetError(errno.ECONNRESET, "reset"))
    first = client.failure("id", "x", exc, attempt=0)
    assert first["source"] == "default"
    assert first["action"] == "retry"
    assert 5 <= first["delay_seconds"] <= 10
    second = client.failure("id", "x", exc, attempt=1)
    assert 10 <= second["delay_seconds"] <= 20
    assert client.failure("id", "x", exc, attempt=2)["action"] == "dead_letter"
    client.close(timeout=0.1)


def test_bad_policies_file_falls_back_to_default(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nretry: [")
    client = SidecarClient(f"http://127.0.0.1:{free_port()}", policies=bad)
    assert client.failure("id", "x", raised(KeyError("k")))["source"] == "default"
    client.close(timeout=0.1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.calls.append((self.path, json.loads(body)))
        mode = self.server.mode
        if mode == "slow":
            time.sleep(1.0)
        status, answer = 200, {"recorded": True}
        if mode in (429, 503):
            status, answer = mode, {"title": "busy"}
        elif self.path == "/v1/hooks/batch":
            answer = {"results": [{"recorded": True}] * len(json.loads(body))}
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[ThreadingHTTPServer]:
    """A plain HTTP server standing in for a slow or overloaded sidecar."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.calls = []  # type: ignore[attr-defined]
    server.mode = "ok"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_slow_sidecar_times_out_and_falls_back(fake_server: ThreadingHTTPServer) -> None:
    fake_server.mode = "slow"  # type: ignore[attr-defined]
    client = SidecarClient(_url(fake_server), timeout=0.1, policies=POLICIES, retry_interval=5)
    started = time.monotonic()
    decision = client.failure("id", "x", raised(ValueError("Invalid data")))
    assert time.monotonic() - started < 0.6
    assert decision["source"] == "local"
    started = time.monotonic()  # during the outage the sidecar is not even tried
    for _ in range(10):
        client.failure("id", "x", raised(ValueError("Invalid data")))
    assert time.monotonic() - started < 0.5
    assert len(fake_server.calls) == 1  # type: ignore[attr-defined]
    client.close(timeout=0.1)


@pytest.mark.parametrize("status", [429, 503])
def test_overloaded_sidecar_answers_fall_back(
    fake_server: ThreadingHTTPServer, status: int
) -> None:
    fake_server.mode = status  # type: ignore[attr-defined]
    client = SidecarClient(_url(fake_server), policies=POLICIES)
    assert client.failure("id", "x", raised(ValueError("Invalid data")))["source"] == "local"
    assert client.start("id", "x")["allow"] is True
    client.close(timeout=0.1)


def test_successes_are_batched_in_background(fake_server: ThreadingHTTPServer) -> None:
    client = SidecarClient(_url(fake_server), batch_size=20, flush_interval=0.05)
    started = time.monotonic()
    for i in range(50):
        client.success(f"id-{i}", "x", runtime_seconds=0.01)
    assert time.monotonic() - started < 0.1  # the task pays almost nothing
    assert client.flush(5)
    calls = fake_server.calls  # type: ignore[attr-defined]
    assert {path for path, _ in calls} == {"/v1/hooks/batch"}
    events = [e for _, batch in calls for e in batch]
    assert [e["task_id"] for e in events] == [f"id-{i}" for i in range(50)]
    assert all(e["type"] == "success" for e in events)
    assert len(calls) <= 5
    assert client.stats()["sent"] == 50
    client.close()


def test_buffer_is_bounded_and_drops_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "sidecar.client")
    client = SidecarClient(f"http://127.0.0.1:{free_port()}", buffer_size=10, flush_interval=0.02)
    for i in range(25):
        client.success(f"id-{i}", "x")
    assert client.stats()["dropped"] >= 15
    assert not client.flush(0.2)
    client.close(timeout=0.2)
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_buffered_events_are_sent_once_the_sidecar_answers(
    fake_server: ThreadingHTTPServer,
) -> None:
    fake_server.mode = 503  # type: ignore[attr-defined]
    client = SidecarClient(_url(fake_server), flush_interval=0.02, retry_interval=0.05)
    client.success("id-1", "x")
    deadline = time.monotonic() + 5
    while not fake_server.calls and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    fake_server.mode = "ok"  # type: ignore[attr-defined]
    assert client.flush(5)
    assert client.stats()["sent"] == 1
    assert client.stats()["dropped"] == 0
    client.close()


# --- the real sidecar --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with SidecarProcess(
        tmp_path_factory.mktemp("client"), TOKEN, policies=str(POLICIES)
    ) as process:
        yield process


def test_real_sidecar_decides_and_keeps_the_connection(sidecar: SidecarProcess) -> None:
    client = SidecarClient(f"http://127.0.0.1:{sidecar.port}", TOKEN)
    exc = raised(ValueError("Invalid data"))
    first = client.failure("t-1", "billing.process_payment", exc, args=[1], kwargs={"a": 2})
    assert "source" not in first
    assert first["action"] == "dead_letter"
    assert first["dlq_id"]
    conn = client._transport._local.conn
    assert client.start("t-2", "billing.process_payment")["allow"] is True
    assert client._transport._local.conn is conn  # keep-alive: same connection
    key = idempotency_key("billing.process_payment", [1], {})
    assert client.claim(key)["claimed"] is True
    assert client.claim(key)["claimed"] is False
    assert client.complete(key) is True
    client.success("t-1", "billing.process_payment", dlq_id=first["dlq_id"])
    assert client.flush(5)
    assert client.stats()["sent"] == 1
    client.close()


def test_wrong_token_falls_back(sidecar: SidecarProcess) -> None:
    client = SidecarClient(f"http://127.0.0.1:{sidecar.port}", "wrong", policies=POLICIES)
    assert client.failure("t", "x", raised(ValueError("Invalid data")))["source"] == "local"
    client.close()


async def test_async_client_real_sidecar_and_fallback(sidecar: SidecarProcess) -> None:
    client = AsyncSidecarClient(f"http://127.0.0.1:{sidecar.port}", TOKEN)
    exc = raised(ConnectionResetError(errno.ECONNRESET, "reset"))
    decision = await client.failure("t-a", "e2e.async_job", exc)
    assert "source" not in decision
    assert decision["action"] == "retry"
    assert (await client.start("t-a", "e2e.async_job"))["allow"] is True
    assert (await client.claim("async-key"))["claimed"] is True
    assert await client.release("async-key") is True
    client.success("t-a", "e2e.async_job")
    await client.close()

    down = AsyncSidecarClient(f"http://127.0.0.1:{free_port()}", policies=POLICIES)
    started = time.monotonic()
    local = await down.failure("t-b", "x", raised(ValueError("Invalid data")))
    assert local["source"] == "local"
    assert (await down.start("t-b", "x"))["allow"] is True
    assert (await down.claim("k"))["claimed"] is True
    assert time.monotonic() - started < 1
    await down.close(timeout=0.1)


def test_server_socket_closed_between_calls_reconnects(sidecar: SidecarProcess) -> None:
    client = SidecarClient(f"http://127.0.0.1:{sidecar.port}", TOKEN, start_cache=0)
    assert client.start("t", "x")["allow"] is True
    client._transport._local.conn.sock.shutdown(socket.SHUT_RDWR)  # a stale keep-alive
    answer = client.start("t", "x")
    assert "source" not in answer
    client.close()


def test_start_answers_are_cached_until_a_breaker_opens(sidecar: SidecarProcess) -> None:
    """A run the sidecar let start lets the next start without a round trip; a failure
    answer reporting an open breaker ends that at once."""
    client = SidecarClient(f"http://127.0.0.1:{sidecar.port}", TOKEN, start_cache=60)
    try:
        assert "source" not in client.start("t1", "cache.task")
        assert client.start("t2", "cache.task")["source"] == "cache"
        deadlock = {"type": "DeadlockDetected", "message": "deadlock detected"}
        answers = [client.failure(f"f{i}", "cache.task", deadlock) for i in range(10)]
        assert answers[-1]["breaker"]["state"] == "open"
        refused = client.start("t3", "cache.task")
        assert refused["allow"] is False
        assert "source" not in refused
    finally:
        client.close()
