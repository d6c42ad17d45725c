"""A durable outbox for dead letters the client decided locally: a worker that dies before
the sidecar is back must not lose them (DESIGN §6, "nothing lost").

When the sidecar cannot answer, `failure()` decides locally (fallback.py). A dead letter
decided so has not reached the sidecar's DLQ; the task is over for the worker. Before
`failure()` answers, the event is appended as one JSON line to this process's own file,
`<dir>/outbox-<pid>-<random>.jsonl`, and fsync'd. The batcher's thread sends the lines to
`/v1/hooks/batch` with the other buffered events; the sidecar stores each report id once,
so a line sent twice (after a crash between its acknowledgement and its removal) is one
DLQ record. Success and end events stay in memory (losing a count is acceptable).

Files, locks, crashes:

- The writer holds an exclusive `flock` on its file for its life. A forked child (Celery
  prefork) closes the descriptors it inherited (closing does not release the parent's
  lock; `LOCK_UN` would) and opens a file of its own on its first dead letter.
- Once every line of its file is acknowledged, the writer truncates it; on `close()` an
  empty file is removed, one with lines left is kept for another process. An own file
  past `retire_bytes` with lines acknowledged is retired for a new one and removed once
  its last line is acknowledged, so a sidecar that comes and goes cannot make it grow.
- The batcher's thread adopts the files of processes that are gone: a file it can lock
  (non-blocking) has no living writer. Adopted lines are sent in order and the file is
  removed once all of them are acknowledged. It looks when it starts and every
  `RESCAN_SECONDS`. A torn last line (a write cut by the crash; its `failure()` never
  answered) is ignored.
- The lines of every outbox file together are bounded by `max_bytes`. Beyond it (or when
  the directory cannot be written) a dead letter stays in the memory buffer, as before
  this outbox, with one loud log line per episode; nothing raises into the task.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..durable import append_line, fsync_directory
from .transport import after_fork_in_child

log = logging.getLogger("sidecar.client")

ENV = "TASK_SIDECAR_CLIENT_OUTBOX"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
RESCAN_SECONDS = 30.0
# An own file this big that holds acknowledged lines is retired for a new one (and removed
# once its last line is acknowledged): with the sidecar coming and going, a file whose
# lines are never all acknowledged at once would otherwise only grow.
RETIRE_BYTES = 1024 * 1024
PREFIX, SUFFIX = "outbox-", ".jsonl"


def default_directory() -> Path | None:
    """$TASK_SIDECAR_CLIENT_OUTBOX (empty: no outbox), else $XDG_STATE_HOME/task-sidecar/
    outbox, else ~/.local/state/task-sidecar/outbox (None without a home)."""
    if ENV in os.environ:
        return Path(os.environ[ENV]) if os.environ[ENV] else None
    state = os.environ.get("XDG_STATE_HOME")
    try:
        base = Path(state) if state else Path.home() / ".local" / "state"
    except RuntimeError:  # no HOME and no passwd entry (some containers)
        return None
    return base / "task-sidecar" / "outbox"


class Entry:
    """One line of an outbox file: where it is (the line stays on disk, not in memory),
    and its event once `take` has read it."""

    __slots__ = ("event", "file", "offset", "size")

    def __init__(self, file: _File, offset: int, size: int) -> None:
        self.file = file
        self.offset = offset
        self.size = size
        self.event: dict[str, Any] | None = None


class _File:
    """An outbox file this process holds the lock of: its own, or an adopted orphan."""

    def __init__(self, path: Path, fd: int, own: bool) -> None:
        self.path = path
        self.fd = fd
        self.own = own
        self.size = 0  # bytes of whole lines
        self.lines = 0
        self.done = 0  # lines acknowledged


class Outbox:
    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retire_bytes: int = RETIRE_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.retire_bytes = retire_bytes
        self._disabled = False  # the directory cannot be written: memory only
        self._full = False  # for logging once per episode
        self._closed = False
        self._forked()
        after_fork_in_child(self, Outbox._forked_in_child)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._own: _File | None = None
        self._files: list[_File] = []  # adopted orphans, oldest first, then the own file
        self._queue: list[Entry] = []  # lines not acknowledged and not in flight, in order
        self._inflight = 0
        self._others = 0  # bytes in other processes' files, at the last scan
        self._scanned_at: float | None = None
        self._unreadable: set[str] = set()

    def _forked_in_child(self) -> None:
        """The parent's files stay the parent's: close our copies (keeping its locks)."""
        for file in self._files:
            with contextlib.suppress(OSError):
                os.close(file.fd)
        self._forked()

    # --- the worker's side ---------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> bool:
        """Write the event durably (True), or say it could not be (False: keep it in
        memory). Never raises."""
        if self._disabled:
            return False
        try:
            line = json.dumps(event, default=repr, separators=(",", ":")).encode() + b"\n"
        except Exception:  # defensive: the protocol made it JSON already
            log.exception("sidecar outbox: a dead letter that is not JSON stays in memory")
            return False
        with self._lock:
            try:
                file = self._own or self._open_own()
                if file.done and file.size >= self.retire_bytes:
                    file.own, self._own = False, None  # removed once all of it is sent
                    file = self._open_own()
                if file.size + self._others + self._adopted_bytes() + len(line) > self.max_bytes:
                    raise OSError(errno.ENOSPC, f"outbox is full ({self.max_bytes} bytes)")
                offset = file.size
                append_line(file.fd, line, file.size)
                file.size += len(line)
            except OSError as exc:
                if self._own is None:  # cannot even open a file: no outbox in this process
                    self._disabled = True
                    log.warning(
                        "sidecar outbox: cannot write the outbox %s (%s): dead letters "
                        "decided locally are kept in memory only (set %s or outbox_dir=)",
                        self.directory,
                        exc.strerror or exc,
                        ENV,
                    )
                elif not self._full:
                    self._full = True
                    log.error(
                        "sidecar outbox: cannot write a dead letter to the outbox %s (%s): "
                        "it is kept in memory only, and lost if this worker stops before "
                        "the sidecar answers",
                        self._own.path,
                        exc.strerror or exc,
                    )
                return False
            if self._full:
                self._full = False
                log.warning("sidecar outbox: writing dead letters to %s again", file.path)
            file.lines += 1
            self._queue.append(Entry(file, offset, len(line)))
            return True

    def _open_own(self) -> _File:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:  # a scanner may have locked it (as an orphan) before us: take another
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            fsync_directory(self.directory)
            self._own = _File(path, fd, own=True)
            self._files.append(self._own)
            return self._own

    def _adopted_bytes(self) -> int:
        return sum(f.size for f in self._files if not f.own)

    # --- the batcher's side --------------------------------------------------------------

    @property
    def scanned(self) -> bool:
        """Whether this process has looked for files left by workers that are gone."""
        return self._scanned_at is not None

    def waiting(self) -> int:
        """Lines not yet acknowledged by the sidecar (adopted ones included)."""
        with self._lock:
            return len(self._queue) + self._inflight

    def take(self, limit: int) -> list[Entry]:
        """Up to `limit` lines to send, oldest first, read back from their files; they
        are in flight until `settle`. A line that does not read as JSON is skipped."""
        with self._lock:
            batch, self._queue = self._queue[:limit], self._queue[limit:]
            readable = []
            for entry in batch:
                try:
                    entry.event = json.loads(os.pread(entry.file.fd, entry.size, entry.offset))
                except (OSError, ValueError) as exc:
                    log.error(
                        "sidecar outbox: skipping an outbox line of %s: %s", entry.file.path, exc
                    )
                    entry.file.done += 1
                    continue
                readable.append(entry)
            self._inflight += len(readable)
            return readable

    def settle(self, entries: list[Entry], done: Iterable[bool]) -> None:
        """After a send: acknowledged lines are done, the others wait for the next send
        (in their place, ahead of newer lines)."""
        with self._lock:
            again = []
            for entry, ok in zip(entries, done, strict=True):
                if entry.file.fd < 0:  # released by close(): the line stays on disk
                    continue
                if ok:
                    entry.file.done += 1
                else:
                    again.append(entry)
            self._inflight = max(0, self._inflight - len(entries))
            self._queue[:0] = again
            for file in [f for f in self._files if f.done == f.lines]:
                self._finished(file)

    def _finished(self, file: _File) -> None:
        """Every line of `file` is acknowledged (called under the lock)."""
        try:
            if file.own:
                if file.size:  # start the file again; it stays ours
                    os.ftruncate(file.fd, 0)
                    os.fsync(file.fd)
                file.size = file.lines = file.done = 0
                return
            file.path.unlink(missing_ok=True)
            fsync_directory(self.directory)
        except OSError as exc:  # it is sent: a copy left behind is only sent again
            log.warning("sidecar outbox: cannot clear outbox file %s: %s", file.path, exc)
            if file.own:
                return
        self._files.remove(file)
        os.close(file.fd)

    def scan(self, every: float = RESCAN_SECONDS) -> int:
        """Adopt the files of writers that are gone (at most once per `every` seconds);
        the number of lines adopted."""
        now = time.monotonic()
        if self._closed or (self._scanned_at is not None and now - self._scanned_at < every):
            return 0
        try:  # (not into a directory this process cannot write: it could not adopt)
            names = [] if self._disabled else os.listdir(self.directory)
        except OSError:
            names = []  # no directory yet: nothing left by anyone
        with self._lock:
            held = {f.path.name for f in self._files}
        adopted: list[Entry] = []
        others = 0
        for name in sorted(names, key=self._age):  # the oldest first
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)) or name in held:
                continue
            try:
                found = self._adopt(self.directory / name)
            except FileNotFoundError:  # sent and removed by another process meanwhile
                continue
            except OSError as exc:
                if name not in self._unreadable:  # once per file, not every scan
                    self._unreadable.add(name)
                    log.warning("sidecar outbox: cannot read outbox file %s: %s", name, exc)
                continue
            if isinstance(found, int):  # a living writer's: counted against max_bytes
                others += found
                continue
            file, entries = found
            with self._lock:
                if self._closed:  # closed meanwhile: leave it to the next process
                    os.close(file.fd)
                    break
                self._files.append(file)
                if not entries:  # an empty file: nothing to send
                    self._finished(file)
            adopted += entries
        with self._lock:
            self._others = others
            if not self._closed:
                self._queue[:0] = adopted  # ahead of the process's own lines
            self._scanned_at = now
        if adopted:
            log.warning(
                "sidecar outbox: %d dead letters left in %s by workers that stopped: "
                "sending them to the sidecar",
                len(adopted),
                self.directory,
            )
        return len(adopted)

    def _age(self, name: str) -> tuple[float, str]:
        try:
            return (os.stat(self.directory / name).st_mtime, name)
        except OSError:
            return (0.0, name)

    def _adopt(self, path: Path) -> int | tuple[_File, list[Entry]]:
        """A gone writer's file, locked, with its lines; or the size of a living one's."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer lives (or another process adopted it)
            try:
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        file = _File(path, fd, own=False)
        entries, offset = [], 0
        try:
            if os.fstat(fd).st_nlink == 0:  # removed by its adopter while we waited
                raise FileNotFoundError(errno.ENOENT, "already sent", str(path))
            with os.fdopen(os.dup(fd), "rb") as stream:
                for raw in stream:  # where each line is; the lines stay on disk
                    if raw.endswith(b"\n"):  # not a torn last line (never answered)
                        entries.append(Entry(file, offset, len(raw)))
                    offset += len(raw)
        except BaseException:
            os.close(fd)
            raise
        file.size, file.lines = offset, len(entries)
        return file, entries

    def close(self) -> None:
        """Release every file: an empty own file is removed, lines left stay for another
        process (or this one's next start)."""
        with self._lock:
            self._closed = True  # adopts nothing more (a dead letter still gets a file)
            for file in self._files:
                if file.own and file.done == file.lines:
                    file.path.unlink(missing_ok=True)
                os.close(file.fd)
                file.fd = -1
            self._files, self._own, self._queue, self._inflight = [], None, [], 0
