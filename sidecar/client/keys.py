"""Keys the client makes: idempotency keys (DESIGN §3.2) and report ids (§3.1)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Scope = Literal["global", "user", "device", "task"]
SCOPES = ("global", "user", "device", "task")
Ttl = float | None  # seconds a completed key refuses duplicates; None: the scope's default
Owner = str | None  # the token a claim answered with, proving a later complete/release is ours


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


class _ReportIds:
    """128 random bits drawn once per process, then a counter: unique like a uuid4 per id,
    without a system call per event on the hot path. A forked child draws its own."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(16)
        self.counter = itertools.count()  # next() is atomic under the GIL

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_report_ids = _ReportIds()


def new_report_id(task_id: str, attempt: int) -> str:
    """A report's own id, made once when the event is built and sent unchanged with every
    re-send of that report (keep-alive retry, batch after a timeout), so the sidecar can
    store it once. The task id and attempt are there for people reading it; the process's
    random prefix and counter make it unique (the task id is cut so the id stays short)."""
    return f"{task_id[:128]}:{attempt}:{_report_ids()}"
