"""The Grafana dashboards: skeletons and the output for the default mixin config are
committed and current, well formed, read only series the sidecar exports (or the recording
rules define) for the defaults and for a config unlike them, and cover the seed."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.dashboards import DASHBOARDS, OUTPUT_DIR, SQL_DASHBOARDS, render, render_all
from grafana.dashboards.__main__ import main as generate
from grafana.dashboards.common import PG_TYPE
from sidecar.mixin import dashboards, load_config, render_rules
from sidecar.mixin.skeleton import HOLE

from .observability import (
    ROOT,
    TARGET_LABELS,
    exported_series,
    load_yaml,
    recording_rule_labels,
    selectors,
    unknown_series,
)

CUSTOM_CONFIG = ROOT / "alerting" / "custom.config.yaml"

TITLES = {
    "Overview": "task-sidecar-overview",
    "Failures & DLQ": "task-sidecar-failures",
    "Retries & breakers": "task-sidecar-retries",
    "Idempotency & schedules": "task-sidecar-idempotency",
    "DLQ explorer": "task-sidecar-dlq-explorer",
}
# The dashboards on Prometheus; the others read PostgreSQL (TestSqlDashboards).
PROMETHEUS = [uid for uid in DASHBOARDS if uid not in SQL_DASHBOARDS]


def dashboard(uid: str) -> dict[str, Any]:
    return json.loads(render(DASHBOARDS[uid]))


def panels(uid: str) -> list[dict[str, Any]]:
    return [p for p in dashboard(uid)["panels"] if p["type"] != "row"]


def all_queries(boards: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    boards = boards or {uid: dashboard(uid) for uid in PROMETHEUS}
    out = []
    for uid, board in boards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{uid}/{panel['title']}/{target['refId']}", target["expr"]))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                out.append((f"{uid}/${variable['name']}", variable["query"]["query"]))
    return out


def custom_boards() -> dict[str, dict[str, Any]]:
    found = dashboards(load_config(CUSTOM_CONFIG))
    boards = {name.removesuffix(".json"): json.loads(text) for name, text in found.items()}
    return {uid: board for uid, board in boards.items() if uid not in SQL_DASHBOARDS}


class TestGeneratedFiles:
    """The committed JSON is exactly what the generators produce."""

    def test_committed_json_is_current(self) -> None:
        rendered = render_all()
        for path, text in rendered.items():
            assert path.exists(), f"{path} missing: run `make dashboards`"
            assert path.read_text() == text, f"{path} is stale: run `make dashboards`"
        outputs = {p for p in rendered if p.parent == OUTPUT_DIR}
        assert set(OUTPUT_DIR.glob("*.json")) == outputs, "stray JSON files"

    def test_the_package_renders_the_committed_json(self) -> None:
        """What `task-sidecar mixin render` writes for the defaults is the committed JSON."""
        for name, text in dashboards(load_config()).items():
            assert (OUTPUT_DIR / name).read_text() == text

    @pytest.mark.parametrize("config", [None, CUSTOM_CONFIG], ids=["defaults", "custom"])
    def test_every_hole_is_filled(self, config: Any) -> None:
        for name, text in dashboards(load_config(config)).items():
            assert not HOLE.search(text), name
            assert "«" not in text, name

    def test_check_mode_agrees(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert generate(["--check"]) == 0
        assert capsys.readouterr().err == ""

    def test_output_is_deterministic_sorted_json(self) -> None:
        for uid, build in DASHBOARDS.items():
            text = render(build)
            assert text == render(build)
            assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n", uid

    @pytest.mark.parametrize("uid", DASHBOARDS)
    def test_round_trip_through_the_sdk_model(self, uid: str) -> None:
        text = (OUTPUT_DIR / f"{uid}.json").read_text()
        model = Dashboard.from_json(json.loads(text))
        assert json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n" == text

    def test_sdk_is_pinned_exactly(self) -> None:
        pyproject = (ROOT / "pyproject.toml").read_text()
        pins = re.findall(r'"grafana-foundation-sdk([^"]*)"', pyproject)
        assert pins, "grafana-foundation-sdk missing from pyproject.toml"
        assert all(re.fullmatch(r"==\d+!\d+\.\d+\.\d+", pin) for pin in pins), pins


class TestStructure:
    """Invariants that `build()` does not check."""

    def test_the_dashboards(self) -> None:
        titles = {dashboard(uid)["title"]: uid for uid in DASHBOARDS}
        assert titles == {f"task-sidecar / {title}": uid for title, uid in TITLES.items()}

    @pytest.mark.parametrize("uid", DASHBOARDS)
    def test_ids_unique_and_titles_unique(self, uid: str) -> None:
        every = dashboard(uid)["panels"]
        ids = [p["id"] for p in every]
        assert len(ids) == len(set(ids)), ids
        titles = [p["title"] for p in every if p["type"] != "row"]
        assert len(titles) == len(set(titles)), titles

    @pytest.mark.parametrize("uid", PROMETHEUS)
    def test_template_variables(self, uid: str) -> None:
        variables = {v["name"]: v for v in dashboard(uid)["templating"]["list"]}
        assert list(variables) == [
            "datasource",
            "cluster",
            "namespace",
            "job",
            "instance",
            "task",
            "sidecar_url",
        ]
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("cluster", "namespace", "job", "instance", "task"):
            assert variables[name]["includeAll"]
            assert variables[name]["allValue"] == ".*"
            assert variables[name]["datasource"]["uid"] == "${datasource}"

    @pytest.mark.parametrize("uid", PROMETHEUS)
    def test_every_query_uses_the_datasource_variable(self, uid: str) -> None:
        for panel in panels(uid):
            targets = panel.get("targets", [])
            if panel["type"] == "text":
                assert not targets
                continue
            assert targets, panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            ref_ids = [t["refId"] for t in targets]
            assert all(ref_ids), panel["title"]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]
            for target in targets:
                assert target["datasource"]["uid"] == "${datasource}"
                assert 'namespace=~"$namespace"' in target["expr"], target["expr"]
                assert 'cluster=~"$cluster"' in target["expr"], target["expr"]

    @pytest.mark.parametrize("uid", DASHBOARDS)
    def test_units_and_thresholds_set(self, uid: str) -> None:
        for panel in panels(uid):
            if panel["type"] == "text":
                continue
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults.get("unit"), panel["title"]
            assert defaults["thresholds"]["steps"][0]["value"] is None, panel["title"]

    @pytest.mark.parametrize("uid", DASHBOARDS)
    def test_grid_has_no_overlaps(self, uid: str) -> None:
        cells: dict[tuple[int, int], str] = {}
        for panel in dashboard(uid)["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]

    @pytest.mark.parametrize("uid", DASHBOARDS)
    def test_links_to_runbooks_that_exist(self, uid: str) -> None:
        urls = [link["url"] for p in panels(uid) for link in p.get("links", [])]
        runbooks = [u for u in urls if "/docs/runbooks/" in u]
        assert runbooks, f"{uid} links to no runbook"
        for url in runbooks:
            assert (ROOT / "docs" / "runbooks" / url.rsplit("/", 1)[1]).exists(), url

    def test_action_api_links(self) -> None:
        urls = {
            link["url"] for uid in DASHBOARDS for p in panels(uid) for link in p.get("links", [])
        }
        for path in ("/v1/dlq?status=pending", "/v1/breakers", "/v1/schedules/health"):
            assert "${sidecar_url}" + path in urls


class TestSqlDashboards:
    """The DLQ explorer reads PostgreSQL through its datasource variable, and only the
    reader's views (tests/test_dlq_explorer.py runs every query)."""

    UID = "task-sidecar-dlq-explorer"
    VIEWS: ClassVar[set[str]] = {
        "dlq_explorer",
        "dlq_explorer_audit",
        "schedule_explorer_schedules",
        "schedule_explorer_conflicts",
        "schedule_explorer_recommendations",
    }
    PG: ClassVar[dict[str, str]] = {"type": PG_TYPE, "uid": "${postgres}"}

    def board(self) -> dict[str, Any]:
        return dashboard(self.UID)

    def test_it_is_the_only_sql_dashboard(self) -> None:
        assert {self.UID} == SQL_DASHBOARDS

    def test_template_variables(self) -> None:
        variables = {v["name"]: v for v in self.board()["templating"]["list"]}
        assert list(variables) == ["postgres", "status", "task", "failure_type", "q", "record"]
        assert variables["postgres"]["type"] == "datasource"
        assert variables["postgres"]["query"] == PG_TYPE
        for name in ("status", "task", "failure_type"):
            assert variables[name]["multi"], name
            assert variables[name]["includeAll"], name
            assert variables[name]["allValue"] == "'*'", name
        for name in ("task", "failure_type"):
            assert variables[name]["type"] == "query"
            assert variables[name]["datasource"] == self.PG
        assert variables["q"]["type"] == variables["record"]["type"] == "textbox"

    def test_every_panel_query_is_raw_sql_on_the_postgres_variable(self) -> None:
        for panel in panels(self.UID):
            targets = panel.get("targets", [])
            if panel["type"] == "text":
                assert not targets
                continue
            assert panel["datasource"] == self.PG, panel["title"]
            assert len(targets) == 1, panel["title"]
            (target,) = targets
            assert target["datasource"] == self.PG, panel["title"]
            assert target["rawQuery"], panel["title"]
            assert target["editorMode"] == "code", panel["title"]
            assert target["format"] == ("time_series" if panel["type"] == "timeseries" else "table")
            assert "expr" not in target, panel["title"]

    def sql_texts(self) -> list[tuple[str, str]]:
        board = self.board()
        out = [(p["title"], t["rawSql"]) for p in panels(self.UID) for t in p.get("targets", [])]
        out += [
            (f"${v['name']}", v["query"])
            for v in board["templating"]["list"]
            if v["type"] == "query"
        ]
        return out

    def test_queries_read_only_the_readers_views(self) -> None:
        for where, text in self.sql_texts():
            read = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", text))
            read -= {"LATERAL"}
            assert read, where
            assert read <= self.VIEWS, (where, read)

    def test_every_variable_a_query_uses_is_defined(self) -> None:
        defined = {v["name"] for v in self.board()["templating"]["list"]}
        for where, text in self.sql_texts():
            used = set(re.findall(r"\$\{?(\w+)", text)) - {
                "__timeFilter",
                "__timeGroupAlias",
                "__interval",
            }
            assert used <= defined, (where, used - defined)

    def test_text_typed_by_an_operator_is_quoted_by_grafana(self) -> None:
        """`q` and `record` go in as ${x:sqlstring} (quoted, quotes doubled), never bare."""
        for where, text in self.sql_texts():
            for name in ("q", "record"):
                bare = re.findall(rf"\$\{{?{name}\b(?!:sqlstring)", text)
                assert not bare, (where, name)

    def test_a_record_row_opens_the_record(self) -> None:
        records = next(p for p in panels(self.UID) if p["title"] == "Records")
        (link,) = records["fieldConfig"]["defaults"]["links"]
        assert link["url"].startswith(f"/d/{self.UID}/")
        assert link["url"].endswith("&var-record=${__data.fields.id}")
        assert "${status:queryparam}" in link["url"]
        detail = {p["title"] for p in panels(self.UID)}
        wanted = {"Record", "Traceback", "Arguments", "Audit trail", "Act on this record"}
        assert wanted | {"Arrivals by failure type", "Oldest pending by task"} <= detail

    def test_prometheus_dashboards_do_not_read_postgres(self) -> None:
        for uid in PROMETHEUS:
            assert "${postgres}" not in json.dumps(dashboard(uid)), uid


