"""The Helm chart (helm/task-sidecar), rendered and linted by Helm itself, no cluster needed.

helm-python-sdk carries Helm compiled into its wheel; kubernetes-validate carries the
Kubernetes OpenAPI schemas. Every manifest of every CI values file (one per feature
combination, helm/task-sidecar/ci/) is validated in strict mode (unknown fields fail).
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

helm_python = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "task-sidecar"
EXAMPLE = ROOT / "helm" / "examples" / "celery-worker"
CI_FILES = sorted(CHART.glob("ci/*.yaml"))
RULES_FILES = sorted((ROOT / "alerting").glob("*.rules.y*ml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards" / "json").glob("*.json"))
RELEASE, NAMESPACE = "ci", "tasks"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate carries.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

# The Prometheus Operator's CRDs are not in the Kubernetes schemas: their openAPIV3Schema is
# vendored in tests/data/crds (source in its README), made strict like kubernetes-validate's
# (an unknown field fails instead of being pruned).
CRDS = ROOT / "tests" / "data" / "crds"
CRD_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "ServiceMonitor.v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "PodMonitor.v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "PrometheusRule.v1.json",
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): "AlertmanagerConfig.v1alpha1.json",
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        open_ended = "additionalProperties" in node or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "properties" in node and not open_ended:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    schema = _strict(json.loads((CRDS / CRD_FILES[api_version, kind]).read_text()))
    schema["properties"]["metadata"] = _METADATA
    return schema


# --- rendering -------------------------------------------------------------------------


@functools.cache
def chart() -> Any:
    return helm_python.Chart.load(CHART)


def ci_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """{template path: rendered text} (NOTES.txt left out)."""
    out = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in out.items() if not path.endswith("NOTES.txt")}


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for text in rendered.values():
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


@functools.cache
def render_ci(name: str) -> tuple[dict[str, Any], ...]:
    """The manifests of one CI values file (cached: each file is rendered once)."""
    return tuple(manifests(render(ci_values(CHART / "ci" / name))))


def of_kind(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


WORKLOADS = ("Deployment", "StatefulSet")


def pod_specs(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = (*WORKLOADS, "Job")
    return [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] in kinds]


def workload(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] in WORKLOADS]
    return found


def validate(doc: dict[str, Any]) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRD_FILES:
        import jsonschema

        # Draft 7 without checking the schema itself: its patterns are Go's (RE2) regexes.
        jsonschema.Draft7Validator(crd_schema(doc["apiVersion"], doc["kind"])).validate(doc)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def render_example(tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The example worker chart with this chart as its (sidecar-mode) dependency."""
    parent = tmp_path / "celery-worker"
    shutil.copytree(EXAMPLE, parent)
    shutil.copytree(CHART, parent / "charts" / "task-sidecar", ignore=shutil.ignore_patterns("ci"))
    out = helm_python.Chart.load(parent).render(
        values or {}, name="billing", namespace=NAMESPACE, is_install=True
    )
    return manifests({p: t for p, t in out.items() if not p.endswith("NOTES.txt")})


CI_NAMES = [path.name for path in CI_FILES]


def test_there_is_a_ci_file_per_mode() -> None:
    modes = {ci_values(path).get("mode") for path in CI_FILES}
    assert modes == {"standalone", "sidecar"}


# --- lint and strict validation ----------------------------------------------------------


