"""Where a task retried from the dead-letter queue goes: a Celery broker, or a webhook.

A target sends one record to one queue at one priority, or raises RequeueError saying
why; the DLQ record then goes back to `pending` with that error. `requeue_many` sends a
bulk retry's chunk and answers, per send, None (sent) or the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..records import DlqRecord


class RequeueError(Exception):
    """The task could not be handed over; the message is stored as the record's last_error."""


Send = tuple[DlqRecord, str, int]  # a record, the queue and the priority it goes to


class RequeueTarget(Protocol):
    name: str

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None: ...

    async def requeue_many(self, sends: Sequence[Send]) -> list[RequeueError | None]: ...

    async def close(self) -> None: ...


async def one_by_one(target: RequeueTarget, sends: Sequence[Send]) -> list[RequeueError | None]:
    """`requeue_many` for a target with nothing better than one send after another."""
    errors: list[RequeueError | None] = []
    for record, queue, priority in sends:
        try:
            await target.requeue(record, queue, priority)
        except RequeueError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    return errors


class NoTarget:
    """No target configured: retries are refused with a clear reason."""

    name = "none"

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        raise RequeueError(
            "no requeue target configured: set TASK_SIDECAR_REQUEUE to celery or webhook"
        )

    async def requeue_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        return await one_by_one(self, sends)

    async def close(self) -> None:
        return None
