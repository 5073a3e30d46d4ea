# Single-producer/single-consumer ring of fixed-size slots (DESIGN §1).
from libc.stdint cimport uint64_t

cdef extern from "ring_atomic.h":
    uint64_t hftgw_load_acquire(const uint64_t *p) nogil
    void hftgw_store_release(uint64_t *p, uint64_t v) nogil

# head and tail on their own 64-byte cache lines, so producer and consumer never share one.
ctypedef struct RingIndices:
    uint64_t head            # next slot the producer will write; written by the producer only
    uint64_t _pad_head[7]
    uint64_t tail            # next slot the consumer will read; written by the consumer only
    uint64_t _pad_tail[7]


cdef class SpscRing:
    cdef char *buf           # capacity * slot_size bytes, 64-byte aligned
    cdef void *_mem
    cdef RingIndices *idx    # 64-byte aligned
    cdef void *_idx_mem
    cdef readonly uint64_t capacity
    cdef readonly uint64_t slot_size
    cdef uint64_t mask

    # -- producer side --
    cdef inline uint64_t free_slots(self) noexcept nogil:
        return self.capacity - (self.idx.head - hftgw_load_acquire(&self.idx.tail))

    cdef inline char *slot(self, uint64_t i) noexcept nogil:
        # i is an absolute position (head + k or tail + k); wraps with the mask
        return self.buf + (i & self.mask) * self.slot_size

    cdef inline uint64_t write_pos(self) noexcept nogil:
        return self.idx.head

    cdef inline void publish(self, uint64_t n) noexcept nogil:
        hftgw_store_release(&self.idx.head, self.idx.head + n)

    # -- consumer side --
    cdef inline uint64_t available(self) noexcept nogil:
        return hftgw_load_acquire(&self.idx.head) - self.idx.tail

    cdef inline uint64_t read_pos(self) noexcept nogil:
        return self.idx.tail

    cdef inline void consume(self, uint64_t n) noexcept nogil:
        hftgw_store_release(&self.idx.tail, self.idx.tail + n)
