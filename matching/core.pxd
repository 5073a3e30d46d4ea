# Matching core: C layouts of the book (DESIGN §1, hftgw issues 2 and 3).
#
# Resting orders live in one pool of 64-byte structs addressed by uint32 index (not pointer) so
# the pool can grow with realloc; a price level is a FIFO doubly-linked list of pool indices.
# Each book side is a sorted array of levels with the best price at the END, so inserting or
# removing near the touch moves few bytes and the best level is lv[n - 1].  Pending stop orders
# are pool orders too (in the hash, not in a level), listed per side in a sorted array with the
# next one to trigger at the END.  Iceberg reserves are in a small side table keyed by pool index,
# so that plain orders pay nothing for them.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from matching.ring cimport SpscRing

cdef enum:
    NIL = 0xFFFFFFFF          # "no order" in the linked lists and the free list
    OF_ICEBERG = 2            # Order.flags: has an IceSlot (bit 0 is FLAG_POST_ONLY, as on the wire)
    OF_STOP = 4               # Order.flags: a stop order waiting for its trigger (not in a level)
    STP_SHIFT = 4             # Order.flags bits 4-6: the order's StpMode
    MAX_SYMBOLS = 0xFFFF      # symbol ids are uint16 in the order struct

# One live order, 48 bytes (four in three cache lines; the pool is 64-byte aligned).  An order's
# account is its session's (the gateway stamps every command of a session with one account), kept
# per session in MatchingCore.acct; quantities are below 2**32 lots (a symbol's max_qty is capped
# there) and exchange order ids below 2**48, so the id shares a word with the symbol.
ctypedef struct Order:
    uint64_t oid_sym          # exchange order id << 16 | symbol id (see _oid, _sym)
    uint64_t cl_ord_id
    int64_t price             # limit price; 0 for market and stop (market) orders
    uint32_t qty              # total order quantity (FIX OrderQty); cum qty = qty - total leaves
    uint32_t leaves           # lots shown in the book; total leaves = leaves + IceSlot.hidden
    uint32_t prev             # FIFO neighbours in the level (pool indices or NIL); also the
    uint32_t next             # free-list link; a pending stop keeps its stop price in these 8 bytes
    uint32_t session_id
    uint8_t side
    uint8_t ord_type
    uint8_t tif
    uint8_t flags             # FLAG_POST_ONLY | OF_ICEBERG | OF_STOP | stp << STP_SHIFT

# Hash slot: (session_id, cl_ord_id) -> pool index.  The key itself is read from the pool on a
# fingerprint match, so a slot is 8 bytes; h is the full 32-bit hash, which gives the home
# bucket for backward-shift deletion without touching the pool.
ctypedef struct HSlot:
    uint32_t h
    uint32_t idx1             # pool index + 1; 0 = empty

ctypedef struct Level:
    int64_t price
    uint64_t qty              # sum of shown leaves at this level
    uint64_t hidden           # sum of iceberg reserves at this level (FOK needs them)
    uint32_t head             # oldest order (matched first)
    uint32_t tail
    uint32_t count
    uint32_t _pad

ctypedef struct BookSide:
    Level *lv                 # sorted so that lv[n - 1] is the best price, never an empty one
    uint32_t n
    uint32_t cap
    uint32_t empty            # levels below the best with no order left: kept in place, so that
    uint32_t _pad             # an order moving back to that price costs no memmove; compacted
                              # away when they are half the array
    int64_t grid              # every level price is a multiple of it (the tick, or the gcd with
                              # older ticks after a redefinition): k grid steps hold <= k levels

ctypedef struct StopEntry:
    int64_t stop_px
    uint32_t idx              # pool index of the pending stop order
    uint32_t _pad

ctypedef struct StopSide:
    StopEntry *e              # sorted so that e[n - 1] triggers first (buy: lowest stop price,
    uint32_t n                # sell: highest; equal prices in arrival order)
    uint32_t cap

ctypedef struct Book:
    BookSide side[2]          # 0 bids (ascending price), 1 asks (descending price)
    StopSide stops[2]         # 0 buy stops, 1 sell stops
    int64_t tick
    uint64_t max_qty
    int64_t last_px           # last trade price (valid when has_last)
    uint32_t has_last
    uint32_t _pad

# Iceberg reserve of one resting order, keyed by pool index (open addressing, linear probing).
ctypedef struct IceSlot:
    uint32_t key1             # pool index + 1; 0 = empty
    uint32_t _pad
    uint64_t peak             # display quantity: lots shown at a time
    uint64_t hidden           # lots not shown yet


@cython.final
cdef class MatchingCore:
    cdef Book *books
    cdef uint32_t n_symbols

    cdef Order *pool          # 64-byte aligned view into _pool_mem
    cdef void *_pool_mem
    cdef uint32_t pool_cap
    cdef uint32_t pool_used   # high-water mark: slots [0, pool_used) have been handed out once
    cdef uint32_t free_head
    cdef uint64_t resting     # live orders: in a level or pending stops

    cdef HSlot *htab
    cdef uint64_t hcap        # power of two
    cdef uint64_t hcount
    cdef uint64_t hver        # bumped by every change of the table: a probe's end slot is
                              # still the insert slot while it is unchanged
    cdef uint32_t _t_h        # a new order's hash, the slot its duplicate probe ended at and
    cdef uint64_t _t_pos      # hver then (for its insert when it rests; see _execute)
    cdef uint64_t _t_ver

    cdef uint32_t *acct       # account id by session id (the latest a command of it carried)
    cdef uint64_t acct_cap

    cdef IceSlot *ice
    cdef uint64_t ice_cap     # power of two
    cdef uint64_t ice_count

    cdef uint64_t _next_order_id
    cdef uint64_t _next_trade_id

    # prices traded by the current command: stops with a trigger in [_win_lo, _win_hi] fire
    cdef int64_t _win_lo
    cdef int64_t _win_hi

    # emission state, valid during process() only
    cdef SpscRing _evq
    cdef uint64_t _ev_pos     # absolute ring position of the next event to write
    cdef uint64_t _ev_room    # slots known free from _ev_pos on
    cdef uint64_t _cmd_started  # commands started by the current _run (for error exits)
    cdef uint32_t _taker        # pool index of a new order while it takes (not yet resting), else NIL
    cdef bint _busy
    cdef void *_cow           # the pool's copy-on-write capture under way (core_capture.pxi), or NULL

    cdef public object on_events_full

    # The engine's functions are module-level cdef functions of core.pyx's .pxi parts, taking
    # the core first; only what other modules call is declared here.
    # for the gateway's pre-trade risk pass (gateway/risk/pretrade.pyx): a live order's side, qty, leaves
    cdef bint live_order(self, uint32_t session_id, uint64_t cl_ord_id, uint8_t *side,
                         uint64_t *qty, uint64_t *leaves) noexcept nogil
