# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Event records -> PostgreSQL ``COPY ... FROM STDIN (FORMAT binary)`` payloads (fills, order events).

Format (PostgreSQL docs, "COPY", section "Binary Format"): the 11-byte signature
``PGCOPY\\n\\377\\r\\n\\0``, int32 flags 0, int32 header-extension length 0; per row an int16
field count then, per field, an int32 byte length (-1 = NULL) and the value in the type's binary
send format (big-endian): bigint = int64; text and char(1) = the UTF-8 bytes; timestamptz =
int64 microseconds since 2000-01-01 00:00 UTC; finally the int16 trailer -1.

Input records are 128-byte Event records (matching/records.pxd) of type EVT_FILL: ref = trade
id, seq, ts (ns since the Unix epoch), symbol_id, price (1e-4 units), qty (lots), session_id /
order_id = taker, contra_session / contra_order_id = maker, side = taker side = aggressor.
The C loop writes every row straight into the result bytes object: no Python object per row.

``order_events_to_copy`` writes the other order events of the event log (persistence/event_log.py)
into ``order_events`` (columns ORDER_EVENT_COLUMNS); ``events_info`` summarizes a mixed batch.
Those two live in copy_binary_order_events.pxi, included at the end of this file.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from matching.native.byteorder cimport st16, st32, st64
from matching.records cimport (
    EVT_ACCEPTED,
    EVT_CANCELED,
    EVT_FILL,
    EVT_REJECTED,
    EVT_REPLACED,
    EVT_TRIGGERED,
    SIDE_BUY,
    SIDE_SELL,
    Event,
)


cdef extern from *:
    uint64_t __builtin_bswap64(uint64_t) nogil
    uint32_t __builtin_bswap32(uint32_t) nogil
    uint16_t __builtin_bswap16(uint16_t) nogil

#: the target columns, in the order of the fields in every row
FILL_COLUMNS = ("partition", "trade_id", "seq", "symbol", "price", "qty", "maker_order_id",
                "maker_account", "taker_order_id", "taker_account", "aggressor_side", "ts", "ts_ns")

#: the order_events columns, in the order of the fields in every row
ORDER_EVENT_COLUMNS = ("partition", "event_no", "seq", "type", "account", "order_id", "cl_ord_id",
                       "orig_cl_ord_id", "symbol", "side", "ord_type", "time_in_force", "price",
                       "qty", "leaves_qty", "stop_px", "reason", "ts", "ts_ns")
#: order_events.type by EventType
ORDER_EVENT_TYPES = {EVT_ACCEPTED: "accepted", EVT_REJECTED: "rejected", EVT_CANCELED: "canceled",
                     EVT_REPLACED: "replaced", EVT_TRIGGERED: "triggered"}

cdef enum:
    OE_NFIELDS = 19
    NFIELDS = 13
    EVENT_SIZE = 128
    HEADER_SIZE = 19
    TRAILER_SIZE = 2
    # field count + 13 length words + the fixed-width values (8 int64 and the 1-byte side)
    ROW_FIXED = 2 + NFIELDS * 4 + 8 * 8 + 1

# microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL timestamp epoch)
cdef int64_t PG_EPOCH_US = 946684800000000

cdef const char *SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


ctypedef struct Text:
    const char *p
    int32_t n            # -1 = NULL


# COPY BINARY is big-endian: byte-swap, then the shared little-endian stores
cdef inline char *_put16(char *p, uint16_t v) noexcept nogil:
    st16(p, __builtin_bswap16(v))
    return p + 2


cdef inline char *_put32(char *p, uint32_t v) noexcept nogil:
    st32(p, __builtin_bswap32(v))
    return p + 4


cdef inline char *_int8(char *p, uint64_t v) noexcept nogil:
    p = _put32(p, 8)
    st64(p, __builtin_bswap64(v))
    return p + 8


cdef inline char *_text(char *p, Text t) noexcept nogil:
    p = _put32(p, <uint32_t>t.n)
    if t.n > 0:
        memcpy(p, t.p, t.n)
        p += t.n
    return p


cdef inline char *_int2(char *p, uint16_t v) noexcept nogil:
    p = _put32(p, 2)
    return _put16(p, v)


cdef inline char *_null(char *p) noexcept nogil:
    return _put32(p, 0xFFFFFFFF)


cdef int _check_events(Py_ssize_t nbytes) except -1:
    if nbytes % EVENT_SIZE:
        raise ValueError("not a whole number of 128-byte Event records")
    return 0


cdef inline const Event *_ev(const unsigned char *base, size_t i) noexcept nogil:
    return <const Event *>(base + i * EVENT_SIZE)


