# Command handlers for many orders or none, and the command loop.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef inline bint _selected(MatchingCore self, const Order *o, const Command *c, int mode) noexcept nogil:
    if mode == SEL_SESSION:
        return o.session_id == c.session_id
    if mode == SEL_ACCOUNT:
        return _acct(self, o.session_id) == c.account_id
    return o.tif == TIF_DAY


cdef inline uint64_t _cause(const Order *o, const Command *c, bint own_request) noexcept nogil:
    # the ClOrdID a cancel reports: the request's for an order of the requesting session
    return c.cl_ord_id if own_request and o.session_id == c.session_id else o.cl_ord_id


cdef int64_t _cancel_levels(MatchingCore self, const Command *c, Book *bk, int s, int mode,
                            uint16_t reason, bint own_request) except -1 nogil:
    # the selected resting orders of side s, best level first, FIFO; returns how many
    cdef BookSide *bs = &bk.side[s]
    cdef uint32_t i = bs.n, oi, nxt
    cdef int64_t count = 0
    cdef Order *o
    while i > 0:
        i -= 1     # levels above i, already done, are the only ones a removal moves
        oi = bs.lv[i].head
        while oi != NIL:
            o = &self.pool[oi]
            nxt = o.next
            if _selected(self, o, c, mode):
                _canceled(self, c, o, o.leaves + _hidden(self, oi, o), reason,
                          _cause(o, c, own_request), 0)
                _unlink(self, bk, o, oi)
                _forget(self, oi)
                count += 1
            oi = nxt
    return count


cdef int64_t _cancel_stops(MatchingCore self, const Command *c, StopSide *ss, int mode,
                           uint16_t reason, bint own_request) except -1 nogil:
    # the selected pending stops of one side in trigger order; returns how many
    cdef uint32_t i = ss.n, oi
    cdef int64_t count = 0
    cdef Order *o
    while i > 0:
        i -= 1
        oi = ss.e[i].idx
        o = &self.pool[oi]
        if _selected(self, o, c, mode):
            _canceled(self, c, o, o.leaves, reason, _cause(o, c, own_request), 0)
            ss.n -= 1
            if i < ss.n:
                memmove(&ss.e[i], &ss.e[i + 1], (ss.n - i) * sizeof(StopEntry))
            _forget(self, oi)
            count += 1
    return count


cdef int64_t _cancel_many(MatchingCore self, const Command *c, uint32_t sym, uint32_t sym_end, int mode,
                          uint16_t reason, bint own_request) except -1 nogil:
    # Cancel the live orders of symbols [sym, sym_end) selected by mode (the command's
    # session or its account, and c.side with 0 = both; or DAY orders), in book order: symbol,
    # bids then asks (best level first, FIFO), then buy stops and sell stops in trigger
    # order, which makes the event order a function of the book alone, not of pool slot
    # reuse.  Returns how many.
    cdef int64_t count = 0
    cdef int s
    cdef uint8_t side = 0 if mode == SEL_DAY else c.side      # end of session: both sides
    while sym < sym_end:
        for s in range(2):
            if side == 0 or side == s + 1:
                count += _cancel_levels(self, c, &self.books[sym], s, mode, reason, own_request)
        for s in range(2):
            if side == 0 or side == s + 1:
                count += _cancel_stops(self, c, &self.books[sym].stops[s], mode, reason, own_request)
        sym += 1
    return count


cdef bint _symbol_range(MatchingCore self, const Command *c, bint all_symbols, uint32_t *sym,
                        uint32_t *sym_end) noexcept nogil:
    # [sym, sym_end) a many-order command applies to: every symbol for UNKNOWN_SYMBOL_ID when
    # all_symbols, else its own; False for an unknown symbol
    if c.symbol_id == UNKNOWN_SYMBOL_ID and all_symbols:
        sym[0] = 0
        sym_end[0] = self.n_symbols
    elif c.symbol_id < self.n_symbols:
        sym[0] = c.symbol_id
        sym_end[0] = c.symbol_id + 1
    else:
        return False
    return True


