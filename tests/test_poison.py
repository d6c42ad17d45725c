"""The pure poison core (sidecar/policy/poison.py) and the memory store's bound on runs."""

from __future__ import annotations

from sidecar.policy import poison
from sidecar.store import memory


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
    runs = poison.on_lost(v.runs, "w1", "signal 9 (SIGKILL)")
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
