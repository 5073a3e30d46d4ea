# Command handlers for many orders or none, and the command loop.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef int64_t _cancel_many(MatchingCore self, const Command *c, uint32_t sym, uint32_t sym_end, int mode,
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
                        _canceled(self, c, o, o.leaves + _hidden(self, oi, o), reason,
                                       c.cl_ord_id if own_request and o.session_id == c.session_id
                                       else o.cl_ord_id, 0)
                        _unlink(self, &self.books[sym], o, oi)
                        _forget(self, oi)
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
                    _canceled(self, c, o, o.leaves, reason,
                                   c.cl_ord_id if own_request and o.session_id == c.session_id
                                   else o.cl_ord_id, 0)
                    ss.n -= 1
                    if i < ss.n:
                        memmove(&ss.e[i], &ss.e[i + 1], (ss.n - i) * sizeof(StopEntry))
                    _forget(self, oi)
                    count += 1
        sym += 1
    return count


cdef int _on_mass_cancel(MatchingCore self, const Command *c) except -1 nogil:
    cdef uint32_t sym, sym_end
    cdef int64_t count
    cdef bint all_symbols = c.flags == 1 or c.flags == 2    # disconnect, kill switch
    cdef uint16_t reason = (CXL_DISCONNECT if c.flags == 1 else
                            CXL_KILL_SWITCH if c.flags == 2 else CXL_MASS_CANCEL)
    cdef Event *ev
    if c.side > SIDE_SELL or c.scope > SCOPE_ACCOUNT:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    if c.symbol_id == UNKNOWN_SYMBOL_ID and (c.depth == 1 or all_symbols):
        sym = 0
        sym_end = self.n_symbols
    elif c.symbol_id < self.n_symbols:
        sym = c.symbol_id
        sym_end = sym + 1
    else:
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
    count = _cancel_many(self, c, sym, sym_end,
                              SEL_ACCOUNT if c.scope == SCOPE_ACCOUNT else SEL_SESSION, reason, True)
    ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
    ev.side = c.side
    ev.cl_ord_id = c.cl_ord_id
    ev.reason = reason
    ev.count = <uint32_t>count
    return 0


cdef int _on_end_of_session(MatchingCore self, const Command *c) except -1 nogil:
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
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.cl_ord_id)
    count = _cancel_many(self, c, sym, sym_end, SEL_DAY, CXL_EXPIRED, False)
    ev = _emit(self, c, EVT_MASS_CANCEL_DONE)
    ev.cl_ord_id = c.cl_ord_id
    ev.reason = CXL_EXPIRED
    ev.count = <uint32_t>count
    return 0


cdef int _on_symbol_add(MatchingCore self, const Command *c) except -1 nogil:
    # Symbols arrive at run time (config reload) and on replay, always through the journal,
    # so a symbol id means the same book before and after a restart whatever the config order.
    cdef Book *bk
    if c.price <= 0 or c.qty == 0 or c.symbol_id > self.n_symbols:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    if c.symbol_id < self.n_symbols:  # a redefinition: new tick / max_qty, orders stay
        bk = &self.books[c.symbol_id]
        bk.tick = c.price
        bk.max_qty = c.qty
        return 0
    if self.n_symbols >= MAX_SYMBOLS:
        return _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
    return _add_book(self, c.price, c.qty)


cdef int _on_book_query(MatchingCore self, const Command *c) except -1 nogil:
    # The room for all records was reserved by _run, so they are contiguous in the ring.
    cdef uint32_t depth, nb, na, k, sb, sa
    cdef Book *bk
    cdef Level *L
    cdef Event *ev
    if c.symbol_id >= self.n_symbols:
        return _reject(self, c, REJ_UNKNOWN_SYMBOL, c.orig_cl_ord_id)
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


cdef uint64_t _bounded_events(MatchingCore self, const Command *c) noexcept nogil:
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


cdef int64_t _run(MatchingCore self, SpscRing commands, SpscRing events, uint64_t max_commands) except -1 nogil:
    cdef uint64_t n = commands.available(), rp = commands.read_pos(), i = 0, need
    cdef const Command *c
    cdef uint8_t typ
    if n > max_commands:
        n = max_commands
    self._ev_pos = events.write_pos()
    self._ev_room = events.free_slots()
    while i < n:
        c = <const Command *>commands.slot(rp + i)
        need = _bounded_events(self, c)
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
        elif typ != CMD_SESSION_OPEN and typ != CMD_ADMIN and typ != CMD_SESSION_STATE:
            # the gateway keeps the session table; anything else is not a command we know
            _reject(self, c, REJ_INVALID_FIELD, c.cl_ord_id)
        i += 1
    return i