cdef bytes _utf8(object s):
    if s is None:
        return None
    if isinstance(s, bytes):
        return <bytes>s
    return (<str>s).encode("utf-8")


cdef void _set_texts(Text *dst, object values, list keep) except *:
    # point dst[i] at the UTF-8 bytes of values[i]; ``keep`` owns those bytes objects
    cdef Py_ssize_t i
    for i, v in enumerate(values):
        b = _utf8(v)
        keep.append(b)
        dst[i].p = PyBytes_AS_STRING(b)
        dst[i].n = len(b)


# -- session id -> account: open addressing, linear probing, grows at 50 % load ---------------
ctypedef struct SidSlot:
    int64_t key          # session id, -1 = empty
    Text val


ctypedef struct SidMap:
    SidSlot *slots
    size_t cap           # power of two
    size_t used


cdef int _map_init(SidMap *m, size_t cap) noexcept nogil:
    cdef size_t i
    m.slots = <SidSlot *>malloc(cap * sizeof(SidSlot))
    if m.slots == NULL:
        return -1
    m.cap = cap
    m.used = 0
    for i in range(cap):
        m.slots[i].key = -1
        m.slots[i].val.p = NULL
        m.slots[i].val.n = -1
    return 0


cdef inline size_t _hash(uint32_t sid, size_t cap) noexcept nogil:
    return (<uint64_t>sid * 0x9E3779B97F4A7C15ULL >> 32) & (cap - 1)


cdef inline SidSlot *_map_get(SidMap *m, uint32_t sid) noexcept nogil:
    """The slot holding sid, or the empty slot where it would go."""
    cdef size_t h = _hash(sid, m.cap)
    while m.slots[h].key >= 0 and m.slots[h].key != <int64_t>sid:
        h = (h + 1) & (m.cap - 1)
    return &m.slots[h]


cdef int _map_add(SidMap *m, uint32_t sid) noexcept nogil:
    """Insert sid (value NULL) if absent; 0, or -1 when out of memory."""
    cdef SidSlot *s = _map_get(m, sid)
    cdef SidMap bigger
    cdef size_t i
    if s.key >= 0:
        return 0
    if 2 * (m.used + 1) > m.cap:
        if _map_init(&bigger, 2 * m.cap) != 0:
            return -1
        for i in range(m.cap):
            if m.slots[i].key >= 0:
                _map_get(&bigger, <uint32_t>m.slots[i].key)[0] = m.slots[i]
        bigger.used = m.used
        free(m.slots)
        m[0] = bigger
        s = _map_get(m, sid)
    s.key = sid
    m.used += 1
    return 0


cdef int _lookup(object accounts, uint32_t sid, list keep, Text *out) except -1:
    b = _utf8(accounts[sid])
    if b is None:
        out.p = NULL
        out.n = -1
    else:
        keep.append(b)
        out.p = PyBytes_AS_STRING(b)
        out.n = len(b)
    return 0


def join_records(chunks) -> bytes:
    """Concatenate a sequence of bytes-like objects into one bytes object.

    Same result as b"".join(chunks), but the copy runs without the GIL (a batch is megabytes
    and is joined on the sink's worker thread, next to the event loop).
    """
    cdef Py_ssize_t m = len(chunks), i
    cdef size_t total = 0, off = 0
    cdef const unsigned char **ptr = NULL
    cdef size_t *ln = NULL
    cdef const unsigned char[::1] v
    cdef char *dst
    views = []
    try:
        ptr = <const unsigned char **>malloc((m + 1) * sizeof(void *))
        ln = <size_t *>malloc((m + 1) * sizeof(size_t))
        if ptr == NULL or ln == NULL:
            raise MemoryError()
        for i in range(m):
            v = memoryview(chunks[i]).cast("B")
            views.append(v)
            ln[i] = v.shape[0]
            ptr[i] = &v[0] if ln[i] else NULL
            total += ln[i]
        out = PyBytes_FromStringAndSize(NULL, total)
        dst = PyBytes_AS_STRING(out)
        with nogil:
            for i in range(m):
                if ln[i]:
                    memcpy(dst + off, ptr[i], ln[i])
                    off += ln[i]
        return out
    finally:
        free(ptr)
        free(ln)


def session_ids(const unsigned char[::1] records not None) -> set:
    """The distinct session ids (taker session_id and maker contra_session) of fill records."""
    cdef size_t n = records.shape[0] // EVENT_SIZE, i
    cdef SidMap m
    cdef int err = 0
    if _map_init(&m, 64) != 0:
        raise MemoryError()
    try:
        with nogil:
            for i in range(n):
                if _map_add(&m, _ev(&records[0], i).session_id) != 0 or \
                        _map_add(&m, _ev(&records[0], i).contra_session) != 0:
                    err = 1
                    break
        if err:
            raise MemoryError()
        return {m.slots[i].key for i in range(m.cap) if m.slots[i].key >= 0}
    finally:
        free(m.slots)


