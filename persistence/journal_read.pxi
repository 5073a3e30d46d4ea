# Included by persistence/journal.pyx: reading segments back.  Journal.open()'s part (the
# directory lock, the validating scan of every segment that cuts a torn tail and refuses real
# corruption) and the chunked read behind Journal.replay().

cdef size_t _valid_prefix(const char *buf, size_t n, uint64_t *records, uint64_t *first_seq,
                          uint64_t *last_seq) noexcept nogil:
    """Bytes of whole valid frames at the start of buf; counts them and keeps the first (when
    records was 0) and last seq."""
    cdef size_t pos = 0
    while pos + FRAME <= n and _frame_ok(buf + pos):
        if records[0] == 0:
            first_seq[0] = _seq_at(buf + pos)
        records[0] += 1
        pos += FRAME
    if pos:
        last_seq[0] = _seq_at(buf + pos - FRAME)
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


cdef inline int _pread_upto(int fd, char *buf, size_t cap, uint64_t off, uint64_t end,
                            size_t *n) noexcept nogil:
    """Read min(cap, end - off) bytes at off into buf, their count into n; as _pread_all."""
    n[0] = cap
    if n[0] > end - off:
        n[0] = <size_t>(end - off)
    return _pread_all(fd, buf, n[0], <off_t>off)


cdef int _raise_read_error(int rc, str path, str shrank) except -1:
    # rc of _pread_all/_pread_upto: an errno (> 0), or the file ended early (< 0: message shrank)
    if rc > 0:
        raise OSError(rc, os.strerror(rc), path)
    if rc < 0:
        raise OSError(_errno.EIO, shrank, path)
    return 0


def _lock_directory(str d) -> int:
    # an fd holding the exclusive flock on d's lock file; BlockingIOError if another holds it
    lock_path = os.path.join(d, LOCK_NAME)
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise BlockingIOError(_errno.EWOULDBLOCK, "journal is open in another process or object",
                              lock_path) from None
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd


cdef tuple _open_segments(str d):
    """Take d's lock, validate its segments and open the last one for appends (creating the
    first segment in an empty directory): (lock fd, fd, index and path of the last segment, its
    closed predecessors, (first, last, bytes) of the last, (path, last seq) of the newest
    non-empty one or None).  Raises as Journal.open; nothing is left open on an error."""
    cdef char *buf
    os.makedirs(d, exist_ok=True)
    lock_fd = _lock_directory(d)
    fd = -1
    buf = <char *>malloc(SCAN_FRAMES * FRAME)
    if buf == NULL:
        os.close(lock_fd)
        raise MemoryError()
    try:
        found = []
        for name in os.listdir(d):
            m = _SEGMENT_RE.match(name)
            if m is not None:
                found.append((int(m.group(1)), name))
        found.sort()
        if not found:
            index = 1
            path = os.path.join(d, segment_name(1))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            # the new directory entry must be durable too, or a crash could lose the file
            _fsync_dir(d)
            closed, act, prev = [], (0, 0, 0), None
        else:
            index, name = found[len(found) - 1]   # (no negative index: wraparound is off)
            path = os.path.join(d, name)
            fd, closed, act, prev = _scan_segments(d, found, buf)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.close(lock_fd)
        raise
    finally:
        free(buf)
    return lock_fd, fd, index, path, closed, act, prev


