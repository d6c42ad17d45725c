"""`task-sidecar serve` as a process: start-up checks, reloads, and shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess
from .services import free_port

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


class TestNoTraceback:
    """Start-up failures are one line and an exit code, never a Python traceback."""

    def test_port_out_of_range(self):
        result = serve("--port", "99999")
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "task-sidecar: --port: expected a port number 1-65535, got '99999'"
        )

    def test_port_in_use(self, tmp_path):
        with SidecarProcess(tmp_path, policies=str(DEFAULT_POLICIES)) as running:
            result = serve(
                "--port",
                str(running.port),
                "--policies",
                str(DEFAULT_POLICIES),
                "--data-dir",
                str(tmp_path / "second"),
            )
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{running.port}: the address is already in use" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr

    def test_data_directory_that_cannot_be_made(self, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        result = serve(
            "--policies",
            str(DEFAULT_POLICIES),
            "--data-dir",
            str(blocker / "data"),
            "--port",
            str(free_port()),
        )
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1].startswith("task-sidecar: cannot start: ")
        assert str(blocker) in result.stderr
        assert "Traceback" not in result.stderr


class TestLogging:
    """--log-format json writes one JSON object per line; --access-log logs requests."""

    def test_json_lines_and_access_log(self, tmp_path):
        with SidecarProcess(
            tmp_path, policies=str(DEFAULT_POLICIES), log_format="json", access_log="on"
        ) as sidecar:
            wait_for(lambda: "/readyz" in sidecar.output())
            lines = [json.loads(line) for line in sidecar.output().splitlines()]
        assert {"time", "level", "logger", "message"} <= set(lines[0])
        assert any(line["logger"] == "task_sidecar" for line in lines)
        assert any(
            line["logger"] == "aiohttp.access" and "GET /readyz" in line["message"]
            for line in lines
        )

    def test_no_access_log_by_default(self, tmp_path):
        with SidecarProcess(tmp_path, policies=str(DEFAULT_POLICIES)) as sidecar:
            assert decision(sidecar) == "retry"
            assert sidecar.stop() == 0
        assert "POST /v1/decide" not in sidecar.output()