class TestQueries:
    """Every metric a dashboard reads exists, with the labels the query matches on."""

    def test_every_metric_is_exported_or_recorded(self) -> None:
        recorded = recording_rule_labels(load_yaml(ROOT / "alerting" / "task-sidecar.rules.yaml"))
        problems = unknown_series(all_queries(), exported_series(), recorded)
        assert not problems, "\n".join(problems)

    def test_a_config_unlike_the_defaults_reads_its_own_labels(self) -> None:
        """Another cluster label and selectors: still only series that exist, by the
        labels they have; every raw series is limited by the selectors."""
        config = load_config(CUSTOM_CONFIG)
        recorded = recording_rule_labels(render_rules(config))
        labels = TARGET_LABELS - {"cluster"} | {"k8s_cluster"}
        queries = all_queries(custom_boards())
        problems = unknown_series(queries, exported_series(labels), recorded)
        assert not problems, "\n".join(problems)
        for where, expr in queries:
            assert "cluster=~" not in expr.replace("k8s_cluster=~", ""), where
            for found in selectors(expr):
                if found.metric and found.metric.startswith("task_sidecar_"):
                    assert {"job", "namespace"} <= found.labels, (where, found)

    def test_a_typo_is_caught(self) -> None:
        recorded = recording_rule_labels(load_yaml(ROOT / "alerting" / "task-sidecar.rules.yaml"))
        queries = [
            ("metric", 'sum(rate(task_sidecar_task_event_total{job=~"$job"}[5m]))'),
            ("label", 'sum(task_sidecar_dlq_depth{state="pending"})'),
            ("variable", "label_values(task_sidecar_dlq_depth, task)"),
            ("fine", 'sum by (le) (rate(task_sidecar_hook_duration_seconds_bucket{hook="x"}[1m]))'),
        ]
        problems = unknown_series(queries, exported_series(), recorded)
        assert [p.split(":")[0] for p in problems] == ["metric", "label", "variable"]

    def test_the_selector_reader_sees_metrics(self) -> None:
        """The reader used above finds names and labels, and skips functions and keywords."""
        expr = (
            'sum by (le, hook) (rate(foo_bucket{a="1", b=~"x|y"}[$__rate_interval])) '
            "/ on (hook) group_left bar or vector(0) > bool 2"
        )
        found = {(s.metric, s.labels) for s in selectors(expr)}
        assert found == {("foo_bucket", frozenset({"a", "b"})), ("bar", frozenset())}

    def test_rates_shared_with_alerts_come_from_recording_rules(self) -> None:
        exprs = " ".join(expr for _, expr in all_queries())
        for rule in (
            "task:task_sidecar_task_success:ratio_rate5m",
            "job:task_sidecar_dlq_backlog:sum",
        ):
            assert rule in exprs


