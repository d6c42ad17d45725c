"""The client's durable outbox (sidecar/client/outbox.py): a dead letter decided locally,
while the sidecar is down, reaches the sidecar's DLQ once, whatever happens to the worker
that decided it (SIGKILL, a full buffer, a fork), and an outbox that cannot be written
never breaks the worker."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import SidecarClient
from sidecar.client.outbox import ENV, default_directory
from tests.faultproxy import FaultProxy
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port
from tests.test_client import BATCH, POLICIES, TOKEN, Driver

ROOT = Path(__file__).resolve().parent.parent
INVALID = {"type": "ValueError", "message": "Invalid data"}  # PERMANENT_VALIDATION: no retry


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with SidecarProcess(
        tmp_path_factory.mktemp("outbox"),
        TOKEN,
        policies=str(POLICIES),
        viewer_tokens=f"viewer:{TOKEN}",
    ) as process:
        yield process


@pytest.fixture
def proxy(sidecar: SidecarProcess) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{sidecar.port}") as proxy:
        yield proxy


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def dlq_task_ids(sidecar: SidecarProcess, task_name: str) -> list[str]:
    """The task id of every DLQ record of `task_name` (one per record, duplicates kept)."""
    ids, cursor = [], None
    while True:
        query = {"task_name": task_name, "limit": 500, **({"cursor": cursor} if cursor else {})}
        status, page = sidecar.call(f"/v1/dlq?{urllib.parse.urlencode(query)}")
        assert status == 200, page
        ids += [r["task_id"] for r in page["records"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def lines(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(directory.glob("outbox-*.jsonl"))
    }


def run_python(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


DECIDE_THEN_HANG = """
    import os, sys, time
    from sidecar.client import SidecarClient

    client = SidecarClient(os.environ["URL"], "t", outbox_dir=os.environ["OUTBOX"])
    task = os.environ["TASK"]
    for i in range(int(os.environ["N"])):
        exc = {"type": "ValueError", "message": "Invalid data"}
        answer = client.failure(f"{task}-{i}", task, exc, attempt=3)
        assert (answer["source"], answer["action"]) == ("default", "dead_letter"), answer
    open(os.environ["READY"], "w").close()
    time.sleep(600)  # killed here
"""

RECOVER = """
    import os, sys
    from sidecar.client import SidecarClient

    client = SidecarClient(os.environ["URL"], os.environ["TOKEN"], outbox_dir=os.environ["OUTBOX"])
    sent = client.flush(30)
    left = client.stats()["outbox"]
    client.close()
    print(sent, left, flush=True)
    sys.exit(0 if sent and left == 0 else 1)
