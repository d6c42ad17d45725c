"""The throw-away Redis/PostgreSQL layer (tests/services.py) really works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests import services


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _raw_redis(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(payload)
        return sock.recv(64)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _alive(pid: int) -> bool:
    # Zombies count as dead: an orphan's zombie may linger if PID 1 does not reap.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


# Module-scoped servers; the function-scoped wrappers make sure a test that stopped one
# cannot leave it down for the next test.
@pytest.fixture(scope="module")
def _redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisService]:
    with services.start_redis(tmp_path_factory.mktemp("redis")) as service:
        yield service


@pytest.fixture(scope="module")
def _postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PostgresService]:
    with services.start_postgres(tmp_path_factory.mktemp("postgres")) as service:
        yield service


@pytest.fixture
def redis_svc(_redis: services.RedisService) -> services.RedisService:
    return _redis.start()


@pytest.fixture
def pg_svc(_postgres: services.PostgresService) -> services.PostgresService:
    return _postgres.start()


# --- Redis ----------------------------------------------------------------------------------


def test_redis_answers_ping_on_its_own_loopback_port(redis_svc: services.RedisService) -> None:
    assert redis_svc.port != 6379
    assert redis_svc.url == f"redis://127.0.0.1:{redis_svc.port}/0"
    assert _raw_redis(redis_svc.port, b"*1\r\n$4\r\nPING\r\n") == b"+PONG\r\n"


def test_redis_py_client_round_trip(redis_svc: services.RedisService) -> None:
    with redis.Redis.from_url(redis_svc.url) as client:
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}  # no persistence, as configured


def test_redis_stop_refuses_connections_and_start_restores_same_url(
    redis_svc: services.RedisService,
) -> None:
    url, root = redis_svc.url, redis_svc.root
    redis_svc.stop()
    assert not redis_svc.running
    assert _refused(redis_svc.port)
    with (
        redis.Redis.from_url(url, socket_connect_timeout=2) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()

    redis_svc.start()
    assert (redis_svc.url, redis_svc.root) == (url, root)
    assert root.is_dir()
    with redis.Redis.from_url(url) as client:
        assert client.ping()


def test_two_redis_instances_are_isolated(redis_svc: services.RedisService, tmp_path: Path) -> None:
    with (
        services.start_redis(tmp_path) as other,
        redis.Redis.from_url(other.url) as other_client,
        redis.Redis.from_url(redis_svc.url) as client,
    ):
        assert other.port != redis_svc.port
        other_client.set("only-here", 1)
        assert client.get("only-here") is None


# --- PostgreSQL -----------------------------------------------------------------------------


def test_postgres_accepts_a_query(pg_svc: services.PostgresService) -> None:
    assert pg_svc.port != 5432
    assert pg_svc.dsn == f"postgresql://postgres@127.0.0.1:{pg_svc.port}/sidecar_test"
    with psycopg.connect(pg_svc.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select current_database()").fetchone() == ("sidecar_test",)
        assert conn.execute("select inet_server_addr()::text").fetchone() == ("127.0.0.1/32",)
        assert conn.execute("show fsync").fetchone() == ("off",)


def test_postgres_stop_refuses_and_start_restores_same_dsn_and_data(
    pg_svc: services.PostgresService,
) -> None:
    dsn = pg_svc.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table survives_restart (n int)")
        conn.execute("insert into survives_restart values (42)")

    pg_svc.stop()
    assert not pg_svc.running
    assert _refused(pg_svc.port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)

    pg_svc.start()
    assert pg_svc.dsn == dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select n from survives_restart").fetchall() == [(42,)]


def test_postgres_stop_does_not_wait_for_open_transactions(
    pg_svc: services.PostgresService,
) -> None:
    # Fast shutdown: an idle-in-transaction client must not block stop() (a smart shutdown
    # would wait for it forever).
    conn = psycopg.connect(pg_svc.dsn)
    try:
        conn.execute("select 1")  # opens a transaction and leaves it open
        began = time.monotonic()
        pg_svc.stop()
        assert time.monotonic() - began < 5
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()
        pg_svc.start()


# --- lifecycle and errors -------------------------------------------------------------------


@pytest.mark.parametrize("start", [services.start_redis, services.start_postgres])
def test_close_kills_the_server_and_removes_its_directory(
    start: Callable[[Path], services.Service], tmp_path: Path
) -> None:
    service = start(tmp_path)
    pid, root = service.pid, service.root
    assert pid is not None
    assert _alive(pid)
    assert root.is_dir()

    service.close()
    assert not _alive(pid)
    assert not root.exists()
    service.close()  # idempotent
    with pytest.raises(services.ServiceError):
        service.start()


def test_missing_redis_points_to_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(services.MissingBinaryError, match=r"scripts/install-test-deps\.sh"):
        services.start_redis(tmp_path)


def test_missing_postgres_points_to_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(services, "PG_BIN_GLOB", str(tmp_path / "nope" / "*" / "bin"))
    with pytest.raises(services.MissingBinaryError, match=r"scripts/install-test-deps\.sh"):
        services.start_postgres(tmp_path)


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])  # the tests/ directory
import services
r = services.start_redis()
p = services.start_postgres()
print(json.dumps({"pids": [r.pid, p.pid], "roots": [str(r.root), str(p.root)]}), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("ending", ["normal-exit", "ctrl-c", "sigterm", "sigkill"])
def test_servers_do_not_outlive_the_test_process(ending: str) -> None:
    """A test run that forgets to close, is interrupted, or is killed leaves no servers."""
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(Path(services.__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,  # so "ctrl-c" can signal its whole group, like a terminal does
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        info = json.loads(child.stdout.readline())
        roots = [Path(r) for r in info["roots"]]
        try:
            redis_pid, pg_pid = info["pids"]
            assert _wait_until(lambda: len(_children(pg_pid)) >= 3)  # checkpointer, walwriter...
            pids = [redis_pid, pg_pid, *_children(pg_pid)]
            # Only the servers: a PostgreSQL child may end by itself (a startup process).
            assert _alive(redis_pid)
            assert _alive(pg_pid)

            if ending == "normal-exit":
                child.stdin.close()
            elif ending == "ctrl-c":
                os.killpg(child.pid, signal.SIGINT)
            elif ending == "sigterm":
                child.terminate()  # no atexit: relies on the parent-death signal
            else:
                child.kill()
            child.wait(timeout=30)

            assert _wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30), [
                pid for pid in pids if _alive(pid)
            ]
            if ending in ("normal-exit", "ctrl-c"):  # atexit ran: directories are gone too
                assert not any(root.exists() for root in roots)
        finally:
            if child.poll() is None:
                child.kill()
            for root in roots:  # a killed process cannot clean up its directories
                shutil.rmtree(root, ignore_errors=True)
