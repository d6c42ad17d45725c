"""The OpenAPI 3.1 document of the v1 API, built from the same msgspec types that decode
the requests, so the document cannot drift from what the handlers accept."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .. import __version__
from ..policy.events import (
    Classification,
    Decision,
    EndEvent,
    FailureEvent,
    StartAnswer,
    StartEvent,
    SuccessEvent,
)
from ..records import AuditPage, Claim, DlqRecord
from ..service.breakers import BreakerView
from . import actions, hooks
from .problems import json_response

SCHEMA_TYPES = [
    FailureEvent,
    SuccessEvent,
    StartEvent,
    EndEvent,
    Decision,
    StartAnswer,
    Classification,
    hooks.ClaimRequest,
    hooks.ClaimsRequest,
    hooks.KeyRequest,
    Claim,
    DlqRecord,
    AuditPage,
    BreakerView,
    actions.RetryRequest,
    actions.AbandonRequest,
    actions.BulkRetryRequest,
    actions.BulkAbandonRequest,
]

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
ANY_OBJECT = {"type": "object"}
FILTER_PARAMS = [
    {
        "name": "status",
        "in": "query",
        "schema": {"type": "string", "enum": ["pending", "retrying", "resolved", "abandoned"]},
    },
    {"name": "task_name", "in": "query", "schema": {"type": "string"}},
    {"name": "failure_type", "in": "query", "schema": {"type": "string"}},
    {"name": "task_id", "in": "query", "schema": {"type": "string"}},
    {"name": "exception_type", "in": "query", "schema": {"type": "string"}},
    {"name": "min_dlq_retries", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {
        "name": "q",
        "in": "query",
        "schema": {"type": "string", "minLength": 3},
        "description": "any part (any case) of the task id, exception type, message or traceback",
    },
    {
        "name": "since",
        "in": "query",
        "schema": {"type": "string"},
        "description": "unix seconds, ISO 8601, or an age like 24h",
    },
    {"name": "until", "in": "query", "schema": {"type": "string"}},
]
PAGE_PARAMS = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": actions.MAX_PAGE},
    },
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]


def ref(kind: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def operation(
    summary: str,
    roles: tuple[str, ...] | None,
    *,
    body: Any = None,
    answer: Any = ANY_OBJECT,
    status: int = 200,
    params: list | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {"description": "OK", "content": {content_type: {"schema": answer}}},
        "400": {"$ref": "#/components/responses/Problem"},
        "503": {"$ref": "#/components/responses/Problem"},
    }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if roles:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Needs a token of the role {' or '.join(roles)}."
        responses["401"] = {"$ref": "#/components/responses/Problem"}
        responses["403"] = {"$ref": "#/components/responses/Problem"}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        responses["413"] = {"$ref": "#/components/responses/Problem"}
    if params:
        op["parameters"] = params
    return op


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        SCHEMA_TYPES, ref_template="#/components/schemas/{name}"
    )
    batch_item = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": ["failure", "success", "start", "end"]}},
    }
    paths = {
        "/v1/hooks/failure": {
            "post": operation(
                "Report a failure; answers what to do next",
                ("hooks",),
                body=ref(FailureEvent),
                answer=ref(Decision),
            )
        },
        "/v1/hooks/success": {
            "post": operation("Report a success", ("hooks",), body=ref(SuccessEvent))
        },
        "/v1/hooks/start": {
            "post": operation(
                "May the task run now?", ("hooks",), body=ref(StartEvent), answer=ref(StartAnswer)
            )
        },
        "/v1/hooks/batch": {
            "post": operation(
                "Several events at once",
                ("hooks",),
                body={"type": "array", "items": batch_item, "maxItems": hooks.MAX_BATCH},
            )
        },
        "/v1/classify": {
            "post": operation(
                "Classify a failure (dry run)",
                ("hooks", "viewer"),
                body=ref(FailureEvent),
                answer=ref(Classification),
            )
        },
        "/v1/decide": {
            "post": operation(
                "The decision a failure would get (dry run)",
                ("hooks", "viewer"),
                body=ref(FailureEvent),
                answer=ref(Decision),
            )
        },
        "/v1/idempotency/claim": {
            "post": operation(
                "Claim an idempotency key",
                ("hooks",),
                body=ref(hooks.ClaimRequest),
                answer=ref(Claim),
            )
        },
        "/v1/idempotency/claims": {
            "post": operation(
                "Claim many idempotency keys at once, answered in order",
                ("hooks",),
                body=ref(hooks.ClaimsRequest),
                answer={
                    "type": "object",
                    "properties": {"results": {"type": "array", "items": ref(Claim)}},
                    "required": ["results"],
                },
            )
        },
        "/v1/idempotency/complete": {
            "post": operation("Mark a claimed key done", ("hooks",), body=ref(hooks.KeyRequest))
        },
        "/v1/idempotency/release": {
            "post": operation("Release a running claim", ("hooks",), body=ref(hooks.KeyRequest))
        },
        "/v1/dlq": {
            "get": operation(
                "List dead-lettered tasks, newest first",
                ("viewer",),
                params=FILTER_PARAMS + PAGE_PARAMS,
            )
        },
        "/v1/events/export": {
            "get": operation(
                "The hook-event history as JSON Lines (for `task-sidecar simulate`)",
                ("viewer",),
                params=[
                    {"name": "since", "in": "query", "schema": {"type": "string"}},
                    {"name": "until", "in": "query", "schema": {"type": "string"}},
                ],
                answer={"type": "string"},
                content_type="application/x-ndjson",
            )
        },
        "/v1/dlq/export.csv": {
            "get": operation(
                "Export dead-lettered tasks as CSV",
                ("viewer",),
                params=FILTER_PARAMS,
                answer={"type": "string"},
                content_type="text/csv",
            )
        },
        "/v1/dlq/bulk-retry": {
            "post": operation(
                "Retry many records (by ids or filter), rate-limited",
                ("operator",),
                body=ref(actions.BulkRetryRequest),
                status=202,
            )
        },
        "/v1/dlq/bulk-abandon": {
            "post": operation(
                "Abandon many records (by ids or filter), each once, with a reason",
                ("operator",),
                body=ref(actions.BulkAbandonRequest),
            )
        },
        "/v1/dlq/bulk-retry/{job}": {
            "get": operation("Progress of a bulk retry", ("viewer",), params=[path_param("job")])
        },
        "/v1/dlq/{id}": {
            "get": operation(
                "One dead-lettered task",
                ("viewer",),
                answer=ref(DlqRecord),
                params=[path_param("id")],
            )
        },
        "/v1/dlq/{id}/retry": {
            "post": operation(
                "Retry one record",
                ("operator",),
                body=ref(actions.RetryRequest),
                answer=ref(DlqRecord),
                params=[path_param("id")],
            )
        },
        "/v1/dlq/{id}/abandon": {
            "post": operation(
                "Abandon one record",
                ("operator",),
                body=ref(actions.AbandonRequest),
                answer=ref(DlqRecord),
                params=[path_param("id")],
            )
        },
        "/v1/breakers": {"get": operation("Every breaker and its state", ("viewer",))},
        "/v1/breakers/{key}/reset": {
            "post": operation(
                "Close a breaker",
                ("operator",),
                answer=ref(BreakerView),
                params=[path_param("key")],
            )
        },
        "/v1/failure-trends": {
            "get": operation(
                "Failures per hour and type",
                ("viewer",),
                params=[
                    {
                        "name": "hours",
                        "in": "query",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 2160},
                    }
                ],
            )
        },
        "/v1/policies": {"get": operation("The effective policy", ("viewer",))},
        "/v1/policies/reload": {"post": operation("Reload the policy file", ("operator",))},
        "/v1/audit": {
            "get": operation(
                "The audit log, newest first",
                ("viewer",),
                answer=ref(AuditPage),
                params=PAGE_PARAMS,
            )
        },
        "/v1/schedules/health": {
            "get": operation(
                "Hotspots, conflicts and advice for the periodic schedule",
                ("viewer",),
                params=[
                    {
                        "name": "horizon",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "24h (default) up to 31d",
                    },
                    {"name": "threshold", "in": "query", "schema": {"type": "integer"}},
                ],
            )
        },
        "/v1/schedules": {
            "put": operation(
                "Replace the schedules reported by workers",
                ("hooks", "operator"),
                body={"type": "array", "items": {"type": "object"}},
            )
        },
        "/healthz": {"get": operation("The process is alive", None)},
        "/readyz": {"get": operation("Which backends answer", None)},
        "/metrics": {
            "get": operation(
                "Prometheus exposition", None, answer={"type": "string"}, content_type="text/plain"
            )
        },
        "/openapi.json": {"get": operation("This document", None)},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "task-sidecar",
            "version": __version__,
            "description": "Classifies background-task failures and tells workers what "
            "to do next. See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {**components, "Problem": PROBLEM},
            "responses": {
                "Problem": {
                    "description": "An error (RFC 9457 problem document)",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return json_response(document())
