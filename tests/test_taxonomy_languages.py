"""The default taxonomy against real errors of Node, Java, Go and Ruby workers.

tests/data/exceptions-other.jsonl is captured by scripts/capture/capture-other.py (run by
hand; it runs scripts/capture/node.js, Capture.java, capture.go and capture.rb). Each row
holds the wire `exception` a worker in that language sends, the failure type judged right
(`expected`) and, where another answer is not wrong, the `acceptable` alternatives (a
database that refuses connections may read as EXTERNAL_API_DOWN).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import msgspec
import pytest

from sidecar.policy import load_policy
from sidecar.policy.events import ExceptionInfo

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_policy(ROOT / "policies.yaml")
DATA = ROOT / "tests" / "data" / "exceptions-other.jsonl"
PYTHON_DATA = ROOT / "tests" / "data" / "exceptions.jsonl"
LANGUAGES = ("node", "java", "go", "ruby")
TASK = "app.tasks.some_task"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


ROWS = _rows(DATA)
PYTHON_ROWS = _rows(PYTHON_DATA)


def classify(exception: dict):
    return POLICY.classify(msgspec.convert(exception, ExceptionInfo), TASK)


def acceptable(row: dict, failure_type: str) -> bool:
    return failure_type == row["expected"] or failure_type in row.get("acceptable", ())


def winners(rows: list[dict]) -> dict[str, collections.Counter]:
    """{rule: Counter(language: captured cases it wins)}."""
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        out[classify(row["exception"]).rule][row.get("language", "python")] += 1
    return out


class TestCapturedData:
    """The rows are well-formed, real and from every runtime."""

    def test_rows(self):
        keys = [(row["language"], row["case"]) for row in ROWS]
        assert len(keys) == len(set(keys)), "duplicate cases"
        for row in ROWS:
            exc = msgspec.convert(row["exception"], ExceptionInfo)
            assert exc.language == row["language"]
            assert {row["expected"], *row.get("acceptable", ())} <= set(POLICY.failure_types)
            assert row["runtime"], row["case"]

    @pytest.mark.parametrize("language", LANGUAGES)
    def test_every_runtime_captured(self, language):
        assert sum(row["language"] == language for row in ROWS) >= 40


class TestAcceptable:
    """At least 95 % of the captured errors of each runtime get an acceptable failure type."""

    @pytest.mark.parametrize("language", LANGUAGES)
    def test_rate(self, language):
        rows = [row for row in ROWS if row["language"] == language]
        misses = []
        for row in rows:
            got = classify(row["exception"])
            if not acceptable(row, got.failure_type):
                misses.append(f"{row['case']}: {got.failure_type} by {got.rule}")
        assert 1 - len(misses) / len(rows) >= 0.95, "\n".join(misses)

    def test_rate_overall(self):
        good = sum(acceptable(row, classify(row["exception"]).failure_type) for row in ROWS)
        assert good / len(ROWS) >= 0.95


class TestRuleCoverage:
    """No default rule is dead, and each rule written for another runtime wins one of its
    real errors."""

    def test_every_rule_wins_a_captured_case(self):
        won = winners(PYTHON_ROWS + ROWS)
        dead = [rule.name for rule in POLICY.rules if rule.name not in won]
        assert not dead, f"rules that win no captured error: {dead}"

    def test_rules_beyond_python_win_a_case_of_another_runtime(self):
        """Every rule that no Python exception needs (a code, a language, a class of
        another runtime) wins at least one Node, Java, Go or Ruby error."""
        python_winners = winners(PYTHON_ROWS)
        other = winners(ROWS)
        missing = [
            rule.name
            for rule in POLICY.rules
            if rule.name not in python_winners and not other.get(rule.name)
        ]
        assert not missing, missing

    def test_language_rules_win_their_own_language(self):
        other = winners(ROWS)
        for rule in POLICY.rules:
            for language in rule.match.language:
                assert other[rule.name][language] >= 1, (rule.name, language)


class TestLanguageConditions:
    """A rule for one runtime does not take another runtime's error of the same name."""

    def test_syntax_error_depends_on_the_language(self):
        base = {"type": "SyntaxError", "mro": ["SyntaxError", "Error"], "message": "Unexpected"}
        assert classify({**base, "language": "node"}).failure_type == "PERMANENT_VALIDATION"
        # A Python driver's SyntaxError is a bad query: a bug.
        assert classify({**base, "language": "python"}).failure_type == "PERMANENT_LOGIC"

    def test_without_a_language_no_language_rule_applies(self):
        got = classify({"type": "ReferenceError", "message": "x is not defined"})
        assert got.rule == "fallback"
