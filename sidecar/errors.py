"""The errors a store raises, known to every layer above it."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A backend did not answer; the message says which and why (never a secret)."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {reason}")


class StoreRefused(Exception):
    """A backend answered and refused the data for good (too large for an index, a value
    its type cannot hold): the same write will never succeed, so it is not an outage."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {reason}")