def fill_batch_info(const unsigned char[::1] records not None, uint32_t n_symbols) -> tuple:
    """Validate concatenated fill records; return (count, first_trade_id, last_trade_id, last_seq).

    Raises ValueError when the length is not a multiple of 128, a record is not EVT_FILL, its
    side is not 1/2, its symbol_id >= n_symbols, or trade ids do not strictly increase.
    (0, 0, 0, 0) for no records.
    """
    cdef size_t n = records.shape[0] // EVENT_SIZE, i
    cdef const Event *e
    cdef uint64_t prev = 0
    cdef int bad = 0
    _check_events(records.shape[0])
    if n == 0:
        return (0, 0, 0, 0)
    with nogil:
        for i in range(n):
            e = _ev(&records[0], i)
            if e.type != EVT_FILL:
                bad = 1
            elif e.side != SIDE_BUY and e.side != SIDE_SELL:
                bad = 2
            elif e.symbol_id >= n_symbols:
                bad = 3
            elif i > 0 and e.ref <= prev:
                bad = 4
            if bad:
                break
            prev = e.ref
    if bad:
        what = {1: "is not EVT_FILL", 2: "has a side other than BUY/SELL",
                3: f"has a symbol_id outside the {n_symbols} symbols",
                4: "does not increase the trade id"}[bad]
        raise ValueError(f"fill record {i} {what}")
    e = _ev(&records[0], n - 1)
    return (n, _ev(&records[0], 0).ref, e.ref, e.seq)


def first_after(const unsigned char[::1] records not None, uint64_t trade_id) -> int:
    """Index of the first record whose trade id (ref) is > trade_id, in records sorted by trade
    id (binary search); the record count if there is none."""
    cdef size_t lo = 0, hi = records.shape[0] // EVENT_SIZE, mid
    if hi == 0:
        return 0
    while lo < hi:
        mid = (lo + hi) // 2
        if _ev(&records[0], mid).ref <= trade_id:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int _lookup_sessions(SidMap *m, object accounts, list keep) except -1:
    # the only Python work of a payload: one lookup per distinct session
    cdef size_t c
    for c in range(m.cap):
        if m.slots[c].key >= 0:
            _lookup(accounts, <uint32_t>m.slots[c].key, keep, &m.slots[c].val)
    return 0


cdef int _alloc_rows(size_t n, size_t acc_per_row, Py_ssize_t nsym, object symbols, list keep,
                     Text **sym, Text **acc, size_t **rows, SidMap *m) except -1:
    # a payload's arrays for n records: texts by symbol id (nsym = len(symbols)), acc_per_row
    # account texts and one record index per row, the session map; _free_rows releases them,
    # also after an error
    sym[0] = <Text *>malloc((nsym + 1) * sizeof(Text))
    acc[0] = <Text *>malloc((acc_per_row * n + 1) * sizeof(Text))
    rows[0] = <size_t *>malloc((n + 1) * sizeof(size_t))
    if sym[0] == NULL or acc[0] == NULL or rows[0] == NULL or _map_init(m, 64) != 0:
        raise MemoryError()
    _set_texts(sym[0], symbols, keep)
    return 0


cdef void _free_rows(Text *sym, Text *acc, size_t *rows, SidMap *m) noexcept:
    free(sym)
    free(acc)
    free(rows)
    free(m.slots)


cdef inline char *_copy_header(char *p) noexcept nogil:
    memcpy(p, SIGNATURE, 11)
    p = _put32(p + 11, 0)          # flags: no OIDs
    return _put32(p, 0)            # header extension length


cdef inline char *_side(char *p, uint8_t side) noexcept nogil:
    # a one-byte text 'B' / 'S'
    p = _put32(p, 1)
    p[0] = b'B' if side == SIDE_BUY else b'S'
    return p + 1


