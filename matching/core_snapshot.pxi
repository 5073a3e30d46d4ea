# Snapshot and restore of the whole matching state (format: MatchingCore.snapshot's docstring).
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

# ---------------------------------------------------------------------------------- write

# Where the writer reads the state from: the live core (``snapshot``), or the copies a
# CoreCapture took (core_capture.pxi), so that both give the same bytes.
ctypedef struct SnapSrc:
    const Book *books
    uint32_t n_symbols
    const Order *pool
    const IceSlot *ice
    uint64_t ice_cap
    const uint32_t *acct
    uint64_t acct_cap
    uint64_t next_order_id
    uint64_t next_trade_id
    uint64_t resting


cdef void _live_src(MatchingCore self, SnapSrc *src) noexcept:
    src.books = self.books
    src.n_symbols = self.n_symbols
    src.pool = self.pool
    src.ice = self.ice
    src.ice_cap = self.ice_cap
    src.acct = self.acct
    src.acct_cap = self.acct_cap
    src.next_order_id = self._next_order_id
    src.next_trade_id = self._next_trade_id
    src.resting = self.resting


cdef uint64_t _snap_body(const SnapSrc *src) noexcept nogil:
    # bytes between the header and the trailer
    cdef uint64_t nlev = 0
    cdef uint32_t i
    cdef int s
    for i in range(src.n_symbols):
        for s in range(2):
            nlev += src.books[i].side[s].n - src.books[i].side[s].empty
    return (<uint64_t>src.n_symbols * _SNAP_SYMBOL + nlev * _SNAP_LEVEL
            + src.resting * _SNAP_ORDER)


cdef object _snapshot_bytes(const SnapSrc *src):
    # header, per-symbol records, then each symbol's levels (with their orders) and stops
    cdef uint64_t body = _snap_body(src)
    out = PyBytes_FromStringAndSize(NULL, _SNAP_HEADER + body + _SNAP_TRAILER)
    cdef char *base = PyBytes_AS_STRING(out)
    with nogil:
        _snap_fill(src, base, body)
    return out


cdef void _snap_fill(const SnapSrc *src, char *base, uint64_t body) noexcept nogil:
    cdef char *p = base
    cdef uint32_t i
    memset(p, 0, _SNAP_HEADER)
    memcpy(p, <const char *>b"HFTGWCOR", 8)
    st32(p + 8, SNAPSHOT_FORMAT)
    st32(p + 12, src.n_symbols)
    st64(p + 16, src.next_order_id)
    st64(p + 24, src.next_trade_id)
    st64(p + 32, src.resting)
    st64(p + 40, body)
    p += _SNAP_HEADER
    for i in range(src.n_symbols):
        p = _snap_symbol(p, &src.books[i])
    for i in range(src.n_symbols):
        p = _snap_book(src, p, &src.books[i])
    st32(p, hftgw_crc32c(0, base, <size_t>(p - base)))
    st32(p + 4, 0)


cdef char *_snap_symbol(char *p, const Book *bk) noexcept nogil:
    sti64(p, bk.tick)
    st64(p + 8, bk.max_qty)
    sti64(p + 16, bk.last_px)
    st32(p + 24, bk.has_last)
    st32(p + 28, bk.side[0].n - bk.side[0].empty)
    st32(p + 32, bk.side[1].n - bk.side[1].empty)
    st32(p + 36, bk.stops[0].n)
    st32(p + 40, bk.stops[1].n)
    st32(p + 44, 0)
    return p + _SNAP_SYMBOL


cdef char *_snap_book(const SnapSrc *src, char *p, const Book *bk) noexcept nogil:
    # bid levels then ask levels, best first, each followed by its orders; then the stops
    cdef uint32_t k, oi
    cdef int s
    cdef const BookSide *bs
    cdef const StopSide *ss
    cdef const Level *L
    for s in range(2):
        bs = &bk.side[s]
        k = bs.n
        while k > 0:
            k -= 1
            L = &bs.lv[k]
            if L.count == 0:
                continue
            sti64(p, L.price)
            st32(p + 8, L.count)
            st32(p + 12, 0)
            p += _SNAP_LEVEL
            oi = L.head
            while oi != NIL:
                p = _snap_order(src, p, oi)
                oi = src.pool[oi].next
    for s in range(2):
        ss = &bk.stops[s]
        k = ss.n
        while k > 0:
            k -= 1
            p = _snap_order(src, p, ss.e[k].idx)
    return p