"""


def test_dead_letters_of_a_killed_worker_reach_the_dlq_once(
    sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """A worker decides N dead letters with no sidecar listening and is SIGKILLed; the next
    worker process, with the sidecar up, delivers exactly those N, and the outbox empties.
    A copy of the file delivered again (a crash after the sidecar acknowledged it, before
    it was removed) adds nothing: the sidecar stores each report id once."""
    outbox, task, n = tmp_path / "outbox", f"outbox.kill.{uuid.uuid4().hex[:8]}", 40
    ready = tmp_path / "ready"
    env = {"URL": dead_url(), "OUTBOX": str(outbox), "TASK": task, "N": str(n)}
    worker = run_python(DECIDE_THEN_HANG, {**env, "READY": str(ready)})
    try:
        wait_for(lambda: ready.exists() or worker.poll() is not None, 60, "the dead letters")
        assert worker.poll() is None, worker.communicate()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=10)  # reaped, its pipes closed
    assert worker.returncode == -signal.SIGKILL
    (left,) = lines(outbox).values()  # every answer was on disk before it was given
    assert [e["task_id"] for e in left] == [f"{task}-{i}" for i in range(n)]
    (path,) = outbox.glob("outbox-*.jsonl")
    assert path.name.startswith(f"outbox-{worker.pid}-")
    copy = shutil.copy(path, tmp_path / "copy")
    assert dlq_task_ids(sidecar, task) == []

    env = {"URL": f"http://127.0.0.1:{sidecar.port}", "TOKEN": TOKEN, "OUTBOX": str(outbox)}
    for _ in range(2):  # the second time, from the copy: re-sent, stored once
        recover = run_python(RECOVER, env)
        out, err = recover.communicate(timeout=60)
        assert recover.returncode == 0, (out, err)
        assert list(outbox.iterdir()) == []
        assert sorted(dlq_task_ids(sidecar, task)) == sorted(f"{task}-{i}" for i in range(n))
        shutil.copy(copy, path)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_full_buffer_drops_successes_never_dead_letters(
    kind: str, sidecar: SidecarProcess, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.fault = 503  # the sidecar is overloaded: every call falls back
    task = f"outbox.overflow.{kind}.{uuid.uuid4().hex[:8]}"
    client = Driver(
        kind,
        proxy.url,
        TOKEN,
        buffer_size=5,
        flush_interval=0.02,
        retry_interval=0.05,
        outbox_dir=tmp_path / "outbox",
    )
    try:
        for i in range(10):
            answer = client.failure(f"{task}-{i}", task, INVALID, attempt=3)
            assert (answer["source"], answer["action"]) == ("default", "dead_letter")
            for j in range(10):
                client.success(f"{task}-{i}-ok-{j}", task)
        assert client.stats()["dropped"] >= 100 - 5  # the buffer overflowed
        assert client.stats()["outbox"] == 10
        proxy.fault = "pass"
        assert client.flush(20)
        assert sorted(dlq_task_ids(sidecar, task)) == sorted(f"{task}-{i}" for i in range(10))
        assert client.stats()["outbox"] == 0
        assert all(not rows for rows in lines(tmp_path / "outbox").values())  # truncated
    finally:
        client.close(timeout=2)
    assert list((tmp_path / "outbox").iterdir()) == []  # an empty own file is removed


def test_live_clients_do_not_take_each_others_files(
    sidecar: SidecarProcess, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A file whose writer lives is locked by it: another client sharing the directory
    leaves it alone, and takes it over once its writer is gone."""
    outbox, task = tmp_path / "outbox", f"outbox.shared.{uuid.uuid4().hex[:8]}"
    down = SidecarClient(dead_url(), TOKEN, outbox_dir=outbox, retry_interval=3600)
    for i in range(3):
        assert down.failure(f"{task}-{i}", task, INVALID, attempt=3)["action"] == "dead_letter"
    (own,) = lines(outbox)
    up = SidecarClient(proxy.url, TOKEN, outbox_dir=outbox, flush_interval=0.02)
    try:
        up.success(f"{task}-ok", task)
        assert up.flush(10)
        sent = [e["task_id"] for batch in proxy.bodies(BATCH) for e in batch]
        assert sent == [f"{task}-ok"]  # not the other client's dead letters
        assert up.stats()["outbox"] == 0
        assert len(lines(outbox)[own]) == 3
        assert down.stats()["outbox"] == 3
        down.close(timeout=0.1)  # its lines stay on disk, unlocked
        assert len(lines(outbox)[own]) == 3
        late = SidecarClient(proxy.url, TOKEN, outbox_dir=outbox, flush_interval=0.02)
        assert late.flush(10)  # a client starting now adopts them
        late.close()
    finally:
        up.close()
        down.close(timeout=0.1)
    assert sorted(dlq_task_ids(sidecar, task)) == [f"{task}-{i}" for i in range(3)]
    assert list(outbox.iterdir()) == []


