"""Reading YAML we did not write: one reader for the policy file and schedule files.

Anchors and aliases are refused as the first alias is met (they let a small file expand
into a huge one, the "billion laughs"); a syntax error names its line. `compose` keeps the
nodes, whose marks give each value's line, for readers that report `path: line N: …`
(the policy loader); `load` gives plain values.
"""

from __future__ import annotations

from typing import Any

import yaml


class YamlError(ValueError):
    """The text is not YAML we accept; `line` (1-based) when one is to blame."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message, self.line = message, line


class _NoAliases:
    """Refuses an alias as the composer meets it, before any node refers to another."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            line = self.peek_event().start_mark.line + 1  # type: ignore[attr-defined]
            raise YamlError("anchors and aliases are not allowed", line)
        return super().compose_node(parent, index)  # type: ignore[misc]


try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml

    class _Composer(_NoAliases, yaml.SafeLoader):  # type: ignore[no-redef]
        pass

else:

    class _Composer(_NoAliases, yaml.composer.Composer, CParser, yaml.resolver.Resolver):
        """libyaml scans and parses; the nodes are composed in Python. A policy near 1 MiB
        then never holds the GIL in one C call for half a second, so a reload running in a
        thread leaves the event loop its turns."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (None when it is empty)."""
    composer = _Composer(text)
    try:
        return composer.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"invalid YAML: {reason}", mark.line + 1 if mark else None) from None
    finally:
        composer.dispose()


_constructor = yaml.constructor.SafeConstructor()


def construct(node: yaml.Node) -> Any:
    """One node's plain value. The constructor memoises every node it builds, which would
    keep each loaded file's nodes alive for good: forget them at once."""
    try:
        return _constructor.construct_object(node)
    finally:
        _constructor.constructed_objects.clear()


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