cdef const IceSlot *_snap_ice(const SnapSrc *src, uint32_t idx) noexcept nogil:
    # _ice over the source's table (the same probe)
    cdef uint64_t mask = src.ice_cap - 1, i = _ice_hash(idx) & mask
    while src.ice[i].key1 != idx + 1:
        i = (i + 1) & mask
    return &src.ice[i]


cdef inline uint32_t _snap_acct(const SnapSrc *src, uint32_t session_id) noexcept nogil:
    # _acct over the source's table
    return src.acct[session_id] if session_id < src.acct_cap else 0


cdef char *_snap_order(const SnapSrc *src, char *p, uint32_t idx) noexcept nogil:
    cdef const Order *o = &src.pool[idx]
    cdef const IceSlot *ice
    st64(p, _oid(o))
    st64(p + 8, o.cl_ord_id)
    sti64(p + 16, o.price)
    st64(p + 24, o.qty)
    st64(p + 32, o.leaves)
    if o.flags & OF_STOP:
        sti64(p + 40, _stop_px(o))
        st64(p + 48, 0)
    elif o.flags & OF_ICEBERG:
        ice = _snap_ice(src, idx)
        st64(p + 40, ice.peak)
        st64(p + 48, ice.hidden)
    else:
        st64(p + 40, 0)
        st64(p + 48, 0)
    st32(p + 56, o.session_id)
    st32(p + 60, _snap_acct(src, o.session_id))
    p[64] = <char>o.side
    p[65] = <char>o.ord_type
    p[66] = <char>o.tif
    p[67] = <char>o.flags
    st32(p + 68, 0)
    return p + _SNAP_ORDER


# ----------------------------------------------------------------------------------- read

cdef const char *_snap_check(const char *base, uint64_t n) except NULL:
    # the body of a well-formed snapshot of this format (magic, version, length, CRC32C);
    # n >= header + trailer
    cdef uint64_t body, live
    cdef uint32_t nsym
    if memcmp(base, <const char *>b"HFTGWCOR", 8) != 0:
        raise ValueError("snapshot: bad magic")
    if ld32(base + 8) != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot: format version {ld32(base + 8)}, this build reads {SNAPSHOT_FORMAT}")
    nsym = ld32(base + 12)
    live = ld64(base + 32)
    body = ld64(base + 40)
    if nsym > MAX_SYMBOLS or n != _SNAP_HEADER + body + _SNAP_TRAILER:
        raise ValueError("snapshot: length does not match its header")
    if hftgw_crc32c(0, base, _SNAP_HEADER + body) != ld32(base + _SNAP_HEADER + body):
        raise ValueError("snapshot: CRC32C mismatch")
    if body < <uint64_t>nsym * _SNAP_SYMBOL or live > _MAX_POOL:
        raise ValueError("snapshot: inconsistent header")
    return base + _SNAP_HEADER


cdef int _restore_books(MatchingCore core, const char *base) except -1:
    # every symbol's levels and stops into an empty core built from the symbol records
    cdef uint32_t nsym = ld32(base + 12), i
    cdef uint64_t live = ld64(base + 32), count = 0
    cdef const char *p = base + _SNAP_HEADER
    cdef const char *end = p + ld64(base + 40)
    cdef const char *q = p + nsym * _SNAP_SYMBOL
    cdef const char *sym
    cdef Book *bk
    cdef int s
    core._next_order_id = ld64(base + 16)
    core._next_trade_id = ld64(base + 24)
    for i in range(nsym):
        bk = &core.books[i]
        sym = p + i * _SNAP_SYMBOL
        bk.last_px = ldi64(sym + 16)
        bk.has_last = ld32(sym + 24) != 0
        for s in range(2):
            q = _restore_levels(core, q, end, i, s, ld32(sym + 28 + 4 * s), &count)
        for s in range(2):
            q = _restore_stops(core, q, end, i, s, ld32(sym + 36 + 4 * s), &count)
    if q != end or count != live:
        raise ValueError("snapshot: content does not match its header")
    return 0


