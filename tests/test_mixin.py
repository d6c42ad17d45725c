"""sidecar.mixin itself: numbers written as Helm writes them, skeletons filled, and the wheel
carrying everything `task-sidecar mixin render` needs (no repository, no SDK)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from sidecar.mixin.skeleton import SkeletonError, fill, go_float, helm_yaml, hole

from .observability import ROOT


class TestGoFloat:
    """`fmt.Sprint(float64)`, as Helm prints a number of the values (checked against Helm
    itself by tests/test_helm.py's rendering of the same configs)."""

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (20, "20"),  # whole numbers have no point
            (0.9, "0.9"),
            (14.4, "14.4"),
            (86400, "86400"),
            (123456, "123456"),
            (1e6, "1e+06"),  # exponent from 10^6 on
            (1234567, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),  # and below 10^-4
            (0.1 + 0.2, "0.30000000000000004"),  # shortest digits that read back
            (0, "0"),
            (-2.5, "-2.5"),
        ],
    )
    def test_as_go_prints_it(self, value: float, text: str) -> None:
        assert go_float(value) == text


class TestFill:
    """The skeleton's holes and directives, filled from a config."""

    CONFIG = {  # noqa: RUF012
        "a": {"n": 20.0, "on": True, "off": False, "list": ["X", "Y"]},
        "sel": {"job": "b.*", "namespace": ""},
        "labels": {"team": "pay"},
        "pairs": [{"w": "1h"}, {"w": "5m"}],
    }

    def test_holes_filters_and_numbers(self) -> None:
        node = {
            "expr": f"x{hole('sel', 'selector')} > {hole('a.n', 'num')}",
            "more": f'y{{z="1"{hole("sel", "matchers")}}}',
            "types": hole("a.list", "bar"),
            "threshold": hole("a.n", "add1"),  # a whole hole with a number filter: a number
        }
        assert fill(node, self.CONFIG) == {
            "expr": 'x{job=~"b.*"} > 20',
            "more": 'y{z="1", job=~"b.*"}',
            "types": "X|Y",
            "threshold": 21,
        }

    def test_directives(self) -> None:
        node = [
            {"$if": "a.on", "k": "kept"},
            {"$if": "a.off", "k": "dropped"},
            {"$each": "pairs", "$as": "p", "$item": {"w": hole("p.w")}},
            {"labels": {"severity": "x", "$merge": "labels"}},
        ]
        assert fill(node, self.CONFIG) == [
            {"k": "kept"},
            {"w": "1h"},
            {"w": "5m"},
            {"labels": {"severity": "x", "team": "pay"}},
        ]

    @pytest.mark.parametrize("text", [hole("a.nope"), hole("a.n"), hole("a.n", "shout")])
    def test_a_bad_hole_is_an_error(self, text: str) -> None:
        with pytest.raises(SkeletonError):
            fill(text, self.CONFIG)

    def test_helm_template_keeps_prometheus_templates_and_a_brace_before_a_hole(self) -> None:
        text = helm_yaml({"a": "{{ $labels.x }} m{" + hole("cluster_label") + '="1"}'})
        assert '{{ "{{" }} $labels.x }}' in text
        assert 'm{{ "{" }}{{ $c.cluster_label' in text


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    subprocess.run(command, check=True, timeout=300)
    (found,) = out.glob("task_sidecar-*.whl")
    return found


class TestWheel:
    """Built like a user gets it, the package renders rules and dashboards on its own."""

    def test_it_holds_the_defaults_and_the_skeletons(self, wheel: Path) -> None:
        names = set(zipfile.ZipFile(wheel).namelist())
        assert "sidecar/mixin/defaults.yaml" in names
        for uid in ("overview", "failures", "retries", "idempotency", "dlq-explorer"):
            assert f"sidecar/mixin/skeletons/task-sidecar-{uid}.json" in names
        assert not any(n.startswith(("grafana/", "alerting/")) for n in names)

    def test_render_from_the_wheel_alone(self, wheel: Path, tmp_path: Path) -> None:
        unpacked = tmp_path / "site"
        zipfile.ZipFile(wheel).extractall(unpacked)
        (tmp_path / "mine.yaml").write_text("cluster_label: region\ndlq: {warning: 7}\n")
        env = {**os.environ, "PYTHONPATH": str(unpacked)}
        script = (
            "import sidecar, sys; assert sidecar.__file__.startswith(sys.argv[1]);"
            "from sidecar.mixin.__main__ import main; sys.exit(main(sys.argv[2:]))"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                str(unpacked),
                "render",
                "--config",
                "mine.yaml",
                "--out",
                "out",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        rules = yaml.safe_load((tmp_path / "out" / "task-sidecar.rules.yaml").read_text())
        exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
        assert "job:task_sidecar_dlq_backlog:sum > 7" in exprs
        assert all("by (cluster" not in e for e in exprs)
        assert len(list((tmp_path / "out" / "dashboards").glob("*.json"))) == 5
