"""`task-sidecar serve` as a real process, for tests that need signals and several
sidecars."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .services import free_port


class SidecarProcess:
    def __init__(self, workdir: Path, token: str | None = None, **settings: str) -> None:
        self.port = free_port()
        self.token = token
        self.log = workdir / f"sidecar-{self.port}.log"
        env = {
            **os.environ,
            "TASK_SIDECAR_PORT": str(self.port),
            "TASK_SIDECAR_DATA_DIR": str(workdir / f"data-{self.port}"),
            **{f"TASK_SIDECAR_{k.upper()}": v for k, v in settings.items()},
        }
        if token:
            env["TASK_SIDECAR_HOOK_TOKENS"] = f"tests:{token}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sidecar.cli", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> SidecarProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> SidecarProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"sidecar exited:\n{self.output()}"
            try:
                if self.call("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)  # polling with a deadline
        raise AssertionError(f"sidecar not ready after {timeout}s:\n{self.output()}")

    def call(self, path: str, body: object | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)
