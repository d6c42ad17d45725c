"""The operators' action API (DESIGN §3.3): the dead-letter queue, breakers, trends, the
policy and the audit log. Reads need `viewer`, actions `operator`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from ..operations import Conflict, NotFound, parse_time
from ..requeue import RequeueError
from ..store.base import STATUSES, DlqFilter, DlqRecord
from .auth import TOKEN_NAME, requires
from .keys import METRICS, OPERATIONS, POLICIES
from .problems import Problem, invalid, json_response, read

MAX_PAGE = 500


class RetryRequest(msgspec.Struct, frozen=True):
    priority: str | None = None
    queue: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


class AbandonRequest(msgspec.Struct, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=2000)]


class FilterBody(msgspec.Struct, frozen=True):
    status: str | None = None
    task_name: str | None = None
    failure_type: str | None = None
    since: float | str | None = None
    until: float | str | None = None


class BulkRetryRequest(msgspec.Struct, frozen=True):
    ids: Annotated[list[Annotated[str, Meta(max_length=512)]], Meta(max_length=100_000)] | None = (
        None
    )
    filter: FilterBody | None = None
    priority: str | None = None
    rate_per_second: Annotated[float, Meta(gt=0, le=100_000)] | None = None
    dry_run: bool = False


def actor(request: web.Request) -> str:
    return request.get(TOKEN_NAME, "anonymous")


def dlq_filter(values: dict[str, object], where: str = "query") -> DlqFilter:
    """Filters from a query string or a JSON body, each checked, 400 naming the bad one."""
    status = values.get("status")
    if status is not None and status not in STATUSES:
        raise invalid(f"{where}.status", f"expected one of {list(STATUSES)}, got {status!r}")
    times = {}
    for name in ("since", "until"):
        value = values.get(name)
        if value is not None:
            try:
                times[name] = parse_time(str(value), name)
            except ValueError as exc:
                raise invalid(f"{where}.{name}", str(exc).partition(": ")[2]) from None
    return DlqFilter(
        status=status,  # type: ignore[arg-type]
        task_name=values.get("task_name") or None,  # type: ignore[arg-type]
        failure_type=values.get("failure_type") or None,  # type: ignore[arg-type]
        **times,
    )


def public(record: DlqRecord, *, traceback: bool = True) -> dict[str, object]:
    data = msgspec.to_builtins(record)
    if not traceback:
        data["exception"] = {k: v for k, v in data["exception"].items() if k != "traceback"}
    return data


def _priority_problem(name: str | None, request: web.Request) -> Problem:
    levels = [level.name for level in request.app[POLICIES].current.priority.levels]
    return invalid("priority", f"expected one of {levels}, got {name!r}")


# --- DLQ ------------------------------------------------------------------------------------


@requires("viewer")
async def list_dlq(request: web.Request) -> web.Response:
    query = request.query
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise invalid("query.limit", f"expected a whole number, got {query['limit']!r}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise invalid("query.limit", f"expected 1 to {MAX_PAGE}, got {limit}")
    where = dlq_filter(dict(query))
    try:
        page = await request.app[OPERATIONS].stores.dlq.list(where, limit, query.get("cursor"))
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
        record = await request.app[OPERATIONS].get(request.match_info["id"])
    except NotFound as exc:
        raise Problem(404, "Not found", str(exc)) from None
    return json_response(public(record))


@requires("operator")
async def retry_dlq(request: web.Request) -> web.Response:
    body = await read(request, RetryRequest)
    try:
        record = await request.app[OPERATIONS].retry(
            request.match_info["id"], actor(request), body.priority, body.queue
        )
    except KeyError:
        raise _priority_problem(body.priority, request) from None
    except NotFound as exc:
        raise Problem(404, "Not found", str(exc)) from None
    except Conflict as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    except RequeueError as exc:
        raise Problem(502, "Requeue failed", f"{exc}; the record stays pending") from None
    return json_response(public(record))


@requires("operator")
async def abandon_dlq(request: web.Request) -> web.Response:
    body = await read(request, AbandonRequest)
    try:
        record = await request.app[OPERATIONS].abandon(
            request.match_info["id"], actor(request), body.reason
        )
    except NotFound as exc:
        raise Problem(404, "Not found", str(exc)) from None
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
        answer = await request.app[OPERATIONS].bulk_retry(
            actor(request),
            ids=body.ids,
            where=where,
            priority=body.priority,
            rate_per_second=body.rate_per_second,
            dry_run=body.dry_run,
        )
    except KeyError:
        raise _priority_problem(body.priority, request) from None
    return json_response(answer, status=200 if body.dry_run else 202)


@requires("viewer")
async def bulk_retry_progress(request: web.Request) -> web.Response:
    job = request.app[OPERATIONS].jobs.get(request.match_info["job"])
    if job is None:
        raise Problem(404, "Not found", "no such bulk retry in this sidecar")
    return json_response(job.view())


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
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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


@requires("viewer")
async def export_csv(request: web.Request) -> web.StreamResponse:
    where = dlq_filter(dict(request.query))
    operations = request.app[OPERATIONS]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="dlq.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for record in operations.stores.dlq.iterate(where):
        writer.writerow(csv_row(record))
        if buffer.tell() > 64 * 1024:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    metrics = request.app[METRICS]
    metrics.at(metrics.dlq_actions, "export").inc()
    return response


# --- breakers, trends, policy, audit ---------------------------------------------------------


@requires("viewer")
async def list_breakers(request: web.Request) -> web.Response:
    return json_response({"breakers": await request.app[OPERATIONS].breakers()})


@requires("operator")
async def reset_breaker(request: web.Request) -> web.Response:
    try:
        view = await request.app[OPERATIONS].reset_breaker(
            request.match_info["key"], actor(request)
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
    buckets = await request.app[OPERATIONS].trends(hours)
    return json_response({"hours": hours, "bucket_seconds": 3600, "buckets": buckets})


@requires("viewer")
async def get_policies(request: web.Request) -> web.Response:
    policies = request.app[POLICIES]
    return json_response({"path": str(policies.path), "policy": policy_document(policies)})


@requires("operator")
async def reload_policies(request: web.Request) -> web.Response:
    problems = await request.app[OPERATIONS].reload_policy(actor(request))
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
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise invalid("query.limit", "expected a whole number") from None
    if not 1 <= limit <= MAX_PAGE:
        raise invalid("query.limit", f"expected 1 to {MAX_PAGE}, got {limit}")
    try:
        page = await request.app[OPERATIONS].stores.dlq.audit_log(
            limit, request.query.get("cursor")
        )
    except ValueError:
        raise invalid("query.cursor", "not a cursor this API returned") from None
    return json_response(page)


def policy_document(policies) -> dict[str, object]:
    """The effective policy (defaults filled in) as plain JSON values."""
    import dataclasses

    def plain(value: object) -> object:
        if dataclasses.is_dataclass(value):
            return {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not f.name.startswith("_")
            }
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list | frozenset | set):
            items = [plain(v) for v in value]
            return sorted(items, key=str) if isinstance(value, frozenset | set) else items
        return value

    return plain(policies.current)  # type: ignore[return-value]


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/dlq", list_dlq),
        web.get("/v1/dlq/export.csv", export_csv),
        web.post("/v1/dlq/bulk-retry", bulk_retry),
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