cdef const char *_restore_levels(MatchingCore core, const char *q, const char *end, uint32_t sym,
                                 int s, uint32_t nl, uint64_t *count) except NULL:
    # nl levels of side s (best first), each with its orders in time priority
    cdef Book *bk = &core.books[sym]
    cdef uint32_t k, j, idx
    cdef int64_t price
    cdef uint64_t hidden, aux1
    cdef Order *o
    for k in range(nl):
        if q + _SNAP_LEVEL > end:
            raise ValueError("snapshot: truncated")
        price = ldi64(q)
        j = ld32(q + 8)
        q += _SNAP_LEVEL
        if j == 0 or (bk.side[s].n and not _worse(s + 1, price, bk.side[s].lv[0].price)):
            raise ValueError("snapshot: levels out of order")
        while j > 0:
            j -= 1
            if q + _SNAP_ORDER > end:
                raise ValueError("snapshot: truncated")
            idx = _restore_order(core, q, sym, s + 1, False)
            o = &core.pool[idx]
            if o.price != price:
                raise ValueError("snapshot: order price differs from its level")
            aux1 = ld64(q + 40)
            hidden = ld64(q + 48)
            if o.flags & OF_ICEBERG:
                if aux1 == 0:
                    raise ValueError("snapshot: iceberg without a display quantity")
                _ice_put(core, idx, aux1, hidden)
            elif aux1 or hidden:
                raise ValueError("snapshot: reserve on a plain order")
            _rest(core, bk, idx, hidden)
            q += _SNAP_ORDER
            count[0] += 1
    return q


cdef const char *_restore_stops(MatchingCore core, const char *q, const char *end, uint32_t sym,
                                int s, uint32_t nl, uint64_t *count) except NULL:
    # nl pending stops of side s in trigger order
    cdef Book *bk = &core.books[sym]
    cdef uint32_t k, idx
    cdef int64_t price
    for k in range(nl):
        if q + _SNAP_ORDER > end:
            raise ValueError("snapshot: truncated")
        idx = _restore_order(core, q, sym, s + 1, True)
        price = ldi64(q + 40)
        if price <= 0 or (bk.stops[s].n and _farther(s + 1, bk.stops[s].e[0].stop_px, price)):
            raise ValueError("snapshot: stops out of order")
        # entries go in in trigger order, each behind the ones of its price
        _stop_insert(core, &bk.stops[s], s + 1, price, idx)
        q += _SNAP_ORDER
        count[0] += 1
    return q


cdef uint32_t _restore_order(MatchingCore self, const char *q, uint32_t symbol_id, uint8_t side,
                             bint stop) except? NIL:
    cdef uint32_t idx
    cdef Order *o
    cdef uint64_t pos
    cdef uint8_t flags = <uint8_t>q[67]
    if (<uint8_t>q[64] != side or (((flags & OF_STOP) != 0) != stop)
            or ld64(q + 32) == 0 or ((flags >> STP_SHIFT) & 7) > STP_DECREMENT or flags & 0x88
            or ld64(q + 24) > _MAX_ORDER_QTY or ld64(q + 32) > ld64(q + 24) or ld64(q) >> 48):
        raise ValueError("snapshot: bad order record")
    idx = _alloc(self)
    o = &self.pool[idx]
    o.oid_sym = (ld64(q) << 16) | <uint16_t>symbol_id
    o.cl_ord_id = ld64(q + 8)
    o.price = ldi64(q + 16)
    o.qty = <uint32_t>ld64(q + 24)
    o.leaves = <uint32_t>ld64(q + 32)
    o.session_id = ld32(q + 56)
    _set_acct(self, o.session_id, ld32(q + 60))
    o.side = side
    o.ord_type = <uint8_t>q[65]
    o.tif = <uint8_t>q[66]
    o.flags = flags
    o.prev = NIL
    o.next = NIL
    if _hfind(self, o.session_id, o.cl_ord_id, _hash(o.session_id, o.cl_ord_id), &pos) != NIL:
        raise ValueError("snapshot: duplicate (session, ClOrdID)")
    _hput(self, idx)
    return idx
