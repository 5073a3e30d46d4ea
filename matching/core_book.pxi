# Book sides: sorted price levels (FIFO lists of pool orders) and pending stop lists.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

# ------------------------------------------------------------------------------------- levels

cdef inline bint _better(bint buy, int64_t a, int64_t b) noexcept nogil:
    # price a is strictly better than price b for a resting order of that side
    return a > b if buy else a < b


cdef inline int64_t _gcd(int64_t a, int64_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef inline bint _worse(uint8_t side, int64_t a, int64_t b) noexcept nogil:
    # price a is strictly worse than price b for a resting order of this side
    return _better(side == SIDE_BUY, b, a)


cdef inline uint32_t _level_pos_of(const BookSide *bs, bint buy, int64_t price) noexcept nogil:
    # _level_pos for one side; `buy` is a constant at each call, so the compiler emits one
    # copy per side with plain comparisons
    cdef const Level *lv = bs.lv
    cdef const Level *base
    cdef uint32_t n = bs.n, lo, half
    cdef uint64_t k
    cdef int64_t best, gap
    if n == 0:
        return 0
    best = lv[n - 1].price
    if not _better(buy, best, price):
        return n - 1 + (price != best)
    # Level prices are distinct multiples of the grid, so a price k grid steps from the best
    # sits at most k slots below it: a dense side (empty levels are kept) is found at once,
    # a sparse one searched in those k slots only.
    gap = best - price if buy else price - best
    k = <uint64_t>gap if bs.grid == 1 else <uint64_t>(gap // bs.grid)
    lo = 0 if k >= n - 1 else n - 1 - <uint32_t>k
    if lv[lo].price == price:
        return lo
    # lower bound over lv[lo .. n-2] (the best is known to be better): a branch-free step the
    # compiler turns into a cmov, so each probe costs one load, not a mispredicted branch
    base = lv + lo
    n = n - 1 - lo
    while n > 1:
        half = n >> 1
        base = base + half if _better(buy, price, base[half].price) else base
        n -= half
    return <uint32_t>(base - lv) + (n == 1 and _better(buy, price, base[0].price))


cdef inline uint32_t _level_pos(const BookSide *bs, uint8_t side, int64_t price) noexcept nogil:
    # Index of the level holding `price`, or where such a level would be inserted.  Levels are
    # sorted worst..best (bids ascending, asks descending).  The touch is checked first, as most
    # traffic lands there; then a branch-free lower bound over the rest (the compiler turns the
    # conditional step into a cmov, so each probe costs one load, not a mispredicted branch).
    if side == SIDE_BUY:
        return _level_pos_of(bs, True, price)
    return _level_pos_of(bs, False, price)


cdef inline Level *_order_level(BookSide *bs, const Order *o) noexcept nogil:
    # The level of a resting order: a search bounded by its distance from the best (in grid
    # steps; see _level_pos_of), so orders near the touch are found at once.
    return &bs.lv[_level_pos(bs, o.side, o.price)]


cdef inline void _pop_empty_top(BookSide *bs) noexcept nogil:
    # keep lv[n - 1] a level with orders: drop the empty ones that surface at the top
    while bs.n > 0 and bs.lv[bs.n - 1].count == 0:
        bs.n -= 1
        bs.empty -= 1


cdef inline void _compact(BookSide *bs) noexcept nogil:
    # drop the kept empty levels (their indices change)
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


cdef int _grow_levels(MatchingCore self, BookSide *bs) except -1 nogil:
    cdef Level *lv = <Level *>realloc(bs.lv, <size_t>bs.cap * 2 * sizeof(Level))
    if lv == NULL:
        with gil:
            raise MemoryError()
    bs.lv = lv
    bs.cap *= 2
    return 0


cdef inline void _level_start(Level *L, Order *o, uint32_t idx, uint64_t hidden) noexcept nogil:
    # level L (price set) holds pool order idx alone
    L.qty = o.leaves
    L.hidden = hidden
    L.head = idx
    L.tail = idx
    L.count = 1
    o.prev = NIL
    o.next = NIL


cdef int _rest(MatchingCore self, Book *bk, uint32_t idx, uint64_t hidden) except -1 nogil:
    # Append pool order idx (leaves > 0) at the back of its price level; hidden: its
    # iceberg reserve (0 for a plain order).
    cdef Order *o = &self.pool[idx]
    cdef BookSide *bs = &bk.side[o.side - 1]
    cdef uint32_t pos = _level_pos(bs, o.side, o.price)
    cdef Level *L
    if pos < bs.n and bs.lv[pos].price == o.price:
        L = &bs.lv[pos]
        if L.count == 0:                  # a kept empty level comes back to life
            bs.empty -= 1
            _level_start(L, o, idx, hidden)
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
    if bs.n == bs.cap:
        _grow_levels(self, bs)
    if bs.grid != 1 and o.price % bs.grid != 0:
        bs.grid = _gcd(bs.grid, o.price)     # an order on an older, finer tick
    L = &bs.lv[pos]
    if pos < bs.n:
        memmove(L + 1, L, (bs.n - pos) * sizeof(Level))
    bs.n += 1
    L.price = o.price
    L._pad = 0
    _level_start(L, o, idx, hidden)
    return 0


cdef int _rest_split(MatchingCore self, Book *bk, uint32_t idx, uint64_t peak) except -1 nogil:
    # Rest pool order idx whose leaves are its TOTAL leaves: an iceberg (peak > 0) shows
    # min(peak, leaves) and keeps the rest in its reserve.
    cdef Order *o = &self.pool[idx]
    cdef uint64_t hidden = 0
    if peak:
        if o.leaves > peak:
            hidden = o.leaves - peak
            o.leaves = peak
        o.flags |= OF_ICEBERG
        _ice_put(self, idx, peak, hidden)
    return _rest(self, bk, idx, hidden)


cdef void _level_emptied(MatchingCore self, BookSide *bs, uint32_t pos) noexcept nogil:
    # The level at pos has no order left: the best one goes (with any empty ones under
    # it), another stays in place, empty, until it is reused or compacted away.
    if pos == bs.n - 1:
        bs.n -= 1
        _pop_empty_top(bs)
    else:
        bs.empty += 1


cdef void _unlink(MatchingCore self, Book *bk, Order *o, uint32_t idx) noexcept nogil:
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
        L.hidden -= _ice(self, idx).hidden
    if L.count == 0:
        _level_emptied(self, bs, pos)


# -------------------------------------------------------------------------------------- stops

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
    # stop price a triggers strictly later than stop price b on this side (buy stops trigger
    # upwards: a higher one later)
    return _better(side == SIDE_BUY, a, b)


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


cdef int _stop_insert(MatchingCore self, StopSide *ss, uint8_t side, int64_t px,
                      uint32_t idx) except -1 nogil:
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


cdef void _stop_remove(MatchingCore self, StopSide *ss, uint8_t side, int64_t px,
                       uint32_t idx) noexcept nogil:
    cdef uint32_t pos = _stop_lower(ss, side, px)
    while pos < ss.n and ss.e[pos].idx != idx:
        pos += 1
    ss.n -= 1
    if pos < ss.n:
        memmove(&ss.e[pos], &ss.e[pos + 1], (ss.n - pos) * sizeof(StopEntry))
