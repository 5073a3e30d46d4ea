"""Why a start refuses to continue: the snapshot and the journal do not fit, or the journal is
too old to trust (raised by ``Engine.recover``, handled by ``hftgw serve`` and ``hftgw repair``)."""
from __future__ import annotations


class SnapshotMismatch(ValueError):
    """The newest snapshot and the journal do not fit together (records between the snapshot
    and the journal's first record are missing, or the journal ends before the snapshot)."""


class JournalBehindSnapshot(SnapshotMismatch):
    """The journal ends before the newest snapshot: the snapshot holds the whole state, the
    journal lost records it had when the snapshot was taken (``hftgw repair`` moves the journal
    aside and the start continues from the snapshot)."""

    def __init__(self, message: str, snapshot_seq: int, journal_last_seq: int) -> None:
        super().__init__(message)
        self.snapshot_seq, self.journal_last_seq = snapshot_seq, journal_last_seq


class LegacyJournalError(ValueError):
    """The journal predates journaled symbol definitions, so its symbol ids cannot be trusted."""
