"""The layers keep their places (docs/architecture.md): imports only run downwards, and
one module writes every metric series."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sidecar"

# For each layer, the sidecar modules it must never import.
FORBIDDEN = {
    "policy": ("sidecar.",),  # the pure core imports nothing of ours but itself
    "records.py": ("sidecar.",),
    "errors.py": ("sidecar.",),
    "durable.py": ("sidecar.",),
    "store": ("sidecar.service", "sidecar.http", "sidecar.cli", "sidecar.metrics"),
    "service": ("sidecar.http", "sidecar.cli"),
    "http": ("sidecar.store", "sidecar.cli"),
    "integrations/kombu.py": ("sidecar.",),
}
ALLOWED = {"policy": ("sidecar.policy",)}


def modules(area: str) -> list[Path]:
    path = PACKAGE / area
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Absolute names of the sidecar modules a file imports."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # where `.` points
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
    return {name for name in names if name == "sidecar" or name.startswith("sidecar.")}


@pytest.mark.parametrize("area", sorted(FORBIDDEN))
def test_imports_only_run_downwards(area: str) -> None:
    wrong = []
    for path in modules(area):
        for name in imported(path):
            allowed = any(name.startswith(ok) for ok in ALLOWED.get(area, ()))
            if not allowed and any(
                name == bad.rstrip(".") or name.startswith(bad) for bad in FORBIDDEN[area]
            ):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong


def test_only_the_metrics_module_touches_series() -> None:
    writers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("labels", "inc", "observe")
    }
    assert writers == {"metrics.py"}


def test_no_module_is_over_800_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 800
    }
    assert not long
