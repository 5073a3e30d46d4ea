# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Matching core: price-time-priority limit order books for many symbols (DESIGN §1, §3).

``MatchingCore.process`` consumes 96-byte ``Command`` records from one SPSC ring and appends
128-byte ``Event`` records to another (layouts in ``matching/records.pxd``), without the GIL and
without a Python object per order or event.  Events are a pure function of the command stream:
time is ``Command.ts``, never the clock; order ids and trade ids are global counters from 1.
tests/support/reference_book.py implements the same rules in plain Python; the differential tests
compare the two event by event.

Units: prices are int64 in 1e-4 currency units and must be positive multiples of the symbol's
tick; quantities are uint64 lots; times are uint64 ns since the Unix epoch.

Commands and their events (spec: hftgw issues 2 and 3; FIX 4.4 field semantics; self-trade
prevention as Binance spot, https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq):

* CMD_NEW -> one EVT_REJECTED, first failing check: unknown symbol; invalid side / ord_type
  (LIMIT, MARKET, STOP, STOP_LIMIT) / tif (DAY, GTC, IOC, FOK) / flags / stp (REJ_INVALID_FIELD);
  qty 0 or > max (REJ_INVALID_QUANTITY); limit price of LIMIT / STOP_LIMIT <= 0 or off tick, stop
  price of STOP / STOP_LIMIT <= 0 or off tick (REJ_INVALID_PRICE); a stop price on another type
  (REJ_INVALID_FIELD); an iceberg (display_qty > 0) that is not a GTC/DAY LIMIT
  (REJ_INVALID_FIELD) or shows display_qty >= qty (REJ_INVALID_QUANTITY); live duplicate
  (session, ClOrdID); post-only on a stop (REJ_INVALID_FIELD), that would cross
  (REJ_POST_ONLY_WOULD_TAKE), or on a market / IOC / FOK order (REJ_INVALID_FIELD).
  Otherwise EVT_ACCEPTED, then:
  - LIMIT / MARKET: executed as the taker (below).
  - STOP / STOP_LIMIT: pending until the symbol trades at or through its stop price (buy: a trade
    >= stop, sell: <= stop); if the last trade price already meets it, it triggers at once.
* Taker execution: FOK first checks that the whole quantity can fill now without any self-trade
  prevention action, else EVT_CANCELED(CXL_FOK_UNFILLED) and nothing trades.  Then one EVT_FILL
  per maker in price-time order (price = the maker's); a maker of the same account when the
  taker's stp is not NONE is handled by self-trade prevention instead (below).  The remainder of
  a market order (or triggered stop) is canceled (CXL_NO_LIQUIDITY), of an IOC/FOK order too
  (CXL_IOC_REMAINDER); a GTC/DAY limit remainder rests.  Market and stop orders carry price 0.
* Icebergs show display_qty lots at a time (book levels count the shown lots only); when the
  shown part is filled the next slice joins the BACK of the level's queue.  Execution reports
  carry the total leaves.  An incoming iceberg takes with its whole quantity.
* Self-trade prevention (the TAKER's mode decides; per order, the gateway applies the session
  default to orders sent with 0): CANCEL_NEWEST cancels the taker's remainder; CANCEL_OLDEST
  cancels the maker and matching goes on; CANCEL_BOTH cancels the maker then the taker;
  DECREMENT reduces both by the smaller quantity, the maker first (its hidden reserve before its
  shown lots, keeping its place), with an EVT_CANCELED each (reason CXL_SELF_TRADE, qty = the
  reduction, leaves > 0 when the order lives on), and the taker goes on if anything is left.
  No trade happens between two orders of one account unless the taker's mode is NONE.
* Stops triggered by a command's trades run one at a time, right after it: the buy stop with the
  lowest stop price if one is triggered, else the sell stop with the highest (arrival order among
  equal stop prices); each gets EVT_TRIGGERED (ref = stop price) and executes as a taker at once
  (STOP as a market order, STOP_LIMIT as a limit order); its trades may trigger more.
* CMD_CANCEL -> EVT_CANCELED (CXL_USER, qty = total leaves) or EVT_CANCEL_REJECTED
  (REJ_UNKNOWN_ORDER); pending stops too.
* CMD_REPLACE -> EVT_REPLACED (re-keyed to the new ClOrdID; the same price and total leaves not
  up keeps time priority, an iceberg losing its hidden reserve first; otherwise it re-enters at
  the back and may match as a taker first) or EVT_CANCEL_REJECTED (unknown order, duplicate new
  ClOrdID, bad price, qty > max or <= cum, a post-only order whose new price would cross:
  REJ_POST_ONLY_WOULD_TAKE).  A pending stop keeps its stop price; a STOP's price stays 0.
* CMD_MASS_CANCEL -> EVT_CANCELED per live order of the session (scope SESSION) or of the
  command's account_id in any session (scope ACCOUNT), in book order (symbol, bids then asks,
  best level first, time priority; then buy stops, sell stops in trigger order), then
  EVT_MASS_CANCEL_DONE(count).  All symbols when symbol_id is UNKNOWN_SYMBOL_ID and depth == 1
  or flags == 1 (cancel on disconnect, reason CXL_DISCONNECT); another unknown symbol is
  EVT_REJECTED(REJ_UNKNOWN_SYMBOL); side 0 = both; side > 2 or scope > 1 is REJ_INVALID_FIELD.
  An order of another session is reported with its own ClOrdID.
