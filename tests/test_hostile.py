"""Hostile input: generated and hand-made hook payloads never get a 5xx, never crash the
sidecar, and no answer (nor the log) echoes a token.

The sidecar runs as a real process (embedded stores, and PostgreSQL + Redis), so a crash,
a hang or a segfault in a decoder would show. CSV export formula safety is covered by
tests/test_actions.py (TestExport).
"""

from __future__ import annotations

import http.client
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

TOKEN = "hostile-hooks-token-0123456789"
WRONG = "hostile-wrong-token-9876543210"
ENDPOINTS = (
    "/v1/hooks/failure",
    "/v1/hooks/success",
    "/v1/hooks/start",
    "/v1/hooks/batch",
    "/v1/classify",
    "/v1/decide",
    "/v1/idempotency/claim",
    "/v1/idempotency/complete",
    "/v1/idempotency/release",
)


class Client:
    """One keep-alive connection, opened again when the sidecar closes it (413s do)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, token: str = TOKEN) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, data
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture(scope="module", params=["embedded", "postgres+redis"])
def sidecar(request, tmp_path_factory):
    stores = {}
    if request.param != "embedded":
        stores = {
            "postgres_dsn": request.getfixturevalue("postgres_service").start().dsn,
            "redis_url": request.getfixturevalue("redis_service").start().url,
        }
    workdir = tmp_path_factory.mktemp("hostile")
    with SidecarProcess(workdir, TOKEN, policies=str(DEFAULT_POLICIES), **stores) as process:
        client = Client(process.port)
        yield process, client
        client.close()
        assert process.process.poll() is None, process.output()
        log = process.output()
        assert TOKEN not in log  # tokens are never logged
        assert WRONG not in log
        assert "unhandled error" not in log, log
        assert process.stop() == 0, log


def check(sidecar, path: str, body: bytes, token: str = TOKEN) -> int:
    process, client = sidecar
    status, data = client.post(path, body, token)
    assert status < 500, (path, body[:300], status, data[:1000])
    assert TOKEN.encode() not in data
    assert WRONG.encode() not in data
    if status != 200:
        problem = json.loads(data)
        assert problem["status"] == status
        assert problem["title"]
    assert process.process.poll() is None, process.output()
    return status


# --- generated ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)  # json.dumps writes NaN / Infinity
    | st.text(max_size=50)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
names = st.text(max_size=30) | st.sampled_from(["app.tasks.sync", "", "\x00", "ä" * 600])
exception = st.fixed_dictionaries(
    {"type": names},
    optional={
        "module": names | values,
        "mro": st.lists(names, max_size=5) | values,
        "message": st.text() | values,
        "errno": st.integers() | values,
        "http_status": st.integers() | values,
        "sqlstate": st.text(max_size=7) | values,
    },
)
event = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["failure", "success", "start", "other"]),
        "task_id": names | values,
        "task_name": names | values,
        "exception": exception | values,
        "attempt": st.integers(min_value=-(2**40), max_value=2**40) | values,
        "runtime_seconds": st.floats() | values,
        "queue": names | values,
        "context": st.dictionaries(
            st.sampled_from(["age_seconds", "queue_depth", "customer_tier", "enqueued_at"]),
            values,
        )
        | values,
        "args": st.lists(values, max_size=20) | values,
        "kwargs": st.dictionaries(st.text(max_size=10), values) | values,
        "dlq_id": names | values,
        "key": names | values,
        "scope": st.sampled_from(["global", "user", "task", "nope"]) | values,
        "ttl_seconds": st.floats() | st.integers() | values,
    },
)
bodies = event | st.lists(event, max_size=5) | values
SUPPRESS = [HealthCheck.function_scoped_fixture]


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS)
@given(path=st.sampled_from(ENDPOINTS), body=bodies)
def test_generated_payloads(sidecar, path, body):
    check(sidecar, path, json.dumps(body).encode())


@settings(max_examples=40, deadline=None, suppress_health_check=SUPPRESS)
@given(path=st.sampled_from(ENDPOINTS), body=st.binary(max_size=200))
def test_generated_bytes(sidecar, path, body):
    check(sidecar, path, body)


# --- hand-made ----------------------------------------------------------------------------


def failure(**fields) -> dict:
    return {
        "task_id": "h-1",
        "task_name": "app.tasks.sync",
        "exception": {"type": "ValueError", "message": "bad"},
        **fields,
    }


def raw_failure(args_json: str) -> bytes:
    return (
        b'{"task_id":"h-2","task_name":"app.tasks.sync",'
        b'"exception":{"type":"ValueError"},"args":' + args_json.encode() + b"}"
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(raw_failure("[" * 900 + "]" * 900), id="nesting-900"),
        pytest.param(raw_failure('[{"a":' * 450 + "1" + "}]" * 450), id="nesting-900-mixed"),
        pytest.param(raw_failure("[NaN, Infinity, -Infinity]"), id="nan-infinity"),
        pytest.param(raw_failure("[1e400, -1e400, 1e-400]"), id="overflowing-floats"),
        pytest.param(raw_failure('["\\ud800", "\\udfff\\u0000", "\\u202e"]'), id="bad-unicode"),
        pytest.param(json.dumps(failure(args=list(range(10_000)))).encode(), id="10k-args"),
        pytest.param(json.dumps(failure(args=["x" * 250_000])).encode(), id="huge-string"),
        pytest.param(json.dumps(failure(args=["x" * 300_000])).encode(), id="over-the-limit"),
        pytest.param(json.dumps(failure(attempt=-1)).encode(), id="negative-attempt"),
        pytest.param(json.dumps(failure(attempt=2**64)).encode(), id="huge-attempt"),
        pytest.param(
            json.dumps(failure(context={"age_seconds": math.inf}), allow_nan=True).encode(),
            id="infinite-age",
        ),
        pytest.param(
            json.dumps(
                failure(exception={"type": "É🙂\u202e" * 100, "message": "m" * 65_536})
            ).encode(),
            id="unicode-exception",
        ),
        pytest.param(json.dumps(failure(task_name="a\x00b")).encode(), id="nul-in-name"),
        pytest.param(b'{"task_id": "x", "task_id": "y"', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/hooks/failure", "/v1/hooks/batch", "/v1/decide"])
def test_hand_made_payloads(sidecar, path, body):
    if path == "/v1/hooks/batch" and body.startswith(b"{"):
        body = b'[{"type":"failure",' + body[1:] + b"]"
    check(sidecar, path, body)


def test_tokens_are_never_echoed(sidecar):
    body = json.dumps(failure()).encode()
    assert check(sidecar, "/v1/hooks/failure", body, token=WRONG) == 401
    assert check(sidecar, "/v1/hooks/failure", body) == 200
    # A token inside the payload is data, not an echo: the decision does not carry it.
    status = check(sidecar, "/v1/decide", json.dumps(failure(task_id="x")).encode())
    assert status == 200


DEEP = [
    pytest.param(raw_failure("[" * 50_000 + "]" * 50_000), id="list-50k"),
    pytest.param(raw_failure("[" * 1_100 + "]" * 1_100), id="list-1100"),
    pytest.param(
        raw_failure("[]").replace(b"}", b',"kwargs":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000)
        + b"}",
        id="dict-20k",
    ),
]


@pytest.mark.parametrize("body", DEEP)
@pytest.mark.parametrize("path", ["/v1/hooks/failure", "/v1/hooks/batch", "/v1/decide"])
def test_deep_nesting_is_a_400(tmp_path, path, body):
    if path == "/v1/hooks/batch":
        body = b'[{"type":"failure",' + body[1:] + b"]"
    with SidecarProcess(tmp_path, TOKEN, policies=str(DEFAULT_POLICIES)) as process:
        client = Client(process.port)
        try:
            assert check((process, client), path, body) == 400
        finally:
            client.close()
