"""The Dockerfile (no Docker engine needed): its stages, user and entrypoint, and that the
entrypoint plus the chart's args and environment are what `task-sidecar serve` accepts."""

from __future__ import annotations

import fnmatch
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import cli, settings

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        result.append((word.upper(), rest.strip()))
        pending = ""
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def entrypoint() -> list[str]:
    (value,) = [rest for word, rest in final_stage() if word == "ENTRYPOINT"]
    return json.loads(value)  # exec form, so signals reach the process


def test_multi_stage_on_a_slim_python_base() -> None:
    builder, final = stages()
    assert builder[0][1].endswith(" AS builder")
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim")
    assert final[0][1] == "${PYTHON_IMAGE}"
    assert builder[0][1].split()[0] == "${PYTHON_IMAGE}"  # same Python: the venv moves over


def test_package_is_installed_from_the_repo_in_the_builder_only() -> None:
    builder, final = stages()
    runs = " ".join(rest for word, rest in builder if word == "RUN")
    assert "pip install ." in runs
    copied = " ".join(rest for word, rest in builder if word == "COPY")
    for path in ("pyproject.toml", "policies.yaml", "sidecar/"):  # policies.yaml: the
        assert path in copied  # target of sidecar/default_policies.yaml
    assert "task-sidecar check" in runs  # the packaged default policies load
    final_runs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("pip", "apt-get", "gcc", "build-essential", "make"):
        assert tool not in final_runs
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    (user,) = [rest for word, rest in final_stage() if word == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) > 0
    assert int(gid) > 0
    values = yaml.safe_load((ROOT / "helm" / "task-sidecar" / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_no_healthcheck_and_serve_is_the_entrypoint() -> None:
    assert all(word != "HEALTHCHECK" for word, _ in instructions())
    assert entrypoint() == ["task-sidecar", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["task-sidecar"] == "sidecar.cli:main"
    assert all(word != "CMD" for word, _ in final_stage())
    env = " ".join(rest for word, rest in final_stage() if word == "ENV")
    assert "TASK_SIDECAR_DATA_DIR=/var/lib/task-sidecar" in env


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, glob) or path.startswith(glob + "/"):
                result = not negate
        return result

    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert not ignored(source.rstrip("/")), source
    for path in (".venv", ".git", "tests", "helm", "bench", "task_sidecar.egg-info"):
        assert ignored(path), path


# --- the chart's command line and environment agree with the CLI --------------------------

helm_test = pytest.importorskip("tests.test_helm", reason="needs helm-python-sdk")


def sidecar_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in helm_test.CI_NAMES:
        for doc in helm_test.render_ci(name):
            if doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    found.append((name, container))
    return found


@pytest.fixture(scope="module")
def serve_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *entrypoint()[1:], "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return result.stdout


def test_entrypoint_and_chart_args_parse_as_serve(serve_help: str) -> None:
    containers = sidecar_containers()
    assert containers
    assert any(c.get("args") for _, c in containers)  # a CI file exercises extraArgs
    for name, container in containers:
        assert "command" not in container, name  # the image's entrypoint runs
        args = container.get("args", [])
        for arg in args:
            if arg.startswith("--"):
                assert arg.split("=")[0] in serve_help.split(), f"{name}: {arg}"
        parsed = cli.build_parser().parse_args(entrypoint()[1:] + args)
        assert parsed.run is cli.cmd_serve, name


def test_migration_job_command_is_a_cli_command() -> None:
    for doc in helm_test.render_ci("standalone-full-values.yaml"):
        if doc["kind"] == "Job":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            program, *args = container["command"]
            assert program == entrypoint()[0]
            assert cli.build_parser().parse_args(args).run is cli.cmd_migrate


def test_every_variable_the_chart_sets_is_a_setting(serve_help: str) -> None:
    known = {f"[{option.env}]" for option in settings.options(settings.Settings)}
    assert known <= set(serve_help.split())  # `serve --help` names each variable
    allowed = {name.strip("[]") for name in known}
    allowed |= set(settings.TOKEN_VARIABLES.values()) | {settings.PREFIX + "MIGRATE"}
    for name, container in sidecar_containers():
        for env in container["env"]:
            if env["name"].startswith(settings.PREFIX):
                assert env["name"] in allowed, f"{name}: {env['name']}"


@pytest.mark.parametrize("name", helm_test.CI_NAMES)
def test_chart_environment_is_accepted_by_the_settings(name: str) -> None:
    """The literal values the chart renders parse, and the combination passes check()."""
    docs = helm_test.render_ci(name)
    stand_ins = {  # what an existing Secret would hold
        "hook-tokens": "ci:0123456789abcdef0",
        "webhook-secret": "stand-in-webhook-secret",
    }
    secrets: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            import base64

            secrets.update({k: base64.b64decode(v).decode() for k, v in doc["data"].items()})
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            environ: dict[str, str] = {}
            for env in container["env"]:
                if "value" in env:
                    environ[env["name"]] = env["value"]
                else:
                    key = env["valueFrom"]["secretKeyRef"]["key"]
                    value = secrets.get(key) or stand_ins.get(key)
                    if value:
                        environ[env["name"]] = value
            args = cli.build_parser().parse_args(entrypoint()[1:] + container.get("args", []))
            config = settings.from_sources(args, environ)
            config.check()
            assert str(config.data_dir) == environ["TASK_SIDECAR_DATA_DIR"]
            assert config.port == container["ports"][0]["containerPort"]


def test_dockerfile_is_shell_safe() -> None:
    for word, rest in instructions():
        if word == "RUN":
            shlex.split(rest)  # balanced quotes
