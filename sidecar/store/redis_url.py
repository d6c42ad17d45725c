"""Which Redis a `TASK_SIDECAR_REDIS_URL` names: one server, a Redis Cluster, or the master
that Redis Sentinel points at.

    redis://[user:password@]host:6379/0              one server (redis-py's own URL; also
    rediss://…, unix:///run/redis.sock?db=0)         rediss:// and unix://, passed on as is)
    redis+cluster://[user:password@]h1:7000,h2:7001/ a Redis Cluster: any reachable nodes
    rediss+cluster://…                               (the client learns the others)
    redis+sentinel://[user:password@]s1:26379,s2:26379/mymaster[/0][?sentinel_password=…]
    rediss+sentinel://…                              the master of service `mymaster`, db 0

The `+cluster` and `+sentinel` forms follow what redis-py users know: `redis://` for the
connection's parts, with the hosts listed comma-separated as libpq and kombu do. In the
Sentinel form the user and password are the master's; `sentinel_username` and
`sentinel_password` query parameters authenticate to the sentinels (unset: none).

Stdlib only. Errors never quote the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

Kind = Literal["server", "cluster", "sentinel"]

SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class RedisAddress:
    kind: Kind
    url: str = field(repr=False)  # the URL as given (redis-py parses the `server` kind)
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or the sentinels
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    service: str | None = None  # the Sentinel service (master) name
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisAddress:
    """The address in `url`; ValueError (not quoting it) when it is not one of the forms."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(
            "expected a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
        )
    kind, ssl = SCHEMES[scheme]
    if kind == "server":
        return RedisAddress("server", url, ssl=ssl)
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(node, DEFAULT_PORT[kind]) for node in hostlist.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(_SENTINEL_QUERY if kind == "sentinel" else ()))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} in the {scheme}:// URL")
    common = {
        "url": url,
        "nodes": nodes,
        "ssl": ssl,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    if kind == "cluster":
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only: end the URL with / or /0")
        return RedisAddress("cluster", **common)
    if not 1 <= len(path) <= 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port]/service[/db]")
    return RedisAddress(
        "sentinel",
        **common,
        service=unquote(path[0]),
        db=_db(path[1]) if len(path) == 2 else 0,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = port, str(default_port)
    host = host.strip("[]")  # [::1]:7000
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected host:port nodes, comma-separated, in the Redis URL")
    return host, int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError("expected a database number after the Sentinel service name")
    return int(text)
