"""Backoff strategies and jitter: pure functions of the policy, the attempt and an rng.

`attempt` is the number of retries already made (0 on the first failure), so the first
retry waits `initial_delay` under every strategy.
"""

from __future__ import annotations

import math
import random

from .durations import format_duration
from .model import Backoff, Jitter, RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """The un-jittered delay before retry number `attempt + 1`, capped by max_delay."""
    initial, cap = policy.initial_delay, policy.max_delay
    match policy.backoff:
        case Backoff.CONSTANT:
            delay = initial
        case Backoff.LINEAR:
            delay = initial * (1 + attempt)
        case Backoff.EXPONENTIAL:
            # Compare in log space: multiplier ** attempt overflows a float for large attempts.
            if initial <= 0 or attempt * math.log(policy.multiplier) > math.log(cap / initial):
                delay = cap if initial > 0 else 0.0
            else:
                delay = initial * policy.multiplier**attempt
        case Backoff.FIBONACCI:
            previous, current = 0, 1  # fib(1) = 1, fib(2) = 1, fib(3) = 2, …
            for _ in range(attempt):
                previous, current = current, previous + current
                if initial * current >= cap:
                    break
            delay = initial * current
    return min(delay, cap)


def jitter(policy: RetryPolicy, attempt: int, delay: float, rng: random.Random) -> float:
    """Spread `delay` so a fleet of failures does not retry in lock-step."""
    match policy.jitter:
        case Jitter.NONE:
            return delay
        case Jitter.FULL:
            return rng.uniform(0.0, delay)
        case Jitter.EQUAL:
            return delay / 2 + rng.uniform(0.0, delay / 2)
        case Jitter.DECORRELATED:
            # Stateless form of decorrelated jitter: the previous sleep is taken to be the
            # previous attempt's backoff.
            previous = backoff_delay(policy, attempt - 1) if attempt > 0 else policy.initial_delay
            low = min(policy.initial_delay, delay)
            return min(policy.max_delay, rng.uniform(low, max(low, 3 * previous)))
    raise AssertionError(policy.jitter)


def describe(policy: RetryPolicy, attempt: int) -> str:
    """`exponential 30s x2^2`: the formula behind backoff_delay, for rationales."""
    initial = format_duration(policy.initial_delay)
    match policy.backoff:
        case Backoff.EXPONENTIAL:
            return f"exponential {initial} x{policy.multiplier:g}^{attempt}"
        case Backoff.LINEAR:
            return f"linear {initial} x{attempt + 1}"
        case Backoff.FIBONACCI:
            return f"fibonacci {initial} x fib({attempt + 1})"
        case _:
            return f"constant {initial}"
