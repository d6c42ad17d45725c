"""Throw-away distributed Redis and PostgreSQL for the fleet tests, built from the servers
of tests/services.py: each process a child of the test run on 127.0.0.1, on free ports,
with its data in a private temporary directory.

    cluster = start_redis_cluster(tmp)   # 3 masters; cluster.url == "redis+cluster://…"
    sentinel = start_redis_sentinel(tmp) # a master and one sentinel watching it as "mymaster"
    sentinel = start_redis_sentinel(tmp, replica=True)  # + a replica, for failovers
    pg = start_postgres(tmp); standby = start_standby(pg, tmp)   # streaming replication
    ….close()                            # stop and delete (also done at exit)

Nothing pytest-specific; the servers are asked about their state with redis-py.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import redis

from .services import (
    HOST,
    PG_SUPERUSER,
    MissingBinaryError,
    PostgresService,
    RedisService,
    ServiceError,
    _pg_root,
    _server_account,
    find_pg_bindir,
    free_port,
    start_redis,
)

SENTINEL_SERVICE = "mymaster"
_POLL = 0.05


def _client(port: int) -> redis.Redis:
    return redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2)


def _wait(what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(_POLL)  # polling with a deadline


def _redis_binary(name: str = "redis-server") -> str:
    binary = shutil.which(name)
    if binary is None:
        raise MissingBinaryError(f"{name} not found on PATH; run scripts/install-test-deps.sh")
    return binary


# --- Redis Cluster ----------------------------------------------------------------------------


class ClusterNodeService(RedisService):
    """A redis-server with cluster mode on; its bus on a port of its own (not port+10000,
    which may be above 65535 or taken)."""

    name = "redis-cluster-node"

    def __init__(self, root: Path, port: int, binary: str) -> None:
        super().__init__(root, port, binary)
        self.bus_port = free_port()

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.root / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip


class RedisClusterService:
    """Three masters (no replicas) sharing the 16384 slots."""

    def __init__(self, root: Path, nodes: list[ClusterNodeService]) -> None:
        self.root = root
        self.nodes = nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes) + "/"

    def _ok(self) -> bool:
        """Every node says the cluster is ok and knows every other node."""
        try:
            for node in self.nodes:
                with _client(node.port) as client:
                    if client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                        return False
                    known = client.execute_command("CLUSTER NODES")
                    if len(known) < len(self.nodes):
                        return False
                    if not all(n["connected"] for n in known.values()):
                        return False
        except (redis.RedisError, OSError):
            return False
        return True

    def create(self) -> Self:
        command = [
            _redis_binary("redis-cli"),
            "--cluster", "create",
            *(f"{HOST}:{n.port}" for n in self.nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        return self.wait_ok()

    def wait_ok(self) -> Self:
        _wait("redis cluster", self._ok, 30)
        return self

    def flush(self) -> None:
        for node in self.nodes:
            with _client(node.port) as client:
                client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_redis_cluster(tmpdir: str | Path | None = None, masters: int = 3) -> RedisClusterService:
    binary = _redis_binary()
    root = Path(tempfile.mkdtemp(prefix="redis-cluster-", dir=tmpdir))
    nodes: list[ClusterNodeService] = []
    cluster = RedisClusterService(root, nodes)
    try:
        for i in range(masters):
            node_dir = root / f"node{i}"
            node_dir.mkdir()
            nodes.append(ClusterNodeService(node_dir, free_port(), binary))
            nodes[-1].start()
        return cluster.create()
    except BaseException:
        cluster.close()
        raise


# --- Redis Sentinel ---------------------------------------------------------------------------


class SentinelProcess(RedisService):
    """`redis-server CONFIG --sentinel`: the config file is its own (it rewrites it)."""

    name = "redis-sentinel"

    def __init__(
        self, root: Path, port: int, binary: str, master_port: int, down_after_ms: int = 5000
    ) -> None:
        super().__init__(root, port, binary)
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.config = root / "sentinel.conf"

    def _command(self) -> list[str]:
        self.config.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f'dir "{self.root}"\n'
            'logfile ""\n'
            f"sentinel monitor {SENTINEL_SERVICE} {HOST} {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
        )
        return [self.binary, str(self.config), "--sentinel"]

    def _is_ready(self) -> bool:
        try:
            with _client(self.port) as client:
                reply = client.execute_command(
                    "SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE
                )
        except (redis.RedisError, OSError):
            return False
        return bool(reply) and int(reply[1]) == self.master_port


class ReplicaService(RedisService):
    name = "redis-replica"

    def __init__(self, root: Path, port: int, binary: str, master_port: int) -> None:
        super().__init__(root, port, binary)
        self.master_port = master_port

    def _command(self) -> list[str]:
        return [*super()._command(), "--replicaof", HOST, str(self.master_port)]


class RedisSentinelService:
    def __init__(
        self,
        master: RedisService,
        sentinel: SentinelProcess,
        replica: ReplicaService | None = None,
    ) -> None:
        self.master = master
        self.sentinel = sentinel
        self.replica = replica

    def master_port(self) -> int | None:
        """Where the sentinel says the master is now."""
        with _client(self.sentinel.port) as client:
            reply = client.execute_command("SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE)
        return int(reply[1]) if reply else None

    def wait_replica_known(self) -> None:
        """Until the sentinel lists the replica (it learns replicas from the master's INFO)
        and the replica's link to the master is up."""

        def known() -> bool:
            assert self.replica is not None
            with _client(self.sentinel.port) as client:
                replicas = client.execute_command("SENTINEL", "replicas", SENTINEL_SERVICE)
            with _client(self.replica.port) as client:
                linked = client.info("replication").get("master_link_status") == "up"
            return linked and any(str(self.replica.port) in str(r) for r in replicas)

        _wait("sentinel's view of the replica", known, 30)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.sentinel.port}/{SENTINEL_SERVICE}/0"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sentinel.close()
        if self.replica is not None:
            with contextlib.suppress(Exception):
                self.replica.close()
        self.master.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_redis_sentinel(
    tmpdir: str | Path | None = None, *, replica: bool = False
) -> RedisSentinelService:
    """A master and a sentinel; with `replica`, also a replica of the master, and a
    sentinel quick (0.5 s) to call the master down, so that a stopped master fails over."""
    master = start_redis(tmpdir)
    try:
        root = Path(tempfile.mkdtemp(prefix="redis-sentinel-", dir=tmpdir))
        down_after = 500 if replica else 5000
        sentinel = SentinelProcess(root, free_port(), _redis_binary(), master.port, down_after)
    except BaseException:
        master.close()
        raise
    service = RedisSentinelService(master, sentinel)
    try:
        if replica:
            replica_root = Path(tempfile.mkdtemp(prefix="redis-replica-", dir=tmpdir))
            service.replica = ReplicaService(
                replica_root, free_port(), _redis_binary(), master.port
            )
            service.replica.start()
        sentinel.start()
    except BaseException:
        service.close()
        raise
    return service


