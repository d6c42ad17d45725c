"""A local, fsync'd spool in front of the durable DLQ store: nothing is lost while
PostgreSQL does not answer.

`SpoolingDlq` is a `DlqStore`. Writes (`put`, `failed_again`, `resolve`, `audit`,
`record_events`) go to the inner store; when it raises `StoreUnavailable` (or does not
answer within `write_timeout`) the operation is appended to `<dir>/dlq.spool`, one JSON line per
operation, fsync'd before the caller is answered. While the spool holds operations, new
writes go to it too, so they reach the store in the order they were made. `replay()` (run
by a poller) applies the spooled operations in order once the store answers, and empties
the file only once every line in it has been applied.

Replays are idempotent, so an operation whose first attempt did in fact commit (the answer
was lost) is not applied twice: DLQ ids are made before the first write and `put` is
INSERT … ON CONFLICT (id) DO NOTHING; audit entries get a key before their first write
(`audit_log.entry_key`, unique). Hook events (history and trends) have no key: a replay
cut short by a crash may keep a batch of them twice.

A spooled operation the store refuses for good (`StoreRefused`: data no retry can make it
take) is moved to `<dir>/dlq.quarantine`, fsync'd, counted and logged, and the replay goes
on: one bad write never holds back the ones behind it. Quarantined lines keep their JSON;
docs/runbooks/TaskSidecarSpoolQuarantined.md says how to read and re-apply them.

The spool is bounded by `max_bytes`. When an operation can be neither written nor spooled
(disk full, spool full), `SpoolWriteFailed` is raised, counted in
`task_sidecar_spool_write_failures_total`, and logged once per outage. Reads always go to
the inner store.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..durable import append_line, fsync_directory
from ..records import (
    AuditEntry,
    DlqRecord,
    HookEvent,
    successor_id,
)
from ..timeouts import within
from .ports import DlqStore, StoreRefused, StoreUnavailable

log = logging.getLogger("task_sidecar.spool")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
WRITE_TIMEOUT = 0.5  # a write the store has not taken by then is spooled (a hook's budget)
REPLAY_BATCH = 500  # lines read from the file at a time
SPOOL_FILE = "dlq.spool"
QUARANTINE_FILE = "dlq.quarantine"


def _forwarded(name: str) -> Any:
    """The `DlqStore` method `name`, handed to `self.inner` as it is (what it returns, a
    coroutine or an iterator, goes back unchanged): one forwarder, with the port's
    signature and documentation, instead of a copy of each signature."""

    @functools.wraps(getattr(DlqStore, name))
    def forward(self: SpoolingDlq, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    return forward


class SpoolWriteFailed(StoreUnavailable):
    """The store did not take a write and the spool could not hold it either."""

    def __init__(self, reason: str) -> None:
        super().__init__("spool", reason)


# --- the spooled operations, one JSON object per line, tagged by "op" ----------------------


class _Put(msgspec.Struct, tag="put", tag_field="op"):
    record: DlqRecord


class _FailedAgain(msgspec.Struct, tag="failed_again", tag_field="op"):
    record: DlqRecord  # replayed as failed_again(record) or put(record)


class _Audit(msgspec.Struct, tag="audit", tag_field="op"):
    entry: AuditEntry
    key: str


class _Resolve(msgspec.Struct, tag="resolve", tag_field="op"):
    dlq_id: str
    task_id: str
    now: float


class _Events(msgspec.Struct, tag="record_events", tag_field="op"):
    events: list[HookEvent]


class _Failure(msgspec.Struct, tag="record_failure", tag_field="op"):
    """A failure event as spooled by earlier versions: replayed as a bodiless event."""

    at: float
    task_name: str
    failure_type: str


_Op = _Put | _FailedAgain | _Resolve | _Audit | _Events | _Failure
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Op)


class SpoolingDlq:
    def __init__(
        self,
        inner: DlqStore,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        write_timeout: float = WRITE_TIMEOUT,
        prepare: Callable[[], Awaitable[Any]] | None = None,
        on_pending: Callable[[int], None] = lambda count: None,
        on_write_failure: Callable[[], None] = lambda: None,
        on_quarantine: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`prepare` (migrations) runs before the first replay, and until it has run
        every write is spooled. `on_pending` hears the number of spooled operations
        whenever it changes, `on_write_failure` of each write that was lost,
        `on_quarantine` of each operation moved to the quarantine file."""
        self.inner = inner
        self.name = inner.name
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        self.max_bytes = max_bytes
        self.write_timeout = write_timeout
        self.on_pending = on_pending
        self.on_write_failure = on_write_failure
        self.on_quarantine = on_quarantine
        self.clock = clock
        self.quarantine_path = self.directory / QUARANTINE_FILE
        self.quarantined = 0
        self._progress_at = clock()  # the last time the replay applied a line (or had none)
        self.write_failures = 0
        self._prepare = prepare
        self._lock = asyncio.Lock()  # appends and the final truncation
        self._replay_lock = asyncio.Lock()
        self._fd: int | None = None
        self._size = 0  # bytes in the file, all of them whole lines
        self._offset = 0  # bytes of it already applied to the store
        self._pending = 0  # lines not yet applied
        self._store_down = False  # for logging once per outage
        self._disk_failing = False
        self._outage_started: float | None = None
        self._load()
        self._publish()

    # --- figures -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Spooled operations not yet applied to the store."""
        return self._pending

    def stalled_for(self) -> float:
        """Seconds since the replay last applied an operation while some wait and the store
        answers (0 otherwise): a store that answers but takes nothing shows here, an
        outage shows as the store being down."""
        if not self._pending or self._store_down:
            self._progress_at = self.clock()
            return 0.0
        return max(0.0, self.clock() - self._progress_at)

    def _publish(self) -> None:
        self.on_pending(self._pending)

    # --- writes --------------------------------------------------------------------------

    async def put(self, record: DlqRecord) -> None:
        await self._write(_Put(record), lambda: self.inner.put(record))

    async def failed_again(self, record: DlqRecord) -> bool:
        taken = await self._write(
            _FailedAgain(record), lambda: self.inner.failed_again(record), spooled=True
        )
        return bool(taken)

    async def resolve(self, dlq_id: str, task_id: str, now: float) -> bool:
        """True once the store has resolved the record; spooled, it reads as not (yet)."""
        taken = await self._write(
            _Resolve(dlq_id, task_id, float(now)),
            lambda: self.inner.resolve(dlq_id, task_id, now),
            spooled=False,
        )
        return bool(taken)

    async def audit(self, entry: AuditEntry, *, key: str | None = None) -> None:
        # A key before the first attempt: a lost answer is not a duplicate.
        key = key or str(uuid.uuid4())
        await self._write(_Audit(entry, key), lambda: self.inner.audit(entry, key=key))

    async def record_events(self, events: Sequence[HookEvent]) -> None:
        batch = list(events)
        await self._write(_Events(batch), lambda: self.inner.record_events(batch))

    async def _write(
        self, op: _Op, direct: Callable[[], Awaitable[Any]], spooled: Any = None
    ) -> Any:
        """`direct()`'s result when the store takes the write; else `spooled`, once the
        operation is in the spool."""
        if self._prepare is None and self._pending == 0:
            try:
                return await within(direct(), self.write_timeout)
            except (StoreUnavailable, TimeoutError) as exc:
                self._store_unavailable(exc)
        await self._spool(op)
        return spooled

    def _store_unavailable(self, exc: BaseException) -> None:
        if not self._store_down:
            self._store_down = True
            self._outage_started = time.monotonic()
            log.warning(
                "%s does not take DLQ writes (%s); spooling them to %s",
                self.name,
                str(exc) or type(exc).__name__,
                self.path,
            )

    async def _spool(self, op: _Op) -> None:
        line = _encoder.encode(op) + b"\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                self.write_failures += 1
                self.on_write_failure()
                if not self._disk_failing:
                    self._disk_failing = True
                    log.error(
                        "cannot spool a DLQ write to %s (%s): writes are lost until it can",
                        self.path,
                        exc.strerror or exc,
                    )
                raise SpoolWriteFailed(exc.strerror or str(exc)) from None
            self._pending += 1
        if self._disk_failing:
            self._disk_failing = False
            log.warning("spooling DLQ writes to %s again", self.path)
        self._publish()

    def _append(self, line: bytes) -> None:
        """Append one whole line and fsync it, or leave the file as it was."""
        if self._size + len(line) > self.max_bytes:
            raise OSError(errno.ENOSPC, f"spool is full ({self.max_bytes} bytes)")
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fsync_directory(self.directory)
        append_line(self._fd, line, self._size)
        self._size += len(line)

    # --- replay ------------------------------------------------------------------------

    async def replay(self) -> None:
        """Apply the spooled operations in order, as far as the store answers. Run it
        often: it returns at once when there is nothing to do."""
        if self._replay_lock.locked():
            return
        async with self._replay_lock:
            if self._prepare is not None:
                try:
                    await self._prepare()
                except StoreUnavailable as exc:
                    self._store_unavailable(exc)
                    return
                self._prepare = None
            began, replayed = time.monotonic(), 0
            while self._pending:
                batch = await asyncio.to_thread(self._read, self._offset, REPLAY_BATCH)
                for end, op in batch:
                    if op is not None:
                        try:
                            await within(self._apply(op), self.write_timeout)
                        except (StoreUnavailable, TimeoutError) as exc:
                            self._store_unavailable(exc)
                            return
                        except StoreRefused as exc:
                            await asyncio.to_thread(self._quarantine, op, exc)
                    self._offset = end
                    self._progress_at = self.clock()
                    self._pending -= 1
                    replayed += 1
                    self._publish()
                async with self._lock:
                    if self._offset == self._size:
                        await asyncio.to_thread(self._empty)
            if self._store_down:
                self._store_down = False
                outage = time.monotonic() - (self._outage_started or began)
                log.warning(
                    "%s takes DLQ writes again; replayed %d spooled operations in %.2fs "
                    "(outage %.1fs)",
                    self.name,
                    replayed,
                    time.monotonic() - began,
                    outage,
                )

    async def _apply(self, op: _Op) -> None:
        inner = self.inner
        if isinstance(op, _Put):
            await inner.put(op.record)
        elif isinstance(op, _FailedAgain):
            if not await inner.failed_again(op.record):
                await inner.put(msgspec.structs.replace(op.record, id=successor_id(op.record)))
        elif isinstance(op, _Resolve):
            await inner.resolve(op.dlq_id, op.task_id, op.now)
        elif isinstance(op, _Audit):
            await inner.audit(op.entry, key=op.key)
        elif isinstance(op, _Events):
            await inner.record_events(op.events)
        else:
            event = HookEvent(
                at=op.at,
                kind="failure",
                task_name=op.task_name,
                event=None,
                failure_type=op.failure_type,
            )
            await inner.record_events([event])

    def _quarantine(self, op: _Op, exc: StoreRefused) -> None:
        """Keep a refused operation aside, with why, before the spool forgets it."""
        line = _encoder.encode({"refused": str(exc), "operation": op}) + b"\n"
        fd = os.open(self.quarantine_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.quarantined += 1
        self.on_quarantine()
        log.error(
            "%s refused a spooled %s for good (%s): moved to %s",
            self.name,
            type(op).__name__.strip("_").lower(),
            exc,
            self.quarantine_path,
        )

    def _read(self, offset: int, limit: int) -> list[tuple[int, _Op | None]]:
        """Up to `limit` (end offset, operation) from `offset`; None for a line that does
        not decode (logged, then skipped)."""
        out: list[tuple[int, _Op | None]] = []
        with open(self.path, "rb") as file:
            file.seek(offset)
            while len(out) < limit and offset < self._size:
                line = file.readline()
                offset += len(line)
                try:
                    op: _Op | None = _decoder.decode(line)
                except msgspec.DecodeError as exc:
                    log.error("skipping a spool line that does not decode: %s", exc)
                    op = None
                out.append((offset, op))
        return out

    def _empty(self) -> None:
        """Every line is applied: start the file again (called under the append lock)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        self._size = self._offset = 0

    def _load(self) -> None:
        """Pick up a spool left by an earlier process; drop a torn last line (its write
        never completed, so its hook was never answered)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("dropping a torn last line (%d bytes) from %s", len(data) - whole, self)
            with open(self.path, "r+b") as file:
                file.truncate(whole)
                os.fsync(file.fileno())
        self._size = whole
        self._pending = data.count(b"\n", 0, whole)
        if self._pending:
            log.warning("%d DLQ writes left in %s: replaying them", self._pending, self.path)

    def __repr__(self) -> str:
        return f"<SpoolingDlq {self.path} pending={self._pending}>"

    # --- reads and the rest go to the store, as they are ------------------------------------

    get = _forwarded("get")
    ids_with_prefix = _forwarded("ids_with_prefix")
    list = _forwarded("list")
    count = _forwarded("count")
    iterate = _forwarded("iterate")
    export_rows = _forwarded("export_rows")
    ids = _forwarded("ids")
    transition = _forwarded("transition")
    end_lease = _forwarded("end_lease")
    lapsed_leases = _forwarded("lapsed_leases")
    counts = _forwarded("counts")
    oldest_pending = _forwarded("oldest_pending")
    audit_log = _forwarded("audit_log")
    trends = _forwarded("trends")
    purge = _forwarded("purge")
    events = _forwarded("events")
    ping = _forwarded("ping")

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        await self.inner.close()
