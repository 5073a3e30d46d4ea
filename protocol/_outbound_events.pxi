# Included by outbound.pyx: one Event record -> its business message(s) (all but BookSnapshot,
# in _outbound_snapshot.pxi), counted and handed to the capture and the market-data tap.
# Module-level functions on the encoder, which drain calls directly; the .pxd's Outbound._event
# and _execution are thin calls to them.

cdef inline int _reason_slot(uint16_t reason) noexcept nogil:
    return reason if reason < N_REASON_COUNTERS else N_REASON_COUNTERS - 1


cdef inline char *_begin(Outbound o, const Event *ev, uint16_t template_id, size_t block_length,
                         uint64_t *seq) noexcept nogil:
    # number the message for ev's session, then reserve its block (NULL: not buffered)
    seq[0] = o._number(ev.session_id)
    return o._reserve(ev.session_id, template_id, block_length, 0)


cdef void _encode_event(Outbound o, const Event *ev, bint live) noexcept nogil:
    # the blocks are filled by the generated fill_* functions (protocol/fillgen.py)
    cdef uint64_t seq, key
    cdef char *p
    cdef uint8_t t = ev.type
    if o.observer.fn != NULL:
        o.observer.fn(o.observer.ctx, ev)
    o.events_by_type[t] += 1
    key = o.symbols.key_of(ev.symbol_id)
    if o.md_touch_on and (t == EVT_ACCEPTED or t == EVT_FILL or t == EVT_CANCELED
                          or t == EVT_REPLACED):
        o._md_tap(ev)
    if t == EVT_ACCEPTED:
        o._capture(ev)
        p = _begin(o, ev, TPL_ORDER_ACCEPTED, sizeof(OrderAcceptedBlock), &seq)
        if p != NULL:
            fill_order_accepted(p, ev, seq, key)
            _note_ack(o, ev, live)
    elif t == EVT_REJECTED:
        o._capture(ev)
        o.rejects_by_reason[_reason_slot(ev.reason)] += 1
        p = _begin(o, ev, TPL_ORDER_REJECTED, sizeof(OrderRejectedBlock), &seq)
        if p != NULL:
            if key == 0:
                key = ev.ref       # an unknown symbol: the name as the request sent it
            fill_order_rejected(p, ev, seq, key)
            _note_ack(o, ev, live)
    elif t == EVT_FILL:
        o.fills += 1
        o.traded_qty += ev.qty
        o._capture(ev)
        _encode_execution(o, ev, False)
        _encode_execution(o, ev, True)
    elif t == EVT_CANCELED:
        o.cancels_by_reason[_reason_slot(ev.reason)] += 1
        o._capture(ev)
        p = _begin(o, ev, TPL_ORDER_CANCELED, sizeof(OrderCanceledBlock), &seq)
        if p != NULL:
            fill_order_canceled(p, ev, seq, key)
    elif t == EVT_TRIGGERED:
        o._capture(ev)
        p = _begin(o, ev, TPL_ORDER_TRIGGERED, sizeof(OrderTriggeredBlock), &seq)
        if p != NULL:
            fill_order_triggered(p, ev, seq, key)
    elif t == EVT_REPLACED:
        o._capture(ev)
        p = _begin(o, ev, TPL_ORDER_REPLACED, sizeof(OrderReplacedBlock), &seq)
        if p != NULL:
            fill_order_replaced(p, ev, seq, key)
    elif t == EVT_CANCEL_REJECTED:
        o.rejects_by_reason[_reason_slot(ev.reason)] += 1
        p = _begin(o, ev, TPL_CANCEL_REJECTED, sizeof(CancelRejectedBlock), &seq)
        if p != NULL:
            fill_cancel_rejected(p, ev, seq, key)
    elif t == EVT_MASS_CANCEL_DONE:
        p = _begin(o, ev, TPL_MASS_CANCEL_DONE, sizeof(MassCancelDoneBlock), &seq)
        if p != NULL:
            fill_mass_cancel_done(p, ev, seq, key)
    # EVT_BOOK_LEVEL outside a snapshot and unknown types: counted above, nothing to send


cdef void _encode_execution(Outbound o, const Event *ev, bint maker) noexcept nogil:
    cdef uint32_t sid = ev.contra_session if maker else ev.session_id
    cdef uint64_t seq = o._number(sid)
    cdef uint64_t key
    cdef ExecutionBlock *ex = <ExecutionBlock *>o._reserve(sid, TPL_EXECUTION,
                                                           sizeof(ExecutionBlock), 0)
    if ex == NULL:
        return
    key = o.symbols.key_of(ev.symbol_id)
    ex.seq_num = seq
    ex.transact_time = ev.ts
    ex.trade_id = ev.ref
    ex.last_px = ev.price
    ex.last_qty = ev.qty
    memcpy(ex.symbol, &key, 8)
    if maker:
        ex.cl_ord_id = ev.contra_cl_ord_id
        ex.order_id = ev.contra_order_id
        ex.leaves_qty = ev.contra_leaves
        ex.side = 3 - ev.side    # the maker is on the other side (BUY=1, SELL=2)
        ex.liquidity = LIQ_MAKER
    else:
        ex.cl_ord_id = ev.cl_ord_id
        ex.order_id = ev.order_id
        ex.leaves_qty = ev.leaves
        ex.side = ev.side
        ex.liquidity = LIQ_TAKER
