"""`task-sidecar breakers|audit|trends|policies`: the state of a running sidecar beyond the
DLQ, through its action API."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from ..policy.durations import format_duration
from . import api, args, output
from .api import Api, quote
from .output import JSON, TABLE, WIDE, YAML, Exit


def register(commands: argparse._SubParsersAction) -> None:
    actions = args.actions(commands, "breakers", "circuit breakers of a running sidecar")
    p = actions.add_parser("list", help="every breaker and its state")
    output.add_output(p)
    p.set_defaults(run=api.command(breakers_list))
    p = actions.add_parser("reset", help="close a breaker")
    p.add_argument("key", help="task:FAILURE_TYPE, as listed")
    p.set_defaults(run=api.command(breakers_reset))
    for parser in actions.choices.values():
        api.add_arguments(parser)

    audit = commands.add_parser("audit", help="the audit log of a running sidecar, newest first")
    audit.add_argument("--limit", type=args.count(1, 500), default=50, help="entries per page")
    audit.add_argument("--cursor", help="the page after the one that printed this cursor")
    output.add_output(audit)
    api.add_arguments(audit)
    audit.set_defaults(run=api.command(audit_log))

    trends = commands.add_parser("trends", help="failures per hour and failure type")
    trends.add_argument(
        "--hours", type=args.count(1, 24 * 90), default=24, help="how far back (default 24)"
    )
    output.add_output(trends)
    api.add_arguments(trends)
    trends.set_defaults(run=api.command(failure_trends))

    actions = args.actions(commands, "policies", "the policy a running sidecar applies")
    p = actions.add_parser(
        "show", help="the effective policy (table: the retry policies; json/yaml: all of it)"
    )
    output.add_output(p, (TABLE, WIDE, JSON, YAML))
    p.set_defaults(run=api.command(policies_show))
    p = actions.add_parser("reload", help="read the policy file again (refused if invalid)")
    p.set_defaults(run=api.command(policies_reload))
    for parser in actions.choices.values():
        api.add_arguments(parser)


# --- breakers --------------------------------------------------------------------------------


def breakers_list(client: Api, ns: argparse.Namespace) -> int:
    answer = client.get("/v1/breakers")
    if ns.output == JSON:
        output.print_json(answer)
        return Exit.OK
    header = ["BREAKER", "STATE", "FAILURES", "HALF-OPEN IN"]
    if ns.output == WIDE:
        header.append("OPENED")
    rows = []
    for b in answer["breakers"]:
        wait = b.get("half_open_in_seconds")
        row = [
            b["key"],
            b["state"],
            b["failures_in_window"],
            None if wait is None else f"{wait:.0f}s",
        ]
        if ns.output == WIDE:
            row.append(output.when(b.get("opened_at")))
        rows.append(row)
    output.print_rows(header, rows, "no breakers yet")
    return Exit.OK


def breakers_reset(client: Api, ns: argparse.Namespace) -> int:
    view = client.post(f"/v1/breakers/{quote(ns.key)}/reset")
    output.write(f"{view['key']}: {view['state']}")
    return Exit.OK


# --- audit -----------------------------------------------------------------------------------


def audit_log(client: Api, ns: argparse.Namespace) -> int:
    page = client.get("/v1/audit", {"limit": ns.limit, "cursor": ns.cursor})
    if ns.output == JSON:
        output.print_json(page)
        return Exit.OK
    header = ["WHEN (UTC)", "ACTOR", "ACTION", "RECORDS", "FROM", "REASON"]
    if ns.output == WIDE:
        header.append("DETAILS")
    rows = []
    for entry in page["entries"]:
        ids = entry.get("record_ids") or []
        if ns.output == WIDE:
            records = ",".join(ids) or None
        else:
            records = ids[0][:8] if len(ids) == 1 else (f"{len(ids)} records" if ids else None)
        row = [
            output.when(entry["at"]),
            entry["actor"],
            entry["action"],
            records,
            entry.get("from_status"),
            output.clip(entry.get("reason"), 60 if ns.output == TABLE else 500) or None,
        ]
        if ns.output == WIDE:
            details = entry.get("details") or {}
            row.append(" ".join(f"{k}={v}" for k, v in details.items()) or None)
        rows.append(row)
    output.print_page(header, rows, page, "the audit log is empty")
    return Exit.OK


# --- trends ----------------------------------------------------------------------------------


def failure_trends(client: Api, ns: argparse.Namespace) -> int:
    answer = client.get("/v1/failure-trends", {"hours": ns.hours})
    if ns.output == JSON:
        output.print_json(answer)
        return Exit.OK
    buckets = answer["buckets"]
    if not buckets:
        output.hint(f"no failures in the last {ns.hours}h")
        return Exit.OK
    if ns.output == WIDE:  # one row per hour and failure type
        rows = [
            [output.when(b["start"])[:16], b["failure_type"], b["count"]]
            for b in sorted(buckets, key=lambda b: (b["start"], b["failure_type"]))
        ]
        output.print_table(["HOUR (UTC)", "FAILURE TYPE", "FAILURES"], rows)
        return Exit.OK
    output.print_table(
        ["FAILURE TYPE", "FAILURES", "LAST HOUR", "BUSIEST HOUR (UTC)", "IN IT"],
        trend_summary(buckets),
    )
    return Exit.OK


def trend_summary(buckets: list[dict[str, Any]]) -> list[list[object]]:
    """Per failure type: total, the latest hour's count, and the busiest hour; most first."""
    latest = max(b["start"] for b in buckets)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bucket in buckets:
        by_type[bucket["failure_type"]].append(bucket)
    rows = []
    for failure_type, items in by_type.items():
        busiest = max(items, key=lambda b: (b["count"], b["start"]))
        rows.append(
            [
                failure_type,
                sum(b["count"] for b in items),
                sum(b["count"] for b in items if b["start"] == latest),
                output.when(busiest["start"])[:16],
                busiest["count"],
            ]
        )
    return sorted(rows, key=lambda row: (-row[1], row[0]))  # type: ignore[operator]


