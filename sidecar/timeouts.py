"""Giving up on a call without cancelling it.

Cancelling a psycopg query that a hanging server (SIGSTOP, a partition) never answers is
slow: psycopg sends a cancel request and waits for it, up to ten seconds. Where a caller
has a budget (a hook), it stops waiting instead: the call goes on in the background and
ends on its own; writes that may finish late are idempotent (ids made before the first
attempt), so the spool replaying them later does no harm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("task_sidecar")
_abandoned: set[asyncio.Future[object]] = set()  # keeps them alive until they end


async def within(call: Awaitable[T], seconds: float) -> T:
    """The call's result, or TimeoutError after `seconds`, leaving the call running."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        return task.result()
    _abandoned.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError(f"no answer within {seconds:g}s")


def _forget(task: asyncio.Future[object]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("an abandoned call ended with %r", task.exception())
