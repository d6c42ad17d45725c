"""Worker-side endpoints: lifecycle hooks, dry runs and idempotency claims."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from ..errors import StoreUnavailable
from ..policy import FailureEvent, StartEvent, SuccessEvent
from ..policy.events import EndEvent, Name, Seconds
from ..service.errors import InvalidInput, NotHolder
from ..service.hooks import Hooks
from ..service.idempotency import ClaimOrder
from .auth import actor_of, requires
from .keys import METRICS, SERVICES
from .problems import Problem, decode, json_response, read

MAX_BATCH = 1000
# A batch hands the loop to other requests (a /healthz probe, other workers' hooks) after
# this much work, so 1,000 events never hold it for their whole run.
BATCH_SLICE_SECONDS = 0.005
Scope = Literal["global", "user", "device", "task"]


Key = Annotated[str, Meta(min_length=1, max_length=1024, pattern=r"^[^\x00]*$")]


class ClaimRequest(msgspec.Struct, frozen=True):
    key: Key
    scope: Scope = "global"
    ttl_seconds: Annotated[float, Meta(gt=0, le=365 * 86400)] | None = None
    # Labels the claim's `task_sidecar_idempotency_checks_total{task}` only (not the key);
    # a claim without it counts under task "__unnamed__".
    task_name: Name | None = None


class ClaimsRequest(msgspec.Struct, frozen=True):
    claims: Annotated[list[ClaimRequest], Meta(min_length=1, max_length=MAX_BATCH)]


class KeyRequest(msgspec.Struct, frozen=True):
    key: Key
    owner: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    scope: Scope = "global"
    ttl_seconds: Seconds | None = None


class BatchItem(msgspec.Struct, frozen=True):
    type: Literal["failure", "success", "start", "end"]


KINDS: dict[str, type] = {
    "failure": FailureEvent,
    "success": SuccessEvent,
    "start": StartEvent,
    "end": EndEvent,
}


def _timer(request: web.Request, hook: str):
    return request.app[METRICS].hook_timer(hook)


@requires("hooks")
async def failure(request: web.Request) -> web.Response:
    event = await read(request, FailureEvent)
    with _timer(request, "failure"):
        return json_response(await request.app[SERVICES].hooks.failure(event, actor_of(request)))


@requires("hooks")
async def success(request: web.Request) -> web.Response:
    event = await read(request, SuccessEvent)
    with _timer(request, "success"):
        await request.app[SERVICES].hooks.success(event, actor_of(request))
    return json_response({"recorded": True})


@requires("hooks")
async def start(request: web.Request) -> web.Response:
    event = await read(request, StartEvent)
    with _timer(request, "start"):
        return json_response(await request.app[SERVICES].hooks.start(event))


@requires("hooks")
async def batch(request: web.Request) -> web.Response:
    """A list of events tagged with `type`; each gets its own answer (or error), in order."""
    items = await read(request, list[msgspec.Raw])
    if len(items) > MAX_BATCH:
        raise Problem(413, "Batch too large", f"at most {MAX_BATCH} events per batch")
    sidecar = request.app[SERVICES].hooks
    results: list[Any] = []
    with _timer(request, "batch"):
        slice_began = time.monotonic()
        for index, raw in enumerate(items):
            if time.monotonic() - slice_began > BATCH_SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_began = time.monotonic()
            try:
                kind = decode(raw, BatchItem).type
                event = decode(raw, KINDS[kind])
            except Problem as problem:
                errors = [
                    {**e, "path": f"[{index}].{e['path']}".rstrip(".")}
                    for e in problem.errors or []
                ]
                results.append({"error": {"status": problem.status, "errors": errors}})
                continue
            try:
                results.append(await apply(sidecar, kind, event, actor_of(request)))
            except InvalidInput as exc:
                error = {"path": f"[{index}].{exc.path}", "message": exc.message}
                results.append({"error": {"status": 400, "errors": [error]}})
            except StoreUnavailable as exc:  # this event only: the others are answered
                results.append({"error": {"status": 503, "detail": str(exc)}})
    return json_response({"results": results})


async def apply(hooks: Hooks, kind: str, event: Any, actor: str) -> Any:
    if kind == "failure":
        return await hooks.failure(event, actor)
    if kind == "success":
        await hooks.success(event, actor)
        return {"recorded": True}
    if kind == "end":
        await hooks.end(event)
        return {"recorded": True}
    return await hooks.start(event)


@requires("hooks", "viewer")
async def classify(request: web.Request) -> web.Response:
    event = await read(request, FailureEvent)
    return json_response(request.app[SERVICES].hooks.classify(event))


@requires("hooks", "viewer")
async def dry_run(request: web.Request) -> web.Response:
    event = await read(request, FailureEvent)
    return json_response(await request.app[SERVICES].hooks.dry_run(event))


@requires("hooks")
async def claim(request: web.Request) -> web.Response:
    body = await read(request, ClaimRequest)
    with _timer(request, "claim"):
        answer = await request.app[SERVICES].idempotency.claim(
            body.key, body.scope, body.ttl_seconds, body.task_name
        )
    return json_response(answer)


@requires("hooks")
async def claims(request: web.Request) -> web.Response:
    """Many claims in one request, answered in order (a key twice: the second is a hit)."""
    body = await read(request, ClaimsRequest)
    orders = [ClaimOrder(c.key, c.scope, c.ttl_seconds, c.task_name) for c in body.claims]
    with _timer(request, "claims"):
        answers = await request.app[SERVICES].idempotency.claim_many(orders)
    return json_response({"results": answers})


@requires("hooks")
async def complete(request: web.Request) -> web.Response:
    body = await read(request, KeyRequest)
    try:
        await request.app[SERVICES].idempotency.complete(
            body.key, body.scope, body.owner, body.ttl_seconds
        )
    except NotHolder as exc:
        raise Problem(409, "Not the holder", str(exc)) from None
    return json_response({"completed": True})


@requires("hooks")
async def release(request: web.Request) -> web.Response:
    body = await read(request, KeyRequest)
    try:
        await request.app[SERVICES].idempotency.release(body.key, body.scope, body.owner)
    except NotHolder as exc:
        raise Problem(409, "Not the holder", str(exc)) from None
    return json_response({"released": True})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/hooks/failure", failure),
        web.post("/v1/hooks/success", success),
        web.post("/v1/hooks/start", start),
        web.post("/v1/hooks/batch", batch),
        web.post("/v1/classify", classify),
        web.post("/v1/decide", dry_run),
        web.post("/v1/idempotency/claim", claim),
        web.post("/v1/idempotency/claims", claims),
        web.post("/v1/idempotency/complete", complete),
        web.post("/v1/idempotency/release", release),
    ]
