"""Worker-side client of the sidecar (DESIGN §3): sync and async, fail-open.

    client = SidecarClient("http://127.0.0.1:8080", token="…", policies="policies.yaml")
    decision = client.failure(task_id, task_name, exc, attempt=request.retries)
    client.success(task_id, task_name, runtime_seconds=0.2)   # buffered, never blocks

Every hook call has a short timeout (250 ms by default) and keeps its connection alive
(one per thread for the sync client, one pooled session for the async one). When the
sidecar does not answer in time, is down, or answers 429/503 (or anything but 200), the
client *falls back*: a failure is decided locally by the same pure core
(`sidecar.policy.decide`) from the same policies file when the worker can read it, else by
a conservative default (at most `fallback_max_retries` retries, exponential backoff). The
start hook then allows the task, and an idempotency claim is granted (running a task twice
is safer than losing it). No method raises into the task. After a failed call the client
does not try the sidecar again for `retry_interval` seconds, so an outage costs each task
nothing; the outage is logged once when it begins and once when it ends.

Success events (and dead letters decided locally, which the sidecar has not stored) go
into a bounded buffer that a background thread sends to `/v1/hooks/batch`. When the
buffer is full the oldest events are dropped; `stats()["dropped"]` counts them and a
warning reports the count.
"""

from __future__ import annotations

import collections
import errno as errno_module
import hashlib
import http.client
import json
import logging
import random
import ssl
import threading
import time
import traceback as traceback_module
import urllib.error
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("sidecar.client")

DEFAULT_TIMEOUT = 0.25
TRACEBACK_LIMIT = 16384  # characters kept from the end of a traceback
MESSAGE_LIMIT = 4096
Scope = Literal["global", "user", "device", "task"]
SCOPES = ("global", "user", "device", "task")

# --- exception serialisation (DESIGN §3.1) --------------------------------------------------


def _qualname(cls: type) -> str:
    module = getattr(cls, "__module__", None) or "builtins"
    return f"{module}.{cls.__qualname__}"


def _int_in(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _status_of_response(response: Any) -> int | None:
    if response is None:
        return None
    for attr in ("status_code", "status"):  # requests/httpx, aiohttp/urllib3
        status = _int_in(getattr(response, attr, None), 100, 599)
        if status is not None:
            return status
    return None


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an exception, from the usual places: requests/httpx
    `exc.response.status_code`, aiohttp `exc.status`, botocore
    `exc.response["ResponseMetadata"]["HTTPStatusCode"]`, SDK errors' `status_code`/`status`/
    `http_status`, urllib's HTTPError `code`."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):  # botocore ClientError
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping):
            status = _int_in(meta.get("HTTPStatusCode"), 100, 599)
            if status is not None:
                return status
    else:
        status = _status_of_response(response)
        if status is not None:
            return status
    for attr in ("status_code", "http_status", "status"):
        status = _int_in(getattr(exc, attr, None), 100, 599)
        if status is not None:
            return status
    if isinstance(exc, urllib.error.HTTPError):
        return _int_in(exc.code, 100, 599)
    return None


def sqlstate_of(exc: BaseException) -> str | None:
    """psycopg 3 `sqlstate`, psycopg2 `pgcode` (also on `exc.orig` for SQLAlchemy)."""
    for candidate in (exc, getattr(exc, "orig", None)):
        if candidate is None:
            continue
        for attr in ("sqlstate", "pgcode"):
            value = getattr(candidate, attr, None)
            if isinstance(value, str) and len(value) == 5:
                return value
    return None


