"""Requeue through Celery's own client API: `send_task` by name to the chosen queue and
priority, with the DLQ record's id in the message headers so the worker's success hook can
resolve it. Celery is an optional extra (`pip install task-sidecar[celery]`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..store.base import DlqRecord
from . import RequeueError

DLQ_HEADER = "task_sidecar_dlq_id"


class CeleryTarget:
    name = "celery"

    def __init__(self, broker_url: str) -> None:
        # On Redis, kombu treats 0 as the highest priority (RabbitMQ: the highest number),
        # so our levels (CRITICAL 10 … DEFERRED 2) are turned around for it.
        self.lowest_first = broker_url.startswith(("redis://", "rediss://", "sentinel://"))
        try:
            from celery import Celery
        except ImportError:  # pragma: no cover - depends on the installation
            raise RequeueError("TASK_SIDECAR_REQUEUE=celery needs `pip install celery`") from None
        self.app = Celery("task-sidecar", broker=broker_url, set_as_current=False)
        self.app.conf.broker_connection_retry_on_startup = False
        self.app.conf.broker_transport_options = {"max_retries": 1}
        # Publishing blocks; one thread keeps the producer pool out of the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-requeue")

    def _send(self, record: DlqRecord, queue: str, priority: int) -> None:
        try:
            self.app.send_task(
                record.task_name,
                args=record.args,
                kwargs=record.kwargs,
                queue=queue,
                priority=self.message_priority(priority),
                headers={DLQ_HEADER: record.id},
                retries=record.attempts,
            )
        except Exception as exc:  # kombu raises many types; all mean "not handed over"
            raise RequeueError(f"celery: {type(exc).__name__}: {exc}") from exc

    def message_priority(self, priority: int) -> int:
        return max(0, min(9, 10 - priority)) if self.lowest_first else priority

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._send, record, queue, priority)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.app.close()
