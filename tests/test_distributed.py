"""The distributed test servers (tests/distributed.py) are real, on loopback, and leave
nothing behind."""

from __future__ import annotations

import os

import psycopg
import redis

from tests.distributed import start_redis_cluster, start_redis_sentinel, start_standby
from tests.services import HOST


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_cluster_has_three_masters_sharing_every_slot_and_closes_cleanly(tmp_path):
    cluster = start_redis_cluster(tmp_path)
    pids = [node.pid for node in cluster.nodes]
    try:
        with redis.Redis(HOST, cluster.nodes[0].port) as client:
            info = client.execute_command("CLUSTER INFO")
            masters = [
                n
                for n in client.execute_command("CLUSTER NODES").values()
                if "master" in n["flags"]
            ]
        assert (info["cluster_state"], info["cluster_slots_assigned"]) == ("ok", "16384")
        assert len(masters) == 3
        assert all(node.port != node.bus_port for node in cluster.nodes)
    finally:
        cluster.close()
    assert not any(alive(pid) for pid in pids if pid)
    assert not cluster.root.exists()


def test_a_sentinel_knows_its_master_and_replica(tmp_path):
    with start_redis_sentinel(tmp_path, replica=True) as sentinel:
        assert sentinel.master_port() == sentinel.master.port
        sentinel.wait_replica_known()
        pids = [sentinel.master.pid, sentinel.replica.pid, sentinel.sentinel.pid]
    assert not any(alive(pid) for pid in pids if pid)


def test_a_standby_streams_from_its_primary(postgres_service, tmp_path):
    with start_standby(postgres_service, tmp_path) as standby:
        assert standby.in_recovery()
        with psycopg.connect(postgres_service.dsn, autocommit=True) as conn:
            (senders,) = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
        assert senders == 1
        pid = standby.pid
    assert pid
    assert not alive(pid)
    assert not standby.root.exists()
