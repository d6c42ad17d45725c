"""What the worker end-to-end tests share (Celery, RQ, BullMQ, poison tasks): a real sidecar
process spoken to as an operator, and the Redis database in which the test tasks record
their runs (`runs:<tag>`, one JSON entry per run, and `done:<tag>`, one per completion)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

from tests.processes import SidecarProcess


class WorkerEnv:
    def __init__(
        self, sidecar: SidecarProcess, runs: redis.Redis, log_path: Path, operator_token: str
    ) -> None:
        self.sidecar, self.runs, self.log_path = sidecar, runs, log_path
        self.operator_token = operator_token

    def runs_of(self, tag: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.runs.lrange(f"runs:{tag}", 0, -1)]

    def done(self, tag: str) -> int:
        return self.runs.llen(f"done:{tag}")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.sidecar.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.operator_token}",
                "Content-Type": "application/json",
            },
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def dlq_records(self, task_name: str) -> list[dict[str, Any]]:
        status, page = self.api("GET", f"/v1/dlq?task_name={task_name}&limit=500")
        assert status == 200, page
        return page["records"]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.sidecar.port}/metrics") as response:
            return response.read().decode()

    def breaker_state(self, key: str) -> str | None:
        status, body = self.api("GET", "/v1/breakers")
        assert status == 200, body
        found = [b for b in body["breakers"] if b.get("key") == key]
        return found[0]["state"] if found else None

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""


def empty_databases(redis_url: str, *numbers: int) -> list[str]:
    """URLs of the given database numbers on the Redis of `redis_url`, each emptied."""
    base = redis_url.rsplit("/", 1)[0]
    urls = [f"{base}/{number}" for number in numbers]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
    return urls
