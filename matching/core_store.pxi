# Storage: the order pool, the (session, ClOrdID) hash and the iceberg reserve table.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef inline uint32_t _hash(uint32_t session_id, uint64_t cl_ord_id) noexcept nogil:
    # Fibonacci hashing (Knuth, TAOCP 6.4): the high half of one multiply by 2**64 / phi, so
    # sequential ClOrdIDs spread over the top bits, the ones _home reads
    cdef uint64_t x = cl_ord_id ^ (<uint64_t>session_id << 40) ^ (<uint64_t>session_id >> 24)
    return <uint32_t>((x * <uint64_t>0x9E3779B97F4A7C15ULL) >> 32)


cdef inline uint64_t _ice_hash(uint32_t idx) noexcept nogil:
    return (<uint64_t>idx * <uint64_t>0x9E3779B97F4A7C15ULL) >> 32


cdef inline uint64_t _oid(const Order *o) noexcept nogil:
    # the exchange order id (it shares a word with the symbol id; see Order in core.pxd)
    return o.oid_sym >> 16


cdef inline uint16_t _sym(const Order *o) noexcept nogil:
    return <uint16_t>o.oid_sym


cdef inline uint64_t _qty_cap(uint64_t max_qty) noexcept nogil:
    # Order quantities are 32-bit in the pool: a larger maximum means "any 32-bit quantity"
    return max_qty if max_qty < _MAX_ORDER_QTY else _MAX_ORDER_QTY


cdef inline uint32_t _acct(MatchingCore self, uint32_t session_id) noexcept nogil:
    # the account of a session (0 for one that never sent an order or opened)
    return self.acct[session_id] if session_id < self.acct_cap else 0


cdef int _set_acct(MatchingCore self, uint32_t session_id, uint32_t account_id) except -1 nogil:
    # Record a session's account: session ids are dense (counted from 1 by the gateway), so a
    # table indexed by id; a command carrying another account than before re-assigns it.
    cdef uint64_t cap = self.acct_cap, new_cap = self.acct_cap or 64
    cdef uint32_t *t
    if session_id >= cap:
        while new_cap <= session_id:
            new_cap *= 2
        t = <uint32_t *>realloc(self.acct, <size_t>new_cap * sizeof(uint32_t))
        if t == NULL:
            with gil:
                raise MemoryError()
        memset(t + cap, 0, <size_t>(new_cap - cap) * sizeof(uint32_t))
        self.acct = t
        self.acct_cap = new_cap
    self.acct[session_id] = account_id
    return 0


cdef int _init_book(MatchingCore self, Book *bk, int64_t tick, uint64_t max_qty) except -1:
    cdef int s
    memset(bk, 0, sizeof(Book))
    bk.tick = tick
    bk.max_qty = _qty_cap(max_qty)
    for s in range(2):
        bk.side[s].lv = <Level *>malloc(_INITIAL_LEVELS * sizeof(Level))
        bk.stops[s].e = <StopEntry *>malloc(_INITIAL_STOPS * sizeof(StopEntry))
        if bk.side[s].lv == NULL or bk.stops[s].e == NULL:
            raise MemoryError()
        bk.side[s].cap = _INITIAL_LEVELS
        bk.side[s].grid = tick
        bk.stops[s].cap = _INITIAL_STOPS
    return 0


cdef int _add_book(MatchingCore self, int64_t tick, uint64_t max_qty) except -1 nogil:
    cdef Book *books = <Book *>realloc(self.books, (<size_t>self.n_symbols + 1) * sizeof(Book))
    if books == NULL:
        with gil:
            raise MemoryError()
    self.books = books
    with gil:
        _init_book(self, &self.books[self.n_symbols], tick, max_qty)
    self.n_symbols += 1
    return 0


# --------------------------------------------------------------------------------------- pool

cdef int _grow_pool(MatchingCore self) except -1 nogil:
    # Chunks of max(64 Ki orders, 1/8 of the pool): little slack at any size, and an
    # amortised O(1) cost per order, as realloc of a big block is an mremap (no copy) on
    # Linux.  realloc keeps 16-byte alignment only, so re-align by hand when the offset of
    # the aligned view inside the block changes.
    cdef uint64_t step = self.pool_cap >> 3
    cdef uint64_t new_cap
    cdef size_t old_off = <char *>self.pool - <char *>self._pool_mem, new_off
    cdef void *mem
    if step < _POOL_CHUNK:
        step = _POOL_CHUNK
    new_cap = <uint64_t>self.pool_cap + step
    if new_cap > _MAX_POOL:
        new_cap = _MAX_POOL
    if new_cap <= self.pool_cap:
        with gil:
            raise MemoryError("order pool is at its 2**32 - 2 limit")
    mem = realloc(self._pool_mem, new_cap * sizeof(Order) + 64)
    if mem == NULL:
        with gil:
            raise MemoryError()
    new_off = ((<uintptr_t>mem + 63) & ~(<uintptr_t>63)) - <uintptr_t>mem
    if new_off != old_off:
        memmove(<char *>mem + new_off, <char *>mem + old_off, <size_t>self.pool_used * sizeof(Order))
    self._pool_mem = mem
    self.pool = <Order *>(<char *>mem + new_off)
    self.pool_cap = <uint32_t>new_cap
    return 0


