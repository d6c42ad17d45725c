"""The pure poison core (sidecar/policy/poison.py) and the memory store's bound on runs."""

from __future__ import annotations

import pytest

from sidecar.policy import poison
from sidecar.store import memory

# A run as its start and its WorkerLostError report name it: host, process (the worker's
# boot token and the pool child's pid), attempt 0.
P1, P2, P3 = "b0-101", "b0-102", "b0-103"


def replay(steps, max_lost_runs: int = 2):
    """Apply ("start", process, redelivered) and ("lost", process) steps in order; the
    lost runs each step counted, the record after the last, and whether a start was
    refused as poison."""
    runs, counted, refused = None, [], False
    for step in steps:
        if step[0] == "start":
            v = poison.on_start(runs, "w1", step[2], max_lost_runs, process=step[1])
            runs, refused = v.runs, refused or v.poison
        else:
            v = poison.on_lost(runs, "w1", "signal 9 (SIGKILL)", process=step[1])
            runs = v.runs
        counted.append(v.lost_now)
    return counted, runs, refused


# The parent's WorkerLostError report for run 1 and the redelivered start of run 2 race:
# either order counts run 1 once. Run 1's own start may never have been sent (the healthy
# path sends none).
RACES = {
    "report then start": ([("start", P1, False), ("lost", P1), ("start", P2, True)], [0, 1, 0]),
    "start then report": ([("start", P1, False), ("start", P2, True), ("lost", P1)], [0, 1, 0]),
    "no first start, report then start": ([("lost", P1), ("start", P2, True)], [1, 0]),
    "no first start, start then report": ([("start", P2, True), ("lost", P1)], [1, 0]),
    "the report sent twice": ([("start", P1, False), ("lost", P1), ("lost", P1)], [0, 1, 0]),
    "run 1's start late": ([("lost", P1), ("start", P1, False), ("start", P2, True)], [1, 0, 0]),
}


@pytest.mark.parametrize(("steps", "per_step"), RACES.values(), ids=RACES.keys())
def test_one_lost_run_counts_once_whatever_the_order(steps, per_step) -> None:
    counted, runs, refused = replay(steps)
    assert counted == per_step
    assert (runs.lost, refused) == (1, False)
    assert runs.hosts == ("w1",)  # a report names the host a redelivery could not
    assert runs.reason == "signal 9 (SIGKILL)"


# Two lost runs (max_lost_runs 2), each report before or after the next start: exactly two
# counted, and the third start (or the second report) dead-letters it.
SECOND = {
    "reports first": (
        [("lost", P1), ("start", P2, True), ("lost", P2), ("start", P3, True)],
        [1, 0, 1, 0],
    ),
    "starts first": (
        [("start", P2, True), ("lost", P1), ("start", P3, True), ("lost", P2)],
        [1, 0, 1, 0],
    ),
    "mixed": ([("start", P2, True), ("lost", P1), ("lost", P2), ("start", P3, True)], [1, 0, 1, 0]),
}


@pytest.mark.parametrize(("steps", "per_step"), SECOND.values(), ids=SECOND.keys())
def test_two_lost_runs_count_two_in_any_order(steps, per_step) -> None:
    counted, runs, _ = replay(steps)
    assert counted == per_step
    assert runs.lost == 2


def test_a_start_sent_again_is_not_a_new_run() -> None:
    counted, runs, _ = replay([("start", P1, False), ("start", P1, False)])
    assert (counted, runs.lost, runs.starts) == ([0, 0], 0, 1)
    counted, runs, _ = replay([("start", P1, False), ("start", P2, False)])
    assert (counted, runs.lost) == ([0, 1], 1)  # another process: the first run was lost


def test_a_redelivery_after_an_end_of_an_earlier_attempt_is_lost() -> None:
    """Attempt 0 failed (the report ended it); attempt 1's first run sent no start and its
    worker died: the redelivery of attempt 1 counts it."""
    v = poison.on_start(None, "w1", False, 2, process=P1)
    ended = poison.on_end(v.runs, attempt=0)
    assert poison.on_start(ended, "w1", True, 2, attempt=0, process=P2).lost_now == 0
    assert poison.on_start(ended, "w1", True, 2, attempt=1, process=P2).lost_now == 1


def test_a_dlq_retry_that_still_kills_its_worker_is_refused_again() -> None:
    runs = poison.dead_lettered(poison.Runs(lost=2), "d1")
    assert poison.on_start(runs, "w1", False, 2, retry_of="d1").poison is False
    assert poison.on_start(runs, "w1", True, 2, retry_of="d1").poison is True


def test_a_late_report_of_a_counted_run_counts_nothing_after_the_fix() -> None:
    """Run 1 counted by its report, run 2 by run 3's start (whose report is still on its
    way), the task dead-lettered; the fix's retry starts over, then both late reports
    come: neither is a lost run of the retry."""
    counted, runs, refused = replay(
        [("lost", P1), ("start", P2, True), ("start", P3, True)], max_lost_runs=2
    )
    assert (counted, refused) == ([1, 0, 1], True)
    fresh = poison.on_start(poison.dead_lettered(runs, "d1"), "w1", False, 2, retry_of="d1")
    assert (fresh.poison, fresh.runs.lost) == (False, 0)
    for process in (P1, P2):
        late = poison.on_lost(fresh.runs, "w1", "signal 9 (SIGKILL)", process=process)
        assert late.lost_now == 0, process
        assert late.runs.lost == 0


def test_lost_runs_counted_and_poison_after_the_limit() -> None:
    v = poison.on_start(None, "w1", False, 2)
    assert (v.lost_now, v.poison, v.runs.open) == (0, False, True)
    v = poison.on_start(v.runs, "w2", False, 2)  # started again, no end: lost
    assert (v.lost_now, v.poison, v.runs.hosts) == (1, False, ("w1",))
    v = poison.on_start(v.runs, "w3", True, 2)
    assert (v.lost_now, v.poison, v.runs.lost) == (1, True, 2)


def test_an_ended_run_is_not_lost_even_when_redelivered() -> None:
    v = poison.on_start(None, "w1", False, 2)
    ended = poison.on_end(v.runs)
    assert poison.on_start(ended, "w1", True, 2).lost_now == 0
    assert poison.on_start(None, "w1", True, 2).lost_now == 1  # its start never reached us


def test_worker_lost_counts_once_and_a_dlq_retry_starts_over() -> None:
    v = poison.on_start(None, "w1", False, 1)
    runs = poison.on_lost(v.runs, "w1", "signal 9 (SIGKILL)").runs
    assert (runs.lost, runs.reason) == (1, "signal 9 (SIGKILL)")
    refused = poison.on_start(poison.dead_lettered(runs, "d1"), "w1", True, 1)
    assert refused.poison
    fresh = poison.on_start(refused.runs, "w1", False, 1, retry_of="d1")
    assert (fresh.poison, fresh.runs.lost) == (False, 0)
    assert poison.on_start(None, "w1", False, 0).poison is False  # 0 turns it off


async def test_memory_store_bounds_the_task_ids_it_remembers(monkeypatch) -> None:
    monkeypatch.setattr(memory, "MAX_RUNS", 10)
    state = memory.MemoryState()
    for i in range(50):
        await state.update_runs(f"t{i}", lambda r: poison.Runs(open=True), 60)
    assert len(state._runs) <= 10
    assert await state.update_runs("t49", lambda r: r, 60) is not None
