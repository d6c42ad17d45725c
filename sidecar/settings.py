"""Settings: flags and TASK_SIDECAR_* environment variables, parsed in one place.

A flag wins over its environment variable, which wins over the default. Every setting is
listed in docs/configuration.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .policy.durations import parse_duration

PREFIX = "TASK_SIDECAR_"
ROLES = ("hooks", "viewer", "operator")
TOKEN_VARIABLES = {
    "hooks": "TASK_SIDECAR_HOOK_TOKENS",
    "viewer": "TASK_SIDECAR_VIEWER_TOKENS",
    "operator": "TASK_SIDECAR_OPERATOR_TOKENS",
}


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class Token:
    name: str  # shown in logs and the audit log; the secret never is
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    policies: str = "policies.yaml"
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = field(default=None, repr=False)
    postgres_dsn: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".task-sidecar")
    tokens: Mapping[str, tuple[Token, ...]] = field(default_factory=dict, repr=False)
    body_limit: int = 256 * 1024
    max_in_flight: int = 256  # hook requests handled at once; more get 503 + Retry-After
    migrate: bool = True
    reload_interval: float = 2.0  # how often the policy file is checked for changes
    shutdown_grace: float = 10.0
    task_label_limit: int = 500
    log_level: str = "INFO"
    requeue: str = "none"  # where DLQ retries go: none | celery | webhook
    celery_broker_url: str | None = field(default=None, repr=False)
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    queues: tuple[str, ...] = ()  # Celery queues whose depth is probed on the broker
    poll_interval: float = 5.0  # how often DLQ depth, breakers and queues are read
    failure_retention: float = 7 * 86400.0  # how long failure events are kept for trends

    @property
    def auth_enabled(self) -> bool:
        return any(self.tokens.get(role) for role in ROLES)

    def check(self) -> None:
        """Refuse combinations that would be unsafe or cannot work."""
        if self.requeue not in ("none", "celery", "webhook"):
            raise SettingsError(f"requeue: expected none, celery or webhook, got {self.requeue!r}")
        if self.requeue == "celery" and not self.celery_broker_url:
            raise SettingsError("requeue=celery needs TASK_SIDECAR_CELERY_BROKER_URL")
        if self.requeue == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise SettingsError(
                "requeue=webhook needs TASK_SIDECAR_WEBHOOK_URL and TASK_SIDECAR_WEBHOOK_SECRET"
            )
        if not self.auth_enabled and not is_loopback(self.host):
            raise SettingsError(
                f"refusing to listen on {self.host} without tokens: set TASK_SIDECAR_HOOK_TOKENS"
                ", TASK_SIDECAR_VIEWER_TOKENS and TASK_SIDECAR_OPERATOR_TOKENS, or bind to "
                "127.0.0.1"
            )


def default_policies() -> str:
    """./policies.yaml when there is one, else the copy shipped in the package."""
    if Path("policies.yaml").exists():
        return "policies.yaml"
    return str(Path(__file__).with_name("default_policies.yaml"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_tokens(value: str, role: str) -> tuple[Token, ...]:
    """`name:secret,name2:secret2`; a bare secret is named after its role and position."""
    tokens = []
    for i, item in enumerate(filter(None, (part.strip() for part in value.split(","))), 1):
        name, sep, secret = item.partition(":")
        if not sep:
            name, secret = f"{role}-{i}", item
        if not name or len(secret) < 16:
            raise SettingsError(
                f"{TOKEN_VARIABLES[role]}: token {i} must be `name:secret` with a secret "
                "of at least 16 characters"
            )
        tokens.append(Token(name, secret))
    return tuple(tokens)


# (setting, flag, environment variable, parser, help)
_OPTIONS = (
    ("policies", "--policies", "POLICIES", str, "policy file"),
    ("host", "--host", "HOST", str, "address to listen on (default 127.0.0.1)"),
    ("port", "--port", "PORT", int, "port to listen on (default 8080)"),
    ("redis_url", "--redis-url", "REDIS_URL", str, "Redis for fleet-wide state"),
    ("postgres_dsn", "--postgres-dsn", "POSTGRES_DSN", str, "PostgreSQL for the DLQ"),
    ("data_dir", "--data-dir", "DATA_DIR", Path, "embedded database and spool directory"),
    ("body_limit", "--body-limit", "BODY_LIMIT", int, "largest request body in bytes"),
    (
        "max_in_flight",
        "--max-in-flight",
        "MAX_IN_FLIGHT",
        int,
        "hook requests handled at once; beyond it 503 with Retry-After",
    ),
    (
        "reload_interval",
        "--reload-interval",
        "RELOAD_INTERVAL",
        parse_duration,
        "how often to check the policy file for changes (0: never)",
    ),
    (
        "shutdown_grace",
        "--shutdown-grace",
        "SHUTDOWN_GRACE",
        parse_duration,
        "how long SIGTERM waits for in-flight requests",
    ),
    (
        "task_label_limit",
        "--task-label-limit",
        "TASK_LABEL_LIMIT",
        int,
        "distinct task names kept as metric labels",
    ),
    ("log_level", "--log-level", "LOG_LEVEL", str, "DEBUG, INFO, WARNING or ERROR"),
    ("requeue", "--requeue", "REQUEUE", str, "where DLQ retries go: none, celery or webhook"),
    (
        "celery_broker_url",
        "--celery-broker-url",
        "CELERY_BROKER_URL",
        str,
        "Celery broker for requeues and the queue-depth probe",
    ),
    ("webhook_url", "--webhook-url", "WEBHOOK_URL", str, "URL that receives requeued tasks"),
    ("webhook_secret", "--webhook-secret", "WEBHOOK_SECRET", str, "HMAC key of the webhook"),
    (
        "queues",
        "--queues",
        "QUEUES",
        lambda v: tuple(q.strip() for q in v.split(",") if q.strip()),
        "comma-separated Celery queues whose depth is exported",
    ),
    (
        "poll_interval",
        "--poll-interval",
        "POLL_INTERVAL",
        parse_duration,
        "how often DLQ depth, breakers and queue depths are refreshed",
    ),
    (
        "failure_retention",
        "--failure-retention",
        "FAILURE_RETENTION",
        parse_duration,
        "how long failure events are kept for trends",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for _, flag, env, _, text in _OPTIONS:
        parser.add_argument(flag, default=None, help=f"{text} [{PREFIX}{env}]")
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help=f"do not apply migrations at start [{PREFIX}MIGRATE=0]",
    )


def from_sources(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, _, env, parse, _ in _OPTIONS:
        raw = getattr(args, name, None) if args is not None else None
        source = f"--{name.replace('_', '-')}"
        if raw is None and environ.get(PREFIX + env):
            raw, source = environ[PREFIX + env], PREFIX + env
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    for name in ("port", "body_limit", "task_label_limit", "max_in_flight"):
        if name in values and not 0 < values[name] < 2**31:  # type: ignore[operator]
            raise SettingsError(f"{name}: expected a positive number, got {values[name]}")
    if (getattr(args, "no_migrate", False)) or environ.get(PREFIX + "MIGRATE") in ("0", "false"):
        values["migrate"] = False
    values.setdefault("policies", default_policies())
    values["tokens"] = {
        role: parse_tokens(environ.get(variable, ""), role)
        for role, variable in TOKEN_VARIABLES.items()
    }
    return Settings(**values)  # type: ignore[arg-type]
