"""Load and validate policies.yaml into a frozen `Policy`.

Every problem is collected (not only the first) and names the YAML path and line, like
`retry.policies.TRANSIENT_DATABASE.max_delay: line 41: expected a duration like 30s, got
"soon"`. Unknown keys are errors, with a "did you mean" when one is close.
"""

from __future__ import annotations

import difflib
import errno as errno_names
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from . import model as m
from . import regex, yamlpaths
from .cron import CronError, check_cron
from .nodes import Invalid, Node, PolicyError, Problem, each, optional

MAX_POLICY_BYTES = 1024 * 1024


# --- the sections ------------------------------------------------------------------------


class _PolicyReader:
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def read(self, root: Node) -> m.Policy:
        top = root.fields(
            required={"failure_types", "remediations", "taxonomy", "retry", "priority"},
            optional={
                "version",
                "breakers",
                "adaptive",
                "load",
                "off_peak",
                "idempotency",
                "schedules",
                "poison",
                "dlq",
            },
        )
        if "version" in top:
            optional(top, "version", lambda n: n.choice([1], "version"), 1)
        remediations = self.remediations(top["remediations"]) if "remediations" in top else {}
        failure_types = (
            self.failure_types(top["failure_types"], remediations) if "failure_types" in top else {}
        )
        refs = _Refs(failure_types, remediations)
        rules, fallback = self.taxonomy(top.get("taxonomy"), refs)
        priority = self.priority(top["priority"]) if "priority" in top else _default_priority()
        breaker_defaults, dependencies = self.breakers(top.get("breakers"))
        retry = self.retry(top.get("retry"), refs, breaker_defaults)
        adaptive = self.adaptive(top.get("adaptive"))
        load = self.load(top.get("load"))
        off_peak = self.off_peak(top.get("off_peak"), priority)
        idempotency = self.idempotency(top.get("idempotency"))
        schedules = self.schedules(top.get("schedules"))
        poison = self.poison(top.get("poison"))
        dlq_explorer = self.dlq(top.get("dlq"))
        if self.problems:
            raise Invalid
        return m.Policy(
            failure_types=failure_types,
            remediations=remediations,
            rules=rules,
            fallback=fallback,
            retry_default=retry[0],
            retry_policies=retry[1],
            retry_overrides=retry[2],
            retry_after_cap=retry[3],
            dependencies=dependencies,
            adaptive=adaptive,
            load=load,
            off_peak=off_peak,
            priority=priority,
            idempotency=idempotency,
            schedules=schedules,
            poison=poison,
            dlq_explorer=dlq_explorer,
        )

    def remediations(self, node: Node) -> dict[str, str]:
        out = {}
        for name, item in each(node.mapping()):
            _check_name(item, name)
            out[name] = optional({"d": item}, "d", Node.str, "")
        return out

    def failure_types(self, node: Node, remediations: dict[str, str]) -> dict[str, m.FailureType]:
        out = {}
        for name, item in each(node.mapping()):
            _check_name(item, name)
            try:
                f = item.fields({"category", "remediation"}, {"urgency", "description"})
            except Invalid:
                continue
            category = optional(
                f, "category", lambda n: n.choice([c.value for c in m.Category]), None
            )
            remediation = optional(f, "remediation", refs_remediation(remediations), None)
            if category is None or remediation is None:
                continue
            out[name] = m.FailureType(
                name=name,
                category=m.Category(category),
                remediation=remediation,
                urgency=optional(f, "urgency", lambda n: n.number(-10, 10), 0.0),
                description=optional(f, "description", Node.str, ""),
            )
        return out

    def taxonomy(self, node: Node | None, refs: _Refs) -> tuple[tuple[m.Rule, ...], m.Fallback]:
        fallback = m.Fallback("PERMANENT_LOGIC", 0.3, "INVESTIGATE")
        if node is None:
            return (), fallback
        try:
            f = node.fields({"rules"}, {"fallback"})
        except Invalid:
            return (), fallback
        if "fallback" in f:
            try:
                fb = f["fallback"].fields({"failure_type"}, {"confidence", "remediation"})
                fallback = m.Fallback(
                    failure_type=refs.failure_type(fb["failure_type"]),
                    confidence=optional(fb, "confidence", lambda n: n.number(0, 1), 0.3),
                    remediation=optional(fb, "remediation", refs.remediation, "INVESTIGATE"),
                )
            except (Invalid, KeyError):
                pass
        rules: list[m.Rule] = []
        names: set[str] = set()
        for order, item in each(optional(f, "rules", Node.sequence, [])):
            try:
                rule = self.rule(item, refs, order)
            except (Invalid, KeyError):
                continue
            if rule.name in names:
                item.fail(f"duplicate rule name '{rule.name}'")
            names.add(rule.name)
            rules.append(rule)
        return tuple(rules), fallback

    def rule(self, node: Node, refs: _Refs, order: int) -> m.Rule:
        f = node.fields({"name", "failure_type", "match"}, {"confidence", "remediation"})
        match = f["match"]
        c = match.fields(
            set(),
            {
                "exception",
                "message",
                "errno",
                "http_status",
                "code",
                "sqlstate",
                "language",
                "task",
            },
        )
        if not c:
            raise match.fail("a rule needs at least one condition")
        return m.Rule(
            name=f["name"].str(),
            failure_type=refs.failure_type(f["failure_type"]),
            confidence=optional(f, "confidence", lambda n: n.number(0, 1), 0.5),
            remediation=optional(f, "remediation", refs.remediation, None),
            order=order,
            match=m.Match(
                exception=tuple(optional(c, "exception", _globs, ())),
                message=optional(c, "message", _regex, None),
                errno=frozenset(optional(c, "errno", _errnos, ())),
                http_status=tuple(optional(c, "http_status", _statuses, ())),
                # `sqlstate` is the older name of `code`: both lists are globs on the code.
                code=(*optional(c, "code", _globs, ()), *optional(c, "sqlstate", _globs, ())),
                language=frozenset(s.lower() for s in optional(c, "language", _globs, ())),
                task=tuple(optional(c, "task", _globs, ())),
            ),
        )

    def breakers(self, node: Node | None) -> tuple[dict[str, Any], tuple[m.Dependency, ...]]:
        defaults: dict[str, Any] = {"window": 300.0, "min_calls": 20, "half_open_probes": 1}
        if node is None:
            return defaults, ()
        try:
            f = node.fields(set(), {"window", "min_calls", "half_open_probes", "dependencies"})
        except Invalid:
            return defaults, ()
        defaults = {
            "window": optional(f, "window", _positive_duration, 300.0),
            "min_calls": optional(f, "min_calls", lambda n: n.int(1), 20),
            "half_open_probes": optional(f, "half_open_probes", lambda n: n.int(1, 1000), 1),
        }
        dependencies = []
        for _, item in each(optional(f, "dependencies", Node.sequence, [])):
            try:
                d = item.fields({"task", "name"}, set())
                dependencies.append(m.Dependency(task=d["task"].str(), name=d["name"].str()))
            except (Invalid, KeyError):
                continue
        return defaults, tuple(dependencies)

    def retry(
        self, node: Node | None, refs: _Refs, breaker_defaults: dict[str, Any]
    ) -> tuple[m.RetryPolicy, dict[str, m.RetryPolicy], tuple[m.RetryOverride, ...], float]:
        base = m.RetryPolicy(3, 60.0, m.Backoff.EXPONENTIAL, 2.0, 1800.0, m.Jitter.FULL)
        if node is None:
            return base, {}, (), 21600.0
        try:
            f = node.fields({"default"}, {"policies", "overrides", "retry_after_cap"})
        except Invalid:
            return base, {}, (), 21600.0
        cap = optional(f, "retry_after_cap", Node.duration, 21600.0)
        if "default" in f:
            base = self.retry_policy(f["default"], base, breaker_defaults)
        policies = {}
        for name, item in each(optional(f, "policies", Node.mapping, {})):
            try:
                refs.failure_type(item, name)
                policies[name] = self.retry_policy(item, base, breaker_defaults)
            except Invalid:
                continue
        overrides = []
        for _, item in each(optional(f, "overrides", Node.sequence, [])):
            try:
                o = item.mapping()
                task = o.pop("task", None)
                if task is None:
                    raise item.fail("missing required key 'task'")
                pattern = o.pop("failure_type", None)
                failure_type = pattern.str() if pattern else "*"
                if pattern and not any(fnmatchcase(t, failure_type) for t in refs.failure_types):
                    pattern.fail(f"'{failure_type}' matches no failure type")
                changes = self.retry_changes(item, o, breaker_defaults)
                overrides.append(m.RetryOverride(task.str(), failure_type, changes))
            except Invalid:
                continue
        return base, policies, tuple(overrides), cap

    _RETRY_KEYS = (
        "max_retries",
        "initial_delay",
        "backoff",
        "multiplier",
        "max_delay",
        "jitter",
        "when_exhausted",
        "breaker",
    )

    def retry_changes(
        self, node: Node, fields: dict[str, Node], breaker_defaults: dict[str, Any]
    ) -> dict[str, Any]:
        readers: dict[str, Callable[[Node], Any]] = {
            "max_retries": lambda n: n.int(0, 100),
            "initial_delay": Node.duration,
            "backoff": lambda n: m.Backoff(n.choice([b.value for b in m.Backoff])),
            "multiplier": lambda n: n.number(1, 100),
            "max_delay": Node.duration,
            "jitter": lambda n: m.Jitter(n.choice([j.value for j in m.Jitter])),
            "when_exhausted": lambda n: m.Exhausted(n.choice([e.value for e in m.Exhausted])),
            "breaker": lambda n: self.breaker(n, breaker_defaults),
        }
        changes = {}
        for key, value in fields.items():
            if key not in readers:
                close = difflib.get_close_matches(key, self._RETRY_KEYS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                value.fail(f"unknown key '{key}'{hint}")
                continue
            try:
                changes[key] = readers[key](value)
            except Invalid:
                continue
        return changes

    def retry_policy(
        self, node: Node, base: m.RetryPolicy, breaker_defaults: dict[str, Any]
    ) -> m.RetryPolicy:
        changes = self.retry_changes(node, node.mapping(), breaker_defaults)
        policy = replace(base, **{"breaker": None, **changes})  # breakers are not inherited
        if policy.max_delay < policy.initial_delay:
            node.fail(
                f"max_delay ({policy.max_delay:g}s) is shorter than initial_delay "
                f"({policy.initial_delay:g}s)"
            )
        return policy

    def breaker(self, node: Node, defaults: dict[str, Any]) -> m.BreakerSettings:
        f = node.fields(
            {"failures", "open_for"},
            {"window", "failure_rate", "min_calls", "half_open_probes"},
        )
        if "failures" not in f or "open_for" not in f:
            raise Invalid
        return m.BreakerSettings(
            failures=f["failures"].int(1, 1_000_000),
            open_for=_positive_duration(f["open_for"]),
            window=optional(f, "window", _positive_duration, defaults.get("window", 300.0)),
            failure_rate=optional(f, "failure_rate", lambda n: n.number(0.01, 1), None),
            min_calls=optional(f, "min_calls", lambda n: n.int(1), defaults.get("min_calls", 20)),
            half_open_probes=optional(
                f, "half_open_probes", lambda n: n.int(1, 1000), defaults.get("half_open_probes", 1)
            ),
        )

    def adaptive(self, node: Node | None) -> m.Adaptive:
        default = m.Adaptive(True, 3600.0, 10, 0.8, 0.7, 0.3, 1.5, -1)
        if node is None:
            return default
        try:
            f = node.fields(set(), {"enabled", "window", "min_samples", "faster", "slower"})
            fast = optional(f, "faster", lambda n: n.fields({"above", "delay_factor"}, set()), {})
            slow = optional(
                f, "slower", lambda n: n.fields({"below", "delay_factor"}, {"retries"}), {}
            )
        except Invalid:
            return default
        return m.Adaptive(
            enabled=optional(f, "enabled", Node.bool, True),
            window=optional(f, "window", _positive_duration, 3600.0),
            min_samples=optional(f, "min_samples", lambda n: n.int(1), 10),
            fast_above=optional(fast, "above", lambda n: n.number(0, 1), 0.8),
            fast_delay_factor=optional(fast, "delay_factor", lambda n: n.number(0.01, 1), 0.7),
            slow_below=optional(slow, "below", lambda n: n.number(0, 1), 0.3),
            slow_delay_factor=optional(slow, "delay_factor", lambda n: n.number(1, 100), 1.5),
            slow_retry_delta=optional(slow, "retries", lambda n: n.int(-100, 0), -1),
        )

    def load(self, node: Node | None) -> m.Load:
        if node is None:
            return m.Load(100, 1.3)
        try:
            f = node.fields(set(), {"queue_depth_threshold", "delay_factor"})
        except Invalid:
            return m.Load(100, 1.3)
        return m.Load(
            queue_depth_threshold=optional(f, "queue_depth_threshold", lambda n: n.int(0), 100),
            delay_factor=optional(f, "delay_factor", lambda n: n.number(1, 100), 1.3),
        )

    def off_peak(self, node: Node | None, priority: m.Priority) -> m.OffPeak:
        default = m.OffPeak(False, 22 * 60, 6 * 60, "UTC", frozenset())
        if node is None:
            return default
        try:
            f = node.fields(set(), {"enabled", "start", "end", "timezone", "priorities"})
        except Invalid:
            return default
        levels = [level.name for level in priority.levels]
        return m.OffPeak(
            enabled=optional(f, "enabled", Node.bool, True),
            start_minute=optional(f, "start", _clock, 22 * 60),
            end_minute=optional(f, "end", _clock, 6 * 60),
            timezone=optional(f, "timezone", _timezone, "UTC"),
            priorities=frozenset(
                optional(
                    f,
                    "priorities",
                    lambda n: [i.choice(levels, "a priority level from") for i in n.items()],
                    [],
                )
            ),
        )

    def priority(self, node: Node) -> m.Priority:
        f = node.fields(
            {"levels"},
            {
                "default_level",
                "tasks",
                "tier_sla",
                "sla_breach_boost",
                "aging",
                "retry_escalation",
                "safety_critical_level",
                "route_retries",
            },
        )
        levels = []
        for name, item in each(optional(f, "levels", Node.mapping, {})):
            try:
                level = item.fields({"value", "queue"}, set())
                levels.append(m.Level(name, level["value"].int(0, 1000), level["queue"].str()))
            except (Invalid, KeyError):
                continue
        if not levels:
            raise node.fail("priority.levels needs at least one level")
        levels.sort(key=lambda level: -level.value)
        if len({level.value for level in levels}) != len(levels):
            f["levels"].fail("two levels have the same value")
        names = [level.name for level in levels]

        def level_name(n: Node) -> str:
            return n.choice(names, "a priority level from")

        tasks = []
        for _, item in each(optional(f, "tasks", Node.sequence, [])):
            try:
                t = item.fields({"task", "level"}, set())
                tasks.append(m.TaskPriority(t["task"].str(), level_name(t["level"])))
            except (Invalid, KeyError):
                continue
        aging = []
        for _, item in each(optional(f, "aging", Node.sequence, [])):
            try:
                a = item.fields({"after", "boost"}, set())
                aging.append(m.Aging(a["after"].duration(), a["boost"].number(0, 100)))
            except (Invalid, KeyError):
                continue
        escalation = optional(
            f, "retry_escalation", lambda n: n.fields({"after", "boost"}, set()), {}
        )
        return m.Priority(
            levels=tuple(levels),
            default_level=optional(f, "default_level", level_name, names[len(names) // 2]),
            tasks=tuple(tasks),
            tier_sla={
                tier: sla
                for tier, item in each(optional(f, "tier_sla", Node.mapping, {}))
                if (sla := optional({"t": item}, "t", _positive_duration, None)) is not None
            },
            sla_breach_boost=optional(f, "sla_breach_boost", lambda n: n.number(0, 100), 1.0),
            aging=tuple(sorted(aging, key=lambda a: a.after)),
            retry_escalation_after=optional(escalation, "after", lambda n: n.int(1), 5),
            retry_escalation_boost=optional(escalation, "boost", lambda n: n.number(0, 100), 1.0),
            safety_critical_level=optional(f, "safety_critical_level", level_name, names[0]),
            route_retries=optional(f, "route_retries", Node.bool, False),
        )

    def idempotency(self, node: Node | None) -> m.Idempotency:
        scopes = ["global", "user", "device", "task"]
        default = m.Idempotency("global", dict.fromkeys(scopes, 86400.0))
        if node is None:
            return default
        try:
            f = node.fields(set(), {"default_scope", "ttl"})
            ttl = optional(f, "ttl", lambda n: n.fields(set(), set(scopes)), {})
        except Invalid:
            return default
        return m.Idempotency(
            default_scope=optional(f, "default_scope", lambda n: n.choice(scopes), "global"),
            ttl={scope: optional(ttl, scope, _positive_duration, 86400.0) for scope in scopes},
        )

    def poison(self, node: Node | None) -> m.Poison:
        try:
            f = node.fields(set(), {"max_lost_runs", "window"}) if node is not None else {}
        except Invalid:
            return m.Poison()
        return m.Poison(
            max_lost_runs=optional(f, "max_lost_runs", lambda n: n.int(0, 1000), 2),
            window=optional(f, "window", _positive_duration, 86400.0),
        )

    def dlq(self, node: Node | None) -> m.DlqExplorer:
        default = m.DlqExplorer()
        try:
            f = node.fields(set(), {"explorer"}) if node is not None else {}
            e = (
                f["explorer"].fields(set(), {"redact_kwargs", "show_args"})
                if "explorer" in f
                else {}
            )
        except Invalid:
            return default
        return m.DlqExplorer(
            redact_kwargs=optional(e, "redact_kwargs", _kwargs_keys, default.redact_kwargs),
            show_args=optional(e, "show_args", Node.bool, default.show_args),
        )

    def schedules(self, node: Node | None) -> tuple[m.Schedule, ...]:
        if node is None:
            return ()
        out = []
        for _, item in each(optional({"s": node}, "s", Node.sequence, [])):
            try:
                s = item.fields({"name", "cron"}, {"queue", "expected_duration", "timezone"})
                cron = s["cron"].str()
                try:
                    check_cron(cron)  # evaluated by cronsim; the error names the field
                except CronError as exc:
                    name = optional(s, "name", Node.str, None)
                    message = f"schedule {name!r}: {exc}" if name else str(exc)
                    raise s["cron"].fail(message) from None
                out.append(
                    m.Schedule(
                        name=s["name"].str(),
                        cron=cron,
                        queue=optional(s, "queue", Node.str, None),
                        expected_duration=optional(s, "expected_duration", Node.duration, None),
                        timezone=optional(s, "timezone", _timezone, None),
                    )
                )
            except (Invalid, KeyError):
                continue
        return tuple(out)


@dataclass(frozen=True, slots=True)
class _Refs:
    """Names other sections may refer to."""

    failure_types: dict[str, m.FailureType]
    remediations: dict[str, str]

    def failure_type(self, node: Node, name: str | None = None) -> str:
        if name is not None:
            if name not in self.failure_types:
                close = difflib.get_close_matches(name, list(self.failure_types), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise node.fail(f"unknown failure type '{name}'{hint}")
            return name
        return node.choice(self.failure_types, "a failure type from")

    def remediation(self, node: Node) -> str:
        return refs_remediation(self.remediations)(node)


_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def refs_remediation(remediations: dict[str, str]) -> Callable[[Node], str]:
    return lambda node: node.choice(remediations, "a remediation from")


def _check_name(node: Node, name: str) -> None:
    if not _NAME.fullmatch(name):
        node.fail(f"names are UPPER_SNAKE_CASE, got '{name}'")


def _kwargs_keys(node: Node) -> tuple[str, ...]:
    """Keys to redact: lower-cased (the views match them regardless of case), each once."""
    keys: dict[str, Node] = {}
    for item in node.sequence():
        try:
            key = item.str().lower()
        except Invalid:
            continue
        if key in keys:
            item.fail(f"'{key}' is listed twice (keys match regardless of case)")
        keys[key] = item
    return tuple(keys)


def _globs(node: Node) -> list[str]:
    return [item.str() for item in node.items()]


def _regex(node: Node) -> str:
    pattern = node.str()
    try:
        regex.check(pattern)
    except ValueError as exc:
        raise node.fail(str(exc)) from None
    return pattern


def _errnos(node: Node) -> list[int]:
    out = []
    for item in node.items():
        value = item.scalar()
        if isinstance(value, str) and isinstance(getattr(errno_names, value, None), int):
            out.append(getattr(errno_names, value))
        elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out.append(value)
        else:
            item.fail(f"expected an errno number or name such as ENOSPC, got {value!r}")
    return out


_RANGE = re.compile(r"(\d{3})\s*-\s*(\d{3})")


def _statuses(node: Node) -> list[m.StatusRange]:
    out = []
    for item in node.items():
        value = item.scalar()
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            out.append(m.StatusRange(value, value))
        elif isinstance(value, str) and (found := _RANGE.fullmatch(value.strip())):
            low, high = int(found[1]), int(found[2])
            if not 100 <= low <= high <= 599:
                item.fail(f"expected a range within 100-599, got {value!r}")
            out.append(m.StatusRange(low, high))
        else:
            item.fail(f'expected an HTTP status (404) or range ("500-599"), got {value!r}')
    return out


def _positive_duration(node: Node) -> float:
    seconds = node.duration()
    if seconds <= 0:
        raise node.fail("expected a duration above zero")
    return seconds


_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _clock(node: Node) -> int:
    value = node.scalar()
    # YAML 1.1 reads 22:00 unquoted as a sexagesimal number; accept it as minutes.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return value
    if isinstance(value, str) and (found := _CLOCK.fullmatch(value.strip())):
        return int(found[1]) * 60 + int(found[2])
    raise node.fail(f'expected a time of day like "22:00", got {value!r}')


def _timezone(node: Node) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = node.str()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise node.fail(f"unknown time zone {name!r}") from None
    return name


def _default_priority() -> m.Priority:
    return m.Priority(
        levels=(m.Level("MEDIUM", 6, "default"),), default_level="MEDIUM", tasks=(), tier_sla={}
    )


# --- entry points -------------------------------------------------------------------------


def _compose(text: str, source: str) -> yaml.Node:
    try:
        root = yamlpaths.compose(text)
    except yamlpaths.YamlError as exc:
        raise PolicyError([Problem("", exc.line, exc.message)], source) from None
    if root is None:
        raise PolicyError([Problem("", None, "the file is empty")], source)
    return root


def parse_policy(text: str, source: str = "policies") -> m.Policy:
    """Validate policy text; raises PolicyError listing every problem."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError([Problem("", None, f"larger than {MAX_POLICY_BYTES} bytes")], source)
    problems: list[Problem] = []
    root = Node(_compose(text, source), "", problems)
    try:
        policy = _PolicyReader(problems).read(root)
    except Invalid:
        raise PolicyError(problems, source) from None
    if problems:
        raise PolicyError(problems, source)
    return policy


def load_policy(path: str | Path) -> m.Policy:
    """Read and validate a policy file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(
                [Problem("", None, f"larger than {MAX_POLICY_BYTES} bytes")], str(path)
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([Problem("", None, f"cannot read the file: {exc}")], str(path)) from None
    return parse_policy(text, str(path))
