# Included by pretrade.pyx: the risk state as bytes (RiskEngine.snapshot / restore).

# risk snapshot layout (RiskEngine.snapshot)
RISK_SNAPSHOT_VERSION = 1
cdef enum:
    _RSK_HEADER = 48


cdef bytes _snapshot(RiskEngine r):
    # RiskEngine.snapshot (layout in its docstring)
    cdef uint32_t a, s, nb = 0
    cdef uint64_t gen = r.gen
    cdef Position *p
    cdef char *w
    cdef Py_ssize_t size, off
    names = [n.encode("ascii") for n in r._names]
    for a in range(r.n_acc):
        if r.acc[a].pend_gen == gen and r.acc[a].pend_orders:
            raise RuntimeError("risk snapshot while requests are in flight")
        for s in range(r.n_symbols):
            p = &r.acc[a].pos[s]
            if p.pend_gen == gen and (p.pend_buy or p.pend_sell):
                raise RuntimeError("risk snapshot while requests are in flight")
    index = {}
    for a in range(r.n_acc):
        index[<size_t>r.acc[a]] = a
    bound = []
    for s in range(r.max_sessions):
        if r.ses[s].ar != NULL:
            bound.append((s, index[<size_t>r.ses[s].ar]))
    nb = len(bound)
    size = (_RSK_HEADER + 8 * r.n_symbols + sizeof(Command) * len(r._admin_log)
            + sum(2 + len(n) + 8 for n in names) + <Py_ssize_t>r.n_acc * r.n_symbols * 56
            + 8 * nb)
    out = bytearray(size)
    w = out
    memset(w, 0, _RSK_HEADER)
    memcpy(w, <const char *>b"HFTGWRSK", 8)
    st32(w + 8, RISK_SNAPSHOT_VERSION)
    st32(w + 12, r.n_symbols)
    st32(w + 16, r.n_acc)
    st32(w + 20, len(r._admin_log))
    st32(w + 24, nb)
    st64(w + 32, r.skipped_admin)
    off = _RSK_HEADER
    for s in range(r.n_symbols):
        st64(w + off, <uint64_t>r.sym[s].last_px)
        off += 8
    for rec in r._admin_log:
        out[off:off + sizeof(Command)] = rec
        off += sizeof(Command)
    for a in range(r.n_acc):
        n = names[a]
        st16(w + off, len(n))
        out[off + 2:off + 2 + len(n)] = n
        off += 2 + len(n)
        st64(w + off, r.acc[a].open_orders)
        off += 8
        for s in range(r.n_symbols):
            p = &r.acc[a].pos[s]
            st64(w + off, <uint64_t>p.net)
            st64(w + off + 8, <uint64_t>p.cost)
            st64(w + off + 16, <uint64_t>p.realized)
            st64(w + off + 24, p.open_buy)
            st64(w + off + 32, p.open_sell)
            st64(w + off + 40, p.bought)
            st64(w + off + 48, p.sold)
            off += 56
    for sid, a in bound:
        st32(w + off, sid)
        st32(w + off + 4, a)
        off += 8
    return bytes(out)


cdef tuple _restore_parse(RiskEngine eng, const unsigned char[::1] v):
    # check a snapshot against this state before anything changes: returns ([(account name,
    # offset of its positions)], [(session id, account number)]); raises ValueError
    cdef const char *r
    cdef Py_ssize_t n = v.shape[0], off
    cdef uint32_t nsym, nacc, nadm, nb, s, k, ln
    if n < _RSK_HEADER:
        raise ValueError("risk snapshot: truncated header")
    r = <const char *>&v[0]
    if memcmp(r, <const char *>b"HFTGWRSK", 8) != 0:
        raise ValueError("risk snapshot: bad magic")
    if ld32(r + 8) != RISK_SNAPSHOT_VERSION:
        raise ValueError(f"risk snapshot: version {ld32(r + 8)}, this build reads "
                         f"{RISK_SNAPSHOT_VERSION}")
    nsym = ld32(r + 12)
    nacc = ld32(r + 16)
    nadm = ld32(r + 20)
    nb = ld32(r + 24)
    if nsym != eng.n_symbols:
        raise ValueError(f"risk snapshot: {nsym} symbols, {eng.n_symbols} defined")
    if eng._admin_log:
        raise ValueError("risk snapshot: restore into a state that has admin actions applied")
    off = _RSK_HEADER + 8 * <Py_ssize_t>nsym + <Py_ssize_t>sizeof(Command) * nadm
    if off > n:
        raise ValueError("risk snapshot: truncated")
    accounts = []
    for k in range(nacc):
        if off + 2 > n:
            raise ValueError("risk snapshot: truncated in the accounts")
        ln = ld16(r + off)
        if ln == 0 or off + 2 + ln + 8 + <Py_ssize_t>nsym * 56 > n:
            raise ValueError("risk snapshot: truncated in the accounts")
        try:
            name = bytes(v[off + 2:off + 2 + ln]).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("risk snapshot: account name is not ASCII") from None
        accounts.append((name, off + 2 + ln))
        off += 2 + ln + 8 + <Py_ssize_t>nsym * 56
    if off + 8 * <Py_ssize_t>nb != n:
        raise ValueError("risk snapshot: length does not match its content")
    bound = []
    for k in range(nb):
        s = ld32(r + off + 8 * k)
        if s >= eng.max_sessions or ld32(r + off + 8 * k + 4) >= nacc:
            raise ValueError(f"risk snapshot: bad session binding {s}")
        bound.append((s, ld32(r + off + 8 * k + 4)))
    return accounts, bound


cdef void _restore(RiskEngine eng, data) except *:
    # RiskEngine.restore
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    cdef const char *r
    cdef Py_ssize_t off
    cdef uint32_t nsym, nadm, s, k
    cdef AccountRisk *ar
    cdef Position *p
    accounts, bound = _restore_parse(eng, v)
    r = <const char *>&v[0]
    nsym = ld32(r + 12)
    nadm = ld32(r + 20)
    for name, _ in accounts:
        eng._account(name)
    off = _RSK_HEADER + 8 * <Py_ssize_t>nsym
    for k in range(nadm):
        try:
            eng.apply_admin(bytes(v[off:off + sizeof(Command)]))
        except ValueError:
            eng.skipped_admin += 1
        off += sizeof(Command)
    eng.skipped_admin += ld64(r + 32)
    for s in range(nsym):
        eng.sym[s].last_px = <int64_t>ld64(r + _RSK_HEADER + 8 * s)
    for name, pos_off in accounts:
        ar = eng._account(name)
        off = pos_off
        ar.open_orders = ld64(r + off)
        off += 8
        for s in range(nsym):
            p = &ar.pos[s]
            p.net = <int64_t>ld64(r + off)
            p.cost = <int64_t>ld64(r + off + 8)
            p.realized = <int64_t>ld64(r + off + 16)
            p.open_buy = ld64(r + off + 24)
            p.open_sell = ld64(r + off + 32)
            p.bought = ld64(r + off + 40)
            p.sold = ld64(r + off + 48)
            off += 56
    for s, k in bound:
        eng.ses[s].ar = eng._account(accounts[k][0])