* CMD_END_OF_SESSION -> EVT_CANCELED(CXL_EXPIRED, the order's own ClOrdID) per DAY order of the
  symbol (or all, as for mass cancel), in book order, then EVT_MASS_CANCEL_DONE to the sender.
* CMD_BOOK_QUERY -> EVT_BOOK_SNAPSHOT(count bids, count2 asks) then the EVT_BOOK_LEVEL records,
  bids then asks, best first, contiguous in the ring (depth 0 -> 10); a depth above 100 is
  EVT_REJECTED(REJ_INVALID_FIELD), as an unknown symbol is EVT_REJECTED(REJ_UNKNOWN_SYMBOL).
* CMD_SYMBOL_ADD -> nothing when it defines the next free symbol id (a new, empty book) or
  redefines an existing one (new tick and max_qty; resting orders stay as they are); a gap in
  the ids or a tick / max_qty <= 0 is EVT_REJECTED(REJ_INVALID_FIELD) for session 0.
* CMD_RISK_REJECT (a request the gateway refused before the ring; records.pxd) -> the request's
  EVT_REJECTED (new order, book query, mass cancel) or EVT_CANCEL_REJECTED (cancel, replace)
  with reason = depth, so that the refusal is sequenced and journaled like any answer.
* CMD_SESSION_OPEN, CMD_SESSION_STATE, CMD_ADMIN -> nothing; any other type ->
  EVT_REJECTED(REJ_INVALID_FIELD).
* EVT_REPLACED carries the order's leaves before the replace in contra_leaves (for the
  gateway's open-quantity bookkeeping); a kill-switch mass cancel (flags 2, sent with scope
  ACCOUNT) cancels in every symbol with CXL_KILL_SWITCH.

Accounts: an order's account is its session's, the account_id the session's latest CMD_NEW or
CMD_SESSION_OPEN carried (the gateway stamps every command of a session with its one account);
self-trade prevention, mass cancel by account and snapshots read it per session.  Quantities are
32-bit in the pool: a symbol's max_qty above 2**32 - 1 is taken as 2**32 - 1.  Exchange order ids
stay below 2**48 (OverflowError after that).

Memory: a live order is one 48-byte pool struct plus one 8-byte hash slot (a table past 256 Ki
slots grows by 1/5 at 4/5 load, so 10-12 bytes per order; a smaller one doubles at 1/2) plus its
share of a 40-byte price level; the pool grows in chunks of max(64 Ki orders, 1/8 of the pool).
An iceberg adds a 24-byte reserve slot, a pending stop a 16-byte stop-list entry.  A price level
that empties below the best one stays in its sorted array (so an order moving back to that price
costs no memmove) until empty levels are half the array and a new level is inserted, which
squeezes them out.

