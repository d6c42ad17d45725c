"""The `task-sidecar check` and `explain` commands."""

from __future__ import annotations

import json
import subprocess
import sys

from sidecar.cli import main

from .conftest import DEFAULT_POLICIES, ROOT

VALUE_ERROR = {
    "task_id": "t1",
    "task_name": "app.tasks.import_csv",
    "exception": {"type": "ValueError", "mro": ["builtins.ValueError"], "message": "Invalid data"},
}
DEADLOCK = {
    "task_id": "t2",
    "task_name": "billing.process_payment",
    "attempt": 2,
    "exception": {
        "type": "DeadlockDetected",
        "module": "psycopg.errors",
        "message": "deadlock detected",
    },
    "context": {"customer_tier": "enterprise"},
}


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


class TestCheck:
    """`check` exits 0 on a valid file and 1 listing every problem otherwise."""

    def test_default_file_is_valid(self, capsys):
        assert main(["check", str(DEFAULT_POLICIES)]) == 0
        assert capsys.readouterr().out.startswith("SUCCESS: ")

    def test_invalid_file_lists_problems(self, tmp_path, capsys):
        bad = tmp_path / "policies.yaml"
        bad.write_text(
            DEFAULT_POLICIES.read_text().replace("initial_delay: 30s", "initial_delay: x")
        )
        assert main(["check", str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.splitlines()[0] == f"FAILED: {bad}: 1 problem(s)"
        assert "retry.policies.TRANSIENT_DATABASE.initial_delay: line" in err
        assert 'expected a duration like 30s, got "x"' in err

    def test_missing_file(self, tmp_path, capsys):
        assert main(["check", str(tmp_path / "nope.yaml")]) == 1
        assert "cannot read the file" in capsys.readouterr().err


class TestExplain:
    """`explain` prints one decision per event and a precise error per bad line."""

    def test_one_json_document(self, tmp_path, capsys):
        path = tmp_path / "event.json"
        path.write_text(json.dumps(VALUE_ERROR, indent=2))
        assert main(["explain", "--policies", str(DEFAULT_POLICIES), str(path)]) == 0
        [line] = capsys.readouterr().out.splitlines()
        answer = json.loads(line)
        assert answer["action"] == "dead_letter"
        assert answer["classification"]["failure_type"] == "PERMANENT_VALIDATION"
        assert set(answer) == {
            "action",
            "delay_seconds",
            "queue",
            "priority",
            "priority_value",
            "classification",
            "breaker",
            "rationale",
            "dlq_id",
        }

    def test_json_lines_from_stdin_with_a_bad_line(self):
        lines = [
            json.dumps(VALUE_ERROR),
            json.dumps({**DEADLOCK, "attempt": -1}),
            "{nope",
            json.dumps(DEADLOCK),
        ]
        result = cli("explain", "--seed", "1", "-", stdin="\n".join(lines) + "\n")
        assert result.returncode == 1
        out = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(out) == 4
        assert out[0]["action"] == "dead_letter"
        assert out[1] == {"error": {"line": 2, "path": "attempt", "message": "Expected `int` >= 0"}}
        assert out[2]["error"]["line"] == 3
        assert out[2]["error"]["message"].startswith("invalid JSON")
        assert out[3]["action"] == "retry"
        assert out[3]["priority"] == "HIGH"

    def test_missing_required_field_is_named(self):
        event = {**VALUE_ERROR, "exception": {"message": "no type"}}
        result = cli("explain", "-", stdin=json.dumps(event))
        assert json.loads(result.stdout) == {
            "error": {"line": 1, "path": "exception.type", "message": "required field is missing"}
        }

    def test_explain_keeps_no_state(self):
        """Ten identical failures never open the breaker: explain is a dry run."""
        lines = "\n".join(json.dumps({**DEADLOCK, "attempt": 0}) for _ in range(12))
        result = cli("explain", "-", stdin=lines)
        assert result.returncode == 0
        states = {json.loads(line)["breaker"]["state"] for line in result.stdout.splitlines()}
        assert states == {"closed"}
