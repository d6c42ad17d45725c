"""`task-sidecar simulate` as a user runs it, and the worked example of docs/backtest.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "backtest.md"


def run(*args: str, cwd: Path, env: dict | None = None, stdin: bytes | None = None):
    return subprocess.run(
        [str(BIN / "task-sidecar"), "simulate", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def line(at: float, kind: str, event: dict, decision: dict | None = None) -> str:
    doc = {"at": at, "kind": kind, "event": event}
    if decision is not None:
        doc["decision"] = decision
    return json.dumps(doc)


FAILURE = {
    "task_id": "t1",
    "task_name": "billing.x",
    "exception": {"type": "DeadlockDetected", "message": "deadlock detected"},
}
HISTORY = "\n".join(
    [
        line(100.0, "failure", FAILURE, {"action": "retry", "delay_seconds": 20.0}),
        line(125.0, "success", {"task_id": "t1", "task_name": "billing.x", "attempt": 1}),
        line(130.0, "success", {"task_id": "t2", "task_name": "billing.x"}),
    ]
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "policies.yaml", tmp_path / "policies.yaml")
    (tmp_path / "history.jsonl").write_text(HISTORY + "\n")
    return tmp_path


class TestSimulateCommand:
    """The command reads the files, prints the result, and names what is wrong."""

    def test_json_document(self, workdir):
        done = run(
            "--events", "history.jsonl", "--policies", "policies.yaml", "-o", "json", cwd=workdir
        )
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert list(doc) == ["baseline", "candidate", "recorded", "by_failure_type", "uncertainty"]
        assert doc["baseline"]["tasks"] == 1
        assert doc["baseline"]["succeeded"] == 1
        assert doc["baseline"]["time_to_success_p50_seconds"] == 25.0
        assert list(doc["by_failure_type"]) == ["TRANSIENT_DATABASE"]

    def test_table_and_stdin(self, workdir):
        done = run(
            "--events", "-", "--policies", "policies.yaml", cwd=workdir, stdin=HISTORY.encode()
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        assert text.startswith("baseline policies.yaml, candidate policies.yaml\n")
        assert re.search(r"^succeeded +1 +1 +1 +0$", text, re.M)

    def test_default_baseline_is_the_policy_in_force(self, workdir):
        in_force = workdir / "in-force.yaml"
        in_force.write_text((ROOT / "policies.yaml").read_text())
        done = run(
            "--events", "history.jsonl", "--policies", "policies.yaml",
            cwd=workdir, env={"TASK_SIDECAR_POLICIES": str(in_force)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().startswith(f"baseline {in_force}, candidate policies.yaml")

    def test_an_unreadable_line_is_named(self, workdir):
        (workdir / "bad.jsonl").write_text(HISTORY + '\n{"at": 200, "kind": "success"}\n')
        done = run("--events", "bad.jsonl", "--policies", "policies.yaml", cwd=workdir)
        assert done.returncode == 1
        assert done.stderr.decode().strip() == (
            "task-sidecar simulate: bad.jsonl: line 4: event: required field is missing"
        )
        assert done.stdout == b""

    def test_a_policy_error_names_the_yaml_path_and_line(self, workdir):
        text = (ROOT / "policies.yaml").read_text()
        broken = text.replace("      max_delay: 1h\n", "      max_delay: soon\n", 1)
        (workdir / "candidate.yaml").write_text(broken)
        done = run("--events", "history.jsonl", "--policies", "candidate.yaml", cwd=workdir)
        assert done.returncode == 1
        err = done.stderr.decode()
        assert "candidate.yaml" in err
        assert re.search(r"retry\.policies\.TRANSIENT_DATABASE\.max_delay: line \d+: ", err), err

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--events", "missing.jsonl"], "missing.jsonl: No such file or directory"),
            (["--events", "history.jsonl", "--baseline", "nope.yaml"], "nope.yaml"),
            (["--events", "history.jsonl", "--failure-type", "SOMETIMES"], "unknown failure type"),
        ],
    )
    def test_other_bad_input_exits_1(self, workdir, args, message):
        done = run(*args, "--policies", "policies.yaml", cwd=workdir)
        assert done.returncode == 1
        assert message in done.stderr.decode()

    def test_filters(self, workdir):
        done = run(
            "--events", "history.jsonl", "--policies", "policies.yaml", "-o", "json",
            "--task", "reports.*", cwd=workdir,
        )  # fmt: skip
        assert json.loads(done.stdout)["baseline"]["tasks"] == 0


# --- docs/backtest.md, section 3 ------------------------------------------------------------


def worked_example() -> list[tuple[str, str]]:
    """(command, expected output) for every `$ ` line of section 3's console blocks."""
    section = DOC.read_text().split("## 3.", 1)[1].split("\n## 4.", 1)[0]
    steps = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            steps.append((command, output))
    return steps


class TestWorkedExample:
    """The commands of the documentation work and print what it shows."""

    def test_commands_print_what_the_doc_shows(self, tmp_path):
        steps = worked_example()
        assert len(steps) == 4
        shutil.copy(ROOT / "policies.yaml", tmp_path / "policies.yaml")
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("TASK_SIDECAR_POLICIES", None)
        for command, expected in steps:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stderr)
            assert done.stdout == expected, command
