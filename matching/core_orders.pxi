# Command handlers for one order: new, cancel, replace.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef uint16_t _new_check(MatchingCore self, const Command *c, uint32_t h, uint64_t *pos) noexcept nogil:
    # The reject reason of a new order (the first failing check, module docstring), 0 if valid;
    # h: the hash of its (session, ClOrdID); *pos: where the duplicate probe ended.
    cdef const Book *bk
    cdef const BookSide *opp
    cdef uint8_t ot = c.ord_type
    cdef bint is_stop = ot == ORD_STOP or ot == ORD_STOP_LIMIT
    if c.symbol_id >= self.n_symbols:
        return REJ_UNKNOWN_SYMBOL
    if ((c.side != SIDE_BUY and c.side != SIDE_SELL)
            or (ot != ORD_LIMIT and ot != ORD_MARKET and ot != ORD_STOP and ot != ORD_STOP_LIMIT)
            or (c.tif != TIF_GTC and c.tif != TIF_IOC and c.tif != TIF_FOK and c.tif != TIF_DAY)
            or (c.flags & ~(<uint8_t>FLAG_POST_ONLY)) or c.stp > STP_DECREMENT):
        return REJ_INVALID_FIELD
    bk = &self.books[c.symbol_id]
    if c.qty == 0 or c.qty > bk.max_qty:
        return REJ_INVALID_QUANTITY
    if (ot == ORD_LIMIT or ot == ORD_STOP_LIMIT) and (
            c.price <= 0 or (bk.tick != 1 and c.price % bk.tick != 0)):
        return REJ_INVALID_PRICE
    if is_stop:
        if c.stop_price <= 0 or c.stop_price % bk.tick != 0:
            return REJ_INVALID_PRICE
    elif c.stop_price != 0:
        return REJ_INVALID_FIELD
    if c.display_qty:
        if ot != ORD_LIMIT or (c.tif != TIF_GTC and c.tif != TIF_DAY):
            return REJ_INVALID_FIELD
        if c.display_qty >= c.qty:
            return REJ_INVALID_QUANTITY
    if _hfind(self, c.session_id, c.cl_ord_id, h, pos) != NIL:
        return REJ_DUPLICATE_CL_ORD_ID
    opp = &bk.side[2 - c.side]
    if c.flags & FLAG_POST_ONLY:
        if is_stop:
            return REJ_INVALID_FIELD
        if opp.n > 0 and (ot == ORD_MARKET or _crosses(c.side, c.price, opp.lv[opp.n - 1].price)):
            return REJ_POST_ONLY_WOULD_TAKE
        if ot == ORD_MARKET or (c.tif != TIF_GTC and c.tif != TIF_DAY):
            return REJ_INVALID_FIELD
    return 0


cdef inline void _new_order(Order *t, const Command *c, uint64_t order_id) noexcept nogil:
    # the order a valid CMD_NEW makes (market and stop orders carry price 0)
    t.oid_sym = (order_id << 16) | <uint16_t>c.symbol_id
    t.cl_ord_id = c.cl_ord_id
    t.price = c.price if c.ord_type == ORD_LIMIT or c.ord_type == ORD_STOP_LIMIT else 0
    t.qty = <uint32_t>c.qty         # <= max_qty < 2**32 (checked)
    t.leaves = <uint32_t>c.qty
    t.prev = NIL
    t.next = NIL
    t.session_id = c.session_id
    t.side = c.side
    t.ord_type = c.ord_type
    t.tif = c.tif
    t.flags = (c.flags & FLAG_POST_ONLY) | (c.stp << STP_SHIFT)


cdef inline void _open_window(MatchingCore self) noexcept nogil:
    # no price traded yet by this command
    self._win_lo = INT64_MAX
    self._win_hi = INT64_MIN


cdef inline int _close_window(MatchingCore self, Book *bk, const Command *c) except -1 nogil:
    # fire the stops this command's trades (or an already met stop) triggered
    if self._win_hi >= self._win_lo and (bk.stops[0].n or bk.stops[1].n):
        return _run_stops(self, bk, c)
    return 0


