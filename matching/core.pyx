# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Matching core: price-time-priority limit order books for many symbols (DESIGN §1, §3).

``MatchingCore.process`` consumes 64-byte ``Command`` records from one SPSC ring and appends
128-byte ``Event`` records to another (layouts in ``matching/records.pxd``), without the GIL and
without a Python object per order or event.  Events are a pure function of the command stream:
time is ``Command.ts``, never the clock; order ids and trade ids are global counters from 1.

Units: prices are int64 in 1e-4 currency units and must be positive multiples of the symbol's
tick; quantities are uint64 lots; times are uint64 ns since the Unix epoch.

Commands and their events (spec: hftgw issue 2 item 3; replace quantity as FIX OrderQty(38)):

* CMD_NEW -> one EVT_REJECTED (first failing check: unknown symbol, invalid side/ord_type/tif/
  flags, stp != 0 (unsupported), qty 0 or > max, limit price <= 0 or off tick, live duplicate
  (session, ClOrdID), post-only that would cross, post-only market/IOC/FOK), or EVT_ACCEPTED,
  then one EVT_FILL per maker in price-time order (price = maker's), then an EVT_CANCELED for
  an IOC (CXL_IOC_REMAINDER) or market (CXL_NO_LIQUIDITY) remainder; FOK with too little
  liquidity within its limit fills nothing (CXL_FOK_UNFILLED).  Market orders' price is 0.
* CMD_CANCEL -> EVT_CANCELED (CXL_USER) or EVT_CANCEL_REJECTED (REJ_UNKNOWN_ORDER).
* CMD_REPLACE -> EVT_REPLACED (re-keyed to the new ClOrdID; same price and leaves not up keeps
  time priority, otherwise it re-enters at the back and may match as a taker first) or
  EVT_CANCEL_REJECTED (unknown order, duplicate new ClOrdID, bad price, qty > max or <= cum).
* CMD_MASS_CANCEL -> EVT_CANCELED per resting order of the session (book order: symbol, bids
  then asks, best level first, time priority), then EVT_MASS_CANCEL_DONE(count).  All symbols
  when symbol_id is UNKNOWN_SYMBOL_ID and depth == 1 or flags == 1 (cancel on disconnect,
  reason CXL_DISCONNECT); another unknown symbol is EVT_REJECTED(REJ_UNKNOWN_SYMBOL); side 0 =
  both, > 2 is EVT_REJECTED(REJ_INVALID_FIELD).
* CMD_BOOK_QUERY -> EVT_BOOK_SNAPSHOT(count bids, count2 asks) then the EVT_BOOK_LEVEL records,
  bids then asks, best first, contiguous in the ring (depth 0 -> 10, at most 100 a side).
* CMD_SYMBOL_ADD -> nothing when it defines the next free symbol id (a new, empty book) or
  redefines an existing one (new tick and max_qty; resting orders stay as they are); a gap in
  the ids or a tick / max_qty <= 0 is EVT_REJECTED(REJ_INVALID_FIELD) for session 0.
* CMD_SESSION_OPEN -> nothing; any other type -> EVT_REJECTED(REJ_INVALID_FIELD).

Memory: a resting order is one 64-byte pool struct plus one 8-byte hash slot (the table grows at
50 % load, so 16-32 bytes per order) plus its share of a 32-byte price level.

Not thread-safe: one thread at a time may call into a core (``process`` releases the GIL, so do
not call other methods from another thread while it runs).
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memmove

from matching.records cimport (
    CMD_BOOK_QUERY,
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_SESSION_OPEN,
    CMD_SYMBOL_ADD,
    CXL_DISCONNECT,
    CXL_FOK_UNFILLED,
    CXL_IOC_REMAINDER,
    CXL_MASS_CANCEL,
    CXL_NO_LIQUIDITY,
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
    FLAG_POST_ONLY,
    ORD_LIMIT,
    ORD_MARKET,
    REJ_DUPLICATE_CL_ORD_ID,
    REJ_INVALID_FIELD,
    REJ_INVALID_PRICE,
    REJ_INVALID_QUANTITY,
    REJ_POST_ONLY_WOULD_TAKE,
    REJ_UNKNOWN_ORDER,
    REJ_UNKNOWN_SYMBOL,
    REJ_UNSUPPORTED,
    SIDE_BUY,
    SIDE_SELL,
    STP_NONE,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
    UNKNOWN_SYMBOL_ID,
    Command,
    Event,
)
from matching.ring cimport SpscRing

#: book query depth used when a command asks for 0 levels, and the most it may ask for
DEFAULT_BOOK_DEPTH = 10
MAX_BOOK_DEPTH = 100
cdef uint32_t _DEF_DEPTH = 10
cdef uint32_t _MAX_DEPTH = 100
cdef uint32_t _INITIAL_LEVELS = 64
cdef uint32_t _MAX_POOL = 0xFFFFFFFE     # NIL is 0xFFFFFFFF


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
    # The level of a resting order: its hint when still right, else a search (and a new hint).
    cdef uint32_t h = o.level_hint
    if h < bs.n and bs.lv[h].price == o.price:
        return &bs.lv[h]
    h = _level_pos(bs, o.side, o.price)
    o.level_hint = h
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
    d.symbol_id = o.symbol_id
    d.side = o.side
    d.ord_type = o.ord_type
    d.tif = o.tif
    d.flags = o.flags
    d.level_hint = NIL


cdef inline bint _crosses(uint8_t taker_side, int64_t limit, int64_t level_price) noexcept nogil:
    if taker_side == SIDE_BUY:
        return level_price <= limit
    return level_price >= limit


# ------------------------------------------------------------------------------------- core

cdef class MatchingCore:
    """Price-time-priority matching for ``len(symbols)`` books.

    symbols: ``symbols[i] = (tick_units, max_qty_lots)`` for symbol id ``i``; both positive.
    initial_orders: resting-order pool capacity to preallocate (the pool grows by doubling).
    Raises ValueError for a bad symbol table or capacity, MemoryError if allocation fails.

    ``on_events_full``: a zero-argument callable, set by the owner, called (with the GIL) when
    the events ring fills in the middle of a command; it must consume events from that ring.
    """

    def __cinit__(self, symbols, initial_orders=1 << 16):
        cdef uint32_t i
        cdef Py_ssize_t n = len(symbols)
        cdef uint64_t cap
        if n >= <Py_ssize_t>UNKNOWN_SYMBOL_ID:
            raise ValueError("too many symbols")
        if not 1 <= initial_orders <= (1 << 31):
            raise ValueError("initial_orders must be in [1, 2**31]")
        self.n_symbols = <uint32_t>n
        self.books_cap = <uint32_t>max(n, 1)
        self.books = <Book *>calloc(self.books_cap, sizeof(Book))
        if self.books == NULL:
            raise MemoryError()
        for i in range(self.n_symbols):
            tick, max_qty = symbols[i]
            if tick <= 0 or max_qty <= 0:
                raise ValueError(f"symbol {i}: tick and max_qty must be positive, got {symbols[i]!r}")
            self.books[i].tick = tick
            self.books[i].max_qty = max_qty
            for s in range(2):
                self.books[i].side[s].lv = <Level *>malloc(_INITIAL_LEVELS * sizeof(Level))
                if self.books[i].side[s].lv == NULL:
                    raise MemoryError()
                self.books[i].side[s].cap = _INITIAL_LEVELS
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
        self._next_order_id = 1
        self._next_trade_id = 1
        self.on_events_full = None

    def __dealloc__(self):
        cdef uint32_t i
        if self.books != NULL:
            for i in range(self.n_symbols):
                free(self.books[i].side[0].lv)
                free(self.books[i].side[1].lv)
            free(self.books)
        free(self._pool_mem)
        free(self.htab)

    # ------------------------------------------------------------------ memory management

    cdef int _grow_pool(self) except -1 nogil:
        # Doubling keeps the amortised cost O(1); realloc of a big block is an mremap (no copy)
        # on Linux.  realloc keeps 16-byte alignment only, so re-align by hand when the offset
        # of the aligned view inside the block changes.
        cdef uint64_t new_cap = <uint64_t>self.pool_cap * 2
        cdef size_t old_off = <char *>self.pool - <char *>self._pool_mem, new_off
        cdef void *mem
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

    # ------------------------------------------------------------------------ book levels

    cdef int _rest(self, Book *bk, uint32_t idx) except -1 nogil:
        # Append pool order idx (leaves > 0) at the back of its price level.
        cdef Order *o = &self.pool[idx]
        cdef BookSide *bs = &bk.side[o.side - 1]
        cdef uint32_t pos = _level_pos(bs, o.side, o.price)
        cdef Level *L
        o.level_hint = pos
        if pos < bs.n and bs.lv[pos].price == o.price:
            L = &bs.lv[pos]
            o.prev = L.tail
            o.next = NIL
            self.pool[L.tail].next = idx
            L.tail = idx
            L.count += 1
            L.qty += o.leaves
            return 0
        if bs.n == bs.cap:
            self._grow_levels(bs)
        L = &bs.lv[pos]
        if pos < bs.n:
            memmove(L + 1, L, (bs.n - pos) * sizeof(Level))
        bs.n += 1
        L.price = o.price
        L.qty = o.leaves
        L.head = idx
        L.tail = idx
        L.count = 1
        L._pad = 0
        o.prev = NIL
        o.next = NIL
        return 0

    cdef void _unlink(self, Book *bk, Order *o, uint32_t idx) noexcept nogil:
        # Take a resting order out of its level (dropping the level when it empties).
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
        if L.count == 0:
            bs.n -= 1
            if pos < bs.n:
                memmove(L, L + 1, (bs.n - pos) * sizeof(Level))

    # --------------------------------------------------------------------------- matching

    cdef int _match(self, Book *bk, Order *t, const Command *c) except -1 nogil:
        # Fill taker t against the opposite side, best level first, FIFO within a level.
        cdef BookSide *opp = &bk.side[2 - t.side]
        cdef bint market = t.ord_type == ORD_MARKET
        cdef Level *L
        cdef Order *m
        cdef uint32_t mi
        cdef uint64_t x
        cdef Event *ev
        while t.leaves > 0 and opp.n > 0:
            L = &opp.lv[opp.n - 1]
            if not market and not _crosses(t.side, t.price, L.price):
                break
            while True:
                mi = L.head
                m = &self.pool[mi]
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
                if m.leaves == 0:
                    L.head = m.next
                    L.count -= 1
                    self._hdel(mi)
                    self._release(mi)
                    if L.head == NIL:
                        L.tail = NIL
                        break
                    self.pool[L.head].prev = NIL
                if t.leaves == 0:
                    break
            if L.count == 0:
                opp.n -= 1
        return 0

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
            ev.leaves = o.leaves
        return 0

    cdef int _canceled(self, const Command *c, Order *o, uint64_t qty, uint16_t reason) except -1 nogil:
        cdef Event *ev = _emit(self, c, EVT_CANCELED)
        _order_fields(ev, o)
        ev.reason = reason
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = o.cl_ord_id
        ev.qty = qty
        return 0

    # ---------------------------------------------------------------------- commands

    cdef int _on_new(self, const Command *c) except -1 nogil:
        cdef Book *bk
        cdef BookSide *opp
        cdef Order t
        cdef Event *ev
        cdef uint64_t pos, avail
        cdef uint32_t idx, i
        cdef bint market
        if c.symbol_id >= self.n_symbols:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
        if ((c.side != SIDE_BUY and c.side != SIDE_SELL)
                or (c.ord_type != ORD_LIMIT and c.ord_type != ORD_MARKET)
                or (c.tif != TIF_GTC and c.tif != TIF_IOC and c.tif != TIF_FOK)
                or (c.flags & ~(<uint8_t>FLAG_POST_ONLY))):
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.stp != STP_NONE:
            return self._reject(c, REJ_UNSUPPORTED, c.cl_ord_id)
        bk = &self.books[c.symbol_id]
        if c.qty == 0 or c.qty > bk.max_qty:
            return self._reject(c, REJ_INVALID_QUANTITY, c.cl_ord_id)
        market = c.ord_type == ORD_MARKET
        if not market and (c.price <= 0 or c.price % bk.tick != 0):
            return self._reject(c, REJ_INVALID_PRICE, c.cl_ord_id)
        if self._hfind(c.session_id, c.cl_ord_id, _hash(c.session_id, c.cl_ord_id), &pos) != NIL:
            return self._reject(c, REJ_DUPLICATE_CL_ORD_ID, c.cl_ord_id)
        opp = &bk.side[2 - c.side]
        if c.flags & FLAG_POST_ONLY:
            if opp.n > 0 and (market or _crosses(c.side, c.price, opp.lv[opp.n - 1].price)):
                return self._reject(c, REJ_POST_ONLY_WOULD_TAKE, c.cl_ord_id)
            if market or c.tif != TIF_GTC:
                return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)

        t.order_id = self._next_order_id
        self._next_order_id += 1
        t.cl_ord_id = c.cl_ord_id
        t.price = 0 if market else c.price
        t.qty = c.qty
        t.leaves = c.qty
        t.session_id = c.session_id
        t.symbol_id = c.symbol_id
        t.side = c.side
        t.ord_type = c.ord_type
        t.tif = c.tif
        t.flags = c.flags
        t.level_hint = NIL
        ev = _emit(self, c, EVT_ACCEPTED)
        _order_fields(ev, &t)
        ev.cl_ord_id = t.cl_ord_id
        ev.qty = t.qty
        ev.leaves = t.qty

        if c.tif == TIF_FOK:
            # all or nothing: the level totals answer without touching any order
            avail = 0
            i = opp.n
            while i > 0 and avail < t.qty:
                i -= 1
                if not market and not _crosses(t.side, t.price, opp.lv[i].price):
                    break
                avail += opp.lv[i].qty
            if avail < t.qty:
                return self._canceled(c, &t, t.qty, CXL_FOK_UNFILLED)
        if opp.n > 0:
            self._match(bk, &t, c)
        if t.leaves == 0:
            return 0
        if market:
            return self._canceled(c, &t, t.leaves, CXL_NO_LIQUIDITY)
        if c.tif != TIF_GTC:
            return self._canceled(c, &t, t.leaves, CXL_IOC_REMAINDER)
        idx = self._alloc()
        _copy_order(&self.pool[idx], &t)
        self._rest(bk, idx)
        self._hput(idx)
        return 0

    cdef int _on_cancel(self, const Command *c) except -1 nogil:
        cdef uint64_t pos
        cdef uint32_t idx = self._hfind(c.session_id, c.orig_cl_ord_id,
                                        _hash(c.session_id, c.orig_cl_ord_id), &pos)
        cdef Order *o
        if idx == NIL or self.pool[idx].symbol_id != c.symbol_id:
            return self._cancel_reject(c, REJ_UNKNOWN_ORDER, NULL)
        o = &self.pool[idx]
        self._unlink(&self.books[o.symbol_id], o, idx)
        self._canceled(c, o, o.leaves, CXL_USER)
        self._hdel_at(pos)
        self._release(idx)
        return 0

    cdef int _on_replace(self, const Command *c) except -1 nogil:
        cdef uint64_t pos, pos2, cum, new_leaves
        cdef uint32_t idx = self._hfind(c.session_id, c.orig_cl_ord_id,
                                        _hash(c.session_id, c.orig_cl_ord_id), &pos)
        cdef Order *o
        cdef Book *bk
        cdef BookSide *bs
        cdef Event *ev
        cdef int64_t sgn
        if idx == NIL or self.pool[idx].symbol_id != c.symbol_id:
            return self._cancel_reject(c, REJ_UNKNOWN_ORDER, NULL)
        o = &self.pool[idx]
        bk = &self.books[o.symbol_id]
        if (c.cl_ord_id != c.orig_cl_ord_id
                and self._hfind(c.session_id, c.cl_ord_id, _hash(c.session_id, c.cl_ord_id), &pos2) != NIL):
            return self._cancel_reject(c, REJ_DUPLICATE_CL_ORD_ID, o)
        if c.price <= 0 or c.price % bk.tick != 0:
            return self._cancel_reject(c, REJ_INVALID_PRICE, o)
        cum = o.qty - o.leaves
        if c.qty > bk.max_qty or c.qty <= cum:
            return self._cancel_reject(c, REJ_INVALID_QUANTITY, o)
        new_leaves = c.qty - cum
        if c.cl_ord_id != c.orig_cl_ord_id:
            self._hdel_at(pos)
            o.cl_ord_id = c.cl_ord_id
            self._hput(idx)
        ev = _emit(self, c, EVT_REPLACED)
        _order_fields(ev, o)
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.price = c.price
        ev.qty = c.qty
        ev.leaves = new_leaves
        if c.price == o.price and new_leaves <= o.leaves:
            # FIX: a quantity decrease at the same price keeps time priority
            _order_level(&bk.side[o.side - 1], o).qty -= o.leaves - new_leaves
            o.leaves = new_leaves
            o.qty = c.qty
            return 0
        self._unlink(bk, o, idx)
        o.price = c.price
        o.qty = c.qty
        o.leaves = new_leaves
        self._match(bk, o, c)
        if o.leaves > 0:
            self._rest(bk, idx)
        else:
            self._hdel(idx)
            self._release(idx)
        return 0

    cdef int _on_mass_cancel(self, const Command *c) except -1 nogil:
        cdef uint32_t sym, sym_end, count = 0, i, oi, nxt
        cdef int s
        cdef uint16_t reason = CXL_DISCONNECT if c.flags == 1 else CXL_MASS_CANCEL
        cdef BookSide *bs
        cdef Level *L
        cdef Order *o
        cdef Event *ev
        if c.side > SIDE_SELL:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.symbol_id == UNKNOWN_SYMBOL_ID and (c.depth == 1 or c.flags == 1):
            sym = 0
            sym_end = self.n_symbols
        elif c.symbol_id < self.n_symbols:
            sym = c.symbol_id
            sym_end = sym + 1
        else:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
        # Book order (symbol, bids then asks, best level first, FIFO) makes the event order a
        # function of the book alone, not of pool slot reuse.
        while sym < sym_end:
            for s in range(2):
                if c.side != 0 and c.side != s + 1:
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
                        if o.session_id == c.session_id:
                            self._canceled(c, o, o.leaves, reason)
                            self._unlink(&self.books[sym], o, oi)
                            self._hdel(oi)
                            self._release(oi)
                            count += 1
                        oi = nxt
            sym += 1
        ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
        ev.side = c.side
        ev.cl_ord_id = c.cl_ord_id
        ev.reason = reason
        ev.count = count
        return 0

    cdef int _on_book_query(self, const Command *c) except -1 nogil:
        # The room for all records was reserved by _run, so they are contiguous in the ring.
        cdef uint32_t depth, nb, na, k
        cdef Book *bk
        cdef Level *L
        cdef Event *ev
        if c.symbol_id >= self.n_symbols:
            return self._reject(c, REJ_UNKNOWN_SYMBOL, c.orig_cl_ord_id)
        bk = &self.books[c.symbol_id]
        depth = c.depth if c.depth != 0 else _DEF_DEPTH
        if depth > _MAX_DEPTH:
            depth = _MAX_DEPTH
        nb = bk.side[0].n if bk.side[0].n < depth else depth
        na = bk.side[1].n if bk.side[1].n < depth else depth
        ev = _emit(self, c, EVT_BOOK_SNAPSHOT)
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.count = nb
        ev.count2 = na
        for k in range(nb):
            L = &bk.side[0].lv[bk.side[0].n - 1 - k]
            ev = _emit(self, c, EVT_BOOK_LEVEL)
            ev.cl_ord_id = c.cl_ord_id
            ev.ref = c.orig_cl_ord_id
            ev.price = L.price
            ev.qty = L.qty
            ev.count = L.count
            ev.flags = 0
        for k in range(na):
            L = &bk.side[1].lv[bk.side[1].n - 1 - k]
            ev = _emit(self, c, EVT_BOOK_LEVEL)
            ev.cl_ord_id = c.cl_ord_id
            ev.ref = c.orig_cl_ord_id
            ev.price = L.price
            ev.qty = L.qty
            ev.count = L.count
            ev.flags = 1
        return 0

    cdef int _on_symbol_add(self, const Command *c) except -1 nogil:
        # Symbols arrive at run time (config reload) and on replay, always through the journal,
        # so a symbol id means the same book before and after a restart whatever the config order.
        cdef Book *bk
        cdef Book *grown
        cdef uint32_t new_cap
        cdef int s
        if c.price <= 0 or c.qty == 0 or c.symbol_id > self.n_symbols \
                or c.symbol_id >= <uint32_t>UNKNOWN_SYMBOL_ID:
            return self._reject(c, REJ_INVALID_FIELD, c.cl_ord_id)
        if c.symbol_id < self.n_symbols:
            bk = &self.books[c.symbol_id]
            bk.tick = c.price
            bk.max_qty = c.qty
            return 0
        if self.n_symbols == self.books_cap:
            new_cap = self.books_cap * 2
            grown = <Book *>realloc(self.books, <size_t>new_cap * sizeof(Book))
            if grown == NULL:
                with gil:
                    raise MemoryError()
            self.books = grown
            self.books_cap = new_cap
        bk = &self.books[self.n_symbols]
        bk.tick = c.price
        bk.max_qty = c.qty
        for s in range(2):
            bk.side[s].n = 0
            bk.side[s].cap = _INITIAL_LEVELS
            bk.side[s].lv = <Level *>malloc(_INITIAL_LEVELS * sizeof(Level))
            if bk.side[s].lv == NULL:
                bk.side[s].cap = 0
                if s == 1:
                    free(bk.side[0].lv)
                with gil:
                    raise MemoryError()
        self.n_symbols += 1
        return 0

    cdef uint64_t _bounded_events(self, const Command *c) noexcept nogil:
        # Events a command emits besides its fills / per-order cancels.
        cdef uint32_t depth, nb, na
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
            nb = bk.side[0].n if bk.side[0].n < depth else depth
            na = bk.side[1].n if bk.side[1].n < depth else depth
            return 1 + <uint64_t>nb + na
        if c.type == CMD_SESSION_OPEN:
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
            elif typ == CMD_SYMBOL_ADD:
                self._on_symbol_add(c)
            elif typ != CMD_SESSION_OPEN:
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
        otherwise process returns early.  Fills and per-order mass cancels are unbounded: when
        the ring fills in the middle of a command, ``self.on_events_full()`` is called with the
        GIL and must consume events.  Raises ValueError for rings of the wrong record size,
        RuntimeError if the events ring stays full, cannot hold one whole book snapshot (give
        it >= 2 * MAX_BOOK_DEPTH + 1 slots to rule that out), or when called from inside
        ``on_events_full``.  After an exception out of the middle of a
        command, that command counts as consumed and its remaining events are lost: rebuild
        the core from the journal.
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

    def book_levels(self, uint32_t symbol_id, int side, int depth=10) -> list:
        """Aggregated levels of one book side, best first: ``[(price, qty, order_count), ...]``.

        side: 1 buy (bids) or 2 sell (asks); depth: at most this many levels (>= 0).
        Raises ValueError for an unknown symbol or side.
        """
        cdef BookSide *bs
        cdef uint32_t k, n
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        if side != SIDE_BUY and side != SIDE_SELL:
            raise ValueError(f"side must be 1 or 2, got {side}")
        if depth < 0:
            raise ValueError("depth must be >= 0")
        bs = &self.books[symbol_id].side[side - 1]
        n = bs.n if bs.n < <uint32_t>depth else <uint32_t>depth
        return [(bs.lv[bs.n - 1 - k].price, bs.lv[bs.n - 1 - k].qty, bs.lv[bs.n - 1 - k].count)
                for k in range(n)]

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

    def order_count(self) -> int:
        """Resting orders in all books."""
        return self.resting

    def lookup(self, uint32_t session_id, uint64_t cl_ord_id):
        """The live order ``(session_id, cl_ord_id)`` as a dict (order_id, side 1/2, price in
        price units, qty = total order qty and leaves in lots, symbol_id), or None."""
        cdef uint64_t pos
        cdef uint32_t idx = self._hfind(session_id, cl_ord_id, _hash(session_id, cl_ord_id), &pos)
        cdef Order *o
        if idx == NIL:
            return None
        o = &self.pool[idx]
        return {"order_id": o.order_id, "side": o.side, "price": o.price, "qty": o.qty,
                "leaves": o.leaves, "symbol_id": o.symbol_id}

    def memory_stats(self) -> dict:
        """Allocated bytes by structure and per resting order.

        Keys: pool_bytes, pool_capacity, order_struct_bytes, hash_bytes, hash_capacity,
        level_bytes, levels, resting_orders, total_bytes, bytes_per_order (total / resting,
        0.0 when the book is empty).
        """
        cdef uint64_t level_bytes = self.n_symbols * sizeof(Book), levels = 0
        cdef uint32_t i
        cdef int s
        for i in range(self.n_symbols):
            for s in range(2):
                level_bytes += self.books[i].side[s].cap * sizeof(Level)
                levels += self.books[i].side[s].n
        pool_bytes = self.pool_cap * sizeof(Order) + 64
        hash_bytes = self.hcap * sizeof(HSlot)
        total = pool_bytes + hash_bytes + level_bytes
        return {
            "pool_bytes": pool_bytes, "pool_capacity": self.pool_cap,
            "order_struct_bytes": sizeof(Order),
            "hash_bytes": hash_bytes, "hash_capacity": self.hcap,
            "level_bytes": level_bytes, "levels": levels,
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
