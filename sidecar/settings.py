"""Settings: flags and TASK_SIDECAR_* environment variables, parsed in one place.

This is the only module that reads the environment. Every setting is defined once, as a
field of `Settings` (the service) or `ClientSettings` (the operator commands) made with
`setting(default, help, ...)`: its name, type and default, and from these its flag
(`--metrics-port`), its variable (`TASK_SIDECAR_METRICS_PORT`), its parser and its help.
`serve --help` and the tables of docs/configuration.md are generated from the same
definition (`python -m sidecar.settings --markdown`; a test keeps the doc in step).

A flag wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .policy.durations import format_duration, parse_duration

PREFIX = "TASK_SIDECAR_"
ROLES = ("hooks", "viewer", "operator")
TOKEN_VARIABLES = {
    "hooks": "TASK_SIDECAR_HOOK_TOKENS",
    "viewer": "TASK_SIDECAR_VIEWER_TOKENS",
    "operator": "TASK_SIDECAR_OPERATOR_TOKENS",
}
TOKEN_HELP = {
    "hooks": "tokens of workers (hooks, idempotency)",
    "viewer": "tokens that may read (dry runs, and the action API's reads)",
    "operator": "tokens that may act (an operator token is also a viewer token)",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
REQUEUE_TARGETS = ("none", "celery", "webhook")
MAX_PORT = 65535


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names it."""


# --- parsers: text (a flag or a variable) to a value; ValueError says what was expected ---


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"expected a port number 1-{MAX_PORT}, got {text!r}")
    return port


def parse_count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < 2**31:
        raise ValueError(f"expected a whole number of at least 1, got {text!r}")
    return value


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_size(text: str) -> int:
    """Bytes: `262144`, `256KiB`, `256 MiB`, `1GiB` (or decimal `10MB`)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected a size like 262144, 256KiB or 1GiB, got {text!r}")
    number, unit = float(match[1]), (match[2] or "").lower()
    factor = 1024 ** ("kmg".index(unit[0]) + 1) if "i" in unit else _SIZE_UNITS[unit[:1]]
    size = int(number * factor)
    if size < 1:
        raise ValueError(f"expected at least one byte, got {text!r}")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return str(size)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def one_of(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    parse.choices = choices  # type: ignore[attr-defined]  # for completion and docs
    return parse


def parse_redis_url(text: str) -> str:
    """A Redis URL of one of the three forms (one server, a cluster, Sentinel); the error
    does not quote it (it may hold a password)."""
    from .store.redis_url import parse_redis_url as address  # stdlib only

    address(text)
    return text


def parse_host(text: str) -> str:
    host = text.strip()
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"expected a host name or address, got {text!r}")
    return host


# --- the definition of a setting -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the command line, the environment and the docs see it."""

    name: str  # the field of the settings class
    flag: str | None  # --metrics-port; None: environment only
    env: str  # TASK_SIDECAR_METRICS_PORT
    parse: Callable[[str], Any]
    help: str
    default: Any
    shown_default: str  # the default as the docs and --help show it
    switch: bool = False  # a boolean: --x / --no-x
    fallback: Callable[[], Any] | None = None  # computes the default at parse time

    @property
    def choices(self) -> tuple[str, ...] | None:
        return getattr(self.parse, "choices", None)

    @property
    def metavar(self) -> str:
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        return self.name.upper()


def setting(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] = str,
    shown: str | None = None,
    secret: bool = False,
    switch: bool = False,
    fallback: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that is also a flag and a variable (named after the field)."""
    spec = {
        "parse": parse,
        "help": help,
        "shown": shown,
        "switch": switch,
        "fallback": fallback,
    }
    return field(default=default, repr=not secret, metadata={"setting": spec})


def options(cls: type) -> tuple[Option, ...]:
    """The settings of `cls` (`Settings` or `ClientSettings`), in definition order."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        out.append(
            Option(
                name=f.name,
                flag="--" + f.name.replace("_", "-"),
                env=PREFIX + f.name.upper(),
                parse=spec["parse"],
                help=spec["help"],
                default=f.default,
                shown_default=spec["shown"] or _shown(f.default, spec["parse"]),
                switch=spec["switch"],
                fallback=spec["fallback"],
            )
        )
    return tuple(out)


def _shown(default: Any, parse: Callable[[str], Any]) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(default) or "empty"
    if parse is parse_duration:
        return format_duration(default)
    if parse is parse_size:
        return format_size(default)
    return str(default)


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