cdef int _on_new(MatchingCore self, const Command *c) except -1 nogil:
    # A valid order gets its pool slot at once; a stop enters the hash in the slot the
    # duplicate probe ended at, a taker only when it rests (see _execute).
    cdef Book *bk
    cdef Order *t
    cdef Event *ev
    cdef uint32_t idx, h = _hash(c.session_id, c.cl_ord_id)
    cdef uint64_t pos
    cdef uint16_t reason = _new_check(self, c, h, &pos)
    if reason != 0:
        return _reject(self, c, reason, c.cl_ord_id)
    bk = &self.books[c.symbol_id]
    if _acct(self, c.session_id) != c.account_id:
        _set_acct(self, c.session_id, c.account_id)
    ev = _emit(self, c, EVT_ACCEPTED)       # before the book changes (see _match)
    idx = _alloc(self)
    t = &self.pool[idx]
    _new_order(t, c, self._next_order_id)
    self._next_order_id += 1
    _order_fields(ev, t)
    ev.cl_ord_id = t.cl_ord_id
    ev.qty = t.qty
    ev.leaves = t.qty
    _open_window(self)
    if c.ord_type == ORD_STOP or c.ord_type == ORD_STOP_LIMIT:
        t.flags |= OF_STOP
        _hput_at(self, idx, h, pos)
        _stop_insert(self, &bk.stops[c.side - 1], c.side, c.stop_price, idx)
        if bk.has_last and _stop_met(c.side, c.stop_price, bk.last_px, bk.last_px):
            self._win_lo = bk.last_px          # already triggered: it runs at once
            self._win_hi = bk.last_px
    else:
        self._taker = idx                   # an exception out of the match drops it
        self._t_h = h
        self._t_pos = pos
        self._t_ver = self.hver
        _execute(self, bk, t, idx, c.display_qty, c, False)
        self._taker = NIL
    return _close_window(self, bk, c)


cdef void _drop_taker(MatchingCore self) noexcept nogil:
    # After an exception out of the middle of a new order's match: the order rests nowhere, so
    # it leaves the hash (if it got there) and the pool (as if its remainder were canceled; no
    # event says so, and the owner rebuilds from the journal, as MatchingCore.process documents).
    cdef uint64_t pos
    cdef Order *t
    if self._taker != NIL:
        t = &self.pool[self._taker]
        if _hfind(self, t.session_id, t.cl_ord_id, _hash(t.session_id, t.cl_ord_id), &pos) == self._taker:
            _forget(self, self._taker)
        else:
            _release(self, self._taker)
        self._taker = NIL


cdef int _on_cancel(MatchingCore self, const Command *c) except -1 nogil:
    cdef uint64_t pos
    cdef uint32_t idx = _hfind(self, c.session_id, c.orig_cl_ord_id,
                               _hash(c.session_id, c.orig_cl_ord_id), &pos)
    cdef Order *o
    cdef Book *bk
    if idx == NIL or _sym(&self.pool[idx]) != c.symbol_id:
        return _cancel_reject(self, c, REJ_UNKNOWN_ORDER, NULL)
    o = &self.pool[idx]
    bk = &self.books[_sym(o)]
    _canceled(self, c, o, o.leaves + _hidden(self, idx, o), CXL_USER, c.cl_ord_id, 0)
    if o.flags & OF_STOP:
        _stop_remove(self, &bk.stops[o.side - 1], o.side, _stop_px(o), idx)
    else:
        _unlink(self, bk, o, idx)
    if o.flags & OF_ICEBERG:
        _ice_del(self, idx)
    _hdel_at(self, pos)
    _release(self, idx)
    return 0