def errno_of(exc: BaseException) -> int | None:
    """errno for real OS errors only: ssl.SSLError's errno is an OpenSSL code."""
    if not isinstance(exc, OSError) or isinstance(exc, ssl.SSLError):
        return None
    value = exc.errno
    if isinstance(value, int) and not isinstance(value, bool) and value in errno_module.errorcode:
        return value
    return None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header on the exception's response, when numeric."""
    response = getattr(exc, "response", None)
    headers = None
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata") or {}
        headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    elif response is not None:
        headers = getattr(response, "headers", None)
    if headers is None:
        headers = getattr(exc, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        seconds = float(value)
    except (AttributeError, TypeError, ValueError):
        return None
    return seconds if 0 <= seconds <= 1e9 else None


def serialize_exception(
    exc: BaseException, traceback_limit: int = TRACEBACK_LIMIT
) -> dict[str, Any]:
    """The `exception` object of a failure event."""
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not break the report
        message = repr(exc) if not isinstance(exc, Exception) else f"<unprintable {cls.__name__}>"
    text = "".join(traceback_module.format_exception(cls, exc, exc.__traceback__))
    if len(text) > traceback_limit:
        text = "…" + text[-(traceback_limit - 1) :]
    info: dict[str, Any] = {
        "type": cls.__name__[:512] or "Exception",
        "module": (cls.__module__ or "builtins")[:512],
        "mro": [_qualname(c)[:512] for c in cls.__mro__ if c not in (object, BaseException)],
        "message": message[:MESSAGE_LIMIT],
        "traceback": text,
        "errno": errno_of(exc),
        "http_status": http_status_of(exc),
    }
    sqlstate = sqlstate_of(exc)
    if sqlstate is not None:
        info["sqlstate"] = sqlstate
    return info


# --- idempotency keys (DESIGN §3.2) ---------------------------------------------------------


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )


def idempotency_key(
    task_name: str,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    scope: Scope = "global",
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    task_id: str | None = None,
) -> str:
    """`task_name:sha256(canonical JSON of [args, kwargs, scope id])`. The scope id is the
    user id (`user`), the device id (`device`) or the task id (`task`); it is required for
    those scopes."""
    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    owner = {"global": None, "user": user_id, "device": device_id, "task": task_id}[scope]
    if scope != "global" and owner is None:
        raise ValueError(f"scope {scope!r} needs its id ({scope}_id)")
    body = canonical_json([list(args), dict(kwargs or {}), owner])
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"{task_name[:900]}:{digest}"


# --- local fallback ---------------------------------------------------------------------------


class LocalDecider:
    """Decides failures without the sidecar: the pure core with the policies file when it
    can be read, else a conservative default."""

    def __init__(
        self,
        policies: str | Path | None = None,
        max_retries: int = 3,
        initial_delay: float = 10.0,
        max_delay: float = 300.0,
    ) -> None:
        self.path = Path(policies) if policies else None
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._policy: Any = None
        self._loaded = False
        self._lock = threading.Lock()
        self._rng = random.Random()

    def policy(self) -> Any:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    if self.path is not None:
                        try:
                            from .policy.loader import load_policy

                            self._policy = load_policy(self.path)
                        except Exception as exc:  # missing or invalid file
                            log.warning(
                                "sidecar fallback: cannot load policies %s: %s", self.path, exc
                            )
                    self._loaded = True
        return self._policy

    def decide(self, event: dict[str, Any]) -> dict[str, Any]:
        policy = self.policy()
        if policy is not None:
            try:
                import msgspec

                from .policy.decide import EMPTY, decide
                from .policy.events import FailureEvent

                failure = msgspec.convert(event, FailureEvent)
                outcome = decide(failure, policy, EMPTY, time.time(), self._rng)
                answer = msgspec.to_builtins(outcome.decision)
                answer["source"] = "local"
                return answer
            except Exception as exc:  # an event the core refuses: use the default
                log.debug("sidecar fallback: core refused the event: %s", exc)
        return self.default(int(event.get("attempt") or 0))

    def default(self, attempt: int) -> dict[str, Any]:
        if attempt >= self.max_retries:
            action, delay, why = "dead_letter", 0.0, f"no retry: {attempt} retries made"
        else:
            base = min(self.max_delay, self.initial_delay * 2**attempt)
            delay = self._rng.uniform(base / 2, base)
            action, why = "retry", f"retry {attempt + 1}/{self.max_retries} (default)"
        return {
            "action": action,
            "delay_seconds": round(delay, 3),
            "queue": None,
            "priority": None,
            "priority_value": None,
            "classification": None,
            "breaker": None,
            "rationale": f"sidecar unavailable; conservative default: {why}",
            "dlq_id": None,
            "source": "default",
        }