``snapshot()`` / ``MatchingCore.restore()`` save and rebuild the whole state (format in
``snapshot``'s docstring).

Not thread-safe: one thread at a time may call into a core (``process`` releases the GIL, so do
not call other methods from another thread while it runs).

Source layout: this file holds the Python API (the class) and includes the parts, which are
module-level ``cdef`` functions taking the core as their first argument (a cdef class body
cannot ``include``; a final class's methods and these compile to the same direct C calls):
core_store.pxi (pool, order hash, iceberg reserves), core_book.pxi (levels, stop lists),
core_events.pxi (event emission), core_match.pxi (the crossing loop, STP, FOK, stop triggers),
core_orders.pxi (new, cancel, replace), core_commands.pxi (mass cancel, end of session, symbol
add, book query, the command loop), core_snapshot.pxi, core_tally.pxi (EventTally).
"""
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef extern from *:
    void __builtin_prefetch(const void *addr) noexcept nogil

# all of it: the core speaks the whole record vocabulary (commands, events, reasons, enums)
from matching.records cimport *
from matching.native.byteorder cimport ld32, ld64, ldi64, st32, st64, sti64
from matching.ring cimport SpscRing


cdef extern from "crc32c.h" nogil:
    void hftgw_crc32c_init(int force_sw)
    uint32_t hftgw_crc32c(uint32_t crc, const void *p, size_t n)

hftgw_crc32c_init(0)

#: book query depth used when a command asks for 0 levels, and the most it may ask for
DEFAULT_BOOK_DEPTH = 10
MAX_BOOK_DEPTH = 100
#: most symbols one core holds (symbol ids are uint16 inside the order struct)
MAX_SYMBOL_COUNT = MAX_SYMBOLS
cdef uint32_t _DEF_DEPTH = 10
cdef uint32_t _MAX_DEPTH = 100
cdef uint32_t _INITIAL_LEVELS = 64
cdef uint32_t _INITIAL_STOPS = 8
cdef uint32_t _MAX_POOL = 0xFFFFFFFE     # NIL is 0xFFFFFFFF
cdef uint32_t _POOL_CHUNK = 1 << 16
cdef uint64_t _MAX_ORDER_QTY = 0xFFFFFFFF   # Order.qty and leaves are 32-bit
# the order hash starts small and grows with the live orders (core_store.pxi): sized by them, not by the
# pool, so a book with few live orders probes a table that stays in cache
cdef uint64_t _INITIAL_HASH = 4096
cdef uint64_t _MAX_HASH = <uint64_t>1 << 32     # _home's multiply-shift needs cap <= 2**32
cdef uint64_t _HASH_DENSE = 1 << 18             # slots: below, half full at most; above, 4/5

# mass-cancel selection modes of _cancel_many
cdef enum:
    SEL_SESSION = 0
    SEL_ACCOUNT = 1
    SEL_DAY = 2

# snapshot format (see MatchingCore.snapshot)
cdef enum:
    SNAPSHOT_FORMAT = 1
    _SNAP_HEADER = 64
    _SNAP_SYMBOL = 48
    _SNAP_LEVEL = 16
    _SNAP_ORDER = 72
    _SNAP_TRAILER = 8


include "core_store.pxi"
include "core_book.pxi"
include "core_events.pxi"
include "core_match.pxi"
include "core_orders.pxi"
include "core_commands.pxi"
include "core_snapshot.pxi"
include "core_capture.pxi"


cdef int _check_rings(MatchingCore self, SpscRing commands, SpscRing events) except -1:
    # process() and process_timed(): rings of the record sizes, and not from on_events_full
    if commands.slot_size != sizeof(Command) or events.slot_size != sizeof(Event):
        raise ValueError(f"need a {sizeof(Command)}-byte command ring and a {sizeof(Event)}-byte "
                         "event ring")
    if self._busy:
        raise RuntimeError("MatchingCore.process is not reentrant")
    return 0


cdef int _check_book_side(MatchingCore self, uint32_t symbol_id, int side) except -1:
    if symbol_id >= self.n_symbols:
        raise ValueError(f"unknown symbol id {symbol_id}")
    if side != SIDE_BUY and side != SIDE_SELL:
        raise ValueError(f"side must be 1 or 2, got {side}")
    return 0


# -------------------------------------------------------------------------------------- the class

cdef class MatchingCore:
    """Price-time-priority matching for ``len(symbols)`` books.

    symbols: ``symbols[i] = (tick_units, max_qty_lots)`` for symbol id ``i``; both positive; at
    most 65535 symbols.  initial_orders: live-order pool capacity to preallocate (the pool grows
    in chunks).  Raises ValueError for a bad symbol table or capacity, MemoryError if allocation
    fails.

    ``on_events_full``: a zero-argument callable, set by the owner, called (with the GIL) when
    the events ring fills in the middle of a command; it must consume events from that ring.
    """

    def __cinit__(self, symbols, initial_orders=1 << 16):
        cdef uint32_t i
        cdef Py_ssize_t n = len(symbols)
        cdef uint64_t cap
        if n > MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols")
        if not 1 <= initial_orders <= (1 << 31):
            raise ValueError("initial_orders must be in [1, 2**31]")
        self.books = <Book *>calloc(max(n, 1), sizeof(Book))
        if self.books == NULL:
            raise MemoryError()
        for i in range(<uint32_t>n):
            tick, max_qty = symbols[i]
            if tick <= 0 or max_qty <= 0:
                raise ValueError(f"symbol {i}: tick and max_qty must be positive, got {symbols[i]!r}")
            _init_book(self, &self.books[i], tick, max_qty)
            self.n_symbols = i + 1
        self.pool_cap = <uint32_t>initial_orders
        self._pool_mem = malloc(<size_t>self.pool_cap * sizeof(Order) + 64)
        if self._pool_mem == NULL:
            raise MemoryError()
        self.pool = <Order *>((<uintptr_t>self._pool_mem + 63) & ~(<uintptr_t>63))
        # fault the initial pool in now, not one page per 85 orders on the order path
        memset(self._pool_mem, 0, <size_t>self.pool_cap * sizeof(Order) + 64)
        self.free_head = NIL
        self._taker = NIL
        cap = _INITIAL_HASH
        self.htab = <HSlot *>calloc(cap, sizeof(HSlot))
        if self.htab == NULL:
            raise MemoryError()
        self.hcap = cap
        self.ice = <IceSlot *>calloc(16, sizeof(IceSlot))
        if self.ice == NULL:
            raise MemoryError()
        self.ice_cap = 16
        self._next_order_id = 1
        self._next_trade_id = 1
        self._win_lo = INT64_MAX
        self._win_hi = INT64_MIN
        self.on_events_full = None

    def __dealloc__(self):
        cdef uint32_t i
        if self.books != NULL:
            for i in range(self.n_symbols):
                free(self.books[i].side[0].lv)
                free(self.books[i].side[1].lv)
                free(self.books[i].stops[0].e)
                free(self.books[i].stops[1].e)
            free(self.books)
        free(self._pool_mem)
        free(self.htab)
        free(self.ice)
        free(self.acct)

    def process(self, SpscRing commands not None, SpscRing events not None,
                max_commands=(1 << 63)) -> int:
        """Consume up to ``max_commands`` Command records from ``commands`` and append the
        resulting Event records to ``events``; returns how many commands were consumed.

        Runs without the GIL.  A command is started only when ``events`` has room for its
        bounded events (ack/reject/replace/cancel/mass-cancel-done, or a whole book snapshot),
        otherwise process returns early.  Fills, self-trade cancels, stop triggers and per-order
        mass cancels are unbounded: when the ring fills in the middle of a command,
        ``self.on_events_full()`` is called with the GIL and must consume events.  Raises
        ValueError for rings of the wrong record size, RuntimeError if the events ring stays
        full, cannot hold one whole book snapshot (give it >= 2 * MAX_BOOK_DEPTH + 1 slots to
        rule that out), or when called from inside ``on_events_full``.  After an exception out
        of the middle of a command, that command counts as consumed and its remaining events
        are lost: rebuild the core from the journal (or a snapshot and the journal after it).
        """
        cdef uint64_t maxc, done = 0
        _check_rings(self, commands, events)
        maxc = max_commands if max_commands < (1 << 64) else 0xFFFFFFFFFFFFFFFF
        if self._cow != NULL:
            _capture_guard(self, min(maxc, commands.available()))
        self._busy = True
        self._evq = events
        self._cmd_started = 0
        try:
            with nogil:
                done = <uint64_t>_run(self, commands, events, maxc)
        finally:
            _drop_taker(self)
            events.publish(self._ev_pos - events.write_pos())
            # a command that failed half-way is consumed: replaying it would repeat its fills
            commands.consume(self._cmd_started if self._cmd_started > done else done)
            self._evq = None
            self._busy = False
        return done

    def process_timed(self, SpscRing commands not None, SpscRing events not None, uint64_t batch,
                      uint64_t[::1] out not None) -> tuple:
        """``process`` in batches of ``batch`` commands, each timed with CLOCK_MONOTONIC (ns)
        into ``out[i]``, for latency measurement (bench/matching_bench.py).  Stops when no
        command is left, ``out`` is full, or a batch cannot start (events ring full).

        Returns (commands consumed, batches timed).  Raises ValueError for batch 0, and as
        ``process``.
        """
        cdef uint64_t done = 0, k = 0, n, cap = out.shape[0]
        cdef timespec t0, t1
        if batch == 0:
            raise ValueError("batch must be positive")
        _check_rings(self, commands, events)
        cdef bint in_run = False
        self._busy = True
        self._evq = events
        try:
            with nogil:
                while k < cap and commands.available() > 0:
                    self._cmd_started = 0
                    if self._cow != NULL:
                        _capture_guard(self, batch)
                    in_run = True
                    clock_gettime(CLOCK_MONOTONIC, &t0)
                    n = <uint64_t>_run(self, commands, events, batch)
                    events.publish(self._ev_pos - events.write_pos())
                    commands.consume(n)
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    in_run = False
                    if n == 0:
                        break
                    out[k] = <uint64_t>((t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec))
                    k += 1
                    done += n
        finally:
            if in_run:           # an exception out of a batch: as in process()
                _drop_taker(self)
                events.publish(self._ev_pos - events.write_pos())
                commands.consume(self._cmd_started)
            self._evq = None
            self._busy = False
        return done, k

    def add_symbol(self, int64_t tick, uint64_t max_qty) -> int:
        """Add an empty book (what a journaled CMD_SYMBOL_ADD does); returns its symbol id.

        tick: price units (> 0); max_qty: lots (> 0).  Raises ValueError for a bad value or
        when the core already holds MAX_SYMBOL_COUNT symbols, RuntimeError inside process().
        """
        if self._busy:
            raise RuntimeError("add_symbol while process() runs")
        if tick <= 0 or max_qty == 0:
            raise ValueError("tick and max_qty must be positive")
        if self.n_symbols >= MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols")
        _add_book(self, tick, max_qty)
        return self.n_symbols - 1

    def book_levels(self, uint32_t symbol_id, int side, int depth=10) -> list:
        """Aggregated levels of one book side, best first: ``[(price, qty, order_count), ...]``
        (qty: the shown lots; iceberg reserves are not counted).

        side: 1 buy (bids) or 2 sell (asks); depth: at most this many levels (>= 0).
        Raises ValueError for an unknown symbol or side.
        """
        cdef BookSide *bs
        cdef uint32_t k
        _check_book_side(self, symbol_id, side)
        if depth < 0:
            raise ValueError("depth must be >= 0")
        bs = &self.books[symbol_id].side[side - 1]
        out = []
        k = bs.n
        while k > 0 and len(out) < depth:
            k -= 1
            if bs.lv[k].count:
                out.append((bs.lv[k].price, bs.lv[k].qty, bs.lv[k].count))
        return out

    def level_orders(self, uint32_t symbol_id, int side, int64_t price) -> list:
        """Order ids resting at one price level in time priority (next to match first); empty
        when there is no such level.  Raises ValueError for an unknown symbol or side."""
        cdef BookSide *bs
        cdef uint32_t pos, oi
        _check_book_side(self, symbol_id, side)
        bs = &self.books[symbol_id].side[side - 1]
        pos = _level_pos(bs, side, price)
        out = []
        if pos < bs.n and bs.lv[pos].price == price:
            oi = bs.lv[pos].head
            while oi != NIL:
                out.append(_oid(&self.pool[oi]))
                oi = self.pool[oi].next
        return out

    cdef bint live_order(self, uint32_t session_id, uint64_t cl_ord_id, uint8_t *side,
                         uint64_t *qty, uint64_t *leaves) noexcept nogil:
        # The live order (session_id, cl_ord_id): side, total qty and total leaves (an
        # iceberg's hidden reserve included; a pending stop too); False if none.
        cdef uint64_t pos
        cdef uint32_t idx = _hfind(self, session_id, cl_ord_id, _hash(session_id, cl_ord_id), &pos)
        if idx == NIL:
            return False
        side[0] = self.pool[idx].side
        qty[0] = self.pool[idx].qty
        leaves[0] = self.pool[idx].leaves + _hidden(self, idx, &self.pool[idx])
        return True

    def stop_orders(self, uint32_t symbol_id, int side) -> list:
        """Pending stop orders of one side in trigger order: ``[(stop_price, order_id), ...]``.
        Raises ValueError for an unknown symbol or side."""
        cdef StopSide *ss
        _check_book_side(self, symbol_id, side)
        ss = &self.books[symbol_id].stops[side - 1]
        return [(ss.e[ss.n - 1 - k].stop_px, _oid(&self.pool[ss.e[ss.n - 1 - k].idx]))
                for k in range(ss.n)]

    def last_trade_price(self, uint32_t symbol_id) -> int:
        """The symbol's last trade price (price units), 0 before its first trade."""
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        return self.books[symbol_id].last_px if self.books[symbol_id].has_last else 0

    def order_count(self) -> int:
        """Live orders: resting in all books plus pending stops."""
        return self.resting

    def lookup(self, uint32_t session_id, uint64_t cl_ord_id):
        """The live order ``(session_id, cl_ord_id)`` as a dict, or None: order_id, side 1/2,
        price (price units; 0 for market/stop), qty = total order qty, leaves = total leaves
        (lots), symbol_id, account_id, ord_type, tif, visible = lots shown in the book (0 for a
        pending stop), stop_price (a pending stop's trigger, else 0)."""
        cdef uint64_t pos
        cdef uint32_t idx = _hfind(self, session_id, cl_ord_id, _hash(session_id, cl_ord_id), &pos)
        cdef Order *o
        cdef bint pending
        if idx == NIL:
            return None
        o = &self.pool[idx]
        pending = (o.flags & OF_STOP) != 0
        return {"order_id": _oid(o), "side": o.side, "price": o.price, "qty": o.qty,
                "leaves": o.leaves + _hidden(self, idx, o), "symbol_id": _sym(o),
                "account_id": _acct(self, o.session_id), "ord_type": o.ord_type, "tif": o.tif,
                "visible": 0 if pending else o.leaves, "stop_price": _stop_px(o) if pending else 0}

    def memory_stats(self) -> dict:
        """Allocated bytes by structure and per live order.

        Keys: pool_bytes, pool_capacity, order_struct_bytes, hash_bytes, hash_capacity,
        level_bytes (book structs + level arrays), levels, stop_bytes, iceberg_bytes,
        resting_orders (live orders), total_bytes, bytes_per_order (total / live, 0.0 when
        empty).
        """
        cdef uint64_t level_bytes = self.n_symbols * sizeof(Book), levels = 0, stop_bytes = 0
        cdef uint32_t i
        cdef int s
        for i in range(self.n_symbols):
            for s in range(2):
                level_bytes += self.books[i].side[s].cap * sizeof(Level)
                levels += self.books[i].side[s].n - self.books[i].side[s].empty
                stop_bytes += self.books[i].stops[s].cap * sizeof(StopEntry)
        pool_bytes = self.pool_cap * sizeof(Order) + 64
        hash_bytes = self.hcap * sizeof(HSlot)
        ice_bytes = self.ice_cap * sizeof(IceSlot)
        total = pool_bytes + hash_bytes + level_bytes + stop_bytes + ice_bytes
        return {
            "pool_bytes": pool_bytes, "pool_capacity": self.pool_cap,
            "order_struct_bytes": sizeof(Order),
            "hash_bytes": hash_bytes, "hash_capacity": self.hcap,
            "level_bytes": level_bytes, "levels": levels, "stop_bytes": stop_bytes,
            "iceberg_bytes": ice_bytes,
            "resting_orders": self.resting, "total_bytes": total,
            "bytes_per_order": total / self.resting if self.resting else 0.0,
        }

    @property
    def next_order_id(self) -> int:
        """The order id the next accepted order gets (ids start at 1)."""
        return self._next_order_id

    @property
    def next_trade_id(self) -> int:
        """The trade id the next fill gets (ids start at 1)."""
        return self._next_trade_id

    @property
    def n_symbols(self) -> int:
        return self.n_symbols

    # ------------------------------------------------------------- snapshot / restore

    def snapshot(self) -> bytes:
        """The whole matching state as compact bytes, for ``MatchingCore.restore``.

        Little-endian; format version SNAPSHOT_VERSION:

        * header, 64 bytes: magic b"HFTGWCOR", u32 version, u32 n_symbols, u64 next_order_id,
          u64 next_trade_id, u64 live orders, u64 body bytes (what follows the header, before
          the trailer), 16 bytes of zeros;
        * per symbol, 48 bytes: i64 tick, u64 max_qty, i64 last trade price, u32 has a last
          trade, u32 bid levels, u32 ask levels, u32 buy stops, u32 sell stops, u32 0;
        * per symbol: its bid levels then ask levels, best first, each a 16-byte header (i64
          price, u32 orders, u32 0) followed by its orders in time priority; then its buy stops
          then sell stops, in trigger order;
        * an order is 72 bytes: u64 order_id, u64 cl_ord_id, i64 price, u64 qty, u64 shown
          leaves, u64 aux1 (a pending stop's stop price, an iceberg's display qty, else 0),
          u64 aux2 (an iceberg's hidden reserve, else 0), u32 session_id, u32 account_id, u8
          side, u8 ord_type, u8 tif, u8 flags (bit 0 post-only, 1 iceberg, 2 pending stop,
          bits 4-6 StpMode), u32 0;
        * trailer, 8 bytes: u32 CRC32C (RFC 3720) of everything before it, u32 0.

        Must not be called while ``process`` runs.
        """
        cdef SnapSrc src
        if self._busy:
            raise RuntimeError("snapshot while process() runs")
        _live_src(self, &src)
        return _snapshot_bytes(&src)

    @classmethod
    def restore(cls, data, initial_orders=None):
        """A new core holding the state a ``snapshot()`` saved (``data``: bytes-like).

        initial_orders: pool capacity (default: the live orders + 1/8, at least 65536).  The
        restored core produces the same events as the saved one for any further commands.
        Raises ValueError for data that is not a snapshot of this format (bad magic, version,
        length, CRC32C, or an inconsistent content).
        """
        cdef const unsigned char[::1] v = memoryview(data).cast("B")
        cdef const char *base
        cdef const char *p
        cdef uint64_t live
        cdef uint32_t i, nsym
        cdef MatchingCore core
        if v.shape[0] < _SNAP_HEADER + _SNAP_TRAILER:
            raise ValueError("snapshot: too short")
        base = <const char *>&v[0]
        p = _snap_check(base, v.shape[0])
        nsym = ld32(base + 12)
        live = ld64(base + 32)
        symbols = [(ldi64(p + i * _SNAP_SYMBOL), ld64(p + 8 + i * _SNAP_SYMBOL)) for i in range(nsym)]
        if initial_orders is None:
            initial_orders = max(1 << 16, live + (live >> 3))
        core = cls(symbols, initial_orders)
        _restore_books(core, base)
        return core


#: version of the ``MatchingCore.snapshot`` format this build writes and reads
SNAPSHOT_VERSION = SNAPSHOT_FORMAT


include "core_tally.pxi"
