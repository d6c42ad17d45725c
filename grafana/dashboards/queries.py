"""Every PromQL query of the dashboards, as a named function.

Panels only arrange these. Rates that alerts also use come from the recording rules of
the mixin (their names are imported from sidecar.mixin.rules, so a rename cannot split
them). Grafana fills in `$cluster`, `$namespace`, `$job`, `$instance`, `$task` (template
variables), `$__range` (the dashboard's time range) and `$__rate_interval` (a safe window
for rate()); the «holes» are the mixin config's (the cluster label's name, the selectors).

Gauges that every replica reports alike (DLQ depth, breaker states, schedule figures) are
read from the shared stores, so replicas are combined with max(), never summed.
"""

from __future__ import annotations

from sidecar.mixin.rules import (
    CLAIMS_RATE,
    CLUSTER,
    DLQ_BACKLOG,
    ERROR_RATIO_PREFIX,
    FAILURES_RATE,
    RETRY_SUCCESS_RATIO,
    SCOPE_HIT_RATIO,
    SELECTORS,
    TASK_EVENTS_RATE,
    TASK_SUCCESS_RATIO,
)
from sidecar.mixin.skeleton import hole

RANGE = "$__range"
RATE = "$__rate_interval"
EXECUTED = 'outcome=~"success|failure"'
SUCCESS = 'outcome="success"'
OPEN = 'state="open"'
FAILURE_HOOK = 'hook="failure"'
# One series per sidecar process (see sidecar.mixin.rules.PRESENCE).
PRESENCE = "task_sidecar_hook_duration_seconds_count"


def sel(*matchers: str, task: bool = False) -> str:
    """A selector of the sidecar's own series: the dashboard's cluster, namespace, job,
    instance (and task), and the mixin's selectors."""
    scope = [f'{CLUSTER}=~"$cluster"', 'namespace=~"$namespace"', 'job=~"$job"']
    scope.append('instance=~"$instance"')
    if task:
        scope.append('task=~"$task"')
    return "{" + ", ".join([*scope, *matchers]) + SELECTORS + "}"


def rec(*matchers: str, task: bool = False) -> str:
    """A selector of a recording rule: aggregated over instances, already limited by the
    mixin's selectors."""
    scope = [f'{CLUSTER}=~"$cluster"', 'namespace=~"$namespace"', 'job=~"$job"']
    if task:
        scope.append('task=~"$task"')
    return "{" + ", ".join([*scope, *matchers]) + "}"


def task_breakers(*matchers: str) -> str:
    """Breakers of the selected tasks (a breaker is labelled `task:FAILURE_TYPE`)."""
    return sel('breaker=~"($task):.+"', *matchers)


# --- executions and success ---------------------------------------------------------------


def executions_in_range() -> str:
    return f"sum(increase(task_sidecar_task_events_total{sel(EXECUTED, task=True)}[{RANGE}]))"


def success_ratio_in_range() -> str:
    succeeded = sel(SUCCESS, task=True)
    return (
        f"(sum(increase(task_sidecar_task_events_total{succeeded}[{RANGE}])) or vector(0))"
        f"\n/\n{executions_in_range()}"
    )


def events_rate_by_outcome(outcomes: str = "success|failure") -> str:
    matching = rec(f'outcome=~"{outcomes}"', task=True)
    return f"sum by (outcome) ({TASK_EVENTS_RATE}{matching})"


def success_ratio_by_task() -> str:
    return f"{TASK_SUCCESS_RATIO}{rec(task=True)}"


def success_ratio_now() -> str:
    """Success ratio over the last 5 minutes, of the selected tasks together."""
    succeeded, executed = rec(SUCCESS, task=True), rec(EXECUTED, task=True)
    return (
        f"(sum({TASK_EVENTS_RATE}{succeeded}) or vector(0))\n/\nsum({TASK_EVENTS_RATE}{executed})"
    )


