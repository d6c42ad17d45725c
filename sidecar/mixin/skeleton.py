"""Skeletons: rules and dashboards with holes for the config, filled here or by Helm.

A skeleton is plain JSON-shaped data. A string may hold holes, `«path»` or
`«path:filter:filter»`, that name a config value (`dlq.warning`, `links.grafana_url`) and
how to write it. A list element may carry `$if` (keep it when the config value is true) or
`$each`/`$as`/`$item` (one element per item of a config list, the item bound to a name the
holes inside may use). A mapping may carry `$merge` (add the entries of a config mapping).

`fill` turns a skeleton and a config into the finished rules or dashboard. `helm_yaml` and
`helm_json` turn the same skeleton into a Helm template that does the same from the
chart's values, so the chart and `task-sidecar mixin render` cannot disagree (the tests
render both with the same config and compare). Numbers are written as Go writes a float64,
since that is what Helm prints; the helpers the filters need in Helm are in the chart's
templates/_mixin.tpl.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .config import seconds

HOLE = re.compile(r"«([^«»]+)»")
NUMERIC_FILTERS = ("num", "add1")
SLO_WINDOWS = "_slo_windows"  # a list made from the config: every SLO window, shortest first


class SkeletonError(ValueError):
    """A skeleton names a value or filter that does not exist."""


def hole(path: str, *filters: str) -> str:
    return "«" + ":".join([path, *filters]) + "»"


# --- numbers as Go prints them -----------------------------------------------------------------


def go_float(value: float) -> str:
    """`fmt.Sprint(float64(value))`: the shortest digits that read back, in exponent form
    when the exponent is below -4 or 6 and above (20 -> "20", 1e6 -> "1e+06")."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    exact = Decimal(repr(abs(float(value)))).normalize()
    _, digit_tuple, exponent = exact.as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # digits before the decimal point
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


