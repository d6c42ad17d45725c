"""The YAML nodes the policy loader reads: each knows its dotted path and line, and
reports problems to a list shared by the whole file (loader.py collects them all)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from . import yamlpaths
from .durations import parse_duration


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        line = f"line {self.line}: " if self.line else ""
        return f"{where}{line}{self.message}"


class PolicyError(Exception):
    """The policy file is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem], source: str = "policies") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(map(str, problems)))


class Invalid(Exception):
    """A value is unusable; the problem is already recorded."""


class Node:
    """A YAML node with its dotted path; reports problems to a shared list."""

    def __init__(self, node: yaml.Node, path: str, problems: list[Problem]) -> None:
        self.node, self.path, self.problems = node, path, problems

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def fail(self, message: str) -> Invalid:
        self.problems.append(Problem(self.path, self.line, message))
        return Invalid()

    def child(self, node: yaml.Node, key: str | int) -> Node:
        path = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}"
        return Node(node, path.lstrip("."), self.problems)

    # --- shapes -----------------------------------------------------------------------

    def mapping(self) -> dict[str, Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail(f"expected a mapping, got {self._kind()}")
        out: dict[str, Node] = {}
        for key_node, value_node in self.node.value:
            key = yamlpaths.construct(key_node) if key_node.id == "scalar" else None
            if not isinstance(key, str):
                self.child(key_node, "?").fail(f"keys must be strings, got {key!r}")
                continue
            if key in out:
                self.child(key_node, key).fail("duplicate key")
            out[key] = self.child(value_node, key)
        return out

    def fields(self, required: set[str], optional: set[str]) -> dict[str, Node]:
        """The mapping, checked for missing and unknown keys."""
        found = self.mapping()
        for key in sorted(required - found.keys()):
            self.fail(f"missing required key '{key}'")
        for key, node in found.items():
            if key not in required and key not in optional:
                known = sorted(required | optional)
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of {known}"
                node.fail(f"unknown key '{key}'{hint}")
        return found

    def sequence(self) -> list[Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail(f"expected a list, got {self._kind()}")
        return [self.child(item, i) for i, item in enumerate(self.node.value)]

    def items(self) -> list[Node]:
        """A list, or a single value standing for a list of one."""
        if isinstance(self.node, yaml.SequenceNode):
            return self.sequence()
        return [self]

    def scalar(self) -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail(f"expected a single value, got {self._kind()}")
        return yamlpaths.construct(self.node)

    def _kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        return repr(yamlpaths.construct(self.node))

    # --- typed values -------------------------------------------------------------------

    def str(self) -> str:
        value = self.scalar()
        if not isinstance(value, str) or not value:
            raise self.fail(f"expected a non-empty string, got {value!r}")
        return value

    def bool(self) -> bool:
        value = self.scalar()
        if not isinstance(value, bool):
            raise self.fail(f"expected true or false, got {value!r}")
        return value

    def int(self, low: int | None = None, high: int | None = None) -> int:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"expected a whole number, got {value!r}")
        return self._bounded(value, low, high)

    def number(self, low: float | None = None, high: float | None = None) -> float:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.fail(f"expected a number, got {value!r}")
        return self._bounded(float(value), low, high)

    def duration(self) -> float:
        try:
            return parse_duration(self.scalar())
        except ValueError as exc:
            raise self.fail(str(exc)) from None

    def choice(self, options: list[str] | dict[str, Any], what: str = "one of") -> str:
        value = self.scalar()
        if value not in options:
            close = difflib.get_close_matches(str(value), list(options), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(f"expected {what} {sorted(options)}, got {value!r}{hint}")
        return value

    def _bounded(self, value: Any, low: Any, high: Any) -> Any:
        if low is not None and value < low:
            raise self.fail(f"expected at least {low}, got {value}")
        if high is not None and value > high:
            raise self.fail(f"expected at most {high}, got {value}")
        return value


def optional(fields: dict[str, Node], key: str, read: Callable[[Node], Any], default: Any) -> Any:
    node = fields.get(key)
    if node is None:
        return default
    try:
        return read(node)
    except Invalid:
        return default


def each(nodes: dict[str, Node] | list[Node]) -> Iterator[tuple[Any, Node]]:
    yield from nodes.items() if isinstance(nodes, dict) else enumerate(nodes)
