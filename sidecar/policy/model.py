"""The validated policy: frozen, typed values built once by the loader.

Nothing here reads files or clocks; the loader builds these objects and the decision core
only reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import TypeVar

from .classify import Classifier
from .events import Classification, ExceptionInfo

T = TypeVar("T")


class Category(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIG = "config"
    EXTERNAL = "external"
    SYSTEM = "system"


class Backoff(StrEnum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIBONACCI = "fibonacci"
    CONSTANT = "constant"


class Jitter(StrEnum):
    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


class Exhausted(StrEnum):
    """What happens to a failure that may not be retried (any more)."""

    DEAD_LETTER = "dead_letter"
    DISCARD = "discard"


@dataclass(frozen=True, slots=True)
class FailureType:
    name: str
    category: Category
    remediation: str
    urgency: float
    description: str


@dataclass(frozen=True, slots=True)
class StatusRange:
    low: int
    high: int

    def __contains__(self, status: int) -> bool:
        return self.low <= status <= self.high


@dataclass(frozen=True, slots=True)
class Match:
    """Conditions of a taxonomy rule: all given conditions must hold; a list is any-of."""

    exception: tuple[str, ...] = ()  # globs on class names in the MRO (bare or qualified)
    message: str | None = None  # an RE2 pattern (see regex.py)
    errno: frozenset[int] = frozenset()
    http_status: tuple[StatusRange, ...] = ()
    code: tuple[str, ...] = ()  # globs on the error code: "ECONNREFUSED", "40P01", "08???"
    language: frozenset[str] = frozenset()  # lower-case names: "node", "java"
    task: tuple[str, ...] = ()  # globs on the task name


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    failure_type: str
    confidence: float
    match: Match
    remediation: str | None = None  # None: the failure type's default
    order: int = 0  # position in the file; breaks confidence ties


@dataclass(frozen=True, slots=True)
class Fallback:
    failure_type: str
    confidence: float
    remediation: str


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int  # failures within `window` that open the breaker
    open_for: float
    window: float
    failure_rate: float | None = None  # also open when this share of calls fails …
    min_calls: int = 20  # … among at least this many calls in the window
    half_open_probes: int = 1  # runs allowed at once while half-open


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    initial_delay: float
    backoff: Backoff
    multiplier: float
    max_delay: float
    jitter: Jitter
    when_exhausted: Exhausted = Exhausted.DEAD_LETTER
    breaker: BreakerSettings | None = None


@dataclass(frozen=True, slots=True)
class RetryOverride:
    """Per-task changes to the policy of one failure type (or all, with "*")."""

    task: str
    failure_type: str  # glob
    changes: dict[str, object] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Dependency:
    """Tasks matching `task` share breakers named after `name` instead of the task."""

    task: str
    name: str


@dataclass(frozen=True, slots=True)
class Adaptive:
    enabled: bool
    window: float
    min_samples: int
    fast_above: float
    fast_delay_factor: float
    slow_below: float
    slow_delay_factor: float
    slow_retry_delta: int


@dataclass(frozen=True, slots=True)
class Load:
    queue_depth_threshold: int
    delay_factor: float


@dataclass(frozen=True, slots=True)
class OffPeak:
    enabled: bool
    start_minute: int  # minutes after midnight, in `timezone`
    end_minute: int
    timezone: str
    priorities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    value: int
    queue: str


@dataclass(frozen=True, slots=True)
class TaskPriority:
    task: str  # glob
    level: str


@dataclass(frozen=True, slots=True)
class Aging:
    after: float
    boost: float


@dataclass(frozen=True, slots=True)
class Priority:
    levels: tuple[Level, ...]  # highest value first
    default_level: str
    tasks: tuple[TaskPriority, ...]
    tier_sla: dict[str, float] = field(hash=False)
    sla_breach_boost: float = 1.0
    aging: tuple[Aging, ...] = ()  # the largest `after` reached applies
    retry_escalation_after: int = 5
    retry_escalation_boost: float = 1.0
    safety_critical_level: str = "CRITICAL"
    # Retries go to the level's queue only when asked: a worker that does not consume
    # `critical`, `reports`, … would never run them (the safe default keeps the task's queue).
    route_retries: bool = False

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Idempotency:
    default_scope: str
    ttl: dict[str, float] = field(hash=False)  # per scope


@dataclass(frozen=True, slots=True)
class Poison:
    """Runs that start and never end (the worker died under them): after `max_lost_runs`
    such runs the task is dead-lettered and not run again (0 turns it off); `window` is how
    long the sidecar remembers a task id's runs."""

    max_lost_runs: int = 2
    window: float = 86400.0


