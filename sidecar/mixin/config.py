"""The mixin's configuration: defaults, a user's partial file merged over them, strict checks.

A user's file (or the Helm chart's `monitoring.mixin` values) holds only what it changes:
mappings merge key by key over `defaults.yaml`, everything else replaces. The result is a
plain mapping of the same shape as the defaults, which the renderer fills into the rule
and dashboard skeletons. `SPEC` describes every key once: the checks below and the JSON
schema the chart's values.schema.json carries are both made from it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
DURATION = r"^([0-9]+[smhdw])+$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
FAILURE_TYPE = r"^[A-Z][A-Z0-9_]*$"
# Labels the rules set themselves; rule_labels may not replace them.
OWN_RULE_LABELS = ("severity", "long", "short", "slo")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(ValueError):
    """The config has a value we cannot use; the message names its path."""


def seconds(duration: str) -> int:
    """Seconds of a duration the config accepts (`1h30m` -> 5400)."""
    return sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)([smhdw])", duration))


@dataclass(frozen=True)
class Key:
    """One key of the config: its kind, a description, and the kind's details."""

    # str, regex, url, duration, number, ratio, bool, label, names, labels, selectors, map, pairs
    kind: str
    doc: str
    empty: bool = False  # a string that may be empty
    pattern: str | None = None  # names: the pattern of each item
    keys: Mapping[str, Key] = field(default_factory=dict)  # map: the sub-keys


def _pair(doc: str) -> Key:
    return Key(
        "pairs",
        doc,
        keys={
            "long": Key("duration", "The long window."),
            "short": Key("duration", "The short window."),
            "burn_rate": Key("number", "How many times the budget's rate both windows exceed."),
            "for": Key("duration", "How long before the alert fires."),
        },
    )


def _for(doc: str) -> Key:
    return Key("map", doc, keys={"for": Key("duration", "How long before the alert fires.")})


ALERT_NAMES = (
    "TaskSidecarDLQDepthHigh",
    "TaskSidecarBreakerOpen",
    "TaskSidecarSystemFailure",
    "TaskSidecarLostRuns",
    "TaskSidecarQueueStalled",
    "TaskSidecarTaskSuccessRateLow",
    "TaskSidecarDuplicateRateHigh",
    "TaskSidecarDLQRecovered",
    "TaskSidecarBreakerRecovered",
    "TaskSidecarCostSavingsMilestone",
    "TaskSidecarSpoolWriteFailed",
    "TaskSidecarNotScraped",
    "TaskSidecarErrorBudgetBurn",
)

