"""End to end: a real sidecar driven by a scripted stream of hooks, a real Prometheus
scraping it and evaluating the generated rules, a real Alertmanager with the committed
routes delivering to a capture server that stands in for PagerDuty and Slack.

Every query of every dashboard panel is run through Prometheus' HTTP API and must return
data. Scrape and evaluation run every second and the alerts' `for:` is shortened to 1 s
(the rules are otherwise generated exactly as committed); Alertmanager's group timers are
1 s. Everything listens on free loopback ports and lives in temporary directories.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grafana.dashboards import DASHBOARDS, SQL_DASHBOARDS
from grafana.dashboards import render as render_dashboard
from sidecar.mixin import load_config, render_rules, rules_yaml

from .observability import (
    ROOT,
    AlertmanagerService,
    Captured,
    CaptureServer,
    PrometheusService,
    get_json,
    load_yaml,
    local_alertmanager_config,
    poll,
    start_service,
    write_yaml,
)
from .processes import SidecarProcess
from .services import free_port

# The job is not called task-sidecar (nothing depends on the name); the cluster label is
# set as a target label, as relabelling or an external label would.
CLUSTER, NAMESPACE, JOB = "e2e-cluster", "e2e", "billing-worker-sidecar"
# What Grafana would put in place of its variables when everything is selected.
VARIABLES = {
    "$cluster": CLUSTER,
    "$namespace": NAMESPACE,
    "$job": JOB,
    "$instance": ".*",
    "$task": ".*",
    "$__range": "10m",
    "$__rate_interval": "1m",
    "${sidecar_url}": "http://127.0.0.1",
}

VALUE_ERROR = {"type": "ValueError", "message": "Invalid data"}  # PERMANENT_VALIDATION
REFUSED = {"type": "ConnectionRefusedError", "errno": 111, "message": "Connection refused"}
RATE_LIMITED = {"type": "HTTPError", "http_status": 429, "message": "Too Many Requests"}
OUT_OF_MEMORY = {"type": "MemoryError"}
LOADED = {"queue_depth": 150, "customer_tier": "enterprise", "age_seconds": 7200}


@dataclass
class Stack:
    sidecar: SidecarProcess
    prometheus: PrometheusService
    alertmanager: AlertmanagerService
    capture: CaptureServer


# --- the scripted workload -----------------------------------------------------------------


def failure(sidecar: SidecarProcess, task: str, task_id: str, exc: dict, **extra: Any) -> dict:
    status, body = sidecar.call(
        "/v1/hooks/failure", {"task_id": task_id, "task_name": task, "exception": exc, **extra}
    )
    assert status == 200, body
    return body


def success(sidecar: SidecarProcess, task: str, task_id: str, **extra: Any) -> None:
    status, body = sidecar.call(
        "/v1/hooks/success", {"task_id": task_id, "task_name": task, **extra}
    )
    assert status == 200, body


def claim(sidecar: SidecarProcess, key: str, scope: str, task: str | None = None) -> bool:
    """A claim; without `task`, as a client older than `task_name` sends it."""
    body = {"key": key, "scope": scope} | ({"task_name": task} if task else {})
    status, body = sidecar.call("/v1/idempotency/claim", body)
    assert status == 200, body
    return body["claimed"]


def first_events(sidecar: SidecarProcess) -> str:
    """One event of each kind: every task-labelled series comes into being here.

    A counter series is created by its first event, which `rate()` cannot see; the rest of
    the workload is sent once Prometheus has scraped these.
    """
    dlq_id = failure(sidecar, "import.csv", "v0", VALUE_ERROR)["dlq_id"]
    failure(sidecar, "billing.charge", "b0", REFUSED)
    failure(sidecar, "mail.send", "m0", RATE_LIMITED, queue="default", context=LOADED)
    success(sidecar, "mail.send", "m0", attempt=1)
    failure(sidecar, "mail.send", "m0", RATE_LIMITED, attempt=1)
    failure(sidecar, "etl.load", "o0", OUT_OF_MEMORY)
    assert claim(sidecar, "order-1", "global", "billing.charge")
    return dlq_id


def workload(sidecar: SidecarProcess, first_dlq_id: str) -> None:
    # A run that started and never ended (its worker died): the next start counts it lost.
    for _ in range(2):
        status, _ = sidecar.call("/v1/hooks/start", {"task_id": "lost-1", "task_name": "mail.send"})
        assert status == 200
    # 59 more invalid rows: dead-lettered (DLQ above 50: critical), import.csv near 0 %.
    for i in range(1, 60):
        assert failure(sidecar, "import.csv", f"v{i}", VALUE_ERROR)["action"] == "dead_letter"
    # A payment dependency refuses connections: the breaker of a critical task opens and
    # the next run is deferred.
    for i in range(1, 3):
        failure(sidecar, "billing.charge", f"b{i}", REFUSED)
    status, answer = sidecar.call(
        "/v1/hooks/start", {"task_id": "b9", "task_name": "billing.charge"}
    )
    assert (status, answer["allow"]) == (200, False), answer
    # Rate-limited mail that succeeds on its retry: adaptive learning speeds it up.
    for i in range(1, 12):
        failure(sidecar, "mail.send", f"m{i}", RATE_LIMITED, queue="default", context=LOADED)
        success(sidecar, "mail.send", f"m{i}", attempt=1)
    failure(sidecar, "mail.send", "m-last", RATE_LIMITED, attempt=1, context=LOADED)
    failure(sidecar, "etl.load", "o1", OUT_OF_MEMORY)
    # Idempotency: one duplicate among fresh keys of several scopes.
    assert not claim(sidecar, "order-1", "global", "billing.charge")
    for scope in ("global", "user", "device", "task"):
        assert claim(sidecar, f"{scope}-fresh", scope)
    # A dead-lettered task that succeeds on its retry (same task id) resolves its record.
    success(sidecar, "import.csv", "v0", attempt=1, dlq_id=first_dlq_id)


# --- the stack -----------------------------------------------------------------------------------

# Periodic tasks for the schedule panels: three reports at the top of the hour make a
# hotspot-prone minute; a 10-minute sync that runs for 15 minutes overlaps itself.
SCHEDULES = """\
schedules:
  - {name: report-a, cron: "0 * * * *", queue: reports}
  - {name: report-b, cron: "0 * * * *", queue: reports}
  - {name: report-c, cron: "0 * * * *", queue: reports}
  - {name: sync-crm, cron: "*/10 * * * *", queue: default, expected_duration: 15m}
