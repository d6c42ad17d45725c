"""PostgreSQL goes away, the sidecar dies, the disk fills: no answered dead letter is lost.

Real processes throughout: `task-sidecar serve` and the session's PostgreSQL server, stopped
and started again on the same port.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess
from .services import PostgresService

DRAIN_DEADLINE = 60.0  # seconds for the spool to reach PostgreSQL once it is back


@pytest.fixture
def postgres(postgres_service: PostgresService, postgres_dsn: str) -> Iterator[PostgresService]:
    """The session's server, running; started again after the test whatever happened."""
    try:
        yield postgres_service
    finally:
        postgres_service.start()


def dead_letter(task: str, i: int) -> dict:
    """A permanent failure: dead-lettered on its first attempt."""
    return {
        "task_id": f"{task}-{i}",
        "task_name": task,
        "exception": {"type": "ValueError", "message": f"bad input {i}"},
    }


def stored_ids(dsn: str, task: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM dlq_records WHERE task_name = %s", (task,))
        return [row[0] for row in rows.fetchall()]


def wait_for_rows(dsn: str, task: str, expected: int) -> tuple[list[str], float]:
    """The stored ids once `expected` are there (or the deadline passed), and how long."""
    began = time.monotonic()
    while time.monotonic() - began < DRAIN_DEADLINE:
        try:
            ids = stored_ids(dsn, task)
        except psycopg.OperationalError:
            ids = []
        if len(ids) >= expected:
            break
        time.sleep(0.1)  # polling with a deadline
    return ids, time.monotonic() - began


def wait_until_live(sidecar: SidecarProcess, timeout: float = 30) -> None:
    """Answering HTTP (readyz stays 503 while PostgreSQL is down)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert sidecar.process.poll() is None, sidecar.output()
        with contextlib.suppress(OSError):
            if sidecar.call("/healthz")[0] == 200:
                return
        time.sleep(0.05)  # polling with a deadline
    raise AssertionError(f"sidecar not live after {timeout}s:\n{sidecar.output()}")


def wait_spool_empty(sidecar: SidecarProcess) -> None:
    """readyz says 200 and names no spool once every spooled operation is replayed."""
    deadline = time.monotonic() + DRAIN_DEADLINE
    while time.monotonic() < deadline:
        status, ready = sidecar.call("/readyz")
        if status == 200 and "spool" not in ready["checks"]:
            return
        time.sleep(0.1)  # polling with a deadline
    raise AssertionError(f"spool not empty: {ready}")


def metric(sidecar: SidecarProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


class TestOutageMidStream:
    def test_1000_dead_letters_across_an_outage_are_stored_once_each(
        self, postgres, postgres_dsn, tmp_path, capsys
    ):
        task = f"faults.outage_{uuid.uuid4().hex[:8]}"
        answered: list[str] = []
        with SidecarProcess(
            tmp_path, policies=str(DEFAULT_POLICIES), postgres_dsn=postgres_dsn
        ) as sidecar:
            for i in range(1000):
                if i == 300:
                    postgres.stop()
                status, answer = sidecar.call("/v1/hooks/failure", dead_letter(task, i))
                assert status == 200, answer
                assert answer["action"] == "dead_letter"
                assert answer["dlq_id"]
                answered.append(answer["dlq_id"])
                if i == 999:
                    status, ready = sidecar.call("/readyz")
                    assert status == 503
                    # 700 dead letters, and the failure events (trends) of the outage
                    spooled = int(ready["checks"]["spool"].removeprefix("spooling "))
                    assert 700 <= spooled <= 1700
                    assert metric(sidecar, "task_sidecar_spool_pending") >= spooled
            postgres.start()
            stored, drained = wait_for_rows(postgres_dsn, task, 1000)
            assert sorted(stored) == sorted(answered)
            assert len(set(answered)) == 1000
            wait_spool_empty(sidecar)
            assert metric(sidecar, "task_sidecar_spool_pending") == 0
            assert sidecar.stop() == 0, sidecar.output()
        with capsys.disabled():
            print(f"\n[figures] outage: 1000 sent, {spooled} operations spooled, "
                  f"{len(stored)} stored; "
                  f"drained {drained:.2f}s after PostgreSQL was back")  # fmt: skip

    def test_starts_while_postgres_is_down_and_migrates_once_it_answers(
        self, postgres, postgres_dsn, tmp_path
    ):
        task = f"faults.cold_{uuid.uuid4().hex[:8]}"
        postgres.stop()
        # Not `with`: its __enter__ waits for readyz 200, not given while PostgreSQL is down.
        sidecar = SidecarProcess(
            tmp_path, policies=str(DEFAULT_POLICIES), postgres_dsn=postgres_dsn
        )
        try:
            wait_until_live(sidecar)
            answered = []
            for i in range(20):
                status, answer = sidecar.call("/v1/hooks/failure", dead_letter(task, i))
                assert status == 200, answer
                answered.append(answer["dlq_id"])
            spooling = sidecar.call("/readyz")[1]["checks"]["spool"]
            assert int(spooling.removeprefix("spooling ")) >= 20
            postgres.start()
            stored, _ = wait_for_rows(postgres_dsn, task, 20)
            assert sorted(stored) == sorted(answered)
            sidecar.wait_ready()
        finally:
            sidecar.__exit__()


class TestSidecarKilled:
    def test_spool_left_by_a_killed_sidecar_is_replayed_by_the_next(
        self, postgres, postgres_dsn, tmp_path
    ):
        task = f"faults.killed_{uuid.uuid4().hex[:8]}"
        data_dir = str(tmp_path / "data")
        settings = {"policies": str(DEFAULT_POLICIES), "postgres_dsn": postgres_dsn}
        with SidecarProcess(tmp_path, data_dir=data_dir, **settings) as first:
            postgres.stop()
            answered = []
            for i in range(200):
                status, answer = first.call("/v1/hooks/failure", dead_letter(task, i))
                assert status == 200, answer
                answered.append(answer["dlq_id"])
            first.stop(signal.SIGKILL)
        assert (Path(data_dir) / "spool" / "dlq.spool").stat().st_size > 0
        postgres.start()
        assert stored_ids(postgres_dsn, task) == []  # nothing reached it before the kill
        with SidecarProcess(tmp_path, data_dir=data_dir, **settings) as second:
            stored, _ = wait_for_rows(postgres_dsn, task, 200)
            assert sorted(stored) == sorted(answered)
            # The 200 dead letters, and the failure events (for trends) that the first
            # sidecar's poller flushed into the spool before the kill, if it got to.
            [left] = re.findall(r"(\d+) DLQ writes left in", second.output())
            assert int(left) >= 200
            assert second.stop() == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real filesystem that fills up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class TestDiskFull:
    def test_hooks_answer_while_neither_postgres_nor_the_spool_take_writes(
        self, postgres, postgres_dsn, tmp_path, tiny_disk
    ):
        task = f"faults.full_{uuid.uuid4().hex[:8]}"
        with SidecarProcess(
            tmp_path, policies=str(DEFAULT_POLICIES), postgres_dsn=postgres_dsn,
            data_dir=str(tiny_disk),
        ) as sidecar:  # fmt: skip
            postgres.stop()
            answers = []
            for i in range(200):
                status, answer = sidecar.call("/v1/hooks/failure", dead_letter(task, i))
                assert status == 200, answer
                assert answer["action"] == "dead_letter"
                answers.append(answer.get("dlq_id"))
            spooled = [dlq_id for dlq_id in answers if dlq_id]
            lost = answers.count(None)
            assert spooled, answers  # it filled up part-way
            assert lost, answers
            assert answers[: len(spooled)] == spooled  # and stayed full
            # The lost dead letters, plus any batch of failure events (trends) the poller
            # could not spool either.
            assert metric(sidecar, "task_sidecar_spool_write_failures_total") >= lost
            assert sidecar.output().count("cannot spool a DLQ write") == 1  # once per outage
            postgres.start()
            stored, _ = wait_for_rows(postgres_dsn, task, len(spooled))
            assert sorted(stored) == sorted(spooled)
            wait_spool_empty(sidecar)
            assert sidecar.stop() == 0, sidecar.output()
