"""Appending to a local file so that what was answered survives a crash: the sidecar's
spool of DLQ writes (store/spool.py) and the worker client's outbox of dead letters
(client/outbox.py). Standard library only: the client imports it too."""

from __future__ import annotations

import os
from pathlib import Path


def append_line(fd: int, line: bytes, size: int) -> None:
    """Append one whole line to the file `fd` (opened with O_APPEND; `size` bytes of
    whole lines long) and fsync it, or leave the file as it was: a partial line (ENOSPC
    half-way) would spoil the next one, so it is cut off (shrinking a file needs no
    space)."""
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def fsync_directory(directory: Path) -> None:
    """Make a file created or removed in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
