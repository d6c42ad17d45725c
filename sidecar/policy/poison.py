"""Poison tasks: runs that started and never ended (the worker died under them).

Pure functions over `Runs`, the record the sidecar keeps per task id between a start and
its end. A **lost run** is counted when a task id starts again while its previous start
has no end (or when the delivery says it is a redelivery and no end was reported for that
attempt), and when a worker reports that the run's process was lost (Celery's
WorkerLostError). After `poison.max_lost_runs` lost runs the task is dead-lettered and its
next start refused.

One lost run is counted once, whichever of its two signals comes first: the worker's
WorkerLostError report and the redelivered start of the next run race each other. A run
is known by its key (`run_key`: host, process, attempt); the keys of the runs counted
are kept, and a redelivery that counts a predecessor it cannot name (its start was never
sent: healthy first deliveries send none) leaves an `unnamed` count that the run's
WorkerLostError, when it comes, settles instead of counting again.
"""

from __future__ import annotations

import msgspec

MAX_HOSTS = 16  # hosts (and counted run keys) remembered per task id
UNKNOWN = "unknown"


class Runs(msgspec.Struct, frozen=True):
    open: bool = False  # a start without an end
    host: str | None = None  # the host of the open run
    starts: int = 0
    lost: int = 0
    hosts: tuple[str, ...] = ()  # the hosts of the lost runs, oldest first
    reason: str | None = None  # what the last lost run is known to have died of
    ended: bool = False  # the last run seen (of `attempt`) ended, or was counted lost
    dlq_id: str | None = None  # dead-lettered as a poison task
    run: str | None = None  # the open run's key, when its start named its process
    attempt: int | None = None  # the attempt of the last run seen
    counted: tuple[str, ...] = ()  # keys of the runs counted lost, newest last
    unnamed: int = 0  # lost runs counted without knowing which run it was


class StartVerdict(msgspec.Struct, frozen=True):
    runs: Runs
    lost_now: int  # lost runs counted by this start (0 or 1)
    poison: bool  # dead-letter it now, and refuse the run


class LostVerdict(msgspec.Struct, frozen=True):
    runs: Runs
    lost_now: int  # 0 when this run was already counted (its redelivery came first)


def run_key(host: str | None, process: str | None, attempt: int) -> str | None:
    """Which run a start or a WorkerLostError report is about: the host, the process that
    ran it (the worker's boot token and the pool child's pid, which its parent reports
    too) and the attempt. None without a process (an older client): such runs are told
    apart only by being the open one."""
    if process is None:
        return None
    return f"{host or ''}/{process}/{attempt}"


def _with_host(hosts: tuple[str, ...], host: str | None) -> tuple[str, ...]:
    return (*hosts, host or UNKNOWN)[-MAX_HOSTS:]


def _with_key(keys: tuple[str, ...], key: str | None) -> tuple[str, ...]:
    return keys if key is None else (*keys, key)[-MAX_HOSTS:]


def _name_unknown(hosts: tuple[str, ...], host: str | None) -> tuple[str, ...]:
    """The newest `unknown` host replaced by `host`, now that a report names it."""
    if not host or UNKNOWN not in hosts:
        return hosts
    at = len(hosts) - 1 - hosts[::-1].index(UNKNOWN)
    return (*hosts[:at], host, *hosts[at + 1 :])


