#!/usr/bin/env python3
"""Capture real exceptions from the libraries a Python worker uses, in the wire shape.

Writes tests/data/exceptions.jsonl: one {"case", "expected", "exception"} object a line,
where `exception` is what a worker would send (sidecar.policy.events.ExceptionInfo) and
`expected` the failure type we judge right. tests/test_taxonomy.py checks the default
taxonomy against it. Run by hand (not in CI) after changing a library version or adding a
case; the output is committed data:

    python3 -m venv /tmp/capture-venv
    /tmp/capture-venv/bin/pip install 'psycopg[binary]' psycopg-pool psycopg2-binary \
        django redis requests httpx aiohttp botocore celery
    /tmp/capture-venv/bin/python scripts/capture-exceptions.py

Exceptions are provoked for real wherever that is cheap and local: throw-away HTTP, TLS
and TCP servers on 127.0.0.1, a private redis-server, a scratch database and role on the
PostgreSQL at $CAPTURE_PG_DSN (default postgresql://postgres@127.0.0.1:5432/postgres,
superuser needed; both are dropped at the end), closed port 127.0.0.1:1, /dev/full.
The rest (server-side conditions such as a full disk, or Celery's worker-loss errors) are
the libraries' own exception classes built with the messages they really produce.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import decimal
import errno
import http.server
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "exceptions.jsonl"
PG_DSN = os.environ.get("CAPTURE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SCRATCH_DB = "sidecar_capture"
SCRATCH_ROLE = "sidecar_capture_role"
CLOSED = ("127.0.0.1", 1)  # nothing listens on port 1

ROWS: list[dict[str, Any]] = []

# --- wire shape ---------------------------------------------------------------------------


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status a worker hook would read off the exception, as each library has it."""
    import aiohttp
    import botocore.exceptions
    import httpx
    import requests

    if isinstance(exc, requests.RequestException) and exc.response is not None:
        return exc.response.status_code
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code
    return None


def wire(exc: BaseException, *, http_status: bool = True) -> dict[str, Any]:
    cls = type(exc)
    number = getattr(exc, "errno", None)
    status = http_status_of(exc) if http_status else None
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return {
        "type": cls.__name__,
        "module": cls.__module__,
        "mro": [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__ if c is not object],
        "message": str(exc)[:500],
        "errno": number if isinstance(number, int) and not isinstance(number, bool) else None,
        "http_status": status if isinstance(status, int) and 100 <= status <= 599 else None,
        "sqlstate": sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None,
    }


def record(
    case: str, expected: str, exc: BaseException, *, no_status_variant: bool = False
) -> None:
    if any(row["case"] == case for row in ROWS):
        raise SystemExit(f"duplicate case {case!r}")
    row = wire(exc)
    ROWS.append({"case": case, "expected": expected, "exception": row})
    if no_status_variant:
        if row["http_status"] is None:
            raise SystemExit(f"{case}: no http_status to drop")
        ROWS.append(
            {
                "case": f"{case} (no status)",
                "expected": expected,
                "exception": wire(exc, http_status=False),
            }
        )


def capture(case: str, expected: str, action: Callable[[], Any], **kw: Any) -> None:
    """Run `action`, which must raise, and record what it raised."""
    try:
        action()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        record(case, expected, exc, **kw)
    else:
        raise SystemExit(f"{case}: nothing was raised")


def capture_async(case: str, expected: str, action: Callable[[], Any], **kw: Any) -> None:
    capture(case, expected, lambda: asyncio.run(action()), **kw)


