# cython: language_level=3, boundscheck=False, wraparound=False
"""Single-producer/single-consumer ring of fixed-size records (DESIGN §1).

Power-of-two slot count, preallocated and 64-byte aligned, head and tail on separate cache
lines; the producer claims ``free_slots()`` slots, fills them and ``publish``es them with a
release store; the consumer takes everything up to the head in one batch (Disruptor batching)
and ``consume``s it.  The C-level methods in ``ring.pxd`` are the hot path; the Python methods
below are for tests, tools and the rare slow paths.
"""
from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset


cdef void *_aligned(void *p) noexcept nogil:
    return <void *>((<uintptr_t>p + 63) & ~(<uintptr_t>63))


cdef class SpscRing:
    """A ring of ``capacity`` slots of ``slot_size`` bytes.

    capacity: slot count, a power of two >= 2; slot_size: bytes per record (a multiple of 8).
    Raises ValueError for other shapes, MemoryError if the buffer cannot be allocated.
    """

    def __cinit__(self, uint64_t capacity, uint64_t slot_size):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two >= 2")
        if slot_size == 0 or slot_size % 8:
            raise ValueError("slot_size must be a positive multiple of 8")
        self._mem = calloc(capacity * slot_size + 64, 1)
        self._idx_mem = calloc(sizeof(RingIndices) + 64, 1)
        if self._mem == NULL or self._idx_mem == NULL:
            raise MemoryError()
        self.buf = <char *>_aligned(self._mem)
        self.idx = <RingIndices *>_aligned(self._idx_mem)
        # touch every page now (calloc's fresh pages are mapped lazily): a ring's first lap
        # must not take a page fault per 4 KiB on the hot path
        memset(self._mem, 0, capacity * slot_size + 64)
        self.capacity = capacity
        self.slot_size = slot_size
        self.mask = capacity - 1

    def __dealloc__(self):
        free(self._mem)
        free(self._idx_mem)

    def __len__(self):
        """Records published and not yet consumed."""
        return self.available()

    @property
    def free(self) -> int:
        """Slots the producer may claim now."""
        return self.free_slots()

    @property
    def head(self) -> int:
        return self.idx.head

    @property
    def tail(self) -> int:
        return self.idx.tail

    def push(self, const unsigned char[:] records) -> int:
        """Copy whole records from a bytes-like object (a multiple of slot_size bytes) and
        publish them.  Returns how many fit (the rest are not taken)."""
        cdef uint64_t n = records.shape[0] // self.slot_size, k, h
        if <uint64_t>records.shape[0] != n * self.slot_size:
            raise ValueError("not a whole number of records")
        if n > self.free_slots():
            n = self.free_slots()
        h = self.idx.head
        for k in range(n):
            memcpy(self.slot(h + k), &records[k * self.slot_size], self.slot_size)
        self.publish(n)
        return n

    def pop(self, uint64_t max_records=0xFFFFFFFFFFFFFFFF) -> bytes:
        """Consume up to ``max_records`` published records and return them concatenated."""
        cdef uint64_t n = self.available(), k, t
        if n > max_records:
            n = max_records
        out = bytearray(n * self.slot_size)
        cdef unsigned char[:] o = out
        t = self.idx.tail
        for k in range(n):
            memcpy(&o[k * self.slot_size], self.slot(t + k), self.slot_size)
        self.consume(n)
        return bytes(out)

    def peek(self, uint64_t k) -> bytes:
        """The k-th unconsumed record, without consuming it.  Raises IndexError."""
        if k >= self.available():
            raise IndexError(k)
        return (<char *>self.slot(self.idx.tail + k))[:self.slot_size]
