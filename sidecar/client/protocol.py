"""The client's protocol, without I/O (DESIGN §3): what each hook sends, how an answer is
read, when the client falls back and what it uses instead.

A hook call is an `Exchange`: a path, a body, how to read the answer and what to return
when there is none. The transports (transport.py: http.client for SidecarClient, aiohttp
for AsyncSidecarClient) only carry bytes; each hook method of both clients is

    exchange = protocol.failure(...)
    reply = transport.post(exchange) if protocol.should_send(exchange) else None
    return protocol.settle(exchange, reply)

so both treat every error alike: no answer in time, a refused or reset connection,
429/503 or any status but 200/202, a body that is not JSON or not the expected shape.
Each is a fallback, counted; the outage is logged once when it begins and once when it
ends, and for `retry_interval` seconds after a failed call the sidecar is not tried at
all, so an outage costs each task nothing.
"""

from __future__ import annotations

import collections
import enum
import errno as errno_module
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from .exceptions import TRACEBACK_LIMIT, retry_after_of, serialize_exception
from .fallback import LocalDecider, claim_granted, start_allowed
from .keys import Owner, Scope, Ttl, new_report_id
from .state import Health, StartAllowances

log = logging.getLogger("sidecar.client")
T = TypeVar("T")
ACTIONS = ("retry", "dead_letter", "discard")


MAX_OWNERS = 10_000  # claims held at once by one client, at most


class Unavailable(Exception):
    """The sidecar gave no usable answer. The clients never raise it into a task (they
    fall back); kept for code that imported it."""


class Reply(NamedTuple):
    """What came back over the wire: a status and a body, or why nothing came."""

    status: int = 0
    payload: bytes = b""
    error: str | None = None


class Exchange(Generic[T]):
    """One hook call: what to send, how to read the answer (None: unusable), and the
    fallback. `known` is an answer the client has without asking (a start allowance).
    A plain class: one is made per hook call, on the task's hot path."""

    __slots__ = ("body", "fallback", "known", "path", "read")

    def __init__(
        self,
        path: str,
        body: Any,
        read: Callable[[Any], T | None],
        fallback: Callable[[], T],
        known: T | None = None,
    ) -> None:
        self.path = path
        self.body = body
        self.read = read
        self.fallback = fallback
        self.known = known

    def encode(self) -> bytes:
        """The body as sent; only when it is sent (an outage skips the work)."""
        return json.dumps(self.body, default=repr).encode()

    @staticmethod
    def answered(answer: T) -> Exchange[T]:
        return Exchange("", None, _unusable, _unusable, known=answer)  # type: ignore[arg-type]


