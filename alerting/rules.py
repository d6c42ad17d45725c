"""Recording rules and alerts of task-sidecar, generated from the mixin config.

Recording rules hold the rates that dashboards and alerts share (success, retry success,
idempotency hits, failures by type, the DLQ backlog, the SLO error ratios); alerts read
them. Every alert gets its `runbook_url` and `dashboard_url` here, in one place
(`_annotate`), so none can ship without them.

Labels kept by every aggregation: `namespace` and `job` (what a Kubernetes scrape or a
static scrape config gives), plus what the rule is about (task, failure_type, scope...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config, Duration

GROUPING = "namespace, job"
DLQ_OPEN_STATUSES = "pending|retrying"
EXECUTED = 'outcome=~"success|failure"'

# Dashboards the alerts point at (uids of grafana/dashboards/*).
DASHBOARDS = {
    "overview": "task-sidecar-overview",
    "failures": "task-sidecar-failures",
    "retries": "task-sidecar-retries",
    "idempotency": "task-sidecar-idempotency",
}

# Recording rule names (level:metric:operations). Dashboards import these.
TASK_EVENTS_RATE = "task:task_sidecar_task_events:rate5m"
TASK_SUCCESS_RATIO = "task:task_sidecar_task_success:ratio_rate5m"
RETRY_OUTCOMES_RATE = "task_failure_type:task_sidecar_retry_outcomes:rate5m"
RETRY_SUCCESS_RATIO = "task_failure_type:task_sidecar_retry_success:ratio_rate5m"
FAILURES_RATE = "task_failure_type:task_sidecar_failures:rate5m"
CLAIMS_RATE = "scope:task_sidecar_idempotency_checks:rate5m"
SCOPE_HIT_RATIO = "scope:task_sidecar_idempotency_hit:ratio_rate5m"
JOB_HIT_RATIO = "job:task_sidecar_idempotency_hit:ratio_rate5m"
DLQ_BACKLOG = "job:task_sidecar_dlq_backlog:sum"


def ratio(part: str, whole: str) -> str:
    """part / whole, and 0 where `whole` has series but `part` has none.

    Series labelled with a task are created by their first event: a task that has only
    failed has no `outcome="success"` series at all, and a plain division would drop it
    (no ratio, so no alert) instead of giving 0.
    """
    return f"(\n  {part}\n  or\n  0 * {whole}\n)\n/\n{whole}"


def error_ratio(window: str) -> str:
    """The SLO's error ratio over `window` (failures / executions, per job)."""
    return f"job:task_sidecar_task_errors:ratio_rate{window}"


def breaker_owner_regex(owners: str) -> str:
    """Matches breaker labels (`owner:FAILURE_TYPE`) whose owner matches `owners`."""
    return f"({owners}):[A-Z0-9_]+"


def with_task_labels(expr: str) -> str:
    """Adds `task` and `failure_type` labels split from a `breaker` label."""
    return (
        "label_replace(label_replace(\n  " + expr.replace("\n", "\n  ") + ",\n"
        '  "task", "$1", "breaker", "(.*):[^:]*"),\n'
        '  "failure_type", "$1", "breaker", ".*:([^:]*)")'
    )


def new_events(metric: str, selector: str, by: str, window: Duration) -> str:
    """Per `by`, the events counted by `metric` within `window` (> 0 only).

    A counter whose labels cannot be created at zero in advance (they carry a task name)
    appears with its first event already counted, and `increase()` cannot see that event.
    prometheus_client exports when each labelled counter was created (`<name>_created`), so
    a series created within the window counts with its whole value.
    """
    return (
        f"sum by ({by}) (\n"
        f"    increase({metric}_total{selector}[{window}]) > 0\n"
        f"  or\n"
        f"    {metric}_total{selector}\n"
        f"      and (time() - {metric}_created{selector} < {window.seconds:g})\n"
        f")"
    )


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # critical | warning | info
    expr: str
    for_: Duration
    summary: str
    description: str
    dashboard: str
    per_task: bool = False  # the alert has a `task` label: link the dashboard to that task
    labels: dict[str, str] = field(default_factory=dict)


