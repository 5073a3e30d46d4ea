# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Matching core: price-time-priority limit order books for many symbols (DESIGN §1, §3).

``MatchingCore.process`` consumes 96-byte ``Command`` records from one SPSC ring and appends
128-byte ``Event`` records to another (layouts in ``matching/records.pxd``), without the GIL and
without a Python object per order or event.  Events are a pure function of the command stream:
time is ``Command.ts``, never the clock; order ids and trade ids are global counters from 1.
tests/reference_book.py implements the same rules in plain Python; the differential tests
compare the two event by event.

Units: prices are int64 in 1e-4 currency units and must be positive multiples of the symbol's
tick; quantities are uint64 lots; times are uint64 ns since the Unix epoch.

Commands and their events (spec: hftgw issues 2 and 3; FIX 4.4 field semantics; self-trade
prevention as Binance spot, https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq):

* CMD_NEW -> one EVT_REJECTED, first failing check: unknown symbol; invalid side / ord_type
  (LIMIT, MARKET, STOP, STOP_LIMIT) / tif (DAY, GTC, IOC, FOK) / flags / stp (REJ_INVALID_FIELD);
  qty 0 or > max (REJ_INVALID_QUANTITY); limit price of LIMIT / STOP_LIMIT <= 0 or off tick, stop
  price of STOP / STOP_LIMIT <= 0 or off tick (REJ_INVALID_PRICE); a stop price on another type
  (REJ_INVALID_FIELD); an iceberg (display_qty > 0) that is not a GTC/DAY LIMIT
  (REJ_INVALID_FIELD) or shows display_qty >= qty (REJ_INVALID_QUANTITY); live duplicate
  (session, ClOrdID); post-only on a stop (REJ_INVALID_FIELD), that would cross
  (REJ_POST_ONLY_WOULD_TAKE), or on a market / IOC / FOK order (REJ_INVALID_FIELD).
  Otherwise EVT_ACCEPTED, then:
  - LIMIT / MARKET: executed as the taker (below).
  - STOP / STOP_LIMIT: pending until the symbol trades at or through its stop price (buy: a trade
    >= stop, sell: <= stop); if the last trade price already meets it, it triggers at once.
* Taker execution: FOK first checks that the whole quantity can fill now without any self-trade
  prevention action, else EVT_CANCELED(CXL_FOK_UNFILLED) and nothing trades.  Then one EVT_FILL
  per maker in price-time order (price = the maker's); a maker of the same account when the
  taker's stp is not NONE is handled by self-trade prevention instead (below).  The remainder of
  a market order (or triggered stop) is canceled (CXL_NO_LIQUIDITY), of an IOC/FOK order too
  (CXL_IOC_REMAINDER); a GTC/DAY limit remainder rests.  Market and stop orders carry price 0.
* Icebergs show display_qty lots at a time (book levels count the shown lots only); when the
  shown part is filled the next slice joins the BACK of the level's queue.  Execution reports
  carry the total leaves.  An incoming iceberg takes with its whole quantity.
* Self-trade prevention (the TAKER's mode decides; per order, the gateway applies the session
  default to orders sent with 0): CANCEL_NEWEST cancels the taker's remainder; CANCEL_OLDEST
  cancels the maker and matching goes on; CANCEL_BOTH cancels the maker then the taker;
  DECREMENT reduces both by the smaller quantity, the maker first (its hidden reserve before its
  shown lots, keeping its place), with an EVT_CANCELED each (reason CXL_SELF_TRADE, qty = the
  reduction, leaves > 0 when the order lives on), and the taker goes on if anything is left.
  No trade happens between two orders of one account unless the taker's mode is NONE.
* Stops triggered by a command's trades run one at a time, right after it: the buy stop with the
  lowest stop price if one is triggered, else the sell stop with the highest (arrival order among
  equal stop prices); each gets EVT_TRIGGERED (ref = stop price) and executes as a taker at once
  (STOP as a market order, STOP_LIMIT as a limit order); its trades may trigger more.
* CMD_CANCEL -> EVT_CANCELED (CXL_USER, qty = total leaves) or EVT_CANCEL_REJECTED
  (REJ_UNKNOWN_ORDER); pending stops too.
* CMD_REPLACE -> EVT_REPLACED (re-keyed to the new ClOrdID; the same price and total leaves not
  up keeps time priority, an iceberg losing its hidden reserve first; otherwise it re-enters at
  the back and may match as a taker first) or EVT_CANCEL_REJECTED (unknown order, duplicate new
  ClOrdID, bad price, qty > max or <= cum, a post-only order whose new price would cross:
  REJ_POST_ONLY_WOULD_TAKE).  A pending stop keeps its stop price; a STOP's price stays 0.
* CMD_MASS_CANCEL -> EVT_CANCELED per live order of the session (scope SESSION) or of the
  command's account_id in any session (scope ACCOUNT), in book order (symbol, bids then asks,
  best level first, time priority; then buy stops, sell stops in trigger order), then
  EVT_MASS_CANCEL_DONE(count).  All symbols when symbol_id is UNKNOWN_SYMBOL_ID and depth == 1
  or flags == 1 (cancel on disconnect, reason CXL_DISCONNECT); another unknown symbol is
  EVT_REJECTED(REJ_UNKNOWN_SYMBOL); side 0 = both; side > 2 or scope > 1 is REJ_INVALID_FIELD.
  An order of another session is reported with its own ClOrdID.
* CMD_END_OF_SESSION -> EVT_CANCELED(CXL_EXPIRED, the order's own ClOrdID) per DAY order of the
  symbol (or all, as for mass cancel), in book order, then EVT_MASS_CANCEL_DONE to the sender.
* CMD_BOOK_QUERY -> EVT_BOOK_SNAPSHOT(count bids, count2 asks) then the EVT_BOOK_LEVEL records,
  bids then asks, best first, contiguous in the ring (depth 0 -> 10, at most 100 a side).
* CMD_SYMBOL_ADD -> nothing when it defines the next free symbol id (a new, empty book) or
  redefines an existing one (new tick and max_qty; resting orders stay as they are); a gap in
  the ids or a tick / max_qty <= 0 is EVT_REJECTED(REJ_INVALID_FIELD) for session 0.
* CMD_RISK_REJECT (a request the gateway refused before the ring; records.pxd) -> the request's
  EVT_REJECTED (new order, book query, mass cancel) or EVT_CANCEL_REJECTED (cancel, replace)
  with reason = depth, so that the refusal is sequenced and journaled like any answer.
* CMD_SESSION_OPEN, CMD_SESSION_STATE, CMD_ADMIN -> nothing; any other type -> EVT_REJECTED(REJ_INVALID_FIELD).
* EVT_REPLACED carries the order's leaves before the replace in contra_leaves (for the
  gateway's open-quantity bookkeeping); a kill-switch mass cancel (flags 2, sent with scope
  ACCOUNT) cancels in every symbol with CXL_KILL_SWITCH.

Memory: a live order is one 64-byte pool struct plus one 8-byte hash slot (the table grows at
50 % load, so 16-32 bytes per order) plus its share of a 40-byte price level; the pool grows in
chunks of max(64 Ki orders, 1/8 of the pool).  An iceberg adds a 24-byte reserve slot, a pending
stop a 16-byte stop-list entry.  A price level that empties below the best one stays in its
sorted array (so an order moving back to that price costs no memmove) until empty levels are
half the array and a new level is inserted, which squeezes them out.

