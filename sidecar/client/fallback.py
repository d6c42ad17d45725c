"""What the worker does when the sidecar cannot answer (fail-open, DESIGN §6).

A failure is decided locally by the same pure core (`sidecar.policy.decide`) from the
same policies file when the worker can read it (no fleet state: breakers and adaptive
statistics start empty), else by a conservative default. A start is allowed and an
idempotency claim is granted: running a task twice is safer than losing it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sidecar.client")


def start_allowed() -> dict[str, Any]:
    return {"allow": True, "delay_seconds": 0.0, "breaker": None, "source": "fallback"}


def claim_granted() -> dict[str, Any]:
    return {"claimed": True, "source": "fallback"}


class LocalDecider:
    """Decides failures without the sidecar: the pure core with the policies file when it
    can be read, else a conservative default."""

    def __init__(
        self,
        policies: str | Path | None = None,
        max_retries: int = 3,
        initial_delay: float = 10.0,
        max_delay: float = 300.0,
    ) -> None:
        self.path = Path(policies) if policies else None
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._policy: Any = None
        self._loaded = False
        self._lock = threading.Lock()
        self._rng = random.Random()

    def policy(self) -> Any:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    if self.path is not None:
                        try:
                            from ..policy.loader import load_policy

                            self._policy = load_policy(self.path)
                        except Exception as exc:  # missing or invalid file
                            log.warning(
                                "sidecar fallback: cannot load policies %s: %s", self.path, exc
                            )
                    self._loaded = True
        return self._policy

    def decide(self, event: dict[str, Any]) -> dict[str, Any]:
        policy = self.policy()
        if policy is not None:
            try:
                import msgspec

                from ..policy.decide import EMPTY, decide
                from ..policy.events import FailureEvent

                failure = msgspec.convert(event, FailureEvent)
                outcome = decide(failure, policy, EMPTY, time.time(), self._rng)
                answer = msgspec.to_builtins(outcome.decision)
                answer["source"] = "local"
                return answer
            except Exception as exc:  # an event the core refuses: use the default
                log.debug("sidecar fallback: core refused the event: %s", exc)
        return self.default(int(event.get("attempt") or 0))

    def default(self, attempt: int) -> dict[str, Any]:
        if attempt >= self.max_retries:
            action, delay, why = "dead_letter", 0.0, f"no retry: {attempt} retries made"
        else:
            base = min(self.max_delay, self.initial_delay * 2**attempt)
            delay = self._rng.uniform(base / 2, base)
            action, why = "retry", f"retry {attempt + 1}/{self.max_retries} (default)"
        return {
            "action": action,
            "delay_seconds": round(delay, 3),
            "queue": None,
            "priority": None,
            "priority_value": None,
            "classification": None,
            "breaker": None,
            "rationale": f"sidecar unavailable; conservative default: {why}",
            "dlq_id": None,
            "source": "default",
        }
