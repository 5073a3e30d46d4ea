# Matching: a taker against the opposite side, self-trade prevention, FOK, stops.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef inline bint _crosses(uint8_t taker_side, int64_t limit, int64_t level_price) noexcept nogil:
    if taker_side == SIDE_BUY:
        return level_price <= limit
    return level_price >= limit


cdef inline bint _is_market(uint8_t ord_type) noexcept nogil:
    return ord_type == ORD_MARKET or ord_type == ORD_STOP


cdef inline uint8_t _stp_of(const Order *o) noexcept nogil:
    return (o.flags >> STP_SHIFT) & 7


cdef int _self_trade(MatchingCore self, Level *L, Order *t, Order *m, uint32_t mi, uint8_t stp,
                     const Command *c) except -1 nogil:
    # Self-trade prevention between taker t and the level's head order m (same account),
    # by the taker's mode.  Returns 1 when the taker is done, 0 to go on matching.
    cdef uint64_t hid = 0, total, x, dh, dv
    cdef IceSlot *ice = NULL
    if stp == STP_CANCEL_NEWEST:
        _canceled(self, c, t, t.leaves, CXL_SELF_TRADE, t.cl_ord_id, 0)
        t.leaves = 0
        return 1
    if m.flags & OF_ICEBERG:
        ice = _ice(self, mi)
        hid = ice.hidden
    total = m.leaves + hid
    if stp == STP_DECREMENT:
        x = total if total < t.leaves else t.leaves
        _canceled(self, c, m, x, CXL_SELF_TRADE, m.cl_ord_id, total - x)
        dh = hid if hid < x else x           # the reserve goes first, the shown lots last
        dv = x - dh
        if ice != NULL:
            ice.hidden -= dh
        L.hidden -= dh
        L.qty -= dv
        m.leaves -= dv
        if total == x:
            _drop_head(self, L, m, mi)
        t.leaves -= x
        _canceled(self, c, t, x, CXL_SELF_TRADE, t.cl_ord_id, t.leaves)
        return t.leaves == 0
    # CANCEL_OLDEST, CANCEL_BOTH: the maker goes
    _canceled(self, c, m, total, CXL_SELF_TRADE, m.cl_ord_id, 0)
    L.qty -= m.leaves
    L.hidden -= hid
    _drop_head(self, L, m, mi)
    if stp == STP_CANCEL_BOTH:
        _canceled(self, c, t, t.leaves, CXL_SELF_TRADE, t.cl_ord_id, 0)
        t.leaves = 0
        return 1
    return 0


cdef inline void _drop_head(MatchingCore self, Level *L, Order *m, uint32_t mi) noexcept nogil:
    # Remove the level's head order m (its quantities already taken off the level) and
    # forget it; an emptied level is dropped by the caller (it is the best one).
    L.head = m.next
    L.count -= 1
    if L.head == NIL:
        L.tail = NIL
    else:
        self.pool[L.head].prev = NIL
    _forget(self, mi)


cdef inline void _fill_fields(Event *ev, const Order *t, const Order *m, int64_t price,
                              uint64_t qty) noexcept nogil:
    # an EVT_FILL of taker t against maker m, after both leaves were reduced by qty
    ev.session_id = t.session_id
    ev.symbol_id = _sym(t)
    ev.side = t.side
    ev.ord_type = t.ord_type
    ev.tif = t.tif
    ev.contra_session = m.session_id
    ev.cl_ord_id = t.cl_ord_id
    ev.order_id = _oid(t)
    ev.price = price
    ev.qty = qty
    ev.leaves = t.leaves
    ev.contra_cl_ord_id = m.cl_ord_id
    ev.contra_order_id = _oid(m)
    ev.contra_leaves = m.leaves


cdef inline bint _next_slice(MatchingCore self, Level *L, Order *m, uint32_t mi,
                             Event *ev) noexcept nogil:
    # Maker m (the level's head, an iceberg) has shown all its lots: show the next slice of
    # its reserve at the back of the queue.  False when the reserve is empty.
    cdef IceSlot *ice = _ice(self, mi)
    cdef uint64_t s
    if ice.hidden == 0:
        return False
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
    return True