cdef tuple _scan_segments(str d, list found, char *buf):
    """Validate the segments ``found`` ([(index, name)] in order) and open the last for
    appends, cutting a torn tail off it: (its fd, [(path, first, last, bytes)] of the
    closed ones, (first, last, bytes) of the last, (path, last seq) of the newest non-empty
    one or None).  Raises as ``open``; the last segment's fd is closed on an error."""
    cdef int fd = -1
    closed = []
    act = (0, 0, 0)
    cut = None
    prev = None           # (path, last_seq) of the newest non-empty segment so far
    try:
        for i, (index, name) in enumerate(found):
            path = os.path.join(d, name)
            is_last = i == len(found) - 1
            sfd = os.open(path, (os.O_RDWR | os.O_APPEND if is_last else os.O_RDONLY)
                          | os.O_CLOEXEC)
            if is_last:
                fd = sfd
            try:
                size = os.fstat(sfd).st_size
                good, first, last = _scan(sfd, path, size, is_last, buf)
            finally:
                if not is_last:
                    os.close(sfd)
            if good:
                if prev is not None and first != prev[1] + 1:
                    raise JournalCorrupt(
                        path, 0, f"its first seq {first} does not follow seq {prev[1]} at "
                        f"the end of {prev[0]}: a segment is missing or was altered")
                prev = (path, last)
            if is_last:
                act = (first, last, good)
                if good < size:
                    cut = (good, size)
            else:
                closed.append((path, first, last, good))
        if cut is not None:
            log.warning("journal %s: torn or corrupt tail at byte offset %d (%d bytes after "
                        "the last good record cut)", path, cut[0], cut[1] - cut[0])
            os.ftruncate(fd, cut[0])
            os.fsync(fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd, closed, act, prev


cdef tuple _scan(int fd, str path, uint64_t size, bint is_last, char *buf):
    """(bytes of valid frames at the start, first seq, last seq) of one segment; raises
    JournalCorrupt unless whatever follows them is a torn tail of the last segment."""
    cdef uint64_t off = 0, records = 0, first_seq = 0, last_seq = 0, start
    cdef size_t n, good
    cdef int rc = 0
    cdef int64_t found = -1
    with nogil:
        while off < size:
            rc = _pread_upto(fd, buf, SCAN_FRAMES * FRAME, off, size, &n)
            if rc != 0:
                break
            good = _valid_prefix(buf, n, &records, &first_seq, &last_seq)
            off += good
            if good < n:
                break          # a bad or partial frame starts at off
    _raise_read_error(rc, path, "journal shrank while being read")
    if off < size and not is_last:
        raise JournalCorrupt(path, off, f"bad or partial frame in a closed segment, "
                             f"{size - off} bytes before its end")
    if off < size:
        # is anything valid after the bad frame?  Scan every byte offset, chunks
        # overlapping by one frame so a frame across two chunks is not missed.
        start = off + 1
        with nogil:
            while start + FRAME <= size:
                rc = _pread_upto(fd, buf, SCAN_FRAMES * FRAME, start, size, &n)
                if rc != 0:
                    break
                found = _find_frame(buf, n)
                if found >= 0 or start + n >= size:
                    break
                start += n - FRAME + 1
        if rc > 0:
            raise OSError(rc, os.strerror(rc), path)
        if found >= 0:
            raise JournalCorrupt(path, off)
    return off, first_seq, last_seq


def _replay_chunks(list segs, uint64_t after_seq, uint64_t batch_records):
    # Journal.replay's generator over segs (the segments() entries it needs, checked by it)
    cdef uint64_t off, size, first, last, bad = 0
    cdef size_t n, k, nrec, kept
    cdef int rc = 0, c_fd
    cdef char *buf = <char *>malloc(batch_records * FRAME)
    cdef char *src
    cdef char *dst
    cdef bint ok
    if buf == NULL:
        raise MemoryError()
    try:
        for path, first, last, size in segs:
            rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            c_fd = rfd
            try:
                off = 0
                if after_seq >= first and last - first + 1 == size // FRAME:
                    # seqs run by one inside a segment: jump straight past after_seq (the
                    # seq filter below still holds if they did not)
                    off = (after_seq - first + 1) * FRAME
                while off < size:
                    with nogil:
                        rc = _pread_upto(c_fd, buf, batch_records * FRAME, off, size, &n)
                    _raise_read_error(rc, path, "journal shrank while being replayed")
                    nrec = n // FRAME
                    out = PyBytes_FromStringAndSize(NULL, nrec * PAYLOAD)
                    dst = PyBytes_AS_STRING(out)
                    ok = True
                    kept = 0
                    with nogil:
                        for k in range(nrec):
                            src = buf + k * FRAME
                            if not _frame_ok(src):
                                ok = False
                                bad = off + k * FRAME
                                break
                            if _seq_at(src) > after_seq:
                                memcpy(dst + kept * PAYLOAD, src + 8, PAYLOAD)
                                kept += 1
                    if not ok:
                        raise JournalCorrupt(path, bad, "changed since open")
                    off += n
                    if kept == nrec:
                        yield out
                    elif kept:
                        yield out[:kept * PAYLOAD]
            finally:
                os.close(rfd)
    finally:
        free(buf)
