"""Every Prometheus metric of task-sidecar, defined once, on an injectable registry.

Names, types and labels are a contract (DESIGN §5): dashboards and alert rules are written
against them. Rates are recording rules in alerting/, never gauges computed here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "task_sidecar"
OTHER_TASK = "__other__"

# Retry delays run from seconds to hours; policy defaults sit between 30 s and 2 h.
DELAY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
# Hook handling is sub-millisecond to a few ms; store round trips dominate the tail.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class TaskLabels:
    """Bounds the `task` label: the first `limit` names are kept, the rest become
    `__other__`, so a bad client cannot explode the series count."""

    def __init__(self, limit: int, on_new: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.on_new = on_new
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, task_name: str) -> str:
        if task_name in self._seen:
            return task_name
        with self._lock:
            if task_name in self._seen:
                return task_name
            label = task_name if len(self._seen) < self.limit else OTHER_TASK
            if label == task_name:
                self._seen.add(task_name)
        if label == task_name and self.on_new is not None:
            self.on_new(task_name)
        return label


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, task_limit: int = 500) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.task = TaskLabels(task_limit, on_new=self._new_task)
        r, ns = self.registry, NAMESPACE

        self.task_events = Counter(
            "task_events",
            "Task lifecycle events by outcome.",
            ["task", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.failures = Counter(
            "failures",
            "Failures by classified type and remediation.",
            ["task", "failure_type", "remediation"],
            namespace=ns,
            registry=r,
        )
        self.retry_delay = Histogram(
            "retry_delay_seconds",
            "Delay decided before a retry.",
            ["failure_type"],
            buckets=DELAY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.retry_outcomes = Counter(
            "retry_outcomes",
            "Outcome of runs that were retries.",
            ["task", "failure_type", "result"],
            namespace=ns,
            registry=r,
        )
        self.dlq_depth = Gauge(
            "dlq_depth", "Dead-lettered tasks by status.", ["status"], namespace=ns, registry=r
        )
        self.dlq_oldest_pending_age = Gauge(
            "dlq_oldest_pending_age_seconds",
            "Age of the oldest pending DLQ record.",
            namespace=ns,
            registry=r,
        )
        self.dlq_actions = Counter(
            "dlq_actions", "Actions taken on DLQ records.", ["action"], namespace=ns, registry=r
        )
        self.breaker_state = Gauge(
            "breaker_state",
            "1 for the state each breaker is in (a state set).",
            ["breaker", "state"],
            namespace=ns,
            registry=r,
        )
        self.breaker_transitions = Counter(
            "breaker_transitions",
            "Breaker state changes.",
            ["breaker", "to"],
            namespace=ns,
            registry=r,
        )
        self.idempotency_checks = Counter(
            "idempotency_checks",
            "Idempotency claims by scope and result.",
            ["scope", "result"],
            namespace=ns,
            registry=r,
        )
        self.idempotency_duration = Histogram(
            "idempotency_check_duration_seconds",
            "Time to answer an idempotency claim.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.classification_confidence = Histogram(
            "classification_confidence",
            "Confidence of each classification.",
            ["failure_type"],
            buckets=CONFIDENCE_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.priority_assignments = Counter(
            "priority_assignments",
            "Priorities given to retried and dead-lettered tasks.",
            ["priority", "queue"],
            namespace=ns,
            registry=r,
        )
        self.sla_breaches = Counter(
            "sla_breaches",
            "Failures of tasks older than their tier's SLA.",
            ["tier"],
            namespace=ns,
            registry=r,
        )
        self.deferrals = Counter(
            "deferrals", "Retries pushed back, by reason.", ["reason"], namespace=ns, registry=r
        )
        self.adaptive_adjustments = Counter(
            "adaptive_adjustments",
            "Delays adjusted from past retry outcomes.",
            ["direction"],
            namespace=ns,
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth", "Tasks waiting per queue.", ["queue"], namespace=ns, registry=r
        )
        self.schedule_health_score = Gauge(
            "schedule_health_score",
            "Health of the periodic schedule, 0-100.",
            namespace=ns,
            registry=r,
        )
        self.schedule_hotspots = Gauge(
            "schedule_hotspots",
            "Minutes where too many periodic tasks start.",
            namespace=ns,
            registry=r,
        )
        self.schedule_conflicts = Gauge(
            "schedule_conflicts", "Overlapping periodic runs.", namespace=ns, registry=r
        )
        self.schedule_starts = Gauge(
            "schedule_starts",
            "Periodic task starts per hour of the day (UTC), by queue.",
            ["queue", "hour"],
            namespace=ns,
            registry=r,
        )
        self.policy_reloads = Counter(
            "policy_reloads", "Policy file reloads.", ["result"], namespace=ns, registry=r
        )
        self.backend_up = Gauge(
            "backend_up", "1 when the backend answers.", ["backend"], namespace=ns, registry=r
        )
        self.spool_pending = Gauge(
            "spool_pending", "DLQ writes waiting in the local spool.", namespace=ns, registry=r
        )
        self.spool_write_failures = Counter(
            "spool_write_failures",
            "DLQ writes neither stored nor spooled (disk or spool full): lost.",
            namespace=ns,
            registry=r,
        )
        self.hook_duration = Histogram(
            "hook_duration_seconds",
            "Time to answer a hook.",
            ["hook"],
            buckets=LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._precreate()

    def at(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: prometheus_client validates and locks on
        every labels() call, which costs more than the increment on the hot path."""
        key = (metric._name, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def breaker(self, key: str) -> str:
        """A breaker's label, bounded like `task` (its key starts with the task name)."""
        owner, _, failure_type = key.rpartition(":")
        return key if self.task(owner) == owner else f"{OTHER_TASK}:{failure_type}"

    def _precreate(self) -> None:
        """Series that alerts use from the first failure must exist at zero (an increase()
        cannot see the first sample of a series that did not exist)."""
        for status in ("pending", "retrying", "resolved", "abandoned"):
            self.dlq_depth.labels(status)
        for action in ("retry", "abandon", "bulk_retry", "resolve", "export"):
            self.dlq_actions.labels(action)
        for reason in ("off_peak", "breaker", "load"):
            self.deferrals.labels(reason)
        for direction in ("faster", "slower"):
            self.adaptive_adjustments.labels(direction)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result)
        for hook in ("failure", "success", "start", "batch", "claim"):
            self.hook_duration.labels(hook)
        self.spool_pending.set(0)

    def _new_task(self, task: str) -> None:
        """A task's outcome series exist at 0 from its first event on, so a success
        ratio has a denominator and an increase() sees the first failure."""
        for outcome in ("success", "failure", "retry", "dead_letter", "discard"):
            self.at(self.task_events, task, outcome)

    def precreate_policy(self, failure_types: list[str], tiers: list[str]) -> None:
        for failure_type in failure_types:
            self.retry_delay.labels(failure_type)
            self.classification_confidence.labels(failure_type)
        for tier in tiers:
            self.sla_breaches.labels(tier)
        for scope in ("global", "user", "device", "task"):
            for result in ("hit", "miss", "error"):
                self.idempotency_checks.labels(scope, result)


# --- schedules (cli branch)

from typing import TYPE_CHECKING  # noqa: E402  (kept in this section for the merge)

if TYPE_CHECKING:
    from .schedules import Report as ScheduleReport


def record_schedule_health(metrics: Metrics, report: ScheduleReport) -> None:
    """The gauges of the last schedule analysis: score, hotspots, conflicts and the starts
    per queue and hour of the day (UTC)."""
    metrics.schedule_health_score.set(report.score)
    metrics.schedule_hotspots.set(len(report.hotspots))
    metrics.schedule_conflicts.set(len(report.conflicts))
    for queue, per_hour in report.load_by_hour.items():
        for hour, starts in enumerate(per_hour):
            metrics.at(metrics.schedule_starts, queue, f"{hour:02d}").set(starts)
