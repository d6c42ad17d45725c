"""Reading YAML we did not write: one reader for the policy file and schedule files.

Anchors and aliases are refused before anything is built (they let a small file expand
into a huge one, the "billion laughs"); a syntax error names its line. `compose` keeps the
nodes, whose marks give each value's line, for readers that report `path: line N: …`
(the policy loader); `load` gives plain values.
"""

from __future__ import annotations

from typing import Any

import yaml

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """The text is not YAML we accept; `line` (1-based) when one is to blame."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message, self.line = message, line


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (None when it is empty)."""
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise YamlError("anchors and aliases are not allowed", event.start_mark.line + 1)
        return yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"invalid YAML: {reason}", mark.line + 1 if mark else None) from None


def load(text: str) -> Any:
    """Plain values (dicts, lists, scalars) of one YAML document; None when it is empty."""
    node = compose(text)
    if node is None:
        return None
    try:
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:  # e.g. an unhashable key, a bad timestamp
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"invalid YAML: {reason}", mark.line + 1 if mark else None) from None
