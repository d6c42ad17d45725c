"""What the client remembers between calls: an outage (so it is logged once and the
sidecar is not tried for a while) and the start allowances. Clocks are injectable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("sidecar.client")


class Health:
    """Remembers an outage so it is logged once and calls skip the sidecar for a while."""

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self.clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._skip_until = 0.0
        self.fallbacks = 0
        self.outages = 0

    def should_try(self) -> bool:
        return self.clock() >= self._skip_until

    def failed(self, why: str) -> None:
        with self._lock:
            self.fallbacks += 1
            self._skip_until = self.clock() + self.retry_interval
            if self.down_since is None:
                self.down_since = self.clock()
                self.outages += 1
                log.warning("sidecar unavailable (%s); deciding locally until it answers", why)

    def skipped(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def ok(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                log.warning(
                    "sidecar answers again after %.1fs (%d calls fell back)",
                    self.clock() - self.down_since,
                    self.fallbacks,
                )
                self.down_since = None


class StartAllowances:
    """A task the sidecar let start is let start again without asking for `seconds`: a
    round trip per run would cost more than the task. A failure answer reporting an open
    breaker ends it at once; one opened through another worker is seen at most `seconds`
    late."""

    LIMIT = 10_000  # task names are few in practice; a flood of them only clears the cache

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._until: dict[str, float] = {}

    def get(self, task_name: str) -> dict[str, Any] | None:
        until = self._until.get(task_name)
        if until is not None and self.clock() < until:
            return {"allow": True, "delay_seconds": 0.0, "breaker": None, "source": "cache"}
        return None

    def remember(self, task_name: str, answer: Mapping[str, Any]) -> None:
        if self.seconds <= 0:
            return
        if answer.get("allow") and not answer.get("breaker"):
            if len(self._until) >= self.LIMIT:
                self._until.clear()
            self._until[task_name] = self.clock() + self.seconds
        else:
            self._until.pop(task_name, None)

    def forget_if_open(self, task_name: str, decision: Mapping[str, Any]) -> None:
        breaker = decision.get("breaker") or {}
        if breaker.get("state") not in (None, "closed"):
            self._until.pop(task_name, None)
