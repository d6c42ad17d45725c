"""Every shell command in README.md and docs/*.md runs here, or its block says why not.

A command block is a fenced block tagged sh, bash, shell or console, or an untagged one
whose first line starts with "$ ". Each is one of:

- marked ``<!-- not run: why -->`` on the line above the fence: reported as a skip with
  its reason (pytest -ra lists them all);
- in docs/workers.md: run by tests/test_workers_doc.py (checked here);
- otherwise run here, in order, in one scratch directory per page that links to the
  repository's top level (so `policies.yaml`, `alerting/` and `.venv/bin/...` resolve),
  with the venv first on PATH and a real `task-sidecar serve` (embedded stores, no tokens)
  behind `localhost:8080` and `TASK_SIDECAR_URL`.

A sh block must exit 0; a ```json block right after it is the answer of its last command
(same keys; equal values except numbers, which only need to be numbers, and the
rationale, which shows a jittered delay). A console block's "$ " lines are the commands;
every other line it shows must appear in that command's output, in order ("…" stands for
any text). A block whose first line is "# NAME" (e.g. a YAML example) is written to NAME
in the page's scratch directory first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import test_workers_doc
from tests.docblocks import ROOT, Block, blocks
from tests.processes import SidecarProcess

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_PORT = re.compile(r"\b(?:localhost|127\.0\.0\.1):8080\b")
VARIES = {"rationale"}  # shows the jittered delay


BLOCKS = [block for page in PAGES for block in blocks(page)[0]]
WORKERS_DOC = ROOT / "docs" / "workers.md"


def test_the_pages_have_commands():
    """The scan finds the pages' blocks (a broken pattern would pass everything)."""
    pages = {block.page.name for block in BLOCKS}
    assert {"README.md", "backtest.md", "observability.md", "workers.md"} <= pages
    assert len(BLOCKS) >= 30


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory):
    with SidecarProcess(tmp_path_factory.mktemp("doc-sidecar")) as process:
        yield process


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory):
    """One directory per page, kept across its blocks: later blocks read earlier output."""
    made: dict[Path, Path] = {}

    def make(page: Path) -> Path:
        if page not in made:
            directory = tmp_path_factory.mktemp(page.stem)
            for entry in ROOT.iterdir():
                if entry.name not in {".git", "tests"}:
                    (directory / entry.name).symlink_to(entry)
            for name, body in blocks(page)[1].items():
                (directory / name).write_text(body, encoding="utf-8")
            made[page] = directory
        return made[page]

    return make


def environment(sidecar: SidecarProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SIDECAR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TASK_SIDECAR_URL"] = f"http://127.0.0.1:{sidecar.port}"
    return env


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it) for each "$ " line."""
    steps: list[tuple[list[str], list[str]]] = []
    continued = False
    for line in text.splitlines():
        if continued:
            steps[-1][0].append(line)
        elif line.startswith("$ "):
            steps.append(([line[2:]], []))
        elif steps:
            steps[-1][1].append(line)
        continued = (continued or line.startswith("$ ")) and line.endswith("\\")
    return [("\n".join(command), shown) for command, shown in steps]


def shown_in(shown: list[str], output: str) -> list[str]:
    """The shown lines missing from the output (in order; "…" matches any text)."""
    lines = [line.rstrip() for line in output.splitlines()]
    at, missing = 0, []
    for want in (line.rstrip() for line in shown):
        if not want.strip() or want.strip() == "…":
            continue
        pattern = re.compile(".*".join(map(re.escape, want.split("…"))) + "$")
        hit = next((i for i in range(at, len(lines)) if pattern.match(lines[i])), None)
        if hit is None:
            missing.append(want)
        else:
            at = hit + 1
    return missing


def same_shape(expected: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(got, dict):
        problems = [f"{path}.{k}: missing" for k in expected.keys() - got.keys()]
        problems += [f"{path}.{k}: not in the page" for k in got.keys() - expected.keys()]
        for key in expected.keys() & got.keys() - VARIES:
            problems += same_shape(expected[key], got[key], f"{path}.{key}")
        return problems
    if isinstance(expected, float) and not isinstance(expected, bool):
        return [] if isinstance(got, int | float) else [f"{path}: expected a number"]
    return [] if expected == got else [f"{path}: the page shows {expected!r}, got {got!r}"]


def run(script: str, cwd: Path, env: dict[str, str], *, strict: bool):
    flags = ["-euo", "pipefail"] if strict else ["-o", "pipefail"]
    return subprocess.run(
        ["bash", *flags, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_command_block(block: Block, request: pytest.FixtureRequest, scratch):
    if block.not_run is not None:
        assert block.not_run, f"{block.where}: say why the block is not run"
        pytest.skip(f"{block.where} not run: {block.not_run}")
    if block.page == WORKERS_DOC:
        run_there = {script for script, _ in test_workers_doc.EXAMPLES}
        assert block.text in run_there, f"{block.where} is not run by test_workers_doc"
        return
    for tool in ("promtool", "amtool", "curl"):
        if re.search(rf"\b{tool}\b", block.text) and shutil.which(tool) is None:
            pytest.skip(f"{block.where}: {tool} is not installed")
    sidecar: SidecarProcess = request.getfixturevalue("sidecar")
    cwd, env = scratch(block.page), environment(sidecar)
    address = f"127.0.0.1:{sidecar.port}"
    if block.console:
        for command, shown in console_steps(block.text):
            done = run(DOCUMENTED_PORT.sub(address, command), cwd, env, strict=False)
            missing = shown_in(shown, done.stdout + done.stderr)
            assert not missing, f"{block.where}: `{command}` did not print {missing}:\n{done}"
        return
    done = run(DOCUMENTED_PORT.sub(address, block.text), cwd, env, strict=True)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}{done.stderr}"
    if block.answer is not None:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        problems = same_shape(json.loads(block.answer), answer)
        assert not problems, f"{block.where}: {problems}\n{json.dumps(answer, indent=1)}"
