"""Success events wait in a bounded buffer that one daemon thread sends to
`/v1/hooks/batch`. When the buffer is full the oldest events are dropped, counted and
reported in a warning. Dead letters decided locally, which the sidecar has not stored, go
to the durable outbox (outbox.py) when there is one, and are sent first, by the same
thread; without one (or when it is full) they wait in the buffer too. An event is kept as
built, so a re-sent report carries the report id it was made with."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .outbox import Entry, Outbox
from .transport import after_fork_in_child

log = logging.getLogger("sidecar.client")
MAX_BATCH = 1000  # the sidecar's limit per batch


class Batcher:
    """`send(events)` says for each event whether the sidecar is done with it (None: it
    took none of them; keep them for later); `pause()` says how long to wait after a
    refusal; `closing()` runs on the thread as it ends (to close its connection)."""

    def __init__(
        self,
        send: Callable[[list[dict[str, Any]]], list[bool] | None],
        pause: Callable[[], float],
        closing: Callable[[], None],
        capacity: int,
        batch_size: int,
        interval: float,
        outbox: Outbox | None = None,
    ) -> None:
        self.send = send
        self.outbox = outbox
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
            self._start()
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()

    def add_durable(self, event: dict[str, Any]) -> None:
        """An event the sidecar must get (a dead letter decided locally): in the outbox,
        written to disk before this returns, when it can be; else in the buffer."""
        if self.outbox is None or not self.outbox.append(event):
            self.add(event)
            return
        with self._cond:
            if not self._closed:
                self._start()

    def start(self) -> None:
        """Start the thread in this process if it does not run (it adopts outbox files
        left by workers that are gone)."""
        if self.outbox is not None and (self._thread is None or not self._thread.is_alive()):
            with self._cond:
                if not self._closed:
                    self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sidecar-batcher", daemon=True)
            self._thread.start()

    def pending(self) -> int:
        with self._cond:
            waiting = len(self._buffer) + self._inflight
        return waiting + self.durable()

    def durable(self) -> int:
        """Outbox entries the sidecar has not acknowledged yet."""
        return self.outbox.waiting() if self.outbox is not None else 0

    def _take(self) -> tuple[list[Entry], list[dict[str, Any]]]:
        if self.outbox is not None:
            self.outbox.scan()
        with self._cond:
            if len(self._buffer) < self.batch_size and not self._closed:
                self._cond.wait(self.interval)  # until a full batch, a flush or the interval
            durable = self.outbox.take(self.batch_size) if self.outbox is not None else []
            count = min(self.batch_size - len(durable), len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._inflight = len(batch)
            return durable, batch

    def _run(self) -> None:
        while True:
            durable, batch = self._take()
            if not durable and not batch:
                with self._cond:
                    if self._closed:
                        self.closing()
                        return
                self._report_drops()
                continue
            try:
                done = self.send([e.event for e in durable] + batch)
            except Exception:  # pragma: no cover - defensive: the thread must live on
                log.exception("sidecar client: batch")
                done = None
            ok = done is not None
            done = done or [False] * (len(durable) + len(batch))
            if self.outbox is not None:
                self.outbox.settle(durable, done[: len(durable)])
            again = [e for e, sent in zip(batch, done[len(durable) :], strict=True) if not sent]
            with self._cond:
                self._inflight = 0
                self.sent += sum(done)
                # keep the rest for the next try, oldest dropped if it overflows
                room = self.capacity - len(self._buffer)
                keep = again[-room:] if room > 0 else []
                self.dropped += len(again) - len(keep)
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
        """Wait until the buffer and the outbox are sent (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
        while self.pending() or self._scanning():
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.notify()
            time.sleep(0.01)
        return True

    def _scanning(self) -> bool:
        """The thread has yet to look for outbox files left by workers that are gone."""
        thread = self._thread
        alive = thread is not None and thread.is_alive()
        return self.outbox is not None and not self.outbox.scanned and alive

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout))
        if self.outbox is not None:
            self.outbox.close()  # what is left stays on disk, for the next process
        self._report_drops()
