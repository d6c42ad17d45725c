"""Tokens never reach a log: aiohttp quotes a malformed request's header lines in its
errors (Authorization included), so its loggers get a filter that masks credentials in
the message, its arguments and the traceback text."""

from __future__ import annotations

import logging
import re

# "Authorization: Bearer abc", "Bearer abc", "Basic abc": whatever follows the scheme.
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s'\"\\]+")
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal")


def redact(text: str) -> str:
    return _CREDENTIALS.sub(r"\1\2***", text)


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.msg))
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_safe(arg) for arg in args)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def _safe(value: object) -> object:
    """Numbers as they are; anything else as its redacted text."""
    if isinstance(value, int | float) or value is None:
        return value
    return redact(repr(value) if isinstance(value, bytes) else str(value))


_FILTER = RedactCredentials()


def install() -> None:
    for name in AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