# --- throw-away local servers -------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """/status/<code>[/…] answers that status; /slow answers after 3 s; /close hangs up
    without an answer; /html answers 200 with an HTML page."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "slow":
            time.sleep(3)
            self._send(200, b"{}", "application/json")
        elif parts[0] == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif parts[0] == "html":
            self._send(200, b"<html><body>Maintenance</body></html>", "text/html")
        elif parts[0] == "status":
            code = int(parts[1])
            body = json.dumps({"error": self.responses.get(code, ("",))[0]}).encode()
            self._send(code, body, "application/json")
        else:
            self._send(404, b"{}", "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def start_http(tls_context: ssl.SSLContext | None = None) -> _QuietServer:
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_tcp(behaviour: str) -> socket.socket:
    """A TCP listener that, for each connection, stays `silent`, `close`s or `reset`s."""
    listener = socket.create_server(("127.0.0.1", 0))
    kept: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if behaviour == "silent":
                kept.append(conn)
            elif behaviour == "close":
                conn.recv(4096)  # read what the client sent first, so closing is no reset
                conn.close()
            elif behaviour == "reset":
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                time.sleep(0.05)
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return listener


def self_signed_context(directory: Path) -> ssl.SSLContext:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- families -----------------------------------------------------------------------------


def stdlib(
    http_port: int, tls_port: int, silent_port: int, close_port: int, reset_port: int, tmp: Path
) -> None:
    # Validation: bad input that fails the same way every run.
    capture(
        "ValueError('Invalid data')",
        "PERMANENT_VALIDATION",
        lambda: (_ for _ in ()).throw(ValueError("Invalid data")),
    )
    capture("int('abc')", "PERMANENT_VALIDATION", lambda: int("abc"))
    capture("uuid.UUID('not-a-uuid')", "PERMANENT_VALIDATION", lambda: uuid.UUID("not-a-uuid"))
    capture(
        "decimal.Decimal('12,50') (InvalidOperation)",
        "PERMANENT_VALIDATION",
        lambda: decimal.Context(traps=[decimal.InvalidOperation]).create_decimal("12,50"),
    )
    capture("json.loads('{')", "PERMANENT_VALIDATION", lambda: json.loads("{"))
    capture("json.loads('') (empty body)", "PERMANENT_VALIDATION", lambda: json.loads(""))
    capture(
        "bytes.decode utf-8 (UnicodeDecodeError)",
        "PERMANENT_VALIDATION",
        lambda: b"caf\xe9".decode("utf-8"),
    )
    capture(
        "str.encode ascii (UnicodeEncodeError)",
        "PERMANENT_VALIDATION",
        lambda: "café".encode("ascii"),
    )
    capture(
        "base64.b64decode bad padding (binascii.Error)",
        "PERMANENT_VALIDATION",
        lambda: base64.b64decode("abc"),
    )

    # Logic: bugs in the task.
    capture("KeyError on a dict", "PERMANENT_LOGIC", lambda: {"id": 1}["user_id"])
    capture("IndexError on a list", "PERMANENT_LOGIC", lambda: [][0])
    capture(
        "TypeError calling with a missing argument", "PERMANENT_LOGIC", lambda: (lambda a, b: a)(1)
    )
    capture("AttributeError on None", "PERMANENT_LOGIC", lambda: None.id)
    capture("ZeroDivisionError", "PERMANENT_LOGIC", lambda: 1 / 0)
    capture("AssertionError", "PERMANENT_LOGIC", _assert_false)
    capture("NotImplementedError", "PERMANENT_LOGIC", _not_implemented)

    # Configuration.
    capture(
        "KeyError on os.environ",
        "CONFIG_MISSING_SETTING",
        lambda: os.environ["SIDECAR_CAPTURE_API_TOKEN"],
    )
    capture(
        "ModuleNotFoundError",
        "CONFIG_MISSING_SERVICE",
        lambda: __import__("sidecar_capture_no_such_module"),
    )

    # Memory.
    capture("MemoryError (huge allocation)", "SYSTEM_OUT_OF_MEMORY", lambda: bytearray(1 << 62))
    record(
        "OSError ENOMEM (fork)",
        "SYSTEM_OUT_OF_MEMORY",
        OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)),
    )

    # The OSError errno family.
    capture(
        "open a missing file (ENOENT)",
        "PERMANENT_NOT_FOUND",
        lambda: (tmp / "missing" / "report.csv").read_text(),
    )
    capture("os.write to /dev/full (ENOSPC)", "SYSTEM_DISK_FULL", _write_dev_full)
    capture("sqlite3 OperationalError (database or disk is full)", "SYSTEM_DISK_FULL", _sqlite_full)
    record(
        "OSError EDQUOT",
        "SYSTEM_DISK_FULL",
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/srv/uploads/a.bin"),
    )
    noexec = tmp / "not-executable.sh"
    noexec.write_text("#!/bin/sh\n")
    noexec.chmod(stat.S_IRUSR | stat.S_IWUSR)
    capture(
        "exec a non-executable file (EACCES)",
        "PERMANENT_PERMISSION",
        lambda: subprocess.run([str(noexec)]),
    )
    record(
        "OSError EROFS",
        "PERMANENT_PERMISSION",
        OSError(errno.EROFS, os.strerror(errno.EROFS), "/app/media/x.png"),
    )
    capture(
        "socket connect to a closed port (ECONNREFUSED)",
        "EXTERNAL_API_DOWN",
        lambda: socket.create_connection(CLOSED, timeout=2),
    )
    capture(
        "socket recv after a reset (ECONNRESET)", "TRANSIENT_NETWORK", lambda: _recv(reset_port)
    )
    capture("write to a closed pipe (EPIPE)", "TRANSIENT_NETWORK", _broken_pipe)
    record(
        "TimeoutError ETIMEDOUT (connect)",
        "TRANSIENT_NETWORK",
        TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)),
    )
    capture(
        "socket.getaddrinfo unknown host (gaierror)",
        "TRANSIENT_NETWORK",
        lambda: socket.getaddrinfo("sidecar-capture.invalid", 443),
    )
    capture("too many open files (EMFILE)", "PERMANENT_LOGIC", _emfile)

    # Timeouts.
    capture("socket.timeout on recv", "TRANSIENT_NETWORK", lambda: _recv(silent_port, 0.2))

    # TLS.
    capture(
        "ssl certificate verify failed (self-signed)",
        "CONFIG_INVALID_SETTING",
        lambda: _tls_connect(tls_port),
    )
    capture("ssl EOF during handshake", "TRANSIENT_NETWORK", lambda: _tls_connect(close_port))

    # urllib.
    capture(
        "urllib urlopen closed port (URLError)",
        "EXTERNAL_API_DOWN",
        lambda: urllib.request.urlopen(f"http://{CLOSED[0]}:{CLOSED[1]}/", timeout=2),
    )
    capture(
        "urllib HTTPError 503",
        "EXTERNAL_API_DOWN",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status/503"),
        no_status_variant=True,
    )
    capture(
        "urllib HTTPError 429",
        "TRANSIENT_RATE_LIMIT",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status/429"),
        no_status_variant=True,
    )
    capture(
        "urllib urlopen unknown host (URLError)",
        "TRANSIENT_NETWORK",
        lambda: urllib.request.urlopen("http://sidecar-capture.invalid/", timeout=2),
    )
    capture(
        "http.client RemoteDisconnected",
        "TRANSIENT_NETWORK",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{http_port}/close", timeout=2),
    )


