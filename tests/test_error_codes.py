"""`exception.code` and `exception.language` on the wire, and the rule conditions that
read them (`code`, its older name `sqlstate`, and `language`)."""

from __future__ import annotations

import msgspec
import pytest

from sidecar.policy import PolicyError, parse_policy
from sidecar.policy.events import ExceptionInfo, FailureEvent, decode_error_path

from .conftest import DEFAULT_POLICIES

RULES = """
    - name: node-refused
      failure_type: EXTERNAL_API_DOWN
      confidence: 0.9
      match: {code: [ECONNREFUSED], language: [node]}
    - name: any-refused
      failure_type: TRANSIENT_NETWORK
      confidence: 0.8
      match: {code: [ECONNREFUSED]}
    - name: deadlock-by-alias
      failure_type: TRANSIENT_DATABASE
      confidence: 0.9
      match: {sqlstate: ["40???"]}
    - name: syntax-in-java-or-go
      failure_type: PERMANENT_VALIDATION
      confidence: 0.9
      match: {exception: ["*SyntaxError*"], language: [Java, go]}
"""


def policy_with(rules: str):
    """The default failure types and retry policies with only `rules` as the taxonomy."""
    text = DEFAULT_POLICIES.read_text()
    head, _, rest = text.partition("  rules:\n")
    _, _, tail = rest.partition("\n# Retry policies.")
    return parse_policy(f"{head}  rules:\n{rules.strip(chr(10))}\n\n# Retry policies.{tail}")


POLICY = policy_with(RULES)


def exc(**fields) -> ExceptionInfo:
    return msgspec.convert({"type": "Error", **fields}, ExceptionInfo)


def rule_for(**fields) -> str:
    return POLICY.classify(exc(**fields), "t").rule


class TestWire:
    """The new fields decode, are optional, and bad values name their path."""

    def test_decoded(self):
        event = msgspec.json.decode(
            b'{"task_id": "1", "task_name": "t", "exception": {"type": "Error",'
            b' "code": "ECONNREFUSED", "language": "node"}}',
            type=FailureEvent,
        )
        assert (event.exception.code, event.exception.language) == ("ECONNREFUSED", "node")

    def test_sqlstate_counts_as_the_code_when_no_code_is_sent(self):
        assert exc(sqlstate="40P01").error_code == "40P01"
        assert exc(sqlstate="40P01", code="X1").error_code == "X1"
        assert exc().error_code is None

    @pytest.mark.parametrize(
        ("field", "value"),
        [("code", 111), ("code", ""), ("code", "x" * 129), ("language", "n\x00de")],
    )
    def test_bad_values(self, field, value):
        body = {"task_id": "1", "task_name": "t", "exception": {"type": "E", field: value}}
        with pytest.raises(msgspec.ValidationError) as caught:
            msgspec.convert(body, FailureEvent)
        assert decode_error_path(caught.value)[0] == f"exception.{field}"


class TestRuleConditions:
    """`code` globs, `sqlstate` as its alias, `language` names in any case."""

    @pytest.mark.parametrize(
        ("fields", "rule"),
        [
            ({"code": "ECONNREFUSED", "language": "node"}, "node-refused"),
            ({"code": "ECONNREFUSED", "language": "NODE"}, "node-refused"),
            ({"code": "ECONNREFUSED", "language": "ruby"}, "any-refused"),
            ({"code": "ECONNREFUSED"}, "any-refused"),  # no language: no language rule
            ({"code": "40P01"}, "deadlock-by-alias"),  # a `sqlstate:` rule reads `code`
            ({"sqlstate": "40001"}, "deadlock-by-alias"),
            ({"code": "40P01X"}, "fallback"),  # "40???" is five characters
            ({"type": "SyntaxError", "language": "java"}, "syntax-in-java-or-go"),
            ({"type": "SyntaxError", "language": "go"}, "syntax-in-java-or-go"),
            ({"type": "SyntaxError", "language": "python"}, "fallback"),
        ],
    )
    def test_matches(self, fields, rule):
        assert rule_for(**fields) == rule

    def test_memo_tells_languages_and_codes_apart(self):
        """The memo of candidates is keyed by code and language too."""
        assert rule_for(code="ECONNREFUSED", language="node") == "node-refused"
        assert rule_for(code="ECONNREFUSED", language="go") == "any-refused"
        assert rule_for(code="ECONNRESET", language="node") == "fallback"

    def test_code_and_sqlstate_lists_in_one_rule_are_any_of(self):
        policy = policy_with(
            """
    - name: both
      failure_type: TRANSIENT_DATABASE
      confidence: 0.9
      match: {code: [ECONNRESET], sqlstate: ["57P01"]}
"""
        )
        assert policy.classify(exc(code="ECONNRESET"), "t").rule == "both"
        assert policy.classify(exc(sqlstate="57P01"), "t").rule == "both"

    def test_bad_conditions_name_their_path(self):
        with pytest.raises(PolicyError) as caught:
            policy_with(
                """
    - name: bad
      failure_type: TRANSIENT_DATABASE
      match: {code: [], language: {node: 1}, lang: [node]}
"""
            )
        text = "\n".join(str(p) for p in caught.value.problems)
        assert "taxonomy.rules[0].match.language" in text
        assert "unknown key 'lang'; did you mean 'language'?" in text