def slo_burn_rates() -> str:
    """How many times faster than the SLO allows the error budget burns, one series per
    window the burn-rate alerts use (each has its recording rule)."""
    windows = rec(f'__name__=~"{ERROR_RATIO_PREFIX}.+"')
    return (
        "max by (window) (label_replace(\n"
        f"  {windows},\n"
        f'  "window", "$1", "__name__", "{ERROR_RATIO_PREFIX}(.+)"\n'
        f")) / (1 - {hole('slo.objective', 'num')})"
    )


# --- failures -------------------------------------------------------------------------------


def failures_by_type_in_range() -> str:
    return f"sum by (failure_type) (increase(task_sidecar_failures_total{sel(task=True)}[{RANGE}]))"


def failures_rate_by_type() -> str:
    return f"sum by (failure_type) ({FAILURES_RATE}{rec(task=True)})"


def top_failing_tasks(n: int = 10) -> str:
    return (
        f"topk({n}, sum by (task) (increase(task_sidecar_failures_total{sel(task=True)}[{RANGE}])))"
    )


def failures_rate_of_top_tasks(n: int = 10) -> str:
    """Failures per second of the tasks `top_failing_tasks` shows: the top `n` of the
    whole time range (`@ end()`), so the lines are the bars' tasks at every step."""
    failures = f"task_sidecar_failures_total{sel(task=True)}"
    return (
        f"sum by (task) (rate({failures}[{RATE}]))\nand on (task)\n"
        f"topk({n}, sum by (task) (increase({failures}[{RANGE}] @ end())))"
    )


def remediation_mix_in_range() -> str:
    return f"sum by (remediation) (increase(task_sidecar_failures_total{sel(task=True)}[{RANGE}]))"


def critical_failures_in_range(system_types: str, critical_tasks: str) -> str:
    """Failures of system types (OOM, disk full) plus any failure of a critical task."""
    system = sel(f'failure_type=~"{system_types}"', task=True)
    critical = sel(f'task=~"{critical_tasks}"', f'failure_type!~"{system_types}"', task=True)
    return (
        f"(sum(increase(task_sidecar_failures_total{system}[{RANGE}])) or vector(0))\n+\n"
        f"(sum(increase(task_sidecar_failures_total{critical}[{RANGE}])) or vector(0))"
    )


def system_failures_in_range(system_types: str) -> str:
    system = sel(f'failure_type=~"{system_types}"', task=True)
    return f"sum by (task, failure_type) (increase(task_sidecar_failures_total{system}[{RANGE}]))"


def lost_runs_in_range() -> str:
    """Runs that started and never ended (poison suspects), per task."""
    return f"sum by (task) (increase(task_sidecar_lost_runs_total{sel(task=True)}[{RANGE}])) > 0"


def retries_per_failure_by_type() -> str:
    """Retries scheduled per failure, by failure type (the seed's "average retry count")."""
    return (
        f"sum by (failure_type) (increase(task_sidecar_retry_delay_seconds_count{sel()}[{RANGE}]))"
        "\n/\n"
        f"sum by (failure_type) (increase(task_sidecar_failures_total{sel()}[{RANGE}]))"
    )


def retries_per_failure_rate_by_type() -> str:
    """`retries_per_failure_by_type` over time: retries scheduled per failure, by type,
    in each rate window."""
    return (
        f"sum by (failure_type) (rate(task_sidecar_retry_delay_seconds_count{sel()}[{RATE}]))"
        "\n/\n"
        f"sum by (failure_type) (rate(task_sidecar_failures_total{sel()}[{RATE}]))"
    )


def classification_confidence(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile:g}, sum by (le, failure_type) "
        f"(rate(task_sidecar_classification_confidence_bucket{sel()}[{RATE}])))"
    )


def priority_assignments_rate() -> str:
    return (
        f"sum by (priority, queue) (rate(task_sidecar_priority_assignments_total{sel()}[{RATE}]))"
    )


def sla_breaches_in_range() -> str:
    return f"sum by (tier) (increase(task_sidecar_sla_breaches_total{sel()}[{RANGE}]))"


