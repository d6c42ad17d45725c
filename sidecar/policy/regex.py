"""Regular expressions of the policy file, in RE2 syntax.

RE2 matches in time linear in the input whatever the pattern, so a hostile or huge
exception message cannot make a rule backtrack for seconds; and an `re2.Set` tells in one
pass which of many patterns match, which keeps classification fast with hundreds of rules.
The price: no lookarounds and no backreferences.
"""

from __future__ import annotations

from collections.abc import Sequence

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported with the policy's path and line instead


def check(pattern: str) -> None:
    """Raise ValueError with RE2's reason when `pattern` is not valid RE2 syntax."""
    try:
        re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"invalid regular expression (RE2 syntax): {reason}") from None


class PatternSet:
    """Which of several patterns are found in a text, in one pass."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._set = re2.Set.SearchSet(_OPTIONS)
        for pattern in patterns:
            self._set.Add(pattern)
        self._set.Compile()

    def matching(self, text: str) -> set[int]:
        return set(self._set.Match(text) or ())  # None when nothing matches
