# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Command journal: every sequenced 96-byte Command is on disk before its ack (DESIGN §1).

On-disk framing, little-endian, one frame per Command record::

    [u32 payload_len = 96][u32 CRC32C(payload)][96-byte Command payload]     (104 bytes)

(The payload length is ``sizeof(Command)`` from matching/records.pxd; a journal written with
another record size reads as corrupt rather than as wrong commands.)  The Command's first field
is its seq (u64), so every frame names its own sequence number.

CRC32C is Castagnoli as in iSCSI (RFC 3720 §B.4), see ``crc32c.h``.

Segments: ``<directory>/journal-NNNNNNNN.log`` (8 digits, from 00000001), in seq order, seqs
continuing from one segment to the next.  The last one is the active segment; appends go to it
and, once a group makes it reach ``segment_bytes``, the next group goes to a new segment (a
group never spans two files).  Old segments are removed with ``remove_through(seq)`` once a
snapshot no longer needs them.  ``<directory>/journal.lock`` carries the single-writer flock.

The writer builds a whole group of frames in a preallocated C scratch buffer and hands it to
the kernel with one ``write(2)`` loop (short writes and EINTR handled), then ``fdatasync`` when
``durability == "fsync"``; the GIL is released while it does so.

Source layout: journal_read.pxi (included) holds the reading side, open()'s lock and validating
scan and replay()'s chunked reads, as module-level functions; this file the rest and the class.
"""
import errno as _errno
import fcntl
import logging
import os
import re

from persistence.files import SyncPlan, dup_all, forget_synced

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport EINTR, ENOSPC, errno
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from posix.types cimport off_t
from posix.unistd cimport close, fdatasync, ftruncate, pread, write

from matching.native.byteorder cimport ld32, ld64, st32
from matching.records cimport COMMAND_SIZE
from matching.ring cimport SpscRing


cdef extern from "crc32c.h" nogil:
    void hftgw_crc32c_init(int force_sw)
    uint32_t hftgw_crc32c(uint32_t crc, const void *p, size_t n)
    uint32_t hftgw_crc32c_sw(uint32_t crc, const unsigned char *p, size_t n)
    int hftgw_crc32c_hw

hftgw_crc32c_init(0)

log = logging.getLogger(__name__)

cdef enum:
    PAYLOAD = COMMAND_SIZE
    FRAME = COMMAND_SIZE + 8
    # scan and replay read size: a whole number of frames (~3.4 MB)
    SCAN_FRAMES = 32768

#: bytes per frame on disk (8-byte header + 96-byte Command)
FRAME_SIZE = FRAME
#: bytes per Command payload
RECORD_SIZE = PAYLOAD
DURABILITY_MODES = ("os", "fsync")
#: default size at which the active segment is closed and a new one started (256 MiB)
DEFAULT_SEGMENT_BYTES = 256 * 2**20
#: name of the single-writer lock file in the journal directory
LOCK_NAME = "journal.lock"

_SEGMENT_RE = re.compile(r"^journal-(\d{8,})\.log$")


def segment_name(index: int) -> str:
    """File name of segment number ``index`` (from 1): ``journal-00000001.log``."""
    return f"journal-{index:08d}.log"


#: file name of the first segment
SEGMENT_NAME = segment_name(1)


class JournalCorrupt(Exception):
    """The journal cannot be trusted at ``offset`` of ``path``; nothing was changed on disk.

    Raised by ``Journal.open()`` instead of truncating when the damage is not a torn tail of
    the last segment (a bad frame followed by valid frames, a bad frame anywhere in a closed
    segment, a seq gap between segments), because the records after it were acknowledged and
    must not be dropped silently.  Attributes: path (str), offset (int, byte offset of the start
    of the bad frame; 0 for a seq gap at the start of a segment), reason (str).
    """

    def __init__(self, path: str, offset: int, reason: str = "valid records follow") -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"journal {self.path} is corrupt at byte offset {self.offset} ({self.reason})"


def crc32c(data, unsigned int value=0) -> int:
    """CRC32C (Castagnoli, RFC 3720 §B.4) of a bytes-like object, continuing from ``value``.

    crc32c(b"123456789") == 0xE3069283.  Uses SSE4.2 when the CPU has it.
    """
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    cdef uint32_t crc = value
    if v.shape[0] == 0:
        return value
    if v.shape[0] < 65536:
        return hftgw_crc32c(value, &v[0], v.shape[0])
    # a snapshot's parts (tens of MB) are summed on a writer thread: the loop must not wait
    with nogil:
        crc = hftgw_crc32c(crc, &v[0], v.shape[0])
    return crc


def crc32c_table(data, unsigned int value=0) -> int:
    """The same CRC32C with the portable slice-by-8 table code (to test one against the other)."""
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    if v.shape[0] == 0:
        return value
    return hftgw_crc32c_sw(value, &v[0], v.shape[0])


def crc32c_backend() -> str:
    """"sse4.2" or "table": the implementation ``crc32c`` and the journal use on this CPU."""
    return "sse4.2" if hftgw_crc32c_hw == 1 else "table"


cdef inline void _frame(char *dst, const char *payload) noexcept nogil:
    st32(dst, PAYLOAD)
    st32(dst + 4, hftgw_crc32c(0, payload, PAYLOAD))
    memcpy(dst + 8, payload, PAYLOAD)


cdef inline bint _frame_ok(const char *p) noexcept nogil:
    return ld32(p) == PAYLOAD and ld32(p + 4) == hftgw_crc32c(0, p + 8, PAYLOAD)


cdef inline uint64_t _seq_at(const char *frame) noexcept nogil:
    return ld64(frame + 8)


cdef int _write_all(int fd, const char *p, size_t n) noexcept nogil:
    """0, or the errno of the failed write(2)."""
    cdef ssize_t r
    while n > 0:
        r = write(fd, p, n)
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        if r == 0:
            return ENOSPC
        p += r
        n -= <size_t>r
    return 0


cdef int _close_fd(int fd) noexcept nogil:
    return close(fd)


def _fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


include "journal_read.pxi"


cdef class Journal:
    """Append-only segmented journal of 96-byte Command records in ``directory``.

    directory: created if missing.  durability: "os" (each group is handed to the OS with
    write(2) before the acks go out: survives a process kill, not a power loss) or "fsync"
    (plus fdatasync(2) after each group, fsync of a segment when it is closed and of the
    directory when a segment is created: survives a power loss).  segment_bytes: the active
    segment is closed once a group makes it reach this size (>= 104; a segment can exceed it
    by less than one group).  Raises ValueError for another durability or a smaller
    segment_bytes.  Call ``open()`` before anything else; one process at a time may have the
    journal open (an exclusive flock on ``journal.lock``; a second open raises
    BlockingIOError).  One writer thread: appends share a scratch buffer and run without the
    GIL.  Seqs must increase by one from record to record (the sequencer's); open() refuses a
    gap between segments.
    """
    cdef int fd, lock_fd
    cdef object _directory, _path, _durability, _closed, _unsynced
    cdef bint _fsync, _dir_dirty
    cdef char *scratch
    cdef size_t scratch_frames
    cdef uint64_t _segment_bytes, _index
    cdef uint64_t _size, _last_seq, _bytes_written, _removed
    cdef uint64_t _act_first, _act_last, _act_size

    def __cinit__(self):
        self.fd = -1
        self.lock_fd = -1
        self.scratch = NULL
        self.scratch_frames = 0

    def __init__(self, directory: str, durability: str = "os",
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if segment_bytes < FRAME:
            raise ValueError(f"segment_bytes must be at least {FRAME}, not {segment_bytes}")
        self._directory = os.fspath(directory)
        self._path = os.path.join(self._directory, SEGMENT_NAME)
        self._durability = durability
        self._fsync = durability == "fsync"
        self._segment_bytes = segment_bytes
        # closed segments, oldest first: (path, first_seq, last_seq, bytes)
        self._closed = []
        # "os" mode: (path, fd) of closed segments not yet fdatasynced; sync() does it, so a
        # roll never waits for the write-back of a whole segment on the order path
        self._unsynced = []

    def __dealloc__(self):
        if self.fd >= 0:
            _close_fd(self.fd)
        for _, ufd in self._unsynced or ():
            _close_fd(ufd)
        if self.lock_fd >= 0:
            _close_fd(self.lock_fd)
        free(self.scratch)

    # -- properties ---------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """Path of the active segment (the one appends go to)."""
        return self._path

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def segment_bytes(self) -> int:
        """Size in bytes at which the active segment is closed."""
        return self._segment_bytes

    @property
    def bytes_written(self) -> int:
        """Bytes appended (framing included) by this object since open()."""
        return self._bytes_written

    @property
    def records(self) -> int:
        """Valid Command records on disk, all segments (found by open(), plus appended, minus
        removed)."""
        return self._size // FRAME

    @property
    def last_seq(self) -> int:
        """seq field of the last record journaled, 0 when the journal is empty."""
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """seq field of the first record still on disk, 0 when there is none."""
        for _, first, _, nbytes in self._closed:
            if nbytes:
                return first
        return self._act_first if self._act_size else 0

    @property
    def size(self) -> int:
        """Bytes of valid frames on disk, all segments."""
        return self._size

    @property
    def segments_removed(self) -> int:
        """Segments deleted by remove_through() since this object was created."""
        return self._removed

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def segments(self) -> list:
        """Every segment on disk, oldest first, the active one last: list of (path, first_seq,
        last_seq, bytes); first_seq = last_seq = 0 for an empty segment."""
        out = list(self._closed)
        if self.fd >= 0:
            out.append((self._path, self._act_first, self._act_last, self._act_size))
        return out

    # -- open / scan --------------------------------------------------------------------------
    def open(self) -> None:
        """Take the lock, scan and validate every segment in order, open the last for appends
        (creating journal-00000001.log in an empty directory).

        A torn or corrupt tail of the last segment (a partial frame, or bad frames with no
        valid frame after them) is cut off at its last good frame, with a logging.warning
        naming the file, the offset and the bytes cut.  JournalCorrupt(path, offset) is raised,
        and nothing on disk changed, for a bad frame followed by a valid one, a bad or partial
        frame in a closed (non-last) segment, or a segment whose first seq does not follow the
        previous segment's last.  Raises OSError for I/O errors and BlockingIOError when
        another Journal holds the directory.
        """
        if self.fd >= 0:
            raise RuntimeError("journal already open")
        lock_fd, fd, index, path, closed, act, prev = _open_segments(self._directory)
        self.fd = fd
        self.lock_fd = lock_fd
        self._path = path
        self._index = index
        self._closed = closed
        self._unsynced = []
        self._dir_dirty = False
        self._act_first, self._act_last, self._act_size = act
        self._size = sum(s[3] for s in closed) + self._act_size
        self._last_seq = prev[1] if prev is not None else 0
        self._bytes_written = 0
        self._ensure_scratch(4096)

    # -- replay -------------------------------------------------------------------------------
    def replay(self, after_seq: int = 0, batch_records: int = 65536):
        """Yield the Command payloads with seq > ``after_seq``, in seq order, as bytes of whole
        96-byte records (at most ``batch_records`` per chunk; a chunk never spans segments).

        Segments whose last seq is <= after_seq are skipped without being read; in the first
        segment needed, the records up to after_seq are skipped by offset.  It replays the
        frames present when replay() is called: call after open() and before appending or
        removing.  Raises RuntimeError if not open, ValueError for a negative after_seq or a
        batch_records < 1, JournalCorrupt if a file changed under it, OSError on read errors.
        """
        if self.fd < 0:
            raise RuntimeError("journal not open")
        if batch_records <= 0:
            raise ValueError("batch_records must be positive")
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        segs = [s for s in self.segments() if s[3] > 0 and s[2] > after_seq]
        return _replay_chunks(segs, after_seq, batch_records)

    # -- append -------------------------------------------------------------------------------
    cdef int _ensure_scratch(self, size_t frames) except -1:
        cdef size_t cap = self.scratch_frames if self.scratch_frames else 4096
        cdef char *p
        if frames <= self.scratch_frames:
            return 0
        while cap < frames:
            cap *= 2
        p = <char *>realloc(self.scratch, cap * FRAME)
        if p == NULL:
            raise MemoryError()
        self.scratch = p
        self.scratch_frames = cap
        return 0

    cdef _roll(self):
        """Close the active segment and start the next one (nothing changes on failure but
        perhaps an empty new file, which the next roll or open() reuses)."""
        index = self._index + 1
        path = os.path.join(self._directory, segment_name(index))
        nfd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(nfd).st_size != 0:
                raise OSError(_errno.EEXIST, "next journal segment already holds data", path)
            if self._fsync:
                os.fsync(self.fd)     # its data is synced per group; this covers its inode too
                _fsync_dir(self._directory)
        except BaseException:
            os.close(nfd)
            raise
        closed = (self._path, self._act_first, self._act_last, self._act_size)
        self._closed.append(closed)
        if self._fsync:
            os.close(self.fd)
        else:
            self._unsynced.append((self._path, self.fd))
            self._dir_dirty = True
        self.fd = nfd
        self._path = path
        self._index = index
        self._act_first = self._act_last = self._act_size = 0
        log.info("journal segment %s closed (seq %d..%d, %d bytes), %s started",
                 closed[0], closed[1], closed[2], closed[3], path)

    cdef uint64_t _commit(self, size_t n) except? 0:
        """Write the first n framed records of scratch (+fdatasync) to the active segment,
        rolling to a new one first if it is full; cut the file back on a write error."""
        cdef size_t nbytes = n * FRAME
        cdef int err
        cdef bint was_empty
        if self._act_size >= self._segment_bytes:
            self._roll()
        was_empty = self._act_size == 0
        with nogil:
            err = _write_all(self.fd, self.scratch, nbytes)
            if err == 0 and self._fsync:
                if fdatasync(self.fd) != 0:
                    err = errno
            if err != 0:
                # an unacknowledged group must not be replayed after a restart, and a torn one
                # would otherwise sit in front of the next good group: cut back (best effort)
                ftruncate(self.fd, <off_t>self._act_size)
        if err != 0:
            raise OSError(err, os.strerror(err), self._path)
        if was_empty:
            self._act_first = _seq_at(self.scratch)
        self._act_size += nbytes
        self._size += nbytes
        self._bytes_written += nbytes
        self._act_last = self._last_seq = _seq_at(self.scratch + (n - 1) * FRAME)
        if self._act_size >= self._segment_bytes:
            # now rather than before the next group, so remove_through() can take this
            # segment at once; a failure here is retried before the next write
            try:
                self._roll()
            except OSError as exc:
                log.warning("journal: cannot start a new segment after %s yet: %s", self._path, exc)
        return nbytes

    def append_ring(self, SpscRing ring not None, uint64_t n) -> int:
        """Journal the first n unconsumed records of ``ring`` (positions read_pos() .. +n, wrap
        handled) without consuming them, as one write (+fdatasync in "fsync" mode) to one
        segment.

        ring: the inbound SpscRing of 96-byte Commands (the consumer side belongs to the
        caller).  Returns bytes written (104 per record).  Raises ValueError if the ring's slots
        are not 96 bytes or n > ring.available(), RuntimeError if not open, OSError on a write
        or sync error (the segment is then cut back to its size before the call) or when a new
        segment cannot be created (nothing written).
        """
        cdef uint64_t pos, k
        if self.fd < 0:
            raise RuntimeError("journal not open")
        if ring.slot_size != PAYLOAD:
            raise ValueError(f"ring slots must be {PAYLOAD}-byte Command records")
        if n > ring.available():
            raise ValueError(f"{n} records requested, {ring.available()} available")
        if n == 0:
            return 0
        self._ensure_scratch(n)
        with nogil:
            pos = ring.read_pos()
            for k in range(n):
                _frame(self.scratch + k * FRAME, ring.slot(pos + k))
        return self._commit(n)

    def append(self, const unsigned char[::1] records not None) -> int:
        """Journal whole 96-byte Command records from a bytes-like object, as one write.

        Returns bytes written.  Raises ValueError if the length is not a multiple of 96,
        RuntimeError if not open, OSError as append_ring.
        """
        cdef size_t n = records.shape[0] // PAYLOAD, k
        cdef const char *src
        if self.fd < 0:
            raise RuntimeError("journal not open")
        if <size_t>records.shape[0] != n * PAYLOAD:
            raise ValueError(f"not a whole number of {PAYLOAD}-byte records")
        if n == 0:
            return 0
        self._ensure_scratch(n)
        src = <const char *>&records[0]
        with nogil:
            for k in range(n):
                _frame(self.scratch + k * FRAME, src + k * PAYLOAD)
        return self._commit(n)

    # -- durability and retention -------------------------------------------------------------
    def sync(self) -> None:
        """Make everything appended so far durable (power loss included), whatever the
        durability: fdatasync of segments closed since the last sync ("os" mode), of the
        directory if a segment was created, and of the active segment.  A snapshot calls it
        before it commits, so the journal never ends before the snapshot's seq.  Raises
        RuntimeError if not open, OSError on a sync error."""
        cdef int rc, fd = self.fd
        if fd < 0:
            raise RuntimeError("journal not open")
        while self._unsynced:
            _, ufd = self._unsynced[0]
            os.fdatasync(ufd)
            os.close(ufd)
            del self._unsynced[0]
        if self._dir_dirty:
            _fsync_dir(self._directory)
            self._dir_dirty = False
        with nogil:
            rc = fdatasync(fd)
            if rc != 0:
                rc = errno
        if rc != 0:
            raise OSError(rc, os.strerror(rc), self._path)

    def sync_plan(self):
        """What ``sync`` would do, for another thread (persistence.files.SyncPlan): the
        segments closed since the last sync and the active one (duplicated fds), the directory
        if a segment was created.  Its ``on_synced`` closes the closed segments it covered.
        Raises RuntimeError if not open, OSError when an fd cannot be duplicated."""
        if self.fd < 0:
            raise RuntimeError("journal not open")
        covered = list(self._unsynced)
        fds = dup_all([ufd for _, ufd in covered] + [self.fd])
        return SyncPlan(fds, [self._directory] if self._dir_dirty else [],
                        lambda: forget_synced(self._unsynced, covered))

    def remove_through(self, seq: int) -> list:
        """Delete closed segments whose records all have seq <= ``seq`` (a snapshot at ``seq``
        no longer needs them), oldest first, stopping at the first one still needed; returns
        their paths.  Never removes the active segment, nor the newest segment holding records
        (so last_seq is still known after a reopen).  Each removal is logged.  Raises
        RuntimeError if not open, OSError if a file cannot be deleted (those before it are
        gone and accounted for)."""
        if self.fd < 0:
            raise RuntimeError("journal not open")
        limit = len(self._closed)
        if self._act_size == 0:
            while limit > 0 and self._closed[limit - 1][3] == 0:
                limit -= 1
            limit = max(0, limit - 1)
        removed = []
        try:
            for path, first, last, nbytes in self._closed[:limit]:
                if nbytes and last > seq:
                    break
                for i, (upath, ufd) in enumerate(self._unsynced):
                    if upath == path:
                        # no longer needed, so no longer worth syncing
                        os.close(ufd)
                        del self._unsynced[i]
                        break
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                # a removal lost to a power loss is harmless: the segment is whole and in order
                removed.append(path)
                self._size -= nbytes
                self._removed += 1
                log.info("journal segment %s removed (seq %d..%d, %d bytes; through seq %d no "
                         "longer needed)", path, first, last, nbytes, seq)
        finally:
            del self._closed[:len(removed)]
        return removed

    def close(self) -> None:
        """Close the files (and release the lock).  Idempotent.  Does not sync ("os" mode
        promises no more than the OS does; call sync() first for that)."""
        if self.fd >= 0:
            fd = self.fd
            self.fd = -1
            os.close(fd)
        while self._unsynced:
            _, ufd = self._unsynced.pop()
            os.close(ufd)
        if self.lock_fd >= 0:
            fd = self.lock_fd
            self.lock_fd = -1
            os.close(fd)

    def __enter__(self):
        if self.fd < 0:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
