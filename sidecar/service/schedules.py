"""The schedules a running sidecar analyses: those of the policy file plus those workers
report (`PUT /v1/schedules`, e.g. a Celery app's beat_schedule), and the gauges fed from
the last analysis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from ..metrics import Metrics
from ..policy.model import Policy
from ..schedules import DAY, Report, Schedule, analyse, analysis_document


class Schedules:
    """The reported schedules, and the last analysis behind the gauges (`last`: as the
    DLQ explorer stores it, None before the first)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.reported: tuple[Schedule, ...] = ()
        self.last: dict[str, Any] | None = None

    def all(self, policy: Policy) -> tuple[Schedule, ...]:
        """The policy's schedules, except those a worker reported under the same name."""
        reported = {s.name for s in self.reported}
        return tuple(s for s in policy.schedules if s.name not in reported) + self.reported

    async def analyse(
        self, policy: Policy, horizon: timedelta = DAY, threshold: int | None = None
    ) -> Report:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        kwargs = {} if threshold is None else {"hotspot_threshold": threshold}
        # Pure but not instant (tens of ms for a large schedule): off the event loop.
        return await asyncio.to_thread(analyse, self.all(policy), today, horizon, **kwargs)

    async def replace(self, schedules: tuple[Schedule, ...], policy: Policy) -> None:
        """What the workers report now (replacing the last report); the gauges follow."""
        self.reported = schedules
        await self.refresh_gauges(policy)

    async def refresh_gauges(self, policy: Policy) -> None:
        report = await self.analyse(policy)
        reported = {s.name for s in self.reported}
        self.last = analysis_document(report, self.all(policy), reported)
        self.metrics.set_schedule_health(
            report.score,
            len(report.hotspots),
            len(report.conflicts),
            [
                (queue, hour, starts)
                for queue, per_hour in report.load_by_hour.items()
                for hour, starts in enumerate(per_hour)
            ],
        )
