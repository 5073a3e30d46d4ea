# CoreCapture: the state of a core at one instant, taken without stopping it (hftgw issue 12).
# Included by matching/core.pyx after core_snapshot.pxi.
#
# Copying the order pool (64 bytes an order: 64 MB at 1 M orders) at once holds the event
# loop ~10 ms, and walking it into the snapshot format ~165 ms.  So the small structures (book
# records, level and stop arrays, iceberg and account tables) are copied at once, the pool page by page
# copy-on-write (matching/native/page_cow.h): the core goes on matching, a page it writes to
# is copied first, and ``step`` copies the others in bounded slices between batches.  The
# snapshot bytes are then written from the copies on any thread (``to_bytes``).

from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport errno


cdef extern from "page_cow.h" nogil:
    ctypedef struct hftgw_cow:
        char *shadow
        size_t npages
        size_t cursor
        size_t page
    hftgw_cow *hftgw_cow_begin(const char *src, size_t len)
    size_t hftgw_cow_step(hftgw_cow *r, size_t max_pages)
    void hftgw_cow_end(hftgw_cow *r)
    void hftgw_cow_free(hftgw_cow *r)


cdef void _capture_guard(MatchingCore core, uint64_t commands) noexcept nogil:
    # Called by process() before it runs up to ``commands`` commands while a capture is
    # under way.  A new order takes one pool slot; when the free slots may not suffice, the
    # pool would be reallocated (moved by mremap with its pages still protected), so the
    # copy is completed first: a rare stall instead of a fault nobody handles.
    cdef hftgw_cow *cow = <hftgw_cow *>core._cow
    if <uint64_t>core.pool_cap - core.resting > commands:
        return
    hftgw_cow_step(cow, cow.npages)
    hftgw_cow_end(cow)
    core._cow = NULL


