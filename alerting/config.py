"""The mixin's one config (alerting/config.yaml): strict loading into frozen values.

Both generators read it, so a threshold changed here moves the alert and the dashboard
panel that shows it together. Unknown keys and wrong types are refused with the key's path.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_PATH = Path(__file__).with_name("config.yaml")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class ConfigError(ValueError):
    """The config has a value we cannot use; the message names its path."""


class Duration(str):
    """A Prometheus duration (`5m`, `1h30m`), checked at load time."""

    @property
    def seconds(self) -> float:
        return sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", self))


@dataclass(frozen=True)
class Links:
    runbook_base_url: str
    grafana_url: str
    sidecar_url: str


@dataclass(frozen=True)
class Dlq:
    warning: float
    critical: float
    for_: Duration
    oldest_pending_warning: float
    oldest_pending_critical: float


@dataclass(frozen=True)
class SuccessRate:
    warning_below: float
    min_executions: float
    for_: Duration


@dataclass(frozen=True)
class DuplicateRate:
    warning_above: float
    target: float
    min_claims: float
    for_: Duration


@dataclass(frozen=True)
class For:
    for_: Duration


@dataclass(frozen=True)
class Window:
    window: Duration


@dataclass(frozen=True)
class BurnWindow:
    long: Duration
    short: Duration
    burn_rate: float
    for_: Duration


@dataclass(frozen=True)
class Slo:
    objective: float
    page: tuple[BurnWindow, ...]
    ticket: tuple[BurnWindow, ...]

    @property
    def windows(self) -> list[Duration]:
        """Every window the burn-rate alerts use, shortest first."""
        found = {w for tier in (self.page, self.ticket) for b in tier for w in (b.long, b.short)}
        return sorted(found, key=lambda d: d.seconds)


@dataclass(frozen=True)
class Panels:
    queue_depth_high: float
    claim_latency_warning: float
    claim_latency_critical: float
    schedule_health_warning: float
    schedule_health_critical: float


@dataclass(frozen=True)
class Config:
    links: Links
    scrape_job_regex: str
    critical_tasks: str
    system_failure_types: tuple[str, ...]
    dlq: Dlq
    success_rate: SuccessRate
    duplicate_rate: DuplicateRate
    breaker_open: For
    system_failures: For
    recovered: Window
    absent: For
    slo: Slo
    panels: Panels


def load_config(path: str | Path = CONFIG_PATH) -> Config:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    config = _build(Config, data, "")
    _check(config)
    return config


def _check(config: Config) -> None:
    if not 0 < config.slo.objective < 1:
        raise ConfigError(
            f"slo.objective: expected a ratio between 0 and 1, got {config.slo.objective}"
        )
    if not config.slo.page or not config.slo.ticket:
        raise ConfigError("slo: both `page` and `ticket` need at least one window pair")
    if config.dlq.warning >= config.dlq.critical:
        raise ConfigError("dlq: `warning` must be below `critical`")
    for name in ("critical_tasks", "scrape_job_regex"):
        try:
            re.compile(getattr(config, name))
        except re.error as exc:
            raise ConfigError(f"{name}: not a regular expression: {exc}") from None
    for name in config.system_failure_types:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise ConfigError(f"system_failure_types: {name!r} is not a failure type name")


def _build(cls: Any, data: Any, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    keys = {f.name.rstrip("_"): f.name for f in fields(cls)}
    unknown = set(data) - set(keys)
    if unknown:
        raise ConfigError(f"{_join(path, sorted(unknown)[0])}: unknown key")
    args = {}
    for key, name in keys.items():
        where = _join(path, key)
        if key not in data:
            raise ConfigError(f"{where}: missing")
        args[name] = _value(hints[name], data[key], where)
    return cls(**args)


def _value(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        item = typing.get_args(kind)[0]
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(kind, type) and issubclass(kind, Duration):
        if not isinstance(value, str) or not _DURATION.match(value):
            raise ConfigError(f"{where}: expected a duration like 5m, got {value!r}")
        return Duration(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if isinstance(kind, type | types.GenericAlias) and hasattr(kind, "__dataclass_fields__"):
        return _build(kind, value, where)
    raise TypeError(f"unsupported config type {kind!r}")  # pragma: no cover


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
