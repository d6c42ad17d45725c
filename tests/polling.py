"""Waiting for a condition in tests: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any], timeout: float = 15.0, what: str = "", interval: float = 0.05
) -> Any:
    """Call `check` until it returns something truthy, and return that; fail after
    `timeout` seconds, saying `what` was awaited and what `check` last returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or check}: not true after {timeout}s (last: {last!r})")
        time.sleep(interval)  # polling with a deadline