# --- the service -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    name: str  # shown in logs and the audit log; the secret never is
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """What `task-sidecar serve` runs with."""

    policies: str = setting(
        "policies.yaml",
        "the policy file",
        shown="`./policies.yaml`, else the packaged default",
        fallback=default_policies,
    )
    host: str = setting("127.0.0.1", "address to listen on", parse=parse_host)
    port: int = setting(8080, "port to listen on", parse=parse_port)
    metrics_host: str | None = setting(
        None,
        "address of the separate `/metrics` listener (with `--metrics-port`); it may be public "
        "without tokens: `/metrics` holds no secret",
        parse=parse_host,
        shown="same as `--host`",
    )
    metrics_port: int | None = setting(
        None,
        "serve `/metrics` on this port only, apart from the API",
        parse=parse_port,
        shown="unset: `/metrics` on `--port`",
    )
    redis_url: str | None = setting(
        None,
        "Redis for fleet-wide breakers, adaptive statistics and fast idempotency claims: "
        "`redis://`, `redis+cluster://` or `redis+sentinel://` (see below)",
        parse=parse_redis_url,
        shown="unset: in-process state",
        secret=True,
    )
    postgres_dsn: str | None = setting(
        None,
        "PostgreSQL for the DLQ, audit log and durable idempotency keys",
        shown="unset: SQLite",
        secret=True,
    )
    data_dir: Path = setting(  # noqa: RUF009  (setting() makes the field; Path is not shared)
        Path(".task-sidecar"), "the embedded SQLite database and the spool", parse=Path
    )
    tokens: Mapping[str, tuple[Token, ...]] = field(default_factory=dict, repr=False)
    body_limit: int = setting(256 * 1024, "largest request body (larger: `413`)", parse=parse_size)
    max_in_flight: int = setting(
        256,
        "worker requests (hooks, idempotency, classify, decide) handled at once; beyond it "
        "an immediate `503` with `Retry-After: 1`, which the client treats like a timeout "
        "(local fallback)",
        parse=parse_count,
    )
    migrate: bool = setting(
        True, "apply PostgreSQL migrations at start (`--no-migrate`: do not)", switch=True
    )
    reload_interval: float = setting(
        2.0,
        "how often the policy file is checked for changes (0: never)",
        parse=parse_duration,
    )
    shutdown_grace: float = setting(
        10.0, "how long SIGTERM waits for in-flight requests", parse=parse_duration
    )
    task_label_limit: int = setting(
        500,
        "distinct task names (and, apart, queue names) kept as metric labels; the rest "
        "are `__other__`",
        parse=parse_count,
    )
    log_level: str = setting("INFO", "log level", parse=one_of(*LOG_LEVELS, upper=True))
    log_format: str = setting(
        "text", "log lines as text, or as one JSON object per line", parse=one_of(*LOG_FORMATS)
    )
    access_log: bool = setting(False, "log every HTTP request", switch=True)
    requeue: str = setting("none", "where DLQ retries go", parse=one_of(*REQUEUE_TARGETS))
    celery_broker_url: str | None = setting(
        None, "Celery broker for requeues and the queue-depth probe", secret=True
    )
    webhook_url: str | None = setting(
        None, "URL that receives requeued tasks (`--requeue webhook`)"
    )
    webhook_secret: str | None = setting(
        None, "HMAC key that signs the webhook's requests", secret=True
    )
    queues: tuple[str, ...] = setting(
        (), "comma-separated Celery queues whose depth is exported", parse=parse_list
    )
    poll_interval: float = setting(
        5.0,
        "how often DLQ depth, breakers and queue depths are refreshed",
        parse=parse_duration,
    )
    requeue_lease: float = setting(
        60.0,
        "how long a record taken for a requeue may wait for its send; after that (its sidecar "
        "died) any sidecar puts it back to pending",
        parse=parse_duration,
    )
    event_retention: float = setting(
        30 * 86400.0,
        "how long the hook-event history (trends, `events export`) is kept; "
        "older events are purged in batches",
        parse=parse_duration,
    )
    spool_max_bytes: int = setting(
        256 * 1024**2,
        "largest size of the local spool of DLQ writes PostgreSQL could not take",
        parse=parse_size,
    )

    @property
    def auth_enabled(self) -> bool:
        return any(self.tokens.get(role) for role in ROLES)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the separate /metrics listener binds; None: /metrics is on the API port."""
        if self.metrics_port is None:
            return None
        return (self.metrics_host or self.host, self.metrics_port)

    def check(self) -> None:
        """Refuse combinations that would be unsafe or cannot work."""
        if self.requeue not in REQUEUE_TARGETS:
            raise SettingsError(f"requeue: expected none, celery or webhook, got {self.requeue!r}")
        if self.requeue == "celery" and not self.celery_broker_url:
            raise SettingsError("requeue=celery needs TASK_SIDECAR_CELERY_BROKER_URL")
        if self.requeue == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise SettingsError(
                "requeue=webhook needs TASK_SIDECAR_WEBHOOK_URL and TASK_SIDECAR_WEBHOOK_SECRET"
            )
        # The API needs tokens off loopback; a separate /metrics listener does not.
        if not self.auth_enabled and not is_loopback(self.host):
            raise SettingsError(
                f"refusing to listen on {self.host} without tokens: set TASK_SIDECAR_HOOK_TOKENS"
                ", TASK_SIDECAR_VIEWER_TOKENS and TASK_SIDECAR_OPERATOR_TOKENS, or bind to "
                "127.0.0.1"
            )
        if self.metrics_host is not None and self.metrics_port is None:
            raise SettingsError(
                "metrics_host: has no effect without TASK_SIDECAR_METRICS_PORT (--metrics-port)"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise SettingsError(
                f"metrics_port: {self.metrics_port} is the API's port; choose another, or "
                "unset it to serve /metrics on the API port"
            )


# --- the operator commands -------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """How `task-sidecar dlq|breakers|audit|trends|policies` reach a running sidecar."""

    url: str = setting("http://127.0.0.1:8080", "the sidecar's address")
    token: str | None = setting(
        None, "a viewer token (reads) or an operator token (actions)", secret=True
    )
    timeout: float = setting(30.0, "how long one request may take", parse=parse_duration)


# --- from flags and the environment ----------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser, cls: type = Settings, names: Iterable[str] | None = None
) -> None:
    """A flag for each setting of `cls` (or only `names`); the help names the variable."""
    wanted = None if names is None else set(names)
    for option in options(cls):
        if wanted is not None and option.name not in wanted:
            continue
        text = f"{option.help} [{option.env}] (default: {option.shown_default})"
        text = text.replace("`", "").replace("%", "%%")
        if option.switch:
            parser.add_argument(
                option.flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                dest=option.name,
                help=text,
            )
        else:
            parser.add_argument(
                option.flag,
                default=None,
                dest=option.name,
                metavar=option.metavar,
                help=text,
            )


def resolve(
    cls: type,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The values given by flag or variable (parsed; SettingsError names the source), plus
    computed defaults; settings left at their plain default are absent."""
    environ = os.environ if environ is None else environ
    wanted = None if names is None else set(names)
    values: dict[str, Any] = {}
    for option in options(cls):
        if wanted is not None and option.name not in wanted:
            continue
        raw = getattr(args, option.name, None) if args is not None else None
        if isinstance(raw, bool):  # a switch given on the command line
            values[option.name] = raw
            continue
        source = option.flag or option.env
        if raw is None and environ.get(option.env):
            raw, source = environ[option.env], option.env
        if raw is None:
            if option.fallback is not None:
                values[option.name] = option.fallback()
            continue
        parse = parse_bool if option.switch else option.parse
        try:
            values[option.name] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return values


