# Included by pretrade.pyx: the committed state from the core's events (open quantities, order
# counts, positions with average-cost P&L), run in the outbound encoder's drain pass.

cdef inline int64_t _close_cost(int64_t cost, uint64_t close, uint64_t held) noexcept nogil:
    # the part of a position's cost that `close` of its `held` lots carry: cost * close / held,
    # in 64 bits when the product fits (a 128-bit division is several times slower)
    cdef uint64_t prod
    if close == held:
        return cost
    if cost >= 0 and not __builtin_mul_overflow(<uint64_t>cost, close, &prod):
        return <int64_t>(prod // held)
    return <int64_t>(<i128>cost * close // held)


cdef inline void _fill(Position *p, uint8_t side, int64_t px, uint64_t qty) noexcept nogil:
    # one fill of `qty` at `px` on one account's position (average-cost P&L)
    cdef uint64_t close, rem
    cdef int64_t close_cost
    if side == SIDE_BUY:
        p.open_buy = p.open_buy - qty if p.open_buy > qty else 0
        p.bought += qty
        if p.net >= 0:
            p.net += qty
            p.cost += px * <int64_t>qty
            return
        close = qty if qty < <uint64_t>(-p.net) else <uint64_t>(-p.net)
        close_cost = _close_cost(p.cost, close, <uint64_t>(-p.net))
        p.realized += close_cost - px * <int64_t>close
        p.cost -= close_cost
        p.net += close
        rem = qty - close
        if rem:
            p.net = rem
            p.cost = px * <int64_t>rem
    else:
        p.open_sell = p.open_sell - qty if p.open_sell > qty else 0
        p.sold += qty
        if p.net <= 0:
            p.net -= qty
            p.cost += px * <int64_t>qty
            return
        close = qty if qty < <uint64_t>p.net else <uint64_t>p.net
        close_cost = _close_cost(p.cost, close, <uint64_t>p.net)
        p.realized += px * <int64_t>close - close_cost
        p.cost -= close_cost
        p.net -= close
        rem = qty - close
        if rem:
            p.net = -<int64_t>rem
            p.cost = px * <int64_t>rem


cdef void _on_event(void *ctx, const Event *ev) noexcept nogil:
    # one event's effect on the committed state (the EventHook of the encoder's drain pass)
    cdef const EventView *v = <const EventView *>ctx
    cdef AccountRisk *ar
    cdef uint64_t *op
    cdef uint32_t sid
    cdef uint8_t typ = ev.type
    if typ == 0 or typ > EVT_REPLACED or typ == EVT_REJECTED or ev.symbol_id >= v.n_symbols:
        return                            # rejects, snapshots, levels, done, cancel rejects
    sid = ev.session_id
    ar = v.ses[sid].ar if sid < v.max_sessions else NULL
    if typ == EVT_FILL:
        v.sym[ev.symbol_id].last_px = ev.price
        if ar != NULL:
            ar.open_orders -= ev.leaves == 0 and ar.open_orders != 0
            _fill(&ar.pos[ev.symbol_id], ev.side, ev.price, ev.qty)
        sid = ev.contra_session
        ar = v.ses[sid].ar if sid < v.max_sessions else NULL
        if ar != NULL:
            ar.open_orders -= ev.contra_leaves == 0 and ar.open_orders != 0
            _fill(&ar.pos[ev.symbol_id], 3 - ev.side, ev.price, ev.qty)
        return
    if ar == NULL:
        return
    # open_buy and open_sell are adjacent (risk.pxd): index by side instead of branching on it,
    # the event mix is too irregular for the branch predictor
    op = &(&ar.pos[ev.symbol_id].open_buy)[ev.side == SIDE_SELL]
    if typ == EVT_ACCEPTED:
        ar.open_orders += 1
        op[0] += ev.qty
    elif typ == EVT_CANCELED:
        # leaves > 0: a partial cancel (self-trade prevention DECREMENT), the order lives on
        ar.open_orders -= ev.leaves == 0 and ar.open_orders != 0
        op[0] = op[0] - ev.qty if op[0] > ev.qty else 0
    else:  # EVT_REPLACED: leaves went from contra_leaves to leaves
        op[0] = op[0] + ev.leaves - ev.contra_leaves if op[0] + ev.leaves > ev.contra_leaves else 0
