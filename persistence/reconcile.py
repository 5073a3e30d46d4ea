"""The logs derived from the journal, reconciled with it after a start.

The message store and the event log hold what the journal's commands produced (session
messages, numbered order events).  A journal replay regenerates whatever they lost, but it
cannot take back what they hold beyond the journal: that happens when the journal lost
acknowledged records the other logs kept (a power loss under ``durability = "os"``: the files
lose their unsynced tails independently) or when an older journal was restored.  Going on then
would reissue session sequence numbers and event numbers with other content, so the start
refuses (``JournalBehind``) and ``hftgw repair`` (gateway/engine/repair.py) moves the excess aside:

* ``find_divergence`` compares, after the replay, each session's stored end with the seq the
  journal gave it and the event log's end with the journal's event counter;
* ``cut_message_store`` / ``cut_event_log`` move every frame from the first one that goes past
  the journal into a quarantine folder (``lost-<UTC time>``), nothing deleted.  Frames never
  straddle a snapshot (both logs are appended once per pump, snapshots are taken between pumps
  and commit after syncing them), so what the cut takes that the journal still explains is
  written again by the next start's replay.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persistence import event_log as _event_log
from persistence import message_store as _message_store
from persistence.segment_log import SegmentLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from persistence.event_log import EventLog
    from persistence.message_store import MessageStore


@dataclass(slots=True)
class Divergence:
    """What the derived logs hold beyond the journal.

    sessions: session id -> (seqNum of its last stored message, seqNum of the last one the
    journal's replay produced).  events: (event log's last event number, journal's last), or
    None when the event log is not ahead.
    """

    sessions: dict[int, tuple[int, int]] = field(default_factory=dict)
    events: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.sessions) or self.events is not None

    def describe(self) -> str:
        """One line: how many messages of how many sessions, and how many events, are ahead."""
        parts = []
        if self.sessions:
            extra = sum(s - j for s, j in self.sessions.values())
            worst = max(self.sessions.items(), key=lambda kv: kv[1][0] - kv[1][1])
            parts.append(f"the message store holds {extra} messages of {len(self.sessions)} "
                         f"sessions beyond it (e.g. session {worst[0]}: stored up to seq "
                         f"{worst[1][0]}, journal up to {worst[1][1]})")
        if self.events is not None:
            parts.append(f"the event log holds events {self.events[1] + 1}..{self.events[0]} "
                         "beyond it")
        return "; ".join(parts)


class JournalBehind(RuntimeError):
    """The journal ends before what the message store or event log hold: acknowledged commands
    are missing from it.  ``divergence`` says what; the message names the folders and the
    repair (``hftgw repair``, docs/durability.md)."""

    def __init__(self, journal_dir: str, store_dir: str, events_dir: str | None,
                 divergence: Divergence) -> None:
        self.journal_dir, self.store_dir, self.events_dir = journal_dir, store_dir, events_dir
        self.divergence = divergence
        where = f"message store {store_dir}" + (f", event log {events_dir}" if events_dir else "")
        super().__init__(
            f"the journal in {journal_dir} ends before the logs derived from it ({where}): "
            f"{divergence.describe()}; acknowledged commands were lost from the journal (a power "
            "loss under durability=os, or an older journal restored). Run `hftgw repair` to see "
            "what would be moved aside, `hftgw repair --apply` to do it")


def find_divergence(store: MessageStore, events: EventLog | None,
                    journal_end_seq: Callable[[int], int], journal_event_no: int) -> Divergence:
    """Compare the open store and event log with the state the journal replay produced.
    journal_end_seq(sid): seqNum of the session's last message after the replay (0: none).
    journal_event_no: the last event number the replay gave."""
    div = Divergence()
    for sid in store.sessions():
        end, jend = store.end_seq(sid), journal_end_seq(sid)
        if end > jend:
            div.sessions[sid] = (end, jend)
    if events is not None and events.end_no > journal_event_no:
        div.events = (events.end_no, journal_event_no)
    return div


def quarantine_dir(base: str) -> str:
    """A new folder ``<base>/lost-YYYYmmddTHHMMSSZ`` (a suffix when that exists already)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(base, f"lost-{stamp}")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(base, f"lost-{stamp}-{n}")
    os.makedirs(path)
    return path


@dataclass(slots=True)
class Cut:
    """A cut made in a segment log: where, how many frames and bytes went to ``dest``."""

    path: str
    offset: int
    frames: int
    bytes: int
    dest: str


#: segment size of a log opened only to be cut: it is never appended to, so never rolled
_CUT_ONLY = 1 << 30


def _cut_where(log: SegmentLog, beyond: Callable[[int, int, int], bool], dest: str) -> Cut | None:
    cut: tuple[int, int] | None = None
    frames = 0
    for f in log.open():
        if cut is None and beyond(f.key, f.tag, f.count):
            cut = (f.segment_no, f.offset)
        if cut is not None:
            frames += 1
    if cut is None:
        log.close()
        return None
    path = log.path(cut[0])
    moved = log.cut_from(cut[0], cut[1], dest)
    return Cut(path, cut[1], frames, moved, dest)


def cut_message_store(directory: str, journal_end_seq: Callable[[int], int], dest: str
                      ) -> Cut | None:
    """Move the store's frames from the first one holding a message past the journal's end of
    its session into ``dest``; None when no frame does (nothing changed).  The store must not
    be open elsewhere (BlockingIOError)."""
    log = SegmentLog(directory, _message_store.PREFIX, _CUT_ONLY)
    return _cut_where(log, lambda first, sid, n: first + n - 1 > journal_end_seq(sid), dest)


def cut_event_log(directory: str, journal_event_no: int, dest: str) -> Cut | None:
    """Move the event log's frames from the first one holding an event numbered past
    ``journal_event_no`` into ``dest``; None when no frame does."""
    log = SegmentLog(directory, _event_log.PREFIX, _CUT_ONLY)
    return _cut_where(log, lambda first, _tag, n: first + n - 1 > journal_event_no, dest)