cdef uint16_t _replace_check(MatchingCore self, const Command *c, Order *o, int64_t price,
                             uint64_t hid) noexcept nogil:
    # The cancel-reject reason of a replace of live order o (same symbol), 0 if valid;
    # price: the new limit price (0 for a STOP); hid: o's iceberg reserve.
    cdef const Book *bk = &self.books[_sym(o)]
    cdef const BookSide *opp = &bk.side[2 - o.side]
    cdef uint64_t pos
    if (c.cl_ord_id != c.orig_cl_ord_id
            and _hfind(self, c.session_id, c.cl_ord_id, _hash(c.session_id, c.cl_ord_id), &pos) != NIL):
        return REJ_DUPLICATE_CL_ORD_ID
    if o.ord_type != ORD_STOP and (price <= 0 or price % bk.tick != 0):
        return REJ_INVALID_PRICE
    if c.qty > bk.max_qty or c.qty <= o.qty - o.leaves - hid:
        return REJ_INVALID_QUANTITY
    if (o.flags & FLAG_POST_ONLY) and opp.n > 0 and _crosses(o.side, price, opp.lv[opp.n - 1].price):
        return REJ_POST_ONLY_WOULD_TAKE
    return 0


cdef int _replace_kept(MatchingCore self, Book *bk, Order *o, IceSlot *ice, uint64_t hid,
                       uint64_t new_leaves, uint64_t qty) except -1 nogil:
    # A quantity decrease at the same price, keeping time priority (FIX): the iceberg's
    # reserve goes first, the shown lots last.
    cdef uint64_t d = o.leaves + hid - new_leaves
    cdef uint64_t dh = hid if hid < d else d
    cdef Level *L = _order_level(&bk.side[o.side - 1], o)
    if ice != NULL:
        ice.hidden -= dh
    L.hidden -= dh
    L.qty -= d - dh
    o.leaves -= d - dh
    o.qty = qty
    return 0


cdef int _on_replace(MatchingCore self, const Command *c) except -1 nogil:
    cdef uint64_t pos, new_leaves, hid = 0, peak = 0
    cdef uint32_t idx = _hfind(self, c.session_id, c.orig_cl_ord_id,
                               _hash(c.session_id, c.orig_cl_ord_id), &pos)
    cdef Order *o
    cdef Book *bk
    cdef StopSide *ss
    cdef IceSlot *ice = NULL
    cdef Event *ev
    cdef int64_t price
    cdef uint16_t reason
    cdef bint keep
    if idx == NIL or _sym(&self.pool[idx]) != c.symbol_id:
        return _cancel_reject(self, c, REJ_UNKNOWN_ORDER, NULL)
    o = &self.pool[idx]
    bk = &self.books[_sym(o)]
    price = 0 if o.ord_type == ORD_STOP else c.price      # a stop (market) order has no price
    if o.flags & OF_ICEBERG:
        ice = _ice(self, idx)
        hid = ice.hidden
        peak = ice.peak
    reason = _replace_check(self, c, o, price, hid)
    if reason != 0:
        return _cancel_reject(self, c, reason, o)
    new_leaves = c.qty - (o.qty - o.leaves - hid)
    if c.cl_ord_id != c.orig_cl_ord_id:
        _hdel_at(self, pos)
        o.cl_ord_id = c.cl_ord_id
        _hput(self, idx)
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
        if not keep:                          # to the back of its stop price
            ss = &bk.stops[o.side - 1]
            _stop_remove(self, ss, o.side, _stop_px(o), idx)
            _stop_insert(self, ss, o.side, _stop_px(o), idx)
        o.price = price
        o.qty = c.qty
        o.leaves = new_leaves
        return 0
    if keep:
        return _replace_kept(self, bk, o, ice, hid, new_leaves, c.qty)
    _unlink(self, bk, o, idx)
    o.price = price
    o.qty = c.qty
    o.leaves = new_leaves                     # the total: it takes as a whole
    if ice != NULL:
        ice.hidden = 0
    _open_window(self)
    _execute(self, bk, o, idx, peak, c, True)
    return _close_window(self, bk, c)
