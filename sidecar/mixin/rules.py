"""Recording rules and alerts of task-sidecar, as a skeleton the config fills in.

Recording rules hold the rates that dashboards and alerts share (success, retry success,
idempotency hits, failures by type, the DLQ backlog, the SLO error ratios, the sidecars
scraped per namespace); alerts read them. Every alert gets its `runbook_url` and
`dashboard_url` here, in one place (`_annotate`), so none can ship without them.

Every aggregation keeps the cluster label (the config's `cluster_label`), `namespace` and
`job`, plus what the rule is about (task, failure_type, scope...). No rule depends on what
the scrape job is called: the config's `selectors` say which series are the sidecar's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .skeleton import SLO_WINDOWS, hole

CLUSTER = hole("cluster_label")
GROUPING = f"{CLUSTER}, namespace, job"
SELECTORS, SELECTORS_ALONE = hole("selectors", "matchers"), hole("selectors", "selector")
DLQ_OPEN_STATUSES = "pending|retrying"
EXECUTED = 'outcome=~"success|failure"'
OPEN = 'state="open"'
# One series per sidecar process from its start on (the histogram is created with every
# hook label at zero), whatever has happened yet.
PRESENCE = 'task_sidecar_hook_duration_seconds_count{hook="failure"' + SELECTORS + "}"

# Dashboards the alerts point at (uids of the dashboards).
DASHBOARDS = {
    "overview": "task-sidecar-overview",
    "failures": "task-sidecar-failures",
    "retries": "task-sidecar-retries",
    "idempotency": "task-sidecar-idempotency",
    "dlq_explorer": "task-sidecar-dlq-explorer",  # PostgreSQL, not Prometheus (grafana/)
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
SCRAPED = "namespace:task_sidecar_scraped:count"
ERROR_RATIO_PREFIX = "job:task_sidecar_task_errors:ratio_rate"


def raw(metric: str, *matchers: str) -> str:
    """A selector of one of the sidecar's own series, limited by the config's selectors."""
    if matchers:
        return metric + "{" + ", ".join(matchers) + SELECTORS + "}"
    return metric + SELECTORS_ALONE


def ratio(part: str, whole: str) -> str:
    """part / whole, and 0 where `whole` has series but `part` has none.

    Series labelled with a task are created by their first event: a task that has only
    failed has no `outcome="success"` series at all, and a plain division would drop it
    (no ratio, so no alert) instead of giving 0.
    """
    return f"(\n  {part}\n  or\n  0 * {whole}\n)\n/\n{whole}"


def error_ratio(window: str) -> str:
    """The SLO's error ratio over `window` (failures / executions, per job)."""
    return ERROR_RATIO_PREFIX + window


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


def new_events(metric: str, matchers: str, by: str, window: str, window_seconds: str) -> str:
    """Per `by`, the events counted by `metric` within `window` (> 0 only).

    A counter whose labels cannot be created at zero in advance (they carry a task name)
    appears with its first event already counted, and `increase()` cannot see that event.
    prometheus_client exports when each labelled counter was created (`<name>_created`), so
    a series created within the window counts with its whole value.
    """
    only = (matchers,) if matchers else ()
    total, created = raw(f"{metric}_total", *only), raw(f"{metric}_created", *only)
    return (
        f"sum by ({by}) (\n"
        f"    increase({total}[{window}]) > 0\n"
        f"  or\n"
        f"    {total}\n"
        f"      and (time() - {created} < {window_seconds})\n"
        f")"
    )


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # critical | warning | info
    expr: str
    for_: str  # a duration, or a hole naming one
    summary: str
    description: str
    dashboard: str
    # the labels the alert has that the dashboard has variables for (its link sets them)
    link_labels: tuple[str, ...] = ("cluster", "namespace", "job")
    labels: dict[str, str] = field(default_factory=dict)


PER_TASK = ("cluster", "namespace", "job", "task")


def recording_rules() -> list[dict[str, Any]]:
    by_task = f"{GROUPING}, task"
    open_dlq = raw("task_sidecar_dlq_depth", f'status=~"{DLQ_OPEN_STATUSES}"')
    return [
        _record(
            TASK_EVENTS_RATE,
            f"sum by ({by_task}, outcome) (rate({raw('task_sidecar_task_events_total')}[5m]))",
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
            f"(rate({raw('task_sidecar_retry_outcomes_total')}[5m]))",
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
            f"sum by ({by_task}, failure_type) (rate({raw('task_sidecar_failures_total')}[5m]))",
        ),
        _record(
            CLAIMS_RATE,
            f"sum by ({GROUPING}, scope, result) "
            f"(rate({raw('task_sidecar_idempotency_checks_total')}[5m]))",
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
            f"sum by ({GROUPING}) (\n  max by ({GROUPING}, status) ({open_dlq})\n)",
        ),
        # How many sidecars of each namespace are scraped now (a scrape that fails marks
        # their series stale at once): the not-scraped alert remembers this.
        _record(SCRAPED, f"count by ({CLUSTER}, namespace) ({PRESENCE})"),
    ]


