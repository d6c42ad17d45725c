"""The hook-event history: every hook answered is kept (embedded and PostgreSQL), exported
as JSON Lines over HTTP and by `task-sidecar events export`, in the shape `simulate`
reads."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid

import pytest

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess
from .test_faults_data import HOOKS, VIEWER, call

TRACEBACK = "Traceback (most recent call last):\n  ...\nValueError: Invalid data"


@pytest.fixture(params=["embedded", "postgres"])
def sidecar(request, tmp_path):
    stores = {}
    if request.param == "postgres":
        stores["postgres_dsn"] = request.getfixturevalue("postgres_service").start().dsn
    with SidecarProcess(
        tmp_path,
        HOOKS,
        policies=str(DEFAULT_POLICIES),
        viewer_tokens=f"grafana:{VIEWER}",
        **stores,
    ) as process:
        yield process


def exported(process: SidecarProcess, query: str = "") -> list[dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{process.port}/v1/events/export{query}",
        headers={"Authorization": f"Bearer {VIEWER}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.read().decode().splitlines()]


class TestHistory:
    def test_each_hook_is_kept_and_exported_in_order(self, sidecar):
        task = f"events.{uuid.uuid4().hex[:8]}"
        failure = {
            "task_id": "t1",
            "task_name": task,
            "attempt": 0,
            "exception": {"type": "ValueError", "message": "Invalid data", "traceback": TRACEBACK},
        }
        call(sidecar.port, "POST", "/v1/hooks/start", {"task_id": "t1", "task_name": task})
        _, decision = call(sidecar.port, "POST", "/v1/hooks/failure", failure)
        call(sidecar.port, "POST", "/v1/hooks/success", {"task_id": "t1", "task_name": task})

        lines = wait_for(
            lambda: (
                [e for e in exported(sidecar) if e["event"]["task_name"] == task][-3:]
                if len([e for e in exported(sidecar) if e["event"]["task_name"] == task]) >= 3
                else None
            ),
            10,
            "three events in the history",
        )

        assert [e["kind"] for e in lines] == ["start", "failure", "success"]
        assert lines[0]["at"] <= lines[1]["at"] <= lines[2]["at"]
        kept = lines[1]
        assert kept["event"]["exception"]["message"] == "Invalid data"
        assert (
            "traceback" not in kept["event"]["exception"]
            or not kept["event"]["exception"]["traceback"]
        )
        assert kept["decision"] == {
            "action": decision["action"],
            "delay_seconds": decision["delay_seconds"],
        }
        assert "decision" not in lines[2]

    def test_since_and_until_narrow_and_unknown_parameters_are_refused(self, sidecar):
        assert exported(sidecar, "?since=0&until=1") == []
        status, problem = call(sidecar.port, "GET", "/v1/events/export?task=x", token=VIEWER)
        assert (status, problem["errors"][0]["path"]) == (400, "query.task")

    def test_the_cli_exports_the_same_lines(self, sidecar, tmp_path):
        task = f"events.{uuid.uuid4().hex[:8]}"
        call(sidecar.port, "POST", "/v1/hooks/start", {"task_id": "c", "task_name": task})
        wait_for(lambda: any(e["event"]["task_name"] == task for e in exported(sidecar)), 10)
        out = tmp_path / "history.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "events", "export", "--since", "1h",
             "--url", f"http://127.0.0.1:{sidecar.port}", "--token", VIEWER, "-f", str(out)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert any(e["event"]["task_name"] == task for e in lines)
