"""The API commands (`dlq`, `breakers`, `audit`, `trends`, `policies`) against a real
`task-sidecar serve` process, as an operator runs them."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import DEFAULT_POLICIES, ROOT
from .processes import SidecarProcess

HOOKS = "cli-hooks-token-0123456789"
OPERATOR = "cli-operator-token-0123456789"
TRACEBACK = 'Traceback (most recent call last):\n  File "imports.py", line 9\nValueError: =bad row'
# The lead's server accepts any unique id prefix (issue 13 item 4); until that is merged
# the sidecar answers 404 to a prefix. Remove this mark at the merge (strict: an XPASS fails).


def failure(task_id: str, task_name: str, exc_type: str, message: str, **extra) -> dict:
    return {
        "task_id": task_id,
        "task_name": task_name,
        "exception": {"type": exc_type, "message": message, **extra.pop("exception", {})},
        **extra,
    }


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    """Three dead-lettered imports (one after 3 worker retries) and an open breaker."""
    workdir = tmp_path_factory.mktemp("operator-cli")
    policies = workdir / "policies.yaml"
    shutil.copy(DEFAULT_POLICIES, policies)
    with SidecarProcess(
        workdir, HOOKS, policies=str(policies), operator_tokens=f"ops:{OPERATOR}"
    ) as process:
        for i in range(3):
            extra = {"attempt": 3} if i == 0 else {}
            if i == 0:
                extra["exception"] = {"traceback": TRACEBACK}
            status, _ = process.call(
                "/v1/hooks/failure",
                failure(f"t{i}", "imports.csv", "ValueError", f"=bad row {i}", **extra),
            )
            assert status == 200
        for i in range(10):
            process.call(
                "/v1/hooks/failure",
                failure(f"d{i}", "billing.sync", "DeadlockDetected", "deadlock detected"),
            )
        process.policies = policies
        yield process


def cli(sidecar, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={
            **os.environ,
            "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
            "TASK_SIDECAR_TOKEN": OPERATOR,
        },
    )


def api(sidecar, path: str) -> dict:
    sidecar.token = OPERATOR
    try:
        status, body = sidecar.call(path)
    finally:
        sidecar.token = HOOKS
    assert status == 200, body
    return body


def records(sidecar, **query: str) -> list[dict]:
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return api(sidecar, f"/v1/dlq?limit=500&{suffix}")["records"]


def dead_letter(sidecar, task_id: str) -> str:
    """A new pending record of its own (for tests that change one)."""
    status, answer = sidecar.call(
        "/v1/hooks/failure", failure(task_id, "imports.csv", "ValueError", "bad")
    )
    assert status == 200
    return answer["dlq_id"]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


class TestDlqList:
    """`dlq list` prints a table, a wide table or the API's document."""

    def test_table(self, sidecar):
        listed = cli(sidecar, "dlq", "list", "--task", "imports.csv", "--status", "pending")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split() == [
            "ID",
            "STATUS",
            "TASK",
            "FAILURE",
            "PRIORITY",
            "RETRIES",
            "CREATED",
            "MESSAGE",
        ]
        assert len(rows) == 3
        assert all(len(row.split()[0]) == 8 for row in rows)

    def test_retries_column_is_dlq_retries_not_attempts(self, sidecar):
        """The record made after 3 worker retries shows 0 retries from the DLQ."""
        listed = cli(sidecar, "dlq", "list", "--task", "imports.csv", "-o", "wide")
        header, *rows = listed.stdout.splitlines()
        columns = header.split("  ")
        columns = [c.strip() for c in columns if c.strip()]
        assert "ATTEMPTS" in columns
        assert "RETRIES" in columns
        (row,) = [r for r in rows if " t0 " in r]
        attempts_at = header.index("ATTEMPTS")
        retries_at = header.index("RETRIES")
        assert row[attempts_at:].split()[0] == "3"
        assert row[retries_at:].split()[0] == "0"
        table = cli(sidecar, "dlq", "list", "--task", "imports.csv").stdout.splitlines()
        at = table[0].index("RETRIES")
        assert {line[at:].split()[0] for line in table[1:]} == {"0"}

    def test_wide_and_json(self, sidecar):
        wide = cli(sidecar, "dlq", "list", "-o", "wide", "--task", "imports.csv")
        ids = {r["id"] for r in records(sidecar, task_name="imports.csv")}
        assert {line.split()[0] for line in wide.stdout.splitlines()[1:]} <= ids
        page = json.loads(cli(sidecar, "dlq", "list", "-o", "json").stdout)
        assert set(page) == {"records", "next_cursor"}
        assert {r["task_name"] for r in page["records"]} >= {"imports.csv"}

    def test_paging_hint_goes_to_stderr(self, sidecar):
        shown = cli(sidecar, "dlq", "list", "--limit", "1")
        assert len(shown.stdout.splitlines()) == 2
        assert "more: --cursor" in shown.stderr
        cursor = shown.stderr.split("--cursor ")[1].strip()
        after = cli(sidecar, "dlq", "list", "--limit", "1", "--cursor", cursor)
        assert after.stdout.splitlines()[1] != shown.stdout.splitlines()[1]

    def test_times_are_parsed_by_the_cli(self, sidecar):
        recent = cli(sidecar, "dlq", "list", "--since", "1h", "-o", "json")
        assert json.loads(recent.stdout)["records"]
        future = cli(sidecar, "dlq", "list", "--since", "2999-01-01")
        assert (future.returncode, future.stdout) == (0, "")
        assert "no DLQ records match" in future.stderr
        bad = cli(sidecar, "dlq", "list", "--since", "soon")
        assert bad.returncode == 2
        assert "expected unix seconds, ISO 8601" in bad.stderr