def slo_rules() -> list[dict[str, Any]]:
    window = hole("window")
    executions = raw("task_sidecar_task_events_total", EXECUTED)
    failures = raw("task_sidecar_task_events_total", 'outcome="failure"')
    rule = _record(
        error_ratio(window),
        ratio(
            f"sum by ({GROUPING}) (rate({failures}[{window}]))",
            f"sum by ({GROUPING}) (rate({executions}[{window}]))",
        ),
    )
    return [{"$each": SLO_WINDOWS, "$as": "window", "$item": rule}]


def alerts() -> list[Alert]:
    num = lambda path: hole(path, "num")  # noqa: E731
    critical_breakers = '"' + breaker_owner_regex(hole("critical_tasks", "pq")) + '"'
    system_types = hole("system_failure_types", "bar", "pq")
    resolved = raw("task_sidecar_dlq_actions_total", 'action="resolve"')
    deferred = raw("task_sidecar_deferrals_total", 'reason="off_peak"')
    saved = f"sum by ({GROUPING}) (increase({deferred}[{hole('cost_savings.window')}]{{at}}))"
    off_peak = saved.replace("{at}", "")
    off_peak_before = saved.replace("{at}", f" offset {hole('cost_savings.notify_for')}")
    open_breakers = raw("task_sidecar_breaker_state", OPEN, "breaker{op}" + critical_breakers)
    thresholds = f"(warning above {num('dlq.warning')}, critical above {num('dlq.critical')})"
    out = [
        Alert(
            "TaskSidecarDLQDepthHigh",
            severity,
            f"{DLQ_BACKLOG} > {num(threshold)}",
            hole("dlq.for"),
            f"The dead-letter queue holds more than {num(threshold)} open tasks",
            "{{ $value }} dead-lettered tasks are pending or retrying in "
            "{{ $labels.namespace }}/{{ $labels.job }} " + thresholds + ".",
            "failures",
        )
        for severity, threshold in (("warning", "dlq.warning"), ("critical", "dlq.critical"))
    ]
    out += [
        Alert(
            "TaskSidecarBreakerOpen",
            severity,
            with_task_labels(
                f"max by ({GROUPING}, breaker) ({open_breakers.replace('{op}', op)}) == 1"
            ),
            hole("breaker_open.for"),
            "Circuit breaker {{ $labels.breaker }} is open",
            "The breaker {{ $labels.breaker }} opened after repeated {{ $labels.failure_type }} "
            "failures: runs of {{ $labels.task }} are deferred until it half-opens."
            + (" The task is marked critical." if severity == "critical" else ""),
            "retries",
            PER_TASK,
        )
        for severity, op in (("critical", "=~"), ("warning", "!~"))
    ]
    out += [
        Alert(
            "TaskSidecarSystemFailure",
            "critical",
            new_events(
                "task_sidecar_failures",
                f'failure_type=~"{system_types}"',
                f"{GROUPING}, task, failure_type",
                "5m",
                "300",
            ),
            hole("system_failures.for"),
            "{{ $labels.task }} failed with {{ $labels.failure_type }}",
            '{{ $value | printf "%.0f" }} run(s) of {{ $labels.task }} failed with '
            "{{ $labels.failure_type }} in {{ $labels.namespace }}/{{ $labels.job }} "
            "in the last 5 minutes: a worker ran out of memory or disk.",
            "failures",
            PER_TASK,
        ),
        Alert(
            "TaskSidecarLostRuns",
            "warning",
            new_events("task_sidecar_lost_runs", "", f"{GROUPING}, task", "15m", "900"),
            "0s",
            "Runs of {{ $labels.task }} start and never end: its workers die under it",
            '{{ $value | printf "%.0f" }} run(s) of {{ $labels.task }} in '
            "{{ $labels.namespace }}/{{ $labels.job }} started and never ended in the last "
            "15 minutes (the worker was SIGKILLed, ran out of memory or crashed): a poison "
            "task is dead-lettered after poison.max_lost_runs of them.",
            "failures",
            PER_TASK,
        ),
        Alert(
            "TaskSidecarQueueStalled",
            "warning",
            f"max by ({GROUPING}, queue) ({raw('task_sidecar_queue_stalled_seconds')})\n"
            f"> {num('queue_stalled.seconds')}",
            hole("queue_stalled.for"),
            "Queue {{ $labels.queue }} holds tasks that no worker takes",
            "Queue {{ $labels.queue }} in {{ $labels.namespace }}/{{ $labels.job }} has held "
            "tasks without shrinking for {{ $value | humanizeDuration }}: no worker consumes "
            "it, or none keeps up. Retries routed there (priority.route_retries) wait until "
            "a worker reads it.",
            "overview",
            ("cluster", "namespace", "job"),
        ),
        Alert(
            "TaskSidecarTaskSuccessRateLow",
            "warning",
            f"{TASK_SUCCESS_RATIO} < {num('success_rate.warning_below')}\n"
            f"and on ({GROUPING}, task)\n"
            f"sum by ({GROUPING}, task) ({TASK_EVENTS_RATE}{{{EXECUTED}}}) * 300 "
            f">= {num('success_rate.min_executions')}",
            hole("success_rate.for"),
            "{{ $labels.task }} succeeds less than "
            f"{{{{ {num('success_rate.warning_below')} | humanizePercentage }}}} of the time",
            "Only {{ $value | humanizePercentage }} of the runs of {{ $labels.task }} in "
            "{{ $labels.namespace }}/{{ $labels.job }} succeeded over the last 5 minutes "
            f"(warning below {{{{ {num('success_rate.warning_below')} | humanizePercentage }}}}).",
            "overview",
            PER_TASK,
        ),
        Alert(
            "TaskSidecarDuplicateRateHigh",
            "warning",
            f"{JOB_HIT_RATIO} > {num('duplicate_rate.warning_above')}\n"
            f"and on ({GROUPING})\n"
            f'sum by ({GROUPING}) ({CLAIMS_RATE}{{result=~"hit|miss"}}) * 300 '
            f">= {num('duplicate_rate.min_claims')}",
            hole("duplicate_rate.for"),
            "Idempotency duplicate rate above "
            f"{{{{ {num('duplicate_rate.warning_above')} | humanizePercentage }}}}",
            "{{ $value | humanizePercentage }} of idempotency claims in "
            "{{ $labels.namespace }}/{{ $labels.job }} were duplicates over the last 5 minutes "
            f"(warning above {{{{ {num('duplicate_rate.warning_above')} | humanizePercentage }}}}"
            f", target below {{{{ {num('duplicate_rate.target')} | humanizePercentage }}}}).",
            "idempotency",
        ),
        Alert(
            "TaskSidecarDLQRecovered",
            "info",
            f"sum by ({GROUPING}) (increase({resolved}[{hole('recovered.window')}])) > 0",
            "0s",
            "Dead-lettered tasks recovered",
            '{{ $value | printf "%.0f" }} dead-lettered task(s) in '
            "{{ $labels.namespace }}/{{ $labels.job }} succeeded on a retry and were resolved "
            f"in the last {hole('recovered.window')}.",
            "failures",
        ),
        Alert(
            "TaskSidecarBreakerRecovered",
            "info",
            with_task_labels(
                new_events(
                    "task_sidecar_breaker_transitions",
                    'to="closed"',
                    f"{GROUPING}, breaker",
                    hole("recovered.window"),
                    hole("recovered.window", "seconds"),
                )
            ),
            "0s",
            "Circuit breaker {{ $labels.breaker }} closed again",
            "The breaker {{ $labels.breaker }} closed after a successful probe run in the last "
            f"{hole('recovered.window')}: {{{{ $labels.task }}}} runs normally again.",
            "retries",
            PER_TASK,
        ),
        Alert(
            "TaskSidecarCostSavingsMilestone",
            "info",
            # The seed's "cost savings milestone": the sidecar counts retries it moved
            # off-peak, not money. Fires while the window's count has crossed a multiple of
            # the milestone within the last notify period, then resolves by itself.
            f"floor({off_peak} / {num('cost_savings.milestone')})"
            f" * {num('cost_savings.milestone')}\n"
            f"> on ({GROUPING})\n"
            f"floor({off_peak_before} / {num('cost_savings.milestone')})"
            f" * {num('cost_savings.milestone')}",
            "0s",
            '{{ $value | printf "%.0f" }} retries moved off-peak in '
            f"{hole('cost_savings.window')}",
            "{{ $labels.namespace }}/{{ $labels.job }} passed a milestone: "
            '{{ $value | printf "%.0f" }} or more low-priority retries were deferred to the '
            f"off-peak window over the last {hole('cost_savings.window')} "
            f"(a milestone every {num('cost_savings.milestone')}).",
            "retries",
        ),
        Alert(
            "TaskSidecarSpoolWriteFailed",
            "critical",
            f"sum by ({GROUPING}) "
            f"(increase({raw('task_sidecar_spool_write_failures_total')}[5m])) > 0",
            "0s",
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
            # A namespace that had sidecars within the lookback and has none now; or no
            # sidecar scraped anywhere (the rules are loaded, nothing they read exists).
            f"(\n  max_over_time({SCRAPED}[{hole('not_scraped.lookback')}])\n  unless\n"
            f"  {SCRAPED}\n)\nor\nabsent({SCRAPED})",
            hole("not_scraped.for"),
            "{{ if $labels.namespace }}No task-sidecar of {{ $labels.namespace }} is being "
            "scraped{{ else }}No task-sidecar is being scraped{{ end }}",
            "{{ if $labels.namespace }}Prometheus scraped task-sidecars in "
            "{{ $labels.namespace }} within the last "
            f"{hole('not_scraped.lookback')} and scrapes none now"
            "{{ else }}Prometheus scrapes no task-sidecar at all{{ end }}: the sidecars are "
            "down or no longer scraped, and no other task-sidecar alert can fire for them.",
            "overview",
            ("cluster", "namespace"),
        ),
    ]
    return out