def value(name: str, args: argparse.Namespace | None = None, cls: type = Settings) -> Any:
    """One setting, from its flag, its variable or its default."""
    resolved = resolve(cls, args, names=[name])
    if name in resolved:
        return resolved[name]
    return next(o.default for o in options(cls) if o.name == name)


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


def from_sources(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The service's settings from `serve`'s flags and the environment."""
    environ = os.environ if environ is None else environ
    values = resolve(Settings, args, environ)
    values["tokens"] = {
        role: parse_tokens(environ.get(variable, ""), role)
        for role, variable in TOKEN_VARIABLES.items()
    }
    return Settings(**values)


def client_from_sources(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> ClientSettings:
    """The operator commands' settings from their flags and the environment."""
    return ClientSettings(**resolve(ClientSettings, args, environ))


# --- the docs --------------------------------------------------------------------------------

DOC_BLOCKS = {"serve": Settings, "client": ClientSettings}
_BEGIN = (
    "<!-- settings:{} generated from sidecar/settings.py by "
    "`python -m sidecar.settings --update docs/configuration.md` -->"
)
_END = "<!-- settings:{} end -->"


def markdown(cls: type = Settings) -> str:
    """The table of docs/configuration.md for `cls`, generated from the definition."""
    lines = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for option in options(cls):
        flag = f"`{option.flag}`"
        if option.switch:
            flag = f"`{option.flag}`, `--no-{option.flag[2:]}`"
        shown = option.shown_default
        plain = shown in ("unset", "empty") or "`" in shown or " " in shown
        default = shown if plain else f"`{shown}`"
        meaning = option.help
        if option.choices:
            meaning += ": " + ", ".join(f"`{c}`" for c in option.choices)
        lines.append(f"| {flag} | `{option.env}` | {default} | {meaning} |")
    if cls is Settings:
        for role, variable in TOKEN_VARIABLES.items():
            lines.append(f"| | `{variable}` | none | {TOKEN_HELP[role]} |")
    return "\n".join(lines) + "\n"


def update_doc(text: str) -> str:
    """`text` with each generated block replaced by the current tables."""
    for key, cls in DOC_BLOCKS.items():
        begin, end = _BEGIN.format(key), _END.format(key)
        if begin not in text or end not in text:
            raise ValueError(f"the doc has no block {begin!r} ... {end!r}")
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = f"{head}{begin}\n{markdown(cls)}{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar.settings", description="the settings tables of the docs"
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", choices=list(DOC_BLOCKS), nargs="?", const="serve")
    group.add_argument("--update", metavar="DOC", help="rewrite the generated blocks of DOC")
    args = parser.parse_args(argv)
    if args.update:
        path = Path(args.update)
        path.write_text(update_doc(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stdout.write(markdown(DOC_BLOCKS[args.markdown]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
