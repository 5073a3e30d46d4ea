"""The event log: every order event and fill, numbered, on disk, for the PostgreSQL sink.

The outbound encoder numbers each order event (EVT_ACCEPTED, EVT_REJECTED, EVT_FILL,
EVT_CANCELED, EVT_REPLACED, EVT_TRIGGERED) with a global event number from 1
(``Outbound.take_events``); the engine appends the raw 128-byte Event records
(matching/records.pxd) here once per pump.  The sink (persistence/pg_sink.py) reads them back
from its checkpoint, so it needs no queue in memory and loses nothing when PostgreSQL is away or
the process dies.

Storage: a persistence.segment_log.SegmentLog with prefix ``events``; one frame per append of
at most FRAME_RECORDS records: key = number of its first event, tag = 0, count = records,
payload = the records.  Event numbers in the log are contiguous from ``start_no`` to ``end_no``.

Events are a deterministic function of the journal, so a journal replay (after a crash, from
the latest snapshot) regenerates events the log may already hold: ``append`` skips every event
numbered <= ``end_no`` and never writes one twice.  What a crash lost from the log (appends are
in the OS when they return; ``sync`` before a snapshot is committed makes them survive a power
loss) the replay writes again.

Thread safety: ``read`` may run on a worker thread while the event-loop thread appends; it reads
through its own file descriptor and a plan made under a lock.  Everything else belongs to the
event-loop thread.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from array import array
from dataclasses import dataclass, field

from persistence.files import SyncPlan
from persistence.segment_log import HEADER_SIZE, SegmentLog, SegmentLogCorrupt, frame_at

log = logging.getLogger(__name__)

EVENT_SIZE = 128
#: most records per frame: keeps a single read bounded (a replay chunk can hold 100 k events)
FRAME_RECORDS = 4096
PREFIX = "events"


class EventLogGap(ValueError):
    """An append would leave event numbers missing (a bug: events are contiguous)."""


@dataclass(slots=True)
class _Segment:
    no: int
    first_no: int                  # first event of the segment
    last_no: int                   # last event of the segment
    size: int                      # bytes of whole frames
    firsts: array[int] = field(default_factory=lambda: array("Q"))    # first event of each frame
    offsets: array[int] = field(default_factory=lambda: array("Q"))   # header offset of each frame


class EventLog:
    """Numbered 128-byte Event records in segment files ``<directory>/events-NNNNNNNN.log``.

    directory: created if missing.  segment_bytes: roll size of a segment file.  Call ``open()``
    first; raises SegmentLogCorrupt (file and offset) for damage a crash cannot explain, or for
    frames whose event numbers are not contiguous.
    """

    def __init__(self, directory: str, segment_bytes: int = 64 * 2**20) -> None:
        self._log = SegmentLog(directory, PREFIX, segment_bytes)
        self._segs: list[_Segment] = []
        self._firsts: list[int] = []          # _segs[i].first_no, for bisect
        self._end = 0                         # last event number held (0: none ever)
        self._start = 1                       # first event number held (end + 1 when empty)
        self._lock = threading.Lock()

    # -- properties ------------------------------------------------------------------------------
    @property
    def directory(self) -> str:
        return self._log.directory

    @property
    def end_no(self) -> int:
        """Number of the last event held (0 for a log that never held one)."""
        return self._end

    @property
    def start_no(self) -> int:
        """Number of the first event held (``end_no + 1`` when it holds none)."""
        return self._start

    @property
    def total_bytes(self) -> int:
        """Bytes of the segment files present."""
        return self._log.total_bytes

    def segments(self) -> list[int]:
        """Numbers of the segment files present, ascending."""
        return self._log.segments()

    # -- open / append ---------------------------------------------------------------------------
    def open(self) -> None:
        """Scan the segments (a torn tail is cut with a warning) and index the frames."""
        expect = 0
        for fi in self._log.open():
            path = self._log.path(fi.segment_no)
            if fi.count == 0 or fi.payload_len != fi.count * EVENT_SIZE:
                self._log.close()
                raise SegmentLogCorrupt(path, fi.offset, f"frame of {fi.count} events holds "
                                        f"{fi.payload_len} bytes")
            if expect and fi.key != expect:
                self._log.close()
                raise SegmentLogCorrupt(path, fi.offset, f"frame starts at event {fi.key}, "
                                        f"expected {expect}")
            self._index(fi.segment_no, fi.offset, fi.key, fi.count)
            expect = fi.key + fi.count
        if self._segs:
            self._start, self._end = self._segs[0].first_no, self._segs[-1].last_no
        log.info("event log %s: events %d..%d in %d segments", self.directory, self._start,
                 self._end, len(self._log.segments()))

    def _index(self, seg_no: int, offset: int, first: int, count: int) -> None:
        size = offset + HEADER_SIZE + count * EVENT_SIZE
        if not self._segs or self._segs[-1].no != seg_no:
            self._segs.append(_Segment(seg_no, first, first + count - 1, size))
            self._firsts.append(first)
        s = self._segs[-1]
        s.firsts.append(first)
        s.offsets.append(offset)
        s.last_no = first + count - 1
        s.size = size

    def append(self, first_no: int, data: bytes | bytearray | memoryview) -> int:
        """Append the records ``data`` (n * 128 bytes) numbered ``first_no`` .. first_no+n-1,
        leaving out those numbered <= ``end_no``.  Returns how many were written.  An empty log
        takes any first number (its events before that were never logged or were removed).
        Raises EventLogGap when first_no > end_no + 1 in a log that holds events, ValueError for
        a length that is not a whole number of records, OSError from the write (nothing of the
        frame being written is kept then)."""
        mv = memoryview(data).cast("B")
        n = len(mv) // EVENT_SIZE
        if len(mv) != n * EVENT_SIZE:
            raise ValueError(f"{len(mv)} bytes is not a whole number of {EVENT_SIZE}-byte events")
        if n == 0:
            return 0
        if self._end and first_no > self._end + 1:
            raise EventLogGap(f"event log {self.directory}: events {self._end + 1}..{first_no - 1} "
                              "missing before an append")
        skip = max(0, self._end + 1 - first_no) if self._end else 0
        if skip >= n:
            return 0
        written = 0
        no = first_no + skip
        for pos in range(skip, n, FRAME_RECORDS):
            k = min(FRAME_RECORDS, n - pos)
            seg, off = self._log.append(no, 0, k, mv[pos * EVENT_SIZE:(pos + k) * EVENT_SIZE])
            with self._lock:
                if not self._end:
                    self._start = no
                self._index(seg, off, no, k)
                self._end = no + k - 1
            no += k
            written += k
        return written

    def sync(self) -> None:
        """Make every append so far survive a power loss (fdatasync)."""
        self._log.sync()

    def sync_plan(self) -> SyncPlan:
        """``sync`` for another thread (SegmentLog.sync_plan)."""
        return self._log.sync_plan()

    # -- read --------------------------------------------------------------------------------------
    def read(self, from_no: int, max_records: int) -> tuple[int, bytes]:
        """Up to ``max_records`` records from event ``from_no`` on (fewer at the end of a segment
        file or of the log): ``(number of the first, records)``.  from_no below ``start_no`` reads
        from ``start_no`` (those events were removed or never logged; the returned number says
        so); past ``end_no`` gives ``(from_no, b"")``.  Safe on a worker thread.  Raises
        SegmentLogCorrupt if the bytes on disk no longer match their CRC, OSError."""
        if max_records <= 0:
            raise ValueError("max_records must be positive")
        with self._lock:
            if from_no > self._end or not self._segs:
                return from_no, b""
            from_no = max(from_no, self._start)
            s = self._segs[bisect.bisect_right(self._firsts, from_no) - 1]
            i = bisect.bisect_right(s.firsts, from_no) - 1
            j = bisect.bisect_right(s.firsts, from_no + max_records - 1) - 1
            start_off = s.offsets[i]
            end_off = s.offsets[j + 1] if j + 1 < len(s.offsets) else s.size
            frame_first = s.firsts[i]
            path = self._log.path(s.no)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            buf = os.pread(fd, end_off - start_off, start_off)
        finally:
            os.close(fd)
        mv = memoryview(buf)
        parts: list[memoryview] = []
        pos = 0
        no = frame_first
        while pos < len(mv):
            fields = frame_at(mv, pos, len(mv))
            if fields is None:
                raise SegmentLogCorrupt(path, start_off + pos, "short read or CRC mismatch on read")
            plen, _crc, key, _tag, count = fields
            if key != no or plen != count * EVENT_SIZE:
                raise SegmentLogCorrupt(path, start_off + pos, "frame does not match the index")
            end = pos + HEADER_SIZE + plen
            parts.append(mv[pos + HEADER_SIZE:end])
            no += count
            pos = end
        data = b"".join(parts)
        lo = (from_no - frame_first) * EVENT_SIZE
        return from_no, data[lo:lo + max_records * EVENT_SIZE]

    # -- retention ---------------------------------------------------------------------------------
    def remove_through(self, event_no: int) -> list[int]:
        """Delete the segment files whose events are all numbered <= ``event_no`` (never the one
        appended to).  Returns the segment numbers removed."""
        with self._lock:
            gone = set(self._log.remove_segments(
                lambda no: any(s.no == no and s.last_no <= event_no for s in self._segs)))
            if gone:
                self._segs = [s for s in self._segs if s.no not in gone]
                self._firsts = [s.first_no for s in self._segs]
                self._start = self._segs[0].first_no if self._segs else self._end + 1
        return sorted(gone)

    def close(self) -> None:
        """Sync and close the files."""
        self._log.close()
