# Included by persistence/copy_binary.pyx: the event log's other order events, for the
# order_events table (order_events_to_copy and its row writer), and events_info, the summary of
# a mixed batch of fills and order events.

cdef inline int _oe_kind(uint8_t t) noexcept nogil:
    # index into the type names; -1 for a fill, -2 for a type that is no order event
    if t == EVT_FILL:
        return -1
    if t == EVT_ACCEPTED:
        return 0
    if t == EVT_REJECTED:
        return 1
    if t == EVT_CANCELED:
        return 2
    if t == EVT_REPLACED:
        return 3
    if t == EVT_TRIGGERED:
        return 4
    return -2


def events_info(const unsigned char[::1] records not None, uint64_t after_trade_id=0) -> tuple:
    """A batch of the event log: (records, fills among them, those with trade id >
    after_trade_id, trade id and command seq of the last fill (0, 0 without fills)).  Raises
    ValueError when the length is not a multiple of 128 or a record is neither a fill nor an
    order event."""
    cdef size_t n = records.shape[0] // EVENT_SIZE, i, nf = 0, nall = 0
    cdef const Event *e
    cdef uint64_t tid = 0, fseq = 0
    cdef Py_ssize_t bad = -1
    _check_events(records.shape[0])
    with nogil:
        for i in range(n):
            e = _ev(&records[0], i)
            if e.type == EVT_FILL:
                nall += 1
                if e.ref > after_trade_id:
                    nf += 1
                tid = e.ref
                fseq = e.seq
            elif _oe_kind(e.type) < 0:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"record {bad} has type {_ev(&records[0], bad).type}: not an order event")
    return (n, nall, nf, tid, fseq)


cdef Py_ssize_t _pick_order_events(const unsigned char *base, size_t n, SidMap *m, size_t *rows,
                                   size_t *nrows) noexcept nogil:
    # the order events to write (fills are left out) and their sessions into m; -1 when all
    # is well, -2 out of memory, else the index of a record of another type
    cdef size_t i
    cdef const Event *e
    cdef int kind
    for i in range(n):
        e = _ev(base, i)
        kind = _oe_kind(e.type)
        if kind == -1:
            continue
        if kind < 0:
            return <Py_ssize_t>i
        if _map_add(m, e.session_id) != 0:
            return -2
        rows[nrows[0]] = i
        nrows[0] += 1
    return -1


cdef inline char *_oe_row(char *p, const Event *e, uint64_t no, Text part, Text name, Text acc,
                          const Text *sym, Py_ssize_t nsym) noexcept nogil:
    # one order_events row, columns ORDER_EVENT_COLUMNS (order_events_to_copy's docstring)
    p = _put16(p, OE_NFIELDS)
    p = _text(p, part)
    p = _int8(p, no)
    p = _int8(p, e.seq)
    p = _text(p, name)
    p = _text(p, acc)
    p = _int8(p, e.order_id) if e.order_id else _null(p)
    p = _int8(p, e.cl_ord_id)
    p = _int8(p, e.ref) if (e.type == EVT_CANCELED or e.type == EVT_REPLACED) else _null(p)
    p = _text(p, sym[e.symbol_id]) if e.symbol_id < <uint64_t>nsym else _null(p)
    p = _side(p, e.side) if (e.side == SIDE_BUY or e.side == SIDE_SELL) else _null(p)
    p = _int2(p, e.ord_type)
    p = _int2(p, e.tif)
    p = _int8(p, <uint64_t>e.price)
    p = _int8(p, e.qty)
    p = _int8(p, e.leaves)
    p = _int8(p, e.ref) if e.type == EVT_TRIGGERED else _null(p)
    p = _int2(p, e.reason)
    return _times(p, e.ts)


def order_events_to_copy(const unsigned char[::1] records not None, uint64_t first_no, symbols,
                         accounts_by_session, partition) -> bytes:
    """Binary COPY payload for the order_events table (columns ORDER_EVENT_COLUMNS).

    records: event-log records numbered first_no, first_no+1, ...; fills among them are left
    out (they go to ``fills``).  Per row: event_no, seq, type (ORDER_EVENT_TYPES), the owner
    session's account (accounts_by_session[session_id], read once per distinct session; None =
    NULL), order_id (NULL when 0: a rejected order has none), cl_ord_id, orig_cl_ord_id (ref of
    CANCELED / REPLACED, else NULL), symbol (NULL for a symbol_id outside ``symbols``: a reject
    of an unknown symbol), side 'B' / 'S' (NULL otherwise), ord_type, time_in_force (smallint,
    the SBE enum values), price (1e-4 units), qty (ACCEPTED / REJECTED / TRIGGERED: order qty;
    CANCELED: canceled qty; REPLACED: new total qty), leaves_qty, stop_px (ref of TRIGGERED,
    else NULL), reason (RejectReason / CancelReason, 0 = none), ts (microseconds), ts_ns.
    Raises ValueError for a record of another type, and whatever the mapping raises.
    """
    cdef size_t n = records.shape[0] // EVENT_SIZE, nrows = 0, k, total
    cdef Py_ssize_t nsym = len(symbols)
    cdef Text *sym = NULL
    cdef Text *acc = NULL
    cdef size_t *rows = NULL
    cdef Text part
    cdef Text names[5]
    cdef SidMap m
    cdef const Event *e
    cdef char *p
    cdef Py_ssize_t bad = -1
    keep = []
    m.slots = NULL
    _check_events(records.shape[0])
    _set_texts(&part, (partition,), keep)
    _set_texts(names, (b"accepted", b"rejected", b"canceled", b"replaced", b"triggered"), keep)
    try:
        _alloc_rows(n, 1, nsym, symbols, keep, &sym, &acc, &rows, &m)
        if n:
            with nogil:
                bad = _pick_order_events(&records[0], n, &m, rows, &nrows)
        if bad == -2:
            raise MemoryError()
        if bad >= 0:
            raise ValueError(f"record {bad} has type {_ev(&records[0], bad).type}: not an order event")
        _lookup_sessions(&m, accounts_by_session, keep)
        total = HEADER_SIZE + TRAILER_SIZE
        with nogil:
            for k in range(nrows):
                e = _ev(&records[0], rows[k])
                acc[k] = _map_get(&m, e.session_id).val
                # field count, 19 lengths, part, type, account, symbol, side, 11 int8 at most,
                # 3 int2
                total += (2 + OE_NFIELDS * 4 + part.n + names[_oe_kind(e.type)].n
                          + (acc[k].n if acc[k].n > 0 else 0)
                          + (sym[e.symbol_id].n if e.symbol_id < <uint64_t>nsym else 0)
                          + 1 + 11 * 8 + 3 * 2)
        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        with nogil:
            p = _copy_header(p)
            for k in range(nrows):
                e = _ev(&records[0], rows[k])
                p = _oe_row(p, e, first_no + rows[k], part, names[_oe_kind(e.type)], acc[k], sym, nsym)
            p = _put16(p, 0xFFFF)
        # nullable fields took less room than reserved: the payload ends at p
        return out[:p - PyBytes_AS_STRING(out)]
    finally:
        _free_rows(sym, acc, rows, &m)
