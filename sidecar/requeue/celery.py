"""Requeue through Celery's own client API: `send_task` by name to the chosen queue and
priority, with the DLQ record's id in the message headers so the worker's success hook can
resolve it. Celery is an optional extra (`pip install task-sidecar[celery]`).

A bulk retry's chunk is published in one kombu publish batch where the transport has them
(Redis, kombu >= 5.7: one pipeline, one round trip for the chunk instead of one per
message). A batch that fails to flush fails every send in it; some of its messages may
have left, and the records go back to pending: a requeue is at least once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..integrations.kombu import DLQ_HEADER, message_priority
from ..records import DlqRecord
from . import RequeueError, Send


class CeleryTarget:
    name = "celery"

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        try:
            from celery import Celery
        except ImportError:  # pragma: no cover - depends on the installation
            raise RequeueError("TASK_SIDECAR_REQUEUE=celery needs `pip install celery`") from None
        self.app = Celery("task-sidecar", broker=broker_url, set_as_current=False)
        self.app.conf.broker_connection_retry_on_startup = False
        self.app.conf.broker_transport_options = {"max_retries": 1}
        # Publishing blocks; one thread keeps the producer pool out of the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-requeue")

    def _send(self, record: DlqRecord, queue: str, priority: int, producer: Any = None) -> None:
        try:
            self.app.send_task(
                record.task_name,
                args=record.args,
                kwargs=record.kwargs,
                queue=queue or None,  # "": the task's default queue (Celery's routing)
                priority=self.message_priority(priority),
                headers={DLQ_HEADER: record.id},
                # The run keeps the task's id: its hooks may only touch the record of
                # their own task id, and operators follow one id through the retry.
                task_id=record.task_id,
                retries=record.attempts,
                producer=producer,
                **workflow_options(record.workflow),
            )
        except Exception as exc:  # kombu raises many types; all mean "not handed over"
            raise RequeueError(f"celery: {type(exc).__name__}: {exc}") from exc

    def message_priority(self, priority: int) -> int:
        return message_priority(priority, self.broker_url)

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._send, record, queue, priority)

    async def requeue_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._send_many, sends)

    def _send_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        errors: list[RequeueError | None] = []
        try:
            with self.app.producer_or_acquire() as producer:
                batch = getattr(producer, "batch", None)
                # No flush before the end: a flush failing halfway would leave messages
                # of sends already answered as sent unsent.
                with batch(max_size=2**31 - 1) if batch else contextlib.nullcontext():
                    for record, queue, priority in sends:
                        try:
                            self._send(record, queue, priority, producer)
                        except RequeueError as exc:
                            errors.append(exc)
                        else:
                            errors.append(None)
        except Exception as exc:  # the flush, or the broker connection
            failed = RequeueError(f"celery: {type(exc).__name__}: {exc}")
            return [failed] * len(sends)
        return errors

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.app.close()


def workflow_options(workflow: dict[str, Any] | None) -> dict[str, Any]:
    """send_task options that let a retried link go on with its workflow: the rest of the
    chain, its callbacks and errbacks, and the ids tying it to its parent, root and group
    (as the integration's `workflow_of` reported them)."""
    workflow = workflow or {}
    options = {
        "chain": workflow.get("chain"),
        "link": workflow.get("callbacks"),
        "link_error": workflow.get("errbacks"),
        "parent_id": workflow.get("parent_id"),
        "root_id": workflow.get("root_id"),
        "group_id": workflow.get("group_id"),
    }
    return {name: value for name, value in options.items() if value}
