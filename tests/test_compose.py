"""compose.yaml, without a Docker engine: the file against the Compose specification's JSON
schema, and every file it mounts where the container would see it: Prometheus' config and
rules through promtool, Alertmanager's through amtool, Grafana's provisioning, and the
sidecar's environment through its own settings."""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar import settings

from .observability import ROOT, load_yaml, require, write_yaml

COMPOSE = ROOT / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


@functools.cache
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def mounts(name: str) -> dict[PurePosixPath, Path]:
    """{path in the container: path on the host} of a service's bind mounts."""
    found = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[PurePosixPath(target)] = (ROOT / source).resolve()
    return found


def host_path(name: str, container_path: str) -> Path:
    """Where a path the container reads comes from, through the service's mounts."""
    path = PurePosixPath(container_path)
    for target, source in mounts(name).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{name} reads {container_path}, which no volume of it mounts")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    require(args[0])
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


class TestComposeFile:
    """The file is valid Compose and holds the whole stack."""

    def test_valid_against_the_compose_specification(self) -> None:
        schema = json.loads(SCHEMA.read_text())
        jsonschema.Draft7Validator(schema).validate(compose())

    def test_the_schema_catches_a_mistake(self) -> None:
        broken = json.loads(json.dumps(compose()))
        broken["services"]["sidecar"]["restart_policy"] = "always"
        with pytest.raises(jsonschema.ValidationError, match="restart_policy"):
            jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(broken)

    def test_the_whole_stack(self) -> None:
        assert set(compose()["services"]) == {
            "sidecar",
            "postgres",
            "redis",
            "prometheus",
            "alertmanager",
            "grafana",
        }
        assert service("sidecar")["build"] == "."

    def test_every_mounted_file_exists(self) -> None:
        for name in compose()["services"]:
            for source in mounts(name).values():
                assert source.exists(), f"{name} mounts {source}, which does not exist"

    def test_published_ports_do_not_clash(self) -> None:
        host_ports = [
            port.split(":")[0]
            for s in compose()["services"].values()
            for port in s.get("ports", [])
        ]
        assert len(host_ports) == len(set(host_ports))


class TestSidecar:
    def test_its_environment_is_a_valid_configuration(self) -> None:
        environ = {k: str(v) for k, v in service("sidecar")["environment"].items()}
        parser = argparse.ArgumentParser()
        settings.add_arguments(parser)
        config = settings.from_sources(parser.parse_args([]), environ)
        config.check()  # 0.0.0.0 with tokens
        assert config.port == 8080

    def test_its_services_are_the_ones_compose_runs(self) -> None:
        env = service("sidecar")["environment"]
        assert "@postgres:5432/" in env["TASK_SIDECAR_POSTGRES_DSN"]
        assert env["TASK_SIDECAR_REDIS_URL"].startswith("redis://redis:6379/")
        postgres = service("postgres")["environment"]
        user, password = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]
        assert env["TASK_SIDECAR_POSTGRES_DSN"] == (
            f"postgresql://{user}:{password}@postgres:5432/{postgres['POSTGRES_DB']}"
        )


class TestPrometheus:
    def config(self) -> dict[str, Any]:
        return load_yaml(host_path("prometheus", "/etc/prometheus/prometheus.yml"))

    def test_scrapes_the_sidecar_and_sends_to_alertmanager(self) -> None:
        config = self.config()
        targets = [
            t
            for job in config["scrape_configs"]
            for c in job["static_configs"]
            for t in c["targets"]
        ]
        assert f"sidecar:{service('sidecar')['environment']['TASK_SIDECAR_PORT']}" in targets
        (am,) = config["alerting"]["alertmanagers"]
        assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
        assert "9093:9093" in service("alertmanager")["ports"]

    def test_its_rules_are_the_mixins_and_promtool_accepts_config_and_rules(
        self, tmp_path: Path
    ) -> None:
        config = self.config()
        found = [host_path("prometheus", path) for path in config["rule_files"]]
        assert found == [ROOT / "alerting" / "task-sidecar.rules.yaml"]
        # promtool reads the config as the container would, rule files included
        config["rule_files"] = [str(path) for path in found]
        result = run("promtool", "check", "config", str(write_yaml(tmp_path / "p.yml", config)))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


class TestAlertmanager:
    def test_its_config_and_secret_files_are_mounted_and_amtool_accepts_them(
        self, tmp_path: Path
    ) -> None:
        command = service("alertmanager")["command"]
        (flag,) = [c for c in command if c.startswith("--config.file=")]
        config = load_yaml(host_path("alertmanager", flag.split("=", 1)[1]))
        for receiver in config["receivers"]:
            for kind in ("pagerduty_configs", "slack_configs"):
                for item in receiver.get(kind, []):
                    for key in [k for k in item if k.endswith("_file")]:
                        source = host_path("alertmanager", item[key])
                        assert source.is_file(), item[key]
                        item[key] = str(source)
        result = run("amtool", "check-config", str(write_yaml(tmp_path / "am.yml", config)))
        assert result.returncode == 0, result.stdout + result.stderr


class TestGrafana:
    def provisioning(self, kind: str) -> list[dict[str, Any]]:
        folder = host_path("grafana", f"/etc/grafana/provisioning/{kind}")
        files = sorted(folder.glob("*.yaml"))
        assert files, kind
        return [yaml.safe_load(f.read_text()) for f in files]

    def datasources(self) -> dict[str, dict[str, Any]]:
        configs = self.provisioning("datasources")
        assert all(config["apiVersion"] == 1 for config in configs)
        return {s["type"]: s for config in configs for s in config["datasources"]}

    def test_the_datasource_is_the_stacks_prometheus(self) -> None:
        sources = self.datasources()
        assert set(sources) == {"prometheus", "grafana-postgresql-datasource"}
        source = sources["prometheus"]
        assert source["type"] == "prometheus"
        assert source["isDefault"] is True
        assert source["url"] == "http://prometheus:9090"
        assert "9090:9090" in service("prometheus")["ports"]

    def test_the_dashboards_provider_reads_the_committed_dashboards(self) -> None:
        (config,) = self.provisioning("dashboards")
        assert config["apiVersion"] == 1
        (provider,) = config["providers"]
        assert provider["type"] == "file"
        folder = host_path("grafana", provider["options"]["path"])
        assert folder == ROOT / "grafana" / "dashboards" / "json"
        uids = {json.loads(p.read_text())["uid"] for p in folder.glob("*.json")}
        assert uids == {
            "task-sidecar-overview",
            "task-sidecar-failures",
            "task-sidecar-retries",
            "task-sidecar-idempotency",
            "task-sidecar-dlq-explorer",
        }

    def test_the_explorer_reads_the_stacks_postgres_as_a_reader_login(self) -> None:
        """The login the init script makes, in task_sidecar_reader, on the sidecar's DB."""
        source = self.datasources()["grafana-postgresql-datasource"]
        assert source["url"] == "postgres:5432"
        assert (
            source["jsonData"]["database"]
            in service("sidecar")["environment"]["TASK_SIDECAR_POSTGRES_DSN"].rsplit("/", 1)[1]
        )
        folder = host_path("postgres", "/docker-entrypoint-initdb.d")
        script = " ".join(p.read_text() for p in sorted(folder.glob("*.sql")))
        user, password = source["user"], source["secureJsonData"]["password"]
        assert f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE task_sidecar_reader" in (
            script
        )
