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

# The Prometheus Operator CRDs are not in the Kubernetes schemas: check their shape here.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS},
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object"},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                                "scrapeTimeout": {"type": "string"},
                                "relabelings": {"type": "array"},
                                "metricRelabelings": {"type": "array"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [
                                            {"required": ["record"]},
                                            {"required": ["alert"]},
                                        ],
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


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


def pod_specs(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] in ("Deployment", "Job")]


def validate(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        import jsonschema

        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
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
    for pod in pod_specs(render_ci(name)):
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
                volume = volumes[mount["name"]]
                if "emptyDir" in volume:  # the only writable place: the data dir
                    assert mount["mountPath"] == env["TASK_SIDECAR_DATA_DIR"]
                else:
                    assert mount.get("readOnly") is True


@pytest.mark.parametrize("name", CI_NAMES)
def test_probes_and_resources(name: str) -> None:
    deployments = of_kind(render_ci(name), "Deployment")
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports


def kinds(name: str) -> set[str]:
    return {doc["kind"] for doc in render_ci(name)}


def test_feature_combinations_render_what_they_switch_on() -> None:
    base = {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount"}
    assert kinds("standalone-minimal-values.yaml") == base | {"PodDisruptionBudget"}
    assert kinds("standalone-full-values.yaml") == base | {
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Job",
        "ServiceMonitor",
        "PrometheusRule",
    }
    existing = kinds("standalone-existing-secret-values.yaml")
    assert existing == {"Deployment", "Service", "ServiceAccount", "Job"}
    assert kinds("sidecar-values.yaml") == {"ConfigMap", "Secret", "PrometheusRule"}

    full = render_ci("standalone-full-values.yaml")
    (deployment,) = of_kind(full, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    minimal = render_ci("standalone-minimal-values.yaml")
    (deployment,) = of_kind(minimal, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (
        spread[0]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )


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
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_network_policy_admits_only_workers_prometheus_and_operators() -> None:
    (policy,) = of_kind(render_ci("standalone-full-values.yaml"), "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    assert peers[0]["podSelector"] == {"matchLabels": {"app": "celery-worker"}}
    assert peers[1]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert peers[2] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    }
    assert len(peers) == 3
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_migration_job_is_a_hook_that_runs_migrate() -> None:
    (job,) = of_kind(render_ci("standalone-full-values.yaml"), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["task-sidecar", "migrate"]
    (env,) = container["env"]
    assert env["name"] == "TASK_SIDECAR_POSTGRES_DSN"
    assert env["valueFrom"]["secretKeyRef"]["key"] == "postgres-dsn"


# --- secrets, policies and the checksum that rolls pods ----------------------------------


def test_secret_holds_tokens_and_urls_and_the_pods_read_them() -> None:
    docs = render_ci("standalone-full-values.yaml")
    secret = next(d for d in of_kind(docs, "Secret") if "hook-tokens" in d["data"])
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["postgres-dsn"] == "postgresql://sidecar:pw@postgres:5432/sidecar"
    assert decoded["redis-url"] == "redis://redis:6379/0"
    (deployment,) = of_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "valueFrom" in e
        if e["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    }
    assert set(decoded) <= refs
    for e in container["env"]:  # no secret value is written into the pod spec
        assert e.get("value") not in decoded.values()


def test_existing_secret_and_configmap_are_used_not_created() -> None:
    docs = render_ci("standalone-existing-secret-values.yaml")
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    names = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in pod["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert names == {"task-sidecar-credentials"}
    configmaps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert configmaps == {"task-sidecar-policies"}


def test_default_policies_configmap_is_the_projects_and_validates(tmp_path: Path) -> None:
    from sidecar.policy import load_policy

    (configmap,) = of_kind(render_ci("standalone-minimal-values.yaml"), "ConfigMap")
    content = configmap["data"]["policies.yaml"]
    assert content == (ROOT / "policies.yaml").read_text().rstrip("\n")
    path = tmp_path / "policies.yaml"
    path.write_text(content)
    load_policy(path)


def test_changing_the_policies_rolls_the_pods() -> None:
    values = ci_values(CHART / "ci" / "standalone-minimal-values.yaml")

    def annotations(content: str) -> dict[str, str]:
        docs = manifests(render({**values, "policies": {"content": content}}))
        (deployment,) = of_kind(docs, "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]

    text = (ROOT / "policies.yaml").read_text()
    before, after = annotations(text), annotations(text + "\n# tuned\n")
    assert before["checksum/policies"] != after["checksum/policies"]
    assert before["checksum/secret"] == after["checksum/secret"]


def test_standalone_without_tokens_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"needs tokens: set secret\.hookTokens"):
        render({})


# --- generated monitoring files: exactly the committed ones ------------------------------


def test_chart_copies_of_generated_files_have_not_drifted() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync-chart-files.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_rule_carries_exactly_the_rules_of_alerting() -> None:
    assert RULES_FILES
    expected = [g for path in RULES_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    rendered = render(ci_values(CHART / "ci" / "standalone-full-values.yaml"))
    (rule,) = of_kind(manifests(rendered), "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    # Prometheus' own templates reach the cluster untouched by Helm.
    source = "".join(path.read_text() for path in RULES_FILES)
    if "{{ $labels" in source:
        assert "{{ $labels" in rendered["task-sidecar/templates/prometheusrule.yaml"]


def test_dashboard_configmaps_carry_exactly_the_generated_json() -> None:
    assert DASHBOARDS
    docs = render_ci("standalone-full-values.yaml")
    dashboards = [
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert all(d["metadata"]["labels"]["grafana_dashboard"] == "1" for d in dashboards)
    by_key = {key: text for d in dashboards for key, text in d["data"].items()}
    assert sorted(by_key) == [path.name for path in DASHBOARDS]
    assert len(dashboards) == len(DASHBOARDS)  # one ConfigMap each
    for path in DASHBOARDS:
        assert by_key[path.name] == path.read_text().rstrip("\n")
        assert json.loads(by_key[path.name]) == json.loads(path.read_text())
    assert len({d["metadata"]["name"] for d in dashboards}) == len(dashboards)


def test_alertmanager_secret_carries_the_generated_config() -> None:
    docs = render_ci("standalone-full-values.yaml")
    (secret,) = [d for d in of_kind(docs, "Secret") if "alertmanager.yaml" in d["data"]]
    text = base64.b64decode(secret["data"]["alertmanager.yaml"]).decode()
    assert text == (ROOT / "alerting" / "alertmanager.yml").read_text()
    assert secret["metadata"]["labels"]["team"] == "platform"


# --- sidecar mode: the named templates in a worker chart ----------------------------------


def test_sidecar_templates_make_a_valid_worker_pod_that_reaches_127_0_0_1(
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
    assert env["TASK_SIDECAR_HOST"] == "127.0.0.1"
    (port,) = sidecar["ports"]
    assert port["containerPort"] == int(env["TASK_SIDECAR_PORT"])
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    assert worker_env["TASK_SIDECAR_URL"] == f"http://127.0.0.1:{port['containerPort']}"
    assert "TASK_SIDECAR_URL" in (ROOT / "sidecar" / "integrations" / "celery.py").read_text()

    # Everything the container refers to exists: its volumes, the ConfigMap, the Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in sidecar["volumeMounts"]} <= set(volumes)
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
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart().validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError, match=message):  # and so does install
        render({**values, "secret": {"hookTokens": "ci:0123456789abcdef0"}})


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