cdef int _mass_cancel_done(MatchingCore self, const Command *c, uint8_t side, uint16_t reason,
                           int64_t count) except -1 nogil:
    cdef Event *ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
    ev.side = side
    ev.cl_ord_id = c.cl_ord_id
    ev.reason = reason
    ev.count = <uint32_t>count
    return 0


cdef int _on_mass_cancel(MatchingCore self, const Command *c) except -1 nogil:
    cdef uint32_t sym, sym_end
    cdef int64_t count
    cdef bint all_symbols = c.flags == 1 or c.flags == 2    # disconnect, kill switch
    cdef uint16_t reason = (CXL_DISCONNECT if c.flags == 1 else
                            CXL_KILL_SWITCH if c.flags == 2 else CXL_MASS_CANCEL)
    if c.side > SIDE_SELL or c.scope > SCOPE_ACCOUNT:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    if not _symbol_range(self, c, c.depth == 1 or all_symbols, &sym, &sym_end):
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
    count = _cancel_many(self, c, sym, sym_end,
                         SEL_ACCOUNT if c.scope == SCOPE_ACCOUNT else SEL_SESSION, reason, True)
    return _mass_cancel_done(self, c, c.side, reason, count)


cdef int _on_end_of_session(MatchingCore self, const Command *c) except -1 nogil:
    cdef uint32_t sym, sym_end
    cdef int64_t count
    if not _symbol_range(self, c, c.depth == 1, &sym, &sym_end):
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
    count = _cancel_many(self, c, sym, sym_end, SEL_DAY, CXL_EXPIRED, False)
    return _mass_cancel_done(self, c, 0, CXL_EXPIRED, count)


cdef int _on_symbol_add(MatchingCore self, const Command *c) except -1 nogil:
    # Symbols arrive at run time (config reload) and on replay, always through the journal,
    # so a symbol id means the same book before and after a restart whatever the config order.
    cdef Book *bk
    if c.price <= 0 or c.qty == 0 or c.symbol_id > self.n_symbols:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    if c.symbol_id < self.n_symbols:  # a redefinition: new tick / max_qty, orders stay
        bk = &self.books[c.symbol_id]
        bk.tick = c.price
        bk.max_qty = _qty_cap(c.qty)
        return 0
    if self.n_symbols >= MAX_SYMBOLS:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    return _add_book(self, c.price, c.qty)


cdef inline uint32_t _query_depth(const Command *c) noexcept nogil:
    # levels a side a book query asks for: 0 means the default (a depth above _MAX_DEPTH is
    # rejected before this is asked)
    return c.depth if c.depth != 0 else _DEF_DEPTH


cdef int _emit_levels(MatchingCore self, const Command *c, const BookSide *bs, uint32_t scan,
                      uint8_t flag) except -1 nogil:
    # EVT_BOOK_LEVEL per non-empty level of the top `scan` slots, best first; flag 0 bids, 1 asks
    cdef uint32_t k
    cdef const Level *L
    cdef Event *ev
    for k in range(scan):
        L = &bs.lv[bs.n - 1 - k]
        if L.count == 0:
            continue
        ev = _emit(self, c, EVT_BOOK_LEVEL)
        ev.cl_ord_id = c.cl_ord_id
        ev.ref = c.orig_cl_ord_id
        ev.price = L.price
        ev.qty = L.qty
        ev.count = L.count
        ev.flags = flag
    return 0


cdef int _on_book_query(MatchingCore self, const Command *c) except -1 nogil:
    # The room for all records was reserved by _run, so they are contiguous in the ring.
    cdef uint32_t depth, sb, sa
    cdef Book *bk
    cdef Event *ev
    if c.symbol_id >= self.n_symbols:
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.orig_cl_ord_id)
    if c.depth > _MAX_DEPTH:
        # refused rather than cut down, so that a client never takes a partial book for all
        return _reject(self, c, REJ_INVALID_FIELD, c.orig_cl_ord_id)
    bk = &self.books[c.symbol_id]
    depth = _query_depth(c)
    ev = _emit(self, c, EVT_BOOK_SNAPSHOT)
    ev.cl_ord_id = c.cl_ord_id
    ev.ref = c.orig_cl_ord_id
    ev.count = _top_levels(&bk.side[0], depth, &sb)
    ev.count2 = _top_levels(&bk.side[1], depth, &sa)
    _emit_levels(self, c, &bk.side[0], sb, 0)
    return _emit_levels(self, c, &bk.side[1], sa, 1)


