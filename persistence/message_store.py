"""Message store: every sequenced business message of every session, for re-login replay.

The outbound encoder (``Outbound.retain``) encodes each session's messages whether it is
connected or not, in the canonical SOFH framing; once per pump the engine appends each session's
new messages here as one frame of a SegmentLog (prefix ``messages``; key = seqNum of the first
message, tag = session id, count = messages in the frame).  A session that logs in with
nextExpectedSeqNum N gets messages N .. next-1 read back from here (SoupBinTCP semantics).

Messages are a deterministic function of the journal, so a restart that replays the journal
regenerates them: ``append`` skips every message whose seqNum the store already holds, and
whatever a crash cut from the store's tail is written again.  A gap (messages after the
stored end are missing) is a bug and raises.

Retention: everything is kept (a session's whole history is what a SoupBinTCP server offers);
segments are never removed by the gateway.  Disk use is about 80 bytes per message.
"""
from __future__ import annotations

import bisect
from array import array

from persistence.files import SyncPlan
from persistence.segment_log import Buffer, SegmentLog
from protocol.codec import sofh_scan

#: default segment size (bytes)
SEGMENT_BYTES = 64 << 20
PREFIX = "messages"


class _SessionIndex:
    """Where a session's messages are: per stored frame its first seqNum, segment and offset."""

    __slots__ = ("firsts", "segs", "offs", "end")

    def __init__(self) -> None:
        self.firsts = array("Q")
        self.segs = array("I")
        self.offs = array("Q")
        self.end = 0            # seqNum of the last message stored (0: none)

    def add(self, first: int, count: int, seg: int, off: int) -> None:
        self.firsts.append(first)
        self.segs.append(seg)
        self.offs.append(off)
        self.end = first + count - 1


class MessageStore:
    """Per-session store of SOFH-framed business messages over a SegmentLog in ``directory``.

    ``open()`` before use (rebuilds the in-memory index from the segments; raises
    persistence.segment_log.SegmentLogCorrupt for damage before the tail, ValueError when a
    session's stored seqNums are not consecutive).  Not thread-safe (event-loop thread).
    """

    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.log = SegmentLog(directory, PREFIX, segment_bytes)
        self._index: dict[int, _SessionIndex] = {}
        self.messages_stored = 0        # appended since open (regenerated ones skipped)
        self.messages_skipped = 0       # offered again by a journal replay, already stored

    @property
    def directory(self) -> str:
        return self.log.directory

    @property
    def total_bytes(self) -> int:
        """Bytes on disk (all segments, frame headers included)."""
        return self.log.total_bytes

    def open(self) -> None:
        """Open the segment log and index every stored frame."""
        index = self._index
        for f in self.log.open():
            ix = index.get(f.tag)
            if ix is None:
                ix = index[f.tag] = _SessionIndex()
            if f.key != ix.end + 1 or f.count == 0:
                path = self.log.path(f.segment_no)
                self.log.close()
                index.clear()
                raise ValueError(f"message store {path} offset {f.offset}: session {f.tag} "
                                 f"messages {f.key}..{f.key + f.count - 1} do not follow "
                                 f"{ix.end}")
            ix.add(f.key, f.count, f.segment_no, f.offset)

    def close(self) -> None:
        """Sync and close (``open`` again to reuse)."""
        self.log.close()
        self._index.clear()

    def sync(self) -> None:
        """Make every append so far survive a power loss (fdatasync)."""
        self.log.sync()

    def sync_plan(self) -> SyncPlan:
        """``sync`` for another thread (SegmentLog.sync_plan)."""
        return self.log.sync_plan()

    def sessions(self) -> list[int]:
        """Session ids with stored messages, ascending."""
        return sorted(self._index)

    def end_seq(self, sid: int) -> int:
        """seqNum of the session's last stored message (0: none)."""
        ix = self._index.get(sid)
        return ix.end if ix is not None else 0

    def append(self, sid: int, first_seq: int, data: Buffer, count: int | None = None) -> int:
        """Store the session's messages ``first_seq`` .. first_seq + count - 1 (``data``: whole
        SOFH frames back to back; count: how many, counted from the frames when None).  Those
        with seqNum <= ``end_seq(sid)`` are skipped (a journal replay regenerating them).
        Returns the number of messages written.  Raises ValueError for a gap (first_seq >
        end_seq + 1) or bad framing, OSError when the disk write fails."""
        if count is None:
            count = sofh_scan(data)[0]
        if count <= 0:
            return 0
        ix = self._index.get(sid)
        end = ix.end if ix is not None else 0
        last = first_seq + count - 1
        if last <= end:
            self.messages_skipped += count
            return 0
        if first_seq > end + 1:
            raise ValueError(f"message store: session {sid} messages {first_seq}..{last} leave a "
                             f"gap after {end}")
        skip = end + 1 - first_seq
        if skip:
            _, off = sofh_scan(data, skip)
            data = memoryview(data)[off:]
            self.messages_skipped += skip
            first_seq, count = end + 1, count - skip
        seg, off = self.log.append(first_seq, sid, count, data)
        if ix is None:
            ix = self._index[sid] = _SessionIndex()
        ix.add(first_seq, count, seg, off)
        self.messages_stored += count
        return count

    def read(self, sid: int, from_seq: int, max_bytes: int = 0) -> tuple[bytes, int]:
        """The session's stored messages from ``from_seq`` on, SOFH-framed back to back, and the
        seqNum after the last one returned: (data, next_seq).  max_bytes > 0 stops after the
        stored frame that reaches it (so data may exceed it by one frame); 0 reads to the end.
        (b"", from_seq) when nothing is stored from there.  Raises ValueError for from_seq < 1,
        SegmentLogCorrupt when the bytes on disk no longer check out."""
        if from_seq < 1:
            raise ValueError("sequence numbers start at 1")
        ix = self._index.get(sid)
        if ix is None or from_seq > ix.end:
            return b"", from_seq
        i = bisect.bisect_right(ix.firsts, from_seq) - 1
        parts: list[bytes | memoryview] = []
        size = 0
        seq = from_seq
        n = len(ix.firsts)
        while i < n:
            info, payload = self.log.read(ix.segs[i], ix.offs[i])
            chunk: bytes | memoryview = payload
            if seq > info.key:
                _, off = sofh_scan(payload, seq - info.key)
                chunk = memoryview(payload)[off:]
            parts.append(chunk)
            size += len(chunk)
            seq = info.key + info.count
            i += 1
            if max_bytes and size >= max_bytes:
                break
        return b"".join(parts), seq
