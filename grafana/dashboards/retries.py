"""Retries & breakers: do retries work, how long do they wait, which breakers trip.

The seed's "Retry policy" and "Developer" dashboards.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from . import queries as q
from .common import (
    BLUE,
    GREEN,
    ORANGE,
    RED,
    Q,
    Row,
    api,
    bar_panel,
    dashboard,
    runbook,
    stat_panel,
    state_panel,
    steps,
    table_panel,
    timeseries_panel,
)

RETRY_STEPS = steps(RED, (0.3, ORANGE), (0.8, GREEN))  # policies.yaml adaptive: < 30 %, > 80 %


def build() -> Dashboard:
    breaker_links = [
        runbook("TaskSidecarBreakerOpen"),
        runbook("TaskSidecarBreakerRecovered"),
        api("Breakers (API)", "/v1/breakers"),
    ]
    return dashboard(
        "retries",
        "task-sidecar / Retries & breakers",
        "Retry success by task and failure type, retry delays, circuit breakers, adaptive "
        "adjustments and deferrals.",
        [
            Row(
                "Retries",
                [
                    timeseries_panel(
                        "Retry success rate by task and failure type",
                        "Runs that were retries and succeeded / all retried runs, over 5 "
                        "minutes (recording rule). Adaptive learning shortens delays above "
                        "80 % and lengthens them below 30 %.",
                        "percentunit",
                        [Q(q.retry_success_ratio(), "{{task}} {{failure_type}}")],
                        thresholds=RETRY_STEPS,
                        max_value=1,
                    ),
                    table_panel(
                        "Retry success over the time range",
                        "Per task and failure type (the seed's historical performance).",
                        "percentunit",
                        Q(q.retry_success_in_range(), instant=True),
                        thresholds=RETRY_STEPS,
                    ),
                    timeseries_panel(
                        "Retry delay (p50, p90) by failure type",
                        "Delay decided before each retry.",
                        "s",
                        [
                            Q(q.retry_delay_quantile(0.5), "p50 {{failure_type}}"),
                            Q(q.retry_delay_quantile(0.9), "p90 {{failure_type}}"),
                        ],
                        width=8,
                    ),
                    timeseries_panel(
                        "Average retry delay by failure type",
                        "Mean delay decided before a retry.",
                        "s",
                        [Q(q.retry_delay_average(), "{{failure_type}}")],
                        width=8,
                    ),
                    timeseries_panel(
                        "Retries scheduled",
                        "Retry decisions per second by failure type.",
                        "ops",
                        [Q(q.retries_scheduled_rate(), "{{failure_type}}")],
                        stacked=True,
                        width=8,
                    ),
                ],
            ),
            Row(
                "Circuit breakers",
                [
                    stat_panel(
                        "Breakers open",
                        "Breakers of the selected tasks that are open now.",
                        "short",
                        Q(q.breakers_open()),
                        thresholds=steps(GREEN, (1, RED)),
                        links=breaker_links,
                        height=8,
                    ),
                    state_panel(
                        "Breaker states",
                        "Each breaker (`task:FAILURE_TYPE`) over time.",
                        Q(q.breaker_state_code(), "{{breaker}}"),
                        states={0: ("closed", GREEN), 1: ("half-open", ORANGE), 2: ("open", RED)},
                        links=breaker_links,
                        width=10,
                    ),
                    timeseries_panel(
                        "Breaker transitions",
                        "State changes per breaker and target state.",
                        "short",
                        [Q(q.breaker_transitions(), "{{breaker}} → {{to}}")],
                        bars=True,
                        links=breaker_links,
                        width=10,
                    ),
                ],
            ),
            Row(
                "Adaptation and deferrals",
                [
                    timeseries_panel(
                        "Adaptive adjustments",
                        "Delays made shorter (retries succeed) or longer (they keep failing) "
                        "from past retry outcomes.",
                        "short",
                        [Q(q.adaptive_adjustments(), "{{direction}}")],
                        bars=True,
                        width=8,
                    ),
                    timeseries_panel(
                        "Deferrals by reason",
                        "Retries pushed back: to the off-peak window (the seed's cost "
                        "optimisation), by an open breaker, or by load.",
                        "short",
                        [Q(q.deferrals(), "{{reason}}")],
                        bars=True,
                        stacked=True,
                        width=8,
                    ),
                    bar_panel(
                        "Deferrals over the time range",
                        "Off-peak deferrals are work moved out of peak hours.",
                        "short",
                        Q(q.deferrals_in_range(), "{{reason}}", instant=True),
                        thresholds=steps(BLUE),
                    ),
                ],
            ),
        ],
    )