def slo_alerts() -> list[tuple[str, str, Alert]]:
    """(config list, severity, alert) for each tier; the alert is made once per pair."""
    num = lambda path: hole(path, "num")  # noqa: E731
    objective = num("slo.objective")
    out = []
    for severity, tier in (("critical", "page"), ("warning", "ticket")):
        factor = f"({num('pair.burn_rate')} * (1 - {objective}))"
        long, short = hole("pair.long"), hole("pair.short")
        alert = Alert(
            "TaskSidecarErrorBudgetBurn",
            severity,
            f"{error_ratio(long)} > {factor}\nand\n{error_ratio(short)} > {factor}",
            hole("pair.for"),
            f"Task success SLO ({{{{ {objective} | humanizePercentage }}}}) error budget "
            f"burning {num('pair.burn_rate')}x too fast ({tier})",
            "{{ $value | humanizePercentage }} of task runs in "
            "{{ $labels.namespace }}/{{ $labels.job }} failed over the last "
            f"{short} and over the last {long}: at {num('pair.burn_rate')}x the rate the "
            f"{{{{ {objective} | humanizePercentage }}}} objective allows, the 30-day error "
            "budget runs out early.",
            "overview",
            labels={"long": long, "short": short, "slo": "task-success"},
        )
        out.append((f"slo.{tier}", severity, alert))
    return out


