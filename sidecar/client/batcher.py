"""Success events (and dead letters decided locally, which the sidecar has not stored) wait
in a bounded buffer that one daemon thread sends to `/v1/hooks/batch`. When the buffer is
full the oldest events are dropped, counted and reported in a warning. An event is kept
as built, so a re-sent report carries the report id it was made with."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .transport import after_fork_in_child

log = logging.getLogger("sidecar.client")
MAX_BATCH = 1000  # the sidecar's limit per batch


class Batcher:
    """`send(events)` is True when the sidecar took them (False: keep them for later);
    `pause()` says how long to wait after a refusal; `closing()` runs on the thread as it
    ends (to close its connection)."""

    def __init__(
        self,
        send: Callable[[list[dict[str, Any]]], bool],
        pause: Callable[[], float],
        closing: Callable[[], None],
        capacity: int,
        batch_size: int,
        interval: float,
    ) -> None:
        self.send = send
        self.pause = pause
        self.closing = closing
        self.capacity = capacity
        self.batch_size = min(batch_size, MAX_BATCH)
        self.interval = interval
        self._closed = False
        self._forked()
        after_fork_in_child(self, Batcher._forked)
        self.sent = 0
        self.dropped = 0
        self._dropped_reported = 0

    def _forked(self) -> None:
        """Empty, with no thread (in a forked child: the parent sends what it buffered,
        and its lock may have been held by its thread when it forked)."""
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._inflight = 0

    def add(self, event: dict[str, Any]) -> None:
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="sidecar-batcher", daemon=True
                )
                self._thread.start()
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    def _take(self) -> list[dict[str, Any]]:
        with self._cond:
            if len(self._buffer) < self.batch_size and not self._closed:
                self._cond.wait(self.interval)  # until a full batch, a flush or the interval
            if not self._buffer:
                return []
            count = min(self.batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._inflight = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                with self._cond:
                    if self._closed:
                        self.closing()
                        return
                self._report_drops()
                continue
            try:
                ok = self.send(batch)
            except Exception:  # pragma: no cover - defensive: the thread must live on
                log.exception("sidecar client: batch")
                ok = False
            with self._cond:
                self._inflight = 0
                if ok:
                    self.sent += len(batch)
                else:  # keep them for the next try, oldest dropped if it overflows
                    room = self.capacity - len(self._buffer)
                    keep = batch[-room:] if room > 0 else []
                    self.dropped += len(batch) - len(keep)
                    self._buffer.extendleft(reversed(keep))
                closed = self._closed
            self._report_drops()
            if not ok:
                if closed:
                    self.closing()
                    return
                time.sleep(min(self.interval, max(0.05, self.pause())))

    def _report_drops(self) -> None:
        if self.dropped != self._dropped_reported:
            new = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            log.warning("sidecar client dropped %d buffered events (%d in all)", new, self.dropped)

    def flush(self, timeout: float) -> bool:
        """Wait until the buffer is sent (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.notify()
            time.sleep(0.01)
        return True

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout))
        self._report_drops()
