"""policies.yaml loading: the default file, and the errors a broken file gets."""

from __future__ import annotations

import gc
import textwrap

import pytest
import yaml

from sidecar.policy import PolicyError, load_policy, parse_policy
from sidecar.policy.durations import format_duration, parse_duration
from sidecar.policy.events import ExceptionInfo
from sidecar.policy.model import Backoff, Jitter

from .conftest import DEFAULT_POLICIES


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text))
    return [str(p) for p in caught.value.problems]


def default_with(old: str, new: str) -> str:
    """The default policy file with one piece of text replaced."""
    text = DEFAULT_POLICIES.read_text()
    assert old in text, old
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


class TestDefaultPolicy:
    """The shipped policy carries the seed's defaults."""

    def test_fifteen_failure_types_and_eight_remediations(self, policy):
        assert len(policy.failure_types) == 15
        assert len(policy.remediations) == 8
        assert {f.remediation for f in policy.failure_types.values()} <= set(policy.remediations)

    @pytest.mark.parametrize(
        ("failure_type", "retries", "initial", "backoff", "max_delay", "failures", "open_for"),
        [
            ("TRANSIENT_DATABASE", 5, 30, Backoff.EXPONENTIAL, 3600, 10, 300),
            ("TRANSIENT_NETWORK", 3, 60, Backoff.EXPONENTIAL, 1800, 5, 600),
            ("EXTERNAL_API_DOWN", 2, 900, Backoff.FIBONACCI, 7200, 3, 1800),
        ],
    )
    def test_seed_retry_policies(
        self, policy, failure_type, retries, initial, backoff, max_delay, failures, open_for
    ):
        retry = policy.retry_policies[failure_type]
        assert (retry.max_retries, retry.initial_delay, retry.backoff, retry.max_delay) == (
            retries,
            initial,
            backoff,
            max_delay,
        )
        assert (retry.breaker.failures, retry.breaker.open_for) == (failures, open_for)

    def test_permanent_failures_are_not_retried(self, policy):
        for name, failure_type in policy.failure_types.items():
            if failure_type.category.value in ("permanent", "config"):
                assert policy.retry_policy("any.task", name).max_retries == 0, name

    def test_seed_priority_levels(self, policy):
        levels = {level.name: (level.value, level.queue) for level in policy.priority.levels}
        assert levels == {
            "CRITICAL": (10, "critical"),
            "HIGH": (8, "high_priority"),
            "MEDIUM": (6, "reports"),
            "LOW": (4, "maintenance"),
            "DEFERRED": (2, "maintenance"),
        }
        assert policy.priority.tier_sla == {
            "enterprise": 900,
            "premium": 1800,
            "standard": 7200,
            "basic": 28800,
        }

    def test_adaptive_and_load_defaults(self, policy):
        a = policy.adaptive
        assert (a.min_samples, a.fast_above, a.fast_delay_factor) == (10, 0.8, 0.7)
        assert (a.slow_below, a.slow_delay_factor, a.slow_retry_delta) == (0.3, 1.5, -1)
        assert (policy.load.queue_depth_threshold, policy.load.delay_factor) == (100, 1.3)


