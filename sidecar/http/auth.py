"""Bearer tokens by role: `hooks` for workers, `viewer` for reads, `operator` for actions
(an operator token is also a viewer token). Compared in constant time; never logged."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..settings import Settings, Token
from .keys import SETTINGS
from .problems import Problem

IMPLIED = {"viewer": ("viewer", "operator"), "hooks": ("hooks",), "operator": ("operator",)}
TOKEN_NAME = web.RequestKey("token_name", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(*roles: str) -> Callable[[Handler], Handler]:
    """Let only tokens of these roles call the handler (when tokens are configured)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            settings = request.app[SETTINGS]
            if settings.auth_enabled:
                request[TOKEN_NAME] = authenticate(settings, roles, request)
            return await handler(request)

        checked.roles = roles  # type: ignore[attr-defined]  # for the route table and tests
        return checked

    return wrap


def actor_of(request: web.Request) -> str:
    """The name of the request's token, for the audit log ("anonymous" without auth)."""
    return request.get(TOKEN_NAME, "anonymous")


def find_token(settings: Settings, roles: tuple[str, ...], presented: str) -> Token | None:
    # Whatever bytes the client sent (aiohttp keeps undecodable ones as surrogates).
    offered = presented.encode("utf-8", "surrogateescape")
    found = None
    for role in {r for wanted in roles for r in IMPLIED[wanted]}:
        for token in settings.tokens.get(role, ()):
            # Check every token: the time taken must not tell which one nearly matched.
            if hmac.compare_digest(token.secret.encode(), offered):
                found = token
    return found


def authenticate(settings: Settings, roles: tuple[str, ...], request: web.Request) -> str:
    """The name of the request's token; 401 without a known one, 403 with the wrong role."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Problem(
            401,
            "Unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="task-sidecar"'},
        )
    token = find_token(settings, roles, presented)
    if token is not None:
        return token.name
    if find_token(settings, ("hooks", "viewer"), presented):
        raise Problem(403, "Forbidden", f"this endpoint needs the role {' or '.join(roles)}")
    raise Problem(
        401,
        "Unauthorized",
        "unknown token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