def _assert_false() -> None:
    total = 3
    assert total == 4, "totals do not add up"


def _not_implemented() -> None:
    raise NotImplementedError("export format 'xlsx' is not implemented")


def _write_dev_full() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)


def _recv(port: int, timeout: float = 2.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        data = sock.recv(16)
        sock.recv(16)  # the reset arrives on the second read at the latest
        if not data:
            raise SystemExit("peer closed without a reset")


def _sqlite_full() -> None:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("pragma max_page_count = 2")
        conn.execute("create table t (x text)")
        conn.executemany("insert into t values (?)", [("x" * 1000,)] * 100)
    finally:
        conn.close()


def _broken_pipe() -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        os.write(write, b"x")
    finally:
        os.close(write)


def _emfile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        while True:
            opened.append(open(os.devnull))  # noqa: SIM115
    finally:
        for f in opened:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _tls_connect(port: int) -> None:
    context = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        context.wrap_socket(sock, server_hostname="localhost")


def requests_family(http_port: int, tls_port: int) -> None:
    import requests

    base = f"http://127.0.0.1:{http_port}"

    def status(code: int, tail: str = "") -> Callable[[], None]:
        return lambda: requests.get(f"{base}/status/{code}{tail}", timeout=5).raise_for_status()

    for code, expected in [
        (400, "PERMANENT_VALIDATION"),
        (401, "PERMANENT_PERMISSION"),
        (404, "PERMANENT_NOT_FOUND"),
        (405, "EXTERNAL_API_ERROR"),
        (429, "TRANSIENT_RATE_LIMIT"),
        (503, "EXTERNAL_API_DOWN"),
        (504, "EXTERNAL_TIMEOUT"),
    ]:
        capture(f"requests HTTPError {code}", expected, status(code), no_status_variant=True)
    # A number in the URL must not be taken for the status.
    capture(
        "requests HTTPError 404 for a url containing 503",
        "PERMANENT_NOT_FOUND",
        status(404, "/orders/503"),
        no_status_variant=True,
    )
    capture(
        "requests ConnectionError (refused)",
        "EXTERNAL_API_DOWN",
        lambda: requests.get(f"http://{CLOSED[0]}:{CLOSED[1]}/", timeout=2),
    )
    capture(
        "requests ConnectionError (unknown host)",
        "TRANSIENT_NETWORK",
        lambda: requests.get("http://sidecar-capture.invalid/", timeout=2),
    )
    capture(
        "requests ConnectionError (RemoteDisconnected)",
        "TRANSIENT_NETWORK",
        lambda: requests.get(f"{base}/close", timeout=2),
    )
    capture(
        "requests ReadTimeout",
        "EXTERNAL_TIMEOUT",
        lambda: requests.get(f"{base}/slow", timeout=0.2),
    )
    record(
        "requests ConnectTimeout",
        "TRANSIENT_NETWORK",
        requests.exceptions.ConnectTimeout(
            "HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded with url: "
            "/v1/charges (Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object "
            "at 0x7f3a2c1b2d10>, 'Connection to api.example.com timed out. (connect timeout=5)'))"
        ),
    )
    capture(
        "requests SSLError (certificate verify failed)",
        "CONFIG_INVALID_SETTING",
        lambda: requests.get(f"https://localhost:{tls_port}/", timeout=2),
    )
    capture(
        "requests MissingSchema",
        "PERMANENT_VALIDATION",
        lambda: requests.get("api.example.com/v1/items", timeout=2),
    )
    capture(
        "requests Response.json() on an HTML page",
        "PERMANENT_VALIDATION",
        lambda: requests.get(f"{base}/html", timeout=2).json(),
    )


def httpx_family(http_port: int) -> None:
    import httpx

    base = f"http://127.0.0.1:{http_port}"

    def status(code: int, tail: str = "") -> Callable[[], None]:
        return lambda: httpx.get(f"{base}/status/{code}{tail}", timeout=5).raise_for_status()

    for code, expected in [
        (403, "PERMANENT_PERMISSION"),
        (422, "PERMANENT_VALIDATION"),
        (429, "TRANSIENT_RATE_LIMIT"),
        (502, "EXTERNAL_API_DOWN"),
        (504, "EXTERNAL_TIMEOUT"),
    ]:
        capture(f"httpx HTTPStatusError {code}", expected, status(code), no_status_variant=True)
    # Nor a word of the URL for the cause.
    capture(
        "httpx HTTPStatusError 404 for a url about rate limits",
        "PERMANENT_NOT_FOUND",
        status(404, "/api/rate-limit/throttling-policies"),
        no_status_variant=True,
    )
    capture(
        "httpx ConnectError (refused)",
        "EXTERNAL_API_DOWN",
        lambda: httpx.get(f"http://{CLOSED[0]}:{CLOSED[1]}/", timeout=2),
    )
    capture("httpx ReadTimeout", "EXTERNAL_TIMEOUT", lambda: httpx.get(f"{base}/slow", timeout=0.2))
    record("httpx ConnectTimeout", "TRANSIENT_NETWORK", httpx.ConnectTimeout("timed out"))
    capture("httpx PoolTimeout", "TRANSIENT_NETWORK", lambda: _httpx_pool_timeout(base))
    capture(
        "httpx RemoteProtocolError (server disconnected)",
        "TRANSIENT_NETWORK",
        lambda: httpx.get(f"{base}/close", timeout=2),
    )


def _httpx_pool_timeout(base: str) -> None:
    import httpx

    limits = httpx.Limits(max_connections=1)
    client = httpx.Client(limits=limits, timeout=httpx.Timeout(5, pool=0.1))
    with client, client.stream("GET", f"{base}/slow"):
        client.get(f"{base}/status/200")


def aiohttp_family(http_port: int) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{http_port}"

    def status(code: int) -> Callable[[], Any]:
        async def go() -> None:
            async with aiohttp.ClientSession(raise_for_status=True) as s:
                await s.get(f"{base}/status/{code}")

        return go

    for code, expected in [
        (404, "PERMANENT_NOT_FOUND"),
        (429, "TRANSIENT_RATE_LIMIT"),
        (500, "EXTERNAL_API_ERROR"),
        (503, "EXTERNAL_API_DOWN"),
    ]:
        capture_async(
            f"aiohttp ClientResponseError {code}", expected, status(code), no_status_variant=True
        )

    async def get(url: str, **kw: Any) -> Any:
        async with aiohttp.ClientSession(**kw) as s, s.get(url) as response:
            return await response.json()

    capture_async(
        "aiohttp ClientConnectorError (refused)",
        "EXTERNAL_API_DOWN",
        lambda: get(f"http://{CLOSED[0]}:{CLOSED[1]}/"),
    )
    capture_async(
        "aiohttp SocketTimeoutError (sock_read)",
        "EXTERNAL_TIMEOUT",
        lambda: get(f"{base}/slow", timeout=aiohttp.ClientTimeout(sock_read=0.2)),
    )
    capture_async(
        "aiohttp total timeout (TimeoutError)",
        "TRANSIENT_NETWORK",
        lambda: get(f"{base}/slow", timeout=aiohttp.ClientTimeout(total=0.2)),
    )
    capture_async(
        "aiohttp ServerDisconnectedError", "TRANSIENT_NETWORK", lambda: get(f"{base}/close")
    )
    capture_async(
        "aiohttp ContentTypeError (HTML instead of JSON)",
        "EXTERNAL_API_ERROR",
        lambda: get(f"{base}/html"),
    )


def botocore_family(http_port: int, silent_port: int) -> None:
    import botocore.config
    import botocore.session
    from botocore.stub import Stubber

    session = botocore.session.get_session()
    creds = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"}

    def client_error(
        service: str, op: str, code: str, message: str, status: int, params: dict[str, Any]
    ) -> Callable[[], None]:
        def go() -> None:
            client = session.create_client(service, region_name="eu-west-1", **creds)
            with Stubber(client) as stub:
                stub.add_client_error(
                    op, service_error_code=code, service_message=message, http_status_code=status
                )
                getattr(client, op)(**params)

        return go

    obj = {"Bucket": "reports", "Key": "2024/06/summary.csv"}
    capture(
        "botocore NoSuchKey (modeled)",
        "PERMANENT_NOT_FOUND",
        client_error(
            "s3", "get_object", "NoSuchKey", "The specified key does not exist.", 404, obj
        ),
    )
    capture(
        "botocore head_object 404 (plain ClientError)",
        "PERMANENT_NOT_FOUND",
        client_error("s3", "head_object", "404", "Not Found", 404, obj),
        no_status_variant=True,
    )
    capture(
        "botocore AccessDenied 403",
        "PERMANENT_PERMISSION",
        client_error("s3", "get_object", "AccessDenied", "Access Denied", 403, obj),
    )
    capture(
        "botocore SlowDown 503",
        "TRANSIENT_RATE_LIMIT",
        client_error("s3", "put_object", "SlowDown", "Please reduce your request rate.", 503, obj),
        no_status_variant=True,
    )
    capture(
        "botocore ThrottlingException 400",
        "TRANSIENT_RATE_LIMIT",
        client_error(
            "sqs",
            "send_message",
            "ThrottlingException",
            "Rate exceeded",
            400,
            {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q", "MessageBody": "{}"},
        ),
        no_status_variant=True,
    )
    capture(
        "botocore ProvisionedThroughputExceededException (modeled)",
        "TRANSIENT_RATE_LIMIT",
        client_error(
            "dynamodb",
            "put_item",
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was "
            "exceeded. Consider increasing your provisioning level with the "
            "UpdateTable API.",
            400,
            {"TableName": "events", "Item": {}},
        ),
    )
    capture(
        "botocore ExpiredToken 400",
        "PERMANENT_PERMISSION",
        client_error(
            "sts",
            "get_caller_identity",
            "ExpiredToken",
            "The security token included in the request is expired",
            400,
            {},
        ),
        no_status_variant=True,
    )
    capture(
        "botocore ServiceUnavailableException 503 (modeled)",
        "EXTERNAL_API_DOWN",
        client_error(
            "apigateway",
            "get_rest_api",
            "ServiceUnavailableException",
            "Service is temporarily unavailable, please try again later.",
            503,
            {"restApiId": "a1b2c3"},
        ),
        no_status_variant=True,
    )
    capture(
        "botocore ParamValidationError",
        "PERMANENT_VALIDATION",
        lambda: session.create_client("s3", region_name="eu-west-1", **creds).get_object(
            Bucket="reports"
        ),
    )

    no_retry = botocore.config.Config(
        retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=0.3
    )
    capture(
        "botocore EndpointConnectionError",
        "TRANSIENT_NETWORK",
        lambda: session.create_client(
            "s3",
            region_name="eu-west-1",
            endpoint_url=f"http://{CLOSED[0]}:{CLOSED[1]}",
            config=no_retry,
            **creds,
        ).get_object(**obj),
    )
    capture(
        "botocore ReadTimeoutError",
        "EXTERNAL_TIMEOUT",
        lambda: session.create_client(
            "s3",
            region_name="eu-west-1",
            endpoint_url=f"http://127.0.0.1:{silent_port}",
            config=no_retry,
            **creds,
        ).get_object(**obj),
    )

    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    with _environ(clean):
        capture(
            "botocore NoRegionError",
            "CONFIG_MISSING_SETTING",
            lambda: botocore.session.get_session().create_client("sqs"),
        )
        capture(
            "botocore NoCredentialsError",
            "CONFIG_MISSING_SETTING",
            lambda: (
                botocore.session.get_session()
                .create_client(
                    "s3",
                    region_name="eu-west-1",
                    config=no_retry,
                    endpoint_url=f"http://127.0.0.1:{http_port}",
                )
                .get_object(**obj)
            ),
        )


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def redis_family(port: int, silent_port: int) -> None:
    import redis

    capture(
        "redis ConnectionError (refused)",
        "EXTERNAL_API_DOWN",
        lambda: redis.Redis(host=CLOSED[0], port=CLOSED[1]).ping(),
    )
    capture(
        "redis TimeoutError (reading)",
        "TRANSIENT_NETWORK",
        lambda: redis.Redis(port=silent_port, socket_timeout=0.2).ping(),
    )
    r = redis.Redis(port=port)
    r.set("greeting", "hello")
    capture("redis ResponseError WRONGTYPE", "PERMANENT_LOGIC", lambda: r.lpush("greeting", "x"))
    capture(
        "redis ResponseError unknown command",
        "PERMANENT_LOGIC",
        lambda: r.execute_command("JSON.GET", "doc"),
    )
    r.config_set("maxmemory", "1")
    capture(
        "redis OutOfMemoryError (maxmemory)",
        "SYSTEM_OUT_OF_MEMORY",
        lambda: r.set("big", "x" * 1000),
    )
    r.config_set("maxmemory", "0")
    r.execute_command("REPLICAOF", CLOSED[0], str(CLOSED[1]))
    capture("redis ReadOnlyError (replica)", "TRANSIENT_DATABASE", lambda: r.set("k", "v"))
    r.execute_command("REPLICAOF", "NO", "ONE")
    r.config_set("requirepass", "s3cret")
    capture(
        "redis AuthenticationError (NOAUTH)",
        "PERMANENT_PERMISSION",
        lambda: redis.Redis(port=port, protocol=2).ping(),
    )
    capture(
        "redis AuthenticationError (wrong password)",
        "PERMANENT_PERMISSION",
        lambda: redis.Redis(port=port, password="wrong").ping(),
    )


def celery_family(silent_port: int) -> None:
    import billiard.exceptions
    import celery
    import celery.exceptions
    import kombu
    import kombu.serialization

    record(
        "billiard WorkerLostError SIGKILL",
        "SYSTEM_OUT_OF_MEMORY",
        billiard.exceptions.WorkerLostError(
            "Worker exited prematurely: signal 9 (SIGKILL) Job: 1."
        ),
    )
    record(
        "billiard WorkerLostError SIGSEGV",
        "PERMANENT_LOGIC",
        billiard.exceptions.WorkerLostError(
            "Worker exited prematurely: signal 11 (SIGSEGV) Job: 7."
        ),
    )
    record(
        "celery SoftTimeLimitExceeded",
        "TRANSIENT_NETWORK",
        celery.exceptions.SoftTimeLimitExceeded(),
    )
    record(
        "billiard TimeLimitExceeded",
        "TRANSIENT_NETWORK",
        billiard.exceptions.TimeLimitExceeded(300.0),
    )
    app = celery.Celery("capture", broker="memory://")
    capture(
        "celery NotRegistered",
        "CONFIG_MISSING_SERVICE",
        lambda: app.tasks["app.tasks.renamed_task"],
    )
    record(
        "celery TimeoutError (AsyncResult.get)",
        "TRANSIENT_NETWORK",
        celery.exceptions.TimeoutError("The operation timed out."),
    )
    capture(
        "kombu OperationalError (redis broker refused)",
        "EXTERNAL_API_DOWN",
        lambda: kombu.Connection(f"redis://{CLOSED[0]}:{CLOSED[1]}//").ensure_connection(
            max_retries=1, interval_start=0, interval_step=0
        ),
    )
    capture(
        "kombu OperationalError (amqp broker refused)",
        "EXTERNAL_API_DOWN",
        lambda: kombu.Connection(
            f"amqp://guest:guest@{CLOSED[0]}:{CLOSED[1]}//", connect_timeout=2
        ).ensure_connection(max_retries=1, interval_start=0, interval_step=0),
    )
    capture(
        "kombu OperationalError (amqp broker timed out)",
        "TRANSIENT_NETWORK",
        lambda: kombu.Connection(
            f"amqp://guest:guest@127.0.0.1:{silent_port}//", connect_timeout=0.3
        ).ensure_connection(max_retries=1, interval_start=0, interval_step=0),
    )
    capture(
        "kombu EncodeError (unserialisable argument)",
        "PERMANENT_LOGIC",
        lambda: kombu.serialization.dumps({"when": object()}, serializer="json"),
    )


def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            return bool(
                conn.execute(
                    "select rolsuper from pg_roles where rolname = current_user"
                ).fetchone()[0]
            )
    except psycopg.Error:
        return False


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    def admin(sql: str) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql)

    admin(f"drop database if exists {SCRATCH_DB} with (force)")
    admin(f"drop role if exists {SCRATCH_ROLE}")
    admin(f"create database {SCRATCH_DB}")
    admin(f"create role {SCRATCH_ROLE} login connection limit 1")
    try:
        yield make_conninfo(PG_DSN, dbname=SCRATCH_DB)
    finally:
        admin(f"drop database if exists {SCRATCH_DB} with (force)")
        admin(f"drop role if exists {SCRATCH_ROLE}")


SCHEMA = """
create table customer (id int primary key, email text not null unique, code varchar(3),
                       balance numeric(6, 2) check (balance >= 0));
create table invoice (id int primary key, customer_id int not null references customer(id));
insert into customer values (1, 'a@example.com', 'A', 0), (2, 'b@example.com', 'B', 0);
grant usage on schema public to {role};
"""


def _two_way_conflict(
    dsn: str, driver: str, first: str, second: str, prepare: str, isolation: str | None = None
) -> BaseException:
    """Run two transactions that cross each other; return the error one of them gets."""
    import psycopg
    import psycopg2

    def connect() -> Any:
        if driver == "psycopg":
            conn = psycopg.connect(dsn)
            if isolation:
                conn.isolation_level = getattr(psycopg.IsolationLevel, isolation)
        else:
            conn = psycopg2.connect(dsn)
            if isolation:
                conn.set_session(isolation_level=isolation.replace("_", " "))
        return conn

    a, b = connect(), connect()
    errors: list[BaseException] = []
    try:
        for conn in (a, b):
            conn.cursor().execute(prepare)
        a.cursor().execute(first.format(n=1))
        b.cursor().execute(first.format(n=2))

        def cross(conn: Any, n: int) -> None:
            try:
                conn.cursor().execute(second.format(n=n))
                conn.commit()
            except Exception as exc:
                errors.append(exc)
                conn.rollback()

        threads = [
            threading.Thread(target=cross, args=(a, 2)),
            threading.Thread(target=cross, args=(b, 1)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    finally:
        a.close()
        b.close()
    if not errors:
        raise SystemExit(f"no conflict: {first} / {second}")
    return errors[0]


def psycopg_family(dsn: str) -> None:
    import psycopg
    import psycopg.errors

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA.format(role=SCRATCH_ROLE))

    def run(sql: str, *, autocommit: bool = True, conninfo: str = dsn) -> Callable[[], None]:
        def go() -> None:
            with psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=3) as conn:
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)

        return go

    capture("psycopg DivisionByZero (22012)", "PERMANENT_VALIDATION", run("select 1/0"))
    capture(
        "psycopg InvalidTextRepresentation (22P02)",
        "PERMANENT_VALIDATION",
        run("select 'abc'::int"),
    )
    capture(
        "psycopg NumericValueOutOfRange (22003)",
        "PERMANENT_VALIDATION",
        run("update customer set balance = 123456 where id = 1"),
    )
    capture(
        "psycopg UniqueViolation (23505)",
        "PERMANENT_VALIDATION",
        run("insert into customer values (3, 'a@example.com')"),
    )
    capture(
        "psycopg ForeignKeyViolation (23503)",
        "PERMANENT_VALIDATION",
        run("insert into invoice values (1, 99)"),
    )
    capture(
        "psycopg CheckViolation (23514)",
        "PERMANENT_VALIDATION",
        run("update customer set balance = -1 where id = 1"),
    )
    capture("psycopg UndefinedTable (42P01)", "PERMANENT_LOGIC", run("select * from orders"))
    capture("psycopg SyntaxError (42601)", "PERMANENT_LOGIC", run("selec 1"))
    capture(
        "psycopg InFailedSqlTransaction (25P02)",
        "PERMANENT_LOGIC",
        lambda: _in_failed_transaction(dsn),
    )
    capture(
        "psycopg InsufficientPrivilege (42501)",
        "PERMANENT_PERMISSION",
        run(f"set role {SCRATCH_ROLE}; select * from customer"),
    )
    capture(
        "psycopg ReadOnlySqlTransaction (25006)",
        "TRANSIENT_DATABASE",
        run("set default_transaction_read_only = on; insert into invoice values (5, 1)"),
    )
    capture(
        "psycopg QueryCanceled statement timeout (57014)",
        "TRANSIENT_DATABASE",
        run("set statement_timeout = '50ms'; select pg_sleep(2)"),
    )
    capture(
        "psycopg LockNotAvailable NOWAIT (55P03)",
        "TRANSIENT_DATABASE",
        lambda: _raise(
            _two_way_conflict(
                dsn,
                "psycopg",
                "select 1 from customer where id = {n} for update",
                "select 1 from customer where id = {n} for update nowait",
                "select 1",
            )
        ),
    )
    record(
        "psycopg DeadlockDetected (40P01)",
        "TRANSIENT_DATABASE",
        _two_way_conflict(
            dsn,
            "psycopg",
            "update customer set balance = balance + 1 where id = {n}",
            "update customer set balance = balance + 1 where id = {n}",
            "set deadlock_timeout = '100ms'",
        ),
    )
    record(
        "psycopg SerializationFailure (40001)",
        "TRANSIENT_DATABASE",
        _two_way_conflict(
            dsn,
            "psycopg",
            "select * from customer where id in (1, 2)",
            "update customer set balance = balance + 1 where id = 1",
            "select 1",
            isolation="REPEATABLE_READ",
        ),
    )
    capture(
        "psycopg AdminShutdown (57P01, backend terminated)",
        "TRANSIENT_DATABASE",
        lambda: _terminated(dsn),
    )
    capture(
        "psycopg TooManyConnections for a role (53300)",
        "TRANSIENT_DATABASE",
        lambda: _too_many_connections(dsn),
    )
    capture(
        "psycopg OperationalError (connection refused)",
        "TRANSIENT_DATABASE",
        run("select 1", conninfo=f"host={CLOSED[0]} port={CLOSED[1]} dbname=x user=x"),
    )
    capture(
        "psycopg OperationalError (role does not exist)",
        "PERMANENT_PERMISSION",
        run("select 1", conninfo=psycopg.conninfo.make_conninfo(dsn, user="no_such_role")),
    )
    capture(
        "psycopg OperationalError (database does not exist)",
        "CONFIG_INVALID_SETTING",
        run("select 1", conninfo=psycopg.conninfo.make_conninfo(dsn, dbname="no_such_db")),
    )
    capture("psycopg_pool PoolTimeout", "TRANSIENT_DATABASE", lambda: _pool_timeout(dsn))
    record(
        "psycopg DiskFull (53100)",
        "SYSTEM_DISK_FULL",
        psycopg.errors.DiskFull(
            'could not extend file "base/16384/16385": No space left on device'
        ),
    )
    record(
        "psycopg OutOfMemory (53200)",
        "SYSTEM_OUT_OF_MEMORY",
        psycopg.errors.OutOfMemory(
            "out of memory\nDETAIL:  Failed on request of size 8192 in memory context "
            '"ExprContext".'
        ),
    )


