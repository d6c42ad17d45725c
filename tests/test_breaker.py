"""The circuit breaker state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.breaker import CLOSED, Status, on_failure, on_start, on_success, reset
from sidecar.policy.model import BreakerSettings

SETTINGS = BreakerSettings(failures=3, open_for=300, window=60)


def fail_times(state, times, s=SETTINGS):
    moves = []
    for t in times:
        state, moved = on_failure(state, s, t)
        moves.append(moved)
    return state, moves


class TestClosed:
    """A closed breaker opens after N failures within the window, not before."""

    def test_opens_on_the_nth_failure(self):
        state, moves = fail_times(CLOSED, [0, 1, 2])
        assert moves == [None, None, Status.OPEN]
        assert state.current(SETTINGS, 2) is Status.OPEN

    def test_failures_outside_the_window_do_not_count(self):
        state, moves = fail_times(CLOSED, [0, 100, 200, 300])
        assert moves == [None] * 4
        assert state.current(SETTINGS, 300) is Status.CLOSED

    def test_failure_rate_opens_with_enough_calls(self):
        s = BreakerSettings(failures=1000, open_for=300, window=60, failure_rate=0.5, min_calls=4)
        state = CLOSED
        for t in range(3):
            state, _ = on_success(state, s, t)
        state, moved = on_failure(state, s, 3)
        assert moved is None  # 1 of 4 failed
        state, _ = on_failure(state, s, 4)
        state, moved = on_failure(state, s, 5)
        assert moved is Status.OPEN  # 3 of 6 failed

    def test_start_is_allowed(self):
        allow, delay, _, moved = on_start(CLOSED, SETTINGS, 0)
        assert (allow, delay, moved) == (True, 0.0, None)


class TestOpen:
    """An open breaker refuses runs until open_for elapses, then lets probes through."""

    @pytest.fixture
    def opened(self):
        state, _ = fail_times(CLOSED, [0, 1, 2])
        return state  # opened at t=2

    def test_refuses_with_the_time_left(self, opened):
        allow, delay, _, _ = on_start(opened, SETTINGS, 102)
        assert (allow, delay) == (False, 200)

    def test_becomes_half_open_by_the_clock(self, opened):
        assert opened.current(SETTINGS, 301) is Status.OPEN
        assert opened.current(SETTINGS, 302) is Status.HALF_OPEN

    def test_one_probe_then_refuse(self, opened):
        allow, _, probing, moved = on_start(opened, SETTINGS, 302)
        assert (allow, moved) == (True, Status.HALF_OPEN)
        allow, delay, _, moved = on_start(probing, SETTINGS, 303)
        assert (allow, moved) == (False, None)
        assert delay > 0

    def test_probe_success_closes(self, opened):
        _, _, probing, _ = on_start(opened, SETTINGS, 302)
        state, moved = on_success(probing, SETTINGS, 310)
        assert moved is Status.CLOSED
        assert state == CLOSED

    def test_probe_failure_reopens_for_a_full_period(self, opened):
        _, _, probing, _ = on_start(opened, SETTINGS, 302)
        state, moved = on_failure(probing, SETTINGS, 310)
        assert moved is Status.OPEN
        assert state.reopens_in(SETTINGS, 310) == 300

    def test_a_lost_probe_frees_its_place(self, opened):
        _, _, probing, _ = on_start(opened, SETTINGS, 302)
        allow, _, _, _ = on_start(probing, SETTINGS, 302 + 300)
        assert allow

    def test_late_failures_of_old_runs_do_not_extend_it(self, opened):
        state, moved = on_failure(opened, SETTINGS, 50)
        assert (state, moved) == (opened, None)

    def test_reset_closes(self, opened):
        state, moved = reset(opened, SETTINGS, 10)
        assert (state, moved) == (CLOSED, Status.CLOSED)


events = st.lists(
    st.tuples(st.sampled_from(["fail", "ok", "start"]), st.floats(0, 50)), max_size=60
)


class TestInvariants:
    """Properties that hold for any sequence of events."""

    @settings(max_examples=300)
    @given(events=events, failures=st.integers(1, 8), probes=st.integers(1, 3))
    def test_invariants(self, events, failures, probes):
        s = BreakerSettings(failures=failures, open_for=100, window=60, half_open_probes=probes)
        state, now = CLOSED, 0.0
        for kind, step in events:
            now += step
            before = state.current(s, now)
            if kind == "fail":
                state, moved = on_failure(state, s, now)
                # a failure never closes a breaker
                assert moved in (None, Status.OPEN)
            elif kind == "ok":
                state, moved = on_success(state, s, now)
                # a success never opens one
                assert moved in (None, Status.CLOSED)
                if before is Status.HALF_OPEN:
                    assert moved is Status.CLOSED
            else:
                allow, delay, state, _ = on_start(state, s, now)
                assert allow == (delay == 0)
                if before is Status.OPEN:
                    assert not allow
                assert state.probes <= probes
            # the window stays bounded whatever the traffic
            assert len(state.window.buckets) <= 10
            assert delay_ok(state, s, now)


def delay_ok(state, s, now):
    return 0 <= state.reopens_in(s, now) <= s.open_for + 1e-9