cdef inline char *_times(char *p, uint64_t ts) noexcept nogil:
    # ts (timestamp, microseconds since 2000-01-01) and ts_ns (ns since the Unix epoch)
    p = _int8(p, <uint64_t>(<int64_t>(ts // 1000) - PG_EPOCH_US))
    return _int8(p, ts)


cdef Py_ssize_t _pick_fills(const unsigned char *base, size_t n, uint64_t after_trade_id,
                            bint skip_other, Py_ssize_t nsym, SidMap *m, size_t *rows,
                            size_t *nrows) noexcept nogil:
    # the fills to write (indices into rows) and their sessions into m; -1 when all is well,
    # -2 out of memory, else the index of a record that is no fill of one of the symbols
    cdef size_t i
    cdef const Event *e
    for i in range(n):
        e = _ev(base, i)
        if skip_other and e.type != EVT_FILL:
            continue
        if e.ref <= after_trade_id:
            continue
        if e.type != EVT_FILL or (e.side != SIDE_BUY and e.side != SIDE_SELL) \
                or e.symbol_id >= <uint64_t>nsym:
            return <Py_ssize_t>i
        if _map_add(m, e.contra_session) != 0 or _map_add(m, e.session_id) != 0:
            return -2
        rows[nrows[0]] = i
        nrows[0] += 1
    return -1


cdef inline char *_fill_row(char *p, const Event *e, Text part, Text sym, Text maker,
                            Text taker) noexcept nogil:
    # one fills row, columns FILL_COLUMNS
    p = _put16(p, NFIELDS)
    p = _text(p, part)
    p = _int8(p, e.ref)
    p = _int8(p, e.seq)
    p = _text(p, sym)
    p = _int8(p, <uint64_t>e.price)
    p = _int8(p, e.qty)
    p = _int8(p, e.contra_order_id)
    p = _text(p, maker)
    p = _int8(p, e.order_id)
    p = _text(p, taker)
    p = _side(p, e.side)
    return _times(p, e.ts)


def fills_to_copy(const unsigned char[::1] records not None, symbols, accounts_by_session,
                  partition, uint64_t after_trade_id=0, bint skip_other=False) -> bytes:
    """Binary COPY payload for the fills table (columns FILL_COLUMNS, in that order).

    records: concatenated 128-byte EVT_FILL Event records.  symbols: sequence of str (or bytes)
    indexed by symbol_id.  accounts_by_session: mapping session_id -> account (str, bytes or
    None for NULL), read with ``[]`` once per distinct session, so a dict with ``__missing__``
    may compute them.  partition: str.  Rows with trade id (ref) <= after_trade_id are left
    out; with ``skip_other`` so are records of other types (a batch of the event log).  Returns
    the whole payload (header, rows, trailer).  The row loops run without the GIL; it is held
    only to look the distinct sessions up and to allocate the result.
    Raises ValueError for a record that is not a fill of one of the symbols or has a side
    other than BUY/SELL, and whatever the mapping raises for a missing session.
    """
    cdef size_t n = records.shape[0] // EVENT_SIZE, nrows = 0, k, total
    cdef Py_ssize_t nsym = len(symbols)
    cdef Text *sym = NULL
    cdef Text *acc = NULL            # per included row: [2*k] maker, [2*k+1] taker
    cdef size_t *rows = NULL
    cdef Text part
    cdef SidMap m
    cdef const Event *e
    cdef char *p
    cdef Py_ssize_t bad = -1
    keep = []                        # owns every bytes object a Text points into
    m.slots = NULL
    _check_events(records.shape[0])
    _set_texts(&part, (partition,), keep)
    try:
        _alloc_rows(n, 2, nsym, symbols, keep, &sym, &acc, &rows, &m)
        # pass 1: pick and check the rows, collect their sessions
        if n:
            with nogil:
                bad = _pick_fills(&records[0], n, after_trade_id, skip_other, nsym, &m, rows, &nrows)
        if bad == -2:
            raise MemoryError()
        if bad >= 0:
            e = _ev(&records[0], bad)
            raise ValueError(f"record {bad}: type {e.type} side {e.side} symbol_id {e.symbol_id} "
                             f"is not a fill of one of the {nsym} symbols")
        _lookup_sessions(&m, accounts_by_session, keep)
        # pass 2: size the payload
        total = HEADER_SIZE + TRAILER_SIZE
        with nogil:
            for k in range(nrows):
                e = _ev(&records[0], rows[k])
                acc[2 * k] = _map_get(&m, e.contra_session).val
                acc[2 * k + 1] = _map_get(&m, e.session_id).val
                total += (ROW_FIXED + part.n + sym[e.symbol_id].n
                          + (acc[2 * k].n if acc[2 * k].n > 0 else 0)
                          + (acc[2 * k + 1].n if acc[2 * k + 1].n > 0 else 0))

        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        # pass 3: write it
        with nogil:
            p = _copy_header(p)
            for k in range(nrows):
                e = _ev(&records[0], rows[k])
                p = _fill_row(p, e, part, sym[e.symbol_id], acc[2 * k], acc[2 * k + 1])
            p = _put16(p, 0xFFFF)          # trailer: field count -1
        if p != PyBytes_AS_STRING(out) + total:
            raise AssertionError("COPY payload size mismatch")
        return out
    finally:
        _free_rows(sym, acc, rows, &m)


include "copy_binary_order_events.pxi"