SPEC = Key(
    "map",
    "task-sidecar's monitoring mixin (sidecar/mixin/defaults.yaml documents every key).",
    keys={
        "cluster_label": Key("label", "The label that tells clusters apart."),
        "selectors": Key(
            "selectors",
            "Regular expressions, per label, that every series the mixin reads must match "
            "(empty: any value).",
        ),
        "links": Key(
            "map",
            "Where alert annotations and dashboard links point.",
            keys={
                "runbook_base_url": Key("url", "Base URL of the runbook pages."),
                "grafana_url": Key("url", "Grafana's URL, for each alert's dashboard_url."),
                "sidecar_url": Key("url", "The sidecar's action API, for dashboard links."),
            },
        ),
        "rule_labels": Key("labels", "Labels added to every alert."),
        "alerts": Key(
            "map",
            "Per-alert switches: false leaves the alert out.",
            keys={name: Key("bool", f"Ship {name}.") for name in ALERT_NAMES},
        ),
        "critical_tasks": Key("regex", "Tasks (or dependencies) whose open breaker pages."),
        "system_failure_types": Key(
            "names", "Failure types that page on the first occurrence.", pattern=FAILURE_TYPE
        ),
        "dlq": Key(
            "map",
            "Dead-letter queue backlog (pending + retrying).",
            keys={
                "warning": Key("number", "Warn above this many open records."),
                "critical": Key("number", "Page above this many open records."),
                "for": Key("duration", "How long before the alert fires."),
                "oldest_pending_warning": Key("number", "Dashboard: orange above (seconds)."),
                "oldest_pending_critical": Key("number", "Dashboard: red above (seconds)."),
            },
        ),
        "queue_stalled": Key(
            "map",
            "A broker queue that holds tasks and never shrinks (no worker reads it).",
            keys={
                "seconds": Key("number", "Warn when a queue has not shrunk for this long."),
                "for": Key("duration", "How long before the alert fires."),
            },
        ),
        "success_rate": Key(
            "map",
            "Task success rate per task over 5 minutes.",
            keys={
                "warning_below": Key("ratio", "Warn below this ratio."),
                "min_executions": Key("number", "Runs in 5 minutes before a task is judged."),
                "for": Key("duration", "How long before the alert fires."),
            },
        ),
        "duplicate_rate": Key(
            "map",
            "Idempotency duplicate rate over 5 minutes.",
            keys={
                "warning_above": Key("ratio", "Warn above this ratio."),
                "target": Key("ratio", "Dashboard: the target, shown as a threshold."),
                "min_claims": Key("number", "Claims in 5 minutes before the rate is judged."),
                "for": Key("duration", "How long before the alert fires."),
            },
        ),
        "breaker_open": _for("An open breaker."),
        "system_failures": _for("OOM and disk-full failures."),
        "recovered": Key(
            "map",
            "Info notifications of recoveries.",
            keys={"window": Key("duration", "How long a recovery is reported.")},
        ),
        "cost_savings": Key(
            "map",
            "The info notification of retries moved off-peak (the seed's cost savings).",
            keys={
                "milestone": Key("number", "Notify each time the count passes a multiple."),
                "window": Key("duration", "Over how long deferrals are counted."),
                "notify_for": Key("duration", "How long a milestone is reported."),
            },
        ),
        "not_scraped": Key(
            "map",
            "Sidecars no longer scraped.",
            keys={
                "for": Key("duration", "How long before the alert fires."),
                "lookback": Key("duration", "How far back a namespace counts as having had one."),
            },
        ),
        "slo": Key(
            "map",
            "Task success SLO and its burn-rate alerts.",
            keys={
                "objective": Key("ratio", "The objective: successful runs / all runs."),
                "page": _pair("Window pairs that page (severity critical)."),
                "ticket": _pair("Window pairs that open a ticket (severity warning)."),
            },
        ),
        "panels": Key(
            "map",
            "Dashboard-only thresholds.",
            keys={
                "queue_depth_high": Key("number", "Queue depth shown orange above."),
                "claim_latency_warning": Key("number", "Claim latency (s) shown orange above."),
                "claim_latency_critical": Key("number", "Claim latency (s) shown red above."),
                "schedule_health_warning": Key("number", "Schedule score shown orange below."),
                "schedule_health_critical": Key("number", "Schedule score shown red below."),
            },
        ),
    },
)


# --- loading ---------------------------------------------------------------------------------


