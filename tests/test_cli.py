"""The `task-sidecar` command itself (--version, completion, pipes, exit codes) and its
`check` and `explain` commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from sidecar import __version__
from sidecar.cli import main
from sidecar.cli.output import Progress, api_problem

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


class TestCommand:
    """The entry point: version, help, exit codes and closed pipes."""

    def test_version(self):
        result = cli("--version")
        assert (result.returncode, result.stdout) == (0, f"task-sidecar {__version__}\n")

    def test_closed_pipe_is_not_a_traceback(self, tmp_path):
        """`explain - | head -1`: the reader leaves early; exit 141 like SIGPIPE, quietly."""
        events = tmp_path / "events.jsonl"
        events.write_text(
            "\n".join(json.dumps({**DEADLOCK, "task_id": f"t{i}"}) for i in range(3000))
        )
        result = subprocess.run(
            [
                "bash",
                "-c",
                f"{sys.executable} -m sidecar.cli explain - < {events} | head -1; "
                'echo "status ${PIPESTATUS[0]}" >&2',
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert json.loads(result.stdout)["action"] == "retry"
        assert result.stderr.strip() == "status 141"

    def test_migrate_without_a_database(self):
        result = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "migrate"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 2
        assert "set --postgres-dsn or TASK_SIDECAR_POSTGRES_DSN" in result.stderr

    def test_a_bad_setting_names_its_variable(self):
        result = cli("explain", "--policies", "/nonexistent.yaml", "-")
        assert result.returncode == 1
        assert "cannot read the file" in result.stderr
        assert "Traceback" not in result.stderr


class TestOutput:
    """Problems from the API are printed readably; the bar is drawn only on a terminal."""

    def test_an_ambiguous_id_lists_the_candidates(self, capsys):
        api_problem(
            409,
            {
                "title": "Ambiguous id",
                "status": 409,
                "detail": "ad47 matches 2 DLQ records",
                "candidates": [
                    {"id": "ad47cbae-1", "status": "pending", "task_name": "a", "created_at": 0},
                    {"id": "ad47ffff-2", "status": "abandoned", "task_name": "b"},
                ],
            },
            "fallback",
        )
        assert capsys.readouterr().err.splitlines() == [
            "task-sidecar: 409 Ambiguous id: ad47 matches 2 DLQ records",
            "  the id matches 2 records; give more of it:",
            "    ID          STATUS     TASK  CREATED",
            "    ad47cbae-1  pending    a     1970-01-01 00:00:00",
            "    ad47ffff-2  abandoned  b     -",
        ]
        api_problem(409, {"title": "Conflict", "detail": "x", "candidates": ["a1", "a2"]}, "")
        assert capsys.readouterr().err.splitlines()[-2:] == ["    a1", "    a2"]

    def test_field_errors(self, capsys):
        problem = {
            "title": "Invalid request",
            "detail": "body: bad",
            "errors": [{"path": "priority", "message": "expected one of [...]"}],
        }
        api_problem(400, problem, "")
        assert capsys.readouterr().err.splitlines() == [
            "task-sidecar: 400 Invalid request: body: bad",
            "  priority: expected one of [...]",
        ]

    def test_progress_bar_only_on_a_terminal(self, tmp_path):
        with open(tmp_path / "log", "w") as stream:
            bar = Progress(stream)
            bar.update(1, 2)
            bar.finish(2, 2)
        assert (tmp_path / "log").read_text() == ""
        assert Progress.bar(1, 2, width=10) == "[#####.....] 1/2"


BASH_CASES = [
    (["task-sidecar", "d"], "dlq"),
    (["task-sidecar", "dlq", "l"], "list"),
    (["task-sidecar", "dlq", "list", "-o", ""], "table wide json"),
    (["task-sidecar", "dlq", "list", "--status", ""], "pending retrying resolved abandoned"),
    (["task-sidecar", "--debug", "breakers", "list", "--url", "x", "--o"], "--output"),
    (["task-sidecar", "policies", "show", "-o", "y"], "yaml"),
    (["task-sidecar", "completion", ""], "bash zsh"),
    (["task-sidecar", "tr"], "trends"),
]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("completion") / "task-sidecar.bash"
    path.write_text(cli("completion", "bash").stdout)
    return path


class TestCompletion:
    """`completion bash|zsh` prints a script that completes commands, options and choices."""

    @pytest.mark.parametrize(("words", "expected"), BASH_CASES)
    def test_bash(self, script, words, expected):
        typed = " ".join(f"'{w}'" for w in words)
        result = subprocess.run(
            [
                "bash",
                "-c",
                f"source {script}; COMP_WORDS=({typed}); COMP_CWORD={len(words) - 1}; "
                '_task_sidecar; echo "${COMPREPLY[*]}"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert result.stdout.strip() == expected

    def test_bash_completes_files_where_a_file_goes(self, script, tmp_path):
        (tmp_path / "beat.yaml").write_text("[]")
        result = subprocess.run(
            [
                "bash",
                "-c",
                f"source {script}; COMP_WORDS=(task-sidecar schedules analyse b); "
                'COMP_CWORD=3; _task_sidecar; echo "${COMPREPLY[*]}"',
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
            check=True,
        )
        assert result.stdout.strip() == "beat.yaml"

    @pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
    def test_zsh(self, tmp_path):
        """The zsh script loads under compinit; its walk offers the same candidates (the
        completion system's compadd/_describe/_files print what they are given)."""
        script = tmp_path / "_task-sidecar"
        script.write_text(cli("completion", "zsh").stdout)
        assert subprocess.run(["zsh", "-n", str(script)], check=False).returncode == 0
        harness = f"""
            autoload -U compinit && compinit -u -d {tmp_path}/zcompdump
            source {script}
            (( $+_comps[task-sidecar] )) || {{ print no compdef; exit 1 }}
            compadd() {{ shift $(( ${{@[(i)--]}} )); print -r -- "$@" }}
            _describe() {{ local -a e; e=("${{(@P)${{@[-1]}}}}"); print -r -- "${{(@)e%%:*}}" }}
            _files() {{ print -r -- "<files>" }}
            t() {{ words=("$@"); CURRENT=${{#words}}; _task_sidecar }}
            t task-sidecar dlq ''
            t task-sidecar dlq list -o ''
            t task-sidecar completion ''
            t task-sidecar schedules analyse ''
        """
        result = subprocess.run(
            ["zsh", "-f", "-c", harness], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "list show retry abandon bulk-retry bulk-abandon export",
            "table wide json",
            "bash zsh",
            "<files>",
        ]
