"""The taxonomy classifier: an exception (as sent on the wire) → failure type, confidence,
remediation and the rule that matched.

Rules are tried best first (highest confidence, then file order). Everything but the
message depends on a handful of values that repeat endlessly in practice (the MRO, errno,
status, error code, language, task name), so the rules passing those conditions are found once per
distinct combination and memoised; each event then only runs the message regexes of those
few candidates. That keeps classification fast with hundreds of rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from typing import TYPE_CHECKING

from .events import Classification, ExceptionInfo
from .regex import PatternSet

if TYPE_CHECKING:
    from .model import Policy, Rule

# Messages can be huge; the words that identify a failure come first.
MESSAGE_SCAN_CHARS = 4096
_NEVER = re.compile(r"(?!)")


def glob_regex(patterns: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """One anchored regex matching any of the shell-style globs (case-sensitive)."""
    if not patterns:
        return _NEVER
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns))


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    result: Classification
    bare: re.Pattern[str] | None  # class-name globs without a dot
    qualified: re.Pattern[str] | None  # globs with a dot, on module.Class names
    code: re.Pattern[str] | None  # globs on `code` (or the older `sqlstate`)
    task: re.Pattern[str] | None

    def matches_static(
        self, bare: tuple[str, ...], qualified: tuple[str, ...], exc: ExceptionInfo, task_name: str
    ) -> bool:
        """Every condition except the message."""
        match = self.rule.match
        if match.exception and not (
            (self.bare and any(self.bare.match(name) for name in bare))
            or (self.qualified and any(self.qualified.match(name) for name in qualified))
        ):
            return False
        if match.errno and exc.errno not in match.errno:
            return False
        if match.http_status and (
            exc.http_status is None or not any(exc.http_status in r for r in match.http_status)
        ):
            return False
        if self.code and not ((code := exc.error_code) and self.code.match(code)):
            return False
        if match.language and (exc.language or "").lower() not in match.language:
            return False
        return not (self.task and not self.task.match(task_name))


class Classifier:
    """Compiled taxonomy of one policy. Immutable apart from its memo of candidates."""

    def __init__(self, policy: Policy, memo_size: int = 4096) -> None:
        ordered = sorted(policy.rules, key=lambda r: (-r.confidence, r.order))
        self._rules = tuple(self._compile(rule, policy) for rule in ordered)
        fallback = policy.fallback
        self._fallback = Classification(
            failure_type=fallback.failure_type,
            category=policy.failure_types[fallback.failure_type].category.value,
            confidence=fallback.confidence,
            remediation=fallback.remediation,
            rule="fallback",
        )
        self._memo: dict[tuple, _Candidates] = {}
        self._memo_size = memo_size

    @staticmethod
    def _compile(rule: Rule, policy: Policy) -> _CompiledRule:
        failure_type = policy.failure_types[rule.failure_type]
        patterns = rule.match.exception
        return _CompiledRule(
            rule=rule,
            result=Classification(
                failure_type=rule.failure_type,
                category=failure_type.category.value,
                confidence=rule.confidence,
                remediation=rule.remediation or failure_type.remediation,
                rule=rule.name,
            ),
            bare=glob_regex([p for p in patterns if "." not in p]) if patterns else None,
            qualified=glob_regex([p for p in patterns if "." in p]) if patterns else None,
            code=glob_regex(rule.match.code) if rule.match.code else None,
            task=glob_regex(rule.match.task) if rule.match.task else None,
        )

    def classify(self, exc: ExceptionInfo, task_name: str) -> Classification:
        key = (
            exc.type,
            exc.module,
            exc.mro,
            exc.errno,
            exc.http_status,
            exc.error_code,
            exc.language,
            task_name,
        )
        candidates = self._memo.get(key)
        if candidates is None:
            if len(self._memo) >= self._memo_size:
                self._memo.clear()  # crude, but bounded and rare: real keys repeat
            candidates = self._memo[key] = _Candidates(self._scan(exc, task_name))
        return candidates.best(exc.message[:MESSAGE_SCAN_CHARS]) or self._fallback

    def _scan(self, exc: ExceptionInfo, task_name: str) -> tuple[_CompiledRule, ...]:
        """Rules whose non-message conditions hold, best first, up to the first rule
        without a message condition (nothing after it can win)."""
        bare, qualified = _names(exc)
        out = []
        for compiled in self._rules:
            if compiled.matches_static(bare, qualified, exc, task_name):
                out.append(compiled)
                if compiled.rule.match.message is None:
                    break
        return tuple(out)


class _Candidates:
    """Rules that pass every condition but the message, best first, and one RE2 set of
    their message patterns: one pass over the message tells which of them match."""

    def __init__(self, rules: tuple[_CompiledRule, ...]) -> None:
        patterns: list[str] = []
        # (classification, index of its pattern in the set, or None: no message condition)
        self.steps: list[tuple[Classification, int | None]] = []
        for compiled in rules:
            pattern = compiled.rule.match.message
            self.steps.append((compiled.result, None if pattern is None else len(patterns)))
            if pattern is not None:
                patterns.append(pattern)
        self.set = PatternSet(patterns) if patterns else None

    def best(self, message: str) -> Classification | None:
        found = self.set.matching(message) if self.set is not None else set()
        for result, index in self.steps:
            if index is None or index in found:
                return result
        return None


def _names(exc: ExceptionInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Bare and qualified class names of the exception and its ancestors."""
    qualified = list(exc.mro)
    if exc.module:
        qualified.insert(0, f"{exc.module}.{exc.type}")
    bare = [exc.type, *(name.rpartition(".")[2] for name in qualified)]
    return tuple(dict.fromkeys(bare)), tuple(dict.fromkeys(qualified))