class TestErrors:
    """A bad file is refused with every problem, its YAML path and its line."""

    def test_bad_duration_names_path_and_line(self):
        text = default_with("      max_delay: 1h\n", '      max_delay: "soon"\n')
        line = line_of(text, '"soon"')
        assert problems_of(text) == [
            f"retry.policies.TRANSIENT_DATABASE.max_delay: line {line}: "
            'expected a duration like 30s, got "soon"'
        ]

    def test_unknown_key_suggests_the_close_one(self):
        text = default_with("      max_retries: 5\n", "      max_retries: 5\n      max_retry: 4\n")
        line = line_of(text, "max_retry: 4")
        assert problems_of(text) == [
            f"retry.policies.TRANSIENT_DATABASE.max_retry: line {line}: "
            "unknown key 'max_retry'; did you mean 'max_retries'?"
        ]

    def test_every_problem_is_listed(self):
        text = default_with("      max_retries: 5\n", "      max_retries: -1\n")
        text = text.replace("  enterprise: 15m", "  enterprise: soon")
        text = text.replace("failure_type: SYSTEM_DISK_FULL\n", "failure_type: DISK_FULL\n", 1)
        found = problems_of(text)
        assert len(found) == 3, found
        assert any("max_retries" in p and "expected at least 0, got -1" in p for p in found)
        assert any(p.startswith("priority.tier_sla.enterprise: line") for p in found)
        assert any("'DISK_FULL'" in p and "SYSTEM_DISK_FULL" in p for p in found)

    def test_invalid_regex(self):
        text = default_with('message: "(?i)out of memory', 'message: "(?i)out of (memory')
        [problem] = problems_of(text)
        assert problem.startswith("taxonomy.rules[2].match.message: line")
        assert "invalid regular expression" in problem

    def test_unknown_remediation_and_category(self):
        found = problems_of(
            """
            remediations: {AUTO_RETRY: retry}
            failure_types:
              BROKEN: {category: transitory, remediation: RETRY_LATER}
            taxonomy: {rules: []}
            retry: {default: {max_retries: 1}}
            priority: {levels: {HIGH: {value: 8, queue: high}}}
            """
        )
        assert found == [
            "failure_types.BROKEN.category: line 4: expected one of ['config', 'external', "
            "'permanent', 'system', 'transient'], got 'transitory'; did you mean 'transient'?",
            "failure_types.BROKEN.remediation: line 4: expected a remediation from "
            "['AUTO_RETRY'], got 'RETRY_LATER'",
        ]

    def test_missing_sections(self):
        found = problems_of("version: 1\n")
        assert "missing required key 'failure_types'" in found[0]
        assert len(found) == 5

    def test_max_delay_below_initial_delay(self):
        text = default_with("      max_delay: 1h\n", "      max_delay: 10s\n")
        [problem] = problems_of(text)
        assert "max_delay (10s) is shorter than initial_delay (30s)" in problem

    def test_invalid_yaml_names_the_line(self):
        [problem] = problems_of("retry:\n  default: [1, 2\n")
        assert problem.startswith("line ")
        assert "invalid YAML" in problem

    def test_empty_file(self):
        assert problems_of("") == ["the file is empty"]


class TestHostileFiles:
    """Files built to exhaust the loader are refused quickly."""

    def test_billion_laughs_is_refused(self):
        bomb = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
        for i, name in enumerate("bcdefghi"):
            prev = "abcdefghi"[i]
            bomb.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
        [problem] = problems_of("\n".join(bomb))
        assert problem == "line 2: anchors and aliases are not allowed"

    def test_huge_file_is_refused(self):
        [problem] = problems_of("# padding\n" * 200_000)
        assert problem.startswith("larger than")

    def test_non_string_keys(self):
        found = problems_of("? [1, 2]\n: value\nfailure_types: {}\n")
        assert any("keys must be strings" in p for p in found)


