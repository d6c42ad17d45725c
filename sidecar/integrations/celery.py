"""Celery integration.

`send_beat_schedule(app, url)` reports a Celery app's `beat_schedule` to the sidecar so
its schedule health (hotspots, conflicts, advice) covers the periodic tasks the app runs.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from ..policy.schedules import ScheduleError, schedule_from_celery


def beat_schedules(app: Any, durations: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The app's beat_schedule as sidecar schedule entries. An entry Celery can run but
    the analysis cannot express (a solar schedule) is left out rather than failing all."""
    durations = durations or {}
    timezone = str(app.conf.timezone) if app.conf.timezone else None
    out = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        try:
            schedule = schedule_from_celery(
                name, entry, timezone=timezone, expected_duration=durations.get(name)
            )
        except ScheduleError:
            continue
        out.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "queue": schedule.queue,
                "expected_duration": schedule.expected_duration,
                "timezone": schedule.timezone,
            }
        )
    return out


def send_beat_schedule(
    app: Any,
    url: str,
    token: str | None = None,
    durations: dict[str, float] | None = None,
    timeout: float = 5.0,
) -> int:
    """PUT the app's beat_schedule to the sidecar at `url`; returns how many it took.
    `durations` gives the expected run time (seconds) of entries, for conflict checks."""
    body = json.dumps({"schedules": beat_schedules(app, durations)}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/schedules", body, headers, method="PUT")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["schedules"]
