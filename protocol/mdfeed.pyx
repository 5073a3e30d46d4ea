# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Market-data trade encoding in C: raw EVT_FILL records -> per-symbol Trade batches.

The market-data publisher (``gateway/marketdata/fanout.py``) works per symbol per event-loop tick;
only trades come one per fill, so they are encoded here, in one pass over the fill records the
outbound encoder copied (``Outbound.take_md_trades``), without a Python object per fill:

* binary: Trade messages (template 41 of ``protocol/schema/hftgw-v1.xml``, no SOFH) back to
  back, as one market-data WebSocket message carries them;
* JSON: the entries of the ``trades`` array of the JSON ``trades`` message (docs/protocol.md,
  "Market data feed"): ``{"tradeId":1,"price":1500000,"qty":40,"aggressorSide":"BUY",
  "transactTime":1763679301998467000}`` separated by commas.  Only integers and the two side
  names are written, so no escaping is needed; the caller adds the msgspec-encoded envelope
  with the (escaped) symbol name.

Units as everywhere: price int64 in 1e-4 currency units, qty uint64 lots, transactTime uint64 ns
since the Unix epoch (the time stamp of the aggressing command).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from matching.records cimport EVT_FILL, SIDE_BUY, Event
from protocol.codec cimport (
    SBE_HEADER_SIZE,
    SBE_SCHEMA_ID,
    SBE_SCHEMA_VERSION,
    TPL_TRADE,
    SbeHeader,
    TradeBlock,
)
from protocol.symbols cimport SymbolTable

#: bytes of one binary Trade message (header + block)
TRADE_MESSAGE_SIZE = SBE_HEADER_SIZE + sizeof(TradeBlock)

# the longest JSON entry: 4 uint64/int64 values of at most 20 characters each
cdef size_t JSON_ENTRY_MAX = 160


cdef inline char *_put(char *p, const char *s, size_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef inline char *_u64(char *p, uint64_t v) noexcept nogil:
    cdef char tmp[20]
    cdef int n = 0
    if v == 0:
        p[0] = b'0'
        return p + 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    while n:
        n -= 1
        p[0] = tmp[n]
        p += 1
    return p


cdef inline char *_i64(char *p, int64_t v) noexcept nogil:
    if v < 0:
        p[0] = b'-'
        # two's complement magnitude, correct for INT64_MIN too
        return _u64(p + 1, <uint64_t>0 - <uint64_t>v)
    return _u64(p, <uint64_t>v)


cdef char *_json_entry(char *p, const Event *ev) noexcept nogil:
    p = _put(p, b'{"tradeId":', 11)
    p = _u64(p, ev.ref)
    p = _put(p, b',"price":', 9)
    p = _i64(p, ev.price)
    p = _put(p, b',"qty":', 7)
    p = _u64(p, ev.qty)
    if ev.side == SIDE_BUY:
        p = _put(p, b',"aggressorSide":"BUY"', 22)
    else:
        p = _put(p, b',"aggressorSide":"SELL"', 23)
    p = _put(p, b',"transactTime":', 16)
    p = _u64(p, ev.ts)
    p[0] = b'}'
    return p + 1


cdef void _trade_message(char *p, const Event *ev, uint64_t key) noexcept nogil:
    cdef SbeHeader *h = <SbeHeader *>p
    cdef TradeBlock *t = <TradeBlock *>(p + SBE_HEADER_SIZE)
    h.block_length = sizeof(TradeBlock)
    h.template_id = TPL_TRADE
    h.schema_id = SBE_SCHEMA_ID
    h.version = SBE_SCHEMA_VERSION
    memcpy(t.symbol, &key, 8)
    t.transact_time = ev.ts
    t.trade_id = ev.ref
    t.price = ev.price
    t.qty = ev.qty
    t.aggressor_side = ev.side


def encode_trades(fills, SymbolTable symbols not None, bint binary=True, bint json=True) -> dict:
    """Encode the fill records ``fills`` (n * 128 bytes of Event records; records that are not
    EVT_FILL or whose symbol id is outside ``symbols`` are skipped) per symbol, in trade order.

    Returns ``{symbol_id: (sbe, json)}`` for the symbols that traded: ``sbe`` the Trade messages
    back to back (bytes, None when not ``binary``), ``json`` the comma-separated JSON entries
    (bytes, None when not ``json``).  Raises ValueError for a length that is not a multiple of
    128, MemoryError.
    """
    cdef Py_buffer view
    cdef Py_ssize_t n, i, k
    cdef uint32_t n_sym = symbols.count, sym
    cdef const Event *recs
    cdef uint32_t *counts = NULL
    cdef uint32_t *starts = NULL
    cdef uint32_t *order = NULL
    cdef char *jbuf = NULL
    cdef char *p
    cdef uint64_t key
    out = {}
    PyObject_GetBuffer(fills, &view, PyBUF_SIMPLE)
    try:
        if view.len % sizeof(Event):
            raise ValueError(f"{view.len} bytes is not a whole number of {sizeof(Event)}-byte records")
        n = view.len // sizeof(Event)
        if n == 0 or n_sym == 0:
            return out
        recs = <const Event *>view.buf
        counts = <uint32_t *>calloc(n_sym, sizeof(uint32_t))
        starts = <uint32_t *>calloc(n_sym, sizeof(uint32_t))
        order = <uint32_t *>malloc(n * sizeof(uint32_t))
        if counts == NULL or starts == NULL or order == NULL:
            raise MemoryError()
        # counting sort of the fills by symbol id, stable: trade order within a symbol is kept
        for i in range(n):
            if recs[i].type == EVT_FILL and recs[i].symbol_id < n_sym:
                counts[recs[i].symbol_id] += 1
        k = 0
        for sym in range(n_sym):
            starts[sym] = <uint32_t>k
            k += counts[sym]
        for i in range(n):
            if recs[i].type == EVT_FILL and recs[i].symbol_id < n_sym:
                sym = recs[i].symbol_id
                order[starts[sym]] = <uint32_t>i
                starts[sym] += 1
        k = 0
        for sym in range(n_sym):
            if counts[sym] == 0:
                continue
            sbe = None
            js = None
            if binary:
                sbe = PyBytes_FromStringAndSize(NULL, counts[sym] * TRADE_MESSAGE_SIZE)
                p = PyBytes_AS_STRING(sbe)
                key = symbols.key_of(sym)
                for i in range(k, k + counts[sym]):
                    _trade_message(p, &recs[order[i]], key)
                    p += TRADE_MESSAGE_SIZE
            if json:
                free(jbuf)
                jbuf = <char *>malloc(counts[sym] * JSON_ENTRY_MAX)
                if jbuf == NULL:
                    raise MemoryError()
                p = jbuf
                for i in range(k, k + counts[sym]):
                    if i != k:
                        p[0] = b','
                        p += 1
                    p = _json_entry(p, &recs[order[i]])
                js = PyBytes_FromStringAndSize(jbuf, p - jbuf)
            out[sym] = (sbe, js)
            k += counts[sym]
        return out
    finally:
        PyBuffer_Release(&view)
        free(counts)
        free(starts)
        free(order)
        free(jbuf)
