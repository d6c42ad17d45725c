"""Throw-away Redis and PostgreSQL servers for the test suite.

Each server is a child process of the test run, bound to 127.0.0.1 on a free port, with its
data in a private temporary directory. System instances (often already on 6379/5432) and a
user's data are never touched.

Stdlib only, and nothing pytest-specific: the fixtures live in conftest.py.

    redis = start_redis(tmp_dir)        # redis.url == "redis://127.0.0.1:P/0"
    redis.stop(); redis.start()         # simulated outage: same port, same directory
    pg = start_postgres(tmp_dir)        # pg.dsn == "postgresql://postgres@127.0.0.1:P/sidecar_test"
    pg.close()                          # stop and delete its directory

RabbitMQ is the machine's own (`system_rabbitmq()`: 127.0.0.1:5672, guest/guest), started
when it is stopped: a broker is not a per-test throw-away here.

Every started service is also closed by an atexit hook, and (on Linux) the servers get a
parent-death signal, so they do not outlive the test run even if it is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

__all__ = [
    "MissingBinaryError",
    "PostgresService",
    "RedisService",
    "Service",
    "ServiceError",
    "find_pg_bindir",
    "free_port",
    "start_postgres",
    "start_redis",
    "system_rabbitmq",
]

HOST = "127.0.0.1"
INSTALL_HINT = "run scripts/install-test-deps.sh to install the Redis and PostgreSQL servers"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_DATABASE = "sidecar_test"
PG_SUPERUSER = "postgres"  # database role in the DSN
PG_OS_USER = "postgres"  # system account that runs the server when we are root
# sun_path is 108 bytes on Linux; the socket file name adds at most len("/.s.PGSQL.65535").
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")
_POLL_INTERVAL = 0.02


class ServiceError(RuntimeError):
    """A test service could not be started or stopped."""


class MissingBinaryError(ServiceError):
    """A server binary is not installed."""


class _PortInUse(ServiceError):
    """Another process took the port between free_port() and the server's bind()."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- making sure children die with us -------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def _parent_death_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """preexec_fn asking the kernel to send `sig` to the child when this process dies.

    Covers SIGKILL/SIGTERM of pytest, where atexit never runs. The kernel ties the signal
    to the *thread* that forked, so only use it from the main thread: a server started from
    a short-lived helper thread would otherwise be killed when that thread ends.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def hook() -> None:
        _prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0)
        if os.getppid() != parent:  # parent already died before prctl took effect
            os.kill(os.getpid(), sig)

    return hook


_live: dict[int, Service] = {}


@atexit.register
def _close_all() -> None:
    for service in list(_live.values()):
        # A forked child (multiprocessing, xdist worker) inherits the registry but must not
        # shut down its parent's servers.
        if service._owner_pid == os.getpid():
            with contextlib.suppress(Exception):  # best effort at interpreter exit
                service.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# --- the generic service --------------------------------------------------------------------