# --- a PostgreSQL streaming standby -----------------------------------------------------------


class StandbyService(PostgresService):
    name = "postgres-standby"

    def in_recovery(self) -> bool:
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "--host", HOST, "--port", str(self.port), "--username", PG_SUPERUSER,
                "--dbname", "postgres", "--tuples-only", "--no-align",
                "--command", "SELECT pg_is_in_recovery()",
            ],
            capture_output=True, text=True, timeout=30, env=self._env(),
        )  # fmt: skip
        return done.stdout.strip() == "t"


def start_standby(primary: PostgresService, tmpdir: str | Path | None = None) -> StandbyService:
    """A hot standby of `primary`: `pg_basebackup -R` (standby.signal and primary_conninfo
    written for us) streaming from it. initdb's trust rules let loopback replicate."""
    bindir = find_pg_bindir()
    account = _server_account()
    standby = StandbyService(_pg_root(tmpdir, account), free_port(), bindir, account)
    try:
        standby._run(
            [
                str(bindir / "pg_basebackup"),
                "--host", HOST,
                "--port", str(primary.port),
                "--username", PG_SUPERUSER,
                "--pgdata", str(standby.data_dir),
                "--write-recovery-conf",
                "--wal-method", "stream",
                "--checkpoint", "fast",
                "--no-sync",
            ],
            as_server_user=True,
        )  # fmt: skip
        standby.start()
        if not standby.in_recovery():
            raise ServiceError("the standby is not in recovery")
    except BaseException:
        standby.close()
        raise
    return standby