"""


def policies(tmp: Path) -> Path:
    """The shipped policy file with a few schedules to analyse."""
    text = (ROOT / "policies.yaml").read_text()
    assert text.count("\nschedules: []") == 1
    path = tmp / "policies.yaml"
    path.write_text(text.replace("\nschedules: []", "\n" + SCHEDULES))
    return path


def prometheus_config(sidecar_port: int, alertmanager_port: int, rules: Path) -> dict:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{sidecar_port}"],
                        "labels": {"cluster": CLUSTER, "namespace": NAMESPACE},
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("observability")
    with CaptureServer() as capture:
        am_config = local_alertmanager_config(
            load_yaml(ROOT / "alerting" / "alertmanager.yml"), tmp / "secrets", capture.url
        )
        alertmanager = start_service(
            AlertmanagerService, tmp, write_yaml(tmp / "alertmanager.yml", am_config)
        )
        sidecar = SidecarProcess(tmp, policies=str(policies(tmp)), poll_interval="1s").wait_ready()
        rules = tmp / "rules.yaml"
        rules.write_text(rules_yaml(render_rules(load_config(), for_override="1s")))
        config = prometheus_config(sidecar.port, alertmanager.port, rules)
        prometheus = start_service(
            PrometheusService, tmp, write_yaml(tmp / "prometheus.yml", config)
        )
        try:
            first_dlq_id = first_events(sidecar)
            poll(
                lambda: prometheus.query('task_sidecar_failures_total{task="etl.load"}'),
                30,
                "Prometheus scraped the sidecar",
            )
            workload(sidecar, first_dlq_id)
            yield Stack(sidecar, prometheus, alertmanager, capture)
        finally:
            prometheus.close()
            sidecar.__exit__()
            alertmanager.close()


# --- dashboards ----------------------------------------------------------------------------------


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr.replace('"$1"', ""), f"unknown variable in {expr}"
    return expr


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for uid, build in DASHBOARDS.items():
        if uid in SQL_DASHBOARDS:
            continue  # PostgreSQL's: tests/test_dlq_explorer.py runs them
        for panel in json.loads(render_dashboard(build))["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{uid} / {panel['title']} / {target['refId']}", target["expr"]))
    return out


def has_number(result: list[dict[str, Any]]) -> bool:
    """At least one sample that is a number (a ratio of nothing is NaN)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


