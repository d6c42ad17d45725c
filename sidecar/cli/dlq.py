"""`task-sidecar dlq list|show|retry|abandon|bulk-retry|bulk-abandon|export`: the dead-letter
queue of a running sidecar, through its action API.

Ids are passed as the user typed them: the full id, or any unique prefix such as the
8 characters `dlq list` prints; the sidecar resolves it (404 when nothing matches, 409
listing the candidates when several do).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..records import DlqRecord
from . import api, args, output
from .api import Api, quote
from .output import JSON, WIDE, Exit

STATUSES = ("pending", "retrying", "resolved", "abandoned")
PRIORITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "DEFERRED")
SHORT_ID = 8
POLL_SECONDS = 0.5  # how often a bulk retry's progress is read


def register(commands: argparse._SubParsersAction) -> None:
    actions = args.actions(
        commands,
        "dlq",
        "the dead-letter queue of a running sidecar",
        "Act on dead-lettered tasks through a running sidecar's action API.",
    )

    p = actions.add_parser("list", help="records, newest first")
    _filters(p)
    p.add_argument("--limit", type=args.count(1, 500), default=50, help="records per page")
    p.add_argument("--cursor", help="the page after the one that printed this cursor")
    output.add_output(p)
    p.set_defaults(run=api.command(list_records))

    p = actions.add_parser("show", help="one record in full (the traceback as text)")
    p.add_argument("id", help="an id, or a unique prefix of one")
    output.add_output(p, (output.TEXT, JSON), default=output.TEXT)
    p.set_defaults(run=api.command(show))

    p = actions.add_parser("retry", help="retry one pending record")
    p.add_argument("id", help="an id, or a unique prefix of one")
    p.add_argument("--priority", type=str.upper, choices=PRIORITIES)
    p.add_argument("--queue", help="send it to this queue instead of the record's")
    p.set_defaults(run=api.command(retry))

    p = actions.add_parser("abandon", help="give up on one record")
    p.add_argument("id", help="an id, or a unique prefix of one")
    p.add_argument("--reason", required=True, help="kept in the audit log")
    p.set_defaults(run=api.command(abandon))

    p = actions.add_parser("bulk-retry", help="retry many pending records")
    _filters(p)
    p.add_argument("--ids", nargs="+", metavar="ID", help="these records instead of a filter")
    p.add_argument("--priority", type=str.upper, choices=PRIORITIES)
    p.add_argument("--rate", type=args.positive_number, help="records per second")
    p.add_argument("--dry-run", action="store_true", help="only count")
    p.set_defaults(run=api.command(bulk_retry))

    p = actions.add_parser("bulk-abandon", help="give up on many pending or retrying records")
    _filters(p)
    p.add_argument("--ids", nargs="+", metavar="ID", help="these records instead of a filter")
    p.add_argument("--reason", required=True, help="kept in the audit log")
    p.add_argument("--dry-run", action="store_true", help="only count")
    p.set_defaults(run=api.command(bulk_abandon))

    p = actions.add_parser("export", help="CSV of the filtered records")
    _filters(p)
    p.add_argument("-f", "--file", default="-", help="write to FILE (default: stdout)")
    p.set_defaults(run=api.command(export))

    for parser in actions.choices.values():
        api.add_arguments(parser)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=STATUSES)
    parser.add_argument("--task", help="task name")
    parser.add_argument("--failure-type", help="e.g. TRANSIENT_DATABASE")
    parser.add_argument("--task-id", help="a Celery task id (exact)")
    parser.add_argument("--exception-type", help="an exception class name, e.g. KeyError")
    parser.add_argument(
        "--min-dlq-retries", type=args.count(0), metavar="N", help="retried from the DLQ N+ times"
    )
    parser.add_argument(
        "-q",
        "--query",
        help="any part (3+ characters, any case) of the task id, exception type, message "
        "or traceback",
    )
    parser.add_argument("--since", type=args.unix_time, help=args.TIME_FORMS)
    parser.add_argument("--until", type=args.unix_time, help="the same forms as --since")


def filters(ns: argparse.Namespace) -> dict[str, Any]:
    return {
        "status": ns.status,
        "task_name": ns.task,
        "failure_type": ns.failure_type,
        "task_id": ns.task_id,
        "exception_type": ns.exception_type,
        "min_dlq_retries": ns.min_dlq_retries,
        "q": ns.query,
        "since": ns.since,
        "until": ns.until,
    }


# --- list and show ---------------------------------------------------------------------------


def list_records(client: Api, ns: argparse.Namespace) -> int:
    page = client.get("/v1/dlq", {**filters(ns), "limit": ns.limit, "cursor": ns.cursor})
    if ns.output == JSON:
        output.print_json(page)
        return Exit.OK
    records = page["records"]
    if ns.output == WIDE:
        header = ["ID", "STATUS", "TASK", "TASK ID", "QUEUE", "FAILURE", "CONFIDENCE"]
        header += ["PRIORITY", "RETRY QUEUE", "ATTEMPTS", "RETRIES", "CREATED", "UPDATED"]
        header += ["EXCEPTION", "MESSAGE", "LAST ERROR"]
        rows = [
            [
                r["id"],
                r["status"],
                r["task_name"],
                r["task_id"],
                r.get("queue"),
                r["failure_type"],
                f"{r['confidence']:.2f}",
                r["priority"],
                r["target_queue"],
                r["attempts"],
                r["dlq_retries"],
                output.when(r["created_at"]),
                output.when(r["updated_at"]),
                r["exception"].get("type"),
                output.clip(r["exception"].get("message"), 200),
                r.get("last_error"),
            ]
            for r in records
        ]
    else:
        header = ["ID", "STATUS", "TASK", "FAILURE", "PRIORITY", "RETRIES", "CREATED", "MESSAGE"]
        rows = [
            [
                r["id"][:SHORT_ID],
                r["status"],
                r["task_name"],
                r["failure_type"],
                r["priority"],
                r["dlq_retries"],  # times retried from the DLQ (attempts: -o wide)
                output.when(r["created_at"]),
                output.clip(r["exception"].get("message"), 50),
            ]
            for r in records
        ]
    output.print_page(header, rows, page, "no DLQ records match")
    return Exit.OK


def show(client: Api, ns: argparse.Namespace) -> int:
    record = client.get(f"/v1/dlq/{quote(ns.id)}")
    if ns.output == JSON:
        output.print_json(record)
    else:
        output.write(describe(record))
    return Exit.OK


_SHOWN = set(DlqRecord.__struct_fields__)  # the fields this version knows


def describe(record: dict[str, Any]) -> str:
    """A record for a person: one labelled line per fact, then the traceback as text."""
    exc = record.get("exception") or {}
    where = ", ".join(
        f"{name} {exc[key]}"
        for name, key in (("module", "module"), ("errno", "errno"), ("HTTP", "http_status"))
        if exc.get(key) is not None
    )
    if exc.get("code") is not None:
        where = ", ".join(filter(None, [where, f"code {exc['code']}"]))
    retried = record.get("dlq_retries", 0)
    pairs: list[tuple[str, object]] = [
        ("ID", record["id"]),
        ("Status", f"{record['status']} (retried from the DLQ {retried} time(s))"),
        ("Task", f"{record['task_name']} (task id {record['task_id']})"),
        ("Queue", f"ran on {record.get('queue') or '-'}; a retry goes to {record['target_queue']}"),
        (
            "Failure",
            f"{record['failure_type']} ({record['category']}), remediation "
            f"{record['remediation']}, confidence {record['confidence']:.2f}, "
            f"rule {record['rule']}",
        ),
        ("Priority", f"{record['priority']} ({record['priority_value']})"),
        ("Attempts", f"{record['attempts']} retries before it was dead-lettered"),
        ("Created", f"{output.when(record['created_at'])} UTC"),
        ("Updated", f"{output.when(record['updated_at'])} UTC"),
    ]
    if record.get("last_error"):
        pairs.append(("Last error", record["last_error"]))
    message = f"{exc.get('type', '?')}: {exc.get('message') or ''}".rstrip(": ")
    pairs.append(("Exception", message + (f"\n({where})" if where else "")))
    for label, key in (("Args", "args"), ("Kwargs", "kwargs"), ("Context", "context")):
        pairs.append((label, _compact(record.get(key))))
    for key in sorted(set(record) - _SHOWN):  # fields this version does not know yet
        pairs.append((key, _compact(record[key])))
    text = output.fields(pairs)
    traceback = exc.get("traceback")
    if traceback:
        text += "\n\nTraceback:\n" + "\n".join(
            "  " + line for line in traceback.rstrip().splitlines()
        )
    return text


def _compact(value: object) -> str:
    if isinstance(value, dict):  # the wire's optional fields arrive as nulls
        value = {k: v for k, v in value.items() if v is not None}
    if value in (None, [], {}):
        return "-"
    return json.dumps(value, ensure_ascii=False, default=str)


# --- actions ---------------------------------------------------------------------------------


def retry(client: Api, ns: argparse.Namespace) -> int:
    record = client.post(
        f"/v1/dlq/{quote(ns.id)}/retry", {"priority": ns.priority, "queue": ns.queue}
    )
    output.write(
        f"{record['id']}: {record['status']} (retried from the DLQ {record['dlq_retries']} time(s))"
    )
    return Exit.OK


def abandon(client: Api, ns: argparse.Namespace) -> int:
    record = client.post(f"/v1/dlq/{quote(ns.id)}/abandon", {"reason": ns.reason})
    output.write(f"{record['id']}: {record['status']}")
    return Exit.OK


def _chosen(ns: argparse.Namespace) -> dict[str, Any]:
    """The records a bulk action takes: the ids given, or those the filter matches."""
    if ns.ids:
        return {"ids": ns.ids}
    return {"filter": {k: v for k, v in filters(ns).items() if v is not None}}


def bulk_retry(client: Api, ns: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "priority": ns.priority,
        "rate_per_second": ns.rate,
        "dry_run": ns.dry_run,
        **_chosen(ns),
    }
    job = client.post("/v1/dlq/bulk-retry", body)
    if ns.dry_run:
        output.write(f"{job['total']} pending records would be retried")
        return Exit.OK
    progress = output.Progress()
    while job["state"] == "running":
        progress.update(job["done"], job["total"])
        time.sleep(POLL_SECONDS)  # polling the job's progress
        job = client.get(f"/v1/dlq/bulk-retry/{quote(job['id'])}")
    progress.finish(job["done"], job["total"])
    lines = [f"requeued {job['requeued']}, skipped {job['skipped']}, failed {job['failed']}"]
    lines += [f"  {error}" for error in job["errors"]]
    output.write("\n".join(lines))
    return Exit.FAILED if job["failed"] else Exit.OK


def bulk_abandon(client: Api, ns: argparse.Namespace) -> int:
    body = {"reason": ns.reason, "dry_run": ns.dry_run, **_chosen(ns)}
    answer = client.post("/v1/dlq/bulk-abandon", body)
    if ns.dry_run:
        output.write(f"{answer['total']} pending or retrying records would be abandoned")
    else:
        output.write(f"abandoned {answer['abandoned']}, skipped {answer['skipped']}")
    return Exit.OK


def export(client: Api, ns: argparse.Namespace) -> int:
    data = client.request("GET", "/v1/dlq/export.csv", query=filters(ns), raw=True)
    return output.save(data, ns.file, f"wrote {ns.file}")