def promql_string(text: str) -> str:
    """Escaped for a double-quoted PromQL string (a regex's backslashes stay backslashes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def matchers(selectors: dict[str, str], *, braces: bool) -> str:
    """`, job=~"x", namespace=~"y"` to follow other matchers, or `{job=~"x", ...}` to
    follow a metric name alone (nothing at all for no selectors)."""
    found = [f'{k}=~"{promql_string(regex)}"' for k, regex in sorted(selectors.items()) if regex]
    if braces:
        return "{" + ", ".join(found) + "}" if found else ""
    return "".join(", " + m for m in found)


def slo_windows(config: dict[str, Any]) -> list[str]:
    pairs = config["slo"]["page"] + config["slo"]["ticket"]
    found = {w for pair in pairs for w in (pair["long"], pair["short"])}
    return sorted(found, key=lambda w: (seconds(w), w))


FILTERS: dict[str, Callable[[Any], Any]] = {
    "num": lambda v: go_float(v),
    "add1": lambda v: go_float(float(Decimal(repr(float(v))) + 1)),
    "seconds": lambda v: str(seconds(v)),
    "pq": promql_string,
    "bar": lambda v: "|".join(v),
    "comma": lambda v: ", ".join(v),
    "url": lambda v: v.removesuffix("/"),
    "matchers": lambda v: matchers(v, braces=False),
    "selector": lambda v: matchers(v, braces=True),
}

# The same filters as Go template pipeline steps.
GO_FILTERS = {
    "num": "float64",
    "add1": "float64 | addf 1",
    "seconds": 'include "task-sidecar.mixin.seconds"',
    "pq": 'replace "\\\\" "\\\\\\\\" | replace "\\"" "\\\\\\""',
    "bar": 'join "|"',
    "comma": 'join ", "',
    "url": 'trimSuffix "/"',
    "matchers": 'include "task-sidecar.mixin.matchers"',
    "selector": 'include "task-sidecar.mixin.selector"',
}


# --- filling in Python ---------------------------------------------------------------------------


def fill(node: Any, config: dict[str, Any], scope: dict[str, Any] | None = None) -> Any:
    scope = scope or {}
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$merge":
                out.update(_resolve(value, config, scope))
            else:
                out[key] = fill(value, config, scope)
        return out
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            if isinstance(item, dict) and "$if" in item:
                if not _resolve(item["$if"], config, scope):
                    continue
                item = {k: v for k, v in item.items() if k != "$if"}
            if isinstance(item, dict) and "$each" in item:
                for value in _resolve(item["$each"], config, scope):
                    items.append(fill(item["$item"], config, {**scope, item["$as"]: value}))
            else:
                items.append(fill(item, config, scope))
        return items
    if isinstance(node, str):
        whole = HOLE.fullmatch(node)
        if whole and whole.group(1).split(":")[-1] in NUMERIC_FILTERS:
            return _number(float(_apply(whole.group(1), config, scope)))
        return HOLE.sub(lambda m: _apply(m.group(1), config, scope), node)
    return node


def _apply(spec: str, config: dict[str, Any], scope: dict[str, Any]) -> str:
    path, *filters = spec.split(":")
    value = _resolve(path, config, scope)
    for name in filters:
        if name not in FILTERS:
            raise SkeletonError(f"unknown filter {name!r} in «{spec}»")
        value = FILTERS[name](value)
    if not isinstance(value, str):
        raise SkeletonError(f"«{spec}» gives {type(value).__name__}, not text: add a filter")
    return value


def _resolve(path: str, config: dict[str, Any], scope: dict[str, Any]) -> Any:
    first, *rest = path.split(".")
    if first in scope:
        value = scope[first]
    elif first == SLO_WINDOWS:
        value = slo_windows(config)
    elif first in config:
        value = config[first]
    else:
        raise SkeletonError(f"«{path}»: no such config value")
    for part in rest:
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise SkeletonError(f"«{path}»: no such config value")
    return value


# --- the same skeleton as a Helm template -------------------------------------------------------


def _go_value(path: str, scope: frozenset[str]) -> str:
    first, *rest = path.split(".")
    if first == SLO_WINDOWS:
        return '(include "task-sidecar.mixin.sloWindows" $c | fromJsonArray)'
    expr = f"${first}" if first in scope else f"$c.{first}"
    for part in rest:
        expr = f"(index {expr} {part})" if part.isdigit() else f"{expr}.{part}"
    return expr


def _go_action(spec: str, scope: frozenset[str], *, in_string: bool) -> str:
    path, *filters = spec.split(":")
    steps = [_go_value(path, scope)] + [GO_FILTERS[name] for name in filters]
    if in_string and not (filters and filters[-1] in (*NUMERIC_FILTERS, "seconds")):
        steps.append('include "task-sidecar.mixin.json"')  # JSON-escaped text
    return "{{ " + " | ".join(steps) + " }}"


def _go_string(text: str, scope: frozenset[str]) -> str:
    """A JSON (and so YAML) string literal with the holes as Go actions; literal `{{`
    (Prometheus' and Grafana's own templates) kept as it is."""
    whole = HOLE.fullmatch(text)
    if whole and whole.group(1).split(":")[-1] in NUMERIC_FILTERS:
        return _go_action(whole.group(1), scope, in_string=False)  # a bare number
    out, pos = [], 0
    for match in HOLE.finditer(text):
        literal = _literal(text[pos : match.start()])
        if literal.endswith("{") and not literal.endswith('"{{" }}'):
            literal = literal[:-1] + '{{ "{" }}'  # `{` then `{{` would open an action
        out.append(literal)
        out.append(_go_action(match.group(1), scope, in_string=True))
        pos = match.end()
    out.append(_literal(text[pos:]))
    return '"' + "".join(out) + '"'


def _literal(text: str) -> str:
    escaped = json.dumps(text)[1:-1]
    return escaped.replace("{{", '{{ "{{" }}')


def helm_yaml(node: Any, indent: int = 0, scope: frozenset[str] = frozenset()) -> str:
    """The skeleton as YAML text (block style, every scalar a JSON literal) in which the
    directives are Go `if`/`range` blocks and `$c` is the mixin config."""
    pad = " " * indent
    if isinstance(node, dict):
        if not node:
            return pad + "{}\n"
        lines = []
        for key, value in node.items():
            if key == "$merge":
                lines.append(
                    f"{pad}{{{{- range $k, $v := {_go_value(value, scope)} }}}}\n"
                    f"{pad}{{{{ $k | toJson }}}}: {{{{ $v | toJson }}}}\n"
                    f"{pad}{{{{- end }}}}\n"
                )
            elif _is_scalar(value) or value in ([], {}):
                lines.append(f"{pad}{json.dumps(key)}: {_scalar(value, scope)}\n")
            else:
                lines.append(f"{pad}{json.dumps(key)}:\n" + helm_yaml(value, indent + 2, scope))
        return "".join(lines)
    if isinstance(node, list):
        if not node:
            return pad + "[]\n"
        out = []
        for item in node:
            opened = []
            inner = scope
            if isinstance(item, dict) and "$if" in item:
                opened.append(f"{{{{- if {_go_value(item['$if'], scope)} }}}}")
                item = {k: v for k, v in item.items() if k != "$if"}
            if isinstance(item, dict) and "$each" in item:
                name = item["$as"]
                opened.append(f"{{{{- range ${name} := {_go_value(item['$each'], scope)} }}}}")
                inner = scope | {name}
                item = item["$item"]
            out.extend(f"{pad}{line}\n" for line in opened)
            if _is_scalar(item):
                out.append(f"{pad}- {_scalar(item, inner)}\n")
            else:
                body = helm_yaml(item, indent + 2, inner)
                out.append(pad + "- " + body[indent + 2 :])
            out.extend(f"{pad}{{{{- end }}}}\n" for _ in opened)
        return "".join(out)
    return pad + _scalar(node, scope) + "\n"


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _scalar(value: Any, scope: frozenset[str]) -> str:
    if isinstance(value, str):
        return _go_string(value, scope)
    return json.dumps(value)


def helm_json(node: Any, indent: int = 0) -> str:
    """A skeleton without directives as JSON text (sorted keys, 2-space indent, as the
    committed dashboards) with the holes as Go actions."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(node, dict):
        if not node:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {helm_json(node[k], indent + 2)}" for k in sorted(node)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(node, list):
        if not node:
            return "[]"
        return "[\n" + ",\n".join(inner + helm_json(v, indent + 2) for v in node) + "\n" + pad + "]"
    if isinstance(node, str):
        return _go_string(node, frozenset())
    return json.dumps(node)