class Service:
    """A server child process with a fixed port and a private directory.

    `stop()` then `start()` restarts it on the same port with the same directory.
    `close()` stops it for good and deletes the directory.
    """

    name = "service"
    stop_signal = signal.SIGTERM
    ready_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.log_path = root / f"{self.name}.log"
        self.ready_seconds: float | None = None  # how long the last start() took
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._closed = False
        self._owner_pid = os.getpid()
        _live[id(self)] = self

    # Subclasses fill these in.
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state} in {self.root}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Self:
        """Start the server (no-op if running) and wait until it accepts clients."""
        if self._closed:
            raise ServiceError(f"{self!r} is closed")
        if self.running:
            return self
        # The free port may be grabbed by someone else before the server binds it. On the
        # first start just pick another one; on a restart the port is part of the contract.
        attempts = 1 if self._started_once else 5
        for attempt in range(attempts):
            try:
                self._start_once()
            except _PortInUse:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
            else:
                break
        self._started_once = True
        return self

    def _start_once(self) -> None:
        began = time.monotonic()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # Own process group: Ctrl-C in the terminal reaches pytest only (it then closes
            # us cleanly via atexit), and a last-resort SIGKILL can hit the whole group.
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_parent_death_hook(self.stop_signal),
                **self._popen_kwargs(),
            )
        deadline = began + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                tail = self._log_tail(log_offset)
                if "Address already in use" in tail:
                    raise _PortInUse(f"{self.name}: port {self.port} is taken\n{tail}")
                raise ServiceError(
                    f"{self.name} exited while starting; log {self.log_path}:\n{tail}"
                )
            if self._is_ready():
                self.ready_seconds = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} not ready after {self.ready_timeout:.0f}s; "
                    f"log {self.log_path}:\n{self._log_tail(log_offset)}"
                )
            time.sleep(_POLL_INTERVAL)

    def pause(self) -> None:
        """SIGSTOP the server and every process under it: it hangs, its connections stay
        open and answer nothing (PostgreSQL's backends leave its process group)."""
        for pid in self._tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _tree(self) -> list[int]:
        if self._proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError):
                pid, rest = Path(entry).read_text().split(" ", 1)
                ppid = int(rest.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(pid))
        tree, todo = [], [self._proc.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        return tree

    def stop(self) -> None:
        """Shut the server down (SIGKILL if it does not exit in time). Keeps the directory."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Only the leader gets the shutdown signal: PostgreSQL's children give SIGINT other
        # meanings, and the postmaster stops them itself. (They also setsid() themselves, so
        # the group SIGKILL below misses them; they exit when they see the postmaster gone.)
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        try:
            self.stop()
        finally:
            self._closed = True
            _live.pop(id(self), None)
            shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self, offset: int = 0, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- Redis ----------------------------------------------------------------------------------


class RedisService(Service):
    name = "redis"
    ready_timeout = 15.0

    def __init__(self, root: Path, port: int, binary: str) -> None:
        super().__init__(root, port)
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        # No persistence: a restart starts empty, like a real outage of a cache-only Redis.
        # --dir keeps any stray file (e.g. a manual SAVE) inside our directory.
        return [
            self.binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.root),
            "--logfile", "",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # A connect alone is not enough: Redis answers -LOADING while it is still starting.
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(tmpdir: str | os.PathLike[str] | None = None) -> RedisService:
    """Start a private redis-server in a new directory under `tmpdir` (default: system temp)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise MissingBinaryError(f"redis-server not found on PATH; {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="redis-", dir=tmpdir))
    service = RedisService(root, free_port(), binary)
    try:
        return service.start()
    except BaseException:
        service.close()
        raise


# --- PostgreSQL -----------------------------------------------------------------------------


def find_pg_bindir() -> Path:
    """The newest Debian PostgreSQL server bin dir, else the one holding `initdb` on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    found = [
        Path(d)
        for d in glob.glob(PG_BIN_GLOB)
        if os.access(Path(d) / "initdb", os.X_OK) and os.access(Path(d) / "postgres", os.X_OK)
    ]
    if found:
        return max(found, key=version)
    initdb = shutil.which("initdb")  # non-Debian layouts (e.g. Homebrew) put it on PATH
    if initdb and os.access(Path(initdb).resolve().parent / "postgres", os.X_OK):
        return Path(initdb).resolve().parent
    raise MissingBinaryError(
        f"PostgreSQL server binaries not found ({PG_BIN_GLOB}/initdb); {INSTALL_HINT}"
    )


def _traversable(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether `account` may enter `path` and all its parents (mode bits; ACLs ignored)."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _pg_root(tmpdir: str | os.PathLike[str] | None, account: pwd.struct_passwd | None) -> Path:
    if account is None:
        return Path(tempfile.mkdtemp(prefix="postgres-", dir=tmpdir))
    # The server runs as `postgres`, which must reach its data dir. pytest's tmp dirs sit
    # under a 0700 root-owned directory, so fall back to the (sticky, 1777) system temp dir.
    base = Path(tmpdir if tmpdir is not None else tempfile.gettempdir()).resolve()
    if not _traversable(base, account):
        base = Path(tempfile.gettempdir()).resolve()
        if not _traversable(base, account):
            raise ServiceError(f"user {account.pw_name!r} cannot traverse {base}; set TMPDIR")
    root = Path(tempfile.mkdtemp(prefix="postgres-", dir=base))
    os.chown(root, account.pw_uid, account.pw_gid)
    return root


class PostgresService(Service):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back, disconnect clients, exit promptly.
    # (SIGTERM, "smart", would wait for every client to disconnect.)
    stop_signal = signal.SIGINT
    ready_timeout = 60.0
    stop_timeout = 30.0

    def __init__(
        self, root: Path, port: int, bindir: Path, account: pwd.struct_passwd | None
    ) -> None:
        super().__init__(root, port)
        self.bindir = bindir
        self.account = account  # run the server as this user (needed when we are root)
        self.data_dir = root / "data"
        # Unix socket next to the data, never in the system's /var/run/postgresql. If the path
        # is too long for a socket, go TCP-only: tests connect via 127.0.0.1 anyway.
        self.socket_dir = str(root) if len(str(root)) <= _MAX_SOCKET_DIR_LEN else ""
        self.init_seconds: float | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{PG_DATABASE}"

    url = dsn

    def _env(self) -> dict[str, str]:
        # PGHOST, PGSSLMODE, PGPASSWORD... from the user's shell must not leak into our tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.account is not None:
            env.update(HOME=self.account.pw_dir, USER=self.account.pw_name)
        return env

    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"env": self._env(), "cwd": self.root}
        if self.account is not None:
            # initdb/postgres refuse to run as root. Switch user in the child itself rather
            # than via runuser: runuser stays in between as a root parent that does not pass
            # our shutdown signal on, so the server would not stop.
            acct = self.account
            kwargs.update(
                user=acct.pw_uid,
                group=acct.pw_gid,
                extra_groups=os.getgrouplist(acct.pw_name, acct.pw_gid),
            )
        return kwargs

    def _run(self, args: list[str], *, as_server_user: bool = False) -> None:
        kwargs = self._popen_kwargs() if as_server_user else {"env": self._env()}
        result = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, **kwargs
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def initdb(self) -> None:
        began = time.monotonic()
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata", str(self.data_dir),
                "--username", PG_SUPERUSER,
                "--auth", "trust",  # only reachable on loopback, and throw-away
                "--encoding", "UTF8",
                "--no-locale",  # C collation: no dependency on installed locales
                "--no-sync",  # a crash only loses a test database
                "--no-instructions",
            ],
            as_server_user=True,
        )  # fmt: skip
        self.init_seconds = time.monotonic() - began

    def create_database(self) -> None:
        self._run(
            [
                str(self.bindir / "createdb"),
                "--host", HOST,
                "--port", str(self.port),
                "--username", PG_SUPERUSER,
                PG_DATABASE,
            ]
        )  # fmt: skip

    def _command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", self.socket_dir,
            "-c", f"listen_addresses={HOST}",
            # Durability is pointless for test data; these make commits and setup fast.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # pg_isready exits 0 only once the server accepts connections (1 while starting up).
        result = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "--quiet",
                "--host", HOST,
                "--port", str(self.port),
                "--username", PG_SUPERUSER,
                "--dbname", "postgres",
                "--timeout", "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
        )  # fmt: skip
        return result.returncode == 0


def _server_account() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None  # initdb/postgres run as ourselves
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        # The Debian postgresql package creates it; initdb/postgres refuse to run as root.
        raise MissingBinaryError(
            f"running as root needs a {PG_OS_USER!r} system user to run PostgreSQL; "
            "install the Debian postgresql package (scripts/install-test-deps.sh)"
        ) from None


def start_postgres(tmpdir: str | os.PathLike[str] | None = None) -> PostgresService:
    """Start a private PostgreSQL cluster in a new directory with database `sidecar_test`.

    As root the directory may be placed in the system temp dir instead of `tmpdir` when the
    `postgres` user cannot reach `tmpdir`.
    """
    bindir = find_pg_bindir()
    account = _server_account()
    service = PostgresService(_pg_root(tmpdir, account), free_port(), bindir, account)
    try:
        service.initdb()
        service.start()
        service.create_database()
    except BaseException:
        service.close()
        raise
    return service


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def _amqp_answers(host: str = HOST, port: int = 5672, timeout: float = 2.0) -> str | None:
    """None when an AMQP 0-9-1 server answers the protocol header with a method frame
    (Connection.Start), else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_AMQP_HEADER)
            first = sock.recv(1)
    except OSError as exc:
        return f"{host}:{port}: {exc}"
    return None if first == b"\x01" else f"{host}:{port}: not an AMQP 0-9-1 answer ({first!r})"


def system_rabbitmq(timeout: float = 60.0) -> str:
    """The URL of the machine's RabbitMQ, started (`rabbitmq-server -detached`, else
    `service rabbitmq-server start`) if it does not answer. Raises ServiceError saying why
    when it cannot run."""
    why = _amqp_answers()
    if why is None:
        return RABBITMQ_URL
    commands = [["rabbitmq-server", "-detached"], ["service", "rabbitmq-server", "start"]]
    tried = []
    for command in commands:
        if shutil.which(command[0]) is None:
            tried.append(f"{command[0]}: not installed")
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{' '.join(command)}: {exc}")
            continue
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            tried.append(f"{' '.join(command)}: exit {done.returncode} {output[0]}")
            continue
        deadline = time.monotonic() + timeout
        while (why := _amqp_answers()) is not None and time.monotonic() < deadline:
            time.sleep(0.5)  # polling with a deadline: the server boots in seconds
        if why is None:
            return RABBITMQ_URL
        tried.append(f"{' '.join(command)}: started, but after {timeout:.0f}s {why}")
    raise ServiceError(f"RabbitMQ does not answer ({why}); " + "; ".join(tried))
