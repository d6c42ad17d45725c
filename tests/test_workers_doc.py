"""docs/workers.md: every curl example runs against a real `task-sidecar serve` and gives
the answer the page shows.

A ```sh block is run with bash (SIDECAR and TOKEN set); the ```json block right after it,
if any, is the answer expected from its last command: strings, booleans, integers and
nulls must be equal, "…" stands for any value, and floats only need to be numbers. A
block marked ``<!-- not run: why -->`` is skipped (tests/docblocks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from tests.docblocks import ROOT, blocks
from tests.processes import SidecarProcess

DOC = ROOT / "docs" / "workers.md"
TOKEN = "doc-" + uuid.uuid4().hex


EXAMPLES = [(block.text, block.answer) for block in blocks(DOC)[0] if block.not_run is None]


def matches(expected: Any, got: Any, path: str = "") -> list[str]:
    if expected == "…":
        return []
    if isinstance(expected, float) and not isinstance(expected, bool):
        return [] if isinstance(got, int | float) else [f"{path}: expected a number, got {got!r}"]
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected an object, got {got!r}"]
        problems = [f"{path}.{k}: missing" for k in expected if k not in got]
        for key, value in expected.items():
            if key in got:
                problems += matches(value, got[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {got!r}"]
        return [
            p
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            for p in matches(e, g, f"{path}[{i}]")
        ]
    return [] if expected == got else [f"{path}: expected {expected!r}, got {got!r}"]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory):
    with SidecarProcess(tmp_path_factory.mktemp("workers-doc"), TOKEN) as process:
        yield process


def test_the_page_has_examples():
    assert len(EXAMPLES) >= 6
    assert all(expected for _, expected in EXAMPLES)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("script", "expected"), EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))]
)
def test_example(sidecar: SidecarProcess, script: str, expected: str | None):
    env = {**os.environ, "SIDECAR": f"http://127.0.0.1:{sidecar.port}", "TOKEN": TOKEN}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if expected is not None:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        problems = matches(json.loads(expected), answer)
        assert not problems, f"{problems}\n{json.dumps(answer, indent=1)}"
