"""`task-sidecar dlq …` and `task-sidecar breakers …`: operator commands against a running
sidecar's action API (stdlib HTTP only, so they run anywhere the package is installed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any


class ApiError(Exception):
    pass


class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        query: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Any:
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            path += "?" + urllib.parse.urlencode(clean)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            problem = error.read().decode(errors="replace")
            try:
                detail = json.loads(problem).get("detail", problem)
            except ValueError:
                detail = problem
            raise ApiError(f"{error.code}: {detail}") from None
        except OSError as error:
            raise ApiError(f"cannot reach {self.url}: {error}") from None
        return payload if raw else json.loads(payload)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def progress_bar(done: int, total: int, width: int = 30) -> str:
    share = done / total if total else 1.0
    filled = int(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "status": args.status,
        "task_name": args.task,
        "failure_type": args.failure_type,
        "since": args.since,
        "until": args.until,
    }


# --- commands -------------------------------------------------------------------------------


def dlq_list(api: Api, args: argparse.Namespace) -> int:
    page = api.request(
        "GET", "/v1/dlq", query={**filters(args), "limit": args.limit, "cursor": args.cursor}
    )
    rows = [
        [
            r["id"][:8],
            r["status"],
            r["task_name"],
            r["failure_type"],
            r["priority"],
            str(r["attempts"]),
            when(r["created_at"]),
            (r["exception"].get("message") or "")[:50],
        ]
        for r in page["records"]
    ]
    print(
        table(rows, ["ID", "STATUS", "TASK", "FAILURE", "PRIORITY", "TRIES", "CREATED", "MESSAGE"])
    )
    if page["next_cursor"]:
        print(f"\nmore: --cursor {page['next_cursor']}")
    return 0


def dlq_show(api: Api, args: argparse.Namespace) -> int:
    print(json.dumps(api.request("GET", f"/v1/dlq/{args.id}"), indent=2, ensure_ascii=False))
    return 0


def dlq_retry(api: Api, args: argparse.Namespace) -> int:
    record = api.request(
        "POST", f"/v1/dlq/{args.id}/retry", {"priority": args.priority, "queue": args.queue}
    )
    print(f"{record['id']}: {record['status']} (retried {record['dlq_retries']} times)")
    return 0


def dlq_abandon(api: Api, args: argparse.Namespace) -> int:
    record = api.request("POST", f"/v1/dlq/{args.id}/abandon", {"reason": args.reason})
    print(f"{record['id']}: {record['status']}")
    return 0


def dlq_bulk_retry(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "priority": args.priority,
        "rate_per_second": args.rate,
        "dry_run": args.dry_run,
    }
    if args.ids:
        body["ids"] = args.ids
    else:
        body["filter"] = {k: v for k, v in filters(args).items() if v is not None}
    job = api.request("POST", "/v1/dlq/bulk-retry", body)
    if args.dry_run:
        print(f"{job['total']} pending records would be retried")
        return 0
    while job["state"] == "running":
        print(f"\r{progress_bar(job['done'], job['total'])}", end="", file=sys.stderr)
        time.sleep(0.5)  # polling the job's progress
        job = api.request("GET", f"/v1/dlq/bulk-retry/{job['id']}")
    print(f"\r{progress_bar(job['done'], job['total'])}", file=sys.stderr)
    print(f"requeued {job['requeued']}, skipped {job['skipped']}, failed {job['failed']}")
    for error in job["errors"]:
        print(f"  {error}")
    return 1 if job["failed"] else 0


def dlq_export(api: Api, args: argparse.Namespace) -> int:
    data = api.request("GET", "/v1/dlq/export.csv", query=filters(args), raw=True)
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        with open(args.output, "wb") as out:
            out.write(data)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def breakers_list(api: Api, args: argparse.Namespace) -> int:
    breakers = api.request("GET", "/v1/breakers")["breakers"]
    rows = [
        [
            b["key"],
            b["state"],
            str(b["failures_in_window"]),
            "-" if b["half_open_in_seconds"] is None else f"{b['half_open_in_seconds']:.0f}s",
        ]
        for b in breakers
    ]
    print(table(rows, ["BREAKER", "STATE", "FAILURES", "HALF-OPEN IN"]))
    return 0


def breakers_reset(api: Api, args: argparse.Namespace) -> int:
    view = api.request("POST", f"/v1/breakers/{urllib.parse.quote(args.key, safe='')}/reset")
    print(f"{view['key']}: {view['state']}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--url",
            default=os.environ.get("TASK_SIDECAR_URL", "http://127.0.0.1:8080"),
            help="the sidecar [TASK_SIDECAR_URL]",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("TASK_SIDECAR_TOKEN"),
            help="a viewer or operator token [TASK_SIDECAR_TOKEN]",
        )

    def with_filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--status", choices=["pending", "retrying", "resolved", "abandoned"])
        parser.add_argument("--task", help="task name")
        parser.add_argument("--failure-type")
        parser.add_argument("--since", help="unix time, ISO 8601, or an age like 24h")
        parser.add_argument("--until")

    dlq = commands.add_parser("dlq", help="the dead-letter queue of a running sidecar")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    p = dlq_commands.add_parser("list", help="records, newest first")
    with_filters(p)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(api_run=dlq_list)
    p = dlq_commands.add_parser("show", help="one record in full")
    p.add_argument("id")
    p.set_defaults(api_run=dlq_show)
    p = dlq_commands.add_parser("retry", help="retry one record")
    p.add_argument("id")
    p.add_argument("--priority", help="CRITICAL, HIGH, MEDIUM, LOW or DEFERRED")
    p.add_argument("--queue")
    p.set_defaults(api_run=dlq_retry)
    p = dlq_commands.add_parser("abandon", help="give up on one record")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.set_defaults(api_run=dlq_abandon)
    p = dlq_commands.add_parser("bulk-retry", help="retry many pending records")
    with_filters(p)
    p.add_argument("--ids", nargs="+")
    p.add_argument("--priority")
    p.add_argument("--rate", type=float, help="records per second")
    p.add_argument("--dry-run", action="store_true", help="only count")
    p.set_defaults(api_run=dlq_bulk_retry)
    p = dlq_commands.add_parser("export", help="CSV of the filtered records")
    with_filters(p)
    p.add_argument("-o", "--output", default="-")
    p.set_defaults(api_run=dlq_export)
    for parser in dlq_commands.choices.values():
        common(parser)

    breakers = commands.add_parser("breakers", help="circuit breakers of a running sidecar")
    breaker_commands = breakers.add_subparsers(
        dest="breakers_command", required=True, metavar="ACTION"
    )
    p = breaker_commands.add_parser("list", help="every breaker and its state")
    p.set_defaults(api_run=breakers_list)
    p = breaker_commands.add_parser("reset", help="close a breaker")
    p.add_argument("key")
    p.set_defaults(api_run=breakers_reset)
    for parser in breaker_commands.choices.values():
        common(parser)

    for parser in (dlq, breakers):
        parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return args.api_run(Api(args.url, args.token), args)
    except ApiError as exc:
        print(f"task-sidecar: {exc}", file=sys.stderr)
        return 1
