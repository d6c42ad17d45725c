"""Adaptive learning and load: how past retry outcomes and queue depth stretch or shrink
the delays (and the number of retries) a policy gives."""

from __future__ import annotations

import msgspec

from .model import Adaptive, Load
from .window import Window


class Adjustment(msgspec.Struct, frozen=True):
    delay_factor: float = 1.0
    retry_delta: int = 0
    direction: str | None = None  # "faster" | "slower"
    note: str | None = None


NONE = Adjustment()


def learn(adaptive: Adaptive, outcomes: Window | None, now: float) -> Adjustment:
    """From the success rate of retries of this (task, failure type) within the window."""
    if not adaptive.enabled or outcomes is None:
        return NONE
    successes, failures = outcomes.totals(now, adaptive.window)
    samples = successes + failures
    if samples < adaptive.min_samples:
        return NONE
    rate = successes / samples
    if rate > adaptive.fast_above:
        note = f"retries succeed {rate:.0%} of {samples}: delays x{adaptive.fast_delay_factor:g}"
        return Adjustment(adaptive.fast_delay_factor, 0, "faster", note)
    if rate < adaptive.slow_below:
        note = (
            f"retries succeed {rate:.0%} of {samples}: delays x{adaptive.slow_delay_factor:g}, "
            f"retries {adaptive.slow_retry_delta:+d}"
        )
        return Adjustment(adaptive.slow_delay_factor, adaptive.slow_retry_delta, "slower", note)
    return NONE


def under_load(load: Load, queue_depth: int | None) -> bool:
    return queue_depth is not None and queue_depth > load.queue_depth_threshold
