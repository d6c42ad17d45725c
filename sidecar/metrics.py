"""Every Prometheus metric of task-sidecar, defined once, on an injectable registry.

Names, types and labels are a contract (DESIGN §5): dashboards and alert rules are written
against them. Rates are recording rules in alerting/, never gauges computed here.

This is the only module that touches series (labels, inc, set, observe): the rest of the
sidecar reports what happened through the `record_*` and `set_*` methods of `Metrics`, so
each series has one writer and its labels are bounded in one place.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from . import __version__
from .policy.model import split_breaker_key

if TYPE_CHECKING:
    from .policy import Decision
    from .policy.decide import Effects

NAMESPACE = "task_sidecar"
OTHER = "__other__"  # the label of every name past a bound
# The `task` of an idempotency claim that named no task (a client older than `task_name`).
UNNAMED = "__unnamed__"
OWN_QUEUE = "__own__"  # a retry kept on the task's own queue, which the worker did not name
BREAKER_STATES = ("closed", "open", "half_open")

# Retry delays run from seconds to hours; policy defaults sit between 30 s and 2 h.
DELAY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
# Hook handling is sub-millisecond to a few ms; store round trips dominate the tail.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class BoundedLabels:
    """Bounds a label a client chooses (`task`, `queue`): the first `limit` names are kept,
    the rest become `__other__`, so a bad client cannot explode the series count."""

    def __init__(self, limit: int, on_new: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.on_new = on_new
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        if name in self._seen:
            return name
        with self._lock:
            if name in self._seen:
                return name
            label = name if len(self._seen) < self.limit else OTHER
            if label == name:
                self._seen.add(name)
        if label == name and self.on_new is not None:
            self.on_new(name)
        return label


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        task_limit: int = 500,
        queue_limit: int | None = None,  # None: the same as task_limit
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.task = BoundedLabels(task_limit, on_new=self._new_task)
        self.queue = BoundedLabels(task_limit if queue_limit is None else queue_limit)
        r = self.registry
        # What the sidecar says of itself: process_* (memory, CPU, fds), python_info and
        # python_gc_*, as the default registry has them already.
        if r is not REGISTRY:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        counter, gauge, histogram = (
            functools.partial(kind, namespace=NAMESPACE, registry=r)
            for kind in (Counter, Gauge, Histogram)
        )
        self.build_info = gauge("build_info", "1, labelled with the running version.", ["version"])
        self.build_info.labels(__version__).set(1)
        self.task_events = counter(
            "task_events", "Task lifecycle events by outcome.", ["task", "outcome"]
        )
        self.failures = counter(
            "failures",
            "Failures by classified type and remediation.",
            ["task", "failure_type", "remediation"],
        )
        self.retry_delay = histogram(
            "retry_delay_seconds",
            "Delay decided before a retry.",
            ["failure_type"],
            buckets=DELAY_BUCKETS,
        )
        self.retry_outcomes = counter(
            "retry_outcomes",
            "Outcome of runs that were retries.",
            ["task", "failure_type", "result"],
        )
        self.dlq_depth = gauge("dlq_depth", "Dead-lettered tasks by status.", ["status"])
        self.dlq_oldest_pending_age = gauge(
            "dlq_oldest_pending_age_seconds", "Age of the oldest pending DLQ record."
        )
        self.dlq_actions = counter("dlq_actions", "Actions taken on DLQ records.", ["action"])
        self.breaker_state = gauge(
            "breaker_state",
            "1 for the state each breaker is in (a state set).",
            ["breaker", "state"],
        )
        self.breaker_transitions = counter(
            "breaker_transitions", "Breaker state changes.", ["breaker", "to"]
        )
        self.idempotency_checks = counter(
            "idempotency_checks",
            "Idempotency claims by task, scope and result.",
            ["task", "scope", "result"],
        )
        self.idempotency_duration = histogram(
            "idempotency_check_duration_seconds",
            "Time to answer an idempotency claim.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
        )
        self.classification_confidence = histogram(
            "classification_confidence",
            "Confidence of each classification.",
            ["failure_type"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.priority_assignments = counter(
            "priority_assignments",
            "Priorities given to retried and dead-lettered tasks.",
            ["priority", "queue"],
        )
        self.sla_breaches = counter(
            "sla_breaches", "Failures of tasks older than their tier's SLA.", ["tier"]
        )
        self.lost_runs = counter(
            "lost_runs",
            "Runs that started and never ended (the worker died under them), per task.",
            ["task"],
        )
        self.deferrals = counter("deferrals", "Retries pushed back, by reason.", ["reason"])
        self.adaptive_adjustments = counter(
            "adaptive_adjustments", "Delays adjusted from past retry outcomes.", ["direction"]
        )
        self.queue_depth = gauge("queue_depth", "Tasks waiting per queue.", ["queue"])
        self.queue_stalled = gauge(
            "queue_stalled_seconds",
            "Seconds a queue has held tasks without shrinking (0 while empty or draining): "
            "high when no worker consumes it.",
            ["queue"],
        )
        self.schedule_health_score = gauge(
            "schedule_health_score", "Health of the periodic schedule, 0-100."
        )
        self.schedule_hotspots = gauge(
            "schedule_hotspots", "Minutes where too many periodic tasks start."
        )
        self.schedule_conflicts = gauge("schedule_conflicts", "Overlapping periodic runs.")
        self.schedule_starts = gauge(
            "schedule_starts",
            "Periodic task starts per hour of the day (UTC), by queue.",
            ["queue", "hour"],
        )
        self.policy_reloads = counter("policy_reloads", "Policy file reloads.", ["result"])
        self.backend_up = gauge("backend_up", "1 when the backend answers.", ["backend"])
        self.spool_pending = gauge("spool_pending", "DLQ writes waiting in the local spool.")
        self.spool_write_failures = counter(
            "spool_write_failures",
            "DLQ writes neither stored nor spooled (disk or spool full): lost.",
        )
        self.spool_quarantined = counter(
            "spool_quarantined",
            "Spooled DLQ writes the store refused for good, moved to the quarantine file.",
        )
        self.spool_stalled = gauge(
            "spool_stalled_seconds",
            "Seconds since the spool replay last applied a write while writes wait (0: none).",
        )
        self.idempotency_stale_owners = counter(
            "idempotency_stale_owners",
            "complete/release refused: the caller did not hold the claim (any more).",
            ["action"],
        )
        self.idempotency_fallbacks = counter(
            "idempotency_fallbacks",
            "Claims answered by the durable store because Redis did not answer.",
        )
        self.requests_rejected = counter(
            "requests_rejected", "Requests refused before they were handled, by reason.", ["reason"]
        )
        self.hook_duration = histogram(
            "hook_duration_seconds", "Time to answer a hook.", ["hook"], buckets=LATENCY_BUCKETS
        )
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._breakers_seen: set[str] = set()
        self._precreate()

    def _at(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: prometheus_client validates and locks on
        every labels() call, which costs more than the increment on the hot path."""
        key = (metric._name, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def breaker(self, key: str) -> str:
        """A breaker's label, bounded like `task` (its key starts with the task name)."""
        owner, failure_type = split_breaker_key(key)
        return key if self.task(owner) == owner else f"{OTHER}:{failure_type}"

    def _precreate(self) -> None:
        """Series that alerts use from the first failure must exist at zero (an increase()
        cannot see the first sample of a series that did not exist)."""
        for status in ("pending", "retrying", "resolved", "abandoned"):
            self.dlq_depth.labels(status)
        for action in ("retry", "abandon", "bulk_retry", "bulk_abandon", "resolve", "export"):
            self.dlq_actions.labels(action)
        for reason in ("off_peak", "breaker", "load"):
            self.deferrals.labels(reason)
        for direction in ("faster", "slower"):
            self.adaptive_adjustments.labels(direction)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result)
        for hook in ("failure", "success", "start", "batch", "claim", "claims"):
            self.hook_duration.labels(hook)
        for reason in ("overloaded", "client_share", "body_timeout", "body_too_large"):
            self.requests_rejected.labels(reason)
        self.spool_pending.set(0)

    def _new_task(self, task: str) -> None:
        """A task's outcome series exist at 0 from its first event on, so a success
        ratio has a denominator and an increase() sees the first failure."""
        for outcome in ("success", "failure", "retry", "dead_letter", "discard"):
            self._at(self.task_events, task, outcome)
        self._at(self.lost_runs, task)

    def precreate_policy(self, failure_types: list[str], tiers: list[str]) -> None:
        for failure_type in failure_types:
            self.retry_delay.labels(failure_type)
            self.classification_confidence.labels(failure_type)
        for tier in tiers:
            self.sla_breaches.labels(tier)
        for scope in ("global", "user", "device", "task"):
            for result in ("hit", "miss", "error"):
                self.idempotency_checks.labels(UNNAMED, scope, result)

    # --- what the sidecar reports ----------------------------------------------------------

    def hook_timer(self, hook: str) -> AbstractContextManager[Any]:
        """Times one hook into `hook_duration_seconds`."""
        return self._at(self.hook_duration, hook).time()

    def record_failure(
        self,
        task_name: str,
        attempt: int,
        decision: Decision,
        effects: Effects,
        queue: str | None,
        queue_depth: int | None,
    ) -> None:
        task = self.task(task_name)
        c = decision.classification
        self._at(self.task_events, task, "failure").inc()
        self._at(self.task_events, task, decision.action).inc()
        self._at(self.failures, task, c.failure_type, c.remediation).inc()
        self._at(self.classification_confidence, c.failure_type).observe(c.confidence)
        queue = self.queue(decision.queue) if decision.queue else OWN_QUEUE
        self._at(self.priority_assignments, decision.priority, queue).inc()
        if decision.action == "retry":
            self._at(self.retry_delay, c.failure_type).observe(decision.delay_seconds)
        if attempt > 0:
            self._at(self.retry_outcomes, task, c.failure_type, "failure").inc()
        if effects.sla_breach_tier:
            self._at(self.sla_breaches, effects.sla_breach_tier).inc()
        for reason in effects.deferrals:
            self._at(self.deferrals, reason).inc()
        if effects.adaptive:
            self._at(self.adaptive_adjustments, effects.adaptive).inc()
        if queue and queue_depth is not None:
            self.set_queue_depth(queue, queue_depth)

    def record_success(self, task_name: str, retried_failure_type: str | None) -> None:
        """A run succeeded; `retried_failure_type` when it was a retry of that failure."""
        task = self.task(task_name)
        self._at(self.task_events, task, "success").inc()
        if retried_failure_type is not None:
            self._at(self.retry_outcomes, task, retried_failure_type, "success").inc()

    def record_lost_runs(self, task_name: str, count: int = 1) -> None:
        """Runs of the task that started and never ended (a poison suspect)."""
        if count > 0:
            self._at(self.lost_runs, self.task(task_name)).inc(count)

    def record_deferral(self, reason: str) -> None:
        self._at(self.deferrals, reason).inc()

    def record_breaker(self, key: str, current: str, moved: str | None) -> None:
        """A breaker was read or changed: its state set, and the transition if it moved.
        The state set is written on a transition, or the first time a breaker is seen."""
        label = self.breaker(key)
        if moved is None and label in self._breakers_seen:
            return
        self._breakers_seen.add(label)
        self.set_breaker_state(key, current)
        if moved is not None:
            self._at(self.breaker_transitions, label, moved).inc()

    def set_breaker_state(self, key: str, current: str) -> None:
        label = self.breaker(key)
        for state in BREAKER_STATES:
            self._at(self.breaker_state, label, state).set(state == current)

    def record_dlq_action(self, action: str, count: int = 1) -> None:
        self._at(self.dlq_actions, action).inc(count)

    def set_dlq_depth(self, counts: Mapping[str, int], oldest_pending_age: float) -> None:
        for status, count in counts.items():
            self._at(self.dlq_depth, status).set(count)
        self.dlq_oldest_pending_age.set(oldest_pending_age)

    def record_claim(
        self, scope: str, result: str, backend: str, seconds: float, task_name: str | None = None
    ) -> None:
        """An idempotency claim: `result` hit, miss or error. `task` is bounded like the
        other task labels; a claim that named no task counts under `__unnamed__`. A task's
        first claim in a scope creates its three results, so the hits that follow a first
        miss are seen by increase()."""
        task = self.task(task_name) if task_name else UNNAMED
        key = (self.idempotency_checks._name, (task, scope, result))
        if key not in self._children:
            for each in ("hit", "miss", "error"):
                self._at(self.idempotency_checks, task, scope, each)
        self._at(self.idempotency_checks, task, scope, result).inc()
        self._at(self.idempotency_duration, backend).observe(seconds)

    def record_policy_reload(self, ok: bool) -> None:
        self._at(self.policy_reloads, "success" if ok else "failure").inc()

    def set_backend_up(self, backend: str, up: bool) -> None:
        self._at(self.backend_up, backend).set(up)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        """Past the queue bound, `__other__` holds the depth reported last for any of them."""
        self._at(self.queue_depth, self.queue(queue)).set(depth)

    def set_queue_stalled(self, queue: str, seconds: float) -> None:
        self._at(self.queue_stalled, self.queue(queue)).set(seconds)

    def set_spool_pending(self, count: int) -> None:
        self.spool_pending.set(count)

    def record_spool_write_failure(self) -> None:
        self.spool_write_failures.inc()

    def record_spool_quarantined(self) -> None:
        self.spool_quarantined.inc()

    def set_spool_stalled(self, seconds: float) -> None:
        self.spool_stalled.set(seconds)

    def record_rejection(self, reason: str) -> None:
        """overloaded, client_share, body_timeout, body_too_large."""
        self._at(self.requests_rejected, reason).inc()

    def record_stale_owner(self, action: str) -> None:
        self._at(self.idempotency_stale_owners, action).inc()

    def record_claim_fallback(self) -> None:
        self.idempotency_fallbacks.inc()

    def set_schedule_health(
        self, score: float, hotspots: int, conflicts: int, starts: Iterable[tuple[str, int, int]]
    ) -> None:
        """The analysis' figures; `starts`: (queue, hour, starts) for every hour of the day
        of every queue."""
        self.schedule_health_score.set(score)
        self.schedule_hotspots.set(hotspots)
        self.schedule_conflicts.set(conflicts)
        for queue, hour, count in starts:
            self._at(self.schedule_starts, queue, f"{hour:02d}").set(count)
