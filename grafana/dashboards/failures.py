"""Failures & DLQ: what fails, why, what to do about it, and what waits in the DLQ.

The seed's "Failure taxonomy", "DLQ management" and "Operator" dashboards.
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
    bar_panel,
    dashboard,
    hole,
    num,
    pie_panel,
    runbook,
    stat_panel,
    steps,
    table_panel,
    text_panel,
    timeseries_panel,
)

DLQ_ACTIONS = """\
The dead-letter queue is worked through the sidecar's action API (role `operator` for
changes, `viewer` for reads) or `task-sidecar dlq …`:

- [Pending records](${sidecar_url}/v1/dlq?status=pending) · \
[retrying](${sidecar_url}/v1/dlq?status=retrying) · \
[export CSV](${sidecar_url}/v1/dlq/export.csv?status=pending)
- Retry one: `POST /v1/dlq/{id}/retry` `{"priority": "HIGH"}`
- Bulk retry: `POST /v1/dlq/bulk-retry` `{"filter": {"task_name": …, "failure_type": …},
  "priority": …, "rate_per_second": …}`
- Abandon: `POST /v1/dlq/{id}/abandon` `{"reason": …}`
- [Failure trends, 24 h](${sidecar_url}/v1/failure-trends?hours=24)

Runbooks: [DLQ depth](RUNBOOK_DLQ) · [system failures](RUNBOOK_SYSTEM)
"""


def build() -> Dashboard:
    system_types = hole("system_failure_types", "bar", "pq")
    dlq_steps = steps(GREEN, (above("dlq.warning"), ORANGE), (above("dlq.critical"), RED))
    age_steps = steps(
        GREEN,
        (num("dlq.oldest_pending_warning"), ORANGE),
        (num("dlq.oldest_pending_critical"), RED),
    )
    dlq_links = [
        runbook("TaskSidecarDLQDepthHigh"),
        api("Pending DLQ records (API)", "/v1/dlq?status=pending"),
    ]
    by_task = api("DLQ records of this task (API)", "/v1/dlq?task_name=${__field.labels.task}")
    actions_help = DLQ_ACTIONS.replace(
        "RUNBOOK_DLQ", runbook("TaskSidecarDLQDepthHigh").build().url or ""
    ).replace("RUNBOOK_SYSTEM", runbook("TaskSidecarSystemFailure").build().url or "")
    return dashboard(
        "failures",
        "task-sidecar / Failures & DLQ",
        "Failure types and remediations, the tasks that fail most, and the dead-letter queue.",
        [
            Row(
                "Failures",
                [
                    pie_panel(
                        "Failure type distribution",
                        "Failures by classified type over the time range.",
                        "short",
                        Q(q.failures_by_type_in_range(), "{{failure_type}}", instant=True),
                    ),
                    bar_panel(
                        "Top 10 failing tasks",
                        "Tasks with the most failures over the time range. Click a bar for "
                        "its DLQ records.",
                        "short",
                        Q(q.top_failing_tasks(10), "{{task}}", instant=True),
                        data_links=[by_task],
                    ),
                    timeseries_panel(
                        "Top 10 failing tasks over time",
                        "Failures per second of the ten tasks of the bars (the top 10 of the "
                        "whole time range), so a burst shows when it happened.",
                        "ops",
                        [Q(q.failures_rate_of_top_tasks(10), "{{task}}")],
                        width=8,
                    ),
                    pie_panel(
                        "Remediation mix",
                        "What the taxonomy recommends for the failures of the time range.",
                        "short",
                        Q(q.remediation_mix_in_range(), "{{remediation}}", instant=True),
                    ),
                    timeseries_panel(
                        "Failures by type",
                        "Failures per second by type (5-minute rate, recording rule).",
                        "ops",
                        [Q(q.failures_rate_by_type(), "{{failure_type}}")],
                        stacked=True,
                        width=8,
                    ),
                    timeseries_panel(
                        "Decisions",
                        "What the sidecar told workers to do with failures.",
                        "ops",
                        [Q(q.decisions_rate(), "{{outcome}}")],
                        stacked=True,
                        width=8,
                    ),
                    table_panel(
                        "System failures (OOM, disk full)",
                        "Failures that page on the first occurrence, per task.",
                        "short",
                        Q(q.system_failures_in_range(system_types), instant=True),
                        thresholds=steps(GREEN, (1, RED)),
                        links=[runbook("TaskSidecarSystemFailure")],
                        data_links=[by_task],
                        width=8,
                    ),
                    table_panel(
                        "Lost runs (started, never ended)",
                        "Runs whose worker died under them (SIGKILL, OOM, a crash), per task: "
                        "a task id past poison.max_lost_runs is dead-lettered and not run.",
                        "short",
                        Q(q.lost_runs_in_range(), instant=True),
                        thresholds=steps(GREEN, (1, ORANGE)),
                        links=[runbook("TaskSidecarLostRuns")],
                        data_links=[by_task],
                        width=16,
                    ),
                    bar_panel(
                        "Retries scheduled per failure",
                        "Retries decided per failure, by type, over the time range (the "
                        "seed's average retry count).",
                        "short",
                        Q(q.retries_per_failure_by_type(), "{{failure_type}}", instant=True),
                    ),
                    timeseries_panel(
                        "Retries scheduled per failure over time",
                        "Retries decided per failure, by type, in each rate window: the bars' "
                        "figure as a trend.",
                        "short",
                        [Q(q.retries_per_failure_rate_by_type(), "{{failure_type}}")],
                        width=8,
                    ),
                    timeseries_panel(
                        "Classification confidence (median)",
                        "Median confidence of the rule that classified each failure.",
                        "percentunit",
                        [Q(q.classification_confidence(0.5), "{{failure_type}}")],
                        thresholds=steps(RED, (0.5, ORANGE), (0.8, GREEN)),
                        max_value=1,
                        width=8,
                    ),
                    bar_panel(
                        "SLA breaches by tier",
                        "Failures of tasks older than their customer tier's SLA, over the "
                        "time range.",
                        "short",
                        Q(q.sla_breaches_in_range(), "{{tier}}", instant=True),
                        thresholds=steps(GREEN, (1, ORANGE)),
                    ),
                    timeseries_panel(
                        "SLA breaches by tier over time",
                        "SLA breaches per second by customer tier: when the bars' breaches "
                        "happened.",
                        "ops",
                        [Q(q.sla_breaches_rate(), "{{tier}}")],
                        stacked=True,
                        width=8,
                    ),
                    timeseries_panel(
                        "Priorities assigned",
                        "Priority and queue given to retried and dead-lettered tasks.",
                        "ops",
                        [Q(q.priority_assignments_rate(), "{{priority}} → {{queue}}")],
                        stacked=True,
                        width=8,
                    ),
                ],
            ),
            Row(
                "Dead-letter queue",
                [
                    stat_panel(
                        "DLQ depth",
                        "Pending + retrying records now.",
                        "short",
                        Q(q.dlq_backlog()),
                        thresholds=dlq_steps,
                        links=dlq_links,
                    ),
                    stat_panel(
                        "Oldest pending record",
                        "Age of the oldest pending DLQ record.",
                        "s",
                        Q(q.dlq_oldest_pending_age()),
                        thresholds=age_steps,
                        links=dlq_links,
                    ),
                    bar_panel(
                        "DLQ by status",
                        "Records per status (pending, retrying, resolved, abandoned).",
                        "short",
                        Q(q.dlq_depth_by_status(), "{{status}}", instant=True),
                        data_links=[
                            api(
                                "Records with this status (API)",
                                "/v1/dlq?status=${__field.labels.status}",
                            )
                        ],
                    ),
                    text_panel("Act on the DLQ", actions_help),
                    timeseries_panel(
                        "DLQ depth by status",
                        "Records per status over time; the dashed lines are the alert "
                        "thresholds of pending + retrying.",
                        "short",
                        [
                            Q(q.dlq_depth_by_status(), "{{status}}"),
                            Q(q.dlq_backlog(), "pending + retrying"),
                        ],
                        thresholds=dlq_steps,
                        links=dlq_links,
                    ),
                    timeseries_panel(
                        "Actions taken",
                        "Retries, bulk retries, abandons, exports, and records resolved by a "
                        "successful retry.",
                        "ops",
                        [Q(q.dlq_actions_rate(), "{{action}}")],
                        bars=True,
                        links=[runbook("TaskSidecarDLQRecovered")],
                    ),
                ],
            ),
        ],
    )
