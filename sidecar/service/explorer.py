"""The DLQ explorer's policy in PostgreSQL: its views (0010_dlq_explorer.sql) mask the
kwargs keys of `dlq.explorer.redact_kwargs` and show args only with `show_args`, reading
both from tables this writes. PostgreSQL only; the embedded store has no explorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..policy.model import DlqExplorer
from .policies import Policies

if TYPE_CHECKING:
    from ..store.sqlstore import SqlStore


class ExplorerSync:
    """Writes the policy's `dlq.explorer` when it differs from what this sidecar last
    wrote: at start-up, after a reload that changes it, and again on each poll while
    PostgreSQL does not answer. Sidecars sharing a database should share a policy; the last
    one to write wins."""

    def __init__(self, policies: Policies, store: SqlStore) -> None:
        self.policies = policies
        self.store = store
        self._written: DlqExplorer | None = None

    async def sync(self) -> None:
        """Raises StoreUnavailable when PostgreSQL does not answer (the next poll tries
        again)."""
        wanted = self.policies.current.dlq_explorer
        if wanted == self._written:
            return
        await self.store.sync_explorer(wanted.redact_kwargs, wanted.show_args)
        self._written = wanted