def _raise(exc: BaseException) -> None:
    raise exc


def _in_failed_transaction(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("select 1/0")
        conn.execute("select 1")


def _terminated(dsn: str) -> None:
    import psycopg

    with (
        psycopg.connect(dsn, autocommit=True) as victim,
        psycopg.connect(dsn, autocommit=True) as admin,
    ):
        pid = victim.info.backend_pid
        admin.execute("select pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        victim.execute("select 1")


def _too_many_connections(dsn: str) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    as_role = make_conninfo(dsn, user=SCRATCH_ROLE)
    with psycopg.connect(as_role), psycopg.connect(as_role):
        pass


def _pool_timeout(dsn: str) -> None:
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    with pool, pool.connection():
        pool.getconn(timeout=0.1)


def psycopg2_family(dsn: str) -> None:
    import psycopg2

    def run(sql: str, conninfo: str = dsn) -> Callable[[], None]:
        def go() -> None:
            conn = psycopg2.connect(conninfo, connect_timeout=3)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for statement in sql.split(";"):
                        if statement.strip():
                            cur.execute(statement)
            finally:
                conn.close()

        return go

    capture(
        "psycopg2 UniqueViolation (23505)",
        "PERMANENT_VALIDATION",
        run("insert into customer values (5, 'b@example.com')"),
    )
    capture(
        "psycopg2 ForeignKeyViolation (23503)",
        "PERMANENT_VALIDATION",
        run("insert into invoice values (2, 42)"),
    )
    capture(
        "psycopg2 InvalidDatetimeFormat (22007)",
        "PERMANENT_VALIDATION",
        run("select 'next tuesday'::date"),
    )
    capture("psycopg2 UndefinedTable (42P01)", "PERMANENT_LOGIC", run("select * from orders"))
    record(
        "psycopg2 DeadlockDetected (40P01)",
        "TRANSIENT_DATABASE",
        _two_way_conflict(
            dsn,
            "psycopg2",
            "update customer set balance = balance + 1 where id = {n}",
            "update customer set balance = balance + 1 where id = {n}",
            "set deadlock_timeout = '100ms'",
        ),
    )
    capture(
        "psycopg2 OperationalError (connection refused)",
        "TRANSIENT_DATABASE",
        run("select 1", conninfo=f"host={CLOSED[0]} port={CLOSED[1]} dbname=x user=x"),
    )
    capture(
        "psycopg2 OperationalError (role does not exist)",
        "PERMANENT_PERMISSION",
        run("select 1", conninfo=f"{dsn} user=no_such_role"),
    )
    capture(
        "psycopg2 OperationalError (server closed the connection)",
        "TRANSIENT_DATABASE",
        lambda: _psycopg2_terminated(dsn),
    )
    capture(
        "psycopg2 InterfaceError (connection already closed)",
        "TRANSIENT_DATABASE",
        lambda: _psycopg2_closed(dsn),
    )


def _psycopg2_terminated(dsn: str) -> None:
    import psycopg2

    victim, admin = psycopg2.connect(dsn), psycopg2.connect(dsn)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("select pg_terminate_backend(%s)", (victim.get_backend_pid(),))
        time.sleep(0.2)
        with victim.cursor() as cur:
            cur.execute("select 1")
    finally:
        admin.close()


def _psycopg2_closed(dsn: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.close()
    conn.cursor()


def _settings_module(tmp: Path) -> Any:
    """django.conf.Settings as DJANGO_SETTINGS_MODULE builds it, from a real module."""
    from django.conf import Settings

    (tmp / "capture_settings.py").write_text("SECRET_KEY = 'capture'\n")
    sys.path.insert(0, str(tmp))
    try:
        return Settings("capture_settings")
    finally:
        sys.path.remove(str(tmp))


def django_family(dsn: str | None, tmp: Path) -> None:
    import django
    from django.conf import LazySettings, settings

    capture(
        "django ImproperlyConfigured (settings not configured)",
        "CONFIG_MISSING_SETTING",
        lambda: LazySettings().DEBUG,
    )

    if dsn:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        default = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params["dbname"],
            "USER": params.get("user", "postgres"),
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
        }
    else:
        default = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    settings.configure(
        SECRET_KEY="capture",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={
            "default": default,
            "down": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "x",
                "USER": "x",
                "HOST": CLOSED[0],
                "PORT": str(CLOSED[1]),
            },
            "mysql": {"ENGINE": "django.db.backends.mysql", "NAME": "x"},
        },
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        ALLOWED_HOSTS=["app.example.com"],
        USE_TZ=True,
    )
    django.setup()
    from django.contrib.auth.models import User
    from django.core.cache import caches
    from django.core.management import call_command
    from django.db import connection, connections
    from django.shortcuts import get_object_or_404
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0, interactive=False)
    User.objects.create(username="ann", email="ann@example.com")
    User.objects.create(username="bob", email="bob@example.com")

    capture("django Model.DoesNotExist", "PERMANENT_NOT_FOUND", lambda: User.objects.get(pk=999))
    capture(
        "django Http404 (get_object_or_404)",
        "PERMANENT_NOT_FOUND",
        lambda: get_object_or_404(User, username="nobody"),
    )
    capture(
        "django MultipleObjectsReturned",
        "PERMANENT_LOGIC",
        lambda: User.objects.get(is_active=True),
    )
    capture(
        "django FieldError (bad lookup)",
        "PERMANENT_LOGIC",
        lambda: User.objects.filter(nickname="x").count(),
    )
    capture("django FieldDoesNotExist", "PERMANENT_LOGIC", lambda: User._meta.get_field("nickname"))
    capture(
        "django ValidationError (full_clean)",
        "PERMANENT_VALIDATION",
        lambda: User(username="bad name!", email="not-an-email").full_clean(),
    )
    capture(
        "django IntegrityError (unique username)",
        "PERMANENT_VALIDATION",
        lambda: User.objects.create(username="ann"),
    )
    capture(
        "django DataError (value too long)",
        "PERMANENT_VALIDATION",
        lambda: User.objects.create(username="x" * 200),
    )
    capture(
        "django ProgrammingError (missing table)",
        "PERMANENT_LOGIC",
        lambda: connection.cursor().execute("select * from billing_invoice"),
    )
    capture("django TransactionManagementError", "PERMANENT_LOGIC", _django_broken_atomic)
    capture(
        "django OperationalError (database down)",
        "TRANSIENT_DATABASE",
        lambda: connections["down"].cursor(),
    )

    def secret_key() -> Any:
        with override_settings(SECRET_KEY=""):
            return settings.SECRET_KEY

    capture("django ImproperlyConfigured (empty SECRET_KEY)", "CONFIG_MISSING_SETTING", secret_key)
    capture(
        "django AttributeError (missing setting)",
        "CONFIG_MISSING_SETTING",
        lambda: _settings_module(tmp).STRIPE_API_KEY,
    )

    def bad_user_model() -> Any:
        from django.contrib.auth import get_user_model

        with override_settings(AUTH_USER_MODEL="users"):
            return get_user_model()

    capture(
        "django ImproperlyConfigured (malformed AUTH_USER_MODEL)",
        "CONFIG_INVALID_SETTING",
        bad_user_model,
    )
    capture(
        "django ImproperlyConfigured (database driver not installed)",
        "CONFIG_MISSING_SERVICE",
        lambda: connections["mysql"].cursor(),
    )
    capture(
        "django InvalidCacheBackendError (unknown alias)",
        "CONFIG_MISSING_SERVICE",
        lambda: caches["sessions"],
    )