cdef inline void _traded(MatchingCore self, Book *bk, int64_t first_px, int64_t px) noexcept nogil:
    # a taker traded from first_px to px: the last price, and the window stops trigger in
    bk.last_px = px
    bk.has_last = 1
    # a taker's fills move one way, so first and last bound its prices
    if first_px > px:
        first_px, px = px, first_px
    if first_px < self._win_lo:
        self._win_lo = first_px
    if px > self._win_hi:
        self._win_hi = px


cdef int _match(MatchingCore self, Book *bk, Order *t, const Command *c) except -1 nogil:
    # Fill taker t (leaves = its total leaves) against the opposite side, best level
    # first, FIFO within a level.
    cdef BookSide *opp = &bk.side[2 - t.side]
    cdef bint market = _is_market(t.ord_type)
    cdef uint8_t stp = _stp_of(t)
    cdef uint32_t acct = _acct(self, t.session_id)
    cdef Level *L
    cdef Order *m
    cdef uint32_t mi
    cdef uint64_t x
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
            if stp != STP_NONE and _acct(self, m.session_id) == acct:
                _self_trade(self, L, t, m, mi, stp, c)
                continue
            x = m.leaves if m.leaves < t.leaves else t.leaves
            # take the slot before changing the book, so that an exception out of
            # on_events_full leaves the book consistent
            ev = _emit(self, c, EVT_FILL)
            m.leaves -= x
            t.leaves -= x
            L.qty -= x
            _fill_fields(ev, t, m, L.price, x)
            ev.ref = self._next_trade_id
            self._next_trade_id += 1
            if not traded:
                traded = True
                first_px = L.price
            px = L.price
            if m.leaves == 0:
                if not (m.flags & OF_ICEBERG and _next_slice(self, L, m, mi, ev)):
                    _drop_head(self, L, m, mi)
            elif m.flags & OF_ICEBERG:
                ev.contra_leaves = m.leaves + _ice(self, mi).hidden
        if L.count == 0:
            opp.n -= 1
            _pop_empty_top(opp)
    if traded:
        _traded(self, bk, first_px, px)
    return 0


cdef bint _fok_fillable(MatchingCore self, Book *bk, const Order *t) noexcept nogil:
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
                if _acct(self, m.session_id) == _acct(self, t.session_id):
                    return False
                avail += m.leaves
                if avail >= need:
                    return True
                oi = m.next
            avail += L.hidden
        else:
            avail += L.qty + L.hidden
    return avail >= need


cdef int _execute(MatchingCore self, Book *bk, Order *t, uint32_t idx, uint64_t peak,
                  const Command *c, bint hashed) except -1 nogil:
    # Run t (= &pool[idx]) as the taker: FOK check, match, then rest or cancel the remainder
    # (and forget the order); peak: iceberg display qty.  hashed: t is in the order hash
    # already (a triggered stop, a replace); a new order enters it only if it rests, so a
    # taker that fills at once costs no insert and no delete.
    cdef BookSide *opp = &bk.side[2 - t.side]
    if t.tif == TIF_FOK and not _fok_fillable(self, bk, t):
        _canceled(self, c, t, t.leaves, CXL_FOK_UNFILLED, t.cl_ord_id, 0)
        t.leaves = 0
    elif opp.n > 0 and (_is_market(t.ord_type) or _crosses(t.side, t.price, opp.lv[opp.n - 1].price)):
        _match(self, bk, t, c)              # (a passive order does not pay for the call)
    if t.leaves > 0:
        if _is_market(t.ord_type):
            _canceled(self, c, t, t.leaves, CXL_NO_LIQUIDITY, t.cl_ord_id, 0)
            t.leaves = 0
        elif t.tif == TIF_IOC or t.tif == TIF_FOK:
            _canceled(self, c, t, t.leaves, CXL_IOC_REMAINDER, t.cl_ord_id, 0)
            t.leaves = 0
    if t.leaves == 0:
        if hashed:
            _forget(self, idx)
        else:
            _release(self, idx)
        return 0
    if not hashed:
        if self.hver == self._t_ver:            # nothing changed the table since the probe
            _hput_at(self, idx, self._t_h, self._t_pos)
        else:
            _hput(self, idx)
    if peak:
        return _rest_split(self, bk, idx, peak)
    return _rest(self, bk, idx, 0)


cdef int _run_stops(MatchingCore self, Book *bk, const Command *c) except -1 nogil:
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
        _execute(self, bk, o, idx, 0, c, True)