cdef class CoreCapture:
    """The state of ``core`` when the capture was made (``CoreCapture(core)``, between two
    ``process`` calls), as ``core.snapshot()`` would have returned it then, while ``core``
    goes on processing commands.  Call ``step`` between batches until it returns True (or
    ``finish``), then ``to_bytes`` (any thread), then ``close``.  One capture per core at a
    time.  Raises RuntimeError while ``process`` runs or another capture of it is open,
    OSError when its memory cannot be protected, MemoryError."""

    cdef MatchingCore core
    cdef hftgw_cow *cow
    cdef SnapSrc src
    cdef Book *books
    cdef uint32_t n_books
    cdef IceSlot *ice
    cdef uint32_t *acct
    cdef char *buf               # the serialised snapshot (``view``), freed without the GIL
    cdef Py_ssize_t buf_len
    cdef int exports
    cdef bint closing

    def __cinit__(self, MatchingCore core not None):
        if core._busy:
            raise RuntimeError("capture while process() runs")
        if core._cow != NULL:
            raise RuntimeError("a capture of this core is under way")
        self.core = core
        _live_src(core, &self.src)
        self.books = <Book *>calloc(core.n_symbols + 1, sizeof(Book))
        self.ice = <IceSlot *>malloc(core.ice_cap * sizeof(IceSlot))
        if self.books == NULL or self.ice == NULL:
            raise MemoryError()
        memcpy(self.ice, core.ice, core.ice_cap * sizeof(IceSlot))
        self.acct = <uint32_t *>malloc(core.acct_cap * sizeof(uint32_t) + 1)
        if self.acct == NULL:
            raise MemoryError()
        if core.acct_cap:
            memcpy(self.acct, core.acct, core.acct_cap * sizeof(uint32_t))
        self._copy_books()
        self.cow = hftgw_cow_begin(<const char *>core.pool, <size_t>core.pool_used * sizeof(Order))
        if self.cow == NULL:
            raise OSError(errno, "cannot start the copy-on-write capture of the order pool")
        self.src.books = self.books
        self.src.ice = self.ice
        self.src.acct = self.acct
        self.src.pool = <const Order *>self.cow.shadow
        if self.cow.cursor < self.cow.npages:
            core._cow = self.cow

    cdef int _copy_books(self) except -1:
        # each book record with its own copy of the level and stop arrays (the used part)
        cdef uint32_t i
        cdef int s
        cdef Book *bk
        cdef size_t n
        for i in range(self.src.n_symbols):
            bk = &self.books[i]
            bk[0] = self.core.books[i]
            for s in range(2):
                bk.side[s].lv = NULL
                bk.stops[s].e = NULL
            self.n_books = i + 1
            for s in range(2):
                n = bk.side[s].n * sizeof(Level)
                bk.side[s].lv = <Level *>malloc(n + 1)
                if bk.side[s].lv == NULL:
                    raise MemoryError()
                memcpy(bk.side[s].lv, self.core.books[i].side[s].lv, n)
                n = bk.stops[s].n * sizeof(StopEntry)
                bk.stops[s].e = <StopEntry *>malloc(n + 1)
                if bk.stops[s].e == NULL:
                    raise MemoryError()
                memcpy(bk.stops[s].e, self.core.books[i].stops[s].e, n)
        return 0

    def step(self, size_t max_bytes) -> bool:
        """Copy about ``max_bytes`` more of the pool (at least one page); True once the copy
        is complete (the core is then no longer slowed by it)."""
        cdef size_t pages
        if self.cow == NULL:
            raise RuntimeError("capture closed")
        pages = max_bytes // self.cow.page
        if hftgw_cow_step(self.cow, pages if pages else 1) == 0:
            self._detach()
            return True
        return False

    def finish(self) -> None:
        """Complete the copy now."""
        while not self.step(1 << 30):
            pass

    @property
    def done(self) -> bool:
        """True when the copy is complete (``to_bytes`` may run)."""
        return self.cow != NULL and self.cow.cursor >= self.cow.npages

    @property
    def pool_bytes(self) -> int:
        """Bytes of the pool being captured."""
        return self.cow.npages * self.cow.page if self.cow != NULL else 0

    def to_bytes(self) -> bytes:
        """The snapshot (``MatchingCore.snapshot`` format) of the captured state.  Reads only
        the copies: may run on another thread while the core processes commands.  Raises
        RuntimeError before the copy is complete."""
        if not self.done:
            raise RuntimeError("capture not complete: call step() or finish() first")
        return _snapshot_bytes(&self.src)

    def view(self) -> memoryview:
        """``to_bytes`` as a view of a buffer the capture owns: ``close`` frees it without
        the GIL (unmapping tens of MB holds it for milliseconds), once no view is left."""
        cdef uint64_t body
        if not self.done:
            raise RuntimeError("capture not complete: call step() or finish() first")
        if self.buf == NULL:
            body = _snap_body(&self.src)
            with nogil:
                self.buf = <char *>malloc(_SNAP_HEADER + body + _SNAP_TRAILER)
                if self.buf != NULL:
                    _snap_fill(&self.src, self.buf, body)
            if self.buf == NULL:
                raise MemoryError()
            self.buf_len = _SNAP_HEADER + body + _SNAP_TRAILER
        return memoryview(self)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.buf == NULL:
            raise BufferError("no serialised snapshot: call view()")
        PyBuffer_FillInfo(view, self, self.buf, self.buf_len, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1
        if self.exports == 0 and self.closing:
            self._free()

    cdef void _detach(self) noexcept:
        if self.cow != NULL:
            hftgw_cow_end(self.cow)
        if self.core is not None and self.core._cow == <void *>self.cow:
            self.core._cow = NULL

    def close(self) -> None:
        """Stop (if not complete) and free the copies, at once or when the last view is
        released.  Not while ``to_bytes`` or ``view`` runs."""
        self._detach()
        self.closing = True
        if self.exports == 0:
            self._free()

    cdef void _free(self) noexcept:
        cdef uint32_t i
        cdef int s
        self._detach()
        with nogil:
            hftgw_cow_free(self.cow)
            self.cow = NULL
            if self.books != NULL:
                for i in range(self.n_books):
                    for s in range(2):
                        free(self.books[i].side[s].lv)
                        free(self.books[i].stops[s].e)
                free(self.books)
                self.books = NULL
            free(self.ice)
            self.ice = NULL
            free(self.acct)
            self.acct = NULL
            free(self.buf)
            self.buf = NULL

    def __dealloc__(self):
        self._free()
