"""Counts of successes and failures over a sliding time window.

The window is kept as at most `BUCKETS` buckets of width `window / BUCKETS`, so its size
is bounded whatever the traffic, and it slides in steps of a tenth of the window.
"""

from __future__ import annotations

import msgspec

BUCKETS = 10


class Window(msgspec.Struct, frozen=True):
    # (bucket number, successes, failures), oldest first
    buckets: tuple[tuple[int, int, int], ...] = ()

    def add(self, now: float, window: float, *, success: bool) -> Window:
        current = int(now // (window / BUCKETS))
        kept = [b for b in self.buckets if b[0] > current - BUCKETS]
        if kept and kept[-1][0] == current:
            number, successes, failures = kept[-1]
            kept[-1] = (number, successes + success, failures + (not success))
        else:
            kept.append((current, int(success), int(not success)))
        return Window(tuple(kept))

    def totals(self, now: float, window: float) -> tuple[int, int]:
        """(successes, failures) within the window ending at `now`."""
        current = int(now // (window / BUCKETS))
        successes = failures = 0
        for number, s, f in self.buckets:
            if current - BUCKETS < number <= current:
                successes += s
                failures += f
        return successes, failures