def reason(exc: BaseException) -> str:
    """The same words for the same failure whichever transport saw it."""
    if isinstance(exc, TimeoutError):  # socket.timeout, asyncio and aiohttp timeouts
        return "timed out"
    number = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and isinstance(number, int) and number in errno_module.errorcode:
        return f"{os.strerror(number)} ({errno_module.errorcode[number]})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Protocol:
    """Builds each hook's exchange and settles it; owns the outage state and the start
    allowances. `outbox` takes events the sidecar must still get: dead letters decided
    locally (Batcher.add_durable: the durable outbox, else the batch buffer)."""

    def __init__(
        self,
        local: LocalDecider,
        outbox: Callable[[dict[str, Any]], None],
        *,
        retry_interval: float = 1.0,
        start_cache: float = 1.0,
        traceback_limit: int = TRACEBACK_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.outbox = outbox
        self.health = Health(retry_interval, clock)
        self.allowances = StartAllowances(start_cache, clock)
        self.traceback_limit = traceback_limit
        # The owner token of each claim this client holds, for its complete/release.
        self.owners: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    # --- events ----------------------------------------------------------------------------

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
        workflow: Mapping[str, Any] | None = None,
        report_id: str | None = None,
        host: str | None = None,
        process: str | None = None,
    ) -> dict[str, Any]:
        """The failure hook body. `report_id` is made here unless given; every re-send of
        this report carries it unchanged. `workflow` (chain, callbacks, …) is sent only
        when it has something in it."""
        if isinstance(exc, BaseException):
            info = serialize_exception(exc, self.traceback_limit)
            retry_after = retry_after_of(exc)
        else:
            info, retry_after = dict(exc), None
        ctx = {k: v for k, v in (context or {}).items() if v is not None}
        if retry_after is not None:
            ctx.setdefault("retry_after_seconds", retry_after)
        event = {
            "task_id": str(task_id),
            "task_name": str(task_name),
            "queue": queue,
            "attempt": int(attempt),
            "exception": info,
            "context": ctx,
            "args": jsonable(list(args)),
            "kwargs": jsonable(dict(kwargs or {})),
            "dlq_id": dlq_id,
            "report_id": report_id or new_report_id(str(task_id), int(attempt)),
        }
        if host:
            event["host"] = str(host)
        if process:
            event["process"] = str(process)
        steps = {k: v for k, v in (workflow or {}).items() if v not in (None, "", [], (), {})}
        if steps:
            event["workflow"] = jsonable(steps)
        return event

    def success_event(
        self,
        task_id: str,
        task_name: str,
        *,
        attempt: int = 0,
        runtime_seconds: float | None = None,
        dlq_id: str | None = None,
        report_id: str | None = None,
    ) -> dict[str, Any]:
        """A success as a batch item, with its own report id."""
        event: dict[str, Any] = {
            "type": "success",
            "task_id": str(task_id),
            "task_name": str(task_name),
            "attempt": int(attempt),
            "dlq_id": dlq_id,
            "report_id": report_id or new_report_id(str(task_id), int(attempt)),
        }
        if runtime_seconds is not None:
            event["runtime_seconds"] = max(0.0, float(runtime_seconds))
        return event

    # --- exchanges -------------------------------------------------------------------------

    def failure(
        self, task_id: str, task_name: str, exc: BaseException | Mapping[str, Any], **fields: Any
    ) -> Exchange[dict[str, Any]]:
        """The decision for a failed run: the sidecar's (`source` absent), else a local one
        (`source`: "local" from the policies file, "default" without it)."""
        try:
            event = self.failure_event(task_id, task_name, exc, **fields)
        except Exception:  # never into the task
            log.exception("sidecar client: cannot build the failure event")
            return Exchange.answered(self.local.default(_attempt(fields)))
        name = event["task_name"]

        def read(answer: Any) -> dict[str, Any] | None:
            if not isinstance(answer, dict) or answer.get("action") not in ACTIONS:
                return None
            self.allowances.forget_if_open(name, answer)
            return answer

        return Exchange("/v1/hooks/failure", event, read, lambda: self._decide_locally(event))

    def _decide_locally(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = self.local.decide(event)
        if answer["action"] == "dead_letter":
            # The sidecar has not stored it: deliver the same report when it answers again,
            # saying the worker gave up (the sidecar's policy may allow more retries).
            self.outbox({"type": "failure", **event, "worker_gave_up": True})
        return answer

    def start(
        self,
        task_id: str,
        task_name: str,
        *,
        attempt: int = 0,
        queue: str | None = None,
        ask: bool = False,
        **run: Any,
    ) -> Exchange[dict[str, Any]]:
        """May the task run now? Falls back to allowing it. `run` (delivery_count,
        redelivered, host, process, dlq_id, args, kwargs) tells the sidecar about the run,
        for poison detection. While the task name's allowance is cached the answer comes
        from the cache and nothing is sent: a healthy run costs no request beyond the
        event that ends it (the sidecar sees a lost one through the redelivery, which
        sets `ask`, and the WorkerLostError report). `ask` always asks."""
        name = str(task_name)
        if not ask:
            cached = self.allowances.get(name)
            if cached is not None:
                return Exchange.answered(cached)
        body = {"task_id": str(task_id), "task_name": name, "attempt": int(attempt), "queue": queue}
        for key, value in run.items():
            if value is not None and value is not False:
                body[key] = value
        if "args" in body or "kwargs" in body:
            body["args"] = jsonable(list(body.get("args") or ()))
            body["kwargs"] = jsonable(dict(body.get("kwargs") or {}))

        def read(answer: Any) -> dict[str, Any] | None:
            if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
                return None
            if not answer.get("dead_lettered"):
                self.allowances.remember(name, answer)
            return answer

        return Exchange("/v1/hooks/start", body, read, start_allowed)

    def end_event(self, task_id: str, task_name: str) -> dict[str, Any]:
        """A run that ended without a report (postponed, a duplicate skipped), batched."""
        return {"type": "end", "task_id": str(task_id), "task_name": str(task_name)}

    def claim(
        self,
        key: str,
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> Exchange[dict[str, Any]]:
        """Falls back to `{"claimed": true, "source": "fallback"}`: the work runs.
        `task_name` labels the sidecar's idempotency metric (a sidecar older than it
        ignores the field)."""
        body = _key_body(key, scope, ttl_seconds=ttl_seconds, task_name=task_name)

        def read(answer: Any) -> dict[str, Any] | None:
            claim = _claim_answer(answer)
            if claim is not None:
                self._remember_owner(key, scope, claim)
            return claim

        return Exchange("/v1/idempotency/claim", body, read, claim_granted)

    def claim_many(
        self,
        keys: Sequence[str],
        scope: Scope = "global",
        ttl_seconds: float | None = None,
        task_name: str | None = None,
    ) -> Exchange[list[dict[str, Any]]]:
        """`claim` of each key, in one request (at most 1,000), answered in order; falls
        back to every claim granted."""
        keys = list(keys)
        body = {
            "claims": [
                _key_body(key, scope, ttl_seconds=ttl_seconds, task_name=task_name) for key in keys
            ]
        }

        def read(answer: Any) -> list[dict[str, Any]] | None:
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(keys):
                return None
            claims = []
            for result in results:
                if (claim := _claim_answer(result)) is None:
                    return None
                claims.append(claim)
            for key, claim in zip(keys, claims, strict=True):
                self._remember_owner(key, scope, claim)
            return claims

        return Exchange(
            "/v1/idempotency/claims", body, read, lambda: [claim_granted() for _ in keys]
        )

    def _remember_owner(self, key: str, scope: Scope, claim: dict[str, Any]) -> None:
        """The owner token of a claim won, for this client's complete/release of the key."""
        if claim["claimed"] and isinstance(claim.get("owner"), str):
            self.owners[(key, scope)] = claim["owner"]
            while len(self.owners) > MAX_OWNERS:
                self.owners.popitem(last=False)

    def complete(
        self, key: str, scope: Scope = "global", ttl_seconds: Ttl = None, owner: Owner = None
    ) -> Exchange[bool]:
        """True when the sidecar took it. `owner` is the token the claim answered with
        (by default the one this client's own claim of the key got)."""
        owner = owner or self.owners.pop((key, scope), None)
        body = _key_body(key, scope, ttl_seconds=ttl_seconds, owner=owner)
        return Exchange("/v1/idempotency/complete", body, _any_object, _false)

    def release(
        self, key: str, scope: Scope = "global", owner: str | None = None
    ) -> Exchange[bool]:
        owner = owner or self.owners.pop((key, scope), None)
        body = _key_body(key, scope, owner=owner)
        return Exchange("/v1/idempotency/release", body, _any_object, _false)

    def batch(self, events: list[dict[str, Any]]) -> Exchange[list[bool] | None]:
        """For each event, whether the sidecar is done with it (None: it took none). An
        event it refused on its own (a 400 item) is done, and logged: it would be refused
        again; one it could not store just then (a 5xx item) is not."""

        def read(answer: Any) -> list[bool] | None:
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(events):
                return None
            errors = [r["error"] if isinstance(r, dict) and "error" in r else None for r in results]
            refused = [e for e in errors if e is not None and _status(e) < 500]
            if refused:
                log.warning(
                    "sidecar refused %d of %d batched events, first: %s",
                    len(refused),
                    len(events),
                    refused[0],
                )
            for event, error in zip(events, errors, strict=True):
                if error is not None and _status(error) < 500 and event.get("type") == "failure":
                    log.error(
                        "sidecar refused the dead letter %s[%s] (report %s): it is not in "
                        "the DLQ: %s",
                        event.get("task_name"),
                        event.get("task_id"),
                        event.get("report_id"),
                        error,
                    )
            return [e is None or _status(e) < 500 for e in errors]

        return Exchange("/v1/hooks/batch", events, read, _none)

    # --- settling --------------------------------------------------------------------------

    def should_send(self, exchange: Exchange[Any]) -> bool:
        return exchange.known is None and self.health.should_try()

    def settle(self, exchange: Exchange[T], reply: Reply | None) -> T:
        """The result of an exchange from what the transport got (None: not sent)."""
        result = self.answer(exchange, reply)
        return exchange.fallback() if result is FALL_BACK else result

    def answer(self, exchange: Exchange[T], reply: Reply | None) -> T | FallBack:
        """`settle` without the fallback: the result the reply gives, else FALL_BACK
        (the async client runs the fallback off its event loop: a local dead letter waits
        for the disk)."""
        if reply is None:
            if exchange.known is not None:
                return exchange.known
            self.health.skipped()
            return FALL_BACK
        problem = reply.error
        if problem is None and reply.status not in (200, 202):
            problem = f"HTTP {reply.status}"
        if problem is None:
            try:
                answer = json.loads(reply.payload)
            except ValueError:
                problem = "answer is not JSON"
            else:
                result = exchange.read(answer)
                if result is not None:
                    self.health.ok()
                    return result
                problem = "unexpected answer"
        self.health.failed(problem)
        return FALL_BACK


class FallBack(enum.Enum):
    FALL_BACK = "fall back"


FALL_BACK = FallBack.FALL_BACK


def jsonable(value: Any) -> Any:
    """A value as JSON values (anything else by its repr), so an odd argument cannot make
    the event unsendable."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))


def _attempt(fields: Mapping[str, Any]) -> int:
    try:
        return int(fields.get("attempt") or 0)
    except (TypeError, ValueError):
        return 0


def _key_body(key: str, scope: str, **optional: Any) -> dict[str, Any]:
    body = {"key": key, "scope": scope}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _claim_answer(answer: Any) -> dict[str, Any] | None:
    return answer if isinstance(answer, dict) and isinstance(answer.get("claimed"), bool) else None


def _any_object(answer: Any) -> bool | None:
    return True if isinstance(answer, dict) else None


def _false() -> bool:
    return False


def _none() -> None:
    return None


def _status(error: Any) -> int:
    status = error.get("status") if isinstance(error, dict) else None
    return status if isinstance(status, int) else 400


def _unusable(*_: Any) -> None:
    return None
