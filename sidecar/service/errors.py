"""What a service refuses, for the HTTP layer to turn into problem documents."""

from __future__ import annotations

from ..records import DlqRecord


class NotFound(Exception):
    pass


class InvalidInput(Exception):
    """A value the stores could not keep; `path` names it as the problem documents do."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")


class Ambiguous(Exception):
    """An id prefix that matches more than one record."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        self.candidates = candidates
        super().__init__(f"{prefix!r} matches {len(candidates)} records: give more of it")


class Conflict(Exception):
    """The record is not in a state the action applies to."""

    def __init__(self, record: DlqRecord, action: str) -> None:
        self.record = record
        super().__init__(f"record {record.id} is {record.status}; cannot {action} it")


class NotHolder(Exception):
    """`complete`/`release` by a caller that does not hold the claim (any more)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{key!r} is not held by this owner: it expired and was taken over, was ended "
            "already, or the owner token is wrong"
        )
