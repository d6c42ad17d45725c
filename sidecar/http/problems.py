"""Errors as application/problem+json (RFC 9457), and typed request bodies.

No input a client can send produces a 500: bad bodies are 400 naming each field, oversized
ones 413, a backend that does not answer 503 with Retry-After. A 500 means a bug here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..errors import StoreRefused, StoreUnavailable
from ..policy.events import decode_error_path
from ..service.errors import InvalidInput
from .keys import METRICS

T = TypeVar("T")
log = logging.getLogger("task_sidecar.http")
CONTENT_TYPE = "application/problem+json"
_encode = msgspec.json.Encoder().encode


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.headers = errors, headers
        self.extra = extra or {}  # members of the document beyond RFC 9457's

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return web.Response(
            status=self.status,
            body=_encode(body),
            content_type=CONTENT_TYPE,
            headers=self.headers,
        )


def invalid(path: str, message: str) -> Problem:
    return Problem(
        400, "Invalid request", f"{path or 'body'}: {message}", [{"path": path, "message": message}]
    )


def decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise invalid(*decode_error_path(exc)) from None
    except msgspec.DecodeError as exc:
        raise invalid("", f"invalid JSON: {exc}") from None
    except RecursionError:  # msgspec past ~1,000 levels of nesting
        raise invalid("", "invalid JSON: nested too deeply") from None


BODY_TIMEOUT = 5.0  # seconds a client may take to send its body


async def read(request: web.Request, kind: type[T]) -> T:
    """The request body decoded into `kind` (400 naming the bad field; 413 when too big;
    408 when it does not arrive in time: a slow upload must not hold a slot for long)."""
    if request.content.is_eof():  # all of it arrived already (most bodies): no wait
        return decode(await request.read(), kind)
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await request.read()
    except TimeoutError:
        request.app[METRICS].record_rejection("body_timeout")
        raise Problem(
            408, "Request timeout", f"the body did not arrive within {BODY_TIMEOUT:g}s"
        ) from None
    return decode(body, kind)


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encode(value), content_type="application/json")


@web.middleware
async def problem_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPRequestEntityTooLarge as exc:
        request.app[METRICS].record_rejection("body_too_large")
        return Problem(413, "Request body too large", exc.text or "").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return Problem(exc.status, exc.reason, headers=_allow(exc)).response()
    except InvalidInput as exc:
        return invalid(exc.path, exc.message).response()
    except StoreRefused as exc:  # data it will never take: the client's to fix
        log.warning("backend refused the request's data: %s", exc)
        return Problem(400, "Refused by the store", str(exc)).response()
    except StoreUnavailable as exc:
        log.warning("backend unavailable: %s", exc)
        return Problem(
            503, "Backend unavailable", str(exc), headers={"Retry-After": "1"}
        ).response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return Problem(500, "Internal error", "see the sidecar's log").response()


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