cdef uint64_t _bounded_events(MatchingCore self, const Command *c) noexcept nogil:
    # Events a command emits besides its fills / per-order cancels / triggers.
    cdef uint32_t depth, scan
    cdef Book *bk
    if c.type == CMD_NEW:
        return 2                      # ACCEPTED + CANCELED, or one REJECTED
    if c.type == CMD_BOOK_QUERY:
        if c.symbol_id >= self.n_symbols or c.depth > _MAX_DEPTH:
            return 1
        bk = &self.books[c.symbol_id]
        depth = _query_depth(c)
        return (1 + <uint64_t>_top_levels(&bk.side[0], depth, &scan)
                + _top_levels(&bk.side[1], depth, &scan))
    if c.type == CMD_SESSION_OPEN or c.type == CMD_ADMIN or c.type == CMD_SESSION_STATE:
        return 0
    return 1


cdef inline void _prefetch_slot(MatchingCore self, const Command *c) noexcept nogil:
    # Start loading the hash slot the command will probe (its own ClOrdID for a new order,
    # the original one for a cancel or replace), so that its miss overlaps the command before
    cdef uint64_t key = c.cl_ord_id if c.type == CMD_NEW else c.orig_cl_ord_id
    __builtin_prefetch(&self.htab[_home(_hash(c.session_id, key), self.hcap)])


cdef int64_t _run(MatchingCore self, SpscRing commands, SpscRing events,
                  uint64_t max_commands) except -1 nogil:
    cdef uint64_t n = commands.available(), rp = commands.read_pos(), i = 0, need
    cdef const Command *c
    cdef uint8_t typ
    if n > max_commands:
        n = max_commands
    if (self._next_order_id + n) >> 48:     # at most one new order id per command
        with gil:
            raise OverflowError("exchange order ids are exhausted (2**48)")
    self._ev_pos = events.write_pos()
    self._ev_room = events.free_slots()
    while i < n:
        c = <const Command *>commands.slot(rp + i)
        if i + 1 < n:
            _prefetch_slot(self, <const Command *>commands.slot(rp + i + 1))
        typ = c.type
        # only a book query needs more than 2 slots up front (fills, per-order cancels and
        # triggers refill the ring as they go)
        if typ == CMD_BOOK_QUERY or self._ev_room < 2:
            need = _bounded_events(self, c)
            if need > self._ev_room:
                events.publish(self._ev_pos - events.write_pos())
                self._ev_room = events.free_slots()
                if need > self._ev_room:
                    if need > events.capacity:
                        with gil:
                            raise RuntimeError(f"events ring of {events.capacity} slots cannot hold "
                                               f"the {need} records of one book snapshot")
                    break
        self._cmd_started = i + 1
        if typ == CMD_NEW:
            _on_new(self, c)
        elif typ == CMD_CANCEL:
            _on_cancel(self, c)
        elif typ == CMD_REPLACE:
            _on_replace(self, c)
        elif typ == CMD_MASS_CANCEL:
            _on_mass_cancel(self, c)
        elif typ == CMD_BOOK_QUERY:
            _on_book_query(self, c)
        elif typ == CMD_END_OF_SESSION:
            _on_end_of_session(self, c)
        elif typ == CMD_SYMBOL_ADD:
            _on_symbol_add(self, c)
        elif typ == CMD_RISK_REJECT:
            if c.stp == CMD_CANCEL or c.stp == CMD_REPLACE:
                _cancel_reject(self, c, c.depth, NULL)
            else:
                _reject(self, c, c.depth, c.orig_cl_ord_id if c.stp == CMD_BOOK_QUERY else c.cl_ord_id)
        elif typ == CMD_SESSION_OPEN:
            _set_acct(self, c.session_id, c.account_id)
        elif typ != CMD_ADMIN and typ != CMD_SESSION_STATE:
            # the gateway keeps the session table; anything else is not a command we know
            _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
        i += 1
    return i