def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    outbox, task = tmp_path / "outbox", f"outbox.fork.{uuid.uuid4().hex[:8]}"
    client = SidecarClient(dead_url(), TOKEN, outbox_dir=outbox, retry_interval=3600)
    try:
        assert client.failure(f"{task}-parent", task, INVALID, attempt=3)["action"] == "dead_letter"
        pid = os.fork()
        if pid == 0:  # the child: a dead letter of its own, then out, whatever happens
            code = 1
            try:
                answer = client.failure(f"{task}-child", task, INVALID, attempt=3)
                code = 0 if answer["action"] == "dead_letter" else 2
            finally:
                os._exit(code)
        try:  # (status,) once the child is reaped
            (status,) = wait_for(
                lambda: (r := os.waitpid(pid, os.WNOHANG))[0] and (r[1],), 20, "the child"
            )
        except AssertionError:  # hung (on a lock its parent's thread held at the fork)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        assert os.waitstatus_to_exitcode(status) == 0
        files = lines(outbox)
        assert {
            name.split("-")[1]: [e["task_id"] for e in rows] for name, rows in files.items()
        } == {
            str(os.getpid()): [f"{task}-parent"],
            str(pid): [f"{task}-child"],
        }
        # The child's exit released its own lock, not the parent's.
        (parents,) = [outbox / n for n in files if n.startswith(f"outbox-{os.getpid()}-")]
        fd = os.open(parents, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        assert client.stats()["outbox"] == 1  # the parent does not send the child's
    finally:
        client.close(timeout=0.1)


def test_a_torn_last_line_is_left_out(sidecar: SidecarProcess, tmp_path: Path) -> None:
    """A writer killed in the middle of a line never answered that failure(): the whole
    lines before it are delivered, the torn one is not, and the file goes."""
    outbox, task = tmp_path / "outbox", f"outbox.torn.{uuid.uuid4().hex[:8]}"
    maker = SidecarClient(dead_url(), outbox_dir=None)
    events = [
        {"type": "failure", **maker.failure_event(f"{task}-{i}", task, INVALID, attempt=3)}
        for i in range(3)
    ]
    maker.close(timeout=0.1)
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    outbox.mkdir()
    (outbox / "outbox-1-dead.jsonl").write_bytes(data[: -len(json.dumps(events[-1])) // 2])
    client = SidecarClient(
        f"http://127.0.0.1:{sidecar.port}", TOKEN, outbox_dir=outbox, flush_interval=0.02
    )
    try:
        assert client.flush(10)
    finally:
        client.close()
    assert sorted(dlq_task_ids(sidecar, task)) == [f"{task}-0", f"{task}-1"]
    assert list(outbox.iterdir()) == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unwritable_outbox_falls_back_to_memory(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sidecar.client")
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made under it, even by root
    client = Driver(kind, dead_url(), TOKEN, outbox_dir=blocker / "outbox", retry_interval=3600)
    try:
        for i in range(3):
            answer = client.failure(f"t-{i}", "outbox.readonly", INVALID, attempt=3)
            assert (answer["source"], answer["action"]) == ("default", "dead_letter")
        warnings = [r for r in caplog.records if "cannot write the outbox" in r.getMessage()]
        assert len(warnings) == 1
        assert (client.stats()["outbox"], client.stats()["pending"]) == (0, 3)  # in memory
    finally:
        client.close(timeout=0.1)


def test_a_full_outbox_keeps_dead_letters_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sidecar.client")
    client = SidecarClient(
        dead_url(), TOKEN, outbox_dir=tmp_path, outbox_max_bytes=1500, retry_interval=3600
    )
    try:
        for i in range(10):
            client.failure(f"t-{i}", "outbox.full", INVALID, attempt=3)
        stats = client.stats()
        assert 0 < stats["outbox"] < 10
        assert stats["pending"] == 10
        (line,) = [r.getMessage() for r in caplog.records if "outbox" in r.getMessage()]
        assert "kept in memory only" in line
        (rows,) = lines(tmp_path).values()
        assert len(rows) == stats["outbox"]
    finally:
        client.close(timeout=0.1)


def test_where_the_outbox_is_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "set"))
    assert default_directory() == tmp_path / "set"
    assert SidecarClient(dead_url()).outbox_dir == tmp_path / "set"
    assert SidecarClient(dead_url(), outbox_dir=None).outbox_dir is None
    monkeypatch.setenv(ENV, "")
    assert default_directory() is None
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_directory() == tmp_path / "state" / "task-sidecar" / "outbox"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".local" / "state" / "task-sidecar" / "outbox"


def test_the_celery_integration_passes_the_option_through(tmp_path: Path) -> None:
    celery = pytest.importorskip("celery")
    from sidecar.integrations.celery import install

    client = install(celery.Celery("outbox"), dead_url(), TOKEN, outbox_dir=tmp_path / "o")
    try:
        assert client.outbox_dir == tmp_path / "o"
    finally:
        client.close(timeout=0.1)


def test_a_batch_item_the_sidecar_could_not_store_is_not_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per item: an answer or a refusal for good (4xx: it would be refused again) is done;
    a 5xx item (its store was down) is sent again. A dead letter refused is an error."""
    from sidecar.client import LocalDecider
    from sidecar.client.protocol import Protocol

    caplog.set_level(logging.WARNING, "sidecar.client")
    protocol = Protocol(LocalDecider(), lambda event: None)
    failure = {"type": "failure", "task_id": "t-3", "task_name": "x", "report_id": "r-3"}
    exchange = protocol.batch([{}, {}, failure])
    answer = {"results": [{"action": "dead_letter"}, {"error": {"status": 503}}, {"error": {}}]}
    assert exchange.read(answer) == [True, False, True]
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "x[t-3] (report r-3)" in error.getMessage()
    assert exchange.read({"results": [{}]}) is None  # not one answer per event


def test_a_dead_letter_the_sidecar_would_retry_is_still_kept(
    sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """The fallback gives up sooner than the sidecar's policy (3 retries of a deadlock
    against 5). The report it delivers later says the worker gave up, so the sidecar keeps
    the record instead of answering `retry` to a worker that has moved on."""
    outbox, task = tmp_path / "outbox", f"outbox.gave-up.{uuid.uuid4().hex[:8]}"
    deadlock = {"type": "DeadlockDetected", "module": "psycopg.errors", "message": "deadlock"}
    away = SidecarClient(dead_url(), TOKEN, outbox_dir=outbox)
    answer = away.failure(f"{task}-1", task, deadlock, attempt=3)
    assert (answer["source"], answer["action"]) == ("default", "dead_letter"), answer
    away.close(0)

    back = SidecarClient(f"http://127.0.0.1:{sidecar.port}", TOKEN, outbox_dir=outbox)
    try:
        asked = back.failure(f"{task}-2", task, deadlock, attempt=3)
        assert ("source" not in asked, asked["action"]) == (True, "retry"), asked
        assert back.flush(30)
    finally:
        back.close()
    assert dlq_task_ids(sidecar, task) == [f"{task}-1"]


async def test_the_async_client_writes_the_outbox_off_its_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local dead letter waits for its fsync before it is answered; the other tasks on
    the worker's loop must not wait with it (a slow disk during an outage, when every
    failure falls back at once). The fsync is held until the loop has shown it runs."""
    import asyncio
    import threading

    from sidecar.client import AsyncSidecarClient
    from sidecar.client import outbox as outbox_module

    held, ran_meanwhile = threading.Event(), threading.Event()
    released: list[bool] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        held.set()
        released.append(ran_meanwhile.wait(5))  # by the loop's other task, or gives up
        real_fsync(fd)

    monkeypatch.setattr(outbox_module.os, "fsync", slow_fsync)
    client = AsyncSidecarClient(dead_url(), TOKEN, outbox_dir=tmp_path / "outbox")
    try:
        failing = asyncio.create_task(client.failure("t-1", "x.y", INVALID, attempt=3))
        deadline = time.monotonic() + 10
        while not held.is_set():  # polling with a deadline: the fsync starts soon
            assert time.monotonic() < deadline
            assert not failing.done()
            await asyncio.sleep(0.01)
        ran_meanwhile.set()  # this line runs only while the loop is free
        answer = await failing
        assert answer["action"] == "dead_letter"
        assert client.stats()["outbox"] == 1
        assert released
        assert all(released)  # the loop ran while the disk was slow
    finally:
        await client.close(0)


def test_a_file_never_all_acknowledged_at_once_is_retired_not_grown(tmp_path: Path) -> None:
    """With the sidecar coming and going, some lines of the file are acknowledged and some
    not, again and again: past `retire_bytes` the writer starts a new file, and the old one
    goes once its last line is acknowledged. Nothing is lost on the way."""
    from sidecar.client.outbox import Outbox

    outbox = Outbox(tmp_path, retire_bytes=2_000)
    delivered: list[int] = []
    try:
        for round_ in range(20):
            for i in range(5):
                assert outbox.append({"type": "failure", "n": round_ * 5 + i, "pad": "x" * 100})
            taken = outbox.take(1000)
            done = [j % 2 == 0 for j in range(len(taken))]  # half of them get through
            delivered += [e.event["n"] for e, ok in zip(taken, done, strict=True) if ok]
            outbox.settle(taken, done)
            sizes = [p.stat().st_size for p in tmp_path.glob("outbox-*.jsonl")]
            assert max(sizes) < 2_000 + 5 * 200  # retired near the limit, never far past it
        while outbox.waiting():  # the sidecar is back: everything gets through
            taken = outbox.take(1000)
            delivered += [e.event["n"] for e in taken]
            outbox.settle(taken, [True] * len(taken))
        assert sorted(delivered) == list(range(100))
        (own,) = tmp_path.glob("outbox-*.jsonl")  # the retired ones are gone
        assert own.stat().st_size == 0
    finally:
        outbox.close()
    assert list(tmp_path.glob("outbox-*.jsonl")) == []
