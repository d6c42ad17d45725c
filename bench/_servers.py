"""Processes the benchmarks run side by side: the sidecar and the bare baselines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-hooks-token-0123456789"

ECHO_SERVER = """
import json, sys
from aiohttp import web

async def echo(request):
    body = json.loads(await request.read())
    return web.json_response({"action": "retry", "echo": body["task_id"]})

app = web.Application()
app.router.add_post("/v1/hooks/failure", echo)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not become ready")


@contextmanager
def serve(command: list[str], port: int, env: dict[str, str] | None = None):
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        wait_ready(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def echo_server():
    port = free_port()
    with serve([sys.executable, "-c", ECHO_SERVER, str(port)], port) as url:
        yield url


@contextmanager
def sidecar(data_dir: Path, **env: str):
    port = free_port()
    settings = {
        "TASK_SIDECAR_PORT": str(port),
        "TASK_SIDECAR_POLICIES": str(ROOT / "policies.yaml"),
        "TASK_SIDECAR_DATA_DIR": str(data_dir),
        "TASK_SIDECAR_HOOK_TOKENS": f"bench:{TOKEN}",
        "TASK_SIDECAR_LOG_LEVEL": "WARNING",
        **env,
    }
    with serve([sys.executable, "-m", "sidecar.cli", "serve"], port, settings) as url:
        yield url


@contextmanager
def postgres(dsn: str | None, tmp: Path) -> Iterator[str]:
    """`dsn` (a benchmark TRUNCATEs what it fills: never real data), or a throw-away
    server's in `tmp`, stopped on exit; migrated either way."""
    import asyncio

    from sidecar.store.postgres import migrate

    if dsn is not None:
        asyncio.run(migrate(dsn))
        yield dsn
        return
    sys.path.insert(0, str(ROOT))
    from tests.services import start_postgres

    with start_postgres(tmp) as server:
        asyncio.run(migrate(server.dsn))
        yield server.dsn