def recording_rules() -> list[dict[str, Any]]:
    by_task = f"{GROUPING}, task"
    return [
        _record(
            TASK_EVENTS_RATE,
            f"sum by ({by_task}, outcome) (rate(task_sidecar_task_events_total[5m]))",
        ),
        _record(
            TASK_SUCCESS_RATIO,
            ratio(
                f'sum by ({by_task}) ({TASK_EVENTS_RATE}{{outcome="success"}})',
                f"sum by ({by_task}) ({TASK_EVENTS_RATE}{{{EXECUTED}}})",
            ),
        ),
        _record(
            RETRY_OUTCOMES_RATE,
            f"sum by ({by_task}, failure_type, result) "
            "(rate(task_sidecar_retry_outcomes_total[5m]))",
        ),
        _record(
            RETRY_SUCCESS_RATIO,
            ratio(
                f'sum by ({by_task}, failure_type) ({RETRY_OUTCOMES_RATE}{{result="success"}})',
                f"sum by ({by_task}, failure_type) ({RETRY_OUTCOMES_RATE})",
            ),
        ),
        _record(
            FAILURES_RATE,
            f"sum by ({by_task}, failure_type) (rate(task_sidecar_failures_total[5m]))",
        ),
        _record(
            CLAIMS_RATE,
            f"sum by ({GROUPING}, scope, result) (rate(task_sidecar_idempotency_checks_total[5m]))",
        ),
        _record(
            SCOPE_HIT_RATIO,
            f'sum by ({GROUPING}, scope) ({CLAIMS_RATE}{{result="hit"}})\n/\n'
            f'sum by ({GROUPING}, scope) ({CLAIMS_RATE}{{result=~"hit|miss"}})',
        ),
        _record(
            JOB_HIT_RATIO,
            f'sum by ({GROUPING}) ({CLAIMS_RATE}{{result="hit"}})\n/\n'
            f'sum by ({GROUPING}) ({CLAIMS_RATE}{{result=~"hit|miss"}})',
        ),
        # Every replica reads the same DLQ from the shared store: max over replicas, then
        # the sum of the open statuses.
        _record(
            DLQ_BACKLOG,
            f"sum by ({GROUPING}) (\n"
            f"  max by ({GROUPING}, status) "
            f'(task_sidecar_dlq_depth{{status=~"{DLQ_OPEN_STATUSES}"}})\n)',
        ),
    ]


def slo_rules(config: Config) -> list[dict[str, Any]]:
    return [
        _record(
            error_ratio(window),
            ratio(
                f"sum by ({GROUPING}) "
                f'(rate(task_sidecar_task_events_total{{outcome="failure"}}[{window}]))',
                f"sum by ({GROUPING}) "
                f"(rate(task_sidecar_task_events_total{{{EXECUTED}}}[{window}]))",
            ),
        )
        for window in config.slo.windows
    ]


