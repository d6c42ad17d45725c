"""DLQ explorer: the dead-letter records themselves, read from PostgreSQL (issue 18).

Grafana's PostgreSQL datasource, connected as the role `task_sidecar_reader`, reads the
views of sidecar/store/sql/postgres/0010_dlq_explorer.sql and 0011_schedule_explorer.sql
(and may read nothing else):
kwargs come masked by the policy's `dlq.explorer.redact_kwargs`, args hidden unless
`show_args`. Every SQL query of the dashboard is here; tests/test_dlq_explorer.py runs
each one against a real database, as the reader, with the variables expanded as Grafana
expands them. PostgreSQL only: the embedded SQLite store has no explorer.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.models import dashboard as models

from sidecar.mixin.rules import DASHBOARDS

from .common import (
    PG_TYPE,
    SQL_ALL,
    Row,
    Sql,
    dashboard,
    runbook,
    sql_in,
    sql_panel,
    sql_table_panel,
    sql_variable,
    text_panel,
    timeseries_panel,
)

UID = DASHBOARDS["dlq_explorer"]
STATUSES = ("pending", "retrying", "resolved", "abandoned")

# --- the filters every list shares --------------------------------------------------------

# `q`: a case-insensitive substring of the task id, exception type, message or traceback,
# as `GET /v1/dlq?q=` searches (the trigram index of 0008 answers it). `sqlstring` quotes
# the text (a quote in it doubled), so what is typed is a value, never SQL.
SEARCH = "(${q:sqlstring} = '' OR search_text ILIKE '%' || ${q:sqlstring} || '%')"
FILTERS = " AND ".join(
    [
        sql_in("status", "status"),
        sql_in("task_name", "task"),
        sql_in("failure_type", "failure_type"),
        SEARCH,
    ]
)
RECORD = "${record:sqlstring}"
AGE = "justify_interval(date_trunc('second', now() - {}))::text"

# --- the queries ------------------------------------------------------------------------------

TASK_VALUES = "SELECT DISTINCT task_name FROM dlq_explorer ORDER BY 1"
FAILURE_TYPE_VALUES = "SELECT DISTINCT failure_type FROM dlq_explorer ORDER BY 1"

RECORDS = Sql(f"""\
SELECT id,
       created_at AS arrived,
       {AGE.format("created_at")} AS age,
       task_name AS task,
       failure_type,
       left(message, 200) AS message,
       dlq_retries,
       status
FROM dlq_explorer
WHERE $__timeFilter(created_at) AND {FILTERS}
ORDER BY created_at DESC, id
LIMIT 500""")

RECORD_FIELDS = Sql(f"""\
SELECT f.field, f.value
FROM dlq_explorer r
CROSS JOIN LATERAL (VALUES
    (1, 'id', r.id),
    (2, 'task', r.task_name),
    (3, 'task id', r.task_id),
    (4, 'queue', r.queue),
    (5, 'status', r.status),
    (6, 'failure type', r.failure_type),
    (7, 'category', r.category),
    (8, 'remediation', r.remediation),
    (9, 'exception', r.exception_type),
    (10, 'message', r.message),
    (11, 'attempts', r.attempts::text),
    (12, 'DLQ retries', r.dlq_retries::text),
    (13, 'arrived', r.created_at::text),
    (14, 'updated', r.updated_at::text),
    (15, 'last requeue error', r.last_error)
) AS f(n, field, value)
WHERE r.id = {RECORD}
ORDER BY f.n""")

TRACEBACK = Sql(f"SELECT traceback FROM dlq_explorer WHERE id = {RECORD}")

ARGUMENTS = Sql(f"SELECT args, kwargs FROM dlq_explorer WHERE id = {RECORD}")

AUDIT_TRAIL = Sql(f"""\
SELECT at AS time, actor, action, from_status, reason, details::text AS details
FROM dlq_explorer_audit
WHERE record_ids @> ARRAY[{RECORD}] AND record_id = {RECORD}
ORDER BY at, id""")

# The commands of sidecar/cli/dlq.py (ids are uuids: nothing to quote for the shell).
COMMANDS = Sql(f"""\
SELECT c.action, c.command
FROM dlq_explorer r
CROSS JOIN LATERAL (VALUES
    (1, 'show', 'task-sidecar dlq show ' || r.id),
    (2, 'retry (pending records)', 'task-sidecar dlq retry ' || r.id),
    (3, 'abandon', 'task-sidecar dlq abandon ' || r.id || ' --reason ''…''')
) AS c(n, action, command)
WHERE r.id = {RECORD}
ORDER BY c.n""")

ARRIVALS = Sql(
    f"""\
SELECT $__timeGroupAlias(created_at, $__interval), failure_type AS metric, count(*) AS value
FROM dlq_explorer
WHERE $__timeFilter(created_at) AND {FILTERS}
GROUP BY 1, 2
ORDER BY 1, 2""",
    time_series=True,
)

# Whatever the time range: a record that waits is the point.
OLDEST_PENDING = Sql(f"""\
SELECT task_name AS task,
       count(*) AS pending,
       min(created_at) AS oldest,
       {AGE.format("min(created_at)")} AS waiting
FROM dlq_explorer
WHERE status = 'pending' AND {sql_in("task_name", "task")}
  AND {sql_in("failure_type", "failure_type")}
