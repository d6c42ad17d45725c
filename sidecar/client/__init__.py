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

Success events go into a bounded buffer that a background thread sends to
`/v1/hooks/batch`. When the buffer is full the oldest events are dropped;
`stats()["dropped"]` counts them and a warning reports the count. Dead letters decided
locally, which the sidecar has not stored, are written (fsync'd) to a per-process file in
the outbox directory (`outbox_dir`, by default $TASK_SIDECAR_CLIENT_OUTBOX or
~/.local/state/task-sidecar/outbox) before `failure()` answers, and sent by the same
thread; a later process delivers what a killed one left (outbox.py). Every report carries
a `report_id` made once, so a report sent again (after a timeout, in a batch, from the
outbox) is the same report to the sidecar.

The package: `protocol` (what each hook sends, how an answer is read, when to fall back;
no I/O), `fallback` (the local decision), `exceptions` (serialisation), `keys`
(idempotency keys, report ids), `transport` (http.client and aiohttp), `batcher`,
`outbox` (dead letters on disk), and `clients` (SidecarClient, AsyncSidecarClient).
"""

from .clients import DEFAULT_TIMEOUT, AsyncSidecarClient, SidecarClient
from .exceptions import (
    MESSAGE_LIMIT,
    TRACEBACK_LIMIT,
    errno_of,
    http_status_of,
    retry_after_of,
    serialize_exception,
    sqlstate_of,
)
from .fallback import LocalDecider
from .keys import SCOPES, Scope, canonical_json, idempotency_key, new_report_id
from .protocol import Unavailable

__all__ = [
    "DEFAULT_TIMEOUT",
    "MESSAGE_LIMIT",
    "SCOPES",
    "TRACEBACK_LIMIT",
    "AsyncSidecarClient",
    "LocalDecider",
    "Scope",
    "SidecarClient",
    "Unavailable",
    "canonical_json",
    "errno_of",
    "http_status_of",
    "idempotency_key",
    "new_report_id",
    "retry_after_of",
    "serialize_exception",
    "sqlstate_of",
]