def alerts(config: Config) -> list[Alert]:
    dlq, rate, dup, slo = config.dlq, config.success_rate, config.duplicate_rate, config.slo
    system_types = "|".join(config.system_failure_types)
    critical_breakers = breaker_owner_regex(config.critical_tasks)
    open_breakers = "max by (namespace, job, breaker) (task_sidecar_breaker_state{{{}}}) == 1"
    out = [
        Alert(
            "TaskSidecarDLQDepthHigh",
            severity,
            f"{DLQ_BACKLOG} > {threshold:g}",
            dlq.for_,
            f"The dead-letter queue holds more than {threshold:g} open tasks",
            "{{ $value }} dead-lettered tasks are pending or retrying in "
            "{{ $labels.namespace }}/{{ $labels.job }} "
            f"(warning above {dlq.warning:g}, critical above {dlq.critical:g}).",
            "failures",
        )
        for severity, threshold in (("warning", dlq.warning), ("critical", dlq.critical))
    ]
    out += [
        Alert(
            "TaskSidecarBreakerOpen",
            severity,
            with_task_labels(
                open_breakers.format(f'state="open", breaker{op}"{critical_breakers}"')
            ),
            config.breaker_open.for_,
            "Circuit breaker {{ $labels.breaker }} is open",
            "The breaker {{ $labels.breaker }} opened after repeated {{ $labels.failure_type }} "
            "failures: runs of {{ $labels.task }} are deferred until it half-opens."
            + (" The task is marked critical." if severity == "critical" else ""),
            "retries",
            per_task=True,
        )
        for severity, op in (("critical", "=~"), ("warning", "!~"))
    ]
    out += [
        Alert(
            "TaskSidecarSystemFailure",
            "critical",
            new_events(
                "task_sidecar_failures",
                f'{{failure_type=~"{system_types}"}}',
                f"{GROUPING}, task, failure_type",
                Duration("5m"),
            ),
            config.system_failures.for_,
            "{{ $labels.task }} failed with {{ $labels.failure_type }}",
            '{{ $value | printf "%.0f" }} run(s) of {{ $labels.task }} failed with '
            "{{ $labels.failure_type }} "
            "in the last 5 minutes: a worker ran out of memory or disk.",
            "failures",
            per_task=True,
        ),
        Alert(
            "TaskSidecarTaskSuccessRateLow",
            "warning",
            f"{TASK_SUCCESS_RATIO} < {rate.warning_below:g}\n"
            "and on (namespace, job, task)\n"
            f"sum by ({GROUPING}, task) ({TASK_EVENTS_RATE}{{{EXECUTED}}}) * 300 "
            f">= {rate.min_executions:g}",
            rate.for_,
            f"{{{{ $labels.task }}}} succeeds less than {rate.warning_below * 100:g} % of the time",
            "Only {{ $value | humanizePercentage }} of the runs of {{ $labels.task }} "
            "succeeded over the last 5 minutes "
            f"(warning below {rate.warning_below * 100:g} %).",
            "overview",
            per_task=True,
        ),
        Alert(
            "TaskSidecarDuplicateRateHigh",
            "warning",
            f"{JOB_HIT_RATIO} > {dup.warning_above:g}\n"
            "and on (namespace, job)\n"
            f'sum by ({GROUPING}) ({CLAIMS_RATE}{{result=~"hit|miss"}}) * 300 '
            f">= {dup.min_claims:g}",
            dup.for_,
            f"Idempotency duplicate rate above {dup.warning_above * 100:g} %",
            "{{ $value | humanizePercentage }} of idempotency claims in "
            "{{ $labels.namespace }}/{{ $labels.job }} were duplicates over the last 5 minutes "
            f"(warning above {dup.warning_above * 100:g} %, target below "
            f"{dup.target * 100:g} %).",
            "idempotency",
        ),
        Alert(
            "TaskSidecarDLQRecovered",
            "info",
            f"sum by ({GROUPING}) "
            f'(increase(task_sidecar_dlq_actions_total{{action="resolve"}}[{config.recovered.window}]))'
            " > 0",
            Duration("0s"),
            "Dead-lettered tasks recovered",
            '{{ $value | printf "%.0f" }} dead-lettered task(s) in '
            "{{ $labels.namespace }}/{{ $labels.job }} succeeded on a retry and were resolved "
            f"in the last {config.recovered.window}.",
            "failures",
        ),
        Alert(
            "TaskSidecarBreakerRecovered",
            "info",
            with_task_labels(
                new_events(
                    "task_sidecar_breaker_transitions",
                    '{to="closed"}',
                    f"{GROUPING}, breaker",
                    config.recovered.window,
                )
            ),
            Duration("0s"),
            "Circuit breaker {{ $labels.breaker }} closed again",
            "The breaker {{ $labels.breaker }} closed after a successful probe run in the last "
            f"{config.recovered.window}: {{{{ $labels.task }}}} runs normally again.",
            "retries",
            per_task=True,
        ),
        Alert(
            "TaskSidecarSpoolWriteFailed",
            "critical",
            f"sum by ({GROUPING}) (increase(task_sidecar_spool_write_failures_total[5m])) > 0",
            Duration("0s"),
            "Dead letters are being lost: neither PostgreSQL nor the spool takes them",
            '{{ $value | printf "%.0f" }} dead-lettered task(s) in '
            "{{ $labels.namespace }}/{{ $labels.job }} could be neither stored in PostgreSQL "
            "nor written to the local spool (disk full?) in the last 5 minutes: their "
            "workers got a decision, but the records are not kept.",
            "failures",
        ),
        Alert(
            "TaskSidecarNotScraped",
            "critical",
            f'absent(up{{job=~"{config.scrape_job_regex}"}} == 1)',
            config.absent.for_,
            "No task-sidecar is being scraped",
            "Prometheus has no target of a job matching "
            f"`{config.scrape_job_regex}` that is up: the sidecar is down or not scraped, "
            "and no other task-sidecar alert can fire.",
            "overview",
        ),
    ]
    budget = f"(1 - {slo.objective:g})"
    for severity, tier, pairs in (
        ("critical", "page", slo.page),
        ("warning", "ticket", slo.ticket),
    ):
        for pair in pairs:
            factor = f"({pair.burn_rate:g} * {budget})"
            out.append(
                Alert(
                    "TaskSidecarErrorBudgetBurn",
                    severity,
                    f"{error_ratio(pair.long)} > {factor}\n"
                    f"and\n{error_ratio(pair.short)} > {factor}",
                    pair.for_,
                    f"Task success SLO ({slo.objective * 100:g} %) error budget burning "
                    f"{pair.burn_rate:g}x too fast ({tier})",
                    "{{ $value | humanizePercentage }} of task runs in "
                    "{{ $labels.namespace }}/{{ $labels.job }} failed over the last "
                    f"{pair.short} and over the last {pair.long}: at {pair.burn_rate:g}x the "
                    f"rate the {slo.objective * 100:g} % objective allows, the 30-day error "
                    "budget runs out early.",
                    "overview",
                    labels={
                        "long": str(pair.long),
                        "short": str(pair.short),
                        "slo": "task-success",
                    },
                )
            )
    return out


