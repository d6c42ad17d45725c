"""`task-sidecar dlq …` and `breakers …` against a running sidecar."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

HOOKS = "cli-hooks-token-0123456789"
OPERATOR = "cli-operator-token-0123456789"


@pytest.fixture
def sidecar(tmp_path):
    with SidecarProcess(
        tmp_path, HOOKS, policies=str(DEFAULT_POLICIES), operator_tokens=f"ops:{OPERATOR}"
    ) as process:
        for i in range(3):
            status, _ = process.call(
                "/v1/hooks/failure",
                {
                    "task_id": f"t{i}",
                    "task_name": "imports.csv",
                    "exception": {"type": "ValueError", "message": f"=bad row {i}"},
                },
            )
            assert status == 200
        for i in range(10):
            process.call(
                "/v1/hooks/failure",
                {
                    "task_id": f"d{i}",
                    "task_name": "billing.sync",
                    "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
                },
            )
        yield process


def cli(sidecar, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            *args,
            "--url",
            f"http://127.0.0.1:{sidecar.port}",
            "--token",
            OPERATOR,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestDlqCommands:
    """The commands print readable tables and act through the API."""

    def test_list_show_abandon_export(self, sidecar):
        listed = cli(sidecar, "dlq", "list", "--status", "pending")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:4] == ["ID", "STATUS", "TASK", "FAILURE"]
        assert len(lines) == 4
        short_id = lines[1].split()[0]
        shown = cli(sidecar, "dlq", "list", "--limit", "1")
        assert "more: --cursor" in shown.stdout
        full_id = self_id(sidecar, short_id)
        shown = cli(sidecar, "dlq", "show", full_id)
        assert '"task_name": "imports.csv"' in shown.stdout
        abandoned = cli(sidecar, "dlq", "abandon", full_id, "--reason", "bad file")
        assert abandoned.stdout.strip() == f"{full_id}: abandoned"
        again = cli(sidecar, "dlq", "abandon", full_id, "--reason", "twice")
        assert again.returncode == 1
        assert "409" in again.stderr
        exported = cli(sidecar, "dlq", "export", "--status", "pending")
        assert exported.stdout.splitlines()[0].startswith("id,status,task_name")
        assert "'=bad row" in exported.stdout

    def test_retry_without_a_target_explains(self, sidecar):
        full_id = self_id(sidecar, "")
        result = cli(sidecar, "dlq", "retry", full_id)
        assert result.returncode == 1
        assert "TASK_SIDECAR_REQUEUE" in result.stderr
        dry = cli(sidecar, "dlq", "bulk-retry", "--task", "imports.csv", "--dry-run")
        assert dry.stdout.strip() == "3 pending records would be retried"

    def test_breakers(self, sidecar):
        listed = cli(sidecar, "breakers", "list")
        assert "billing.sync:TRANSIENT_DATABASE  open" in listed.stdout
        reset = cli(sidecar, "breakers", "reset", "billing.sync:TRANSIENT_DATABASE")
        assert reset.stdout.strip() == "billing.sync:TRANSIENT_DATABASE: closed"

    def test_unreachable_sidecar(self, sidecar):
        result = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "dlq", "list", "--url", "http://127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert "cannot reach http://127.0.0.1:1" in result.stderr


def self_id(sidecar, prefix: str) -> str:
    """The full id of a pending record starting with `prefix`."""
    sidecar.token = OPERATOR
    try:
        _, page = sidecar.call("/v1/dlq?status=pending")
    finally:
        sidecar.token = HOOKS
    return next(r["id"] for r in page["records"] if r["id"].startswith(prefix))
