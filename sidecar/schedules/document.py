"""A schedule report as plain JSON values: the body of `GET /v1/schedules/health` and of
`task-sidecar schedules analyse -o json`. Datetimes are ISO 8601 in UTC (`…Z`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from .model import Report, Schedule


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def report_document(report: Report) -> dict[str, Any]:
    """Every figure of `report`; the shape is a contract (docs/schedules.md)."""
    return {
        "start": iso(report.start),
        "horizon_seconds": report.horizon.total_seconds(),
        "hotspot_threshold": report.hotspot_threshold,
        "schedules": report.schedules,
        "starts": report.starts,
        "score": report.score,
        "score_parts": {
            "hotspot_share": round(report.hotspot_share, 4),
            "conflict_share": round(report.conflict_share, 4),
        },
        "peak": {"starts": report.peak, "minute": iso(report.peak_minute)},
        "hotspots": [
            {"minute": iso(h.minute), "starts": h.starts, "tasks": list(h.tasks)}
            for h in report.hotspots
        ],
        "conflicts": [
            {
                "kind": c.kind,
                "tasks": list(c.tasks),
                "queue": c.queue,
                "first": iso(c.first),
                "occurrences": c.occurrences,
                "detail": c.detail,
            }
            for c in report.conflicts
        ],
        "recommendations": [
            {
                "task": r.task,
                "cron": r.cron,
                "new_cron": r.new_cron,
                "minute_offset": r.minute_offset,
                "reason": r.reason,
            }
            for r in report.recommendations
        ],
        "after_recommendations": (
            {"score": report.score_after, "peak": report.peak_after}
            if report.recommendations
            else None
        ),
        "starts_per_hour": list(report.starts_per_hour),
        "load_by_hour": {queue: list(v) for queue, v in report.load_by_hour.items()},
        "starts_per_minute": list(report.starts_per_minute),
    }


def analysis_document(
    report: Report, schedules: Sequence[Schedule], reported: Collection[str]
) -> dict[str, Any]:
    """What the DLQ explorer's schedule views read (postgres/0011): the report and every
    schedule analysed, `source` telling the policy file's from those a worker reported."""
    return {
        "schedules": [
            {
                "name": s.name,
                "cron": s.cron,
                "queue": s.queue,
                "expected_duration_seconds": s.expected_duration,
                "timezone": s.timezone,
                "source": "reported" if s.name in reported else "policy",
            }
            for s in schedules
        ],
        "report": report_document(report),
    }