def defaults() -> dict[str, Any]:
    with open(DEFAULTS_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces (as Helm
    merges a user's values over a chart's)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The defaults, with the file at `path` (if any) merged over them, checked."""
    override: Any = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            override = yaml.safe_load(f)
        if override is None:
            override = {}
    if not isinstance(override, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(override).__name__}")
    return check(merge(defaults(), override))


def check(config: dict[str, Any]) -> dict[str, Any]:
    """The config with numbers as floats, or a ConfigError naming the first bad key."""
    out = _value(SPEC, config, "")
    if not out["dlq"]["warning"] < out["dlq"]["critical"]:
        raise ConfigError("dlq: `warning` must be below `critical`")
    for tier in ("page", "ticket"):
        if not out["slo"][tier]:
            raise ConfigError(f"slo.{tier}: needs at least one window pair")
    return out


def _value(key: Key, value: Any, where: str) -> Any:
    name = where or "config"
    if key.kind == "map":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - set(key.keys))
        if unknown:
            raise ConfigError(f"{_join(where, unknown[0])}: unknown key")
        missing = sorted(set(key.keys) - set(value))
        if missing:
            raise ConfigError(f"{_join(where, missing[0])}: missing")
        return {k: _value(sub, value[k], _join(where, k)) for k, sub in key.keys.items()}
    if key.kind == "pairs":
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list")
        item = Key("map", key.doc, keys=key.keys)
        return [_value(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if key.kind in ("labels", "selectors"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of label names to strings")
        out = {}
        for label, text in value.items():
            if not isinstance(label, str) or not re.match(LABEL_NAME, label):
                raise ConfigError(f"{name}: {label!r} is not a label name")
            if key.kind == "labels" and label in OWN_RULE_LABELS:
                raise ConfigError(f"{name}.{label}: set by the rules themselves")
            each = Key("regex", "", empty=True) if key.kind == "selectors" else Key("str", "")
            out[label] = _scalar(each, text, f"{name}.{label}")
        return out
    if key.kind == "names":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{name}: expected a non-empty list")
        for item in value:
            if not isinstance(item, str) or not re.match(key.pattern or "", item):
                raise ConfigError(f"{name}: {item!r} is not a failure type name")
        return list(value)
    return _scalar(key, value, name)


def _scalar(key: Key, value: Any, name: str) -> Any:
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if key.kind in ("number", "ratio"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{name}: expected a number >= 0, got {value!r}")
        if key.kind == "ratio" and not 0 < value < 1:
            raise ConfigError(f"{name}: expected a ratio between 0 and 1, got {value!r}")
        return float(value)
    if not isinstance(value, str) or (not value and not key.empty):
        raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
    if key.kind == "duration" and not re.match(DURATION, value):
        raise ConfigError(f"{name}: expected a duration like 5m, got {value!r}")
    if key.kind == "label" and not re.match(LABEL_NAME, value):
        raise ConfigError(f"{name}: {value!r} is not a label name")
    if key.kind == "url" and not re.match(r"^https?://\S+$", value):
        raise ConfigError(f"{name}: expected an http(s) URL, got {value!r}")
    if key.kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{name}: not a regular expression: {exc}") from None
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- the JSON schema of the same keys (for the Helm chart's values.schema.json) ------------------


def json_schema(key: Key = SPEC) -> dict[str, Any]:
    """The schema Helm checks `monitoring.mixin` against: the same keys and kinds as SPEC
    (the checks across keys, such as warning below critical, are the chart's own)."""
    node: dict[str, Any] = {"description": key.doc}
    if key.kind == "map":
        node |= {
            "type": "object",
            "additionalProperties": False,
            "required": sorted(key.keys),
            "properties": {k: json_schema(sub) for k, sub in key.keys.items()},
        }
    elif key.kind == "pairs":
        item = json_schema(Key("map", "A window pair.", keys=key.keys))
        node |= {"type": "array", "minItems": 1, "items": item}
    elif key.kind in ("labels", "selectors"):
        own = {"not": {"enum": list(OWN_RULE_LABELS)}} if key.kind == "labels" else {}
        node |= {
            "type": "object",
            "propertyNames": {"pattern": LABEL_NAME, **own},
            "additionalProperties": {"type": "string"},
        }
    elif key.kind == "names":
        node |= {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": key.pattern},
        }
    elif key.kind == "bool":
        node["type"] = "boolean"
    elif key.kind == "number":
        node |= {"type": "number", "minimum": 0}
    elif key.kind == "ratio":
        node |= {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    else:
        node["type"] = "string"
        pattern = {"duration": DURATION, "label": LABEL_NAME, "url": r"^https?://\S+$"}
        if key.kind in pattern:
            node["pattern"] = pattern[key.kind]
        elif not key.empty:
            node["minLength"] = 1
    return node
