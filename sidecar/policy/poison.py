"""Poison tasks: runs that started and never ended (the worker died under them).

Pure functions over `Runs`, the record the sidecar keeps per task id between a start and
its end. A **lost run** is counted when a task id starts again while its previous start
has no end (or when the delivery says it is a redelivery and no end was reported), and
when a worker reports that the run's process was lost (Celery's WorkerLostError). After
`poison.max_lost_runs` lost runs the task is dead-lettered and its next start refused.
"""

from __future__ import annotations

import msgspec

MAX_HOSTS = 16  # hosts remembered per task id


class Runs(msgspec.Struct, frozen=True):
    open: bool = False  # a start without an end
    host: str | None = None  # the host of the open run
    starts: int = 0
    lost: int = 0
    hosts: tuple[str, ...] = ()  # the hosts of the lost runs, oldest first
    reason: str | None = None  # what the last lost run is known to have died of
    ended: bool = False  # an end (or a lost run) was reported for the last start
    dlq_id: str | None = None  # dead-lettered as a poison task


class StartVerdict(msgspec.Struct, frozen=True):
    runs: Runs
    lost_now: int  # lost runs counted by this start (0 or 1)
    poison: bool  # dead-letter it now, and refuse the run


def _with_host(hosts: tuple[str, ...], host: str | None) -> tuple[str, ...]:
    return (*hosts, host or "unknown")[-MAX_HOSTS:]


def on_start(
    runs: Runs | None,
    host: str | None,
    redelivered: bool,
    max_lost_runs: int,
    retry_of: str | None = None,
) -> StartVerdict:
    """A run starts. `retry_of`: the DLQ record this run is a retry of; a retry of the
    poison record itself (the operator's fix) starts counting over."""
    if runs is None or (retry_of is not None and runs.dlq_id == retry_of):
        runs = Runs()
    if runs.dlq_id is not None:  # already dead-lettered: refuse again
        return StartVerdict(runs, 0, True)
    lost_now = 0
    lost, hosts = runs.lost, runs.hosts
    if runs.open:
        lost_now, lost, hosts = 1, lost + 1, _with_host(hosts, runs.host)
    elif redelivered and not runs.ended:
        # The previous delivery's start never reached us (its worker died first) and no
        # end was reported: a lost run all the same.
        lost_now, lost, hosts = 1, lost + 1, _with_host(hosts, None)
    after = msgspec.structs.replace(
        runs, lost=lost, hosts=hosts, starts=runs.starts + 1, ended=False
    )
    if max_lost_runs > 0 and lost >= max_lost_runs:
        return StartVerdict(msgspec.structs.replace(after, open=False), lost_now, True)
    return StartVerdict(msgspec.structs.replace(after, open=True, host=host), lost_now, False)


def on_lost(runs: Runs | None, host: str | None, reason: str | None) -> Runs:
    """A worker reports the run's process died (WorkerLostError)."""
    runs = runs or Runs()
    return msgspec.structs.replace(
        runs,
        open=False,
        lost=runs.lost + 1,
        hosts=_with_host(runs.hosts, host or runs.host),
        reason=reason or runs.reason,
        ended=True,
    )


def on_end(runs: Runs | None) -> Runs | None:
    """The run ended (success or a reported failure): nothing is open any more."""
    if runs is None:
        return None
    return msgspec.structs.replace(runs, open=False, ended=True)


def dead_lettered(runs: Runs, dlq_id: str | None) -> Runs:
    return msgspec.structs.replace(runs, open=False, dlq_id=dlq_id or "")


def summary(runs: Runs, max_lost_runs: int) -> str:
    hosts = ", ".join(dict.fromkeys(runs.hosts)) or "unknown"
    why = f"; last: {runs.reason}" if runs.reason else ""
    return (
        f"lost run: {runs.lost} runs started and never ended "
        f"(poison.max_lost_runs {max_lost_runs}) on {hosts}{why}"
    )


def is_worker_lost(exception_type: str) -> bool:
    return exception_type == "WorkerLostError"


__all__ = [
    "Runs",
    "StartVerdict",
    "dead_lettered",
    "is_worker_lost",
    "on_end",
    "on_lost",
    "on_start",
    "summary",
]
