"""Backoff strategies and jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.backoff import backoff_delay, describe, jitter
from sidecar.policy.model import Backoff, Jitter, RetryPolicy


def policy(
    backoff=Backoff.EXPONENTIAL, initial=30.0, multiplier=2.0, cap=3600.0, jitter_kind=Jitter.NONE
) -> RetryPolicy:
    return RetryPolicy(5, initial, backoff, multiplier, cap, jitter_kind)


class TestStrategies:
    """Each strategy's delay for the retry after `attempt` retries, capped by max_delay."""

    @pytest.mark.parametrize(
        ("backoff", "attempt", "expected"),
        [
            (Backoff.EXPONENTIAL, 0, 30),  # the first retry waits initial_delay
            (Backoff.EXPONENTIAL, 2, 120),  # 30 × 2²
            (Backoff.EXPONENTIAL, 7, 3600),  # 30 × 2⁷ = 3840, capped at 1h
            (Backoff.EXPONENTIAL, 100_000, 3600),  # no float overflow
            (Backoff.LINEAR, 0, 30),
            (Backoff.LINEAR, 3, 120),  # 30 × 4
            (Backoff.FIBONACCI, 0, 30),  # fib 1, 1, 2, 3, 5, 8
            (Backoff.FIBONACCI, 1, 30),
            (Backoff.FIBONACCI, 2, 60),
            (Backoff.FIBONACCI, 5, 240),
            (Backoff.FIBONACCI, 100_000, 3600),
            (Backoff.CONSTANT, 9, 30),
        ],
    )
    def test_delay(self, backoff, attempt, expected):
        assert backoff_delay(policy(backoff), attempt) == expected

    def test_seed_external_api_down_is_fibonacci_from_15_minutes(self):
        p = RetryPolicy(2, 900.0, Backoff.FIBONACCI, 2.0, 7200.0, Jitter.FULL)
        assert [backoff_delay(p, a) for a in range(5)] == [900, 900, 1800, 2700, 4500]

    @pytest.mark.parametrize(
        ("backoff", "text"),
        [
            (Backoff.EXPONENTIAL, "exponential 30s x2^2"),
            (Backoff.LINEAR, "linear 30s x3"),
            (Backoff.FIBONACCI, "fibonacci 30s x fib(3)"),
            (Backoff.CONSTANT, "constant 30s"),
        ],
    )
    def test_describe(self, backoff, text):
        assert describe(policy(backoff), 2) == text


class TestJitter:
    """Jitter stays within its documented bounds; a seeded rng makes it repeatable."""

    def test_seeded_values_repeat(self):
        p = policy(jitter_kind=Jitter.FULL)
        first = [jitter(p, 2, 120, random.Random(7)) for _ in range(3)]
        assert first[0] == first[1] == first[2]
        assert 0 <= first[0] <= 120

    @given(
        kind=st.sampled_from(list(Jitter)),
        backoff=st.sampled_from(list(Backoff)),
        initial=st.floats(0.001, 3600),
        multiplier=st.floats(1, 10),
        cap_factor=st.floats(1, 1000),
        attempt=st.integers(0, 10_000),
        seed=st.integers(0, 2**32),
    )
    def test_bounds(self, kind, backoff, initial, multiplier, cap_factor, attempt, seed):
        p = policy(backoff, initial, multiplier, initial * cap_factor, kind)
        base = backoff_delay(p, attempt)
        assert initial <= base <= p.max_delay or base == pytest.approx(p.max_delay)
        delay = jitter(p, attempt, base, random.Random(seed))
        match kind:
            case Jitter.NONE:
                assert delay == base
            case Jitter.FULL:
                assert 0 <= delay <= base
            case Jitter.EQUAL:
                assert base / 2 <= delay <= base
            case Jitter.DECORRELATED:
                assert min(initial, base) <= delay <= p.max_delay

    @given(attempt=st.integers(0, 60), backoff=st.sampled_from(list(Backoff)))
    def test_never_decreases_with_attempts(self, attempt, backoff):
        p = policy(backoff)
        assert backoff_delay(p, attempt + 1) >= backoff_delay(p, attempt)