@dataclass(frozen=True, slots=True)
class DlqExplorer:
    """What the DLQ explorer's PostgreSQL views show (sidecar/store/sql/postgres/0010):
    kwargs keys in `redact_kwargs` (top level, lower-cased, matched regardless of case) read
    "[redacted]"; args, positional and so not maskable by name, read "[hidden]" unless
    `show_args`."""

    redact_kwargs: tuple[str, ...] = (
        "password",
        "secret",
        "token",
        "api_key",
        "authorization",
        "card_number",
        "email",
        "phone",
    )
    show_args: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    cron: str
    queue: str | None = None
    expected_duration: float | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    failure_types: dict[str, FailureType] = field(hash=False)
    remediations: dict[str, str] = field(hash=False)
    rules: tuple[Rule, ...]
    fallback: Fallback
    retry_default: RetryPolicy
    retry_policies: dict[str, RetryPolicy] = field(hash=False)
    retry_overrides: tuple[RetryOverride, ...]
    retry_after_cap: float
    dependencies: tuple[Dependency, ...]
    adaptive: Adaptive
    load: Load
    off_peak: OffPeak
    priority: Priority
    idempotency: Idempotency
    schedules: tuple[Schedule, ...] = ()
    poison: Poison = Poison()
    dlq_explorer: DlqExplorer = DlqExplorer()
    # Compiled once from the fields above; memoised lookups keep the hot path short.
    _classifier: Classifier = field(init=False, repr=False, compare=False)
    _memo: dict[tuple[str, ...], object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_classifier", Classifier(self))
        object.__setattr__(self, "_memo", {})

    def classify(self, exc: ExceptionInfo, task_name: str) -> Classification:
        return self._classifier.classify(exc, task_name)

    def retry_policy(self, task_name: str, failure_type: str) -> RetryPolicy:
        """The failure type's policy with the task's overrides applied in order."""
        return self._memoised(("retry", task_name, failure_type), self._retry_policy)

    def _retry_policy(self, task_name: str, failure_type: str) -> RetryPolicy:
        policy = self.retry_policies.get(failure_type, self.retry_default)
        for override in self.retry_overrides:
            if fnmatchcase(task_name, override.task) and fnmatchcase(
                failure_type, override.failure_type
            ):
                policy = replace(policy, **override.changes)
        return policy

    def route(self, task_name: str, failure_type: str) -> Route:
        """Everything the policy fixes for one (task, failure type)."""
        return self._memoised(("route", task_name, failure_type), self._route)

    def _route(self, task_name: str, failure_type: str) -> Route:
        retry = self.retry_policy(task_name, failure_type)
        return Route(
            retry=retry,
            breaker_key=self.breaker_key(task_name, failure_type) if retry.breaker else None,
            outcomes_key=f"{task_name}:{failure_type}",
            failure_type=self.failure_types[failure_type],
            base_level=self.priority.level(self.base_level(task_name)),
        )

    def breaker_key(self, task_name: str, failure_type: str) -> str:
        """`task:failure_type`, or `dependency:failure_type` for tasks sharing one."""
        owner = self._memoised(("owner", task_name), self._breaker_owner)
        return f"{owner}:{failure_type}"

    def breaker_settings(self, key: str) -> BreakerSettings | None:
        """The settings of the breaker a `breaker_key()` names; None when its failure
        type is unknown or has no breaker (any more)."""
        owner, failure_type = split_breaker_key(key)
        if failure_type not in self.failure_types:
            return None
        return self.retry_policy(owner, failure_type).breaker

    def _breaker_owner(self, task_name: str) -> str:
        for dependency in self.dependencies:
            if fnmatchcase(task_name, dependency.task):
                return dependency.name
        return task_name

    def base_level(self, task_name: str) -> str:
        """The priority level of the first `priority.tasks` glob matching the task."""
        return self._memoised(("level", task_name), self._base_level)

    def _base_level(self, task_name: str) -> str:
        for rule in self.priority.tasks:
            if fnmatchcase(task_name, rule.task):
                return rule.level
        return self.priority.default_level

    def _memoised(self, key: tuple[str, ...], compute: Callable[..., T]) -> T:
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()  # bounded: task names come from clients
            value = self._memo[key] = compute(*key[1:])
            return value


MEMO_SIZE = 8192


@dataclass(frozen=True, slots=True)
class Route:
    retry: RetryPolicy
    breaker_key: str | None  # None: no breaker for this failure type
    outcomes_key: str  # where retry outcomes are counted for adaptive learning
    failure_type: FailureType
    base_level: Level


def split_breaker_key(key: str) -> tuple[str, str]:
    """(owner, failure type) of a `Policy.breaker_key()`: task names may hold colons,
    failure types do not."""
    owner, _, failure_type = key.rpartition(":")
    return owner, failure_type
