"""What leaves the store for people: the DLQ as CSV, failure trends."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import msgspec

from ..metrics import Metrics
from ..records import DlqFilter, DlqRecord
from ..store.ports import DlqStore

CSV_COLUMNS = (
    "id",
    "status",
    "task_name",
    "task_id",
    "queue",
    "failure_type",
    "category",
    "remediation",
    "confidence",
    "rule",
    "priority",
    "target_queue",
    "attempts",
    "dlq_retries",
    "created_at",
    "updated_at",
    "exception_type",
    "message",
    "last_error",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
CHUNK = 64 * 1024


def safe_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula gets a quote first
    (OWASP's advice for CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(record: DlqRecord) -> list[str]:
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    values = {
        **msgspec.to_builtins(record),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "exception_type": record.exception.get("type"),
        "message": record.exception.get("message"),
    }
    return [safe_cell(values.get(column)) for column in CSV_COLUMNS]


class Exports:
    def __init__(self, store: DlqStore, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock

    async def dlq_csv(self, where: DlqFilter) -> AsyncIterator[bytes]:
        """The matching records as CSV, in chunks of about 64 KiB: never all in memory."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        async for record in self.store.iterate(where):
            writer.writerow(csv_row(record))
            if buffer.tell() > CHUNK:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()
        self.metrics.record_dlq_action("export")

    async def events_jsonl(self, since: float, until: float) -> AsyncIterator[bytes]:
        """The event history as JSON Lines, oldest first, one chunk per store batch:
        `{"at", "kind", "event", "decision"?}` (DESIGN §3.3, the input of `simulate`)."""
        async for rows in self.store.events(since, until):
            lines = []
            for row in rows:
                line = f'{{"at":{float(row["at"])!r},"kind":"{row["kind"]}","event":{row["event"]}'
                if row["decision"] is not None:
                    line += f',"decision":{row["decision"]}'
                lines.append(line + "}\n")
            yield "".join(lines).encode()

    async def trends(self, hours: float) -> list[dict[str, object]]:
        buckets = await self.store.trends(self.clock() - hours * 3600, 3600)
        return [msgspec.to_builtins(b) for b in buckets]
