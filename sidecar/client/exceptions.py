"""Exception serialisation: the `exception` object of a failure event (DESIGN §3.1).

Everything the taxonomy can match on is read here, from the places the usual libraries
keep it: the class and its MRO, errno (real OS errors only), the HTTP status behind an
SDK's error, a PostgreSQL SQLSTATE, and a Retry-After header.
"""

from __future__ import annotations

import errno as errno_module
import ssl
import traceback as traceback_module
import urllib.error
from collections.abc import Mapping
from typing import Any

TRACEBACK_LIMIT = 16384  # characters kept from the end of a traceback
MESSAGE_LIMIT = 4096


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
