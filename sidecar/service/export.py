"""What leaves the store for people: the DLQ as CSV, failure trends."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..metrics import Metrics
from ..records import DlqFilter
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
_FORMULA_FIRST = frozenset("=+-@\t\r\n")
_TIME_CELLS = (CSV_COLUMNS.index("created_at"), CSV_COLUMNS.index("updated_at"))
CHUNK = 64 * 1024


def csv_row(row: dict[str, Any]) -> list[object]:
    """One export row (`DlqStore.export_rows`, its columns in CSV_COLUMNS order) as CSV
    cells: times in ISO 8601 UTC; text that starts like a formula gets a quote first, so a
    spreadsheet shows it as text (OWASP's advice against CSV injection). The other cells
    are numbers or None."""
    cells = [
        "'" + value if type(value) is str and value[:1] in _FORMULA_FIRST else value
        for value in row.values()
    ]
    for at in _TIME_CELLS:
        cells[at] = datetime.fromtimestamp(cells[at], UTC).isoformat()
    return cells


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
        async for rows in self.store.export_rows(where):
            writer.writerows(map(csv_row, rows))
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
