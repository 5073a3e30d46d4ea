# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pre-trade risk, throttles, halts, kill switch and positions, in C, in batches (issue 6).

Where it runs.  ``ServerSession`` decodes every complete order frame of a read into the inbound
ring with one ``decode_orders`` call and then calls ``check_recent(ring, n)`` on the ``n``
records just published, before anything else runs on the event-loop thread; the engine's pump
(the ring's only consumer, same thread) sees them only afterwards.  A request that fails a check
is not dropped: its record is rewritten in place to ``CMD_RISK_REJECT`` with the reason in
``depth`` and the original type in ``stp`` (matching/records.pxd), and the core answers it with
the request's own OrderRejected / CancelRejected.  So a refusal is sequenced, journaled and
numbered like any answer, and the core stays a pure function of the journal: a replay never
re-runs these checks, it replays their outcome.

What it checks, in this order, for NewOrder (ReplaceOrder: the same with its new price and
quantity; BookQuery: the throttles only; cancels and mass cancels are never refused, so that a
throttled or blocked account can always get out):

1. throttles: the session's then the account's token bucket (rate per second, burst) ->
   REJ_THROTTLED;
2. kill switch: the account is blocked -> REJ_ACCOUNT_BLOCKED; the symbol is halted ->
   REJ_SYMBOL_HALTED;
3. quantity above the account's or the symbol's maximum -> REJ_MAX_ORDER_QTY;
4. limit price further than the band from the reference (the last trade, or the configured
   reference before the first trade), in ticks or in millionths of the reference; the narrower
   applies when both are set -> REJ_PRICE_BAND;
5. notional = price x quantity (a market order: the reference price) above the account's or
   the symbol's maximum -> REJ_MAX_NOTIONAL; a market order with no reference at all while a
   notional limit applies -> REJ_NO_REFERENCE_PRICE;
6. live orders + orders in flight + 1 above the account's maximum -> REJ_MAX_OPEN_ORDERS;
7. worst-case position in the symbol, as a credit check counts it: every open order of the
   account fills.  Long worst case = net + open buys + in-flight buys (+ this buy); short worst
   case = -net + open sells + in-flight sells (+ this sell); the side the order adds to must
   stay within max_position_net -> REJ_MAX_POSITION_NET.  Gross = |net| + open buys + open
   sells (in flight included) + this order must stay within max_position_gross ->
   REJ_MAX_POSITION_GROSS.  A replace adds its quantity increase (new total - old total; the
   whole new quantity on both sides when the order is not in the book yet).

A limit of 0 means "no limit".  Open quantities and positions are kept from the core's events
(``observe_events``: accepted, fills, cancels, replaces), which a journal replay regenerates,
so they come back after a restart; quantities checked but not yet processed by the core are kept
apart ("in flight") and cleared by ``clear_pending`` once the core has processed the inbound
ring.  Positions keep net lots, average-cost P&L (realized, in price units x lots) and the
average price of the open position.

Admin actions (halt/resume a symbol, kill switch / release of an account, limit changes) travel
as CMD_ADMIN records (layout in records.pxd) through the ring and the journal: the engine applies
one with ``apply_admin`` when it queues it, and ``observe_commands`` applies them again during a
journal replay.

Not thread-safe: everything runs on the event-loop thread.
"""
from enum import IntEnum

cimport cython
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset

from matching.native.byteorder cimport ld16, ld32, ld64, st16, st32, st64

from matching.core cimport MatchingCore
from matching.records cimport (
    CMD_ADMIN,
    CMD_BOOK_QUERY,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RISK_REJECT,
    EVT_ACCEPTED,
    EVT_CANCELED,
    EVT_FILL,
    EVT_REJECTED,
    EVT_REPLACED,
    ORD_MARKET,
    ORD_STOP,
    REJ_ACCOUNT_BLOCKED,
    REJ_MAX_NOTIONAL,
    REJ_MAX_OPEN_ORDERS,
    REJ_MAX_ORDER_QTY,
    REJ_MAX_POSITION_GROSS,
    REJ_MAX_POSITION_NET,
    REJ_NO_REFERENCE_PRICE,
    REJ_PRICE_BAND,
    REJ_SYMBOL_HALTED,
    REJ_THROTTLED,
    SIDE_BUY,
    SIDE_SELL,
    Command,
    Event,
)
from matching.ring cimport SpscRing

cdef extern from *:
    # 128-bit products: price x quantity and cost x lots overflow int64 for plausible values
    ctypedef long long i128 "__int128"
    bint __builtin_mul_overflow(uint64_t a, uint64_t b, uint64_t *res) nogil

import struct

ACCOUNT_NAME_BYTES = 32


include "_admin.pxi"
include "_snapshot.pxi"
include "_checks.pxi"
include "_positions.pxi"


@cython.final
cdef class RiskEngine:
    """Per-symbol and per-account risk state for one gateway.

    symbols: one dict per symbol id with keys name, tick, reference_price, band_ticks, band_ppm,
    max_order_qty, max_notional (price units x lots) (missing keys = 0 = none); more are
    defined at run time with ``define_symbol`` (the per-symbol arrays grow).  core: the
    engine's MatchingCore (read, never changed, for a replace's current quantity).  max_sessions:
    session ids are below it.  account_limits: a callable name -> dict with max_order_qty,
    max_notional, max_open_orders, max_position_net, max_position_gross and ``symbols``
    ({symbol name: {max_position_net, max_position_gross}}), giving an account's configured
    limits when it is first seen.  Raises ValueError for a non-positive tick, MemoryError.
    """

    def __cinit__(self, symbols, MatchingCore core not None, uint32_t max_sessions, account_limits):
        cdef uint32_t i
        symbols = list(symbols)
        self.core = core
        self.max_sessions = max_sessions
        self.sym_cap = 16
        self.sym = <SymbolRisk *>calloc(self.sym_cap, sizeof(SymbolRisk))
        self.ses = <SessionRisk *>calloc(max_sessions, sizeof(SessionRisk))
        self.acc_cap = 16
        self.acc = <AccountRisk **>calloc(self.acc_cap, sizeof(AccountRisk *))
        if self.sym == NULL or self.ses == NULL or self.acc == NULL:
            raise MemoryError()
        self.view.ses = self.ses
        self.view.sym = self.sym
        self.view.max_sessions = max_sessions
        self.obs.fn = _on_event
        self.obs.ctx = &self.view
        self.gen = 1
        self.enabled = True
        self._index = {}
        self._names = []
        self._limits = {}
        self._sym_names = []
        self._admin_log = []
        self._account_limits = account_limits
        for i, s in enumerate(symbols):
            self.define_symbol(i, s)

    def __dealloc__(self):
        cdef uint32_t i
        if self.acc != NULL:
            for i in range(self.n_acc):
                free(self.acc[i].pos)
                free(self.acc[i])
        free(self.acc)
        free(self.sym)
        free(self.ses)

    # -- accounts and sessions ---------------------------------------------------------------------
    cdef AccountRisk *_account(self, str name) except NULL:
        cdef AccountRisk **grown
        cdef AccountRisk *a
        cdef uint32_t s
        idx = self._index.get(name)
        if idx is not None:
            return self.acc[<uint32_t>idx]
        if self.n_acc == self.acc_cap:
            grown = <AccountRisk **>realloc(self.acc, 2 * self.acc_cap * sizeof(AccountRisk *))
            if grown == NULL:
                raise MemoryError()
            self.acc = grown
            self.acc_cap *= 2
        a = <AccountRisk *>calloc(1, sizeof(AccountRisk))
        if a == NULL:
            raise MemoryError()
        a.pos = <Position *>calloc(self.sym_cap, sizeof(Position))
        if a.pos == NULL:
            free(a)
            raise MemoryError()
        lim = dict(self._account_limits(name)) if self._account_limits is not None else {}
        a.max_order_qty = lim.get("max_order_qty", 0)
        a.max_notional = lim.get("max_notional", 0)
        a.max_open_orders = lim.get("max_open_orders", 0)
        for s in range(self.n_symbols):
            self._symbol_limits(a, lim, s)
        self._limits[name] = lim
        self.acc[self.n_acc] = a
        self._index[name] = self.n_acc
        self._names.append(name)
        self.n_acc += 1
        return a

    cdef void _symbol_limits(self, AccountRisk *a, dict lim, uint32_t s):
        # an account's position limits in symbol s: the per-symbol override, else its own
        over = lim.get("symbols", {}).get(self._sym_names[s], {})
        a.pos[s].max_net = over.get("max_position_net", lim.get("max_position_net", 0))
        a.pos[s].max_gross = over.get("max_position_gross", lim.get("max_position_gross", 0))

    cdef int _grow_symbols(self, uint32_t need) except -1:
        # room for `need` symbols in the symbol array and in every account's positions; the
        # encoder's observer reads them through self.view, updated here
        cdef uint32_t cap = self.sym_cap, i
        cdef SymbolRisk *sym
        cdef Position *pos
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        sym = <SymbolRisk *>realloc(self.sym, cap * sizeof(SymbolRisk))
        if sym == NULL:
            raise MemoryError()
        memset(&sym[self.sym_cap], 0, (cap - self.sym_cap) * sizeof(SymbolRisk))
        self.sym = sym
        self.view.sym = sym
        for i in range(self.n_acc):
            pos = <Position *>realloc(self.acc[i].pos, cap * sizeof(Position))
            if pos == NULL:
                raise MemoryError()
            memset(&pos[self.sym_cap], 0, (cap - self.sym_cap) * sizeof(Position))
            self.acc[i].pos = pos
        self.sym_cap = cap
        return 0

    def define_symbol(self, uint32_t symbol_id, dict settings) -> None:
        """Symbol ``symbol_id`` is defined (the engine's CMD_SYMBOL_ADD, live or replayed):
        the next id adds a symbol with ``settings`` (keys as in the constructor's ``symbols``)
        and every known account's position limits in it; an existing id gets the new tick only
        (its limits, halt and prices stay).  Raises ValueError for a gap in the ids or a
        non-positive tick, MemoryError."""
        cdef SymbolRisk *sy
        cdef uint32_t a
        tick = settings.get("tick", 0)
        if tick <= 0:
            raise ValueError(f"symbol {symbol_id}: tick must be positive")
        if symbol_id < self.n_symbols:
            self.sym[symbol_id].tick = tick
            return
        if symbol_id != self.n_symbols:
            raise ValueError(f"symbol id {symbol_id} with {self.n_symbols} symbols defined")
        self._grow_symbols(self.n_symbols + 1)
        sy = &self.sym[symbol_id]
        sy.tick = tick
        sy.ref_price = settings.get("reference_price", 0)
        sy.band_ticks = settings.get("band_ticks", 0)
        sy.band_ppm = settings.get("band_ppm", 0)
        sy.max_order_qty = settings.get("max_order_qty", 0)
        sy.max_notional = settings.get("max_notional", 0)
        self._sym_names.append(settings.get("name", str(symbol_id)))
        self.n_symbols += 1
        self.view.n_symbols = self.n_symbols
        for a in range(self.n_acc):
            self._symbol_limits(self.acc[a], self._limits[self._names[a]], symbol_id)

    def configure_symbol(self, uint32_t symbol_id, dict settings) -> None:
        """Replace the configured risk settings of a defined symbol (a config reload): reference
        price, bands, max_order_qty, max_notional; halt and trade prices stay.  Raises
        ValueError for an unknown symbol."""
        cdef SymbolRisk *sy
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        sy = &self.sym[symbol_id]
        sy.ref_price = settings.get("reference_price", 0)
        sy.band_ticks = settings.get("band_ticks", 0)
        sy.band_ppm = settings.get("band_ppm", 0)
        sy.max_order_qty = settings.get("max_order_qty", 0)
        sy.max_notional = settings.get("max_notional", 0)

    def set_account_limits_source(self, account_limits) -> None:
        """Where the limits of accounts seen from now on come from (a config reload); accounts
        already known keep theirs (admin changes included)."""
        self._account_limits = account_limits

    def account_index(self, str name) -> int:
        """The index of an account, created with its configured limits on first use."""
        self._account(name)
        return self._index[name]

    def bind_session(self, uint32_t sid, str account) -> None:
        """Session ``sid`` trades for ``account``.  Raises ValueError for sid >= max_sessions."""
        if sid >= self.max_sessions:
            raise ValueError(f"session id {sid} >= {self.max_sessions}")
        self.ses[sid].ar = self._account(account)

    def set_session_throttle(self, uint32_t sid, double rate, double burst) -> None:
        """Token bucket of one session: ``rate`` requests per second, ``burst`` at most; rate 0
        turns it off.  Raises ValueError for an unknown session id."""
        if sid >= self.max_sessions:
            raise ValueError(f"session id {sid} >= {self.max_sessions}")
        _set_bucket(&self.ses[sid].bucket, rate, burst)

    def set_account_throttle(self, str account, double rate, double burst) -> None:
        """Token bucket shared by every session of ``account`` (rate 0 = off)."""
        _set_bucket(&self._account(account).bucket, rate, burst)

    # -- the check pass ----------------------------------------------------------------------------
    cdef uint64_t _check(self, SpscRing ring, uint64_t first, uint64_t n) noexcept nogil:
        # A batch comes from one decode call, so from one session: its session and account and
        # their token counts are looked up (and the buckets refilled) once per run of records
        # of the same session, and kept in locals meanwhile.
        cdef uint64_t k, refused = 0
        cdef Command *c
        cdef SessionRisk *sr = NULL
        cdef AccountRisk *ar = NULL
        cdef uint16_t reason
        cdef uint8_t typ
        cdef uint32_t cur = 0xFFFFFFFF
        cdef double tok_s = 0.0, tok_a = 0.0
        cdef bint lim_s = False, lim_a = False
        for k in range(n):
            c = <Command *>ring.slot(first + k)
            typ = c.type
            if typ != CMD_NEW and typ != CMD_REPLACE and typ != CMD_BOOK_QUERY:
                continue                  # cancels and mass cancels always pass
            if c.session_id != cur:
                if ar != NULL:
                    sr.bucket.tokens = tok_s
                    ar.bucket.tokens = tok_a
                cur = c.session_id
                sr = &self.ses[cur] if cur < self.max_sessions else NULL
                ar = sr.ar if sr != NULL else NULL
                if ar == NULL:
                    continue
                lim_s = sr.bucket.rate > 0.0
                lim_a = ar.bucket.rate > 0.0
                if lim_s:
                    _refill(&sr.bucket, c.ts)
                if lim_a:
                    _refill(&ar.bucket, c.ts)
                tok_s = sr.bucket.tokens
                tok_a = ar.bucket.tokens
            if ar == NULL:
                continue
            self.checked += 1
            if lim_s and tok_s < 1.0:
                reason = REJ_THROTTLED
                self.throttled_session += 1
            elif lim_a and tok_a < 1.0:
                reason = REJ_THROTTLED
                self.throttled_account += 1
            else:
                if lim_s:
                    tok_s -= 1.0
                if lim_a:
                    tok_a -= 1.0
                if typ == CMD_NEW:
                    reason = _check_new(self, ar, c)
                elif typ == CMD_REPLACE:
                    reason = _check_replace(self, ar, c)
                else:
                    reason = 0
            if reason:
                self.rejected[reason if reason < N_RISK_REASONS else 0] += 1
                self.refused_new += typ == CMD_NEW
                c.stp = typ
                c.type = CMD_RISK_REJECT
                c.depth = reason
                refused += 1
        if ar != NULL:
            sr.bucket.tokens = tok_s
            ar.bucket.tokens = tok_a
        return refused

    def check_recent(self, SpscRing ring not None, uint64_t n) -> int:
        """Check the ``n`` most recently published records of the inbound ring (the ones a
        ``decode_orders`` call just wrote, not yet consumed), rewriting a refused request to
        CMD_RISK_REJECT.  Returns how many were refused.  Raises ValueError for a ring that is
        not a Command ring or an n larger than what is unconsumed."""
        cdef uint64_t head, refused
        if ring.slot_size != sizeof(Command):
            raise ValueError("not a Command ring")
        if not self.enabled or n == 0:
            return 0
        if n > ring.available():
            raise ValueError("fewer unconsumed records than asked to check")
        head = ring.write_pos()
        with nogil:
            refused = self._check(ring, head - n, n)
        return refused

    def clear_pending(self) -> None:
        """Forget the in-flight quantities: call when the core has processed every checked
        record (the inbound ring is empty); their effect now shows in the committed state.
        O(1): the in-flight counters belong to a generation, and this starts the next one."""
        self.gen += 1

    # -- the committed state, from the core's events -------------------------------------------------
    cdef uint64_t _observe(self, SpscRing events) noexcept nogil:
        cdef uint64_t head = events.write_pos(), pos = events.read_pos(), start
        if self.ev_seen > pos:
            pos = self.ev_seen
        start = pos
        while pos < head:
            _on_event(&self.view, <const Event *>events.slot(pos))
            pos += 1
        self.ev_seen = pos
        return pos - start

    def event_observer(self):
        """PyCapsule "hftgw.EventObserver" for ``Outbound.set_observer``: the encoder then keeps
        this state up to date in its own drain pass over the events, while they are in cache
        (instead of a separate ``observe_events`` pass)."""
        return PyCapsule_New(&self.obs, "hftgw.EventObserver", NULL)

    def observe_events(self, SpscRing events not None) -> int:
        """Update open quantities, order counts, positions and last trade prices from the events
        published in ``events`` and not seen yet (without consuming them: call it before the
        outbound encoder drains the ring).  Returns how many records it read.  Raises
        ValueError for a ring that is not an Event ring."""
        cdef uint64_t n
        if events.slot_size != sizeof(Event):
            raise ValueError("not an Event ring")
        with nogil:
            n = self._observe(events)
        return n

    # -- admin actions -----------------------------------------------------------------------------
    def apply_admin(self, record) -> dict:
        """Apply one CMD_ADMIN record (``admin_record``).  Returns its parsed fields.  Raises
        ValueError for an unknown action or field, a field that does not fit the scope, a
        negative limit, an unknown symbol, or a missing account."""
        d = _apply_admin(self, record)
        # kept for ``snapshot``: a restore re-applies them over the configured limits, as a
        # journal replay does (admin actions are rare: the list stays small)
        self._admin_log.append(bytes(record[:sizeof(Command)]))
        return d

    def observe_commands(self, const uint8_t[:] records) -> int:
        """Journal replay: apply every CMD_ADMIN among sequenced Command records, in order.
        Returns how many applied.  A record that no longer applies (it did when it was
        journaled, so only a config change, e.g. a symbol removed, can cause this) is skipped
        and counted in ``skipped_admin``."""
        cdef Py_ssize_t n = records.shape[0] // sizeof(Command), k
        cdef const Command *c
        applied = 0
        for k in range(n):
            c = <const Command *>&records[k * sizeof(Command)]
            if c.type == CMD_ADMIN:
                try:
                    self.apply_admin(bytes(records[k * sizeof(Command):(k + 1) * sizeof(Command)]))
                    applied += 1
                except ValueError:
                    self.skipped_admin += 1
        return applied

    # -- snapshots (issue 4) -----------------------------------------------------------------------
    def set_core(self, MatchingCore core not None) -> None:
        """Read replaced orders' quantities from ``core`` from now on (the engine restored its
        core from a snapshot)."""
        self.core = core

    def snapshot(self) -> bytes:
        """The state a journal replay would rebuild, as bytes for ``restore``.

        Little-endian, version RISK_SNAPSHOT_VERSION: header 48 bytes (8s b"HFTGWRSK", u32
        version, u32 symbols, u32 accounts, u32 admin records, u32 bound sessions, u32 0, u64
        skipped_admin, u64 0); per symbol i64 last trade price; the CMD_ADMIN records applied
        since start (96 bytes each, in order); per account u16 name length, the name (ASCII),
        u64 open orders, then per symbol 7 x 64 bits: net, cost, realized, open_buy, open_sell,
        bought, sold; per bound session u32 session id, u32 account number (in this snapshot's
        order).  Limits, halts and kill switches are not stored as values: ``restore`` takes the
        configured limits and re-applies the admin records, exactly as a replay does, so a
        config change between stop and start has the same effect either way.  Throttle buckets
        are not stored (they start full, as after any restart).  Raises RuntimeError while
        checked requests are in flight (call between pumps, after ``clear_pending``)."""
        return _snapshot(self)

    def restore(self, data) -> None:
        """Load a ``snapshot`` into this state, which must be fresh (no admin action applied)
        with the same symbols defined (the engine defines them first).  Accounts already known
        (bound sessions) keep their place; the others are added with their configured limits;
        then the saved admin records are re-applied (one that no longer applies, e.g. after a
        config change, is skipped and counted in ``skipped_admin`` as on replay), then
        positions, open quantities, order counts, last prices and session bindings are set.
        Raises ValueError for data that is not a risk snapshot of this version, is truncated or
        inconsistent, or does not fit (other symbol count, not fresh)."""
        _restore(self, data)

    # -- queries ---------------------------------------------------------------------------------
    def accounts(self) -> list:
        """Names of the accounts seen, in index order."""
        return list(self._names)

    def has_account(self, str name) -> bool:
        return name in self._index

    def position(self, str account, uint32_t symbol_id) -> dict:
        """One account's book-keeping in one symbol: net (lots, > 0 long), avg_price (price
        units, of the open position; 0 when flat), realized_pnl (price units x lots), open_buy /
        open_sell (lots of live orders), bought / sold (filled lots), max_position_net /
        max_position_gross.  Raises KeyError for an unknown account, ValueError for a bad symbol."""
        cdef Position *p
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        p = &self.acc[<uint32_t>self._index[account]].pos[symbol_id]
        avg = 0
        if p.net:
            avg = int(round(p.cost / abs(p.net)))
        return {"net": p.net, "avg_price": avg, "realized_pnl": p.realized,
                "open_buy": p.open_buy, "open_sell": p.open_sell, "bought": p.bought,
                "sold": p.sold, "max_position_net": p.max_net, "max_position_gross": p.max_gross}

    def account_state(self, str account) -> dict:
        """blocked, open_orders and the account-wide limits.  Raises KeyError."""
        cdef AccountRisk *ar = self.acc[<uint32_t>self._index[account]]
        return {"blocked": bool(ar.blocked), "open_orders": ar.open_orders,
                "max_order_qty": ar.max_order_qty, "max_notional": ar.max_notional,
                "max_open_orders": ar.max_open_orders,
                "throttle_rate": ar.bucket.rate, "throttle_burst": ar.bucket.burst}

    def symbol_state(self, uint32_t symbol_id) -> dict:
        """halted, reference_price, last_price, band_ticks, band_ppm, max_order_qty,
        max_notional.  Raises ValueError for a bad symbol id."""
        cdef SymbolRisk *s
        if symbol_id >= self.n_symbols:
            raise ValueError(f"unknown symbol id {symbol_id}")
        s = &self.sym[symbol_id]
        return {"halted": bool(s.halted), "reference_price": s.ref_price, "last_price": s.last_px,
                "band_ticks": s.band_ticks, "band_ppm": s.band_ppm,
                "max_order_qty": s.max_order_qty, "max_notional": s.max_notional}

    def halted(self) -> list:
        """Symbol ids currently halted."""
        cdef uint32_t i
        return [i for i in range(self.n_symbols) if self.sym[i].halted]

    def blocked(self) -> list:
        """Names of the accounts whose kill switch is engaged."""
        cdef uint32_t i
        return [self._names[i] for i in range(self.n_acc) if self.acc[i].blocked]

    def pending(self) -> tuple:
        """(in-flight new orders, in-flight lots) summed over accounts, for tests and stats."""
        cdef uint32_t a, s
        cdef uint64_t orders = 0, lots = 0
        for a in range(self.n_acc):
            if self.acc[a].pend_gen == self.gen:
                orders += self.acc[a].pend_orders
            for s in range(self.n_symbols):
                if self.acc[a].pos[s].pend_gen == self.gen:
                    lots += self.acc[a].pos[s].pend_buy + self.acc[a].pos[s].pend_sell
        return orders, lots

    def counters(self) -> dict:
        """Totals since start: checked (requests that went through the checks), rejected
        ({RejectReason: n}, non-zero only), throttled_session, throttled_account, refused_new
        (NewOrders among the refused: they are sequenced as CMD_RISK_REJECT, not CMD_NEW)."""
        cdef int i
        return {"checked": self.checked, "refused_new": self.refused_new,
                "rejected": {i: self.rejected[i] for i in range(N_RISK_REASONS) if self.rejected[i]},
                "throttled_session": self.throttled_session,
                "throttled_account": self.throttled_account}
