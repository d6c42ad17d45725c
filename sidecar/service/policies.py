"""The policy in force: loaded from its file, swapped atomically by a reload."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from pathlib import Path

from ..metrics import Metrics
from ..policy import Policy, PolicyError, load_policy
from ..records import AuditEntry
from ..store.ports import DlqStore

log = logging.getLogger("task_sidecar")


class Policies:
    """The current policy; a reload with a bad file keeps the old one."""

    def __init__(self, path: str | Path, metrics: Metrics) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self.current: Policy = load_policy(self.path)
        self._stamp = self._file_stamp()
        self._precreate()
        self._reloading = asyncio.Lock()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _precreate(self) -> None:
        policy = self.current
        self.metrics.precreate_policy(list(policy.failure_types), list(policy.priority.tier_sla))

    async def reload(self) -> PolicyError | None:
        """Load the file again; on error keep the current policy and return the error.

        Parsing and compiling run in a thread: a large policy takes seconds, and hooks must
        keep being answered meanwhile. Reloads run one at a time, so the last one wins.
        """
        async with self._reloading:
            self._stamp = self._file_stamp()
            try:
                self.current = await asyncio.to_thread(_load_without_collections, self.path)
            except PolicyError as exc:
                self.metrics.record_policy_reload(ok=False)
                log.error("policy reload refused, keeping the current policy: %s", exc)
                return exc
        self._precreate()
        self.metrics.record_policy_reload(ok=True)
        log.info("policy reloaded from %s", self.path)
        return None

    def changed(self) -> bool:
        return self._file_stamp() != self._stamp

    async def reload_by(self, actor: str, audit: DlqStore) -> list[str]:
        """An operator's reload, written to the audit log: the problems, if refused."""
        error = await self.reload()
        await audit.audit(
            AuditEntry(
                at=time.time(), actor=actor, action="policy_reload", details={"ok": error is None}
            )
        )
        return [] if error is None else [str(p) for p in error.problems]

    def document(self) -> dict[str, object]:
        """The effective policy (defaults filled in) as plain JSON values."""
        return _plain(self.current)  # type: ignore[return-value]


def _load_without_collections(path: Path) -> Policy:
    """load_policy with the cycle collector paused. Loading a big file allocates hundreds
    of thousands of nodes, which set off full collections of the whole heap, each holding
    the GIL (and so the event loop) for up to 150 ms; the nodes hold no cycles, so
    reference counting frees them. Reloads run one at a time (the lock in `reload`)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return load_policy(path)
    finally:
        if paused:
            gc.enable()


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    return value
