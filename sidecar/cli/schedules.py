"""`task-sidecar schedules analyse FILE`: hotspots, conflicts, score and advice for a schedule.

FILE (YAML or JSON, `-` for stdin) is a list of schedule entries or a mapping with a
`schedules:` key, such as policies.yaml. Exit codes: 0 analysed, 1 invalid schedules
(every problem listed), 2 unreadable file or bad arguments, 3 score below `--fail-under`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..policy import yamlpaths
from ..policy.durations import format_duration
from ..schedules import (
    DAY,
    DEFAULT_HOTSPOT_THRESHOLD,
    MAX_HORIZON,
    Report,
    ScheduleError,
    analyse,
    parse_schedules,
    report_document,
)
from . import args as types
from . import output
from .output import JSON, TEXT, Exit

MAX_FILE_BYTES = 1024 * 1024
BAR_WIDTH = 40


class Unreadable(Exception):
    pass


def register(commands: argparse._SubParsersAction) -> None:
    actions = types.actions(
        commands, "schedules", "analyse periodic-task schedules (hotspots, conflicts, advice)"
    )
    p = actions.add_parser(
        "analyse",
        aliases=["analyze"],
        help="analyse a schedule file",
        description=(
            "Analyse periodic tasks for hotspots, queue conflicts and self-overlaps; print the "
            "health score (0-100), recommended minute offsets and the hourly load."
        ),
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="YAML or JSON: a list of schedules or a mapping with a 'schedules' key; - for stdin",
    )
    p.add_argument(
        "--horizon",
        type=types.duration(timedelta(hours=1), MAX_HORIZON),
        default=DAY,
        help="how far ahead to look: 24h (default), 7d, … up to 31d",
    )
    p.add_argument(
        "--start",
        type=types.moment,
        default=None,
        help="start of the horizon: " + types.TIME_FORMS + "; default: today 00:00 UTC",
    )
    p.add_argument(
        "--threshold",
        type=types.count(1),
        default=DEFAULT_HOTSPOT_THRESHOLD,
        help="a minute with more starts than this is a hotspot (default %(default)s)",
    )
    output.add_output(p, (TEXT, JSON), default=TEXT)
    p.add_argument(
        "--json", dest="output", action="store_const", const=JSON, help="the same as -o json"
    )
    p.add_argument(
        "--fail-under",
        type=int,
        default=None,
        metavar="SCORE",
        help=f"exit {int(Exit.BELOW_THRESHOLD)} when the health score is below SCORE (for CI)",
    )
    p.set_defaults(run=cmd_analyse)


def cmd_analyse(args: argparse.Namespace) -> int:
    try:
        data = read(args.file)
    except Unreadable as exc:
        output.error(f"schedules: {exc}")
        return Exit.USAGE
    try:
        schedules = parse_schedules(data, strict=True)
    except ScheduleError as exc:
        output.problems(args.file, exc.problems)
        return Exit.FAILED
    start = args.start or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        report = analyse(schedules, start, args.horizon, hotspot_threshold=args.threshold)
    except ScheduleError as exc:  # pragma: no cover - parse_schedules checked the same
        output.problems(args.file, exc.problems)
        return Exit.FAILED
    except ValueError as exc:
        output.error(f"schedules: {exc}")
        return Exit.USAGE
    if args.output == JSON:
        output.print_json(report_document(report))
    else:
        output.write(render(report, schedules_file=args.file))
    if args.fail_under is not None and report.score < args.fail_under:
        return Exit.BELOW_THRESHOLD
    return Exit.OK


def read(name: str) -> Any:
    """The plain values of a YAML or JSON file (`-`: stdin), at most MAX_FILE_BYTES."""
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(name, "rb") as stream:
                raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise Unreadable(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise Unreadable(f"{name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable(f"{name}: not UTF-8 text") from None
    if Path(name).suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise Unreadable(f"{name}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    try:
        return yamlpaths.load(text)
    except yamlpaths.YamlError as exc:
        raise Unreadable(f"{name}: {exc}") from None


# --- the text report --------------------------------------------------------------------------


def render(report: Report, schedules_file: str | None = None) -> str:
    """The readable report: summary, hotspots, conflicts, recommendations, load chart."""
    out: list[str] = []
    w = out.append
    seconds = report.horizon.total_seconds()
    whole_hours = seconds <= 2 * 86400 and not seconds % 3600
    span = f"{seconds / 3600:g}h" if whole_hours else format_duration(seconds)
    source = f" in {schedules_file}" if schedules_file else ""
    w(
        f"Schedules{source}: {report.schedules}, {report.starts} starts in {span} "
        f"from {_when(report.start)} UTC"
    )
    w(
        f"Health score: {report.score}/100 "
        f"(excess starts in hotspots {report.hotspot_share:.0%}, "
        f"runs in conflict {report.conflict_share:.0%})"
    )
    if report.peak_minute is not None:
        w(
            f"Peak: {report.peak} start(s) at {_when(report.peak_minute)} UTC "
            f"(hotspot: more than {report.hotspot_threshold})"
        )
    w("")

    w(f"Hotspots: {len(report.hotspots)} minute(s)")
    groups: dict[tuple[int, tuple[str, ...]], list[datetime]] = {}
    for hotspot in report.hotspots:
        groups.setdefault((hotspot.starts, hotspot.tasks), []).append(hotspot.minute)
    rows = [
        (_when(minutes[0]), _repeats(minutes), str(starts), _names(tasks))
        for (starts, tasks), minutes in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[1][0]))
    ]
    out.extend(_rows(("FIRST (UTC)", "REPEATS", "STARTS", "TASKS"), rows) if rows else ["  none"])
    w("")

    w(f"Conflicts: {len(report.conflicts)}")
    rows = [
        (c.kind, c.queue, ", ".join(c.tasks), _when(c.first), str(c.occurrences), c.detail)
        for c in report.conflicts
    ]
    out.extend(
        _rows(("KIND", "QUEUE", "TASKS", "FIRST (UTC)", "TIMES", "DETAIL"), rows)
        if rows
        else ["  none"]
    )
    w("")

    w(f"Recommendations: {len(report.recommendations)}")
    if report.recommendations:
        rows = [
            (r.task, r.cron, r.new_cron, f"+{r.minute_offset}m") for r in report.recommendations
        ]
        out.extend(_rows(("TASK", "CRON", "NEW CRON", "SHIFT"), rows))
        w(
            f"  applied: score {report.score} -> {report.score_after}, "
            f"peak {report.peak} -> {report.peak_after} start(s) per minute"
        )
    elif report.hotspots:
        w("  none found that lowers the peak (intervals and every-minute crons are not moved)")
    else:
        w("  none needed")
    w("")

    out.extend(_chart(report))
    return "\n".join(out) + "\n"


def _chart(report: Report) -> list[str]:
    per_hour = report.starts_per_hour
    queues = [q for q, row in report.load_by_hour.items() if any(row)]
    if len(per_hour) <= 48:
        title = "Load by hour (UTC), starts"
        labels = [
            _when(report.start + timedelta(hours=h), hour_only=True) for h in range(len(per_hour))
        ]
        values = list(per_hour)
        split = [
            {q: report.load_by_hour[q][h] for q in queues if report.load_by_hour[q][h]}
            for h in range(len(per_hour))
        ]
    else:
        title = "Load by day (UTC), starts"
        days = range(0, len(per_hour), 24)
        labels = [(report.start + timedelta(hours=d)).strftime("%a %m-%d") for d in days]
        values = [sum(per_hour[d : d + 24]) for d in days]
        split = [
            {q: s for q in queues if (s := sum(report.load_by_hour[q][d : d + 24]))} for d in days
        ]
    top = max(values, default=0)
    lines = [f"{title}{' by queue' if len(queues) > 1 else ''}:"]
    width = max((len(label) for label in labels), default=0)
    digits = len(str(top))
    for label, value, parts in zip(labels, values, split, strict=True):
        bar = "#" * (round(value * BAR_WIDTH / top) if top else 0)
        if value and not bar:
            bar = "."
        by_queue = "  " + ", ".join(f"{q} {n}" for q, n in parts.items()) if len(queues) > 1 else ""
        lines.append(f"  {label:<{width}} {value:>{digits}} {bar:<{BAR_WIDTH}}{by_queue}".rstrip())
    return lines


def _when(moment: datetime, hour_only: bool = False) -> str:
    if hour_only:
        return moment.strftime("%H:00" if moment.minute == 0 else "%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _repeats(minutes: list[datetime]) -> str:
    """`-` for one minute, `24x every 1h` for evenly spaced ones, else `24x`."""
    if len(minutes) == 1:
        return "-"
    gaps = {b - a for a, b in pairwise(minutes)}
    if len(gaps) == 1:
        return f"{len(minutes)}x every {format_duration(gaps.pop().total_seconds())}"
    return f"{len(minutes)}x"


def _names(names: tuple[str, ...], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return output.table(header, rows, indent="  ").splitlines()