class TestSeedCoverage:
    """grafana/README.md maps every figure of the seed's dashboards to a panel that exists."""

    README = ROOT / "grafana" / "README.md"
    SEED_DASHBOARDS: ClassVar[set[str]] = {
        "Task monitoring",
        "Idempotency analysis",
        "Schedule conflicts",
        "DLQ management",
        "Failure taxonomy",
        "Retry policy",
        "Executive",
        "Operator",
        "Developer",
    }

    def rows(self) -> list[list[str]]:
        lines = self.README.read_text().split("## Where each figure")[1].splitlines()
        cells = [
            [c.strip() for c in line.strip("|").split("|")]
            for line in lines
            if line.startswith("|")
        ]
        return cells[2:]  # after the header and its --- line

    def test_every_seed_dashboard_is_mapped(self) -> None:
        assert {row[0] for row in self.rows()} >= self.SEED_DASHBOARDS

    def test_every_figure_is_shown(self) -> None:
        assert [row[:2] for row in self.rows() if row[3] == "not yet"] == []

    def test_every_figure_of_the_six_seed_dashboards_has_a_row(self) -> None:
        """The figures the seed lists for each of its six HTML dashboards (its §4)."""
        seed = {
            "Task monitoring": 5,  # hit rate, health score, queues, executions, charts
            "Idempotency analysis": 5,
            "Schedule conflicts": 6,  # the conflicts: their count and their list
            "DLQ management": 5,
            "Failure taxonomy": 5,
            "Retry policy": 5,
        }
        rows = [row[0] for row in self.rows()]
        assert {name: rows.count(name) for name in seed} == seed

    def test_every_mapped_panel_exists(self) -> None:
        rules = load_yaml(ROOT / "alerting" / "task-sidecar.rules.yaml")
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        for seed, figure, where, panel_cell, _ in self.rows():
            named = re.findall(r"`([^`]+)`", panel_cell)
            if where == "Alertmanager":  # an info notification: the alert's name
                assert named, (seed, figure)
                assert set(named) <= alerts, (seed, figure, named)
                continue
            uid = TITLES[where]
            titles = {p["title"] for p in panels(uid)}
            assert named, f"{seed} / {figure}: no panel named"
            for title in named:
                assert title in titles, f"{seed} / {figure}: no panel {title!r} in {where}"

    def test_issue_panels_present(self) -> None:
        """The panels the issue asks for, by dashboard."""
        wanted = {
            "Overview": [
                "Executions",
                "Success rate",
                "DLQ depth",
                "Critical failures",
                "Breakers open",
            ],
            "Failures & DLQ": [
                "Failure type distribution",
                "Top 10 failing tasks",
                "DLQ by status",
                "Oldest pending record",
                "Remediation mix",
                "Actions taken",
            ],
            "Retries & breakers": [
                "Retry success rate by task and failure type",
                "Retry delay (p50, p90) by failure type",
                "Breaker states",
                "Breaker transitions",
                "Adaptive adjustments",
                "Deferrals by reason",
            ],
            "Idempotency & schedules": [
                "Duplicate rate",
                "Duplicates by scope",
                "Claim latency (p50, p99) by backend",
                "Schedule health score",
                "Hotspots",
            ],
        }
        for where, titles in wanted.items():
            present = {p["title"] for p in panels(TITLES[where])}
            assert set(titles) <= present, set(titles) - present

    def test_bar_gauges_have_a_trend_beside_them(self) -> None:
        """Each "over the time range" bar gauge of issue #18 has a time series on its row
        of the grid, reading the same metric over time."""
        board = panels(TITLES["Failures & DLQ"])
        by_title = {p["title"]: p for p in board}
        for title, metric in (
            ("Top 10 failing tasks", "task_sidecar_failures_total"),
            ("SLA breaches by tier", "task_sidecar_sla_breaches_total"),
            ("Retries scheduled per failure", "task_sidecar_retry_delay_seconds_count"),
        ):
            bars, trend = by_title[title], by_title[f"{title} over time"]
            assert (bars["type"], trend["type"]) == ("bargauge", "timeseries")
            assert trend["gridPos"]["y"] == bars["gridPos"]["y"], title
            assert trend["gridPos"]["x"] == bars["gridPos"]["x"] + bars["gridPos"]["w"], title
            (target,) = trend["targets"]
            assert metric in target["expr"], title
            assert not target.get("instant"), title

    def test_top_failing_tasks_over_time_keeps_the_bars_tasks(self) -> None:
        by_title = {p["title"]: p for p in panels(TITLES["Failures & DLQ"])}
        (target,) = by_title["Top 10 failing tasks over time"]["targets"]
        assert "topk(10," in target["expr"]
        assert "@ end()" in target["expr"]

    def test_top_duplicate_tasks(self) -> None:
        by_title = {p["title"]: p for p in panels(TITLES["Idempotency & schedules"])}
        panel = by_title["Top duplicate tasks"]
        (target,) = panel["targets"]
        assert panel["type"] == "bargauge"
        assert target["expr"].startswith("topk(10,")
        found = selectors(target["expr"])
        assert {s.metric for s in found} == {"task_sidecar_idempotency_checks_total"}
        assert all("task" in s.labels for s in found)  # the dashboard's $task applies
        assert "sum by (task)" in target["expr"]
