"""Wire types of the v1 contract (DESIGN §3.1), shared by the core, the service and the CLI.

msgspec decodes and validates a request body into these in one pass; its errors carry the
JSON path of the bad field (`$.exception.type`), which `decode_error_path` turns into the
dotted form of our problem documents. Unknown fields are ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# Bounds keep a hostile client from making us hash or match megabytes, and reject values
# (NaN, 1e400 → inf, negative attempts) that would poison arithmetic.
# NUL is refused in names and ids: PostgreSQL text columns cannot store it.
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=512, pattern=NO_NUL)]
ShortText = Annotated[str, Meta(max_length=512, pattern=NO_NUL)]
Message = Annotated[str, Meta(max_length=65536)]
Traceback = Annotated[str, Meta(max_length=262144)]
Seconds = Annotated[float, Meta(ge=0, le=1e11)]
Count = Annotated[int, Meta(ge=0, le=1_000_000_000)]
Attempt = Annotated[int, Meta(ge=0, le=100_000)]
Code = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=NO_NUL,
        description="The error's own code: Node's err.code (ECONNREFUSED), a SQLSTATE "
        "(40P01), a library's code (UND_ERR_SOCKET, ERR_BAD_RESPONSE).",
    ),
]
Language = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=32,
        pattern=NO_NUL,
        description="The worker's language: python, node, java, go, ruby, … (any case).",
    ),
]


class ExceptionInfo(msgspec.Struct, frozen=True):
    type: Name
    module: ShortText | None = None
    mro: tuple[Name, ...] = ()
    message: Message = ""
    traceback: Traceback | None = None
    errno: Annotated[int, Meta(ge=-(2**31), le=2**31)] | None = None
    http_status: Annotated[int, Meta(ge=100, le=599)] | None = None
    # Kept from before `code` existed: a SQLSTATE here counts as the code when none is sent.
    sqlstate: Annotated[str, Meta(min_length=5, max_length=5)] | None = None
    code: Code | None = None
    language: Language | None = None

    @property
    def error_code(self) -> str | None:
        """`code`, or the older `sqlstate` when no code was sent."""
        return self.code if self.code is not None else self.sqlstate


class Context(msgspec.Struct, frozen=True):
    customer_tier: ShortText | None = None
    enqueued_at: Seconds | None = None
    age_seconds: Seconds | None = None
    safety_critical: bool = False
    queue_depth: Count | None = None
    retry_after_seconds: Seconds | None = None
    user_id: ShortText | None = None
    device_id: ShortText | None = None

    def age(self, now: float) -> float | None:
        """Seconds since the task was first enqueued, when the worker told us."""
        if self.age_seconds is not None:
            return self.age_seconds
        if self.enqueued_at is not None:
            return max(0.0, now - self.enqueued_at)
        return None


EMPTY_CONTEXT = Context()


class FailureEvent(msgspec.Struct, frozen=True):
    task_id: Name
    task_name: Name
    exception: ExceptionInfo
    queue: ShortText | None = None
    attempt: Attempt = 0
    context: Context = EMPTY_CONTEXT
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    dlq_id: ShortText | None = None
    report_id: ShortText | None = None  # made once per failure by the client: stored once
    workflow: dict[str, Any] | None = None  # what the worker needs to go on (chain, links)
    host: ShortText | None = None  # the worker's host (a lost run's, for the DLQ record)
    # A lost run's process (WorkerLostError): the same `process` its start named, so the
    # report and the redelivered start of the next run count that run once.
    process: ShortText | None = None
    # The worker has already given up on it: its client, with the sidecar away, decided a
    # dead letter locally and sends the report afterwards. No retry can follow.
    worker_gave_up: bool = False


class SuccessEvent(msgspec.Struct, frozen=True):
    task_id: Name
    task_name: Name
    attempt: Attempt = 0
    runtime_seconds: Seconds | None = None
    dlq_id: ShortText | None = None
    report_id: ShortText | None = None


class StartEvent(msgspec.Struct, frozen=True):
    task_id: Name
    task_name: Name
    attempt: Attempt = 0
    queue: ShortText | None = None
    # Poison detection (docs/celery.md): how often the broker delivered this message
    # (1 = first), whether it says it is a redelivery, the worker's host, and the DLQ
    # record when the run is a retry from the DLQ; `process` names the process running it
    # (a WorkerLostError report names the same one).
    delivery_count: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    redelivered: bool = False
    host: ShortText | None = None
    dlq_id: ShortText | None = None
    process: ShortText | None = None
    args: tuple[Any, ...] = ()  # kept for the DLQ record of a poison task
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def redelivery(self) -> bool:
        return self.redelivered or (self.delivery_count or 0) > 1


class EndEvent(msgspec.Struct, frozen=True):
    """A run ended without a success or failure report (postponed, a duplicate skipped):
    it is not a lost run."""

    task_id: Name
    task_name: Name


# --- answers ------------------------------------------------------------------------------

Action = Literal["retry", "dead_letter", "discard"]


class Classification(msgspec.Struct, frozen=True):
    """What the taxonomy made of a failure, and the rule that said so."""

    failure_type: str
    category: str
    confidence: float
    remediation: str
    rule: str


class BreakerOut(msgspec.Struct, frozen=True):
    key: str
    state: str


class Decision(msgspec.Struct, frozen=True):
    """The answer to a failure hook: what the worker does next, and why."""

    action: Action
    delay_seconds: float
    queue: str | None  # None: the task's own queue (the worker did not say which)
    priority: str
    priority_value: int
    classification: Classification
    breaker: BreakerOut | None
    rationale: str
    dlq_id: str | None = None


class StartAnswer(msgspec.Struct, frozen=True):
    allow: bool
    delay_seconds: float = 0.0
    breaker: BreakerOut | None = None
    # A poison task (too many lost runs): acknowledge the message without running it.
    dead_lettered: bool = False
    dlq_id: str | None = None


def decode_error_path(error: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's "Expected `int`, got `str` - at `$.exception.errno`" into
    ("exception.errno", "Expected `int`, got `str`")."""
    text = str(error)
    message, sep, where = text.rpartition(" - at `")
    if not sep:  # the top-level object itself
        message, where = text, ""
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    if message.startswith("Expected `str` matching regex") and "x00" in message:
        message = "must not contain NUL characters"
    missing = _MISSING.fullmatch(message)
    if missing:  # name the missing field itself, not the object that lacks it
        path = f"{path}.{missing[1]}".lstrip(".")
        message = "required field is missing"
    return path, message


_MISSING = re.compile(r"Object missing required field `([^`]*)`")
