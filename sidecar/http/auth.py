"""Bearer tokens by role: `hooks` for workers, `viewer` for reads, `operator` for actions
(an operator token is also a viewer token). Compared in constant time; never logged."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..settings import Settings, Token
from .keys import SETTINGS
from .problems import Problem

IMPLIED = {"viewer": ("viewer", "operator"), "hooks": ("hooks",), "operator": ("operator",)}
TOKEN_NAME = web.RequestKey("token_name", str)


def requires(*roles: str) -> Callable[[Any], Any]:
    """Mark a handler with the roles allowed to call it."""

    def mark(handler: Any) -> Any:
        handler.roles = roles
        return handler

    return mark


def find_token(settings: Settings, roles: tuple[str, ...], presented: str) -> Token | None:
    found = None
    for role in {r for wanted in roles for r in IMPLIED[wanted]}:
        for token in settings.tokens.get(role, ()):
            # Check every token: the time taken must not tell which one nearly matched.
            if hmac.compare_digest(token.secret.encode(), presented.encode()):
                found = token
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    roles = getattr(handler, "roles", None)
    settings = request.app[SETTINGS]
    if roles is None or not settings.auth_enabled:
        return await handler(request)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Problem(
            401,
            "Unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="task-sidecar"'},
        )
    token = find_token(settings, roles, presented.strip())
    if token is None:
        if find_token(settings, ("hooks", "viewer"), presented.strip()):
            raise Problem(403, "Forbidden", f"this endpoint needs the role {' or '.join(roles)}")
        raise Problem(
            401,
            "Unauthorized",
            "unknown token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request[TOKEN_NAME] = token.name
    return await handler(request)