def sla_breaches_rate() -> str:
    return f"sum by (tier) (rate(task_sidecar_sla_breaches_total{sel()}[{RATE}]))"


# --- dead-letter queue ----------------------------------------------------------------------


def dlq_backlog() -> str:
    return f"sum({DLQ_BACKLOG}{rec()})"


def dlq_depth_by_status() -> str:
    return f"max by (status) (task_sidecar_dlq_depth{sel()})"


def dlq_oldest_pending_age() -> str:
    return f"max(task_sidecar_dlq_oldest_pending_age_seconds{sel()})"


def dlq_actions_rate() -> str:
    return f"sum by (action) (rate(task_sidecar_dlq_actions_total{sel()}[{RATE}]))"


def dlq_actions_in_range() -> str:
    return f"sum by (action) (increase(task_sidecar_dlq_actions_total{sel()}[{RANGE}]))"


def decisions_rate() -> str:
    return events_rate_by_outcome("retry|dead_letter|discard")


def spool_pending() -> str:
    return f"sum(task_sidecar_spool_pending{sel()})"


# --- retries --------------------------------------------------------------------------------


def retry_success_ratio() -> str:
    return f"{RETRY_SUCCESS_RATIO}{rec(task=True)}"


def retry_success_in_range() -> str:
    """Per task and failure type: successful retries / retries, over the time range."""
    outcomes = "task_sidecar_retry_outcomes_total"
    succeeded, every = sel('result="success"', task=True), sel(task=True)
    every_pair = f"sum by (task, failure_type) (increase({outcomes}{every}[{RANGE}]))"
    return (
        f"(sum by (task, failure_type) (increase({outcomes}{succeeded}[{RANGE}]))\n"
        f"or 0 * {every_pair})\n/\n{every_pair}"
    )


def retry_delay_quantile(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile:g}, sum by (le, failure_type) "
        f"(rate(task_sidecar_retry_delay_seconds_bucket{sel()}[{RATE}])))"
    )


def retry_delay_average() -> str:
    return (
        f"sum by (failure_type) (rate(task_sidecar_retry_delay_seconds_sum{sel()}[{RATE}]))\n/\n"
        f"sum by (failure_type) (rate(task_sidecar_retry_delay_seconds_count{sel()}[{RATE}]))"
    )


def retries_scheduled_rate() -> str:
    return f"sum by (failure_type) (rate(task_sidecar_retry_delay_seconds_count{sel()}[{RATE}]))"


# --- breakers -------------------------------------------------------------------------------


def breakers_open() -> str:
    return f"sum(max by (breaker) (task_sidecar_breaker_state{task_breakers(OPEN)}))"


def breaker_state_code() -> str:
    """One series per breaker: 0 closed, 1 half-open, 2 open."""
    half_open = task_breakers('state="half_open"')
    return (
        f"max by (breaker) (task_sidecar_breaker_state{task_breakers(OPEN)}) * 2\n+\n"
        f"max by (breaker) (task_sidecar_breaker_state{half_open})"
    )


def breaker_transitions() -> str:
    return (
        f"sum by (breaker, to) "
        f"(increase(task_sidecar_breaker_transitions_total{task_breakers()}[{RATE}]))"
    )


def adaptive_adjustments() -> str:
    return f"sum by (direction) (increase(task_sidecar_adaptive_adjustments_total{sel()}[{RATE}]))"


def deferrals() -> str:
    return f"sum by (reason) (increase(task_sidecar_deferrals_total{sel()}[{RATE}]))"


def deferrals_in_range() -> str:
    return f"sum by (reason) (increase(task_sidecar_deferrals_total{sel()}[{RANGE}]))"


# --- idempotency ----------------------------------------------------------------------------


def duplicate_ratio_in_range() -> str:
    checks = "task_sidecar_idempotency_checks_total"
    hits, claims = sel('result="hit"'), sel('result=~"hit|miss"')
    return f"sum(increase({checks}{hits}[{RANGE}]))\n/\nsum(increase({checks}{claims}[{RANGE}]))"


