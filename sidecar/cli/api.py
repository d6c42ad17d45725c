"""The action API of a running sidecar, as the operator commands call it (stdlib HTTP
only, so they run wherever the package is installed, without the server's dependencies).

Every failure becomes an `ApiError` carrying the HTTP status and the problem document
(RFC 9457); `command` turns a function of (api, args) into a command that prints it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .. import settings
from ..settings import ClientSettings
from . import output


class ApiError(Exception):
    def __init__(
        self, message: str, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.problem = message, status, problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--url, --token and --timeout (TASK_SIDECAR_URL, _TOKEN, _TIMEOUT)."""
    settings.add_arguments(parser, ClientSettings)


def quote(segment: str) -> str:
    """One path segment: an id or a breaker key as the user typed it."""
    return urllib.parse.quote(segment, safe="")


class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Api:
        client = settings.client_from_sources(args)
        return cls(client.url, client.token, client.timeout)

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: object | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        query: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Any:
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(self.url + path, data, headers, method=method)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as answer:
            raise _problem(answer) from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) else exc.reason
            raise ApiError(f"cannot reach {self.url}: {reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
            raise ApiError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        except ValueError as exc:  # e.g. a URL without http://
            raise ApiError(f"invalid --url {self.url!r}: {exc}") from None
        if raw:
            return payload
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiError(f"{self.url} did not answer with JSON: is it a task-sidecar?") from None


def _problem(answer: urllib.error.HTTPError) -> ApiError:
    text = answer.read().decode(errors="replace")
    try:
        problem = json.loads(text)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return ApiError(text.strip() or str(answer.reason), answer.code)
    return ApiError(str(problem.get("detail") or answer.reason), answer.code, problem)


def command(run: Callable[[Api, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command against the API: an ApiError is printed readably, exit 1."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(Api.from_args(args), args)
        except ApiError as exc:
            output.api_problem(exc.status, exc.problem, exc.message)
            return output.Exit.FAILED

    wrapped.__name__ = wrapped.__qualname__ = run.__name__
    wrapped.__doc__ = run.__doc__
    return wrapped