class TestDlqSearch:
    """The search filters reach the API from list, export and bulk-abandon."""

    def test_query_and_the_new_filters(self, sidecar):
        found = cli(sidecar, "dlq", "list", "-q", "IMPORTS.PY", "-o", "json")
        assert found.returncode == 0, found.stderr
        assert [r["task_id"] for r in json.loads(found.stdout)["records"]] == ["t0"]
        by_id = json.loads(cli(sidecar, "dlq", "list", "--task-id", "t1", "-o", "json").stdout)
        assert [r["task_id"] for r in by_id["records"]] == ["t1"]
        typed = cli(sidecar, "dlq", "list", "--exception-type", "ValueError", "-o", "json")
        types = {r["exception"]["type"] for r in json.loads(typed.stdout)["records"]}
        assert types == {"ValueError"}
        other = cli(sidecar, "dlq", "list", "--exception-type", "KeyError", "-o", "json")
        assert json.loads(other.stdout)["records"] == []
        none = cli(sidecar, "dlq", "list", "--min-dlq-retries", "5")
        assert "no DLQ records match" in none.stderr
        exported = cli(sidecar, "dlq", "export", "--query", "imports.py")
        assert len(exported.stdout.strip().splitlines()) == 2  # the header and t0
        short = cli(sidecar, "dlq", "list", "-q", "ab")
        assert short.returncode != 0
        assert "query.q" in short.stderr
        no_traceback(short)

    def test_bulk_abandon(self, sidecar):
        dead_letter(sidecar, "abandon-me")
        base = ("dlq", "bulk-abandon", "--task-id", "abandon-me", "--reason", "test")
        dry = cli(sidecar, *base, "--dry-run")
        assert dry.stdout.strip() == "1 pending or retrying records would be abandoned"
        done = cli(sidecar, *base)
        assert done.stdout.strip() == "abandoned 1, skipped 0", done.stderr
        [record] = records(sidecar, task_id="abandon-me")
        assert record["status"] == "abandoned"


class TestDlqShow:
    """`dlq show` prints the record for a person; `-o json` prints the document."""

    def test_readable_record_with_the_traceback_as_text(self, sidecar):
        record = next(r for r in records(sidecar) if r["task_id"] == "t0")
        shown = cli(sidecar, "dlq", "show", record["id"])
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["ID:", record["id"]]
        assert "Task:      imports.csv (task id t0)" in shown.stdout
        assert "Attempts:  3 retries before it was dead-lettered" in shown.stdout
        assert "Exception: ValueError: =bad row 0" in shown.stdout
        at = lines.index("Traceback:")
        assert lines[at + 1 :] == ["  " + line for line in TRACEBACK.splitlines()]

    def test_json_is_the_document(self, sidecar):
        record = next(r for r in records(sidecar) if r["task_id"] == "t0")
        shown = cli(sidecar, "dlq", "show", record["id"], "-o", "json")
        assert json.loads(shown.stdout) == api(sidecar, f"/v1/dlq/{record['id']}")

    def test_unknown_id(self, sidecar):
        shown = cli(sidecar, "dlq", "show", "ffffffff-nope")
        assert shown.returncode == 1
        assert shown.stderr.startswith("task-sidecar: 404 Not found: ")
        no_traceback(shown)


