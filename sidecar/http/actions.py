"""The operators' action API (DESIGN §3.3): the dead-letter queue, breakers, trends, the
policy and the audit log. Reads need `viewer`, actions `operator`."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from ..records import MAX_ID_BYTES, DlqRecord
from ..requeue import RequeueError
from ..service.errors import Ambiguous, Conflict, NotFound
from .auth import actor_of, requires
from .keys import SERVICES
from .params import FILTER_PARAMS, dlq_filter, known_only, limit_of, path_id, time_param
from .problems import Problem, invalid, json_response, read

MAX_PAGE = 500


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_BYTES, pattern=NO_NUL)]


class RetryRequest(msgspec.Struct, frozen=True):
    priority: str | None = None
    queue: Annotated[str, Meta(min_length=1, max_length=255, pattern=NO_NUL)] | None = None


class AbandonRequest(msgspec.Struct, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NO_NUL)]


class FilterBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: str | None = None
    task_name: str | None = None
    failure_type: str | None = None
    task_id: str | None = None
    exception_type: str | None = None
    min_dlq_retries: Annotated[int, Meta(ge=0, lt=2**31)] | None = None
    q: str | None = None
    since: float | str | None = None
    until: float | str | None = None


class BulkRetryRequest(msgspec.Struct, frozen=True):
    ids: Annotated[list[Id], Meta(max_length=100_000)] | None = None
    filter: FilterBody | None = None
    priority: str | None = None
    rate_per_second: Annotated[float, Meta(gt=0, le=100_000)] | None = None
    dry_run: bool = False


class BulkAbandonRequest(msgspec.Struct, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NO_NUL)]
    ids: Annotated[list[Id], Meta(max_length=100_000)] | None = None
    filter: FilterBody | None = None
    dry_run: bool = False


def public(record: DlqRecord, *, traceback: bool = True) -> dict[str, object]:
    data = msgspec.to_builtins(record)
    if not traceback:
        data["exception"] = {k: v for k, v in data["exception"].items() if k != "traceback"}
    return data


def _lookup_problem(exc: NotFound | Ambiguous) -> Problem:
    if isinstance(exc, Ambiguous):
        return Problem(409, "Ambiguous id", str(exc), extra={"candidates": exc.candidates})
    return Problem(404, "Not found", str(exc))


def _priority_problem(name: str | None, request: web.Request) -> Problem:
    levels = [level.name for level in request.app[SERVICES].policies.current.priority.levels]
    return invalid("priority", f"expected one of {levels}, got {name!r}")


# --- DLQ ------------------------------------------------------------------------------------


@requires("viewer")
async def list_dlq(request: web.Request) -> web.Response:
    query = request.query
    known_only(query, (*FILTER_PARAMS, "limit", "cursor"))
    limit = limit_of(dict(query), most=MAX_PAGE)
    where = dlq_filter(dict(query))
    try:
        page = await request.app[SERVICES].dlq.list(where, limit, query.get("cursor"))
    except ValueError:
        raise invalid("query.cursor", "not a cursor this API returned") from None
    return json_response(
        {
            "records": [public(r, traceback=False) for r in page.records],
            "next_cursor": page.next_cursor,
        }
    )


@requires("viewer")
async def get_dlq(request: web.Request) -> web.Response:
    try:
        record = await request.app[SERVICES].dlq.get(path_id(request))
    except (NotFound, Ambiguous) as exc:
        raise _lookup_problem(exc) from None
    return json_response(public(record))


@requires("operator")
async def retry_dlq(request: web.Request) -> web.Response:
    body = await read(request, RetryRequest)
    try:
        record = await request.app[SERVICES].dlq.retry(
            path_id(request), actor_of(request), body.priority, body.queue
        )
    except KeyError:
        raise _priority_problem(body.priority, request) from None
    except (NotFound, Ambiguous) as exc:
        raise _lookup_problem(exc) from None
    except Conflict as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    except RequeueError as exc:
        raise Problem(502, "Requeue failed", f"{exc}; the record stays pending") from None
    return json_response(public(record))


@requires("operator")
async def abandon_dlq(request: web.Request) -> web.Response:
    body = await read(request, AbandonRequest)
    try:
        record = await request.app[SERVICES].dlq.abandon(
            path_id(request), actor_of(request), body.reason
        )
    except (NotFound, Ambiguous) as exc:
        raise _lookup_problem(exc) from None
    except Conflict as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    return json_response(public(record))


@requires("operator")
async def bulk_retry(request: web.Request) -> web.Response:
    body = await read(request, BulkRetryRequest)
    if (body.ids is None) == (body.filter is None):
        raise invalid("", "give either `ids` or `filter`")
    where = None
    if body.filter is not None:
        where = dlq_filter(msgspec.to_builtins(body.filter), "filter")
    try:
        answer = await request.app[SERVICES].dlq.bulk_retry(
            actor_of(request),
            ids=body.ids,
            where=where,
            priority=body.priority,
            rate_per_second=body.rate_per_second,
            dry_run=body.dry_run,
        )
    except KeyError:
        raise _priority_problem(body.priority, request) from None
    return json_response(answer, status=200 if body.dry_run else 202)


@requires("operator")
async def bulk_abandon(request: web.Request) -> web.Response:
    """Abandon pending or retrying records, by ids or by filter, each once, audited."""
    body = await read(request, BulkAbandonRequest)
    if (body.ids is None) == (body.filter is None):
        raise invalid("", "give either `ids` or `filter`")
    where = None
    if body.filter is not None:
        where = dlq_filter(msgspec.to_builtins(body.filter), "filter")
    answer = await request.app[SERVICES].dlq.bulk_abandon(
        actor_of(request), ids=body.ids, where=where, reason=body.reason, dry_run=body.dry_run
    )
    return json_response(answer)


@requires("viewer")
async def bulk_retry_progress(request: web.Request) -> web.Response:
    job = request.app[SERVICES].dlq.jobs.get(request.match_info["job"])
    if job is None:
        raise Problem(404, "Not found", "no such bulk retry in this sidecar")
    return json_response(job.view())


@requires("viewer")
async def export_csv(request: web.Request) -> web.StreamResponse:
    known_only(request.query, FILTER_PARAMS)
    where = dlq_filter(dict(request.query))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="dlq.csv"',
        }
    )
    await response.prepare(request)
    async for chunk in request.app[SERVICES].exports.dlq_csv(where):
        await response.write(chunk)
    await response.write_eof()
    return response


@requires("viewer")
async def export_events(request: web.Request) -> web.StreamResponse:
    """The hook-event history as JSON Lines (`task-sidecar events export`, `simulate`)."""
    known_only(request.query, ("since", "until"))
    now = time.time()
    since = time_param(request.query, "since", "30d", now)
    until = time_param(request.query, "until", None, now)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": 'attachment; filename="events.jsonl"',
        }
    )
    await response.prepare(request)
    async for chunk in request.app[SERVICES].exports.events_jsonl(since, until):
        await response.write(chunk)
    await response.write_eof()
    return response


# --- breakers, trends, policy, audit ---------------------------------------------------------


@requires("viewer")
async def list_breakers(request: web.Request) -> web.Response:
    return json_response({"breakers": await request.app[SERVICES].breakers.views()})


@requires("operator")
async def reset_breaker(request: web.Request) -> web.Response:
    try:
        view = await request.app[SERVICES].breakers.reset(
            request.match_info["key"], actor_of(request)
        )
    except NotFound as exc:
        raise Problem(404, "Not found", str(exc)) from None
    return json_response(view)


@requires("viewer")
async def failure_trends(request: web.Request) -> web.Response:
    raw = request.query.get("hours", "24")
    try:
        hours = float(raw)
    except ValueError:
        raise invalid("query.hours", f"expected a number of hours, got {raw!r}") from None
    if not 0 < hours <= 24 * 90:
        raise invalid("query.hours", f"expected more than 0 and at most 2160, got {raw}")
    buckets = await request.app[SERVICES].exports.trends(hours)
    return json_response({"hours": hours, "bucket_seconds": 3600, "buckets": buckets})


@requires("viewer")
async def get_policies(request: web.Request) -> web.Response:
    policies = request.app[SERVICES].policies
    return json_response({"path": str(policies.path), "policy": policies.document()})


@requires("operator")
async def reload_policies(request: web.Request) -> web.Response:
    problems = await request.app[SERVICES].policies.reload_by(
        actor_of(request), request.app[SERVICES].stores.dlq
    )
    if problems:
        raise Problem(
            422,
            "Invalid policy file",
            "the file was refused; the current policy stays",
            [{"path": "policies", "message": p} for p in problems],
        )
    return json_response({"reloaded": True})


@requires("viewer")
async def audit_log(request: web.Request) -> web.Response:
    limit = limit_of(dict(request.query), most=MAX_PAGE)
    try:
        page = await request.app[SERVICES].dlq.audit_log(limit, request.query.get("cursor"))
    except ValueError:
        raise invalid("query.cursor", "not a cursor this API returned") from None
    return json_response(page)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/dlq", list_dlq),
        web.get("/v1/dlq/export.csv", export_csv),
        web.get("/v1/events/export", export_events),
        web.post("/v1/dlq/bulk-retry", bulk_retry),
        web.post("/v1/dlq/bulk-abandon", bulk_abandon),
        web.get("/v1/dlq/bulk-retry/{job}", bulk_retry_progress),
        web.get("/v1/dlq/{id}", get_dlq),
        web.post("/v1/dlq/{id}/retry", retry_dlq),
        web.post("/v1/dlq/{id}/abandon", abandon_dlq),
        web.get("/v1/breakers", list_breakers),
        web.post("/v1/breakers/{key}/reset", reset_breaker),
        web.get("/v1/failure-trends", failure_trends),
        web.get("/v1/policies", get_policies),
        web.post("/v1/policies/reload", reload_policies),
        web.get("/v1/audit", audit_log),
    ]
