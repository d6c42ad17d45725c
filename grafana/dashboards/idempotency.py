"""Idempotency & schedules: duplicates caught, claim latency, periodic-schedule health.

The seed's "Idempotency analysis", "Schedule conflicts" and "Task monitoring" dashboards.
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
    api,
    bar_panel,
    dashboard,
    num,
    runbook,
    stat_panel,
    steps,
    text_panel,
    timeseries_panel,
)

SCHEDULES_HELP = """\
Conflict details, recommended minute offsets and the table of active schedules come from
the sidecar's analysis of the `schedules:` in policies.yaml and those workers report:

- [Schedule health report](${sidecar_url}/v1/schedules/health) (role `viewer`)

A hotspot is a minute where too many periodic tasks start; a conflict is two runs of a
schedule that overlap (expected duration longer than the interval).
"""


def build() -> Dashboard:
    dup_steps = steps(
        GREEN, (num("duplicate_rate.target"), ORANGE), (num("duplicate_rate.warning_above"), RED)
    )
    latency_steps = steps(
        GREEN,
        (num("panels.claim_latency_warning"), ORANGE),
        (num("panels.claim_latency_critical"), RED),
    )
    health_steps = steps(
        RED,
        (num("panels.schedule_health_critical"), ORANGE),
        (num("panels.schedule_health_warning"), GREEN),
    )
    dup_links = [runbook("TaskSidecarDuplicateRateHigh")]
    return dashboard(
        "idempotency",
        "task-sidecar / Idempotency & schedules",
        "Idempotency hit (duplicate) rate by scope, claim latency by backend, and the health "
        "of the periodic schedule.",
        [
            Row(
                "Idempotency",
                [
                    stat_panel(
                        "Duplicate rate",
                        "Claims that found the key already taken (hits) / hits + misses, "
                        "over the time range. Orange above the target, red above the "
                        "alerting threshold (both set in the mixin config).",
                        "percentunit",
                        Q(q.duplicate_ratio_in_range()),
                        thresholds=dup_steps,
                        links=dup_links,
                        decimals=2,
                    ),
                    timeseries_panel(
                        "Duplicate rate by scope",
                        "Hits / (hits + misses) over 5 minutes (recording rule shared with "
                        "the TaskSidecarDuplicateRateHigh alert).",
                        "percentunit",
                        [Q(q.duplicate_ratio_by_scope(), "{{scope}}")],
                        thresholds=dup_steps,
                        links=dup_links,
                        width=10,
                    ),
                    bar_panel(
                        "Duplicates by scope",
                        "Duplicate claims (hits) per scope over the time range.",
                        "short",
                        Q(q.claims_in_range_by_scope("hit"), "{{scope}}", instant=True),
                        links=dup_links,
                        width=5,
                    ),
                    bar_panel(
                        "Unique keys by scope",
                        "First claims (misses): the distinct keys seen, per scope.",
                        "short",
                        Q(q.claims_in_range_by_scope("miss"), "{{scope}}", instant=True),
                        width=5,
                    ),
                    bar_panel(
                        "Top duplicate tasks",
                        "The ten tasks with the highest duplicate (hit) rate over the time "
                        "range: hits / (hits + misses) of their claims. Claims from clients "
                        "that do not send task_name count under __unnamed__.",
                        "percentunit",
                        Q(q.top_duplicate_tasks(10), "{{task}}", instant=True),
                        thresholds=dup_steps,
                        links=dup_links,
                    ),
                    timeseries_panel(
                        "Claims per hour",
                        "Hits, misses and errors per hour (the seed's hourly timeline).",
                        "short",
                        [Q(q.claims_hourly_by_result(), "{{result}}")],
                        bars=True,
                        stacked=True,
                        width=8,
                    ),
                    timeseries_panel(
                        "Claims by result",
                        "Claims per second; errors are claims a backend could not answer.",
                        "ops",
                        [Q(q.claims_rate_by_result(), "{{result}}")],
                        stacked=True,
                        width=8,
                    ),
                    timeseries_panel(
                        "Claim latency (p50, p99) by backend",
                        "Time to answer a claim. Seed targets: Redis below 10 ms, PostgreSQL "
                        "below 50 ms.",
                        "s",
                        [
                            Q(q.claim_latency(0.5), "p50 {{backend}}"),
                            Q(q.claim_latency(0.99), "p99 {{backend}}"),
                        ],
                        thresholds=latency_steps,
                        width=24,
                        height=7,
                    ),
                ],
            ),
            Row(
                "Schedules",
                [
                    stat_panel(
                        "Schedule health score",
                        "0-100: 100 is a schedule with no hotspots and no conflicts.",
                        "none",
                        Q(q.schedule_health_score()),
                        thresholds=health_steps,
                        links=[api("Schedule health report (API)", "/v1/schedules/health")],
                    ),
                    stat_panel(
                        "Hotspots",
                        "Minutes where too many periodic tasks start.",
                        "short",
                        Q(q.schedule_hotspots()),
                        thresholds=steps(GREEN, (1, ORANGE)),
                    ),
                    stat_panel(
                        "Conflicts",
                        "Overlapping runs of periodic tasks.",
                        "short",
                        Q(q.schedule_conflicts()),
                        thresholds=steps(GREEN, (1, RED)),
                    ),
                    timeseries_panel(
                        "Schedule health over time",
                        "Score, hotspots and conflicts after each analysis.",
                        "short",
                        [
                            Q(q.schedule_health_score(), "health score"),
                            Q(q.schedule_hotspots(), "hotspots"),
                            Q(q.schedule_conflicts(), "conflicts"),
                        ],
                        width=6,
                    ),
                    text_panel("Schedule details", SCHEDULES_HELP, width=6),
                    bar_panel(
                        "Starts per hour of day (UTC)",
                        "Periodic-task starts in each hour of the day, all queues together "
                        "(the seed's 24-hour load distribution).",
                        "short",
                        Q(q.schedule_starts_by_hour(), "{{hour}}h", instant=True),
                        vertical=True,
                        width=24,
                        height=7,
                    ),
                ],
            ),
        ],
    )
