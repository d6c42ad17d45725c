"""Requeue to Celery: a task message by name to the chosen queue and priority, with the
DLQ record's id in the message headers so the worker's success hook can resolve it.
Celery is an optional extra (`pip install task-sidecar[celery]`).

A bulk retry's chunk is published in one kombu publish batch where the transport has them
(Redis, kombu >= 5.7: one pipeline, one round trip for the chunk instead of one per
message). A batch that fails to flush fails every send in it; some of its messages may
have left, and the records go back to pending: a requeue is at least once.

A chunk's messages are made by Celery's own `create_task_message` (the message protocol
stays Celery's) but published without `send_task`'s per-message work, which cost more than
the message itself: routing each name, declaring the queue again (kombu copies and binds
the queue on every publish) and a `saferepr` of the arguments. Each queue of the chunk is
declared once; the arguments' repr is cut at Celery's own limit; the body is encoded by
msgspec (the same JSON; the arguments came from JSON). The sidecar's Celery app
is its own (no routes, no signal handlers of the user's), so nothing those steps do is
lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from ..integrations.kombu import DLQ_HEADER, message_priority
from ..records import DlqRecord
from . import RequeueError, Send

_encode = msgspec.json.Encoder().encode


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

    def message_priority(self, priority: int) -> int:
        return message_priority(priority, self.broker_url)

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        (error,) = await self.requeue_many([(record, queue, priority)])
        if error is not None:
            raise error

    async def requeue_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._send_many, sends)

    def _send_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        errors: list[RequeueError | None] = []
        try:
            with self.app.producer_or_acquire() as producer:
                batch = getattr(producer, "batch", None)
                declared: set[str] = set()
                # No flush before the end: a flush failing halfway would leave messages
                # of sends already answered as sent unsent.
                with batch(max_size=2**31 - 1) if batch else contextlib.nullcontext():
                    for record, queue, priority in sends:
                        try:
                            self._publish(producer, declared, record, queue, priority)
                        except Exception as exc:  # this message only: the others go on
                            errors.append(RequeueError(f"celery: {type(exc).__name__}: {exc}"))
                        else:
                            errors.append(None)
        except Exception as exc:  # the flush, or the broker connection
            failed = RequeueError(f"celery: {type(exc).__name__}: {exc}")
            return [failed] * len(sends)
        return errors

    def _publish(
        self, producer: Any, declared: set[str], record: DlqRecord, queue: str, priority: int
    ) -> None:
        """One message: the task by name on the chosen queue and priority, keeping its task
        id (its hooks may only touch the record of their own task id, and operators follow
        one id through the retry), with the DLQ record's id in a header and the workflow
        it was part of (the rest of the chain, its callbacks and errbacks, and the ids
        tying it to its parent, root and group, as the integration's `workflow_of`
        reported them)."""
        amqp = self.app.amqp
        target = amqp.queues[queue] if queue else amqp.default_queue
        if target.name not in declared:
            producer.maybe_declare(target)
            declared.add(target.name)
        workflow = record.workflow or {}
        headers, properties, body, _ = amqp.create_task_message(
            record.task_id,
            record.task_name,
            record.args,
            record.kwargs,
            retries=record.attempts,
            chain=workflow.get("chain"),
            callbacks=workflow.get("callbacks"),
            errbacks=workflow.get("errbacks"),
            group_id=workflow.get("group_id"),
            root_id=workflow.get("root_id"),
            parent_id=workflow.get("parent_id"),
            ignore_result=None,  # as send_task: the task's own setting decides
            reply_to=self.app.thread_oid,  # as send_task (for an rpc:// result backend)
            argsrepr=_short_repr(record.args, amqp.argsrepr_maxsize),
            kwargsrepr=_short_repr(record.kwargs, amqp.kwargsrepr_maxsize),
        )
        headers[DLQ_HEADER] = record.id
        producer.publish(
            _encode(body),  # Celery's JSON, encoded by msgspec: kombu's encoder costs more
            exchange="",  # the default exchange routes by queue name, as send_task does
            routing_key=target.name,
            content_type="application/json",
            content_encoding="utf-8",
            retry=False,  # a failed chunk goes back to pending; the next bulk retry resends
            declare=None,
            delivery_mode=target.exchange.delivery_mode or 2,
            headers=headers,
            priority=self.message_priority(priority),
            **properties,
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.app.close()


def _short_repr(value: Any, limit: int) -> str:
    """The arguments' repr for Celery's `argsrepr` header (shown by monitors), cut at
    Celery's limit. DLQ arguments are bounded by the hook's body limit."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
