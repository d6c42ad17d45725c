"""A real `celery worker` process for the tests, on the app in tests/celery_app.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.polling import wait_for

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """`celery -A tests.celery_app worker -P solo -Q <queues>`, logging to `log`. `env`
    adds to the environment (broker, sidecar URL, token, policies)."""

    def __init__(
        self,
        log: Path,
        queues: str,
        env: dict[str, str],
        *,
        app: str = "tests.celery_app",
        pool: str = "solo",
        concurrency: int = 1,
    ) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker",
                 "-P", pool, "-c", str(concurrency), "-Q", queues, "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "-l", "info"],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Worker:
        wait_for(
            lambda: "ready." in self.output() or self.process.poll() is not None,
            timeout,
            "worker ready",
        )
        assert self.process.poll() is None, self.output()
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crashed node)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