cdef inline uint32_t _alloc(MatchingCore self) except? NIL nogil:
    cdef uint32_t idx = self.free_head
    if idx != NIL:
        self.free_head = self.pool[idx].next
    else:
        if self.pool_used == self.pool_cap:
            _grow_pool(self)
        idx = self.pool_used
        self.pool_used += 1
    self.resting += 1
    return idx


cdef inline void _release(MatchingCore self, uint32_t idx) noexcept nogil:
    self.pool[idx].next = self.free_head
    self.free_head = idx
    self.resting -= 1


# --------------------------------------------------------------------------------- order hash

# Linear probing over a table of any size (the home slot by Lemire's multiply-shift, not a
# mask).  A small table (a book of up to ~128 Ki live orders) doubles at 1/2 load, for short
# probes; past _HASH_DENSE slots it fills to 4/5 and grows by 1/5: 8-byte slots at 0.67-0.8
# load are 10-12 bytes per order, where half-full power-of-two tables took 16-32.

cdef inline uint64_t _home(uint32_t h, uint64_t cap) noexcept nogil:
    # h * cap / 2**32: slots in the order of h, and no division (cap <= 2**32)
    return (<uint64_t>h * cap) >> 32


cdef inline uint64_t _hnext(uint64_t i, uint64_t cap) noexcept nogil:
    i += 1
    return 0 if i == cap else i


cdef inline bint _hfull(MatchingCore self) noexcept nogil:
    # one more entry would pass the load limit (a table at its 2**32 limit fills on: the pool
    # is smaller)
    if self.hcap < _HASH_DENSE:
        return (self.hcount + 1) * 2 > self.hcap
    return (self.hcount + 1) * 5 > self.hcap * 4 and self.hcap < _MAX_HASH


cdef int _grow_hash(MatchingCore self) except -1 nogil:
    cdef uint64_t new_cap = self.hcap * 2 if self.hcap < _HASH_DENSE else self.hcap + self.hcap // 5, i, j
    cdef HSlot *t
    if new_cap > _MAX_HASH:
        new_cap = _MAX_HASH
    t = <HSlot *>calloc(new_cap, sizeof(HSlot))
    if t == NULL:
        with gil:
            raise MemoryError()
    for i in range(self.hcap):
        if self.htab[i].idx1 != 0:
            j = _home(self.htab[i].h, new_cap)
            while t[j].idx1 != 0:
                j = _hnext(j, new_cap)
            t[j] = self.htab[i]
    free(self.htab)
    self.htab = t
    self.hcap = new_cap
    self.hver += 1
    return 0


cdef uint32_t _hfind(MatchingCore self, uint32_t session_id, uint64_t cl_ord_id, uint32_t h,
                     uint64_t *pos) noexcept nogil:
    # Pool index of the live order (session_id, cl_ord_id), or NIL; *pos = its slot, or
    # the empty slot that ended the probe.
    cdef uint64_t cap = self.hcap, i = _home(h, cap)
    cdef HSlot *e
    cdef Order *o
    while True:
        e = &self.htab[i]
        if e.idx1 == 0:
            pos[0] = i
            return NIL
        if e.h == h:
            o = &self.pool[e.idx1 - 1]
            if o.cl_ord_id == cl_ord_id and o.session_id == session_id:
                pos[0] = i
                return e.idx1 - 1
        i = _hnext(i, cap)


cdef inline uint64_t _hdist(uint64_t home, uint64_t j, uint64_t cap) noexcept nogil:
    # probe steps from home to j, around the end of the table
    return j - home if j >= home else j + cap - home


cdef void _hdel_at(MatchingCore self, uint64_t pos) noexcept nogil:
    # Backward-shift deletion: pull each following entry of the cluster into the hole
    # unless that would move it before its home slot; no tombstones, so probe lengths
    # stay those of the live entries.
    cdef uint64_t cap = self.hcap, i = pos, j = pos, home
    while True:
        j = _hnext(j, cap)
        if self.htab[j].idx1 == 0:
            break
        home = _home(self.htab[j].h, cap)
        if _hdist(home, j, cap) >= _hdist(i, j, cap):
            self.htab[i] = self.htab[j]
            i = j
    self.htab[i].idx1 = 0
    self.hcount -= 1
    self.hver += 1


