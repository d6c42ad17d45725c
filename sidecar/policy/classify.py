"""The taxonomy classifier: an exception (as sent on the wire) → failure type, confidence,
remediation and the rule that matched.

Rules are tried best first (highest confidence, then file order). Everything but the
message depends on a handful of values that repeat endlessly in practice (the MRO, errno,
status, error code, language, task name), so the rules passing those conditions are found once per
distinct combination and memoised; each event then only checks the message patterns of those
few candidates, found by one pass of the policy's single RE2 set over the message.

Clients choose those values, so the memo is bounded twice: at most `MEMO_ENTRIES`
combinations and `MEMO_KEY_BYTES` of their text (least recently used go first). An entry
costs its key and a reference to a candidate list shared by every entry with the same
candidates; nothing is compiled per entry (docs/reliability.md).
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
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
# The memo's bounds. A real key (class, module, a 5-deep MRO, task) holds ~0.7 KB of
# strings; 2 KiB per entry on average leaves room for deep ones.
MEMO_ENTRIES = 4096
MEMO_KEY_BYTES = 8 * 1024 * 1024


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

    def __init__(
        self, policy: Policy, memo_entries: int = MEMO_ENTRIES, memo_bytes: int = MEMO_KEY_BYTES
    ) -> None:
        ordered = sorted(policy.rules, key=lambda r: (-r.confidence, r.order))
        self._rules = tuple(self._compile(rule, policy) for rule in ordered)
        # One RE2 set of every message pattern, compiled once per policy.
        patterns = [r.match.message for r in ordered if r.match.message is not None]
        self._messages = PatternSet(patterns) if patterns else None
        self._steps = tuple(_steps(self._rules))
        fallback = policy.fallback
        self._fallback = Classification(
            failure_type=fallback.failure_type,
            category=policy.failure_types[fallback.failure_type].category.value,
            confidence=fallback.confidence,
            remediation=fallback.remediation,
            rule="fallback",
        )
        self._memo = _Memo(memo_entries, memo_bytes)
        # Candidate lists by rule positions: how many differ depends on the policy, not on
        # the clients; bounded all the same (clearing it only ends the sharing).
        self._shared: dict[tuple[int, ...], _Candidates] = {}
        self._shared_limit = memo_entries

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
            candidates = self._candidates(self._scan(exc, task_name))
            self._memo.put(key, candidates, _key_bytes(exc, task_name))
        return candidates.best(self._messages, exc.message[:MESSAGE_SCAN_CHARS]) or self._fallback

    def memo_stats(self) -> tuple[int, int, int]:
        """(entries, bytes of key text, distinct candidate lists) held now."""
        return len(self._memo), self._memo.bytes, len(self._shared)

    def _scan(self, exc: ExceptionInfo, task_name: str) -> tuple[int, ...]:
        """Positions of the rules whose non-message conditions hold, best first, up to the
        first rule without a message condition (nothing after it can win)."""
        bare, qualified = _names(exc)
        out = []
        for position, compiled in enumerate(self._rules):
            if compiled.matches_static(bare, qualified, exc, task_name):
                out.append(position)
                if compiled.rule.match.message is None:
                    break
        return tuple(out)

    def _candidates(self, positions: tuple[int, ...]) -> _Candidates:
        shared = self._shared.get(positions)
        if shared is None:
            if len(self._shared) >= self._shared_limit:
                self._shared.clear()
            shared = self._shared[positions] = _Candidates(tuple(self._steps[p] for p in positions))
        return shared


class _Candidates:
    """Rules that pass every condition but the message, best first: (classification,
    index of its message pattern in the policy's set, or None: no message condition)."""

    __slots__ = ("steps",)

    def __init__(self, steps: tuple[tuple[Classification, int | None], ...]) -> None:
        self.steps = steps

    def best(self, messages: PatternSet | None, message: str) -> Classification | None:
        found: set[int] | None = None  # the set runs only if a message decides
        for result, index in self.steps:
            if index is None:
                return result
            if found is None:
                found = messages.matching(message) if messages is not None else set()
            if index in found:
                return result
        return None


class _Memo:
    """A least-recently-used map bounded by entries and by the bytes of its keys' text."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        self.entries, self.max_bytes, self.bytes = entries, max_bytes, 0
        self._items: OrderedDict[tuple, tuple[_Candidates, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> _Candidates | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple, value: _Candidates, size: int) -> None:
        if size > self.max_bytes:
            return  # larger than the whole memo: classified, not kept
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted


def _steps(rules: tuple[_CompiledRule, ...]):
    """(classification, index of the message pattern in the policy's set) per rule."""
    index = 0
    for compiled in rules:
        if compiled.rule.match.message is None:
            yield compiled.result, None
        else:
            yield compiled.result, index
            index += 1


def _key_bytes(exc: ExceptionInfo, task_name: str) -> int:
    """Memory the memo keeps for one key: its strings and the MRO tuple."""
    texts = (exc.type, exc.module, exc.error_code, exc.language, task_name, *exc.mro)
    return sys.getsizeof(exc.mro) + sum(sys.getsizeof(t) for t in texts if t is not None)


def _names(exc: ExceptionInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Bare and qualified class names of the exception and its ancestors."""
    qualified = list(exc.mro)
    if exc.module:
        qualified.insert(0, f"{exc.module}.{exc.type}")
    bare = [exc.type, *(name.rpartition(".")[2] for name in qualified)]
    return tuple(dict.fromkeys(bare)), tuple(dict.fromkeys(qualified))
