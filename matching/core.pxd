# Matching core: C layouts of the book (DESIGN §1, hftgw issue 2 item 3).
#
# Resting orders live in one pool of 64-byte structs addressed by uint32 index (not pointer) so
# the pool can grow with realloc; a price level is a FIFO doubly-linked list of pool indices.
# Each book side is a sorted array of levels with the best price at the END, so inserting or
# removing near the touch moves few bytes and the best level is lv[n - 1].
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from matching.records cimport Command, Event
from matching.ring cimport SpscRing

cdef enum:
    NIL = 0xFFFFFFFF          # "no order" in the linked lists and the free list

# One resting order, 64 bytes (one cache line when the pool is 64-byte aligned).
ctypedef struct Order:
    uint64_t order_id
    uint64_t cl_ord_id
    int64_t price
    uint64_t qty              # total order quantity (FIX OrderQty); cum qty = qty - leaves
    uint64_t leaves
    uint32_t prev             # FIFO neighbours in the level (pool indices or NIL)
    uint32_t next             # also the free-list link while the slot is free
    uint32_t session_id
    uint32_t symbol_id
    uint8_t side
    uint8_t ord_type
    uint8_t tif
    uint8_t flags
    uint32_t level_hint       # index of its level when it last rested; checked before use, as
                              # levels shift only when a worse level is added or removed

# Hash slot: (session_id, cl_ord_id) -> pool index.  The key itself is read from the pool on a
# fingerprint match, so a slot is 8 bytes; h is the full 32-bit hash, which gives the home
# bucket for backward-shift deletion without touching the pool.
ctypedef struct HSlot:
    uint32_t h
    uint32_t idx1             # pool index + 1; 0 = empty

ctypedef struct Level:
    int64_t price
    uint64_t qty              # sum of leaves at this level
    uint32_t head             # oldest order (matched first)
    uint32_t tail
    uint32_t count
    uint32_t _pad

ctypedef struct BookSide:
    Level *lv                 # sorted so that lv[n - 1] is the best price
    uint32_t n
    uint32_t cap

ctypedef struct Book:
    BookSide side[2]          # 0 bids (ascending price), 1 asks (descending price)
    int64_t tick
    uint64_t max_qty


@cython.final
cdef class MatchingCore:
    cdef Book *books
    cdef uint32_t n_symbols
    cdef uint32_t books_cap   # allocated Book slots (CMD_SYMBOL_ADD grows the array by doubling)

    cdef Order *pool          # 64-byte aligned view into _pool_mem
    cdef void *_pool_mem
    cdef uint32_t pool_cap
    cdef uint32_t pool_used   # high-water mark: slots [0, pool_used) have been handed out once
    cdef uint32_t free_head
    cdef uint64_t resting

    cdef HSlot *htab
    cdef uint64_t hcap        # power of two
    cdef uint64_t hcount

    cdef uint64_t _next_order_id
    cdef uint64_t _next_trade_id

    # emission state, valid during process() only
    cdef SpscRing _evq
    cdef uint64_t _ev_pos     # absolute ring position of the next event to write
    cdef uint64_t _ev_room    # slots known free from _ev_pos on
    cdef uint64_t _cmd_started  # commands started by the current _run (for error exits)
    cdef bint _busy

    cdef public object on_events_full

    cdef int _grow_pool(self) except -1 nogil
    cdef int _grow_hash(self) except -1 nogil
    cdef int _grow_levels(self, BookSide *bs) except -1 nogil
    cdef inline uint32_t _alloc(self) except? NIL nogil
    cdef inline void _release(self, uint32_t idx) noexcept nogil
    cdef int _refill(self) except -1 nogil
    cdef uint32_t _hfind(self, uint32_t session_id, uint64_t cl_ord_id, uint32_t h,
                         uint64_t *pos) noexcept nogil
    cdef void _hdel_at(self, uint64_t pos) noexcept nogil
    cdef void _hdel(self, uint32_t idx) noexcept nogil
    cdef int _hput(self, uint32_t idx) except -1 nogil
    cdef int _rest(self, Book *bk, uint32_t idx) except -1 nogil
    cdef void _unlink(self, Book *bk, Order *o, uint32_t idx) noexcept nogil
    cdef int _match(self, Book *bk, Order *t, const Command *c) except -1 nogil
    cdef uint64_t _bounded_events(self, const Command *c) noexcept nogil
    cdef int _on_new(self, const Command *c) except -1 nogil
    cdef int _on_cancel(self, const Command *c) except -1 nogil
    cdef int _on_replace(self, const Command *c) except -1 nogil
    cdef int _on_mass_cancel(self, const Command *c) except -1 nogil
    cdef int _on_book_query(self, const Command *c) except -1 nogil
    cdef int _on_symbol_add(self, const Command *c) except -1 nogil
    cdef int _reject(self, const Command *c, uint16_t reason, uint64_t cl_ord_id) except -1 nogil
    cdef int _cancel_reject(self, const Command *c, uint16_t reason, Order *o) except -1 nogil
    cdef int _canceled(self, const Command *c, Order *o, uint64_t qty, uint16_t reason) except -1 nogil
    cdef int64_t _run(self, SpscRing commands, SpscRing events, uint64_t max_commands) except -1 nogil