def on_start(
    runs: Runs | None,
    host: str | None,
    redelivered: bool,
    max_lost_runs: int,
    retry_of: str | None = None,
    *,
    attempt: int = 0,
    process: str | None = None,
) -> StartVerdict:
    """A run starts. `retry_of`: the DLQ record this run is a retry of; the first delivery
    of a retry of the poison record itself (the operator's fix) starts counting over (its
    redeliveries do not: a retry that still kills its worker is refused again). It keeps
    which runs it counted: a WorkerLostError report of one of them that arrives late (a
    worker's client re-sends what the sidecar did not answer in time) counts nothing."""
    if runs is None:
        runs = Runs()
    elif retry_of is not None and runs.dlq_id == retry_of and not redelivered:
        runs = Runs(counted=runs.counted, unnamed=runs.unnamed)
    if runs.dlq_id is not None:  # already dead-lettered: refuse again
        return StartVerdict(runs, 0, True)
    key = run_key(host, process, attempt)
    if key is not None and (key in runs.counted or (runs.open and runs.run == key)):
        # The open run's own start again (the client re-sent it; a thread pool's second
        # delivery while the first runs), or the late start of a run already counted lost
        # (a batched start behind its WorkerLostError report): not a new run.
        return StartVerdict(runs, 0, False)
    lost_now = 0
    lost, hosts, counted, unnamed = runs.lost, runs.hosts, runs.counted, runs.unnamed
    if runs.open:
        lost_now, lost, hosts = 1, lost + 1, _with_host(hosts, runs.host)
        counted = _with_key(counted, runs.run)
    elif redelivered and not (runs.ended and runs.attempt in (None, attempt)):
        # The previous delivery's start never reached us (healthy first runs send none, or
        # its worker died first) and no end was reported: a lost run all the same.
        lost_now, lost, hosts, unnamed = 1, lost + 1, _with_host(hosts, None), unnamed + 1
    after = msgspec.structs.replace(
        runs,
        lost=lost,
        hosts=hosts,
        counted=counted,
        unnamed=unnamed,
        starts=runs.starts + 1,
        ended=False,
        attempt=attempt,
    )
    if max_lost_runs > 0 and lost >= max_lost_runs:
        return StartVerdict(msgspec.structs.replace(after, open=False), lost_now, True)
    return StartVerdict(
        msgspec.structs.replace(after, open=True, host=host, run=key), lost_now, False
    )


def on_lost(
    runs: Runs | None,
    host: str | None,
    reason: str | None,
    *,
    attempt: int = 0,
    process: str | None = None,
) -> LostVerdict:
    """A worker reports the run's process died (WorkerLostError), counted once: not again
    when the next run's redelivered start already counted it."""
    runs = runs or Runs()
    reason = reason or runs.reason
    key = run_key(host, process, attempt)
    if key is not None and key in runs.counted:  # its redelivery was here first
        return LostVerdict(msgspec.structs.replace(runs, reason=reason), 0)
    counted = _with_key(runs.counted, key)
    if runs.open and (key is None or runs.run is None or runs.run == key):
        closed = msgspec.structs.replace(
            runs,
            open=False,
            lost=runs.lost + 1,
            hosts=_with_host(runs.hosts, host or runs.host),
            reason=reason,
            ended=True,
            attempt=attempt,
            counted=counted,
        )
        return LostVerdict(closed, 1)
    if runs.unnamed > 0:
        # The next run's redelivered start counted this one, not knowing which it was.
        named = msgspec.structs.replace(
            runs,
            unnamed=runs.unnamed - 1,
            hosts=_name_unknown(runs.hosts, host),
            reason=reason,
            counted=counted,
        )
        return LostVerdict(named, 0)
    # A run whose start never reached us (a healthy first delivery sends none).
    counts = msgspec.structs.replace(
        runs, lost=runs.lost + 1, hosts=_with_host(runs.hosts, host), reason=reason, counted=counted
    )
    if not runs.open:
        counts = msgspec.structs.replace(counts, ended=True, attempt=attempt)
    return LostVerdict(counts, 1)


def on_end(runs: Runs | None, attempt: int | None = None) -> Runs | None:
    """The run ended (success or a reported failure): nothing is open any more."""
    if runs is None:
        return None
    if attempt is None:
        attempt = runs.attempt
    return msgspec.structs.replace(runs, open=False, ended=True, attempt=attempt)


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
    "LostVerdict",
    "Runs",
    "StartVerdict",
    "dead_lettered",
    "is_worker_lost",
    "on_end",
    "on_lost",
    "on_start",
    "run_key",
    "summary",
]