def render(config: Config, *, for_override: str | None = None) -> dict[str, Any]:
    """The rules file as a dict. `for_override` replaces every `for:` (end-to-end tests)."""
    alert_rules = []
    for alert in alerts(config):
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        wait = for_override if for_override is not None else alert.for_
        if Duration(wait).seconds > 0:
            rule["for"] = str(wait)
        rule["labels"] = {"severity": alert.severity, **alert.labels}
        rule["annotations"] = _annotate(alert, config)
        alert_rules.append(rule)
    return {
        "groups": [
            {"name": "task-sidecar.rules", "rules": recording_rules()},
            {"name": "task-sidecar-slo.rules", "rules": slo_rules(config)},
            {"name": "task-sidecar.alerts", "rules": alert_rules},
        ]
    }


def runbook_url(config: Config, alert_name: str) -> str:
    return f"{config.links.runbook_base_url.rstrip('/')}/{alert_name}.md"


def dashboard_url(config: Config, dashboard: str) -> str:
    return f"{config.links.grafana_url.rstrip('/')}/d/{DASHBOARDS[dashboard]}"


def _annotate(alert: Alert, config: Config) -> dict[str, str]:
    """summary and description from the definition; the links always from here."""
    url = dashboard_url(config, alert.dashboard)
    if alert.per_task:
        url += "?var-task={{ $labels.task }}"
    return {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": runbook_url(config, alert.name),
        "dashboard_url": url,
    }


def _record(name: str, expr: str) -> dict[str, str]:
    return {"record": name, "expr": expr}
