"""`task-sidecar serve` as a process: start-up checks, reloads, and shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess

EVENT = {
    "task_id": "t",
    "task_name": "app.sync",
    "attempt": 1,
    "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
}


def decision(sidecar: SidecarProcess) -> str:
    status, answer = sidecar.call("/v1/decide", EVENT)
    assert status == 200, answer
    return answer["action"]


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**env, "PATH": "/usr/bin:/bin"},
    )


class TestStartUp:
    """Unsafe or broken configurations stop the sidecar with a clear message."""

    def test_refuses_a_public_address_without_tokens(self):
        result = serve("--host", "0.0.0.0")
        assert result.returncode == 2
        assert "refusing to listen on 0.0.0.0 without tokens" in result.stderr

    def test_invalid_policy_file(self, tmp_path):
        bad = tmp_path / "policies.yaml"
        bad.write_text("retry: [")
        result = serve("--policies", str(bad))
        assert result.returncode == 1
        assert "invalid YAML" in result.stderr

    def test_short_token(self):
        result = serve(TASK_SIDECAR_HOOK_TOKENS="w:short")
        assert result.returncode == 2
        assert "at least 16 characters" in result.stderr
        assert "short" not in result.stderr.replace("w:short", "")


class TestReload:
    """SIGHUP and file changes swap the policy; a broken file keeps the old one."""

    def test_sighup_reloads_and_refuses_a_broken_file(self, tmp_path):
        policies = tmp_path / "policies.yaml"
        policies.write_text(DEFAULT_POLICIES.read_text())
        with SidecarProcess(tmp_path, policies=str(policies), reload_interval="0") as sidecar:
            assert decision(sidecar) == "retry"
            policies.write_text(
                DEFAULT_POLICIES.read_text().replace("max_retries: 5\n", "max_retries: 1\n", 1)
            )
            sidecar.process.send_signal(signal.SIGHUP)
            wait_for(lambda: decision(sidecar) == "dead_letter")
            policies.write_text("retry: [")
            sidecar.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "policy reload refused" in sidecar.output())
            assert decision(sidecar) == "dead_letter"
            assert sidecar.stop() == 0

    def test_file_change_reloads(self, tmp_path):
        policies = tmp_path / "policies.yaml"
        policies.write_text(DEFAULT_POLICIES.read_text())
        with SidecarProcess(tmp_path, policies=str(policies), reload_interval="0.1s") as sidecar:
            assert decision(sidecar) == "retry"
            policies.write_text(
                DEFAULT_POLICIES.read_text().replace("max_retries: 5\n", "max_retries: 0\n", 1)
            )
            wait_for(lambda: decision(sidecar) == "dead_letter")


class TestShutdown:
    """SIGTERM stops the sidecar cleanly."""

    def test_sigterm_exits_zero(self, tmp_path):
        with SidecarProcess(tmp_path, policies=str(DEFAULT_POLICIES)) as sidecar:
            assert sidecar.stop(signal.SIGTERM) == 0
