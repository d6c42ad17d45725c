"""Everything the command line prints: tables, JSON, errors and problems, exit codes and
the progress bar. Commands build rows and documents; how they look is decided here.

Results go to stdout (tables, documents, CSV); errors, hints and progress go to stderr,
so a pipe only ever sees the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import IntEnum
from typing import IO, Any

import yaml

PROG = "task-sidecar"
TABLE, WIDE, JSON, YAML, TEXT = "table", "wide", "json", "yaml", "text"
LISTING = (TABLE, WIDE, JSON)  # `-o` of every listing, as kubectl has it


class Exit(IntEnum):
    """Exit codes, the same for every command."""

    OK = 0
    FAILED = 1  # the command ran and failed: invalid file, API refused, sidecar unreachable
    USAGE = 2  # bad arguments or settings, unreadable input
    BELOW_THRESHOLD = 3  # schedules analyse --fail-under
    SOFTWARE = 70  # a bug (EX_SOFTWARE); the message says how to see the traceback
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # the reader went away (`| head`), as a process killed by SIGPIPE


def add_output(
    parser: argparse.ArgumentParser, formats: Sequence[str] = LISTING, default: str = TABLE
) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=formats,
        default=default,
        help=f"output format (default: {default})",
    )


# --- stdout ------------------------------------------------------------------------------------


def write(text: str, stream: IO[str] | None = None) -> None:
    """`text` as one write (a line ending added), so a closed pipe fails in one place."""
    out = stream or sys.stdout
    out.write(text if text.endswith("\n") else text + "\n")


def print_json(document: Any) -> None:
    write(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def print_yaml(document: Any) -> None:
    write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))


def table(header: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "") -> str:
    """Left-aligned columns two spaces apart (kubectl's look); no trailing blanks."""
    body = [[cell_text(c) for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(header), *body]
    ]
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    write(table(header, rows))


def print_rows(header: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """The rows as a table, or `empty` on stderr when there are none."""
    if rows:
        print_table(header, rows)
    else:
        hint(empty)


def print_page(
    header: Sequence[str], rows: Sequence[Sequence[object]], page: Mapping[str, Any], empty: str
) -> None:
    """One page of a listing, then how to ask for the next one."""
    print_rows(header, rows, empty)
    if page.get("next_cursor"):
        hint(f"more: --cursor {page['next_cursor']}")


def save(data: bytes, file: str, saved: str) -> Exit:
    """`data` to stdout (`-`) or to `file`, then the hint `saved` on stderr; USAGE (said
    on stderr) when the file cannot be written."""
    if file == "-":
        sys.stdout.flush()  # text printed before goes first
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return Exit.OK
    try:
        with open(file, "wb") as out:
            out.write(data)
    except OSError as exc:
        error(f"cannot write {file}: {exc.strerror or exc}")
        return Exit.USAGE
    hint(saved)
    return Exit.OK


def cell_text(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return " ".join(text.split()) if "\n" in text or "\t" in text else text


def clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(timestamp: float | None) -> str:
    """Unix seconds as `2025-01-06 14:03:12` (UTC)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """`Label:  value` lines with the values aligned; multi-line values are indented."""
    items = [(label, cell_text(v) if not isinstance(v, str) else v) for label, v in pairs]
    width = max((len(label) for label, _ in items), default=0) + 2
    lines = []
    for label, value in items:
        first, *rest = (value or "-").splitlines() or ["-"]
        lines.append(f"{label + ':':<{width}}{first}")
        lines.extend(" " * width + line for line in rest)
    return "\n".join(lines)


# --- stderr ------------------------------------------------------------------------------------


def error(message: str) -> None:
    """`task-sidecar: message` on stderr."""
    write(f"{PROG}: {message}", sys.stderr)


def hint(message: str) -> None:
    write(message, sys.stderr)


def problems(source: str, found: Sequence[object], verb: str = "FAILED") -> None:
    """`FAILED: source: 2 problem(s)` and one indented line per problem (check, schedules)."""
    lines = [f"{verb}: {source}: {len(found)} problem(s)", *(f"  {p}" for p in found)]
    write("\n".join(lines), sys.stderr)


def api_problem(status: int | None, problem: Mapping[str, Any] | None, fallback: str) -> None:
    """An application/problem+json answer, readable: status and title, the detail, each
    field error, and the candidates of an ambiguous id prefix."""
    if not problem:
        error(f"{status}: {fallback}" if status else fallback)
        return
    title = problem.get("title") or ""
    detail = problem.get("detail") or title or fallback
    head = f"{status} {title}".strip() if status else title
    lines = [f"{PROG}: {head}: {detail}" if head and head != detail else f"{PROG}: {detail}"]
    for item in problem.get("errors") or ():
        if isinstance(item, Mapping):
            path = item.get("path")
            lines.append(f"  {path}: {item.get('message')}" if path else f"  {item.get('message')}")
    candidates = problem.get("candidates")
    if candidates:
        lines.append(f"  the id matches {len(candidates)} records; give more of it:")
        lines.append(table(*_candidate_rows(candidates), indent="    "))
    write("\n".join(lines), sys.stderr)


def _candidate_rows(candidates: Sequence[Any]) -> tuple[list[str], list[list[object]]]:
    if all(isinstance(c, Mapping) for c in candidates):
        header = ["ID", "STATUS", "TASK", "CREATED"]
        rows = [
            [c.get("id"), c.get("status"), c.get("task_name"), when(c.get("created_at"))]
            for c in candidates
        ]
        return header, rows
    return ["ID"], [[c] for c in candidates]


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """A bar on stderr, drawn only when stderr is a terminal (never into a log or a pipe)."""

    WIDTH = 30

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.shown = self.stream.isatty()
        self.drawn = False

    @staticmethod
    def bar(done: int, total: int, width: int = WIDTH) -> str:
        share = min(1.0, done / total) if total else 1.0
        filled = int(share * width)
        return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"

    def update(self, done: int, total: int) -> None:
        if self.shown:
            self.stream.write(f"\r{self.bar(done, total)}")
            self.stream.flush()
            self.drawn = True

    def finish(self, done: int, total: int) -> None:
        if self.shown:
            self.update(done, total)
            self.stream.write("\n")
            self.stream.flush()
