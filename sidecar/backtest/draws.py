"""The random draws of a replay: set from outside, or fixed by a hash."""

from __future__ import annotations

import hashlib
import random


class Quantile(random.Random):
    """An rng whose draw is set from outside: `uniform(a, b)` is the quantile `u` of
    [a, b]. Records the range it was asked for (None: no jitter in this decision)."""

    def __init__(self) -> None:
        super().__init__(0)
        self.u = 0.5
        self.span: tuple[float, float] | None = None

    def uniform(self, a: float, b: float) -> float:
        self.span = (a, b)
        return a + (b - a) * self.u

    def random(self) -> float:
        return self.u


def hashed_draw(seed: int, task_id: str, run: int) -> float:
    """A uniform draw in [0, 1) fixed by (seed, task, run). A cryptographic hash, not a
    CRC: CRCs are affine, so the draws of one task's runs would depend on each other."""
    digest = hashlib.blake2b(f"{seed}/{task_id}/{run}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 18446744073709551616.0
