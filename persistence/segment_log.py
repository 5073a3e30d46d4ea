"""Generic append-only segmented log of CRC32C-framed records (message store, event log).

Files ``<directory>/<prefix>-NNNNNNNN.log`` (8 decimal digits, first segment 1).  A segment is
closed ("rolled") when the next frame would take it past ``segment_bytes``; a frame larger than
``segment_bytes`` gets a segment of its own.  One frame, little-endian::

    [u32 payload_len][u32 crc32c(header bytes 8..24 + payload)][u64 key][u32 tag][u32 count]
    [payload_len bytes of payload]

``key``, ``tag`` and ``count`` mean what the user says (the message store: key = first sequence
number, tag = session id, count = messages in the payload).  CRC32C is persistence.journal.crc32c
(Castagnoli, RFC 3720 §B.4).

Callers append once per pump (one ``writev`` per frame), so plain Python is fast enough here.
Durability: an append is in the OS when ``append`` returns (survives a process crash);
``sync()`` makes every append so far survive a power loss.

Damage found by ``open()``: a torn or corrupt tail of the last segment (nothing valid after the
damage) is cut off with a logging.warning naming the file and offset; damage followed by a valid
frame, or damage in any earlier segment, raises SegmentLogCorrupt(path, offset) and leaves the
files untouched.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from persistence.files import SyncPlan, dup_all, forget_synced, fsync_dir, truncate_durably
from persistence.journal import crc32c

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview

HEADER = struct.Struct("<IIQII")
#: bytes of a frame header
HEADER_SIZE = HEADER.size
_TAIL = struct.Struct("<QII")
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
# writev accepts at most IOV_MAX buffers per call
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class SegmentLogCorrupt(Exception):
    """A segment is damaged where a crash cannot explain it: ``path`` and byte ``offset``."""

    def __init__(self, path: str, offset: int, reason: str = "bad frame followed by valid frames"
                 ) -> None:
        super().__init__(path, offset)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: corrupt at byte offset {self.offset} ({self.reason})"


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """Where a frame is and its header: segment number, byte offset of its header in the segment,
    the user's key/tag/count, and payload length in bytes."""

    segment_no: int
    offset: int
    key: int
    tag: int
    count: int
    payload_len: int


def frame_at(mv: memoryview, off: int, size: int) -> tuple[int, int, int, int, int] | None:
    """The header fields of a valid frame at ``off`` of ``mv[:size]``, or None."""
    if off + HEADER_SIZE > size:
        return None
    plen, crc, key, tag, count = HEADER.unpack_from(mv, off)
    end = off + HEADER_SIZE + plen
    if end > size:
        return None
    if crc32c(mv[off + HEADER_SIZE:end], crc32c(mv[off + 8:off + HEADER_SIZE])) != crc:
        return None
    return plen, crc, key, tag, count


