# Included by pretrade.pyx: the per-request checks of NewOrder and ReplaceOrder, in C, run by
# RiskEngine._check with the GIL released.  Each returns a RejectReason, 0 when the request
# passes (or is not a valid request: the core rejects it with its own reason).

cdef inline uint64_t _min_limit(uint64_t a, uint64_t b) noexcept nogil:
    # the tighter of two limits where 0 means "none"
    if a == 0:
        return b
    if b == 0:
        return a
    return a if a < b else b


cdef inline void _refill(Bucket *b, uint64_t ts) noexcept nogil:
    if ts > b.last_ts:
        b.tokens += (ts - b.last_ts) * 1e-9 * b.rate
        if b.tokens > b.burst:
            b.tokens = b.burst
        b.last_ts = ts


cdef inline void _set_bucket(Bucket *b, double rate, double burst) noexcept nogil:
    b.rate = rate
    b.burst = burst if burst >= 1.0 else 1.0
    b.tokens = b.burst
    b.last_ts = 0


cdef inline bint _outside_band(const SymbolRisk *sy, int64_t px, int64_t ref) noexcept nogil:
    # |px - ref| beyond the tick band or beyond the relative band (the narrower applies);
    # multiplications only, no 128-bit division on the order path
    cdef int64_t diff = px - ref if px > ref else ref - px
    if sy.band_ticks and <i128>diff > <i128>sy.band_ticks * sy.tick:
        return True
    if sy.band_ppm and <i128>diff * 1000000 > <i128>ref * sy.band_ppm:
        return True
    return False


cdef inline void _pend(Position *p, uint64_t gen) noexcept nogil:
    # bring a cell's in-flight quantities to the current generation (older ones are processed)
    if p.pend_gen != gen:
        p.pend_buy = 0
        p.pend_sell = 0
        p.pend_gen = gen


cdef inline int64_t _reference(const SymbolRisk *sy) noexcept nogil:
    # the price band's and a market order's reference: the last trade, else the configured one
    return sy.last_px if sy.last_px > 0 else sy.ref_price


cdef inline uint16_t _symbol_gate(const AccountRisk *ar, const SymbolRisk *sy, uint64_t q) noexcept nogil:
    # halt, then the tighter of the symbol's and the account's maximum order quantity
    cdef uint64_t lim
    if sy.halted:
        return REJ_SYMBOL_HALTED
    lim = _min_limit(sy.max_order_qty, ar.max_order_qty)
    if lim and q > lim:
        return REJ_MAX_ORDER_QTY
    return 0


cdef inline uint16_t _position_check(const Position *p, uint64_t add_long, uint64_t add_short,
                                     uint64_t add_gross, bint check_long,
                                     bint check_short) noexcept nogil:
    # The worst case as a credit check counts it (every open and in-flight order of the account
    # fills), with this request's lots added: long = net + open buys + in-flight buys, short =
    # -net + open sells + in-flight sells; only the sides the request adds to are held to
    # max_net.  gross = |net| + every open and in-flight lot.  p: in-flight quantities current.
    cdef i128 long_w = <i128>p.net + p.open_buy + p.pend_buy + add_long
    cdef i128 short_w = -<i128>p.net + p.open_sell + p.pend_sell + add_short
    cdef i128 gross = ((<i128>p.net if p.net >= 0 else -<i128>p.net) + p.open_buy + p.pend_buy
                       + p.open_sell + p.pend_sell + add_gross)
    if p.max_net and ((check_long and long_w > p.max_net) or (check_short and short_w > p.max_net)):
        return REJ_MAX_POSITION_NET
    if p.max_gross and gross > p.max_gross:
        return REJ_MAX_POSITION_GROSS
    return 0


cdef inline uint16_t _check_new(RiskEngine r, AccountRisk *ar, const Command *c) noexcept nogil:
    cdef SymbolRisk *sy
    cdef Position *p
    cdef uint64_t lim, q = c.qty, gen = r.gen
    cdef uint64_t buy = q if c.side == SIDE_BUY else 0, sell = q - buy
    cdef int64_t ref, px
    cdef uint16_t reason
    if ar.blocked:
        return REJ_ACCOUNT_BLOCKED
    if c.symbol_id >= r.n_symbols or (c.side != SIDE_BUY and c.side != SIDE_SELL) or q == 0:
        return 0
    sy = &r.sym[c.symbol_id]
    reason = _symbol_gate(ar, sy, q)
    if reason:
        return reason
    ref = _reference(sy)
    if c.ord_type == ORD_MARKET:
        px = ref
    elif c.ord_type == ORD_STOP:
        # a stop becomes a market order at its trigger: its notional is counted at the stop
        # price (no limit price to hold to the band)
        px = c.stop_price if c.stop_price > 0 else ref
    else:
        px = c.price
        if ref > 0 and px > 0 and _outside_band(sy, px, ref):
            return REJ_PRICE_BAND
    lim = _min_limit(sy.max_notional, ar.max_notional)
    if lim:
        if px <= 0:
            if c.ord_type == ORD_MARKET:
                return REJ_NO_REFERENCE_PRICE
        elif <i128>px * q > <i128>lim:
            return REJ_MAX_NOTIONAL
    if ar.pend_gen != gen:
        ar.pend_orders = 0
        ar.pend_gen = gen
    if ar.max_open_orders and ar.open_orders + ar.pend_orders + 1 > ar.max_open_orders:
        return REJ_MAX_OPEN_ORDERS
    p = &ar.pos[c.symbol_id]
    _pend(p, gen)
    if p.max_net or p.max_gross:
        reason = _position_check(p, buy, sell, q, buy != 0, sell != 0)
        if reason:
            return reason
    # accepted by the gateway: count it in flight until the core has processed it
    p.pend_buy += buy
    p.pend_sell += sell
    ar.pend_orders += 1
    return 0


cdef inline uint16_t _check_replace(RiskEngine r, AccountRisk *ar, const Command *c) noexcept nogil:
    cdef SymbolRisk *sy
    cdef Position *p
    cdef uint64_t lim, q = c.qty, old_qty = 0, old_leaves = 0, delta, buy, sell
    cdef uint8_t side = 0
    cdef int64_t ref
    cdef uint16_t reason
    if ar.blocked:
        return REJ_ACCOUNT_BLOCKED
    if c.symbol_id >= r.n_symbols or q == 0 or c.price <= 0:
        return 0
    sy = &r.sym[c.symbol_id]
    reason = _symbol_gate(ar, sy, q)
    if reason:
        return reason
    ref = _reference(sy)
    if ref > 0 and _outside_band(sy, c.price, ref):
        return REJ_PRICE_BAND
    lim = _min_limit(sy.max_notional, ar.max_notional)
    if lim and <i128>c.price * q > <i128>lim:
        return REJ_MAX_NOTIONAL
    p = &ar.pos[c.symbol_id]
    if not (p.max_net or p.max_gross):
        return 0
    if r.core.live_order(c.session_id, c.orig_cl_ord_id, &side, &old_qty, &old_leaves):
        if q <= old_qty:
            return 0                  # not an increase: never refused on position
        delta = q - old_qty
    else:
        delta = q                     # not in the book yet (in flight) or unknown: worst case
    _pend(p, r.gen)
    # side 0 (order not found): the increase is reserved on both sides
    buy = delta if side != SIDE_SELL else 0
    sell = delta if side != SIDE_BUY else 0
    reason = _position_check(p, buy, sell, delta + (delta if side == 0 else 0),
                             side != SIDE_SELL, side != SIDE_BUY)
    if reason:
        return reason
    p.pend_buy += buy
    p.pend_sell += sell
    return 0