GROUP BY task_name
ORDER BY oldest, task
LIMIT 50""")

# --- the last schedule analysis (0011_schedule_explorer.sql) ----------------------------------

SCHEDULE_CONFLICTS = Sql("""\
SELECT kind, tasks, queue, first_overlap, occurrences, detail
FROM schedule_explorer_conflicts
ORDER BY occurrences DESC, first_overlap, tasks
LIMIT 200""")

SCHEDULE_RECOMMENDATIONS = Sql("""\
SELECT task, cron, new_cron, minute_offset, reason, score, score_after
FROM schedule_explorer_recommendations
ORDER BY task
LIMIT 200""")

SCHEDULES = Sql("""\
SELECT name, cron, queue, expected_duration_seconds AS expected_duration, timezone, source,
       coalesce(recommended_cron, '') AS recommended_cron, analysed_at
FROM schedule_explorer_schedules
ORDER BY name
LIMIT 1000""")

ABOUT = """\
Dead-letter records from PostgreSQL, read as the role `task_sidecar_reader` (views only).
Click a record's id to open it below. kwargs keys of the policy's
`dlq.explorer.redact_kwargs` read `[redacted]`; args read `[hidden]` unless `show_args`.
`Search` matches part of the task id, exception type, message or traceback.
Act with `task-sidecar dlq …` (the commands are in the record's section) or the
action API; this dashboard only reads.
"""


def _link_to_record() -> dash.DashboardLink:
    """A records row opens this dashboard on it, keeping the filters and time range."""
    keep = "&".join(
        f"${{{name}:queryparam}}" for name in ("postgres", "status", "task", "failure_type", "q")
    )
    return dash.DashboardLink("Open this record").url(
        f"/d/{UID}/{UID}?${{__url_time_range}}&{keep}&var-record=${{__data.fields.id}}"
    )


def _variables() -> list:
    everything = models.VariableOption(selected=True, text="All", value="$__all")
    empty = models.VariableOption(selected=True, text="", value="")
    return [
        dash.DatasourceVariable("postgres").label("PostgreSQL").type(PG_TYPE),
        dash.CustomVariable("status")
        .label("Status")
        .values(",".join(STATUSES))
        .multi(True)
        .include_all(True)
        .all_value(SQL_ALL)
        .current(everything),
        sql_variable("task", "Task", TASK_VALUES),
        sql_variable("failure_type", "Failure type", FAILURE_TYPE_VALUES),
        dash.TextBoxVariable("q")
        .label("Search")
        .description("Part of a task id, exception type, message or traceback")
        .default_value("")
        .current(empty),
        dash.TextBoxVariable("record")
        .label("Record")
        .description("A DLQ record id: click one in Records")
        .default_value("")
        .current(empty),
    ]


def build() -> Dashboard:
    records = sql_table_panel(
        "Records",
        "Dead letters that arrived in the time range, newest first (at most 500), by the "
        "filters above. Click an id to open the record.",
        RECORDS,
        data_links=[_link_to_record()],
        width=18,
        height=12,
    )
    rows = [
        Row(
            "Records",
            [records, text_panel("About this dashboard", ABOUT, width=6, height=12)],
        ),
        Row(
            "Record ${record}",
            [
                sql_table_panel(
                    "Record", "The record's fields.", RECORD_FIELDS, wrap=True, width=8, height=12
                ),
                sql_table_panel(
                    "Traceback",
                    "As the worker reported it.",
                    TRACEBACK,
                    wrap=True,
                    width=16,
                    height=12,
                ),
                sql_table_panel(
                    "Arguments",
                    "args and kwargs, masked as the policy's dlq.explorer says.",
                    ARGUMENTS,
                    wrap=True,
                    width=12,
                    height=6,
                ),
                sql_table_panel(
                    "Act on this record",
                    "The exact commands (an operator token in TASK_SIDECAR_TOKEN). A retry "
                    "takes a pending record only; abandon needs a reason for the audit log.",
                    COMMANDS,
                    width=12,
                    height=6,
                ),
                sql_table_panel(
                    "Audit trail",
                    "Every action that named this record (retries, abandons, bulk actions).",
                    AUDIT_TRAIL,
                    width=24,
                    height=8,
                ),
            ],
        ),
        Row(
            "Trends",
            [
                sql_panel(
                    timeseries_panel(
                        "Arrivals by failure type",
                        "Dead letters per interval, by failure type, by the filters above.",
                        "short",
                        [],
                        stacked=True,
                        bars=True,
                        width=14,
                    ),
                    ARRIVALS,
                ),
                sql_table_panel(
                    "Oldest pending by task",
                    "Pending records per task and how long the oldest has waited, whatever "
                    "the time range.",
                    OLDEST_PENDING,
                    width=10,
                ).links([runbook("TaskSidecarDLQDepthHigh")]),
            ],
        ),
        Row(
            "Schedules (the last analysis)",
            [
                sql_table_panel(
                    "Schedule conflicts",
                    "Schedules whose runs overlap on one queue, or overlap themselves, within "
                    "the next 24 hours: the conflicts the Conflicts gauge counts.",
                    SCHEDULE_CONFLICTS,
                    wrap=True,
                    width=12,
                    height=8,
                ),
                sql_table_panel(
                    "Schedule recommendations",
                    "Minutes to move a schedule by to spread its starts, with the score now and "
                    "with all the advice taken.",
                    SCHEDULE_RECOMMENDATIONS,
                    wrap=True,
                    width=12,
                    height=8,
                ),
                sql_table_panel(
                    "Schedules",
                    "Every schedule analysed: from the policy file or reported by a worker "
                    "(PUT /v1/schedules, e.g. a Celery beat_schedule).",
                    SCHEDULES,
                    width=24,
                    height=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "dlq_explorer",
        "task-sidecar / DLQ explorer",
        "Dead-letter records from PostgreSQL: filter, search, open one (traceback, masked "
        "arguments, audit trail, the commands to act on it); the last schedule analysis.",
        rows,
        time_from="now-7d",
        template=_variables(),
    )