``snapshot()`` / ``MatchingCore.restore()`` save and rebuild the whole state (format in
``snapshot``'s docstring).

Not thread-safe: one thread at a time may call into a core (``process`` releases the GIL, so do
not call other methods from another thread while it runs).
"""
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from matching.records cimport (
    CMD_BOOK_QUERY,
    CMD_CANCEL,
    CMD_END_OF_SESSION,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_ADMIN,
    CMD_REPLACE,
    CMD_RISK_REJECT,
    CMD_SESSION_OPEN,
    CMD_SESSION_STATE,
    CMD_SYMBOL_ADD,
    CXL_DISCONNECT,
    CXL_EXPIRED,
    CXL_FOK_UNFILLED,
    CXL_IOC_REMAINDER,
    CXL_KILL_SWITCH,
    CXL_MASS_CANCEL,
    CXL_NO_LIQUIDITY,
    CXL_SELF_TRADE,
    CXL_USER,
    EVT_ACCEPTED,
    EVT_BOOK_LEVEL,
    EVT_BOOK_SNAPSHOT,
    EVT_CANCEL_REJECTED,
    EVT_CANCELED,
    EVT_FILL,
    EVT_MASS_CANCEL_DONE,
    EVT_REJECTED,
    EVT_REPLACED,
    EVT_TRIGGERED,
    FLAG_POST_ONLY,
    ORD_LIMIT,
    ORD_MARKET,
    ORD_STOP,
    ORD_STOP_LIMIT,
    REJ_DUPLICATE_CL_ORD_ID,
    REJ_INVALID_FIELD,
    REJ_INVALID_PRICE,
    REJ_INVALID_QUANTITY,
    REJ_POST_ONLY_WOULD_TAKE,
    REJ_UNKNOWN_ORDER,
    REJ_UNKNOWN_SYMBOL,
    SCOPE_ACCOUNT,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST,
    STP_CANCEL_OLDEST,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
    UNKNOWN_SYMBOL_ID,
    Command,
    Event,
)
from matching.ring cimport SpscRing


cdef extern from "crc32c.h" nogil:
    void hftgw_crc32c_init(int force_sw)
    uint32_t hftgw_crc32c(uint32_t crc, const void *p, size_t n)

hftgw_crc32c_init(0)

#: book query depth used when a command asks for 0 levels, and the most it may ask for
DEFAULT_BOOK_DEPTH = 10
MAX_BOOK_DEPTH = 100
#: most symbols one core holds (symbol ids are uint16 inside the order struct)
MAX_SYMBOL_COUNT = MAX_SYMBOLS
cdef uint32_t _DEF_DEPTH = 10
cdef uint32_t _MAX_DEPTH = 100
cdef uint32_t _INITIAL_LEVELS = 64
cdef uint32_t _INITIAL_STOPS = 8
cdef uint32_t _MAX_POOL = 0xFFFFFFFE     # NIL is 0xFFFFFFFF
cdef uint32_t _POOL_CHUNK = 1 << 16

# mass-cancel selection modes of _cancel_many
cdef enum:
    SEL_SESSION = 0
    SEL_ACCOUNT = 1
    SEL_DAY = 2

# snapshot format (see MatchingCore.snapshot)
cdef enum:
    SNAPSHOT_FORMAT = 1
    _SNAP_HEADER = 64
    _SNAP_SYMBOL = 48
    _SNAP_LEVEL = 16
    _SNAP_ORDER = 72
    _SNAP_TRAILER = 8


# ------------------------------------------------------------------------------------ helpers

cdef inline uint32_t _hash(uint32_t session_id, uint64_t cl_ord_id) noexcept nogil:
    # splitmix64 finalizer: ClOrdIDs are often sequential, the low bits must still spread
    cdef uint64_t x = cl_ord_id ^ (<uint64_t>session_id * <uint64_t>0x9E3779B97F4A7C15ULL)
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EBULL
    x ^= x >> 31
    return <uint32_t>x


cdef inline uint64_t _ice_hash(uint32_t idx) noexcept nogil:
    return (<uint64_t>idx * <uint64_t>0x9E3779B97F4A7C15ULL) >> 32


cdef inline uint32_t _level_pos(const BookSide *bs, uint8_t side, int64_t price) noexcept nogil:
    # Index of the level holding `price`, or where such a level would be inserted.  Levels are
    # sorted worst..best (bids ascending, asks descending).  The touch is checked first, as most
    # traffic lands there; then a branch-free lower bound over the rest (the compiler turns the
    # conditional step into a cmov, so each probe costs one load, not a mispredicted branch).
    cdef const Level *lv = bs.lv
    cdef const Level *base = lv
    cdef uint32_t n = bs.n, half, steps = 0
    cdef int64_t best
    if n == 0:
        return 0
    best = lv[n - 1].price
    n -= 1
    if side == SIDE_BUY:
        if price >= best:
            return n + (price > best)
        # a few steps from the touch first: new orders cluster there
        while n > 0 and steps < 6:
            if lv[n - 1].price <= price:
                return n - (lv[n - 1].price == price)
            n -= 1
            steps += 1
        if n == 0:
            return 0
        while n > 1:
            half = n >> 1
            base = base + half if base[half].price < price else base
            n -= half
        return <uint32_t>(base - lv) + (base[0].price < price)
    if price <= best:
        return n + (price < best)
    while n > 0 and steps < 6:
        if lv[n - 1].price >= price:
            return n - (lv[n - 1].price == price)
        n -= 1
        steps += 1
    if n == 0:
        return 0
    while n > 1:
        half = n >> 1
        base = base + half if base[half].price > price else base
        n -= half
    return <uint32_t>(base - lv) + (base[0].price > price)


cdef inline Level *_order_level(BookSide *bs, Order *o) noexcept nogil:
    # The level of a resting order: its hint when still right, else a search (and a new hint;
    # the 16-bit hint simply misses on sides with more than 65535 levels).
    cdef uint32_t h = o.level_hint
    if h < bs.n and bs.lv[h].price == o.price:
        return &bs.lv[h]
    h = _level_pos(bs, o.side, o.price)
    o.level_hint = <uint16_t>h
    return &bs.lv[h]


cdef inline Event *_emit(MatchingCore core, const Command *c, uint8_t typ) except NULL nogil:
    # Next free event slot, zeroed, with the fields every event copies from its command.
    cdef Event *ev
    if core._ev_room == 0:
        core._refill()
    ev = <Event *>core._evq.slot(core._ev_pos)
    core._ev_pos += 1
    core._ev_room -= 1
    # every field written once, by name: a memset of 128 bytes compiles to `rep stos` with
    # plain -O3, which costs more than the whole store sequence
    ev.seq = c.seq
    ev.ts = c.ts
    ev.session_id = c.session_id
    ev.symbol_id = c.symbol_id
    ev.type = typ
    ev.side = 0
    ev.reason = 0
    ev.contra_session = 0
    ev.cl_ord_id = 0
    ev.order_id = 0
    ev.price = 0
    ev.qty = 0
    ev.leaves = 0
    ev.ref = 0
    ev.contra_cl_ord_id = 0
    ev.contra_order_id = 0
    ev.contra_leaves = 0
    ev.count = 0
    ev.count2 = 0
    ev.ord_type = 0
    ev.tif = 0
    ev.flags = 0
    ev.pad0 = 0
    ev.pad1 = 0
    ev.recv_ts = c.ts
    return ev


cdef inline void _order_fields(Event *ev, const Order *o) noexcept nogil:
    ev.session_id = o.session_id
    ev.symbol_id = o.symbol_id
    ev.side = o.side
    ev.ord_type = o.ord_type
    ev.tif = o.tif
    ev.order_id = o.order_id
    ev.price = o.price


cdef inline void _copy_order(Order *d, const Order *o) noexcept nogil:
    # field by field for the same reason as in _emit (a struct copy becomes `rep movs`);
    # prev/next are set by _rest
    d.order_id = o.order_id
    d.cl_ord_id = o.cl_ord_id
    d.price = o.price
    d.qty = o.qty
    d.leaves = o.leaves
    d.session_id = o.session_id
    d.account_id = o.account_id
    d.symbol_id = o.symbol_id
    d.level_hint = 0xFFFF
    d.side = o.side
    d.ord_type = o.ord_type
    d.tif = o.tif
    d.flags = o.flags


cdef inline void _pop_empty_top(BookSide *bs) noexcept nogil:
    # keep lv[n - 1] a level with orders: drop the empty ones that surface at the top
    while bs.n > 0 and bs.lv[bs.n - 1].count == 0:
        bs.n -= 1
        bs.empty -= 1


cdef inline void _compact(BookSide *bs) noexcept nogil:
    # drop the kept empty levels (their indices change: level hints are checked before use)
    cdef uint32_t i, j = 0
    for i in range(bs.n):
        if bs.lv[i].count:
            if i != j:
                bs.lv[j] = bs.lv[i]
            j += 1
    bs.n = j
    bs.empty = 0


cdef inline uint32_t _top_levels(const BookSide *bs, uint32_t depth, uint32_t *scan) noexcept nogil:
    # how many non-empty levels the best `depth` are (at most), and how many array slots from
    # the top hold them
    cdef uint32_t k = bs.n, got = 0
    while k > 0 and got < depth:
        k -= 1
        if bs.lv[k].count:
            got += 1
    scan[0] = bs.n - k
    return got


cdef inline bint _crosses(uint8_t taker_side, int64_t limit, int64_t level_price) noexcept nogil:
    if taker_side == SIDE_BUY:
        return level_price <= limit
    return level_price >= limit


cdef inline bint _is_market(uint8_t ord_type) noexcept nogil:
    return ord_type == ORD_MARKET or ord_type == ORD_STOP


cdef inline uint8_t _stp_of(const Order *o) noexcept nogil:
    return (o.flags >> STP_SHIFT) & 7


cdef inline int64_t _stop_px(const Order *o) noexcept nogil:
    # a pending stop is in no level, so its prev/next words hold the stop price
    cdef int64_t px
    memcpy(&px, &o.prev, 8)
    return px


cdef inline void _set_stop_px(Order *o, int64_t px) noexcept nogil:
    memcpy(&o.prev, &px, 8)


cdef inline bint _stop_met(uint8_t side, int64_t stop_px, int64_t lo, int64_t hi) noexcept nogil:
    # buy stops fire at a trade at or above the stop price, sell stops at or below
    if side == SIDE_BUY:
        return stop_px <= hi
    return stop_px >= lo


cdef inline bint _farther(uint8_t side, int64_t a, int64_t b) noexcept nogil:
    # stop price a triggers strictly later than stop price b on this side
    if side == SIDE_BUY:
        return a > b
    return a < b


cdef inline uint32_t _stop_lower(const StopSide *ss, uint8_t side, int64_t px) noexcept nogil:
    # first index whose stop price does not trigger strictly later than px
    cdef uint32_t lo = 0, hi = ss.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if _farther(side, ss.e[mid].stop_px, px):
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline bint _worse(uint8_t side, int64_t a, int64_t b) noexcept nogil:
    # price a is strictly worse than price b for a resting order of this side
    if side == SIDE_BUY:
        return a < b
    return a > b


cdef inline void _st32(char *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)          # x86-64/aarch64 are little-endian, as the format


cdef inline void _st64(char *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline uint32_t _ld32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _ld64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


# ------------------------------------------------------------------------------------- core

cdef class MatchingCore:
    """Price-time-priority matching for ``len(symbols)`` books.

    symbols: ``symbols[i] = (tick_units, max_qty_lots)`` for symbol id ``i``; both positive; at
    most 65535 symbols.  initial_orders: live-order pool capacity to preallocate (the pool grows
    in chunks).  Raises ValueError for a bad symbol table or capacity, MemoryError if allocation
    fails.

    ``on_events_full``: a zero-argument callable, set by the owner, called (with the GIL) when
    the events ring fills in the middle of a command; it must consume events from that ring.
    """

    def __cinit__(self, symbols, initial_orders=1 << 16):
        cdef uint32_t i
        cdef Py_ssize_t n = len(symbols)
        cdef uint64_t cap
        if n > MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols")
        if not 1 <= initial_orders <= (1 << 31):
            raise ValueError("initial_orders must be in [1, 2**31]")
        self.books = <Book *>calloc(max(n, 1), sizeof(Book))
        if self.books == NULL:
            raise MemoryError()
        for i in range(<uint32_t>n):
            tick, max_qty = symbols[i]
            if tick <= 0 or max_qty <= 0:
                raise ValueError(f"symbol {i}: tick and max_qty must be positive, got {symbols[i]!r}")
            self._init_book(&self.books[i], tick, max_qty)
            self.n_symbols = i + 1
        self.pool_cap = <uint32_t>initial_orders
        self._pool_mem = malloc(<size_t>self.pool_cap * sizeof(Order) + 64)
        if self._pool_mem == NULL:
            raise MemoryError()
        self.pool = <Order *>((<uintptr_t>self._pool_mem + 63) & ~(<uintptr_t>63))
        self.free_head = NIL
        cap = 16
        while cap < 2 * <uint64_t>initial_orders:
            cap <<= 1
        self.htab = <HSlot *>calloc(cap, sizeof(HSlot))
        if self.htab == NULL:
            raise MemoryError()
        self.hcap = cap
        self.ice = <IceSlot *>calloc(16, sizeof(IceSlot))
        if self.ice == NULL:
            raise MemoryError()
        self.ice_cap = 16
        self._next_order_id = 1
        self._next_trade_id = 1
        self._win_lo = INT64_MAX
        self._win_hi = INT64_MIN
        self.on_events_full = None

    def __dealloc__(self):
        cdef uint32_t i
        if self.books != NULL:
            for i in range(self.n_symbols):
                free(self.books[i].side[0].lv)
                free(self.books[i].side[1].lv)
                free(self.books[i].stops[0].e)
                free(self.books[i].stops[1].e)
            free(self.books)
        free(self._pool_mem)
        free(self.htab)
        free(self.ice)

    cdef int _init_book(self, Book *bk, int64_t tick, uint64_t max_qty) except -1:
        cdef int s
        memset(bk, 0, sizeof(Book))
        bk.tick = tick
        bk.max_qty = max_qty
        for s in range(2):
            bk.side[s].lv = <Level *>malloc(_INITIAL_LEVELS * sizeof(Level))
            bk.stops[s].e = <StopEntry *>malloc(_INITIAL_STOPS * sizeof(StopEntry))
            if bk.side[s].lv == NULL or bk.stops[s].e == NULL:
                raise MemoryError()
            bk.side[s].cap = _INITIAL_LEVELS
            bk.stops[s].cap = _INITIAL_STOPS
        return 0

    cdef int _add_book(self, int64_t tick, uint64_t max_qty) except -1 nogil:
        cdef Book *books = <Book *>realloc(self.books, (<size_t>self.n_symbols + 1) * sizeof(Book))
        if books == NULL:
            with gil:
                raise MemoryError()
        self.books = books
        with gil:
            self._init_book(&self.books[self.n_symbols], tick, max_qty)
        self.n_symbols += 1
        return 0

    # ------------------------------------------------------------------ memory management

    cdef int _grow_pool(self) except -1 nogil:
        # Chunks of max(64 Ki orders, 1/8 of the pool): little slack at any size, and an
        # amortised O(1) cost per order, as realloc of a big block is an mremap (no copy) on
        # Linux.  realloc keeps 16-byte alignment only, so re-align by hand when the offset of
        # the aligned view inside the block changes.
        cdef uint64_t step = self.pool_cap >> 3
        cdef uint64_t new_cap
        cdef size_t old_off = <char *>self.pool - <char *>self._pool_mem, new_off
        cdef void *mem
        if step < _POOL_CHUNK:
            step = _POOL_CHUNK
        new_cap = <uint64_t>self.pool_cap + step
        if new_cap > _MAX_POOL:
            new_cap = _MAX_POOL
        if new_cap <= self.pool_cap:
            with gil:
                raise MemoryError("order pool is at its 2**32 - 2 limit")
        mem = realloc(self._pool_mem, new_cap * sizeof(Order) + 64)
        if mem == NULL:
            with gil:
                raise MemoryError()
        new_off = ((<uintptr_t>mem + 63) & ~(<uintptr_t>63)) - <uintptr_t>mem
        if new_off != old_off:
            memmove(<char *>mem + new_off, <char *>mem + old_off, <size_t>self.pool_used * sizeof(Order))
        self._pool_mem = mem
        self.pool = <Order *>(<char *>mem + new_off)
        self.pool_cap = <uint32_t>new_cap
        return 0

    cdef int _grow_hash(self) except -1 nogil:
        cdef uint64_t new_cap = self.hcap * 2, mask = new_cap - 1, i, j
        cdef HSlot *t = <HSlot *>calloc(new_cap, sizeof(HSlot))
        if t == NULL:
            with gil:
                raise MemoryError()
        for i in range(self.hcap):
            if self.htab[i].idx1 != 0:
                j = self.htab[i].h & mask
                while t[j].idx1 != 0:
                    j = (j + 1) & mask
                t[j] = self.htab[i]
        free(self.htab)
        self.htab = t
        self.hcap = new_cap
        return 0

    cdef int _grow_levels(self, BookSide *bs) except -1 nogil:
        cdef Level *lv = <Level *>realloc(bs.lv, <size_t>bs.cap * 2 * sizeof(Level))
        if lv == NULL:
            with gil:
                raise MemoryError()
        bs.lv = lv
        bs.cap *= 2
        return 0

    cdef int _grow_ice(self) except -1 nogil:
        cdef uint64_t new_cap = self.ice_cap * 2, mask = new_cap - 1, i, j
        cdef IceSlot *t = <IceSlot *>calloc(new_cap, sizeof(IceSlot))
        if t == NULL:
            with gil:
                raise MemoryError()
        for i in range(self.ice_cap):
            if self.ice[i].key1 != 0:
                j = _ice_hash(self.ice[i].key1 - 1) & mask
                while t[j].key1 != 0:
                    j = (j + 1) & mask
                t[j] = self.ice[i]
        free(self.ice)
        self.ice = t
        self.ice_cap = new_cap
        return 0

    cdef inline uint32_t _alloc(self) except? NIL nogil:
        cdef uint32_t idx = self.free_head
        if idx != NIL:
            self.free_head = self.pool[idx].next
        else:
            if self.pool_used == self.pool_cap:
                self._grow_pool()
            idx = self.pool_used
            self.pool_used += 1
        self.resting += 1
        return idx

    cdef inline void _release(self, uint32_t idx) noexcept nogil:
        self.pool[idx].next = self.free_head
        self.free_head = idx
        self.resting -= 1

    # ------------------------------------------------------------------------ hash table

    cdef uint32_t _hfind(self, uint32_t session_id, uint64_t cl_ord_id, uint32_t h,
                         uint64_t *pos) noexcept nogil:
        # Pool index of the live order (session_id, cl_ord_id), or NIL; *pos = its slot, or
        # the empty slot that ended the probe.
        cdef uint64_t mask = self.hcap - 1, i = h & mask
        cdef HSlot *e
        cdef Order *o
        while True:
            e = &self.htab[i]
            if e.idx1 == 0:
                pos[0] = i
                return NIL
            if e.h == h:
                o = &self.pool[e.idx1 - 1]
                if o.cl_ord_id == cl_ord_id and o.session_id == session_id:
                    pos[0] = i
                    return e.idx1 - 1
            i = (i + 1) & mask

    cdef void _hdel_at(self, uint64_t pos) noexcept nogil:
        # Backward-shift deletion: pull each following entry of the cluster into the hole
        # unless that would move it before its home bucket; no tombstones, so probe lengths
        # stay those of the live entries.
        cdef uint64_t mask = self.hcap - 1, i = pos, j = pos, home
        while True:
            j = (j + 1) & mask
            if self.htab[j].idx1 == 0:
                break
            home = self.htab[j].h & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                self.htab[i] = self.htab[j]
                i = j
        self.htab[i].idx1 = 0
        self.hcount -= 1

    cdef void _hdel(self, uint32_t idx) noexcept nogil:
        cdef Order *o = &self.pool[idx]
        cdef uint64_t mask = self.hcap - 1, i = _hash(o.session_id, o.cl_ord_id) & mask
        while self.htab[i].idx1 != idx + 1:
            i = (i + 1) & mask
        self._hdel_at(i)

    cdef int _hput(self, uint32_t idx) except -1 nogil:
        # The key must not be present.
        cdef Order *o = &self.pool[idx]
        cdef uint32_t h = _hash(o.session_id, o.cl_ord_id)
        cdef uint64_t mask, i
        if (self.hcount + 1) * 2 > self.hcap:
            self._grow_hash()
        mask = self.hcap - 1
        i = h & mask
        while self.htab[i].idx1 != 0:
            i = (i + 1) & mask
        self.htab[i].h = h
        self.htab[i].idx1 = idx + 1
        self.hcount += 1
        return 0

    # ------------------------------------------------------------------ iceberg reserves

    cdef IceSlot *_ice(self, uint32_t idx) noexcept nogil:
        # The reserve of an order flagged OF_ICEBERG (it is always there).
        cdef uint64_t mask = self.ice_cap - 1, i = _ice_hash(idx) & mask
        while self.ice[i].key1 != idx + 1:
            i = (i + 1) & mask
        return &self.ice[i]

    cdef int _ice_put(self, uint32_t idx, uint64_t peak, uint64_t hidden) except -1 nogil:
        # Insert or update.
        cdef uint64_t mask, i
        if (self.ice_count + 1) * 2 > self.ice_cap:
            self._grow_ice()
        mask = self.ice_cap - 1
        i = _ice_hash(idx) & mask
        while self.ice[i].key1 != 0 and self.ice[i].key1 != idx + 1:
            i = (i + 1) & mask
        if self.ice[i].key1 == 0:
            self.ice[i].key1 = idx + 1
            self.ice_count += 1
        self.ice[i].peak = peak
        self.ice[i].hidden = hidden
        return 0

    cdef void _ice_del(self, uint32_t idx) noexcept nogil:
        cdef uint64_t mask = self.ice_cap - 1, i, j, home
        cdef IceSlot *e = self._ice(idx)
        i = j = <uint64_t>(e - self.ice)
        while True:                       # backward-shift deletion, as in the order hash
            j = (j + 1) & mask
            if self.ice[j].key1 == 0:
                break
            home = _ice_hash(self.ice[j].key1 - 1) & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                self.ice[i] = self.ice[j]
                i = j
        self.ice[i].key1 = 0
        self.ice_count -= 1

    cdef inline uint64_t _hidden(self, uint32_t idx, const Order *o) noexcept nogil:
        if o.flags & OF_ICEBERG:
            return self._ice(idx).hidden
        return 0

    cdef void _forget(self, uint32_t idx) noexcept nogil:
        # A live order leaves for good: out of the hash (and the reserve table), slot freed.
        if self.pool[idx].flags & OF_ICEBERG:
            self._ice_del(idx)
        self._hdel(idx)
        self._release(idx)

    # ------------------------------------------------------------------------ stop lists

    cdef int _stop_insert(self, StopSide *ss, uint8_t side, int64_t px, uint32_t idx) except -1 nogil:
        # Behind the stops of the same price (they arrived first), i.e. nearer index 0.
        cdef uint32_t pos
        cdef StopEntry *e
        if ss.n == ss.cap:
            e = <StopEntry *>realloc(ss.e, <size_t>ss.cap * 2 * sizeof(StopEntry))
            if e == NULL:
                with gil:
                    raise MemoryError()
            ss.e = e
            ss.cap *= 2
        pos = _stop_lower(ss, side, px)
        if pos < ss.n:
            memmove(&ss.e[pos + 1], &ss.e[pos], (ss.n - pos) * sizeof(StopEntry))
        ss.e[pos].stop_px = px
        ss.e[pos].idx = idx
        ss.e[pos]._pad = 0
        ss.n += 1
        _set_stop_px(&self.pool[idx], px)
        return 0

    cdef void _stop_remove(self, StopSide *ss, uint8_t side, int64_t px, uint32_t idx) noexcept nogil:
        cdef uint32_t pos = _stop_lower(ss, side, px)
        while pos < ss.n and ss.e[pos].idx != idx:
            pos += 1
        ss.n -= 1
        if pos < ss.n:
            memmove(&ss.e[pos], &ss.e[pos + 1], (ss.n - pos) * sizeof(StopEntry))

    # ------------------------------------------------------------------------ book levels

    cdef int _rest(self, Book *bk, uint32_t idx, uint64_t hidden) except -1 nogil:
        # Append pool order idx (leaves > 0) at the back of its price level; hidden: its
        # iceberg reserve (0 for a plain order).
        cdef Order *o = &self.pool[idx]
        cdef BookSide *bs = &bk.side[o.side - 1]
        cdef uint32_t pos = _level_pos(bs, o.side, o.price)
        cdef Level *L
        o.level_hint = <uint16_t>pos
        if pos < bs.n and bs.lv[pos].price == o.price:
            L = &bs.lv[pos]
            if L.count == 0:                  # a kept empty level comes back to life
                bs.empty -= 1
                L.qty = o.leaves
                L.hidden = hidden
                L.head = idx
                L.tail = idx
                L.count = 1
                o.prev = NIL
                o.next = NIL
                return 0
            o.prev = L.tail
            o.next = NIL
            self.pool[L.tail].next = idx
            L.tail = idx
            L.count += 1
            L.qty += o.leaves
            L.hidden += hidden
            return 0
        if bs.empty and (bs.n == bs.cap or (bs.empty > 16 and bs.empty * 2 > bs.n)):
            # a new level would move memory anyway: first squeeze out the empty ones (only
            # here, never while a caller walks the levels)
            _compact(bs)
            pos = _level_pos(bs, o.side, o.price)
            o.level_hint = <uint16_t>pos
        if bs.n == bs.cap:
            self._grow_levels(bs)
        L = &bs.lv[pos]
        if pos < bs.n:
            memmove(L + 1, L, (bs.n - pos) * sizeof(Level))
        bs.n += 1
        L.price = o.price
        L.qty = o.leaves
        L.hidden = hidden
        L.head = idx
        L.tail = idx
        L.count = 1
        L._pad = 0
        o.prev = NIL
        o.next = NIL
        return 0

    cdef int _rest_split(self, Book *bk, uint32_t idx, uint64_t peak) except -1 nogil:
        # Rest pool order idx whose leaves are its TOTAL leaves: an iceberg (peak > 0) shows
        # min(peak, leaves) and keeps the rest in its reserve.
        cdef Order *o = &self.pool[idx]
        cdef uint64_t hidden = 0
        if peak:
            if o.leaves > peak:
                hidden = o.leaves - peak
                o.leaves = peak
            o.flags |= OF_ICEBERG
            self._ice_put(idx, peak, hidden)
        return self._rest(bk, idx, hidden)

    cdef void _level_emptied(self, BookSide *bs, uint32_t pos) noexcept nogil:
        # The level at pos has no order left: the best one goes (with any empty ones under
        # it), another stays in place, empty, until it is reused or compacted away.
        if pos == bs.n - 1:
            bs.n -= 1
            _pop_empty_top(bs)
        else:
            bs.empty += 1

    cdef void _unlink(self, Book *bk, Order *o, uint32_t idx) noexcept nogil:
        # Take a resting order out of its level (an emptied level: see _level_emptied).
        cdef BookSide *bs = &bk.side[o.side - 1]
        cdef Level *L = _order_level(bs, o)
        cdef uint32_t pos = L - bs.lv
        if o.prev != NIL:
            self.pool[o.prev].next = o.next
        else:
            L.head = o.next
        if o.next != NIL:
            self.pool[o.next].prev = o.prev
        else:
            L.tail = o.prev
        L.count -= 1
        L.qty -= o.leaves
        if o.flags & OF_ICEBERG:
            L.hidden -= self._ice(idx).hidden
        if L.count == 0:
            self._level_emptied(bs, pos)

    # --------------------------------------------------------------------------- matching

    cdef int _self_trade(self, Level *L, Order *t, Order *m, uint32_t mi, uint8_t stp,
                         const Command *c) except -1 nogil:
        # Self-trade prevention between taker t and the level's head order m (same account),
        # by the taker's mode.  Returns 1 when the taker is done, 0 to go on matching.
        cdef uint64_t hid = 0, total, x, dh, dv
        cdef IceSlot *ice = NULL
        if stp == STP_CANCEL_NEWEST:
            self._canceled(c, t, t.leaves, CXL_SELF_TRADE, t.cl_ord_id, 0)
            t.leaves = 0
            return 1
        if m.flags & OF_ICEBERG:
            ice = self._ice(mi)
            hid = ice.hidden
        total = m.leaves + hid
        if stp == STP_DECREMENT:
            x = total if total < t.leaves else t.leaves
            self._canceled(c, m, x, CXL_SELF_TRADE, m.cl_ord_id, total - x)
            dh = hid if hid < x else x           # the reserve goes first, the shown lots last
            dv = x - dh
            if ice != NULL:
                ice.hidden -= dh
            L.hidden -= dh
            L.qty -= dv
            m.leaves -= dv
            if total == x:
                self._drop_head(L, m, mi)
            t.leaves -= x
            self._canceled(c, t, x, CXL_SELF_TRADE, t.cl_ord_id, t.leaves)
            return t.leaves == 0
        # CANCEL_OLDEST, CANCEL_BOTH: the maker goes
        self._canceled(c, m, total, CXL_SELF_TRADE, m.cl_ord_id, 0)
        L.qty -= m.leaves
        L.hidden -= hid
        self._drop_head(L, m, mi)
        if stp == STP_CANCEL_BOTH:
            self._canceled(c, t, t.leaves, CXL_SELF_TRADE, t.cl_ord_id, 0)
            t.leaves = 0
            return 1
        return 0

    cdef inline void _drop_head(self, Level *L, Order *m, uint32_t mi) noexcept nogil:
        # Remove the level's head order m (its quantities already taken off the level) and
        # forget it; an emptied level is dropped by the caller (it is the best one).
        L.head = m.next
        L.count -= 1
        if L.head == NIL:
            L.tail = NIL
        else:
            self.pool[L.head].prev = NIL
        self._forget(mi)

    cdef int _match(self, Book *bk, Order *t, const Command *c) except -1 nogil:
        # Fill taker t (leaves = its total leaves) against the opposite side, best level
        # first, FIFO within a level.
        cdef BookSide *opp = &bk.side[2 - t.side]
        cdef bint market = _is_market(t.ord_type)
        cdef uint8_t stp = _stp_of(t)
        cdef uint32_t acct = t.account_id
        cdef Level *L
        cdef Order *m
        cdef IceSlot *ice
        cdef uint32_t mi
        cdef uint64_t x, s
        cdef int64_t first_px = 0, px = 0
        cdef bint traded = False
        cdef Event *ev
        while t.leaves > 0 and opp.n > 0:
            L = &opp.lv[opp.n - 1]
            if not market and not _crosses(t.side, t.price, L.price):
                break
            while t.leaves > 0 and L.head != NIL:
                mi = L.head
                m = &self.pool[mi]
                if stp != STP_NONE and m.account_id == acct:
                    self._self_trade(L, t, m, mi, stp, c)
                    continue
                x = m.leaves if m.leaves < t.leaves else t.leaves
                # take the slot before changing the book, so that an exception out of
                # on_events_full leaves the book consistent
                ev = _emit(self, c, EVT_FILL)
                m.leaves -= x
                t.leaves -= x
                L.qty -= x
                ev.session_id = t.session_id
                ev.symbol_id = t.symbol_id
                ev.side = t.side
                ev.ord_type = t.ord_type
                ev.tif = t.tif
                ev.contra_session = m.session_id
                ev.cl_ord_id = t.cl_ord_id
                ev.order_id = t.order_id
                ev.price = L.price
                ev.qty = x
                ev.leaves = t.leaves
                ev.ref = self._next_trade_id
                ev.contra_cl_ord_id = m.cl_ord_id
                ev.contra_order_id = m.order_id
                ev.contra_leaves = m.leaves
                self._next_trade_id += 1
                if not traded:
                    traded = True
                    first_px = L.price
                px = L.price
                if m.leaves == 0:
                    if m.flags & OF_ICEBERG:
                        ice = self._ice(mi)
                        if ice.hidden:
                            # next slice, to the back of the queue
                            s = ice.peak if ice.peak < ice.hidden else ice.hidden
                            ice.hidden -= s
                            m.leaves = s
                            L.qty += s
                            L.hidden -= s
                            ev.contra_leaves = s + ice.hidden
                            if L.count > 1:
                                L.head = m.next
                                self.pool[L.head].prev = NIL
                                m.prev = L.tail
                                m.next = NIL
                                self.pool[L.tail].next = mi
                                L.tail = mi
                            continue
                    self._drop_head(L, m, mi)
                elif m.flags & OF_ICEBERG:
                    ev.contra_leaves = m.leaves + self._ice(mi).hidden
            if L.count == 0:
                opp.n -= 1
                _pop_empty_top(opp)
        if traded:
            bk.last_px = px
            bk.has_last = 1
            # a taker's fills move one way, so first and last bound its prices
            if first_px > px:
                first_px, px = px, first_px
            if first_px < self._win_lo:
                self._win_lo = first_px
            if px > self._win_hi:
                self._win_hi = px
        return 0

    cdef bint _fok_fillable(self, Book *bk, const Order *t) noexcept nogil:
        # Can t fill completely now without a self-trade prevention action?  Level totals
        # answer, except that with STP on, a level holding an order of t's account is walked:
        # only the shown lots queued ahead of that order are reachable (the reserves of
        # icebergs ahead of it requeue behind it).
        cdef const BookSide *opp = &bk.side[2 - t.side]
        cdef bint market = _is_market(t.ord_type)
        cdef bint stp_on = _stp_of(t) != STP_NONE
        cdef uint64_t avail = 0, need = t.leaves
        cdef uint32_t i = opp.n, oi
        cdef const Level *L
        cdef const Order *m
        while i > 0 and avail < need:
            i -= 1
            L = &opp.lv[i]
            if not market and not _crosses(t.side, t.price, L.price):
                break
            if stp_on:
                oi = L.head
                while oi != NIL:
                    m = &self.pool[oi]
                    if m.account_id == t.account_id:
                        return False
                    avail += m.leaves
                    if avail >= need:
                        return True
                    oi = m.next
                avail += L.hidden
            else:
                avail += L.qty + L.hidden
        return avail >= need

    cdef int _execute(self, Book *bk, Order *t, uint32_t idx, uint64_t peak,
                      const Command *c) except -1 nogil:
        # Run t as the taker: FOK check, match, then rest or cancel the remainder.  idx: t's
        # pool index (a replaced order or a triggered stop, t is then &pool[idx]) or NIL (a
        # new order on the stack, given a slot only if it rests); peak: iceberg display qty.
        cdef BookSide *opp = &bk.side[2 - t.side]
        if t.tif == TIF_FOK and not self._fok_fillable(bk, t):
            self._canceled(c, t, t.leaves, CXL_FOK_UNFILLED, t.cl_ord_id, 0)
            t.leaves = 0
        elif opp.n > 0 and (_is_market(t.ord_type) or _crosses(t.side, t.price, opp.lv[opp.n - 1].price)):
            self._match(bk, t, c)              # (a passive order does not pay for the call)
        if t.leaves > 0:
            if _is_market(t.ord_type):
                self._canceled(c, t, t.leaves, CXL_NO_LIQUIDITY, t.cl_ord_id, 0)
                t.leaves = 0
            elif t.tif == TIF_IOC or t.tif == TIF_FOK:
                self._canceled(c, t, t.leaves, CXL_IOC_REMAINDER, t.cl_ord_id, 0)
                t.leaves = 0
        if t.leaves == 0:
            if idx != NIL:
                self._forget(idx)
            return 0
        if idx == NIL:
            idx = self._alloc()
            _copy_order(&self.pool[idx], t)
            self.pool[idx].flags &= ~(<uint8_t>OF_ICEBERG)   # _rest_split sets it with the reserve
            self._hput(idx)
        if peak:
            return self._rest_split(bk, idx, peak)
        return self._rest(bk, idx, 0)

    cdef int _run_stops(self, Book *bk, const Command *c) except -1 nogil:
        # Fire the stops triggered by this command's trades, one at a time (see the module
        # docstring for the order); each one's own trades widen the window.
        cdef StopSide *ss
        cdef uint32_t idx
        cdef int64_t px
        cdef Order *o
        cdef Event *ev
        while True:
            if bk.stops[0].n and bk.stops[0].e[bk.stops[0].n - 1].stop_px <= self._win_hi:
                ss = &bk.stops[0]
            elif bk.stops[1].n and bk.stops[1].e[bk.stops[1].n - 1].stop_px >= self._win_lo:
                ss = &bk.stops[1]
            else:
                return 0
            ss.n -= 1
            idx = ss.e[ss.n].idx
            px = ss.e[ss.n].stop_px
            o = &self.pool[idx]
            o.flags &= ~(<uint8_t>OF_STOP)
            ev = _emit(self, c, EVT_TRIGGERED)
            _order_fields(ev, o)
            ev.cl_ord_id = o.cl_ord_id
            ev.qty = o.qty
            ev.leaves = o.leaves
            ev.ref = <uint64_t>px
            self._execute(bk, o, idx, 0, c)

    # ------------------------------------------------------------------------- events

    cdef int _refill(self) except -1 nogil:
        # The events ring has no slot left for the current command: publish what we wrote,
        # and if the consumer has not freed anything meanwhile, ask the owner to drain.
        self._evq.publish(self._ev_pos - self._evq.write_pos())
        self._ev_room = self._evq.free_slots()
        if self._ev_room != 0:
            return 0
        with gil:
            cb = self.on_events_full
            if cb is None:
                raise RuntimeError("events ring full in the middle of a command and on_events_full is None")
            cb()
        self._ev_room = self._evq.free_slots()
        if self._ev_room == 0:
            with gil:
                raise RuntimeError("on_events_full() did not free any slot of the events ring")
        return 0

    cdef int _reject(self, const Command *c, uint16_t reason, uint64_t cl_ord_id) except -1 nogil:
        cdef Event *ev = _emit(self, c, EVT_REJECTED)
        ev.side = c.side
        ev.ord_type = c.ord_type
        ev.tif = c.tif
        ev.reason = reason
        ev.cl_ord_id = cl_ord_id
        ev.price = c.price
        ev.qty = c.qty
        return 0

    cdef int _cancel_reject(self, const Command *c, uint16_t reason, Order *o) except -1 nogil:
        cdef Event *ev = _emit(self, c, EVT_CANCEL_REJECTED)
        ev.side = c.side
        ev.ord_type = c.ord_type
        ev.tif = c.tif
        ev.reason = reason
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.price = c.price
        ev.qty = c.qty
        if o != NULL:
            ev.order_id = o.order_id
            ev.leaves = o.leaves + self._hidden(<uint32_t>(o - self.pool), o)
        return 0

    cdef int _canceled(self, const Command *c, const Order *o, uint64_t qty, uint16_t reason,
                       uint64_t cl_ord_id, uint64_t leaves) except -1 nogil:
        # cl_ord_id: the request of o's session that caused it, else o's own ClOrdID;
        # leaves > 0: a partial cancel (self-trade prevention DECREMENT)
        cdef Event *ev = _emit(self, c, EVT_CANCELED)
        _order_fields(ev, o)
        ev.reason = reason
        ev.cl_ord_id = cl_ord_id
        ev.ref = o.cl_ord_id
        ev.qty = qty
        ev.leaves = leaves
        return 0

    # ---------------------------------------------------------------------- commands

    cdef int _on_new(self, const Command *c) except -1 nogil:
        cdef Book *bk
        cdef BookSide *opp
        cdef Order t
        cdef Event *ev
        cdef uint64_t pos
        cdef uint32_t idx
        cdef uint8_t ot = c.ord_type
        cdef bint has_limit, is_stop
        if c.symbol_id >= self.n_symbols:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
        if ((c.side != SIDE_BUY and c.side != SIDE_SELL)
                or (ot != ORD_LIMIT and ot != ORD_MARKET and ot != ORD_STOP and ot != ORD_STOP_LIMIT)
                or (c.tif != TIF_GTC and c.tif != TIF_IOC and c.tif != TIF_FOK and c.tif != TIF_DAY)
                or (c.flags & ~(<uint8_t>FLAG_POST_ONLY)) or c.stp > STP_DECREMENT):
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        bk = &self.books[c.symbol_id]
        if c.qty == 0 or c.qty > bk.max_qty:
            return self._reject(c, REJ_INVALID_QUANTITY, c.cl_ord_id)
        has_limit = ot == ORD_LIMIT or ot == ORD_STOP_LIMIT
        is_stop = ot == ORD_STOP or ot == ORD_STOP_LIMIT
        if has_limit and (c.price <= 0 or c.price % bk.tick != 0):
            return self._reject(c, REJ_INVALID_PRICE, c.cl_ord_id)
        if is_stop:
            if c.stop_price <= 0 or c.stop_price % bk.tick != 0:
                return self._reject(c, REJ_INVALID_PRICE, c.cl_ord_id)
        elif c.stop_price != 0:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.display_qty:
            if ot != ORD_LIMIT or (c.tif != TIF_GTC and c.tif != TIF_DAY):
                return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
            if c.display_qty >= c.qty:
                return self._reject(c, REJ_INVALID_QUANTITY, c.cl_ord_id)
        if self._hfind(c.session_id, c.cl_ord_id, _hash(c.session_id, c.cl_ord_id), &pos) != NIL:
            return self._reject(c, REJ_DUPLICATE_CL_ORD_ID, c.cl_ord_id)
        opp = &bk.side[2 - c.side]
        if c.flags & FLAG_POST_ONLY:
            if is_stop:
                return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
            if opp.n > 0 and (ot == ORD_MARKET or _crosses(c.side, c.price, opp.lv[opp.n - 1].price)):
                return self._reject(c, REJ_POST_ONLY_WOULD_TAKE, c.cl_ord_id)
            if ot == ORD_MARKET or (c.tif != TIF_GTC and c.tif != TIF_DAY):
                return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)

        t.order_id = self._next_order_id
        self._next_order_id += 1
        t.cl_ord_id = c.cl_ord_id
        t.price = c.price if has_limit else 0
        t.qty = c.qty
        t.leaves = c.qty
        t.prev = NIL
        t.next = NIL
        t.session_id = c.session_id
        t.account_id = c.account_id
        t.symbol_id = <uint16_t>c.symbol_id
        t.level_hint = 0xFFFF
        t.side = c.side
        t.ord_type = ot
        t.tif = c.tif
        t.flags = (c.flags & FLAG_POST_ONLY) | (c.stp << STP_SHIFT)
        ev = _emit(self, c, EVT_ACCEPTED)
        _order_fields(ev, &t)
        ev.cl_ord_id = t.cl_ord_id
        ev.qty = t.qty
        ev.leaves = t.qty
        self._win_lo = INT64_MAX
        self._win_hi = INT64_MIN
        if is_stop:
            idx = self._alloc()
            _copy_order(&self.pool[idx], &t)
            self.pool[idx].flags |= OF_STOP
            self._hput(idx)
            self._stop_insert(&bk.stops[c.side - 1], c.side, c.stop_price, idx)
            if bk.has_last and _stop_met(c.side, c.stop_price, bk.last_px, bk.last_px):
                self._win_lo = bk.last_px          # already triggered: it runs at once
                self._win_hi = bk.last_px
        else:
            self._execute(bk, &t, NIL, c.display_qty, c)
        if self._win_hi >= self._win_lo and (bk.stops[0].n or bk.stops[1].n):
            self._run_stops(bk, c)
        return 0

    cdef int _on_cancel(self, const Command *c) except -1 nogil:
        cdef uint64_t pos
        cdef uint32_t idx = self._hfind(c.session_id, c.orig_cl_ord_id,
                                        _hash(c.session_id, c.orig_cl_ord_id), &pos)
        cdef Order *o
        cdef Book *bk
        if idx == NIL or self.pool[idx].symbol_id != c.symbol_id:
            return self._cancel_reject(c, REJ_UNKNOWN_ORDER, NULL)
        o = &self.pool[idx]
        bk = &self.books[o.symbol_id]
        self._canceled(c, o, o.leaves + self._hidden(idx, o), CXL_USER, c.cl_ord_id, 0)
        if o.flags & OF_STOP:
            self._stop_remove(&bk.stops[o.side - 1], o.side, _stop_px(o), idx)
        else:
            self._unlink(bk, o, idx)
        if o.flags & OF_ICEBERG:
            self._ice_del(idx)
        self._hdel_at(pos)
        self._release(idx)
        return 0

    cdef int _on_replace(self, const Command *c) except -1 nogil:
        cdef uint64_t pos, pos2, cum, new_leaves, hid, d, dh
        cdef uint32_t idx = self._hfind(c.session_id, c.orig_cl_ord_id,
                                        _hash(c.session_id, c.orig_cl_ord_id), &pos)
        cdef Order *o
        cdef Book *bk
        cdef BookSide *opp
        cdef StopSide *ss
        cdef Level *L
        cdef IceSlot *ice = NULL
        cdef Event *ev
        cdef int64_t price, spx
        cdef uint64_t peak = 0
        cdef bint keep
        if idx == NIL or self.pool[idx].symbol_id != c.symbol_id:
            return self._cancel_reject(c, REJ_UNKNOWN_ORDER, NULL)
        o = &self.pool[idx]
        bk = &self.books[o.symbol_id]
        if (c.cl_ord_id != c.orig_cl_ord_id
                and self._hfind(c.session_id, c.cl_ord_id, _hash(c.session_id, c.cl_ord_id), &pos2) != NIL):
            return self._cancel_reject(c, REJ_DUPLICATE_CL_ORD_ID, o)
        price = 0 if o.ord_type == ORD_STOP else c.price      # a stop (market) order has no price
        if o.ord_type != ORD_STOP and (price <= 0 or price % bk.tick != 0):
            return self._cancel_reject(c, REJ_INVALID_PRICE, o)
        if o.flags & OF_ICEBERG:
            ice = self._ice(idx)
            hid = ice.hidden
            peak = ice.peak
        else:
            hid = 0
        cum = o.qty - o.leaves - hid
        if c.qty > bk.max_qty or c.qty <= cum:
            return self._cancel_reject(c, REJ_INVALID_QUANTITY, o)
        opp = &bk.side[2 - o.side]
        if (o.flags & FLAG_POST_ONLY) and opp.n > 0 and _crosses(o.side, price, opp.lv[opp.n - 1].price):
            return self._cancel_reject(c, REJ_POST_ONLY_WOULD_TAKE, o)
        new_leaves = c.qty - cum
        if c.cl_ord_id != c.orig_cl_ord_id:
            self._hdel_at(pos)
            o.cl_ord_id = c.cl_ord_id
            self._hput(idx)
        ev = _emit(self, c, EVT_REPLACED)
        _order_fields(ev, o)
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.price = price
        ev.qty = c.qty
        ev.leaves = new_leaves
        ev.contra_leaves = o.leaves + hid         # the total leaves before (risk bookkeeping)
        # FIX: a quantity decrease at the same price keeps time priority
        keep = price == o.price and new_leaves <= o.leaves + hid
        if o.flags & OF_STOP:
            ss = &bk.stops[o.side - 1]
            spx = _stop_px(o)
            if not keep:                          # to the back of its stop price
                self._stop_remove(ss, o.side, spx, idx)
                self._stop_insert(ss, o.side, spx, idx)
            o.price = price
            o.qty = c.qty
            o.leaves = new_leaves
            return 0
        if keep:
            # the iceberg's reserve goes first, the shown lots last
            d = o.leaves + hid - new_leaves
            dh = hid if hid < d else d
            L = _order_level(&bk.side[o.side - 1], o)
            if ice != NULL:
                ice.hidden -= dh
            L.hidden -= dh
            L.qty -= d - dh
            o.leaves -= d - dh
            o.qty = c.qty
            return 0
        self._unlink(bk, o, idx)
        o.price = price
        o.qty = c.qty
        o.leaves = new_leaves                     # the total: it takes as a whole
        if ice != NULL:
            ice.hidden = 0
        self._win_lo = INT64_MAX
        self._win_hi = INT64_MIN
        self._execute(bk, o, idx, peak, c)
        if self._win_hi >= self._win_lo and (bk.stops[0].n or bk.stops[1].n):
            self._run_stops(bk, c)
        return 0

    cdef int64_t _cancel_many(self, const Command *c, uint32_t sym, uint32_t sym_end, int mode,
                              uint16_t reason, bint own_request) except -1 nogil:
        # Cancel the live orders of symbols [sym, sym_end) selected by mode (the command's
        # session or its account, and c.side with 0 = both; or DAY orders), in book order: symbol,
        # bids then asks (best level first, FIFO), then buy stops and sell stops in trigger
        # order, which makes the event order a function of the book alone, not of pool slot
        # reuse.  Returns how many.
        cdef uint32_t i, oi, nxt
        cdef int64_t count = 0
        cdef int s
        cdef BookSide *bs
        cdef StopSide *ss
        cdef Level *L
        cdef Order *o
        cdef bint hit
        cdef uint8_t side = 0 if mode == SEL_DAY else c.side      # end of session: both sides
        while sym < sym_end:
            for s in range(2):
                if side != 0 and side != s + 1:
                    continue
                bs = &self.books[sym].side[s]
                i = bs.n
                while i > 0:
                    i -= 1     # levels above i, already done, are the only ones a removal moves
                    L = &bs.lv[i]
                    oi = L.head
                    while oi != NIL:
                        o = &self.pool[oi]
                        nxt = o.next
                        if mode == SEL_SESSION:
                            hit = o.session_id == c.session_id
                        elif mode == SEL_ACCOUNT:
                            hit = o.account_id == c.account_id
                        else:
                            hit = o.tif == TIF_DAY
                        if hit:
                            self._canceled(c, o, o.leaves + self._hidden(oi, o), reason,
                                           c.cl_ord_id if own_request and o.session_id == c.session_id
                                           else o.cl_ord_id, 0)
                            self._unlink(&self.books[sym], o, oi)
                            self._forget(oi)
                            count += 1
                        oi = nxt
            for s in range(2):
                if side != 0 and side != s + 1:
                    continue
                ss = &self.books[sym].stops[s]
                i = ss.n
                while i > 0:
                    i -= 1
                    oi = ss.e[i].idx
                    o = &self.pool[oi]
                    if mode == SEL_SESSION:
                        hit = o.session_id == c.session_id
                    elif mode == SEL_ACCOUNT:
                        hit = o.account_id == c.account_id
                    else:
                        hit = o.tif == TIF_DAY
                    if hit:
                        self._canceled(c, o, o.leaves, reason,
                                       c.cl_ord_id if own_request and o.session_id == c.session_id
                                       else o.cl_ord_id, 0)
                        ss.n -= 1
                        if i < ss.n:
                            memmove(&ss.e[i], &ss.e[i + 1], (ss.n - i) * sizeof(StopEntry))
                        self._forget(oi)
                        count += 1
            sym += 1
        return count

    cdef int _on_mass_cancel(self, const Command *c) except -1 nogil:
        cdef uint32_t sym, sym_end
        cdef int64_t count
        cdef bint all_symbols = c.flags == 1 or c.flags == 2    # disconnect, kill switch
        cdef uint16_t reason = (CXL_DISCONNECT if c.flags == 1 else
                                CXL_KILL_SWITCH if c.flags == 2 else CXL_MASS_CANCEL)
        cdef Event *ev
        if c.side > SIDE_SELL or c.scope > SCOPE_ACCOUNT:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.symbol_id == UNKNOWN_SYMBOL_ID and (c.depth == 1 or all_symbols):
            sym = 0
            sym_end = self.n_symbols
        elif c.symbol_id < self.n_symbols:
            sym = c.symbol_id
            sym_end = sym + 1
        else:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
        count = self._cancel_many(c, sym, sym_end,
                                  SEL_ACCOUNT if c.scope == SCOPE_ACCOUNT else SEL_SESSION, reason, True)
        ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
        ev.side = c.side
        ev.cl_ord_id = c.cl_ord_id
        ev.reason = reason
        ev.count = <uint32_t>count
        return 0

    cdef int _on_end_of_session(self, const Command *c) except -1 nogil:
        cdef uint32_t sym, sym_end
        cdef int64_t count
        cdef Event *ev
        if c.symbol_id == UNKNOWN_SYMBOL_ID and c.depth == 1:
            sym = 0
            sym_end = self.n_symbols
        elif c.symbol_id < self.n_symbols:
            sym = c.symbol_id
            sym_end = sym + 1
        else:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
        count = self._cancel_many(c, sym, sym_end, SEL_DAY, CXL_EXPIRED, False)
        ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
        ev.cl_ord_id = c.cl_ord_id
        ev.reason = CXL_EXPIRED
        ev.count = <uint32_t>count
        return 0

    cdef int _on_symbol_add(self, const Command *c) except -1 nogil:
        # Symbols arrive at run time (config reload) and on replay, always through the journal,
        # so a symbol id means the same book before and after a restart whatever the config order.
        cdef Book *bk
        if c.price <= 0 or c.qty == 0 or c.symbol_id > self.n_symbols:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.symbol_id < self.n_symbols:  # a redefinition: new tick / max_qty, orders stay
            bk = &self.books[c.symbol_id]
            bk.tick = c.price
            bk.max_qty = c.qty
            return 0
        if self.n_symbols >= MAX_SYMBOLS:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        return self._add_book(c.price, c.qty)

    cdef int _on_book_query(self, const Command *c) except -1 nogil:
        # The room for all records was reserved by _run, so they are contiguous in the ring.
        cdef uint32_t depth, nb, na, k, sb, sa
        cdef Book *bk
        cdef Level *L
        cdef Event *ev
        if c.symbol_id >= self.n_symbols:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.orig_cl_ord_id)
        bk = &self.books[c.symbol_id]
        depth = c.depth if c.depth != 0 else _DEF_DEPTH
        if depth > _MAX_DEPTH:
            depth = _MAX_DEPTH
        nb = _top_levels(&bk.side[0], depth, &sb)
        na = _top_levels(&bk.side[1], depth, &sa)
        ev = _emit(self, c, EVT_BOOK_SNAPSHOT)
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.count = nb
        ev.count2 = na
        for k in range(sb):
            L = &bk.side[0].lv[bk.side[0].n - 1 - k]
            if L.count == 0:
                continue
            ev = _emit(self, c, EVT_BOOK_LEVEL)
            ev.cl_ord_id = c.cl_ord_id
            ev.ref = c.orig_cl_ord_id
            ev.price = L.price
            ev.qty = L.qty
            ev.count = L.count
            ev.flags = 0
        for k in range(sa):
            L = &bk.side[1].lv[bk.side[1].n - 1 - k]
            if L.count == 0:
                continue
            ev = _emit(self, c, EVT_BOOK_LEVEL)
            ev.cl_ord_id = c.cl_ord_id
            ev.ref = c.orig_cl_ord_id
            ev.price = L.price
            ev.qty = L.qty
            ev.count = L.count
            ev.flags = 1
        return 0

    cdef uint64_t _bounded_events(self, const Command *c) noexcept nogil:
        # Events a command emits besides its fills / per-order cancels / triggers.
        cdef uint32_t depth, nb, na, scan
        cdef Book *bk
        if c.type == CMD_NEW:
            return 2                      # ACCEPTED + CANCELED, or one REJECTED
        if c.type == CMD_BOOK_QUERY:
            if c.symbol_id >= self.n_symbols:
                return 1
            bk = &self.books[c.symbol_id]
            depth = c.depth if c.depth != 0 else _DEF_DEPTH
            if depth > _MAX_DEPTH:
                depth = _MAX_DEPTH
            nb = _top_levels(&bk.side[0], depth, &scan)
            na = _top_levels(&bk.side[1], depth, &scan)
            return 1 + <uint64_t>nb + na
        if c.type == CMD_SESSION_OPEN or c.type == CMD_ADMIN or c.type == CMD_SESSION_STATE:
            return 0
        return 1

    cdef int64_t _run(self, SpscRing commands, SpscRing events, uint64_t max_commands) except -1 nogil:
        cdef uint64_t n = commands.available(), rp = commands.read_pos(), i = 0, need
        cdef const Command *c
        cdef uint8_t typ
        if n > max_commands:
            n = max_commands
        self._ev_pos = events.write_pos()
        self._ev_room = events.free_slots()
        while i < n:
            c = <const Command *>commands.slot(rp + i)
            need = self._bounded_events(c)
            if need > self._ev_room:
                events.publish(self._ev_pos - events.write_pos())
                self._ev_room = events.free_slots()
                if need > self._ev_room:
                    if need > events.capacity:
                        with gil:
                            raise RuntimeError(f"events ring of {events.capacity} slots cannot hold the "
                                               f"{need} records of one book snapshot")
                    break
            self._cmd_started = i + 1
            typ = c.type
            if typ == CMD_NEW:
                self._on_new(c)
            elif typ == CMD_CANCEL:
                self._on_cancel(c)
            elif typ == CMD_REPLACE:
                self._on_replace(c)
            elif typ == CMD_MASS_CANCEL:
                self._on_mass_cancel(c)
            elif typ == CMD_BOOK_QUERY:
                self._on_book_query(c)
            elif typ == CMD_END_OF_SESSION:
                self._on_end_of_session(c)
            elif typ == CMD_SYMBOL_ADD:
                self._on_symbol_add(c)
            elif typ == CMD_RISK_REJECT:
                if c.stp == CMD_CANCEL or c.stp == CMD_REPLACE:
                    self._cancel_reject(c, c.depth, NULL)
                else:
                    self._reject(c, c.depth, c.orig_cl_ord_id if c.stp == CMD_BOOK_QUERY else c.cl_ord_id)
            elif typ != CMD_SESSION_OPEN and typ != CMD_ADMIN and typ != CMD_SESSION_STATE:
                # the gateway keeps the session table; anything else is not a command we know
                self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
            i += 1
        return i

    # --------------------------------------------------------------------- Python API

    def process(self, SpscRing commands not None, SpscRing events not None,
                max_commands=(1 << 63)) -> int:
        """Consume up to ``max_commands`` Command records from ``commands`` and append the
        resulting Event records to ``events``; returns how many commands were consumed.

        Runs without the GIL.  A command is started only when ``events`` has room for its
        bounded events (ack/reject/replace/cancel/mass-cancel-done, or a whole book snapshot),
        otherwise process returns early.  Fills, self-trade cancels, stop triggers and per-order
        mass cancels are unbounded: when the ring fills in the middle of a command,
        ``self.on_events_full()`` is called with the GIL and must consume events.  Raises
        ValueError for rings of the wrong record size, RuntimeError if the events ring stays
        full, cannot hold one whole book snapshot (give it >= 2 * MAX_BOOK_DEPTH + 1 slots to
        rule that out), or when called from inside ``on_events_full``.  After an exception out
        of the middle of a command, that command counts as consumed and its remaining events
        are lost: rebuild the core from the journal (or a snapshot and the journal after it).
        """
        cdef uint64_t maxc, done = 0
        if commands.slot_size != sizeof(Command) or events.slot_size != sizeof(Event):
            raise ValueError(f"need a {sizeof(Command)}-byte command ring and a {sizeof(Event)}-byte "
                             "event ring")
        if self._busy:
            raise RuntimeError("MatchingCore.process is not reentrant")
        maxc = max_commands if max_commands < (1 << 64) else 0xFFFFFFFFFFFFFFFF
        self._busy = True
        self._evq = events
        self._cmd_started = 0
        try:
            with nogil:
                done = <uint64_t>self._run(commands, events, maxc)
        finally:
            events.publish(self._ev_pos - events.write_pos())
            # a command that failed half-way is consumed: replaying it would repeat its fills
            commands.consume(self._cmd_started if self._cmd_started > done else done)
            self._evq = None
            self._busy = False
        return done

    def process_timed(self, SpscRing commands not None, SpscRing events not None, uint64_t batch,
                      uint64_t[::1] out not None) -> tuple:
        """``process`` in batches of ``batch`` commands, each timed with CLOCK_MONOTONIC (ns)
        into ``out[i]``, for latency measurement (bench/matching_bench.py).  Stops when no
        command is left, ``out`` is full, or a batch cannot start (events ring full).

        Returns (commands consumed, batches timed).  Raises ValueError for batch 0, and as
        ``process``.
        """
        cdef uint64_t done = 0, k = 0, n, cap = out.shape[0]
        cdef timespec t0, t1
        if batch == 0:
            raise ValueError("batch must be positive")
        if commands.slot_size != sizeof(Command) or events.slot_size != sizeof(Event):
            raise ValueError(f"need a {sizeof(Command)}-byte command ring and a {sizeof(Event)}-byte "
                             "event ring")
        if self._busy:
            raise RuntimeError("MatchingCore.process is not reentrant")
        cdef bint in_run = False
        self._busy = True
        self._evq = events
        try:
            with nogil:
                while k < cap and commands.available() > 0:
                    self._cmd_started = 0
                    in_run = True
                    clock_gettime(CLOCK_MONOTONIC, &t0)
                    n = <uint64_t>self._run(commands, events, batch)
                    events.publish(self._ev_pos - events.write_pos())
                    commands.consume(n)
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    in_run = False
                    if n == 0:
                        break
                    out[k] = <uint64_t>((t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec))
                    k += 1
                    done += n
        finally:
            if in_run:           # an exception out of a batch: as in process()
                events.publish(self._ev_pos - events.write_pos())
                commands.consume(self._cmd_started)
            self._evq = None
            self._busy = False
        return done, k

    def add_symbol(self, int64_t tick, uint64_t max_qty) -> int:
        """Add an empty book (what a journaled CMD_SYMBOL_ADD does); returns its symbol id.

        tick: price units (> 0); max_qty: lots (> 0).  Raises ValueError for a bad value or
        when the core already holds MAX_SYMBOL_COUNT symbols, RuntimeError inside process().
        """
        if self._busy:
            raise RuntimeError("add_symbol while process() runs")
        if tick <= 0 or max_qty == 0:
            raise ValueError("tick and max_qty must be positive")
        if self.n_symbols >= MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols")
        self._add_book(tick, max_qty)
        return self.n_symbols - 1

    def book_levels(self, uint32_t symbol_id, int side, int depth=10) -> list:
        """Aggregated levels of one book side, best first: ``[(price, qty, order_count), ...]``
        (qty: the shown lots; iceberg reserves are not counted).

        side: 1 buy (bids) or 2 sell (asks); depth: at most this many levels (>= 0).
        Raises ValueError for an unknown symbol or side.
        """
        cdef BookSide *bs
        cdef uint32_t k
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        if side != SIDE_BUY and side != SIDE_SELL:
            raise ValueError(f"side must be 1 or 2, got {side}")
        if depth < 0:
            raise ValueError("depth must be >= 0")
        bs = &self.books[symbol_id].side[side - 1]
        out = []
        k = bs.n
        while k > 0 and len(out) < depth:
            k -= 1
            if bs.lv[k].count:
                out.append((bs.lv[k].price, bs.lv[k].qty, bs.lv[k].count))
        return out

    def level_orders(self, uint32_t symbol_id, int side, int64_t price) -> list:
        """Order ids resting at one price level in time priority (next to match first); empty
        when there is no such level.  Raises ValueError for an unknown symbol or side."""
        cdef BookSide *bs
        cdef uint32_t pos, oi
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        if side != SIDE_BUY and side != SIDE_SELL:
            raise ValueError(f"side must be 1 or 2, got {side}")
        bs = &self.books[symbol_id].side[side - 1]
        pos = _level_pos(bs, side, price)
        out = []
        if pos < bs.n and bs.lv[pos].price == price:
            oi = bs.lv[pos].head
            while oi != NIL:
                out.append(self.pool[oi].order_id)
                oi = self.pool[oi].next
        return out

    cdef bint live_order(self, uint32_t session_id, uint64_t cl_ord_id, uint8_t *side,
                         uint64_t *qty, uint64_t *leaves) noexcept nogil:
        # The live order (session_id, cl_ord_id): side, total qty and total leaves (an
        # iceberg's hidden reserve included; a pending stop too); False if none.
        cdef uint64_t pos
        cdef uint32_t idx = self._hfind(session_id, cl_ord_id, _hash(session_id, cl_ord_id), &pos)
        if idx == NIL:
            return False
        side[0] = self.pool[idx].side
        qty[0] = self.pool[idx].qty
        leaves[0] = self.pool[idx].leaves + self._hidden(idx, &self.pool[idx])
        return True

    def stop_orders(self, uint32_t symbol_id, int side) -> list:
        """Pending stop orders of one side in trigger order: ``[(stop_price, order_id), ...]``.
        Raises ValueError for an unknown symbol or side."""
        cdef StopSide *ss
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        if side != SIDE_BUY and side != SIDE_SELL:
            raise ValueError(f"side must be 1 or 2, got {side}")
        ss = &self.books[symbol_id].stops[side - 1]
        return [(ss.e[ss.n - 1 - k].stop_px, self.pool[ss.e[ss.n - 1 - k].idx].order_id)
                for k in range(ss.n)]

    def last_trade_price(self, uint32_t symbol_id) -> int:
        """The symbol's last trade price (price units), 0 before its first trade."""
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        return self.books[symbol_id].last_px if self.books[symbol_id].has_last else 0

    def order_count(self) -> int:
        """Live orders: resting in all books plus pending stops."""
        return self.resting

    def lookup(self, uint32_t session_id, uint64_t cl_ord_id):
        """The live order ``(session_id, cl_ord_id)`` as a dict, or None: order_id, side 1/2,
        price (price units; 0 for market/stop), qty = total order qty, leaves = total leaves
        (lots), symbol_id, account_id, ord_type, tif, visible = lots shown in the book (0 for a
        pending stop), stop_price (a pending stop's trigger, else 0)."""
        cdef uint64_t pos
        cdef uint32_t idx = self._hfind(session_id, cl_ord_id, _hash(session_id, cl_ord_id), &pos)
        cdef Order *o
        cdef bint pending
        if idx == NIL:
            return None
        o = &self.pool[idx]
        pending = (o.flags & OF_STOP) != 0
        return {"order_id": o.order_id, "side": o.side, "price": o.price, "qty": o.qty,
                "leaves": o.leaves + self._hidden(idx, o), "symbol_id": o.symbol_id,
                "account_id": o.account_id, "ord_type": o.ord_type, "tif": o.tif,
                "visible": 0 if pending else o.leaves, "stop_price": _stop_px(o) if pending else 0}

    def memory_stats(self) -> dict:
        """Allocated bytes by structure and per live order.

        Keys: pool_bytes, pool_capacity, order_struct_bytes, hash_bytes, hash_capacity,
        level_bytes (book structs + level arrays), levels, stop_bytes, iceberg_bytes,
        resting_orders (live orders), total_bytes, bytes_per_order (total / live, 0.0 when
        empty).
        """
        cdef uint64_t level_bytes = self.n_symbols * sizeof(Book), levels = 0, stop_bytes = 0
        cdef uint32_t i
        cdef int s
        for i in range(self.n_symbols):
            for s in range(2):
                level_bytes += self.books[i].side[s].cap * sizeof(Level)
                levels += self.books[i].side[s].n - self.books[i].side[s].empty
                stop_bytes += self.books[i].stops[s].cap * sizeof(StopEntry)
        pool_bytes = self.pool_cap * sizeof(Order) + 64
        hash_bytes = self.hcap * sizeof(HSlot)
        ice_bytes = self.ice_cap * sizeof(IceSlot)
        total = pool_bytes + hash_bytes + level_bytes + stop_bytes + ice_bytes
        return {
            "pool_bytes": pool_bytes, "pool_capacity": self.pool_cap,
            "order_struct_bytes": sizeof(Order),
            "hash_bytes": hash_bytes, "hash_capacity": self.hcap,
            "level_bytes": level_bytes, "levels": levels, "stop_bytes": stop_bytes,
            "iceberg_bytes": ice_bytes,
            "resting_orders": self.resting, "total_bytes": total,
            "bytes_per_order": total / self.resting if self.resting else 0.0,
        }

    @property
    def next_order_id(self) -> int:
        """The order id the next accepted order gets (ids start at 1)."""
        return self._next_order_id

    @property
    def next_trade_id(self) -> int:
        """The trade id the next fill gets (ids start at 1)."""
        return self._next_trade_id

    @property
    def n_symbols(self) -> int:
        return self.n_symbols

    # ------------------------------------------------------------------ snapshot / restore

    def snapshot(self) -> bytes:
        """The whole matching state as compact bytes, for ``MatchingCore.restore``.

        Little-endian; format version SNAPSHOT_VERSION:

        * header, 64 bytes: magic b"HFTGWCOR", u32 version, u32 n_symbols, u64 next_order_id,
          u64 next_trade_id, u64 live orders, u64 body bytes (what follows the header, before
          the trailer), 16 bytes of zeros;
        * per symbol, 48 bytes: i64 tick, u64 max_qty, i64 last trade price, u32 has a last
          trade, u32 bid levels, u32 ask levels, u32 buy stops, u32 sell stops, u32 0;
        * per symbol: its bid levels then ask levels, best first, each a 16-byte header (i64
          price, u32 orders, u32 0) followed by its orders in time priority; then its buy stops
          then sell stops, in trigger order;
        * an order is 72 bytes: u64 order_id, u64 cl_ord_id, i64 price, u64 qty, u64 shown
          leaves, u64 aux1 (a pending stop's stop price, an iceberg's display qty, else 0),
          u64 aux2 (an iceberg's hidden reserve, else 0), u32 session_id, u32 account_id, u8
          side, u8 ord_type, u8 tif, u8 flags (bit 0 post-only, 1 iceberg, 2 pending stop,
          bits 4-6 StpMode), u32 0;
        * trailer, 8 bytes: u32 CRC32C (RFC 3720) of everything before it, u32 0.

        Must not be called while ``process`` runs.
        """
        cdef uint64_t nlev = 0, size, body
        cdef uint32_t i, k, oi
        cdef int s
        cdef Book *bk
        cdef BookSide *bs
        cdef StopSide *ss
        cdef Level *L
        cdef char *p
        cdef char *base
        if self._busy:
            raise RuntimeError("snapshot while process() runs")
        for i in range(self.n_symbols):
            for s in range(2):
                nlev += self.books[i].side[s].n - self.books[i].side[s].empty
        body = (<uint64_t>self.n_symbols * _SNAP_SYMBOL + nlev * _SNAP_LEVEL
                + self.resting * _SNAP_ORDER)
        size = _SNAP_HEADER + body + _SNAP_TRAILER
        out = PyBytes_FromStringAndSize(NULL, size)
        base = PyBytes_AS_STRING(out)
        p = base
        memset(p, 0, _SNAP_HEADER)
        memcpy(p, <const char *>b"HFTGWCOR", 8)
        _st32(p + 8, SNAPSHOT_FORMAT)
        _st32(p + 12, self.n_symbols)
        _st64(p + 16, self._next_order_id)
        _st64(p + 24, self._next_trade_id)
        _st64(p + 32, self.resting)
        _st64(p + 40, body)
        p += _SNAP_HEADER
        for i in range(self.n_symbols):
            bk = &self.books[i]
            _st64(p, <uint64_t>bk.tick)
            _st64(p + 8, bk.max_qty)
            _st64(p + 16, <uint64_t>bk.last_px)
            _st32(p + 24, bk.has_last)
            _st32(p + 28, bk.side[0].n - bk.side[0].empty)
            _st32(p + 32, bk.side[1].n - bk.side[1].empty)
            _st32(p + 36, bk.stops[0].n)
            _st32(p + 40, bk.stops[1].n)
            _st32(p + 44, 0)
            p += _SNAP_SYMBOL
        for i in range(self.n_symbols):
            bk = &self.books[i]
            for s in range(2):
                bs = &bk.side[s]
                k = bs.n
                while k > 0:
                    k -= 1
                    L = &bs.lv[k]
                    if L.count == 0:
                        continue
                    _st64(p, <uint64_t>L.price)
                    _st32(p + 8, L.count)
                    _st32(p + 12, 0)
                    p += _SNAP_LEVEL
                    oi = L.head
                    while oi != NIL:
                        p = self._snap_order(p, oi)
                        oi = self.pool[oi].next
            for s in range(2):
                ss = &bk.stops[s]
                k = ss.n
                while k > 0:
                    k -= 1
                    p = self._snap_order(p, ss.e[k].idx)
        _st32(p, hftgw_crc32c(0, base, <size_t>(p - base)))
        _st32(p + 4, 0)
        return out

    cdef char *_snap_order(self, char *p, uint32_t idx) noexcept:
        cdef Order *o = &self.pool[idx]
        cdef IceSlot *ice
        _st64(p, o.order_id)
        _st64(p + 8, o.cl_ord_id)
        _st64(p + 16, <uint64_t>o.price)
        _st64(p + 24, o.qty)
        _st64(p + 32, o.leaves)
        if o.flags & OF_STOP:
            _st64(p + 40, <uint64_t>_stop_px(o))
            _st64(p + 48, 0)
        elif o.flags & OF_ICEBERG:
            ice = self._ice(idx)
            _st64(p + 40, ice.peak)
            _st64(p + 48, ice.hidden)
        else:
            _st64(p + 40, 0)
            _st64(p + 48, 0)
        _st32(p + 56, o.session_id)
        _st32(p + 60, o.account_id)
        p[64] = <char>o.side
        p[65] = <char>o.ord_type
        p[66] = <char>o.tif
        p[67] = <char>o.flags
        _st32(p + 68, 0)
        return p + _SNAP_ORDER

    @classmethod
    def restore(cls, data, initial_orders=None):
        """A new core holding the state a ``snapshot()`` saved (``data``: bytes-like).

        initial_orders: pool capacity (default: the live orders + 1/8, at least 65536).  The
        restored core produces the same events as the saved one for any further commands.
        Raises ValueError for data that is not a snapshot of this format (bad magic, version,
        length, CRC32C, or an inconsistent content).
        """
        cdef const unsigned char[::1] v = memoryview(data).cast("B")
        cdef const char *base
        cdef const char *p
        cdef const char *end
        cdef const char *q
        cdef uint64_t n = v.shape[0], body, live, count = 0
        cdef uint32_t nsym, i, k, j, nl, idx, crc
        cdef int s
        cdef MatchingCore core
        cdef Book *bk
        cdef Order *o
        cdef int64_t price
        cdef uint64_t hidden, aux1
        if n < _SNAP_HEADER + _SNAP_TRAILER:
            raise ValueError("snapshot: too short")
        base = <const char *>&v[0]
        if memcmp(base, <const char *>b"HFTGWCOR", 8) != 0:
            raise ValueError("snapshot: bad magic")
        if _ld32(base + 8) != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot: format version {_ld32(base + 8)}, this build reads {SNAPSHOT_FORMAT}")
        nsym = _ld32(base + 12)
        live = _ld64(base + 32)
        body = _ld64(base + 40)
        if nsym > MAX_SYMBOLS or n != _SNAP_HEADER + body + _SNAP_TRAILER:
            raise ValueError("snapshot: length does not match its header")
        crc = hftgw_crc32c(0, base, _SNAP_HEADER + body)
        if crc != _ld32(base + _SNAP_HEADER + body):
            raise ValueError("snapshot: CRC32C mismatch")
        if body < <uint64_t>nsym * _SNAP_SYMBOL or live > _MAX_POOL:
            raise ValueError("snapshot: inconsistent header")
        p = base + _SNAP_HEADER
        end = base + _SNAP_HEADER + body
        symbols = []
        for i in range(nsym):
            symbols.append((<int64_t>_ld64(p + i * _SNAP_SYMBOL), _ld64(p + 8 + i * _SNAP_SYMBOL)))
        if initial_orders is None:
            initial_orders = max(1 << 16, live + (live >> 3))
        core = cls(symbols, initial_orders)
        core._next_order_id = _ld64(base + 16)
        core._next_trade_id = _ld64(base + 24)
        q = p + nsym * _SNAP_SYMBOL
        for i in range(nsym):
            bk = &core.books[i]
            bk.last_px = <int64_t>_ld64(p + 16 + i * _SNAP_SYMBOL)
            bk.has_last = _ld32(p + 24 + i * _SNAP_SYMBOL) != 0
            for s in range(2):
                nl = _ld32(p + 28 + 4 * s + i * _SNAP_SYMBOL)
                for k in range(nl):
                    if q + _SNAP_LEVEL > end:
                        raise ValueError("snapshot: truncated")
                    price = <int64_t>_ld64(q)
                    j = _ld32(q + 8)
                    q += _SNAP_LEVEL
                    if j == 0 or (bk.side[s].n and not _worse(s + 1, price, bk.side[s].lv[0].price)):
                        raise ValueError("snapshot: levels out of order")
                    while j > 0:
                        j -= 1
                        if q + _SNAP_ORDER > end:
                            raise ValueError("snapshot: truncated")
                        idx = core._restore_order(q, i, s + 1, False)
                        o = &core.pool[idx]
                        if o.price != price:
                            raise ValueError("snapshot: order price differs from its level")
                        aux1 = _ld64(q + 40)
                        hidden = _ld64(q + 48)
                        if o.flags & OF_ICEBERG:
                            if aux1 == 0:
                                raise ValueError("snapshot: iceberg without a display quantity")
                            core._ice_put(idx, aux1, hidden)
                        elif aux1 or hidden:
                            raise ValueError("snapshot: reserve on a plain order")
                        core._rest(bk, idx, hidden)
                        q += _SNAP_ORDER
                        count += 1
            for s in range(2):
                nl = _ld32(p + 36 + 4 * s + i * _SNAP_SYMBOL)
                for k in range(nl):
                    if q + _SNAP_ORDER > end:
                        raise ValueError("snapshot: truncated")
                    idx = core._restore_order(q, i, s + 1, True)
                    price = <int64_t>_ld64(q + 40)
                    if price <= 0 or (bk.stops[s].n and _farther(s + 1, bk.stops[s].e[0].stop_px, price)):
                        raise ValueError("snapshot: stops out of order")
                    # entries go in in trigger order, each behind the ones of its price
                    core._stop_insert(&bk.stops[s], s + 1, price, idx)
                    q += _SNAP_ORDER
                    count += 1
        if q != end or count != live:
            raise ValueError("snapshot: content does not match its header")
        return core

    cdef uint32_t _restore_order(self, const char *q, uint32_t symbol_id, uint8_t side,
                                 bint stop) except? NIL:
        cdef uint32_t idx
        cdef Order *o
        cdef uint64_t pos
        cdef uint8_t flags = <uint8_t>q[67]
        if (<uint8_t>q[64] != side or (((flags & OF_STOP) != 0) != stop)
                or _ld64(q + 32) == 0 or ((flags >> STP_SHIFT) & 7) > STP_DECREMENT or flags & 0x88):
            raise ValueError("snapshot: bad order record")
        idx = self._alloc()
        o = &self.pool[idx]
        o.order_id = _ld64(q)
        o.cl_ord_id = _ld64(q + 8)
        o.price = <int64_t>_ld64(q + 16)
        o.qty = _ld64(q + 24)
        o.leaves = _ld64(q + 32)
        o.session_id = _ld32(q + 56)
        o.account_id = _ld32(q + 60)
        o.symbol_id = <uint16_t>symbol_id
        o.level_hint = 0xFFFF
        o.side = side
        o.ord_type = <uint8_t>q[65]
        o.tif = <uint8_t>q[66]
        o.flags = flags
        o.prev = NIL
        o.next = NIL
        if self._hfind(o.session_id, o.cl_ord_id, _hash(o.session_id, o.cl_ord_id), &pos) != NIL:
            raise ValueError("snapshot: duplicate (session, ClOrdID)")
        self._hput(idx)
        return idx


#: version of the ``MatchingCore.snapshot`` format this build writes and reads
SNAPSHOT_VERSION = SNAPSHOT_FORMAT


# ------------------------------------------------------------------------------ consumers

cdef class EventTally:
    """A cheap C-level consumer for benchmarks and tests: counts events by type, fills and
    filled quantity, and canceled events by reason, without building Python objects."""

    cdef uint64_t by_type[16]
    cdef uint64_t cancel_by_reason[16]
    cdef readonly uint64_t events
    cdef readonly uint64_t fills
    cdef readonly uint64_t fill_qty

    def drain(self, SpscRing events not None) -> int:
        """Consume every available record of an Event ring; returns how many."""
        cdef uint64_t n, t, k
        cdef const Event *ev
        if events.slot_size != sizeof(Event):
            raise ValueError("not an Event ring")
        with nogil:
            n = events.available()
            t = events.read_pos()
            for k in range(n):
                ev = <const Event *>events.slot(t + k)
                self.by_type[ev.type & 15] += 1
                if ev.type == EVT_FILL:
                    self.fill_qty += ev.qty
                elif ev.type == EVT_CANCELED:
                    self.cancel_by_reason[ev.reason & 15] += 1
            events.consume(n)
            self.events += n
            self.fills = self.by_type[<int>EVT_FILL]
        return n

    def count(self, int event_type) -> int:
        """Events seen of one EventType."""
        return self.by_type[event_type & 15]

    def canceled(self, int reason) -> int:
        """EVT_CANCELED events seen with one CancelReason."""
        return self.cancel_by_reason[reason & 15]