def duplicate_ratio_by_scope() -> str:
    return f"{SCOPE_HIT_RATIO}{rec()}"


def claims_in_range_by_scope(result: str) -> str:
    matching = sel(f'result="{result}"')
    return f"sum by (scope) (increase(task_sidecar_idempotency_checks_total{matching}[{RANGE}]))"


def top_duplicate_tasks(n: int = 10) -> str:
    """The `n` tasks with the highest duplicate (hit) rate over the time range: hits /
    (hits + misses), tasks with duplicates only. Claims that named no task count under
    `__unnamed__`."""
    checks = "task_sidecar_idempotency_checks_total"
    hits, claims = sel('result="hit"', task=True), sel('result=~"hit|miss"', task=True)
    return (
        f"topk({n},\n  sum by (task) (increase({checks}{hits}[{RANGE}]))\n  /\n"
        f"  sum by (task) (increase({checks}{claims}[{RANGE}]))\n  > 0\n)"
    )


def claims_rate_by_result() -> str:
    return f"sum by (result) ({CLAIMS_RATE}{rec()})"


def claims_hourly_by_result() -> str:
    return f"sum by (result) (increase(task_sidecar_idempotency_checks_total{sel()}[1h]))"


def claim_latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile:g}, sum by (le, backend) "
        f"(rate(task_sidecar_idempotency_check_duration_seconds_bucket{sel()}[{RATE}])))"
    )


# --- schedules ------------------------------------------------------------------------------


def schedule_health_score() -> str:
    return f"min(task_sidecar_schedule_health_score{sel()})"


def schedule_hotspots() -> str:
    return f"max(task_sidecar_schedule_hotspots{sel()})"


def schedule_conflicts() -> str:
    return f"max(task_sidecar_schedule_conflicts{sel()})"


def schedule_starts_by_hour() -> str:
    """Periodic-task starts per hour of the day (UTC), all queues together."""
    return f"sum by (hour) (max by (queue, hour) (task_sidecar_schedule_starts{sel()}))"


# --- queues and the sidecar itself ------------------------------------------------------------


def queue_depth() -> str:
    return f"max by (queue) (task_sidecar_queue_depth{sel()})"


def backends_up() -> str:
    return f"min by (backend) (task_sidecar_backend_up{sel()})"


def hook_latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile:g}, sum by (le, hook) "
        f"(rate(task_sidecar_hook_duration_seconds_bucket{sel()}[{RATE}])))"
    )


def hook_rate() -> str:
    return f"sum by (hook) (rate(task_sidecar_hook_duration_seconds_count{sel()}[{RATE}]))"


def policy_reloads() -> str:
    return f"sum by (result) (increase(task_sidecar_policy_reloads_total{sel()}[{RATE}]))"


def sidecars_scraped() -> str:
    """Sidecar processes scraped now (a failed scrape marks its series stale at once)."""
    return f"count({PRESENCE}{sel(FAILURE_HOOK)})"


# --- template variables ---------------------------------------------------------------------

# The hook-duration histogram exists from start-up in every sidecar: a good source of
# clusters, namespaces, jobs and instances before any task has run.
CLUSTER_VALUES = f"label_values({PRESENCE}{hole('selectors', 'selector')}, {CLUSTER})"
NAMESPACE_VALUES = f'label_values({PRESENCE}{{{CLUSTER}=~"$cluster"{SELECTORS}}}, namespace)'
JOB_VALUES = (
    f'label_values({PRESENCE}{{{CLUSTER}=~"$cluster", namespace=~"$namespace"{SELECTORS}}}, job)'
)
INSTANCE_VALUES = (
    f'label_values({PRESENCE}{{{CLUSTER}=~"$cluster", namespace=~"$namespace", job=~"$job"'
    f"{SELECTORS}}}, instance)"
)
TASK_VALUES = (
    f'label_values(task_sidecar_task_events_total{{{CLUSTER}=~"$cluster", '
    f'namespace=~"$namespace", job=~"$job", instance=~"$instance"{SELECTORS}}}, task)'
)
