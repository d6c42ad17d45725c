from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from hypothesis import settings
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sidecar.policy import Policy, load_policy
from tests.distributed import (
    RedisClusterService,
    RedisSentinelService,
    start_redis_cluster,
    start_redis_sentinel,
)
from tests.services import PostgresService, RedisService, start_postgres, start_redis

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICIES = ROOT / "policies.yaml"

# Hypothesis' per-example deadline is a timed assertion: on a shared, loaded machine a
# correct example can take longer than 200 ms. Properties are checked, not speed.
settings.register_profile("sidecar", deadline=None)
settings.load_profile("sidecar")


@pytest.fixture(scope="module", autouse=True)
def module_outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The outbox of clients made by module-scoped fixtures (workers): one per module, so
    what one module's workers leave is not delivered to another module's sidecar."""
    path = tmp_path_factory.getbasetemp() / f"outbox-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASK_SIDECAR_CLIENT_OUTBOX", str(path))
        yield path


@pytest.fixture(autouse=True)
def client_outbox(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test's clients (and the workers it starts) keep their dead-letter outbox in a
    directory of its own (made on first use), not in the user's ~/.local/state, and
    never adopt another test's files."""
    path = tmp_path_factory.getbasetemp() / f"outbox-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TASK_SIDECAR_CLIENT_OUTBOX", str(path))
    return path


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The default policy shipped in the repository."""
    return load_policy(DEFAULT_POLICIES)


def routing_policies_file(directory: Path) -> Path:
    """A copy of the default policy file with `priority.route_retries: true`."""
    path = directory / "routing-policies.yaml"
    text = DEFAULT_POLICIES.read_text()
    assert "route_retries: false" in text
    path.write_text(text.replace("route_retries: false", "route_retries: true", 1))
    return path


def big_policies_file(path: Path, rules: int = 6000) -> Path:
    """The default policy plus `rules` message rules: near the loader's 1 MiB limit."""
    policy = yaml.safe_load(DEFAULT_POLICIES.read_text())
    policy["taxonomy"]["rules"] += [
        {
            "name": f"bulk-{i}",
            "failure_type": "TRANSIENT_NETWORK",
            "confidence": 0.5,
            "match": {"message": f"(?i)upstream {i} refused [a-z]+ after \\d+ tries"},
        }
        for i in range(rules)
    ]
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def routing_policy(policy: Policy) -> Policy:
    """The default policy with `priority.route_retries: true`: retries go to the level's
    queue (`critical`, `high_priority`, …)."""
    return dataclasses.replace(
        policy, priority=dataclasses.replace(policy.priority, route_retries=True)
    )


# --- real services: throw-away Redis and PostgreSQL on free loopback ports ---------------


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    with start_redis(tmp_path_factory.mktemp("redis")) as service:
        yield service


@pytest.fixture(scope="session")
def postgres_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    with start_postgres(tmp_path_factory.mktemp("postgres")) as service:
        yield service


@pytest.fixture(scope="session")
def redis_cluster_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterService]:
    """Three Redis Cluster masters sharing the slots (tests/distributed.py)."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as service:
        yield service


@pytest.fixture(scope="session")
def redis_sentinel_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisSentinelService]:
    """A Redis master and one sentinel watching it as `mymaster`."""
    with start_redis_sentinel(tmp_path_factory.mktemp("redis-sentinel")) as service:
        yield service


@pytest.fixture
def redis_url(redis_service: RedisService) -> str:
    redis_service.start()  # a no-op unless an earlier test left it stopped (outage tests)
    return redis_service.url


@pytest.fixture
def postgres_dsn(postgres_service: PostgresService) -> str:
    """DSN of the database `sidecar_test` on a throw-away server shared by the session."""
    postgres_service.start()
    return postgres_service.dsn


@pytest.fixture
def empty_dsn(postgres_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database on the test PostgreSQL, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres_dsn, dbname=name)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
