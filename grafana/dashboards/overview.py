"""Overview: is the task fleet healthy? Executions, success, DLQ, critical failures, breakers.

The seed's "Executive" and "Task monitoring" dashboards (grafana/README.md maps each figure).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from . import queries as q
from .common import (
    GREEN,
    ORANGE,
    RED,
    Q,
    Row,
    above,
    api,
    dashboard,
    hole,
    num,
    runbook,
    stat_panel,
    steps,
    timeseries_panel,
)


def build() -> Dashboard:
    system_types = hole("system_failure_types", "bar", "pq")
    success_steps = steps(RED, (num("success_rate.warning_below"), GREEN))
    dlq_steps = steps(GREEN, (above("dlq.warning"), ORANGE), (above("dlq.critical"), RED))
    return dashboard(
        "overview",
        "task-sidecar / Overview",
        "Task executions, success rate, dead-letter queue, critical failures and breakers.",
        [
            Row(
                "At a glance",
                [
                    stat_panel(
                        "Executions",
                        "Task runs (successes + failures) over the time range.",
                        "short",
                        Q(q.executions_in_range()),
                        thresholds=steps(GREEN),
                    ),
                    stat_panel(
                        "Success rate",
                        "Successful runs / all runs over the time range. Red below the "
                        "alerting threshold.",
                        "percentunit",
                        Q(q.success_ratio_in_range()),
                        thresholds=success_steps,
                        links=[runbook("TaskSidecarTaskSuccessRateLow")],
                        decimals=1,
                    ),
                    stat_panel(
                        "DLQ depth",
                        "Dead-lettered tasks pending or retrying now (orange above the "
                        "warning threshold, red above the critical one).",
                        "short",
                        Q(q.dlq_backlog()),
                        thresholds=dlq_steps,
                        links=[
                            runbook("TaskSidecarDLQDepthHigh"),
                            api("Pending DLQ records (API)", "/v1/dlq?status=pending"),
                        ],
                    ),
                    stat_panel(
                        "Critical failures",
                        f"Failures of type {hole('system_failure_types', 'comma')} plus any "
                        "failure of a task marked critical, over the time range.",
                        "short",
                        Q(q.critical_failures_in_range(system_types, hole("critical_tasks", "pq"))),
                        thresholds=steps(GREEN, (1, RED)),
                        links=[runbook("TaskSidecarSystemFailure")],
                    ),
                    stat_panel(
                        "Breakers open",
                        "Circuit breakers open now (of the selected tasks).",
                        "short",
                        Q(q.breakers_open()),
                        thresholds=steps(GREEN, (1, RED)),
                        links=[
                            runbook("TaskSidecarBreakerOpen"),
                            api("Breakers (API)", "/v1/breakers"),
                        ],
                    ),
                    stat_panel(
                        "Sidecars scraped",
                        "Sidecar processes of the selection that Prometheus scrapes now.",
                        "short",
                        Q(q.sidecars_scraped()),
                        thresholds=steps(RED, (1, GREEN)),
                        links=[runbook("TaskSidecarNotScraped")],
                    ),
                ],
            ),
            Row(
                "Executions",
                [
                    timeseries_panel(
                        "Executions by outcome",
                        "Runs per second, successes and failures (last 5 minutes).",
                        "ops",
                        [Q(q.events_rate_by_outcome(), "{{outcome}}")],
                        stacked=True,
                    ),
                    timeseries_panel(
                        "Success rate by task",
                        "Successful runs / all runs per task over 5 minutes (recording rule "
                        "shared with the TaskSidecarTaskSuccessRateLow alert).",
                        "percentunit",
                        [
                            Q(q.success_ratio_by_task(), "{{task}}"),
                            Q(q.success_ratio_now(), "all selected tasks"),
                        ],
                        thresholds=success_steps,
                        links=[runbook("TaskSidecarTaskSuccessRateLow")],
                        max_value=1,
                    ),
                    timeseries_panel(
                        "Error budget burn rate",
                        "How many times faster than the task success SLO allows the error "
                        "budget burns, per window. Each burn-rate alert fires when both of "
                        "its windows are above its rate; orange above 1x (the budget would "
                        "not last the period), red above the first page pair's rate.",
                        "x",
                        [Q(q.slo_burn_rates(), "{{window}}")],
                        thresholds=steps(GREEN, (1, ORANGE), (num("slo.page.0.burn_rate"), RED)),
                        links=[runbook("TaskSidecarErrorBudgetBurn")],
                    ),
                    timeseries_panel(
                        "Queue depth",
                        "Tasks waiting per queue, as workers report them (or as probed on "
                        "the broker).",
                        "short",
                        [Q(q.queue_depth(), "{{queue}}")],
                        thresholds=steps(GREEN, (num("panels.queue_depth_high"), ORANGE)),
                    ),
                ],
            ),
            Row(
                "The sidecar",
                [
                    timeseries_panel(
                        "Hook latency (p99)",
                        "Time the sidecar takes to answer each hook.",
                        "s",
                        [Q(q.hook_latency(0.99), "{{hook}}")],
                        width=8,
                    ),
                    timeseries_panel(
                        "Hook calls",
                        "Hook calls per second.",
                        "reqps",
                        [Q(q.hook_rate(), "{{hook}}")],
                        width=8,
                    ),
                    timeseries_panel(
                        "Backends and spool",
                        "1 when Redis/PostgreSQL answer; DLQ writes waiting in the local "
                        "spool (PostgreSQL unavailable).",
                        "short",
                        [
                            Q(q.backends_up(), "{{backend}} up"),
                            Q(q.spool_pending(), "spooled DLQ writes"),
                        ],
                        width=8,
                    ),
                    timeseries_panel(
                        "Policy reloads",
                        "Reloads of policies.yaml; a failed one kept the old policy.",
                        "short",
                        [Q(q.policy_reloads(), "{{result}}")],
                        thresholds=steps(GREEN),
                        bars=True,
                        width=24,
                        height=6,
                    ),
                ],
            ),
        ],
        time_from="now-24h",
    )