cdef void _hdel(MatchingCore self, uint32_t idx) noexcept nogil:
    cdef Order *o = &self.pool[idx]
    cdef uint64_t cap = self.hcap, i = _home(_hash(o.session_id, o.cl_ord_id), cap)
    while self.htab[i].idx1 != idx + 1:
        i = _hnext(i, cap)
    _hdel_at(self, i)


cdef inline uint64_t _hslot_for(MatchingCore self, uint32_t h) noexcept nogil:
    # the first empty slot of h's probe
    cdef uint64_t cap = self.hcap, i = _home(h, cap)
    while self.htab[i].idx1 != 0:
        i = _hnext(i, cap)
    return i


cdef inline int _hput_at(MatchingCore self, uint32_t idx, uint32_t h, uint64_t pos) except -1 nogil:
    # Insert pool order idx, of hash h, whose key _hfind just missed with its probe ending at
    # pos (the table unchanged since).
    if _hfull(self):
        _grow_hash(self)
        pos = _hslot_for(self, h)
    self.htab[pos].h = h
    self.htab[pos].idx1 = idx + 1
    self.hcount += 1
    self.hver += 1
    return 0


cdef int _hput(MatchingCore self, uint32_t idx) except -1 nogil:
    # The key must not be present (_hput_at grows the table first if it is full).
    cdef Order *o = &self.pool[idx]
    cdef uint32_t h = _hash(o.session_id, o.cl_ord_id)
    return _hput_at(self, idx, h, _hslot_for(self, h))


# --------------------------------------------------------------------------- iceberg reserves

cdef int _grow_ice(MatchingCore self) except -1 nogil:
    cdef uint64_t new_cap = self.ice_cap * 2, mask = new_cap - 1, i, j
    cdef IceSlot *t = <IceSlot *>calloc(new_cap, sizeof(IceSlot))
    if t == NULL:
        with gil:
            raise MemoryError()
    for i in range(self.ice_cap):
        if self.ice[i].key1 != 0:
            j = _ice_hash(self.ice[i].key1 - 1) & mask
            while t[j].key1 != 0:
                j = (j + 1) & mask
            t[j] = self.ice[i]
    free(self.ice)
    self.ice = t
    self.ice_cap = new_cap
    return 0


cdef IceSlot *_ice(MatchingCore self, uint32_t idx) noexcept nogil:
    # The reserve of an order flagged OF_ICEBERG (it is always there).
    cdef uint64_t mask = self.ice_cap - 1, i = _ice_hash(idx) & mask
    while self.ice[i].key1 != idx + 1:
        i = (i + 1) & mask
    return &self.ice[i]


cdef int _ice_put(MatchingCore self, uint32_t idx, uint64_t peak, uint64_t hidden) except -1 nogil:
    # Insert or update.
    cdef uint64_t mask, i
    if (self.ice_count + 1) * 2 > self.ice_cap:
        _grow_ice(self)
    mask = self.ice_cap - 1
    i = _ice_hash(idx) & mask
    while self.ice[i].key1 != 0 and self.ice[i].key1 != idx + 1:
        i = (i + 1) & mask
    if self.ice[i].key1 == 0:
        self.ice[i].key1 = idx + 1
        self.ice_count += 1
    self.ice[i].peak = peak
    self.ice[i].hidden = hidden
    return 0


cdef void _ice_del(MatchingCore self, uint32_t idx) noexcept nogil:
    cdef uint64_t mask = self.ice_cap - 1, i, j, home
    cdef IceSlot *e = _ice(self, idx)
    i = j = <uint64_t>(e - self.ice)
    while True:                       # backward-shift deletion, as in the order hash
        j = (j + 1) & mask
        if self.ice[j].key1 == 0:
            break
        home = _ice_hash(self.ice[j].key1 - 1) & mask
        if ((j - home) & mask) >= ((j - i) & mask):
            self.ice[i] = self.ice[j]
            i = j
    self.ice[i].key1 = 0
    self.ice_count -= 1


cdef inline uint64_t _hidden(MatchingCore self, uint32_t idx, const Order *o) noexcept nogil:
    if o.flags & OF_ICEBERG:
        return _ice(self, idx).hidden
    return 0


cdef void _forget(MatchingCore self, uint32_t idx) noexcept nogil:
    # A live order leaves for good: out of the hash (and the reserve table), slot freed.
    if self.pool[idx].flags & OF_ICEBERG:
        _ice_del(self, idx)
    _hdel(self, idx)
    _release(self, idx)
