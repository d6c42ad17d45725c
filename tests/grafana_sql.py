"""What Grafana sends to PostgreSQL for a dashboard's SQL: its variables and macros
expanded, for tests that run a dashboard's queries against a real database.

Grafana does it in two passes, and so does `expand`:

1. The frontend interpolates template variables (`$var`, `${var}`, `${var:format}`, and
   the built-in `$__interval`). For the SQL datasources a multi-value or include-All
   variable becomes its values, each single-quoted with quotes doubled, joined by commas;
   a single-value one becomes its text with quotes doubled, unquoted; a custom "All"
   value goes in as written, unformatted; `:sqlstring` quotes every value.
   https://grafana.com/docs/grafana/latest/dashboards/variables/variable-syntax/
   https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/#use-template-variables
2. The backend expands the PostgreSQL macros: `$__timeFilter(col)` is
   `col BETWEEN 'from' AND 'to'` (RFC 3339, UTC), `$__timeFrom()` / `$__timeTo()` the
   quoted bounds, `$__timeGroup(col, interval)` is `floor(extract(epoch from col)/s)*s`
   and `$__timeGroupAlias` the same `AS "time"`.
   https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/#macros
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ALL = "$__all"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::(\w+))?\}|(\w+))")
_MACRO = re.compile(r"\$__(timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup)\(([^)]*)\)")


@dataclass(frozen=True)
class Context:
    """The dashboard's time range and interval, and what each variable is set to: a
    string, a list of strings (a multi-value selection) or ALL."""

    time_from: datetime
    time_to: datetime
    interval: str = "1m"
    values: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def seconds(interval: str) -> float:
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval.strip().strip("'"))
    assert found, f"not a Grafana interval: {interval!r}"
    return int(found[1]) * _UNITS[found[2]]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(variable: dict[str, Any], value: str | Sequence[str], fmt: str | None) -> str:
    if value == ALL:
        if variable.get("allValue"):
            return variable["allValue"]  # custom All values are not formatted
        value = [o["value"] for o in variable.get("options", []) if o["value"] != ALL]
    values = [value] if isinstance(value, str) else list(value)
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    assert fmt is None, f"format {fmt!r} is not expanded here"
    if variable.get("multi") or variable.get("includeAll"):
        return ",".join(_quote(v) for v in values)
    assert len(values) == 1, variable["name"]
    return values[0].replace("'", "''")


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(sql: str, variables: Sequence[dict[str, Any]], context: Context) -> str:
    """`sql` as Grafana would send it, for the dashboard's `templating.list` entries."""
    by_name = {v["name"]: v for v in variables}

    def variable(match: re.Match[str]) -> str:
        name, fmt = (match[1], match[2]) if match[1] else (match[3], None)
        if name == "__interval":
            return context.interval
        if name.startswith("__"):
            return match[0]  # a macro: the backend's pass
        assert name in by_name, f"${name} is not a variable of the dashboard"
        assert name in context.values, f"the test sets no value for ${name}"
        return _format(by_name[name], context.values[name], fmt)

    def macro(match: re.Match[str]) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")] if match[2] else []
        start, end = _rfc3339(context.time_from), _rfc3339(context.time_to)
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "timeFrom":
            return f"'{start}'"
        if name == "timeTo":
            return f"'{end}'"
        step = seconds(args[1])
        step_text = f"{step:g}"
        group = f"floor(extract(epoch from {args[0]})/{step_text})*{step_text}"
        return group + (' AS "time"' if name == "timeGroupAlias" else "")

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))
