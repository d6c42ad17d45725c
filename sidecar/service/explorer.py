"""What the DLQ explorer dashboard reads from PostgreSQL besides the records: the policy
its views mask with (0010_dlq_explorer.sql: the kwargs keys of `dlq.explorer.redact_kwargs`,
args only with `show_args`) and the last schedule analysis (0011_schedule_explorer.sql).
PostgreSQL only; the embedded store has no explorer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import StoreRefused
from ..policy.model import DlqExplorer
from .policies import Policies
from .schedules import Schedules

if TYPE_CHECKING:
    from ..store.sqlstore import SqlStore

log = logging.getLogger("sidecar.explorer")


class ExplorerSync:
    """Writes the policy's `dlq.explorer` and the last schedule analysis when they differ
    from what this sidecar last wrote: at start-up, after a reload or an analysis, and
    again on each poll while PostgreSQL does not answer. Sidecars sharing a database should
    share a policy and schedules; the last one to write wins."""

    def __init__(self, policies: Policies, schedules: Schedules, store: SqlStore) -> None:
        self.policies = policies
        self.schedules = schedules
        self.store = store
        self._written: DlqExplorer | None = None
        self._analysis: dict[str, Any] | None = None

    async def sync(self) -> None:
        """Raises StoreUnavailable when PostgreSQL does not answer (the next poll tries
        again)."""
        wanted = self.policies.current.dlq_explorer
        if wanted != self._written:
            await self.store.sync_explorer(wanted.redact_kwargs, wanted.show_args)
            self._written = wanted
        analysis = self.schedules.last
        if analysis is not None and analysis is not self._analysis:
            try:
                await self.store.save_schedule_analysis(analysis)
            except StoreRefused as exc:  # data it will never take: not again each poll
                log.warning("schedule analysis not stored for the explorer: %s", exc)
            self._analysis = analysis
