"""Prometheus rules and Alertmanager routes: generated from one config, checked by promtool
and amtool, unit-tested per alert, and the inhibitions tried on a real Alertmanager."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerting.__main__ import RULES_PATH, dump
from alerting.__main__ import main as generate
from alerting.config import ConfigError, load_config
from alerting.rules import DASHBOARDS, alerts, render

from .observability import (
    ROOT,
    AlertmanagerService,
    exported_series,
    load_yaml,
    poll,
    recording_rule_labels,
    require,
    selectors,
    start_service,
    unknown_series,
    write_yaml,
)

ALERTING = ROOT / "alerting"
ALERTMANAGER_YML = ALERTING / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITY_RECEIVER = {
    "critical": "pagerduty",
    "warning": "slack-task-alerts",
    "info": "slack-task-info",
}


def rules_file() -> dict[str, Any]:
    return load_yaml(RULES_PATH)


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rules_file()["groups"] for r in g["rules"] if "alert" in r]


def rule_id(rule: dict[str, Any]) -> str:
    labels = rule["labels"]
    return "-".join([rule["alert"], labels["severity"], *filter(None, [labels.get("long")])])


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    require(args[0])
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


class TestGeneratedRules:
    """The committed rules file is what the generator makes from the committed config."""

    def test_committed_rules_are_current(self) -> None:
        assert RULES_PATH.read_text() == dump(render(load_config())), "run `make alerting`"

    def test_check_mode_agrees(self) -> None:
        assert generate(["--check"]) == 0

    def test_thresholds_and_objective_come_from_the_config(self, tmp_path: Path) -> None:
        text = (ALERTING / "config.yaml").read_text()
        text = text.replace("objective: 0.99", "objective: 0.995")
        text = text.replace("critical: 50\n", "critical: 80\n")
        text = text.replace("warning_below: 0.90", "warning_below: 0.75")
        (tmp_path / "config.yaml").write_text(text)
        out = tmp_path / "rules.yaml"
        assert generate(["--config", str(tmp_path / "config.yaml"), "--output", str(out)]) == 0
        exprs: dict[tuple[str, str], str] = {}
        for group in load_yaml(out)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    key = (rule["alert"], rule["labels"]["severity"])
                    exprs[key] = exprs.get(key, "") + rule["expr"] + "\n"
        assert (
            exprs["TaskSidecarDLQDepthHigh", "critical"]
            == "job:task_sidecar_dlq_backlog:sum > 80\n"
        )
        assert "< 0.75\n" in exprs["TaskSidecarTaskSuccessRateLow", "warning"]
        assert "(14.4 * (1 - 0.995))" in exprs["TaskSidecarErrorBudgetBurn", "critical"]
        assert "(1 * (1 - 0.995))" in exprs["TaskSidecarErrorBudgetBurn", "warning"]

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (("dlq:\n", "dlq:\n  colour: red\n"), "dlq.colour: unknown key"),
            (("for: 5m\n", "for: soon\n"), "expected a duration like 5m"),
            (("objective: 0.99", "objective: 99"), "slo.objective: expected a ratio"),
            (("critical: 50\n", "critical: 10\n"), "`warning` must be below `critical`"),
            (("critical_tasks: ", "critical_tasks: '(' #"), "critical_tasks: not a regular"),
        ],
    )
    def test_a_bad_config_names_the_key(
        self, tmp_path: Path, change: tuple[str, str], message: str
    ) -> None:
        text = (ALERTING / "config.yaml").read_text().replace(*change, 1)
        (tmp_path / "config.yaml").write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(tmp_path / "config.yaml")

    def test_promtool_check_rules(self) -> None:
        result = run("promtool", "check", "rules", str(RULES_PATH))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


class TestAlertContract:
    """Every alert has a severity, the four annotations, and a runbook page that exists."""

    @pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
    def test_labels_and_annotations(self, rule: dict[str, Any]) -> None:
        assert rule["labels"]["severity"] in SEVERITY_RECEIVER
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
        assert all(annotations.values())
        config = load_config()
        assert annotations["runbook_url"] == (f"{config.links.runbook_base_url}/{rule['alert']}.md")
        assert (RUNBOOKS / f"{rule['alert']}.md").exists()
        uid = re.search(r"/d/([\w-]+)", annotations["dashboard_url"])
        assert uid
        assert uid.group(1) in DASHBOARDS.values()
        assert (ROOT / "grafana" / "dashboards" / "json" / f"{uid.group(1)}.json").exists()

    def test_runbook_links_are_added_by_code(self) -> None:
        """Definitions carry no links: `_annotate` adds them to every alert."""
        for alert in alerts(load_config()):
            fields = {f.name for f in dataclasses.fields(alert)}
            assert "runbook_url" not in fields
            assert "runbook" not in alert.description

    def test_every_runbook_page_belongs_to_an_alert(self) -> None:
        names = {r["alert"] for r in alert_rules()}
        pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
        assert pages == names
        index = (RUNBOOKS / "README.md").read_text()
        for name in names:
            assert f"({name}.md)" in index
            text = (RUNBOOKS / f"{name}.md").read_text()
            for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
                assert section in text, f"{name}.md lacks {section}"

    def test_the_seed_thresholds(self) -> None:
        exprs = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in alert_rules()}
        assert exprs["TaskSidecarDLQDepthHigh", "warning"].endswith("> 20")
        assert exprs["TaskSidecarDLQDepthHigh", "critical"].endswith("> 50")
        assert "< 0.9\n" in exprs["TaskSidecarTaskSuccessRateLow", "warning"]
        assert "> 0.05\n" in exprs["TaskSidecarDuplicateRateHigh", "warning"]
        assert (
            "SYSTEM_OUT_OF_MEMORY|SYSTEM_DISK_FULL" in exprs["TaskSidecarSystemFailure", "critical"]
        )
        assert 'state="open"' in exprs["TaskSidecarBreakerOpen", "critical"]
        assert exprs["TaskSidecarNotScraped", "critical"].startswith("absent(")
        assert {"TaskSidecarDLQRecovered", "TaskSidecarBreakerRecovered"} <= {
            name for name, severity in exprs if severity == "info"
        }

    def test_every_metric_is_exported_or_recorded(self) -> None:
        queries = [
            (rule.get("record") or rule["alert"], rule["expr"])
            for group in rules_file()["groups"]
            for rule in group["rules"]
        ]
        recorded = recording_rule_labels(rules_file())
        problems = unknown_series(queries, exported_series(), recorded)
        assert not problems, "\n".join(problems)


class TestPromtoolUnitTests:
    """alerting/rules.test.yaml: a named test per alert and severity, with negative cases."""

    def test_promtool_test_rules(self) -> None:
        result = run("promtool", "test", "rules", "rules.test.yaml", cwd=ALERTING)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_alert_and_severity_is_tested(self) -> None:
        tests = load_yaml(ALERTING / "rules.test.yaml")["tests"]
        assert all(t.get("name") for t in tests), "every test group has a name"
        fired: set[tuple[str, str]] = set()
        silent: set[str] = set()
        for group in tests:
            for case in group.get("alert_rule_test", []):
                for expected in case["exp_alerts"]:
                    fired.add((case["alertname"], expected["exp_labels"]["severity"]))
                if not case["exp_alerts"]:
                    silent.add(case["alertname"])
        every = {(r["alert"], r["labels"]["severity"]) for r in alert_rules()}
        assert every - fired == set(), "alerts no test fires"
        assert {name for name, _ in every} - silent == set(), "alerts with no negative case"

    def test_every_recording_rule_is_tested(self) -> None:
        tests = load_yaml(ALERTING / "rules.test.yaml")["tests"]
        tested = {
            found.metric
            for group in tests
            for case in group.get("promql_expr_test", [])
            for found in selectors(case["expr"])
        }
        records = {r["record"] for g in rules_file()["groups"] for r in g["rules"] if "record" in r}
        untested = records - tested
        # the SLO ratios differ only in their window: one of them stands for all
        assert {r for r in untested if not r.startswith("job:task_sidecar_task_errors:")} == set()


# --- Alertmanager ------------------------------------------------------------------------------


ROUTES = [
    # (labels, receiver): one expectation per row
    ({"severity": "critical"}, "pagerduty"),
    ({"severity": "warning"}, "slack-task-alerts"),
    ({"severity": "info"}, "slack-task-info"),
    ({"alertname": "Unknown"}, "slack-task-alerts"),  # no severity: still reaches people
    ({"severity": "page"}, "slack-task-alerts"),  # an unknown severity too
] + [
    # every alert the rules can raise, by its severity
    ({"alertname": name, "severity": severity, "task": "billing.charge"}, receiver)
    for name, severity in sorted({(r["alert"], r["labels"]["severity"]) for r in alert_rules()})
    for receiver in [SEVERITY_RECEIVER[severity]]
]


class TestAlertmanagerConfig:
    def test_amtool_check_config(self) -> None:
        result = run("amtool", "check-config", str(ALERTMANAGER_YML))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    @pytest.mark.parametrize(
        ("labels", "receiver"),
        ROUTES,
        ids=[" ".join(f"{k}={v}" for k, v in labels.items()) for labels, _ in ROUTES],
    )
    def test_route(self, labels: dict[str, str], receiver: str) -> None:
        result = run(
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_YML}",
            f"--verify.receivers={receiver}",
            *(f"{k}={v}" for k, v in labels.items()),
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_grouping(self) -> None:
        config = load_yaml(ALERTMANAGER_YML)
        assert config["route"]["group_by"] == ["alertname", "task"]

    def test_receivers(self) -> None:
        receivers = {r["name"]: r for r in load_yaml(ALERTMANAGER_YML)["receivers"]}
        assert set(receivers) == set(SEVERITY_RECEIVER.values())
        assert "routing_key_file" in receivers["pagerduty"]["pagerduty_configs"][0]
        assert receivers["slack-task-alerts"]["slack_configs"][0]["channel"] == "#task-alerts"
        assert receivers["slack-task-info"]["slack_configs"][0]["channel"] == "#task-info"

    def test_secrets_come_from_files(self) -> None:
        text = ALERTMANAGER_YML.read_text()
        for inline in ("api_url:", "routing_key:", "service_key:", "slack_api_url:", "url: http"):
            assert inline not in text, f"inline secret field {inline}"
        assert "_file:" in text

    def test_matchers_syntax_only(self) -> None:
        """`matchers:` everywhere, never the deprecated `match:`/`match_re:` forms."""
        config = load_yaml(ALERTMANAGER_YML)
        routes, deprecated = [config["route"]], set()
        while routes:
            route = routes.pop()
            deprecated |= {"match", "match_re"} & set(route)
            routes.extend(route.get("routes", []))
        for rule in config["inhibit_rules"]:
            deprecated |= {
                "source_match",
                "source_match_re",
                "target_match",
                "target_match_re",
            } & set(rule)
            assert rule["source_matchers"]
            assert rule["target_matchers"]
        assert not deprecated


# --- inhibition, on a real Alertmanager ---------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerService]:
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = load_yaml(ALERTMANAGER_YML)
    # Nowhere to deliver to: this only asks Alertmanager which alerts it silences.
    for receiver in config["receivers"]:
        for key in ("pagerduty_configs", "slack_configs"):
            receiver.pop(key, None)
    service = start_service(AlertmanagerService, tmp, write_yaml(tmp / "am.yml", config))
    yield service
    service.close()


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, **labels}}


class TestInhibition:
    """What the inhibit rules silence, asked of a real Alertmanager."""

    def test_critical_silences_the_matching_warning_only(
        self, alertmanager: AlertmanagerService
    ) -> None:
        alertmanager.post_alerts(
            [
                alert("TaskSidecarDLQDepthHigh", "critical", namespace="prod", job="ts"),
                alert("TaskSidecarDLQDepthHigh", "warning", namespace="prod", job="ts"),
                alert("TaskSidecarDLQDepthHigh", "warning", namespace="staging", job="ts"),
            ]
        )

        def settled() -> dict[str, str] | None:
            found = {
                (a["labels"]["severity"], a["labels"]["namespace"]): a["status"]["state"]
                for a in alertmanager.alerts()
                if a["labels"]["alertname"] == "TaskSidecarDLQDepthHigh"
            }
            return found if found.get(("warning", "prod")) == "suppressed" else None

        found = poll(settled, 10, "the prod warning suppressed")
        assert found == {
            ("critical", "prod"): "active",
            ("warning", "prod"): "suppressed",
            ("warning", "staging"): "active",
        }

    def test_open_breaker_silences_the_tasks_success_rate_alert(
        self, alertmanager: AlertmanagerService
    ) -> None:
        breaker = {"namespace": "prod", "job": "ts", "task": "billing.charge"}
        alertmanager.post_alerts(
            [
                alert("TaskSidecarBreakerOpen", "critical", **breaker, breaker="billing.charge:X"),
                alert("TaskSidecarTaskSuccessRateLow", "warning", **breaker),
                alert("TaskSidecarTaskSuccessRateLow", "warning", **{**breaker, "task": "mail"}),
                alert("TaskSidecarSystemFailure", "critical", **breaker),
            ]
        )

        def settled() -> dict[tuple[str, str], str] | None:
            found = {
                (a["labels"]["alertname"], a["labels"].get("task", "")): a["status"]["state"]
                for a in alertmanager.alerts()
                if a["labels"].get("namespace") == "prod" and "task" in a["labels"]
            }
            key = ("TaskSidecarTaskSuccessRateLow", "billing.charge")
            return found if found.get(key) == "suppressed" else None

        found = poll(settled, 10, "the breaker's task success-rate alert suppressed")
        assert found == {
            ("TaskSidecarBreakerOpen", "billing.charge"): "active",
            ("TaskSidecarTaskSuccessRateLow", "billing.charge"): "suppressed",
            ("TaskSidecarTaskSuccessRateLow", "mail"): "active",
            ("TaskSidecarSystemFailure", "billing.charge"): "active",
        }