@pytest.mark.parametrize("name", CI_NAMES)
def test_lint(name: str) -> None:
    report = helm_python.lint(
        CHART, ci_values(CHART / "ci" / name), strict=True, namespace=NAMESPACE
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_manifest_validates_strictly(name: str) -> None:
    docs = render_ci(name)
    assert docs
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("name", CI_NAMES)
def test_pods_are_locked_down(name: str) -> None:
    docs = render_ci(name)
    claims = {
        t["metadata"]["name"]
        for doc in docs
        if doc["kind"] == "StatefulSet"
        for t in doc["spec"].get("volumeClaimTemplates", [])
    }
    for pod in pod_specs(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                writable = mount["name"] in claims or {"emptyDir", "persistentVolumeClaim"} & set(
                    volume
                )
                if writable:  # the only writable place: the data dir
                    assert mount["mountPath"] == env["TASK_SIDECAR_DATA_DIR"]
                else:
                    assert mount.get("readOnly") is True


@pytest.mark.parametrize("name", CI_NAMES)
def test_probes_and_resources(name: str) -> None:
    for doc in render_ci(name):
        if doc["kind"] not in WORKLOADS:
            continue
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports


def kinds(name: str) -> set[str]:
    return {doc["kind"] for doc in render_ci(name)}


def test_feature_combinations_render_what_they_switch_on() -> None:
    base = {"ConfigMap", "Secret", "Service", "ServiceAccount"}
    assert kinds("standalone-minimal-values.yaml") == base | {
        "Deployment",
        "PersistentVolumeClaim",
    }
    assert kinds("standalone-full-values.yaml") == base | {
        "StatefulSet",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Job",
        "ServiceMonitor",
        "PrometheusRule",
        "AlertmanagerConfig",
    }
    existing = kinds("standalone-existing-secret-values.yaml")
    assert existing == {"Deployment", "Service", "ServiceAccount"}
    assert kinds("sidecar-values.yaml") == {"ConfigMap", "Secret", "PodMonitor", "PrometheusRule"}

    full = workload(render_ci("standalone-full-values.yaml"))
    assert "replicas" not in full["spec"]  # the HPA owns the count
    (hpa,) = of_kind(render_ci("standalone-full-values.yaml"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == full["kind"] == "StatefulSet"
    spread = full["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["labelSelector"]["matchLabels"] == full["spec"]["selector"]["matchLabels"]


def test_monitoring_objects_carry_additional_labels() -> None:
    full = render_ci("standalone-full-values.yaml")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (doc,) = of_kind(full, kind)
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for doc in of_kind(full, "ConfigMap"):
        if "grafana_dashboard" in doc["metadata"]["labels"]:
            assert doc["metadata"]["labels"]["team"] == "platform"
            assert doc["metadata"]["annotations"] == {"grafana_folder": "Tasks"}
    (monitor,) = of_kind(full, "ServiceMonitor")
    (service,) = of_kind(full, "Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (container,) = workload(full)["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[ports["metrics"]["targetPort"]] == 9464


def test_network_policy_admits_workers_and_operators_to_the_api_prometheus_to_metrics() -> None:
    (policy,) = of_kind(render_ci("standalone-full-values.yaml"), "NetworkPolicy")
    api, metrics = policy["spec"]["ingress"]
    assert api["from"][0]["podSelector"] == {"matchLabels": {"app": "celery-worker"}}
    assert api["from"][1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    }
    assert len(api["from"]) == 2
    assert api["ports"] == [{"port": "sidecar-http", "protocol": "TCP"}]
    (prometheus,) = metrics["from"]
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert metrics["ports"] == [{"port": "sidecar-metrics", "protocol": "TCP"}]
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_migration_job_is_a_hook_that_runs_migrate() -> None:
    (job,) = of_kind(render_ci("standalone-full-values.yaml"), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["task-sidecar", "migrate"]
    (env,) = container["env"]
    assert env["name"] == "TASK_SIDECAR_POSTGRES_DSN"
    assert env["valueFrom"]["secretKeyRef"]["key"] == "postgres-dsn"


def env_of(doc: dict[str, Any]) -> dict[str, str | None]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_logs_and_metrics_settings_become_variables() -> None:
    full = env_of(workload(render_ci("standalone-full-values.yaml")))
    assert full["TASK_SIDECAR_LOG_FORMAT"] == "json"
    assert full["TASK_SIDECAR_ACCESS_LOG"] == "true"
    assert full["TASK_SIDECAR_METRICS_HOST"] == "0.0.0.0"
    assert full["TASK_SIDECAR_METRICS_PORT"] == "9464"
    minimal = env_of(workload(render_ci("standalone-minimal-values.yaml")))
    for name in ("LOG_FORMAT", "ACCESS_LOG", "METRICS_PORT", "METRICS_HOST"):
        assert f"TASK_SIDECAR_{name}" not in minimal  # the defaults: nothing to set


# --- safe defaults: what is installed without values, and what is refused ---------------------


def test_defaults_install_one_pod_with_its_data_on_a_claim_and_generated_tokens() -> None:
    docs = manifests(render({}))
    for doc in docs:
        validate(doc)
    deployment = workload(docs)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two on one SQLite
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = deployment["spec"]["template"]["spec"]
    (data,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == data["name"]]
    assert mount["mountPath"] == env_of(deployment)["TASK_SIDECAR_DATA_DIR"]
    assert not of_kind(docs, "PodDisruptionBudget")  # one pod: it would only block drains

    (secret,) = of_kind(docs, "Secret")
    tokens = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(tokens) == ["hook-tokens", "operator-tokens", "viewer-tokens"]
    for value in tokens.values():
        name, token = value.split(":")
        assert name
        assert len(token) == 32
    assert len(set(tokens.values())) == 3


def test_notes_say_how_to_read_the_generated_tokens() -> None:
    out = chart().render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    for key in ("hook-tokens", "viewer-tokens", "operator-tokens"):
        assert (
            f"kubectl -n {NAMESPACE} get secret ci-task-sidecar -o jsonpath='{{.data.{key}}}'"
            " | base64 -d" in notes
        )
    given = chart().render(
        {"secret": {"hookTokens": "w:0123456789abcdef0"}}, name=RELEASE, namespace=NAMESPACE
    )
    assert "generated" not in next(t for p, t in given.items() if p.endswith("NOTES.txt"))


def _secret_data(tmp_path: Path, values: dict[str, Any], existing: dict[str, str]) -> dict:
    """task-sidecar.secretData as the chart calls it, with `existing` as what lookup found."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    for template in (copy / "templates").glob("*.yaml"):
        template.unlink()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "probe.yaml").write_text(
        'data: {{ include "task-sidecar.secretData" '
        '(dict "ctx" . "existing" .Values.secret.probeExisting) | fromYaml | toJson }}\n'
    )
    schema = json.loads((copy / "values.schema.json").read_text())
    schema["properties"]["secret"]["properties"]["probeExisting"] = {"type": "object"}
    (copy / "values.schema.json").write_text(json.dumps(schema))
    values = {**values, "secret": {**values.get("secret", {}), "probeExisting": existing}}
    out = helm_python.Chart.load(copy).render(values, name=RELEASE, namespace=NAMESPACE)
    return yaml.safe_load(out["task-sidecar/templates/probe.yaml"])["data"]


def test_generated_tokens_are_kept_across_upgrades(tmp_path: Path) -> None:
    kept = {
        k: base64.b64encode(f"x:{k}-0123456789abcdef".encode()).decode()
        for k in ("hook-tokens", "viewer-tokens", "operator-tokens")
    }
    assert _secret_data(tmp_path / "a", {}, kept) == kept
    # tokens given in values win; none is generated beside them
    given = {"secret": {"hookTokens": "w:given-0123456789abcdef"}}
    data = _secret_data(tmp_path / "b", given, kept)
    assert data == {"hook-tokens": base64.b64encode(b"w:given-0123456789abcdef").decode()}
    # sidecar mode listens on loopback: no tokens needed, none generated
    assert _secret_data(tmp_path / "c", {"mode": "sidecar", "store": "embedded"}, {}) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 3}, r"replicaCount: 3 needs PostgreSQL.*secret\.postgresDsn"),
        ({"autoscaling": {"enabled": True}}, r"autoscaling\.enabled needs PostgreSQL"),
        ({"persistence": {"enabled": False}}, r"persistence\.enabled: false with the embedded"),
        ({"migration": {"enabled": True}}, r"migration\.enabled needs PostgreSQL"),
        ({"store": "postgres"}, r"store: postgres needs secret\.postgresDsn"),
        ({"mode": "sidecar"}, r"mode: sidecar without PostgreSQL.*store: embedded"),
    ],
)
def test_what_would_lose_dead_letters_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


def test_with_postgresql_three_replicas_each_with_a_spool_that_survives_restarts() -> None:
    values = {"replicaCount": 3, "secret": {"postgresDsn": "postgresql://s:pw@pg:5432/s"}}
    docs = manifests(render(values))
    for doc in docs:
        validate(doc)
    statefulset = workload(docs)
    assert statefulset["kind"] == "StatefulSet"
    assert statefulset["spec"]["replicas"] == 3
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    pod = statefulset["spec"]["template"]["spec"]
    assert claim["metadata"]["name"] not in {v["name"] for v in pod["volumes"]}
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if m["name"] == claim["metadata"]["name"]
    ]
    assert mount["mountPath"] == env_of(statefulset)["TASK_SIDECAR_DATA_DIR"]
    assert of_kind(docs, "PodDisruptionBudget")
    assert not of_kind(docs, "PersistentVolumeClaim")  # one claim per pod, from the template
    # an existing Secret that holds postgres-dsn, said so with store: postgres
    existing = {"store": "postgres", "replicaCount": 3, "secret": {"existingSecret": "creds"}}
    assert workload(manifests(render(existing)))["spec"]["replicas"] == 3


# --- secrets, policies and the checksum that rolls pods ----------------------------------


def test_secret_holds_tokens_and_urls_and_the_pods_read_them() -> None:
    docs = render_ci("standalone-full-values.yaml")
    secret = next(d for d in of_kind(docs, "Secret") if "hook-tokens" in d["data"])
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["postgres-dsn"] == "postgresql://sidecar:pw@postgres:5432/sidecar"
    assert decoded["redis-url"] == "redis://redis:6379/0"
    (container,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "valueFrom" in e
        if e["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    }
    assert set(decoded) <= refs
    for e in container["env"]:  # no secret value is written into the pod spec
        assert e.get("value") not in decoded.values()


def test_existing_secret_configmap_and_claim_are_used_not_created() -> None:
    docs = render_ci("standalone-existing-secret-values.yaml")
    pod = workload(docs)["spec"]["template"]["spec"]
    names = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in pod["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert names == {"task-sidecar-credentials"}
    configmaps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert configmaps == {"task-sidecar-policies"}
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"task-sidecar-dlq"}


def test_default_policies_configmap_is_the_projects_and_validates(tmp_path: Path) -> None:
    from sidecar.policy import load_policy

    (configmap,) = of_kind(render_ci("standalone-minimal-values.yaml"), "ConfigMap")
    content = configmap["data"]["policies.yaml"]
    assert content == (ROOT / "policies.yaml").read_text().rstrip("\n")
    path = tmp_path / "policies.yaml"
    path.write_text(content)
    load_policy(path)


def test_changing_the_policies_rolls_the_pods() -> None:
    values = {"secret": {"hookTokens": "workers:ci-hook-token-0123456789"}}

    def annotations(content: str) -> dict[str, str]:
        docs = manifests(render({**values, "policies": {"content": content}}))
        return workload(docs)["spec"]["template"]["metadata"]["annotations"]

    text = (ROOT / "policies.yaml").read_text()
    before, after = annotations(text), annotations(text + "\n# tuned\n")
    assert before["checksum/policies"] != after["checksum/policies"]
    assert before["checksum/secret"] == after["checksum/secret"]


# --- the mixin: the chart renders what `task-sidecar mixin render` renders ------------------


def test_chart_files_have_not_drifted() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync-chart-files.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


MIXIN_CONFIGS = {
    "defaults": {},
    "custom": yaml.safe_load((ROOT / "alerting" / "custom.config.yaml").read_text()),
    "hard": {
        "cluster_label": "region",
        "selectors": {"job": r"billing-(a|b)\.svc", "namespace": 'odd"quote', "team": "pay"},
        "alerts": {"TaskSidecarErrorBudgetBurn": False, "TaskSidecarBreakerOpen": False},
        "critical_tasks": r"pay\.ments|x",
        "system_failure_types": ["SYSTEM_OUT_OF_MEMORY"],
        "dlq": {"warning": 1000000, "critical": 2.5e6, "oldest_pending_warning": 0.5},
        "success_rate": {"warning_below": 0.123456789},
        "recovered": {"window": "1h30m"},
        "links": {"grafana_url": "https://g.example.org/", "sidecar_url": "http://s:1"},
        "slo": {
            "objective": 0.995,
            "page": [{"long": "1h", "short": "60m", "burn_rate": 14.4, "for": "2m"}],
            "ticket": [{"long": "3d", "short": "6h", "burn_rate": 1, "for": "3h"}],
        },
    },
}


def render_with_mixin(config: dict[str, Any]) -> list[dict[str, Any]]:
    values = {
        "monitoring": {
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
            "mixin": config,
        }
    }
    return manifests(render(values))


@pytest.mark.parametrize("name", MIXIN_CONFIGS)
def test_prometheus_rule_equals_mixin_render_with_the_same_config(
    tmp_path: Path, name: str
) -> None:
    from sidecar.mixin import render as mixin_render

    config_file = tmp_path / "mixin.yaml"
    config_file.write_text(yaml.safe_dump(MIXIN_CONFIGS[name]))
    written = mixin_render(config_file, tmp_path / "out")
    docs = render_with_mixin(MIXIN_CONFIGS[name])
    (rule,) = of_kind(docs, "PrometheusRule")
    validate(rule)
    rules_file = yaml.safe_load((tmp_path / "out" / "task-sidecar.rules.yaml").read_text())
    assert rule["spec"] == rules_file
    # and the dashboards, one ConfigMap each
    boards = {
        key: json.loads(text)
        for doc in of_kind(docs, "ConfigMap")
        if doc["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, text in doc["data"].items()
    }
    expected = {p.name: json.loads(p.read_text()) for p in written if p.suffix == ".json"}
    assert boards == expected


def test_default_rules_are_the_committed_ones_and_prometheus_templates_reach_the_cluster() -> None:
    committed = yaml.safe_load((ROOT / "alerting" / "task-sidecar.rules.yaml").read_text())
    rendered = render({"monitoring": {"prometheusRule": {"enabled": True}}})
    (rule,) = of_kind(manifests(rendered), "PrometheusRule")
    assert rule["spec"] == committed
    assert "{{ $labels.namespace }}" in rendered["task-sidecar/templates/prometheusrule.yaml"]


def test_base_urls_from_values_land_in_every_alert_with_no_placeholder_left() -> None:
    docs = render_ci("standalone-full-values.yaml")
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations["runbook_url"] == (
            f"https://runbooks.internal.example.org/task-sidecar/{alert['alert']}.md"
        )
        assert annotations["dashboard_url"].startswith("https://grafana.internal.example.org/d/")
        assert alert["labels"]["team"] == "platform"
    text = json.dumps(rule) + json.dumps(of_kind(docs, "ConfigMap"))
    for placeholder in ("your-org", "grafana.example.com", "localhost", "«"):
        assert placeholder not in text
    assert "k8s_cluster" in text
    assert 'namespace=~\\"tasks\\"' in text


def test_a_bad_mixin_config_is_refused_by_the_schema_or_the_chart() -> None:
    with pytest.raises(helm_python.HelmValuesError, match=r"/monitoring/mixin/dlq/for"):
        render({"monitoring": {"mixin": {"dlq": {"for": "soon"}}}})
    with pytest.raises(helm_python.HelmValuesError, match=r"invalid propertyName 'severity'"):
        render({"monitoring": {"mixin": {"rule_labels": {"severity": "low"}}}})
    with pytest.raises(helm_python.HelmRenderError, match=r"`warning` must be below"):
        render_with_mixin({"dlq": {"critical": 10}})


# --- Alertmanager: only task-sidecar's alerts -----------------------------------------------


def test_alertmanager_config_takes_only_task_sidecars_alerts() -> None:
    (config,) = of_kind(render_ci("standalone-full-values.yaml"), "AlertmanagerConfig")
    assert config["metadata"]["labels"]["team"] == "platform"
    spec = config["spec"]
    route = spec["route"]
    assert route["matchers"] == [{"name": "alertname", "matchType": "=~", "value": "TaskSidecar.+"}]
    assert route["groupBy"] == ["alertname", "cluster", "namespace", "task"]
    by_severity = {r["matchers"][0]["value"]: r["receiver"] for r in route["routes"]}
    assert by_severity == {
        "critical": "pagerduty",
        "warning": "slack-task-alerts",
        "info": "slack-task-info",
    }
    receivers = {r["name"]: r for r in spec["receivers"]}
    key = receivers["pagerduty"]["pagerdutyConfigs"][0]["routingKey"]
    assert key == {"name": "ci-task-sidecar-alertmanager", "key": "pagerduty-routing-key"}
    for name, secret_key, channel in (
        ("slack-task-alerts", "slack-task-alerts-url", "#task-alerts"),
        ("slack-task-info", "slack-task-info-url", "#task-info"),
    ):
        (slack,) = receivers[name]["slackConfigs"]
        assert slack["apiURL"] == {"name": "ci-task-sidecar-alertmanager", "key": secret_key}
        assert slack["channel"] == channel
    # the same texts as the plain example file
    plain = yaml.safe_load((ROOT / "alerting" / "alertmanager.yml").read_text())
    plain_receivers = {r["name"]: r for r in plain["receivers"]}
    assert (
        receivers["slack-task-alerts"]["slackConfigs"][0]["title"]
        == (plain_receivers["slack-task-alerts"]["slack_configs"][0]["title"])
    )
    details = {
        d["key"]: d["value"] for d in receivers["pagerduty"]["pagerdutyConfigs"][0]["details"]
    }
    assert details == plain_receivers["pagerduty"]["pagerduty_configs"][0]["details"]
    for rule in spec["inhibitRules"]:
        for side in ("sourceMatch", "targetMatch"):
            assert any(m["name"] == "alertname" and "TaskSidecar" in m["value"] for m in rule[side])


# --- sidecar mode: the named templates in a worker chart ----------------------------------


def test_sidecar_templates_make_a_valid_worker_pod_scraped_by_its_pod_monitor(
    tmp_path: Path,
) -> None:
    docs = render_example(tmp_path)
    for doc in docs:
        validate(doc)
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["metadata"]["name"] == "billing-worker"  # the subchart adds none
    assert not of_kind(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    worker, sidecar = pod["containers"]
    assert sidecar["name"] == "task-sidecar"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["TASK_SIDECAR_HOST"] == "127.0.0.1"  # the API stays in the pod
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["sidecar-http"] == int(env["TASK_SIDECAR_PORT"])
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    assert worker_env["TASK_SIDECAR_URL"] == f"http://127.0.0.1:{ports['sidecar-http']}"
    assert "TASK_SIDECAR_URL" in (ROOT / "sidecar" / "integrations" / "celery.py").read_text()
    # The worker's client keeps its dead letters on a volume of the pod (its root file
    # system is read-only), where the client looks for its outbox.
    (mount,) = worker["volumeMounts"]
    assert worker_env["TASK_SIDECAR_CLIENT_OUTBOX"] == mount["mountPath"]
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    from sidecar.client.outbox import ENV

    assert ENV == "TASK_SIDECAR_CLIENT_OUTBOX"

    # The PodMonitor scrapes a port of this pod that listens on every address.
    (monitor,) = of_kind(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    scraped = ports[endpoint["port"]]
    assert env["TASK_SIDECAR_METRICS_HOST"] == "0.0.0.0"
    assert int(env["TASK_SIDECAR_METRICS_PORT"]) == scraped != ports["sidecar-http"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The kubelet's probes reach the same port (not the loopback API).
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["port"] == endpoint["port"]

    # Everything the container refers to exists: its volumes, the ConfigMap, the Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in sidecar["volumeMounts"]} <= set(volumes)
    assert "emptyDir" in volumes[mount["name"]]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for volume in volumes.values():
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in sidecar["env"] if "valueFrom" in e}
    assert {("Secret", name) for name in secrets} <= names
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/policies", "checksum/secret"} <= set(annotations)


def test_sidecar_checksum_follows_the_policies(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any], where: Path) -> str:
        (deployment,) = of_kind(render_example(where, values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/policies"]

    tuned = {"taskSidecar": {"policies": {"content": "# tuned\n"}}}
    assert checksum({}, tmp_path / "a") != checksum(tuned, tmp_path / "b")


# --- the schema refuses bad values with a readable message --------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": -1}, r"/replicaCount': minimum: got -1, want 0"),
        ({"mode": "daemon"}, r"/mode': value must be one of 'standalone', 'sidecar'"),
        ({"settings": {"requeue": "kafka"}}, r"/settings/requeue': value must be one of"),
        ({"settings": {"port": 0}}, r"/settings/port': minimum"),
        ({"settings": {"reloadInterval": "soon"}}, r"/settings/reloadInterval': 'soon'"),
        ({"settings": {"logLevel": "LOUD"}}, r"/settings/logLevel'"),
        ({"autoscaling": {"maxReplicas": 0}}, r"/autoscaling/maxReplicas': minimum"),
        ({"securityContext": {"runAsNonRoot": False}}, r"/securityContext/runAsNonRoot'"),
        ({"replicas": 3}, r"additional properties 'replicas' not allowed"),
        ({"store": "sqlite"}, r"/store': value must be one of"),
        ({"settings": {"logFormat": "xml"}}, r"/settings/logFormat'"),
        ({"metrics": {"port": 0}}, r"/metrics/port': minimum"),
        ({"persistence": {"size": "lots"}}, r"/persistence/size'"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart().validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError, match=message):  # and so does install
        render({**values, "secret": {"hookTokens": "ci:0123456789abcdef0"}})


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis:6379/0",
        "unix:///run/redis.sock?db=0",
        "rediss+cluster://:pw@redis-0:6379,redis-1:6379/",
        "redis+sentinel://sentinel-0:26379,sentinel-1:26379/mymaster/0",
    ],
)
def test_schema_takes_every_redis_url_form(url: str) -> None:
    chart().validate_schema({"secret": {"redisUrl": url}})


@pytest.mark.parametrize("url", ["http://redis:6379/0", "redis+shard://redis:6379/"])
def test_schema_refuses_other_redis_urls(url: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=r"/secret/redisUrl'"):
        chart().validate_schema({"secret": {"redisUrl": url}})


def test_ci_values_and_defaults_pass_the_schema() -> None:
    chart().validate_schema({})
    for path in CI_FILES:
        chart().validate_schema(ci_values(path))


# --- values.yaml documents every key; the schema describes every key ----------------------


def _schema_paths(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    paths = {}
    for key, child in node.get("properties", {}).items():
        paths[prefix + key] = child
        paths.update(_schema_paths(child, f"{prefix}{key}."))
    return paths


def _values_lines() -> dict[str, bool]:
    """{dotted key: documented}: a key is documented by a comment above it or an ancestor."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str, bool]] = []
    previous_comment = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            previous_comment = True
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("-") or ":" not in stripped:
            previous_comment = False
            continue
        key = stripped.split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = previous_comment or any(doc for _, _, doc in stack)
        dotted = ".".join([k for _, k, _ in stack] + [key])
        found[dotted] = documented
        stack.append((indent, key, documented))
        previous_comment = False
    return found


def test_values_yaml_and_schema_describe_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert "values.schema.json" in (CHART / "values.yaml").read_text().splitlines()[0]
    described = _schema_paths(schema)
    values = _values_lines()
    # every key of values.yaml is in the schema (inside free-form objects such as resources
    # and securityContexts, Kubernetes' own types, aside)
    free_form = {p for p, node in described.items() if "properties" not in node}
    for dotted in values:
        if any(dotted.startswith(p + ".") for p in free_form):
            continue
        assert dotted in described, f"values.yaml key {dotted} is not in values.schema.json"
    for path, node in described.items():
        if path == "global":
            continue
        assert node.get("description"), f"{path} has no description in values.schema.json"
        assert path in values, f"values.schema.json describes {path}, values.yaml lacks it"
        if "properties" not in node:  # a leaf: a comment above it, or above an ancestor
            assert values[path], f"values.yaml does not document {path}"


# --- the DLQ explorer's PostgreSQL datasource -----------------------------------------------

EXPLORER_DATASOURCE = {
    "enabled": True,
    "namespace": "monitoring",
    "host": "pg.db.svc",
    "database": "sidecar",
    "user": "grafana_dlq",
    "passwordSecret": {"name": "grafana-dlq-reader"},
}


def test_the_explorer_datasource_is_off_by_default_and_the_dashboard_ships() -> None:
    docs = manifests(render({"monitoring": {"dashboards": {"enabled": True}}}))
    config_maps = of_kind(docs, "ConfigMap")
    assert not [d for d in config_maps if "grafana_datasource" in d["metadata"]["labels"]]
    shipped = {key for d in config_maps for key in d.get("data", {})}
    assert "task-sidecar-dlq-explorer.json" in shipped


def test_the_explorer_datasource_reads_the_password_from_the_mounted_secret() -> None:
    rendered = render({"monitoring": {"dlqExplorer": EXPLORER_DATASOURCE}})
    (doc,) = [
        d
        for d in of_kind(manifests(rendered), "ConfigMap")
        if d["metadata"]["labels"].get("grafana_datasource") == "1"
    ]
    validate(doc)
    assert doc["metadata"]["namespace"] == "monitoring"
    (text,) = doc["data"].values()
    provisioning = yaml.safe_load(text)
    assert provisioning["apiVersion"] == 1
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "grafana-postgresql-datasource"
    assert datasource["url"] == "pg.db.svc:5432"
    assert datasource["user"] == "grafana_dlq"
    assert datasource["jsonData"]["database"] == "sidecar"
    assert datasource["jsonData"]["sslmode"] == "require"
    assert datasource["secureJsonData"] == {
        "password": "$__file{/etc/secrets/task-sidecar-dlq/password}"
    }
    assert "password" not in datasource
    assert "password" not in datasource["jsonData"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"passwordSecret": {"name": ""}}, r"dlqExplorer/passwordSecret/name'"),
        ({"host": ""}, r"dlqExplorer/host'"),
        ({"sslMode": "prefer-ish"}, r"dlqExplorer/sslMode'"),
        ({"password": "inline"}, r"additional properties 'password' not allowed"),
    ],
)
def test_the_explorer_datasource_refuses_what_it_cannot_connect_with(
    change: dict[str, Any], message: str
) -> None:
    values = {"monitoring": {"dlqExplorer": {**EXPLORER_DATASOURCE, **change}}}
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart().validate_schema(values)