class TestDashboardsAgainstPrometheus:
    """Every dashboard query reads series that exist, with the variables filled in."""

    @pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=lambda v: v[:70])
    def test_every_panel_query_returns_data(self, stack: Stack, panel: str, expr: str) -> None:
        query = substitute(expr)
        result = poll(
            lambda: has_number(stack.prometheus.query(query)) and stack.prometheus.query(query),
            20,
            f"{panel}: {query}",
        )
        assert result

    def test_top_duplicate_tasks_names_the_task_with_duplicates(self, stack: Stack) -> None:
        """billing.charge's second claim was a duplicate; its first made the task's series
        (at 1 miss, which increase() cannot see), so its rate over the range is 1 hit / 1.
        The claims of no task (an older client) were all first claims: left out (> 0)."""
        (expr,) = [e for p, e in panel_queries() if "/ Top duplicate tasks /" in p]
        query = substitute(expr)
        result = poll(lambda: stack.prometheus.query(query), 20, query)
        rates = {s["metric"]["task"]: float(s["value"][1]) for s in result}
        assert rates == {"billing.charge": pytest.approx(1.0)}

    @pytest.mark.parametrize("uid", sorted(set(DASHBOARDS) - SQL_DASHBOARDS))
    def test_template_variables_have_values(self, stack: Stack, uid: str) -> None:
        for variable in json.loads(render_dashboard(DASHBOARDS[uid]))["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            selector, label = substitute(match.group(1)), match.group(2)
            values = {s.get(label) for s in stack.prometheus.series(selector)} - {None}
            assert values, f"{uid}: ${variable['name']} would offer nothing ({selector})"


class TestRules:
    def test_every_rule_evaluates_without_error(self, stack: Stack) -> None:
        def evaluated() -> list[dict]:
            groups = get_json(f"{stack.prometheus.url}/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            never = "0001-01-01T00:00:00Z"
            return rules if all(r["lastEvaluation"] != never for r in rules) else []

        rules = poll(evaluated, 20, "every rule evaluated once")
        broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not broken


# --- alert delivery ------------------------------------------------------------------------------


def is_pagerduty(alertname: str) -> Any:
    def check(item: Captured) -> bool:
        body = item.body
        return (
            item.path == "/pagerduty"
            and body.get("event_action") == "trigger"
            and alertname in body["payload"]["summary"]
        )

    return check


def is_slack(receiver: str, alertname: str, task: str = "") -> Any:
    def check(item: Captured) -> bool:
        title = (item.body.get("attachments") or [{}])[0].get("title", "")
        return item.path == f"/slack/{receiver}" and alertname in title and task in title

    return check


class TestAlertDelivery:
    """The alerts the workload causes reach the right receiver with the right content."""

    def test_dlq_depth_critical_pages_pagerduty(self, stack: Stack) -> None:
        sent = stack.capture.wait_for(is_pagerduty("TaskSidecarDLQDepthHigh"), 40)
        body = sent.body
        assert body["routing_key"] == "e2e-routing-key"  # read from the secret file
        assert body["payload"]["severity"] == "critical"
        assert body["dedup_key"]
        details = body["payload"]["custom_details"]
        assert details["summary"] == "The dead-letter queue holds more than 50 open tasks"
        assert re.match(
            rf"\d+ dead-lettered tasks are pending or retrying in e2e/{JOB}",
            details["description"],
        )
        assert details["runbook_url"].endswith("/docs/runbooks/TaskSidecarDLQDepthHigh.md")
        assert details["dashboard_url"].endswith(
            f"/d/task-sidecar-failures?var-cluster={CLUSTER}&var-namespace={NAMESPACE}&var-job={JOB}"
        )
        assert {link["text"] for link in body["links"]} == {"Runbook", "Dashboard"}

    def test_low_success_rate_warns_on_slack(self, stack: Stack) -> None:
        sent = stack.capture.wait_for(
            is_slack("slack-task-alerts", "TaskSidecarTaskSuccessRateLow", "(import.csv)"), 40
        )
        assert sent.body["channel"] == "#task-alerts"
        attachment = sent.body["attachments"][0]
        assert attachment["title"].startswith("[FIRING:1] TaskSidecarTaskSuccessRateLow")
        assert "(import.csv)" in attachment["title"]
        assert "*import.csv succeeds less than 90% of the time*" in attachment["text"]
        # 1 success (the DLQ retry) in 61 runs: the success series exists from the first
        # event on, so that success is counted too.
        share = re.search(r"Only ([\d.]+)% of the runs of import.csv in ", attachment["text"])
        assert share is not None, attachment["text"]
        assert 0 < float(share[1]) < 5
        urls = {action["text"]: action["url"] for action in attachment["actions"]}
        assert urls["Runbook"].endswith("/TaskSidecarTaskSuccessRateLow.md")
        assert urls["Dashboard"].endswith(
            f"/d/task-sidecar-overview?var-cluster={CLUSTER}&var-namespace={NAMESPACE}"
            f"&var-job={JOB}&var-task=import.csv"
        )

    def test_recovered_dlq_record_notifies_slack_info(self, stack: Stack) -> None:
        sent = stack.capture.wait_for(is_slack("slack-task-info", "TaskSidecarDLQRecovered"), 40)
        assert sent.body["channel"] == "#task-info"
        assert "succeeded on a retry and were resolved" in sent.body["attachments"][0]["text"]

    def test_critical_breaker_and_oom_page(self, stack: Stack) -> None:
        stack.capture.wait_for(is_pagerduty("TaskSidecarBreakerOpen"), 40)
        stack.capture.wait_for(is_pagerduty("TaskSidecarSystemFailure"), 40)


# --- the metrics port ----------------------------------------------------------------------------


@functools.cache
def serve_help() -> str:
    command = [sys.executable, "-m", "sidecar.cli", "serve", "--help"]
    return subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout


# The flag is the sidecar's own (the lead's part of issue 15); until a build has it, this
# test has nothing to run against.
needs_metrics_port = pytest.mark.skipif(
    "--metrics-port" not in serve_help(), reason="`task-sidecar serve --metrics-port` is missing"
)


@needs_metrics_port
class TestMetricsPort:
    """The sidecar with its API on one loopback port and /metrics, /healthz and /readyz on
    another (as in a worker pod, where only the metrics port is reachable), scraped by a
    real Prometheus."""

    def test_prometheus_scrapes_the_metrics_port(self, tmp_path: Path) -> None:
        port = free_port()
        settings = {"metrics_port": str(port), "metrics_host": "127.0.0.1"}
        with SidecarProcess(tmp_path, **settings) as sidecar:
            assert sidecar.port != port
            for path in ("/healthz", "/readyz"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    assert r.status == 200
            config = {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "metrics-port",
                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                    }
                ],
            }
            prometheus = start_service(
                PrometheusService, tmp_path, write_yaml(tmp_path / "prometheus.yml", config)
            )
            try:
                for name in ("process_resident_memory_bytes", "task_sidecar_build_info"):
                    found = poll(
                        lambda name=name: prometheus.query(f'{name}{{job="metrics-port"}}'),
                        30,
                        f"{name} scraped from the metrics port",
                    )
                    assert float(found[0]["value"][1]) > 0, name
                (info,) = prometheus.query('task_sidecar_build_info{job="metrics-port"}')
                assert info["metric"]["version"]
            finally:
                prometheus.close()