class SegmentLog:
    """An append-only log in ``directory`` of segments ``<prefix>-NNNNNNNN.log``.

    Use: ``for info in log.open(): ...`` (the scan must run to its end before ``append``),
    then ``append`` / ``read`` / ``sync`` / ``remove_*``, then ``close()``.  One process at a
    time: ``open()`` takes an exclusive flock on ``<prefix>.lock`` (BlockingIOError if held).
    """

    def __init__(self, directory: str, prefix: str, segment_bytes: int) -> None:
        if segment_bytes < HEADER_SIZE:
            raise ValueError(f"segment_bytes must be >= {HEADER_SIZE}, got {segment_bytes}")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", prefix):
            raise ValueError(f"bad segment prefix {prefix!r}")
        self._directory = directory
        self._prefix = prefix
        self._segment_bytes = segment_bytes
        self._name_re = re.compile(re.escape(prefix) + r"-(\d{8})\.log")
        self._lock_fd = -1
        self._fd = -1                    # active segment, O_APPEND
        self._active = 0                 # active segment number (0 before open)
        self._size = 0                   # bytes of the active segment
        self._ready = False              # the open() scan ran to its end
        self._sizes: dict[int, int] = {}  # segment number -> bytes (closed and active)
        self._read_fds: dict[int, int] = {}
        # (segment number, fd) of segments closed since the last sync
        self._unsynced: list[tuple[int, int]] = []
        self._dir_dirty = False          # a segment file was created since the last sync
        self._active_dirty = False

    # -- properties -----------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def segment_bytes(self) -> int:
        return self._segment_bytes

    @property
    def active_segment(self) -> int:
        """Number of the segment appends go to (0 before ``open``)."""
        return self._active

    @property
    def total_bytes(self) -> int:
        """Bytes in all segments still present."""
        return sum(self._sizes.values())

    @property
    def is_open(self) -> bool:
        return self._lock_fd >= 0

    def path(self, segment_no: int) -> str:
        """File path of segment ``segment_no``."""
        return os.path.join(self._directory, f"{self._prefix}-{segment_no:08d}.log")

    def segments(self) -> list[int]:
        """Numbers of the segments present, ascending (the active one last)."""
        return sorted(self._sizes)

    def segment_size(self, segment_no: int) -> int:
        """Bytes of segment ``segment_no``; KeyError if it is not present."""
        return self._sizes[segment_no]

    # -- open / scan ----------------------------------------------------------------------------

    def open(self) -> Iterator[FrameInfo]:
        """Lock the log and return an iterator over every valid frame of every segment, in
        order.  Run it to its end before appending (damage handling: see the module doc; a cut
        tail happens when the iterator reaches it).  Raises SegmentLogCorrupt, OSError,
        BlockingIOError (another process holds the log)."""
        if self._lock_fd >= 0:
            raise RuntimeError(f"segment log {self._directory}/{self._prefix} already open")
        os.makedirs(self._directory, exist_ok=True)
        lock_path = os.path.join(self._directory, self._prefix + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(errno.EWOULDBLOCK, "segment log is open in another process or "
                                  "object", lock_path) from None
        self._lock_fd = fd
        return self._scan()

    def _scan(self) -> Iterator[FrameInfo]:
        try:
            numbers = sorted(int(m.group(1)) for name in os.listdir(self._directory)
                             if (m := self._name_re.fullmatch(name)))
            for i, no in enumerate(numbers):
                yield from self._scan_segment(no, last=i == len(numbers) - 1)
            if not numbers:
                self._create_segment(1)
            else:
                self._open_active(numbers[-1])
            self._ready = True
        except BaseException:
            self._release()
            raise

    def _scan_segment(self, no: int, last: bool) -> Iterator[FrameInfo]:
        path = self.path(no)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            off = 0
            damaged = False
            if size:
                mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
                mv = memoryview(mm)
                try:
                    while off < size:
                        h = frame_at(mv, off, size)
                        if h is None:
                            damaged = True
                            break
                        yield FrameInfo(no, off, h[2], h[3], h[4], h[0])
                        off += HEADER_SIZE + h[0]
                    if damaged:
                        if not last:
                            raise SegmentLogCorrupt(path, off, "damaged frame in a closed segment")
                        for o in range(off + 1, size - HEADER_SIZE + 1):
                            # cheap length check first: random bytes rarely pass it
                            if (o + HEADER_SIZE + int.from_bytes(mv[o:o + 4], "little") <= size
                                    and frame_at(mv, o, size) is not None):
                                raise SegmentLogCorrupt(path, off)
                finally:
                    mv.release()
                    mm.close()
            self._sizes[no] = off
        finally:
            os.close(fd)
        if damaged:
            log.warning("segment log %s: torn or corrupt tail at byte offset %d (%d bytes after the "
                        "last good frame), truncating there", path, off, size - off)
            truncate_durably(path, off)

    def _open_active(self, no: int) -> None:
        self._fd = os.open(self.path(no), os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        self._active = no
        self._size = self._sizes[no]

    def _create_segment(self, no: int) -> None:
        fd = os.open(self.path(no), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o644)
        self._fd = fd
        self._active = no
        self._size = 0
        self._sizes[no] = 0
        self._dir_dirty = True

    # -- append / read --------------------------------------------------------------------------

    def append(self, key: int, tag: int, count: int, payload: Buffer | Sequence[Buffer]
               ) -> tuple[int, int]:
        """Append one frame (payload: one buffer or a list of buffers written back to back);
        returns (segment_no, offset) of its header.  key: u64, tag and count: u32 (ValueError
        outside).  On a write error (OSError, e.g. ENOSPC) the segment is cut back to its size
        before the call, so the log stays valid."""
        if not self._ready:
            raise RuntimeError("segment log not open (run the open() scan to its end first)")
        if not (0 <= key <= _U64 and 0 <= tag <= _U32 and 0 <= count <= _U32):
            raise ValueError(f"frame header out of range: key={key} tag={tag} count={count}")
        bufs: list[Buffer] = ([payload] if isinstance(payload, bytes | bytearray | memoryview)
                              else list(payload))
        tail = _TAIL.pack(key, tag, count)
        crc = crc32c(tail)
        plen = 0
        for b in bufs:
            crc = crc32c(b, crc)
            plen += memoryview(b).nbytes
        if plen > _U32:
            raise ValueError(f"payload of {plen} bytes is too large for one frame")
        frame_len = HEADER_SIZE + plen
        if self._size > 0 and self._size + frame_len > self._segment_bytes:
            self._roll()
        header = struct.pack("<II", plen, crc) + tail
        start = self._size
        try:
            self._write_all([header, *bufs], frame_len)
        except BaseException:
            # a partial frame would read as damage in the middle once more frames follow
            os.ftruncate(self._fd, start)
            raise
        self._size = start + frame_len
        self._sizes[self._active] = self._size
        self._active_dirty = True
        return self._active, start

    def _write_all(self, bufs: list[Buffer], total: int) -> None:
        views = [memoryview(b).cast("B") for b in bufs]
        i = 0
        while total:
            batch = views[i:i + _IOV_MAX]
            try:
                n = os.writev(self._fd, batch)
            except InterruptedError:
                continue
            total -= n
            # skip the buffers written whole, keep the rest of a partly written one
            while n and i < len(views):
                ln = views[i].nbytes
                if n >= ln:
                    n -= ln
                    i += 1
                else:
                    views[i] = views[i][n:]
                    n = 0
            while i < len(views) and views[i].nbytes == 0:
                i += 1

    def _roll(self) -> None:
        self._unsynced.append((self._active, self._fd))
        self._fd = -1
        self._create_segment(self._active + 1)

    def read(self, segment_no: int, offset: int) -> tuple[FrameInfo, bytes]:
        """The frame at (segment_no, offset) as returned by ``append``/``open``: its header and
        payload.  Raises SegmentLogCorrupt if the bytes there are not a valid frame, KeyError if
        the segment is not present."""
        size = self._sizes[segment_no]
        fd = self._fd if segment_no == self._active else self._read_fd(segment_no)
        head = os.pread(fd, HEADER_SIZE, offset)
        if len(head) < HEADER_SIZE or offset + HEADER_SIZE > size:
            raise SegmentLogCorrupt(self.path(segment_no), offset, "no frame header there")
        plen, crc, key, tag, count = HEADER.unpack(head)
        payload = os.pread(fd, plen, offset + HEADER_SIZE) if plen else b""
        if len(payload) != plen or crc32c(payload, crc32c(head[8:])) != crc:
            raise SegmentLogCorrupt(self.path(segment_no), offset, "CRC mismatch on read")
        return FrameInfo(segment_no, offset, key, tag, count, plen), payload

    def _read_fd(self, segment_no: int) -> int:
        fd = self._read_fds.get(segment_no)
        if fd is None:
            fd = os.open(self.path(segment_no), os.O_RDONLY | os.O_CLOEXEC)
            self._read_fds[segment_no] = fd
        return fd

    # -- durability / retention -----------------------------------------------------------------

    def sync_plan(self) -> SyncPlan:
        """What ``sync`` would do, for another thread (the segments closed since the last sync
        and the active one, duplicated; the directory if a segment was created).  Its
        ``on_synced`` closes the closed segments it covered.  Raises OSError."""
        covered = list(self._unsynced)
        active = [self._fd] if self._fd >= 0 and self._active_dirty else []
        fds = dup_all([fd for _, fd in covered] + active)
        return SyncPlan(fds, [self._directory] if self._dir_dirty else [],
                        lambda: forget_synced(self._unsynced, covered))

    def sync(self) -> None:
        """fdatasync the active segment, every segment closed since the last sync, and the
        directory if a segment file was created: every append so far survives a power loss."""
        while self._unsynced:
            _, fd = self._unsynced[0]
            os.fdatasync(fd)
            os.close(fd)
            self._unsynced.pop(0)
        if self._fd >= 0 and self._active_dirty:
            os.fdatasync(self._fd)
            self._active_dirty = False
        if self._dir_dirty:
            fsync_dir(self._directory)
            self._dir_dirty = False

    def remove_segments(self, predicate: Callable[[int], bool]) -> list[int]:
        """Delete every segment (never the active one) whose number satisfies ``predicate``;
        returns the numbers removed, ascending."""
        gone: list[int] = []
        for no in sorted(self._sizes):
            if no == self._active or not predicate(no):
                continue
            fd = self._read_fds.pop(no, None)
            if fd is not None:
                os.close(fd)
            os.unlink(self.path(no))
            del self._sizes[no]
            gone.append(no)
        return gone

    def remove_before(self, segment_no: int) -> list[int]:
        """Delete every segment numbered below ``segment_no`` (never the active one)."""
        return self.remove_segments(lambda no: no < segment_no)

    def cut_from(self, segment_no: int, offset: int, dest_dir: str) -> int:
        """Move every frame from (segment_no, offset) on out of the log into ``dest_dir``, then
        close the log.  The segment holding the cut keeps its bytes before ``offset`` and its tail
        is copied to a file of the same name in dest_dir; later segments are moved there whole.
        The copies are valid segments (frames from offset 0), readable with a SegmentLog on
        dest_dir.  Everything is fsynced before the cut is made, and the directories after.
        Returns the bytes moved.  Raises RuntimeError before the open() scan has ended, KeyError
        for a segment that is not present, ValueError for an offset past its end, OSError."""
        if not self._ready:
            raise RuntimeError("segment log not open (run the open() scan to its end first)")
        if not 0 <= offset <= self._sizes[segment_no]:
            raise ValueError(f"offset {offset} is past the end of segment {segment_no}")
        self.sync()
        os.makedirs(dest_dir, exist_ok=True)
        moved = 0
        for no in sorted(self._sizes):
            if no < segment_no:
                continue
            src = self.path(no)
            dst = os.path.join(dest_dir, os.path.basename(src))
            if no == segment_no and offset > 0:
                with open(src, "rb") as f:
                    f.seek(offset)
                    tail = f.read()
                with open(dst, "xb") as out:
                    out.write(tail)
                    out.flush()
                    os.fsync(out.fileno())
                truncate_durably(src, offset)
                moved += len(tail)
            else:
                moved += os.path.getsize(src)
                os.rename(src, dst)
        fsync_dir(dest_dir)
        fsync_dir(self._directory)
        self._release()
        return moved

    def close(self) -> None:
        """Sync and close everything; the object can be opened again."""
        if self._lock_fd < 0:
            return
        try:
            if self._ready:
                self.sync()
        finally:
            self._release()

    def _release(self) -> None:
        for fd in [*(u for _, u in self._unsynced), *self._read_fds.values(), self._fd, self._lock_fd]:
            if fd >= 0:
                os.close(fd)
        self._unsynced.clear()
        self._read_fds.clear()
        self._sizes.clear()
        self._fd = self._lock_fd = -1
        self._active = self._size = 0
        self._ready = self._dir_dirty = self._active_dirty = False

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