# --- policies --------------------------------------------------------------------------------


def policies_show(client: Api, ns: argparse.Namespace) -> int:
    answer = client.get("/v1/policies")
    if ns.output == JSON:
        output.print_json(answer)
        return Exit.OK
    if ns.output == YAML:
        output.print_yaml(answer)
        return Exit.OK
    policy = answer["policy"]
    header = ["FAILURE TYPE", "RETRIES", "BACKOFF", "INITIAL", "MAX DELAY", "BREAKER"]
    if ns.output == WIDE:
        header += ["JITTER", "EXHAUSTED"]
    rows = []
    retry = policy.get("retry_policies") or {}
    for name in sorted(retry):
        rule = retry[name]
        row = [
            name,
            rule["max_retries"],
            _backoff(rule),
            _seconds(rule["initial_delay"]),
            _seconds(rule["max_delay"]),
            _breaker(rule.get("breaker")),
        ]
        if ns.output == WIDE:
            row += [rule.get("jitter"), rule.get("when_exhausted")]
        rows.append(row)
    output.hint(f"policy file: {answer.get('path')}")
    output.print_table(header, rows)
    return Exit.OK


def _backoff(rule: dict[str, Any]) -> str:
    backoff = str(rule.get("backoff"))
    multiplier = rule.get("multiplier")
    return f"{backoff} x{multiplier:g}" if backoff == "exponential" and multiplier else backoff


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(float(value))


def _breaker(breaker: dict[str, Any] | None) -> str:
    if not breaker:
        return "-"
    return (
        f"{breaker['failures']} in {_seconds(breaker['window'])} -> open "
        f"{_seconds(breaker['open_for'])}"
    )


def policies_reload(client: Api, ns: argparse.Namespace) -> int:
    client.post("/v1/policies/reload")
    output.write("reloaded: the new policy is in force")
    return Exit.OK