class TestIdPrefixes:
    """The ids `dlq list` prints are accepted by show, retry and abandon."""

    def test_the_printed_prefix_works(self, sidecar):
        dlq_id = dead_letter(sidecar, "prefix-1")
        shown = cli(sidecar, "dlq", "show", dlq_id[:8])
        assert shown.returncode == 0, shown.stderr
        assert dlq_id in shown.stdout
        abandoned = cli(sidecar, "dlq", "abandon", dlq_id[:8], "--reason", "prefix")
        assert abandoned.stdout.strip() == f"{dlq_id}: abandoned"

    def test_an_ambiguous_prefix_lists_the_candidates(self, sidecar):
        ids = [dead_letter(sidecar, f"many-{i}") for i in range(17)]  # > 16 hex digits
        first = {}
        for dlq_id in dict.fromkeys([r["id"] for r in records(sidecar)] + ids):  # listed once
            first.setdefault(dlq_id[0], []).append(dlq_id)
        prefix, shared = next((k, v) for k, v in first.items() if len(v) > 1)
        shown = cli(sidecar, "dlq", "retry", prefix)
        assert shown.returncode == 1
        assert "409" in shown.stderr
        assert "give more of it" in shown.stderr
        for dlq_id in shared:
            assert dlq_id in shown.stderr
        no_traceback(shown)


class TestDlqActions:
    """Abandon, retry, bulk retry and export act through the API."""

    def test_abandon_twice(self, sidecar):
        dlq_id = dead_letter(sidecar, "abandon-1")
        abandoned = cli(sidecar, "dlq", "abandon", dlq_id, "--reason", "bad file")
        assert abandoned.stdout.strip() == f"{dlq_id}: abandoned"
        again = cli(sidecar, "dlq", "abandon", dlq_id, "--reason", "twice")
        assert again.returncode == 1
        assert again.stderr.startswith("task-sidecar: 409 Conflict: ")

    def test_retry_without_a_target_explains(self, sidecar):
        dlq_id = dead_letter(sidecar, "retry-1")
        result = cli(sidecar, "dlq", "retry", dlq_id)
        assert result.returncode == 1
        assert "TASK_SIDECAR_REQUEUE" in result.stderr
        no_traceback(result)

    def test_bulk_retry(self, sidecar):
        dry = cli(sidecar, "dlq", "bulk-retry", "--task", "billing.none", "--dry-run")
        assert dry.stdout.strip() == "0 pending records would be retried"
        dlq_id = dead_letter(sidecar, "bulk-1")
        done = cli(sidecar, "dlq", "bulk-retry", "--ids", dlq_id)
        assert done.returncode == 1  # no requeue target: the record failed, and stays
        assert done.stdout.startswith("requeued 0, skipped 0, failed 1")
        assert "[" not in done.stderr  # no progress bar without a terminal

    def test_bulk_retry_draws_a_progress_bar_on_a_terminal(self, sidecar):
        dlq_id = dead_letter(sidecar, "bulk-tty")
        leader, follower = pty.openpty()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "sidecar.cli", "dlq", "bulk-retry", "--ids", dlq_id],
                stdout=subprocess.PIPE,
                stderr=follower,
                text=True,
                timeout=60,
                check=False,
                env={
                    **os.environ,
                    "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
                    "TASK_SIDECAR_TOKEN": OPERATOR,
                },
            )
            os.close(follower)
            follower = -1
            drawn = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed: everything was read
                    break
                if not chunk:
                    break
                drawn += chunk
        finally:
            if follower != -1:
                os.close(follower)
            os.close(leader)
        assert result.stdout.startswith("requeued 0")
        assert b"[##############################] 1/1" in drawn

    def test_export(self, sidecar, tmp_path):
        exported = cli(sidecar, "dlq", "export", "--task", "imports.csv")
        assert exported.stdout.splitlines()[0].startswith("id,status,task_name")
        assert "'=bad row" in exported.stdout
        target = tmp_path / "dlq.csv"
        written = cli(sidecar, "dlq", "export", "--file", str(target))
        assert written.stderr.strip() == f"wrote {target}"
        assert target.read_text().startswith("id,status,task_name")