def skeleton() -> dict[str, Any]:
    """The rules file, with holes for the config."""
    alert_rules: list[dict[str, Any]] = [
        {"$if": f"alerts.{alert.name}", **_alert_rule(alert)} for alert in alerts()
    ]
    alert_rules += [
        {
            "$if": f"alerts.{alert.name}",
            "$each": tier,
            "$as": "pair",
            "$item": _alert_rule(alert),
        }
        for tier, _, alert in slo_alerts()
    ]
    return {
        "groups": [
            {"name": "task-sidecar.rules", "rules": recording_rules()},
            {"name": "task-sidecar-slo.rules", "rules": slo_rules()},
            {"name": "task-sidecar.alerts", "rules": alert_rules},
        ]
    }


def _alert_rule(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.name,
        "expr": alert.expr,
        "for": alert.for_,
        "labels": {"severity": alert.severity, **alert.labels, "$merge": "rule_labels"},
        "annotations": _annotate(alert),
    }


def runbook_url(alert_name: str) -> str:
    return f"{hole('links.runbook_base_url', 'url')}/{alert_name}.md"


def dashboard_url(dashboard: str) -> str:
    return f"{hole('links.grafana_url', 'url')}/d/{DASHBOARDS[dashboard]}"


def _annotate(alert: Alert) -> dict[str, str]:
    """summary and description from the definition; the links always from here. The
    dashboard link selects what the alert is about (a label the alert lacks selects the
    series without it, which is what the alert was computed from)."""
    labels = {"cluster": CLUSTER, "namespace": "namespace", "job": "job", "task": "task"}
    query = "&".join(
        f"var-{name}={{{{ $labels.{labels[name]} | urlquery }}}}" for name in alert.link_labels
    )
    return {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": runbook_url(alert.name),
        "dashboard_url": f"{dashboard_url(alert.dashboard)}?{query}",
    }


def _record(name: str, expr: str) -> dict[str, str]:
    return {"record": name, "expr": expr}
