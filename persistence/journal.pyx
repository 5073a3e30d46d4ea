# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Command journal: every sequenced 96-byte Command is on disk before its ack (DESIGN §1).

On-disk framing, little-endian, one frame per Command record::

    [u32 payload_len = 96][u32 CRC32C(payload)][96-byte Command payload]     (104 bytes)

(The payload length is ``sizeof(Command)`` from matching/records.pxd; a journal written with
another record size reads as corrupt rather than as wrong commands.)

CRC32C is Castagnoli as in iSCSI (RFC 3720 §B.4), see ``crc32c.h``.  There is one segment,
``<directory>/journal-00000001.log``; a later issue adds rotation and keeps that naming.

The writer builds a whole group of frames in a preallocated C scratch buffer and hands it to
the kernel with one ``write(2)`` loop (short writes and EINTR handled), then ``fdatasync`` when
``durability == "fsync"``; the GIL is released while it does so.
"""
import errno as _errno
import fcntl
import logging
import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport EINTR, ENOSPC, errno
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from posix.types cimport off_t
from posix.unistd cimport fdatasync, ftruncate, pread, write

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
    # scan read size: a whole number of frames (~1.2 MB)
    SCAN_FRAMES = 16384

#: file name of the (only, for now) segment
SEGMENT_NAME = "journal-00000001.log"
#: bytes per frame on disk (8-byte header + 96-byte Command)
FRAME_SIZE = FRAME
#: bytes per Command payload
RECORD_SIZE = PAYLOAD
DURABILITY_MODES = ("os", "fsync")


class JournalCorrupt(Exception):
    """A bad frame at ``offset`` of ``path`` is followed by valid frames.

    Raised by ``Journal.open()`` instead of truncating, because the records after the bad one
    were acknowledged and must not be dropped silently.  Attributes: path (str), offset (int,
    byte offset of the start of the bad frame).
    """

    def __init__(self, path: str, offset: int) -> None:
        super().__init__(path, offset)
        self.path = path
        self.offset = offset

    def __str__(self) -> str:
        return f"journal {self.path} is corrupt at byte offset {self.offset} (valid records follow)"


def crc32c(data, unsigned int value=0) -> int:
    """CRC32C (Castagnoli, RFC 3720 §B.4) of a bytes-like object, continuing from ``value``.

    crc32c(b"123456789") == 0xE3069283.  Uses SSE4.2 when the CPU has it.
    """
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    if v.shape[0] == 0:
        return value
    return hftgw_crc32c(value, &v[0], v.shape[0])


def crc32c_table(data, unsigned int value=0) -> int:
    """The same CRC32C with the portable slice-by-8 table code (to test one against the other)."""
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    if v.shape[0] == 0:
        return value
    return hftgw_crc32c_sw(value, &v[0], v.shape[0])


def crc32c_backend() -> str:
    """"sse4.2" or "table": the implementation ``crc32c`` and the journal use on this CPU."""
    return "sse4.2" if hftgw_crc32c_hw == 1 else "table"


cdef inline uint32_t _ld32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v        # x86-64/aarch64 are little-endian, as the format


cdef inline uint64_t _ld64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline void _frame(char *dst, const char *payload) noexcept nogil:
    cdef uint32_t ln = PAYLOAD
    cdef uint32_t crc = hftgw_crc32c(0, payload, PAYLOAD)
    memcpy(dst, &ln, 4)
    memcpy(dst + 4, &crc, 4)
    memcpy(dst + 8, payload, PAYLOAD)


cdef inline bint _frame_ok(const char *p) noexcept nogil:
    return _ld32(p) == PAYLOAD and _ld32(p + 4) == hftgw_crc32c(0, p + 8, PAYLOAD)


cdef size_t _valid_prefix(const char *buf, size_t n, uint64_t *records,
                          uint64_t *last_seq) noexcept nogil:
    """Bytes of whole valid frames at the start of buf; counts them and keeps the last seq."""
    cdef size_t pos = 0
    while pos + FRAME <= n and _frame_ok(buf + pos):
        records[0] += 1
        last_seq[0] = _ld64(buf + pos + 8)
        pos += FRAME
    return pos


cdef int64_t _find_frame(const char *buf, size_t n) noexcept nogil:
    """Offset of the first valid frame starting at any byte of buf, or -1."""
    cdef size_t i
    if n < FRAME:
        return -1
    for i in range(n - FRAME + 1):
        if _frame_ok(buf + i):
            return i
    return -1


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


cdef int _pread_all(int fd, char *p, size_t n, off_t off) noexcept nogil:
    """0, -1 on a short file, or the errno of the failed pread(2)."""
    cdef ssize_t r
    while n > 0:
        r = pread(fd, p, n, off)
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        if r == 0:
            return -1
        p += r
        n -= <size_t>r
        off += r
    return 0


cdef class Journal:
    """Append-only journal of 96-byte Command records in ``directory``.

    directory: created if missing.  durability: "os" (each group is handed to the OS with
    write(2) before the acks go out: survives a process kill, not a power loss) or "fsync"
    (plus fdatasync(2) after each group: survives a power loss).  Raises ValueError for
    another durability.  Call ``open()`` before anything else; one process at a time may have
    the journal open (an exclusive flock; a second open raises BlockingIOError).  One writer
    thread: appends share a scratch buffer and run without the GIL.
    """
    cdef int fd
    cdef object _directory, _path, _durability
    cdef bint _fsync
    cdef char *scratch
    cdef size_t scratch_frames
    cdef uint64_t _size, _records, _last_seq, _bytes_written

    def __cinit__(self):
        self.fd = -1
        self.scratch = NULL
        self.scratch_frames = 0

    def __init__(self, directory: str, durability: str = "os") -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self._directory = os.fspath(directory)
        self._path = os.path.join(self._directory, SEGMENT_NAME)
        self._durability = durability
        self._fsync = durability == "fsync"

    def __dealloc__(self):
        if self.fd >= 0:
            os.close(self.fd)
        free(self.scratch)

    # -- properties ---------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """Path of the segment file."""
        return self._path

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def bytes_written(self) -> int:
        """Bytes appended (framing included) by this object since open()."""
        return self._bytes_written

    @property
    def records(self) -> int:
        """Valid Command records in the file (those found by open() plus those appended)."""
        return self._records

    @property
    def last_seq(self) -> int:
        """seq field of the last record in the file, 0 when it is empty."""
        return self._last_seq

    @property
    def size(self) -> int:
        """Bytes of valid frames in the file (its length after open())."""
        return self._size

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    # -- open / scan --------------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) and validate the segment; sets ``records`` and ``last_seq``.

        A torn or corrupt tail (a partial frame, or bad frames with no valid frame after them)
        is cut off at the last good frame, with a logging.warning naming the file and offset.
        A bad frame followed by a valid one raises JournalCorrupt(path, offset) and leaves the
        file untouched.  Raises OSError for I/O errors and BlockingIOError when another
        Journal holds the file.
        """
        if self.fd >= 0:
            raise RuntimeError("journal already open")
        os.makedirs(self._directory, exist_ok=True)
        created = not os.path.exists(self._path)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(_errno.EWOULDBLOCK, "journal is open in another process or object",
                                  self._path) from None
        try:
            if created:
                # the new directory entry must be durable too, or a crash could lose the file
                dfd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            self._scan(fd, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._bytes_written = 0
        self._ensure_scratch(4096)

    cdef _scan(self, int fd, uint64_t size):
        cdef char *buf = <char *>malloc(SCAN_FRAMES * FRAME)
        cdef uint64_t off = 0, records = 0, last_seq = 0, start
        cdef size_t n, good
        cdef int rc = 0
        cdef int64_t found = -1
        if buf == NULL:
            raise MemoryError()
        try:
            with nogil:
                while off < size:
                    n = SCAN_FRAMES * FRAME
                    if n > size - off:
                        n = <size_t>(size - off)
                    rc = _pread_all(fd, buf, n, <off_t>off)
                    if rc != 0:
                        break
                    good = _valid_prefix(buf, n, &records, &last_seq)
                    off += good
                    if good < n:
                        break          # a bad or partial frame starts at off
            if rc > 0:
                raise OSError(rc, os.strerror(rc), self._path)
            if rc < 0:
                raise OSError(_errno.EIO, "journal shrank while being read", self._path)
            if off < size:
                # is anything valid after the bad frame?  Scan every byte offset, chunks
                # overlapping by one frame so a frame across two chunks is not missed.
                start = off + 1
                with nogil:
                    while start + FRAME <= size:
                        n = SCAN_FRAMES * FRAME
                        if n > size - start:
                            n = <size_t>(size - start)
                        rc = _pread_all(fd, buf, n, <off_t>start)
                        if rc != 0:
                            break
                        found = _find_frame(buf, n)
                        if found >= 0 or start + n >= size:
                            break
                        start += n - FRAME + 1
                if rc > 0:
                    raise OSError(rc, os.strerror(rc), self._path)
                if found >= 0:
                    raise JournalCorrupt(self._path, off)
                log.warning("journal %s: torn or corrupt tail at byte offset %d (%d bytes after "
                            "the last good record), truncating there", self._path, off, size - off)
                os.ftruncate(fd, off)
                os.fsync(fd)
        finally:
            free(buf)
        self._size = off
        self._records = records
        self._last_seq = last_seq

    # -- replay -------------------------------------------------------------------------------
    def replay(self, batch_records: int = 65536):
        """Yield the valid Command payloads in file order, as bytes of up to ``batch_records``
        concatenated 96-byte records.  Call after open() and before appending (it replays the
        frames present when iteration starts).  Raises RuntimeError if not open, JournalCorrupt
        if the file changed under it, OSError on read errors.
        """
        if self.fd < 0:
            raise RuntimeError("journal not open")
        if batch_records <= 0:
            raise ValueError("batch_records must be positive")
        return self._replay_gen(batch_records, self._size)

    def _replay_gen(self, uint64_t batch_records, uint64_t end):
        cdef uint64_t off = 0
        cdef size_t n, k, nrec
        cdef int rc
        cdef char *src
        cdef char *dst
        cdef bint ok
        cdef uint64_t bad = 0
        while off < end:
            n = batch_records * FRAME
            if n > end - off:
                n = <size_t>(end - off)
            raw = os.pread(self.fd, n, off)
            if <size_t>len(raw) != n:
                raise OSError(_errno.EIO, "journal shrank while being replayed", self._path)
            nrec = n // FRAME
            out = PyBytes_FromStringAndSize(NULL, nrec * PAYLOAD)
            src = PyBytes_AS_STRING(raw)
            dst = PyBytes_AS_STRING(out)
            ok = True
            with nogil:
                for k in range(nrec):
                    if not _frame_ok(src + k * FRAME):
                        ok = False
                        bad = off + k * FRAME
                        break
                    memcpy(dst + k * PAYLOAD, src + k * FRAME + 8, PAYLOAD)
            if not ok:
                raise JournalCorrupt(self._path, bad)
            off += n
            yield out

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

    cdef uint64_t _commit(self, size_t n) except? 0:
        """Write the first n framed records of scratch (+fdatasync); cut the file back on error."""
        cdef size_t nbytes = n * FRAME
        cdef int err
        with nogil:
            err = _write_all(self.fd, self.scratch, nbytes)
            if err == 0 and self._fsync:
                if fdatasync(self.fd) != 0:
                    err = errno
            if err != 0:
                # an unacknowledged group must not be replayed after a restart, and a torn one
                # would otherwise sit in front of the next good group: cut back (best effort)
                ftruncate(self.fd, <off_t>self._size)
        if err != 0:
            raise OSError(err, os.strerror(err), self._path)
        self._size += nbytes
        self._bytes_written += nbytes
        self._records += n
        self._last_seq = _ld64(self.scratch + (n - 1) * FRAME + 8)
        return nbytes

    def append_ring(self, SpscRing ring not None, uint64_t n) -> int:
        """Journal the first n unconsumed records of ``ring`` (positions read_pos() .. +n, wrap
        handled) without consuming them, as one write (+fdatasync in "fsync" mode).

        ring: the inbound SpscRing of 96-byte Commands (the consumer side belongs to the
        caller).  Returns bytes written (72 per record).  Raises ValueError if the ring's slots
        are not 96 bytes or n > ring.available(), RuntimeError if not open, OSError on a write
        or sync error (the file is then cut back to its size before the call).
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

    def close(self) -> None:
        """Close the file (and release the lock).  Idempotent."""
        if self.fd >= 0:
            fd = self.fd
            self.fd = -1
            os.close(fd)

    def __enter__(self):
        if self.fd < 0:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