class TestDurations:
    """Durations are written as people write them."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1d", 86400),
            (45, 45),
            ("250ms", 0.25),
            (1.5, 1.5),
        ],
    )
    def test_parse(self, text, seconds):
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("bad", ["soon", "", "5 minutes", "-5s", -1, True, "1h 30m", None])
    def test_reject(self, bad):
        with pytest.raises(ValueError, match="expected a"):
            parse_duration(bad)

    @pytest.mark.parametrize(
        ("seconds", "text"), [(90, "1m30s"), (3600, "1h"), (0.5, "0.5s"), (93784, "1d2h3m4s")]
    )
    def test_format(self, seconds, text):
        assert format_duration(seconds) == text


class TestOverrides:
    """Per-task overrides change a failure type's policy for matching tasks only."""

    def test_override_applies_in_order(self):
        text = default_with(
            "  overrides: []\n",
            "  overrides:\n"
            '    - {task: "reports.*", failure_type: "*", when_exhausted: discard}\n'
            '    - {task: "reports.daily", failure_type: "TRANSIENT_*", max_retries: 1,'
            " jitter: none}\n",
        )
        policy = parse_policy(text)
        daily = policy.retry_policy("reports.daily", "TRANSIENT_DATABASE")
        assert (daily.max_retries, daily.jitter, daily.when_exhausted.value) == (
            1,
            Jitter.NONE,
            "discard",
        )
        assert policy.retry_policy("reports.weekly", "TRANSIENT_DATABASE").max_retries == 5
        assert policy.retry_policy("billing.charge", "TRANSIENT_DATABASE").when_exhausted == (
            "dead_letter"
        )

    def test_override_of_unknown_failure_type(self):
        text = default_with(
            "  overrides: []\n", '  overrides:\n    - {task: "x", failure_type: "NOPE*"}\n'
        )
        [problem] = problems_of(text)
        assert "'NOPE*' matches no failure type" in problem


class TestPatterns:
    """Message patterns are RE2: linear time, so no lookarounds or backreferences."""

    def test_lookbehind_is_refused_with_the_reason(self):
        text = default_with('message: "(?i)out of memory', 'message: "(?<!x)(?i)out of memory')
        [problem] = problems_of(text)
        assert "invalid regular expression (RE2 syntax)" in problem
        assert "(?<" in problem

    def test_a_backtracking_pattern_cannot_stall_classification(self):
        """With a backtracking engine this pattern takes ages on this message."""
        text = default_with('message: "(?i)out of memory', 'message: "(a+)+$|(?i)out of memory')
        policy = parse_policy(text)
        exc = ExceptionInfo(type="Boom", message="a" * 4000 + "!")
        assert policy.classify(exc, "t").rule == "fallback"
        exc = ExceptionInfo(type="Boom", message="a" * 4000)
        assert policy.classify(exc, "t").failure_type == "SYSTEM_OUT_OF_MEMORY"


class TestDlqExplorer:
    """`dlq.explorer`: the kwargs keys the explorer's views mask, and whether args show."""

    def test_the_default_file_masks_credentials_and_hides_args(self, policy):
        assert {"password", "token", "card_number", "email"} <= set(
            policy.dlq_explorer.redact_kwargs
        )
        assert policy.dlq_explorer.show_args is False

    def test_keys_are_lower_cased(self):
        text = default_with("[password, secret,", "[Password, SECRET,")
        assert parse_policy(text).dlq_explorer.redact_kwargs[:2] == ("password", "secret")

    def test_a_key_listed_twice_is_refused_where_it_is(self):
        text = default_with("[password, secret,", "[password, PASSWORD, secret,")
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        line = line_of(text, "redact_kwargs: [")
        assert [str(p) for p in caught.value.problems] == [
            f"dlq.explorer.redact_kwargs[1]: line {line}: "
            "'password' is listed twice (keys match regardless of case)"
        ]

    def test_unknown_keys_and_wrong_types_are_named(self):
        text = default_with("    show_args: false", "    show_arg: false")
        text = text.replace("redact_kwargs: [password,", "redact_kwargs: [[password],", 1)
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        messages = [str(p) for p in caught.value.problems]
        assert any(
            m.startswith("dlq.explorer.redact_kwargs[0]: ") and "expected a single value" in m
            for m in messages
        ), messages
        assert any("unknown key 'show_arg'; did you mean 'show_args'?" in m for m in messages)


class TestNothingKeptFromTheFile:
    """A loaded policy keeps no YAML node alive: reloads must not accumulate them."""

    def test_loads_leave_no_nodes_behind(self):
        def nodes() -> int:
            gc.collect()
            return sum(isinstance(o, yaml.Node) for o in gc.get_objects())

        load_policy(DEFAULT_POLICIES)
        before = nodes()
        policies = [load_policy(DEFAULT_POLICIES) for _ in range(3)]
        assert len(policies) == 3
        assert nodes() == before