class TestBreakers:
    """`breakers list` and `reset`."""

    def test_list_and_reset(self, sidecar):
        listed = cli(sidecar, "breakers", "list")
        assert "billing.sync:TRANSIENT_DATABASE  open" in listed.stdout
        document = json.loads(cli(sidecar, "breakers", "list", "-o", "json").stdout)
        assert document["breakers"][0]["key"] == "billing.sync:TRANSIENT_DATABASE"
        wide = cli(sidecar, "breakers", "list", "-o", "wide")
        assert wide.stdout.splitlines()[0].split()[-1] == "OPENED"
        reset = cli(sidecar, "breakers", "reset", "billing.sync:TRANSIENT_DATABASE")
        assert reset.stdout.strip() == "billing.sync:TRANSIENT_DATABASE: closed"


class TestAuditTrendsPolicies:
    """`audit`, `trends`, `policies show` and `policies reload`."""

    def test_audit(self, sidecar):
        dlq_id = dead_letter(sidecar, "audit-1")
        assert cli(sidecar, "dlq", "abandon", dlq_id, "--reason", "for the log").returncode == 0
        table = cli(sidecar, "audit")
        assert table.returncode == 0, table.stderr
        header, first, *_ = table.stdout.splitlines()
        assert header.split()[:4] == ["WHEN", "(UTC)", "ACTOR", "ACTION"]
        assert first.split()[2:5] == ["ops", "abandon", dlq_id[:8]]
        assert "for the log" in first
        page = json.loads(cli(sidecar, "audit", "-o", "json", "--limit", "1").stdout)
        assert page["entries"][0]["record_ids"] == [dlq_id]
        assert page["next_cursor"]
        wide = cli(sidecar, "audit", "-o", "wide", "--limit", "1")
        assert dlq_id in wide.stdout

    def test_trends(self, sidecar):
        table = cli(sidecar, "trends")
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
        assert rows["TRANSIENT_DATABASE"][1] == "10"
        assert int(rows["PERMANENT_VALIDATION"][1]) >= 3
        wide = cli(sidecar, "trends", "--hours", "2", "-o", "wide")
        assert wide.stdout.splitlines()[0].split() == [
            "HOUR",
            "(UTC)",
            "FAILURE",
            "TYPE",
            "FAILURES",
        ]
        document = json.loads(cli(sidecar, "trends", "-o", "json").stdout)
        assert document["hours"] == 24
        assert cli(sidecar, "trends", "--hours", "0").returncode == 2

    def test_policies_show(self, sidecar):
        table = cli(sidecar, "policies", "show")
        assert table.returncode == 0, table.stderr
        row = next(r for r in table.stdout.splitlines() if r.startswith("TRANSIENT_DATABASE "))
        assert row.split()[1:6] == ["5", "exponential", "x2", "30s", "1h"]
        assert "10 in " in row
        assert "-> open 5m" in row
        assert table.stderr.strip() == f"policy file: {sidecar.policies}"
        document = yaml.safe_load(cli(sidecar, "policies", "show", "-o", "yaml").stdout)
        assert document == json.loads(cli(sidecar, "policies", "show", "-o", "json").stdout)
        assert document["policy"]["retry_policies"]["TRANSIENT_DATABASE"]["max_retries"] == 5

    def test_policies_reload(self, sidecar):
        assert cli(sidecar, "policies", "reload").stdout.startswith("reloaded")
        good = sidecar.policies.read_text()
        try:
            sidecar.policies.write_text(good.replace("initial_delay: 30s", "initial_delay: x"))
            refused = cli(sidecar, "policies", "reload")
        finally:
            sidecar.policies.write_text(good)
        assert refused.returncode == 1
        lines = refused.stderr.splitlines()
        assert lines[0].startswith("task-sidecar: 422 Invalid policy file: ")
        assert any("initial_delay" in line for line in lines[1:])


class TestNoTraceback:
    """Failures an operator meets are a message and an exit code, never a traceback."""

    def test_connection_refused(self, sidecar):
        result = cli(sidecar, "dlq", "list", "--url", "http://127.0.0.1:1")
        assert result.returncode == 1
        assert "cannot reach http://127.0.0.1:1" in result.stderr
        no_traceback(result)

    def test_a_url_that_is_not_one(self, sidecar):
        result = cli(sidecar, "breakers", "list", "--url", "sidecar:8080")
        assert result.returncode == 1
        assert "sidecar:8080" in result.stderr
        no_traceback(result)

    def test_no_token(self, sidecar):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar.cli",
                "audit",
                "--url",
                f"http://127.0.0.1:{sidecar.port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "TASK_SIDECAR_TOKEN"},
        )
        assert result.returncode == 1
        assert result.stderr.startswith("task-sidecar: 401")
        no_traceback(result)
