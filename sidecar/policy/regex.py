"""Regular expressions of the policy file, in RE2 syntax.

RE2 matches in time linear in the input whatever the pattern, so a hostile or huge
exception message cannot make a rule backtrack for seconds; and an `re2.Set` tells in one
pass which of many patterns match, which keeps classification fast with hundreds of rules.
The price: no lookarounds and no backreferences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import re2

SET_SIZE = 500
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
    """Which of several patterns are found in a text: one pass per RE2 set.

    A set holds up to SET_SIZE patterns (the default policy's fit in one): compiling one
    takes a few milliseconds, held under the GIL, so a reload in a thread beside the event
    loop never holds it long. A set past RE2's memory budget fails to compile and is
    halved until each part compiles: thousands of rules cost a few passes, not a failed load.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        indexed = list(enumerate(patterns))
        self._sets = [
            compiled
            for start in range(0, len(indexed), SET_SIZE)
            for compiled in _compiled(indexed[start : start + SET_SIZE])
        ]

    def matching(self, text: str) -> set[int]:
        found: set[int] = set()
        for positions, compiled in self._sets:
            # Match() gives positions within its own set; None when nothing matches.
            found.update(positions[i] for i in compiled.Match(text) or ())
        return found


def _compiled(indexed: list[tuple[int, str]]) -> Iterator[tuple[list[int], re2.Set]]:
    compiled = re2.Set.SearchSet(_OPTIONS)
    for _, pattern in indexed:
        compiled.Add(pattern)
    try:
        compiled.Compile()
    except re2.error:
        if len(indexed) == 1:
            raise
        half = len(indexed) // 2
        yield from _compiled(indexed[:half])
        yield from _compiled(indexed[half:])
        return
    yield [position for position, _ in indexed], compiled