# --- transport --------------------------------------------------------------------------------


class Unavailable(Exception):
    """The sidecar did not give a usable answer (down, slow, 429/503, bad answer)."""


class _Health:
    """Remembers an outage so it is logged once and calls skip the sidecar for a while."""

    def __init__(self, retry_interval: float) -> None:
        self.retry_interval = retry_interval
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._skip_until = 0.0
        self.fallbacks = 0
        self.outages = 0

    def should_try(self) -> bool:
        return time.monotonic() >= self._skip_until

    def failed(self, reason: str) -> None:
        with self._lock:
            self.fallbacks += 1
            self._skip_until = time.monotonic() + self.retry_interval
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.outages += 1
                log.warning("sidecar unavailable (%s); deciding locally until it answers", reason)

    def skipped(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def ok(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                log.warning(
                    "sidecar answers again after %.1fs (%d calls fell back)",
                    time.monotonic() - self.down_since,
                    self.fallbacks,
                )
                self.down_since = None


class _SyncTransport:
    """http.client with one keep-alive connection per thread."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sidecar url: expected http(s)://host:port, got {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for close_all

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout)
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.timeout = timeout
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()

    def post(self, path: str, body: Any, timeout: float | None = None) -> Any:
        data = json.dumps(body, default=repr).encode()
        timeout = self.timeout if timeout is None else timeout
        for attempt in (0, 1):
            conn = self._connection(timeout)
            reused = conn.sock is not None
            try:
                conn.request("POST", self.prefix + path, data, self.headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 0:  # the server closed an idle keep-alive connection
                    continue
                raise Unavailable(f"{type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise Unavailable(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                ) from None
            if response.will_close:
                self.close()
            return _answer(response.status, payload)
        raise Unavailable("connection closed")  # pragma: no cover


def _answer(status: int, payload: bytes) -> Any:
    if status != 200 and status != 202:
        raise Unavailable(f"HTTP {status}")
    try:
        return json.loads(payload)
    except ValueError:
        raise Unavailable("answer is not JSON") from None


# --- background batching ----------------------------------------------------------------------


class _Batcher:
    """A bounded buffer of events sent to /v1/hooks/batch by one daemon thread."""

    def __init__(
        self,
        transport: _SyncTransport,
        health: _Health,
        capacity: int,
        batch_size: int,
        interval: float,
        send_timeout: float,
    ) -> None:
        self.transport = transport
        self.health = health
        self.capacity = capacity
        self.batch_size = min(batch_size, 1000)
        self.interval = interval
        self.send_timeout = send_timeout
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._inflight = 0
        self.sent = 0
        self.dropped = 0
        self._dropped_reported = 0

    def add(self, event: dict[str, Any]) -> None:
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="sidecar-batcher", daemon=True
                )
                self._thread.start()
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    def _take(self) -> list[dict[str, Any]]:
        with self._cond:
            if len(self._buffer) < self.batch_size and not self._closed:
                self._cond.wait(self.interval)  # until a full batch, a flush or the interval
            if not self._buffer:
                return []
            count = min(self.batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._inflight = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                with self._cond:
                    if self._closed:
                        self.transport.close()
                        return
                self._report_drops()
                continue
            ok = False
            if self.health.should_try():
                try:
                    self.transport.post("/v1/hooks/batch", batch, timeout=self.send_timeout)
                    ok = True
                    self.health.ok()
                except Unavailable as exc:
                    self.health.failed(str(exc))
            with self._cond:
                self._inflight = 0
                if ok:
                    self.sent += len(batch)
                else:  # keep them for the next try, oldest dropped if it overflows
                    room = self.capacity - len(self._buffer)
                    keep = batch[-room:] if room > 0 else []
                    self.dropped += len(batch) - len(keep)
                    self._buffer.extendleft(reversed(keep))
                    closed = self._closed
            self._report_drops()
            if not ok:
                if closed:
                    self.transport.close()
                    return
                time.sleep(min(self.interval, max(0.05, self.health.retry_interval)))

    def _report_drops(self) -> None:
        if self.dropped != self._dropped_reported:
            new = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            log.warning("sidecar client dropped %d buffered events (%d in all)", new, self.dropped)

    def flush(self, timeout: float) -> bool:
        """Wait until the buffer is sent (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.notify()
            time.sleep(0.01)
        return True

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout))
        self._report_drops()


# --- clients ----------------------------------------------------------------------------------


def _start_allowed() -> dict[str, Any]:
    return {"allow": True, "delay_seconds": 0.0, "breaker": None, "source": "fallback"}


class _Base:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        policies: str | Path | None = None,
        retry_interval: float = 1.0,
        buffer_size: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 0.5,
        fallback_max_retries: int = 3,
        fallback_initial_delay: float = 10.0,
        fallback_max_delay: float = 300.0,
        traceback_limit: int = TRACEBACK_LIMIT,
        start_cache: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # A task the sidecar let start is let start again without asking for this long:
        # a round trip per run would cost more than the task. An open breaker reported in
        # a failure answer ends it at once; one opened through another worker is seen at
        # most `start_cache` seconds late.
        self.start_cache = start_cache
        self._allowed_until: dict[str, float] = {}
        self.health = _Health(retry_interval)
        self.local = LocalDecider(
            policies, fallback_max_retries, fallback_initial_delay, fallback_max_delay
        )
        self.traceback_limit = traceback_limit
        self._batch_transport = _SyncTransport(url, token, timeout)
        self._batcher = _Batcher(
            self._batch_transport,
            self.health,
            buffer_size,
            batch_size,
            flush_interval,
            send_timeout=max(timeout, 2.0),
        )

    # events -------------------------------------------------------------------------------

    def failure_event(
        self,
        task_id: str,
        task_name: str,
        exc: BaseException | Mapping[str, Any],
        *,
        attempt: int = 0,
        queue: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        dlq_id: str | None = None,
    ) -> dict[str, Any]:
        if isinstance(exc, BaseException):
            info = serialize_exception(exc, self.traceback_limit)
            retry_after = retry_after_of(exc)
        else:
            info, retry_after = dict(exc), None
        ctx = {k: v for k, v in (context or {}).items() if v is not None}
        if retry_after is not None:
            ctx.setdefault("retry_after_seconds", retry_after)
        return {
            "task_id": str(task_id),
            "task_name": str(task_name),
            "queue": queue,
            "attempt": int(attempt),
            "exception": info,
            "context": ctx,
            "args": _jsonable(list(args)),
            "kwargs": _jsonable(dict(kwargs or {})),
            "dlq_id": dlq_id,
        }

    def _cached_start(self, task_name: str) -> dict[str, Any] | None:
        until = self._allowed_until.get(task_name)
        if until is not None and time.monotonic() < until:
            return {"allow": True, "delay_seconds": 0.0, "breaker": None, "source": "cache"}
        return None

    def _remember_start(self, task_name: str, answer: dict[str, Any]) -> None:
        if self.start_cache <= 0:
            return
        if answer.get("allow") and not answer.get("breaker"):
            if len(self._allowed_until) >= 10_000:
                self._allowed_until.clear()  # bounded: task names are few in practice
            self._allowed_until[task_name] = time.monotonic() + self.start_cache
        else:
            self._allowed_until.pop(task_name, None)

    def _remember_failure(self, task_name: str, answer: dict[str, Any]) -> None:
        breaker = answer.get("breaker") or {}
        if breaker.get("state") not in (None, "closed"):
            self._allowed_until.pop(task_name, None)

    def _fallback_failure(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = self.local.decide(event)
        if answer["action"] == "dead_letter":
            # The sidecar has not stored it: deliver the failure when it answers again.
            self._batcher.add({"type": "failure", **event})
        return answer

    def success(
        self,
        task_id: str,
        task_name: str,
        *,
        attempt: int = 0,
        runtime_seconds: float | None = None,
        dlq_id: str | None = None,
    ) -> None:
        """Buffered; sent in batches by a background thread. Never blocks, never raises."""
        try:
            event: dict[str, Any] = {
                "type": "success",
                "task_id": str(task_id),
                "task_name": str(task_name),
                "attempt": int(attempt),
                "dlq_id": dlq_id,
            }
            if runtime_seconds is not None:
                event["runtime_seconds"] = max(0.0, float(runtime_seconds))
            self._batcher.add(event)
        except Exception:  # pragma: no cover - defensive: never into the task
            log.debug("sidecar client: success event not buffered", exc_info=True)

    def flush(self, timeout: float = 5.0) -> bool:
        return self._batcher.flush(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "sent": self._batcher.sent,
            "dropped": self._batcher.dropped,
            "pending": self._batcher.pending(),
            "fallbacks": self.health.fallbacks,
            "outages": self.health.outages,
            "down": self.health.down_since is not None,
        }


class SidecarClient(_Base):
    """Blocking client for workers (Celery, RQ, plain threads)."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._transport = _SyncTransport(url, token, self.timeout)

    def _call(self, path: str, body: Any) -> Any:
        if not self.health.should_try():
            self.health.skipped()
            raise Unavailable("skipped during outage")
        try:
            answer = self._transport.post(path, body)
        except Unavailable as exc:
            self.health.failed(str(exc))
            raise
        self.health.ok()
        return answer

    def failure(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """The decision for a failed run: the sidecar's (`source` absent), else a local one
        (`source`: "local" from the policies file, "default" without it)."""
        try:
            event = self.failure_event(task_id, task_name, exc, **fields)
        except Exception:  # never into the task
            log.exception("sidecar client: cannot build the failure event")
            return self.local.default(int(fields.get("attempt") or 0))
        try:
            answer = self._call("/v1/hooks/failure", event)
            if isinstance(answer, dict) and answer.get("action") in (
                "retry",
                "dead_letter",
                "discard",
            ):
                self._remember_failure(str(task_name), answer)
                return answer
            raise Unavailable("unexpected answer")
        except Unavailable:
            return self._fallback_failure(event)
        except Exception:  # pragma: no cover - defensive
            log.exception("sidecar client: failure hook")
            return self._fallback_failure(event)

    def start(
        self, task_id: str, task_name: str, *, attempt: int = 0, queue: str | None = None
    ) -> dict[str, Any]:
        """May the task run now? Falls back to allowing it."""
        cached = self._cached_start(str(task_name))
        if cached is not None:
            return cached
        body = {
            "task_id": str(task_id),
            "task_name": str(task_name),
            "attempt": int(attempt),
            "queue": queue,
        }
        try:
            answer = self._call("/v1/hooks/start", body)
            if isinstance(answer, dict) and isinstance(answer.get("allow"), bool):
                self._remember_start(str(task_name), answer)
                return answer
        except Unavailable:
            pass
        except Exception:  # pragma: no cover
            log.exception("sidecar client: start hook")
        return _start_allowed()

    def claim(
        self, key: str, scope: Scope = "global", ttl_seconds: float | None = None
    ) -> dict[str, Any]:
        """Falls back to `{"claimed": true, "source": "fallback"}`: the work runs."""
        body: dict[str, Any] = {"key": key, "scope": scope}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        try:
            answer = self._call("/v1/idempotency/claim", body)
            if isinstance(answer, dict) and isinstance(answer.get("claimed"), bool):
                return answer
        except Unavailable:
            pass
        except Exception:  # pragma: no cover
            log.exception("sidecar client: claim")
        return {"claimed": True, "source": "fallback"}

    def complete(self, key: str, scope: Scope = "global", ttl_seconds: float | None = None) -> bool:
        body: dict[str, Any] = {"key": key, "scope": scope}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self._quiet("/v1/idempotency/complete", body)

    def release(self, key: str, scope: Scope = "global") -> bool:
        return self._quiet("/v1/idempotency/release", {"key": key, "scope": scope})

    def _quiet(self, path: str, body: Any) -> bool:
        try:
            self._call(path, body)
            return True
        except Exception:
            return False

    def close(self, timeout: float = 2.0) -> None:
        self._batcher.close(timeout)
        self._transport.close_all()
        self._batch_transport.close_all()


class AsyncSidecarClient(_Base):
    """asyncio client (aiohttp, one keep-alive session). Success events share the
    background batching thread of the sync client."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: Any = None

    async def _get_session(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
            )
        return self._session

    async def _call(self, path: str, body: Any) -> Any:
        if not self.health.should_try():
            self.health.skipped()
            raise Unavailable("skipped during outage")
        try:
            session = await _get(self)
            data = json.dumps(body, default=repr).encode()
            async with session.post(self.url + path, data=data) as response:
                payload = await response.read()
                answer = _answer(response.status, payload)
        except Unavailable as exc:
            self.health.failed(str(exc))
            raise
        except Exception as exc:  # aiohttp.ClientError, asyncio.TimeoutError, OSError
            self.health.failed(type(exc).__name__)
            raise Unavailable(type(exc).__name__) from None
        self.health.ok()
        return answer

    async def failure(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        try:
            event = self.failure_event(task_id, task_name, exc, **fields)
        except Exception:
            log.exception("sidecar client: cannot build the failure event")
            return self.local.default(int(fields.get("attempt") or 0))
        try:
            answer = await self._call("/v1/hooks/failure", event)
            if isinstance(answer, dict) and answer.get("action") in (
                "retry",
                "dead_letter",
                "discard",
            ):
                self._remember_failure(str(task_name), answer)
                return answer
        except Unavailable:
            pass
        return self._fallback_failure(event)

    async def start(
        self, task_id: str, task_name: str, *, attempt: int = 0, queue: str | None = None
    ) -> dict[str, Any]:
        cached = self._cached_start(str(task_name))
        if cached is not None:
            return cached
        body = {
            "task_id": str(task_id),
            "task_name": str(task_name),
            "attempt": int(attempt),
            "queue": queue,
        }
        try:
            answer = await self._call("/v1/hooks/start", body)
            if isinstance(answer, dict) and isinstance(answer.get("allow"), bool):
                self._remember_start(str(task_name), answer)
                return answer
        except Unavailable:
            pass
        return _start_allowed()

    async def claim(
        self, key: str, scope: Scope = "global", ttl_seconds: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"key": key, "scope": scope}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        try:
            answer = await self._call("/v1/idempotency/claim", body)
            if isinstance(answer, dict) and isinstance(answer.get("claimed"), bool):
                return answer
        except Unavailable:
            pass
        return {"claimed": True, "source": "fallback"}

    async def complete(
        self, key: str, scope: Scope = "global", ttl_seconds: float | None = None
    ) -> bool:
        body: dict[str, Any] = {"key": key, "scope": scope}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        try:
            await self._call("/v1/idempotency/complete", body)
            return True
        except Unavailable:
            return False

    async def release(self, key: str, scope: Scope = "global") -> bool:
        try:
            await self._call("/v1/idempotency/release", {"key": key, "scope": scope})
            return True
        except Unavailable:
            return False

    async def close(self, timeout: float = 2.0) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self._batcher.close, timeout)
        self._batch_transport.close_all()
        if self._session is not None:
            await self._session.close()


async def _get(client: AsyncSidecarClient) -> Any:
    return await client._get_session()


def _jsonable(value: Any) -> Any:
    """Args/kwargs as JSON values (anything else by its repr), so an odd argument cannot
    make the event unsendable."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))


__all__ = [
    "AsyncSidecarClient",
    "LocalDecider",
    "SidecarClient",
    "Unavailable",
    "canonical_json",
    "errno_of",
    "http_status_of",
    "idempotency_key",
    "retry_after_of",
    "serialize_exception",
    "sqlstate_of",
]