def _django_broken_atomic() -> None:
    from django.contrib.auth.models import User
    from django.db import IntegrityError, transaction

    with transaction.atomic():
        with contextlib.suppress(IntegrityError):
            User.objects.create(username="ann")
        User.objects.count()


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="capture-exc-"))
    try:
        http = start_http()
        tls = start_http(self_signed_context(tmp))
        silent, close, reset = start_tcp("silent"), start_tcp("close"), start_tcp("reset")
        ports = {
            name: s.getsockname()[1]
            for name, s in [("silent", silent), ("close", close), ("reset", reset)]
        }
        http_port, tls_port = http.server_address[1], tls.server_address[1]

        stdlib(http_port, tls_port, ports["silent"], ports["close"], ports["reset"], tmp)
        requests_family(http_port, tls_port)
        httpx_family(http_port)
        aiohttp_family(http_port)
        botocore_family(http_port, ports["silent"])
        with redis_server(tmp) as redis_port:
            redis_family(redis_port, ports["silent"])
        celery_family(ports["silent"])
        if postgres_available():
            with scratch_database() as dsn:
                psycopg_family(dsn)
                psycopg2_family(dsn)
                django_family(dsn, tmp)
        else:
            print(f"PostgreSQL not reachable at {PG_DSN}: psycopg rows skipped", file=sys.stderr)
            django_family(None, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for row in ROWS:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"{len(ROWS)} rows written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
