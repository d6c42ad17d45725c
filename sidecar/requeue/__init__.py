"""Where a task retried from the dead-letter queue goes: a Celery broker, or a webhook.

A target sends one record to one queue at one priority, or raises RequeueError saying
why; the DLQ record then goes back to `pending` with that error.
"""

from __future__ import annotations

from typing import Protocol

from ..records import DlqRecord


class RequeueError(Exception):
    """The task could not be handed over; the message is stored as the record's last_error."""


class RequeueTarget(Protocol):
    name: str

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None: ...

    async def close(self) -> None: ...


class NoTarget:
    """No target configured: retries are refused with a clear reason."""

    name = "none"

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        raise RequeueError(
            "no requeue target configured: set TASK_SIDECAR_REQUEUE to celery or webhook"
        )

    async def close(self) -> None:
        return None
