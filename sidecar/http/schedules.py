"""Schedule health over HTTP: the periodic tasks of the policy file plus those a worker
reports (`PUT /v1/schedules`, e.g. a Celery app's beat_schedule), analysed for hotspots,
conflicts and advice; the figures are also gauges."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from ..policy.durations import parse_duration
from ..schedules import ScheduleError, parse_schedules, report_document
from .auth import requires
from .keys import SERVICES
from .problems import Problem, invalid, json_response, read


@requires("viewer")
async def health(request: web.Request) -> web.Response:
    query = request.query
    try:
        horizon = timedelta(seconds=parse_duration(query.get("horizon", "24h")))
    except ValueError as exc:
        raise invalid("query.horizon", str(exc)) from None
    try:
        threshold = int(query["threshold"]) if "threshold" in query else None
    except ValueError:
        raise invalid("query.threshold", "expected a whole number") from None
    try:
        services = request.app[SERVICES]
        report = await services.schedules.analyse(services.policies.current, horizon, threshold)
    except ScheduleError as exc:  # a reported schedule the current policy cannot take
        raise Problem(422, "Unusable schedule", str(exc)) from None
    except ValueError as exc:
        raise invalid("query", str(exc)) from None
    return json_response(report_document(report))


@requires("hooks", "operator")
async def replace_schedules(request: web.Request) -> web.Response:
    data = await read(request, Any)
    try:
        schedules = parse_schedules(data)
    except ScheduleError as exc:
        raise Problem(
            400,
            "Invalid schedules",
            str(exc),
            [{"path": p.path, "message": p.message} for p in exc.problems],
        ) from None
    services = request.app[SERVICES]
    await services.schedules.replace(schedules, services.policies.current)
    return json_response({"schedules": len(schedules)})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/schedules/health", health),
        web.put("/v1/schedules", replace_schedules),
    ]
