# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Outbound encoder: Event records from the matching core -> SBE messages per session (DESIGN §1).

``Outbound.drain`` consumes the events ring in one batch with the GIL released and appends the
server->client business messages (templates 20-28 of protocol/schema/hftgw-v1.xml) to one C
buffer per session, each message with its session sequence number and, for TCP sessions, its
SOFH prefix.  The transport then ``take``s each ``dirty`` session's bytes and writes them with one
call.  With ``retain`` (set by the gateway engine) every session's messages are encoded whether
it is connected or not, always SOFH-framed, for the message store (``take_seq``).  Counters and
the order-to-ack latency histogram (observed when the caller reports a session's bytes written,
``acks_written``) are kept in C and read at scrape time; the order events and
fills are numbered (``event_no``) and can be captured raw for the event log that feeds the
PostgreSQL sink, and for market data (``md_tap``) the
encoder notes which symbols' books changed and copies the fill records, so the market-data
publisher works per symbol per tick, never per order.

Source layout: the class is here; included are the per-event encoding (_outbound_events.pxi),
BookSnapshot (_outbound_snapshot.pxi), export/import_state (_outbound_state.pxi) and the block
fillers generated from the schema (outbound_fills.pxi).
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset

# what is used of it: Event and the EVT_* / LIQ_* values it carries
from matching.records cimport *
from matching.native.byteorder cimport ld32, st32
from matching.ring cimport SpscRing
from protocol.codec cimport (
    GROUP_SIZE_SIZE,
    MAX_FRAME,
    SBE_HEADER_SIZE,
    SBE_SCHEMA_ID,
    SBE_SCHEMA_VERSION,
    SOFH_SIZE,
    TPL_BOOK_SNAPSHOT,
    TPL_CANCEL_REJECTED,
    TPL_EXECUTION,
    TPL_MASS_CANCEL_DONE,
    TPL_ORDER_ACCEPTED,
    TPL_ORDER_CANCELED,
    TPL_ORDER_REJECTED,
    TPL_ORDER_REPLACED,
    TPL_ORDER_TRIGGERED,
    BookLevelEntry,
    BookSnapshotBlock,
    CancelRejectedBlock,
    ExecutionBlock,
    GroupSize,
    MassCancelDoneBlock,
    OrderAcceptedBlock,
    OrderCanceledBlock,
    OrderRejectedBlock,
    OrderReplacedBlock,
    OrderTriggeredBlock,
    SbeHeader,
)
from protocol.symbols cimport SymbolTable

# fill_<template>(p, ev, seq, key): generated from the XML schema by protocol/fillgen.py (setup.py)
include "outbound_fills.pxi"
include "_outbound_snapshot.pxi"
include "_outbound_state.pxi"
include "_outbound_acks.pxi"
include "_outbound_events.pxi"

# A session buffer larger than this is freed when taken rather than kept for reuse.
cdef size_t KEEP_BUFFER_BYTES = 1 << 20


cdef int _append_record(char **buf, size_t *length, size_t *cap, const Event *ev) noexcept nogil:
    # append one raw 128-byte event record to a growable buffer; -1 when it cannot grow
    cdef size_t c
    cdef char *p
    if length[0] + sizeof(Event) > cap[0]:
        c = cap[0] * 2 if cap[0] else 1024 * sizeof(Event)
        p = <char *>realloc(buf[0], c)
        if p == NULL:
            return -1
        buf[0] = p
        cap[0] = c
    memcpy(buf[0] + length[0], ev, sizeof(Event))
    length[0] += sizeof(Event)
    return 0


cdef bytes _take_buffer(char **buf, size_t *length, size_t *cap):
    # the buffered bytes, emptying the buffer; one grown past KEEP_BUFFER_BYTES (a burst) is
    # freed rather than kept for reuse
    out = buf[0][:length[0]] if length[0] else b""
    length[0] = 0
    if cap[0] > KEEP_BUFFER_BYTES:
        free(buf[0])
        buf[0] = NULL
        cap[0] = 0
    return out


cdef class Outbound:
    """Per-session SBE encoder of the matching core's events.

    symbols: symbol names by symbol id (as given to the SymbolTable of the codec); an event
    whose symbol id is outside the table gets an all-NUL symbol.  max_sessions: session ids are
    0 .. max_sessions-1; messages for a larger id are not numbered, only counted
    (``unroutable``).  Raises ValueError for bad symbol names, MemoryError.

    Not thread-safe: ``drain`` releases the GIL but mutates the session buffers, so every method
    must be called from the one thread that owns the encoder (the event loop).
    """

    def __cinit__(self, symbols, max_sessions: int = 65536):
        if max_sessions < 1 or max_sessions > 0xFFFFFFFF:
            raise ValueError("max_sessions must be in 1 .. 2**32-1")
        self.symbols = SymbolTable(symbols)
        self.max_sessions = max_sessions
        self.sessions = <SessionOut *>calloc(max_sessions, sizeof(SessionOut))
        self.dirty_ids = <uint32_t *>calloc(max_sessions, sizeof(uint32_t))
        cdef uint32_t n_sym = max(1, self.symbols.count)
        self.md_cap = n_sym
        self.md_touched = <uint8_t *>calloc(n_sym, sizeof(uint8_t))
        self.md_touched_ids = <uint32_t *>calloc(n_sym, sizeof(uint32_t))
        self.md_last_ts = <uint64_t *>calloc(n_sym, sizeof(uint64_t))
        if (self.sessions == NULL or self.dirty_ids == NULL or self.md_touched == NULL
                or self.md_touched_ids == NULL or self.md_last_ts == NULL):
            raise MemoryError()

    def __dealloc__(self):
        cdef uint32_t i
        if self.sessions != NULL:
            for i in range(self.max_sessions):
                free(self.sessions[i].data)
                free(self.sessions[i].acks)
        free(self.sessions)
        free(self.dirty_ids)
        free(self.capture_buf)
        free(self.md_touched)
        free(self.md_touched_ids)
        free(self.md_last_ts)
        free(self.md_trades_buf)

    def add_symbol(self, name) -> int:
        """Name the next symbol id (a symbol added at run time); returns that id.  Raises
        ValueError for a bad or duplicate name, MemoryError."""
        sym = self.symbols.add(name)
        if self.symbols.count > self.md_cap:
            self._grow_md(max(self.md_cap * 2, self.symbols.count))
        return sym

    cdef int _grow_md(self, uint32_t cap) except -1:
        # the per-symbol market-data arrays are indexed by symbol id, so they follow the table
        cdef uint8_t *touched = <uint8_t *>realloc(self.md_touched, cap * sizeof(uint8_t))
        if touched == NULL:
            raise MemoryError()
        self.md_touched = touched
        cdef uint32_t *ids = <uint32_t *>realloc(self.md_touched_ids, cap * sizeof(uint32_t))
        if ids == NULL:
            raise MemoryError()
        self.md_touched_ids = ids
        cdef uint64_t *last = <uint64_t *>realloc(self.md_last_ts, cap * sizeof(uint64_t))
        if last == NULL:
            raise MemoryError()
        self.md_last_ts = last
        memset(self.md_touched + self.md_cap, 0, (cap - self.md_cap) * sizeof(uint8_t))
        memset(self.md_last_ts + self.md_cap, 0, (cap - self.md_cap) * sizeof(uint64_t))
        self.md_cap = cap
        return 0

    # -- sessions ---------------------------------------------------------------------------------
    cdef SessionOut *_session(self, sid) except NULL:
        if sid < 0 or sid >= self.max_sessions:
            raise ValueError(f"session id {sid} outside 0 .. {self.max_sessions - 1}")
        return &self.sessions[<uint32_t>sid]

    def set_session(self, sid: int, bint connected, bint sofh=True) -> None:
        """Mark a session connected (its messages are buffered, SOFH-framed when ``sofh``) or
        disconnected (its messages are still numbered but dropped; buffered bytes are discarded).
        In ``retain`` mode (the gateway's message store) this changes nothing: every session's
        messages are buffered, always SOFH-framed.  Raises ValueError for an id >= max_sessions."""
        cdef SessionOut *s = self._session(sid)
        s.connected = connected
        s.sofh = sofh
        if not connected and not self.retain:
            free(s.data)
            s.data = NULL
            s.len = 0
            s.cap = 0
            _observe_runs(self, s, 0)   # those acknowledgements will never be written

    def next_seq(self, sid: int) -> int:
        """The seqNum the session's next business message will carry (1 for a new session)."""
        return self._session(sid).last_seq + 1

    def set_next_seq(self, sid: int, n: int) -> None:
        """Set the seqNum of the session's next message.  Raises ValueError for n < 1."""
        cdef SessionOut *s = self._session(sid)
        if n < 1:
            raise ValueError("sequence numbers start at 1")
        s.last_seq = n - 1

    def export_state(self) -> bytes:
        """What a restart must keep of this encoder, for ``import_state`` (engine snapshots):
        every session's last seqNum.  Little-endian: 8s b"HFTGWOUT", u32 version
        (OUTBOUND_STATE_VERSION), u32 n, then n x u64 last seqNum for session ids 0 .. n-1
        (n: one past the highest session with a message)."""
        return _export_state(self)

    def import_state(self, data) -> None:
        """Load what ``export_state`` saved (sessions beyond it keep theirs).  Raises
        ValueError for data of another format or version, of a wrong length, or with more
        sessions than max_sessions."""
        _import_state(self, data)

    def dirty(self) -> list:
        """Ids of the sessions with buffered bytes, in the order they got their first one."""
        cdef uint32_t i, j = 0, sid
        out = []
        for i in range(self.n_dirty):
            sid = self.dirty_ids[i]
            if self.sessions[sid].len:
                out.append(sid)
                self.dirty_ids[j] = sid
                j += 1
            else:
                self.sessions[sid].listed = 0
        self.n_dirty = j
        return out

    def take(self, sid: int) -> bytes:
        """Return and clear the session's buffered bytes (b"" when none)."""
        cdef SessionOut *s = self._session(sid)
        return _take_buffer(&s.data, &s.len, &s.cap)

    def take_seq(self, sid: int) -> tuple:
        """Return and clear the session's buffered bytes with the seqNum of their first message:
        (first_seq, bytes); (next_seq, b"") when nothing is buffered.  In ``retain`` mode the
        bytes are SOFH frames of the consecutive messages first_seq .. next_seq - 1."""
        cdef SessionOut *s = self._session(sid)
        first = s.first_seq if s.len else s.last_seq + 1
        return first, self.take(sid)

    def acks_written(self, sid: int, uint64_t written_ns) -> None:
        """The session's bytes taken last (``take`` / ``take_seq``) were written to its
        connection at ``written_ns`` (ns since the epoch, the clock of the events' recv_ts):
        observe written_ns - recv_ts of each acknowledgement among them, once per request.
        written_ns 0: they were not written (no connection, a replay sends them later); forget
        them.  Raises ValueError for an id >= max_sessions."""
        _observe_runs(self, self._session(sid), written_ns)

    def set_observer(self, owner) -> None:
        """Let ``owner`` see every event in the drain pass (book snapshots and their levels
        excepted), just before it is encoded: ``owner.event_observer()`` returns a
        PyCapsule "hftgw.EventObserver" holding an EventObserver (outbound.pxd) valid while
        ``owner`` lives (this encoder keeps a reference).  None removes it.  Raises ValueError for
        a capsule of another name."""
        cdef EventObserver *obs
        if owner is None:
            self.observer.fn = NULL
            self.observer.ctx = NULL
            self._observer_owner = None
            return
        obs = <EventObserver *>PyCapsule_GetPointer(owner.event_observer(), "hftgw.EventObserver")
        self.observer = obs[0]
        self._observer_owner = owner

    # -- the batch --------------------------------------------------------------------------------
    def drain(self, SpscRing events not None, bint live) -> int:
        """Consume every available Event record of ``events`` and encode its messages.

        EVT_ACCEPTED -> OrderAccepted, EVT_REJECTED -> OrderRejected, EVT_FILL -> two Executions
        (taker: session_id/cl_ord_id/order_id/leaves, liquidity TAKER, side; maker: the contra_*
        fields, liquidity MAKER, the opposite side; both tradeId = ref, lastPx = price, lastQty =
        qty), EVT_CANCELED -> OrderCanceled (origClOrdId = ref, leavesQty = leaves),
        EVT_TRIGGERED -> OrderTriggered (stopPx = ref), EVT_REPLACED -> OrderReplaced
        (origClOrdId = ref), EVT_CANCEL_REJECTED -> CancelRejected (origClOrdId = ref),
        EVT_MASS_CANCEL_DONE -> MassCancelDone (canceledCount = count), EVT_BOOK_SNAPSHOT and the
        count + count2 EVT_BOOK_LEVEL records after it -> one BookSnapshot (requestId = ref).
        transactTime = ev.ts.  A snapshot whose levels are not all published yet is left for the
        next call.  ``live`` (false while replaying the journal): each buffered
        EVT_ACCEPTED / EVT_REJECTED with recv_ts != 0 is noted for the latency histogram, which
        observes it at the session's ``acks_written`` (so the caller must call that for every
        ``dirty`` session it takes).

        Returns the number of records consumed.  Raises ValueError for a ring whose slots are not
        Event records, MemoryError if a buffer cannot grow (messages of that batch are lost).
        Runs without the GIL.
        """
        cdef uint64_t n, pos, i = 0, levels
        cdef const Event *ev
        if events.slot_size != sizeof(Event):
            raise ValueError(f"ring slots are {events.slot_size} bytes, Event records {sizeof(Event)}")
        with nogil:
            n = events.available()
            pos = events.read_pos()
            while i < n:
                ev = <const Event *>events.slot(pos + i)
                if ev.type == EVT_BOOK_SNAPSHOT:
                    levels = <uint64_t>ev.count + ev.count2
                    if levels + 1 > events.capacity:
                        # cannot be a real snapshot (it would never fit the ring): send it empty
                        _book_snapshot(self, events, pos + i, False)
                        i += 1
                        continue
                    if i + 1 + levels > n:
                        break
                    _book_snapshot(self, events, pos + i, True)
                    i += 1 + levels
                else:
                    _encode_event(self, ev, live)
                    i += 1
            events.consume(i)
        if self.out_of_memory:
            self.out_of_memory = False
            raise MemoryError("outbound session buffer")
        return i

    cdef uint64_t _number(self, uint32_t sid) noexcept nogil:
        if sid >= self.max_sessions:
            self.unroutable += 1
            return 0
        self.sessions[sid].last_seq += 1
        return self.sessions[sid].last_seq

    cdef char *_reserve(self, uint32_t sid, uint16_t template_id, size_t block_length,
                        size_t extra) noexcept nogil:
        # Append SOFH (if framed) + message header for a block of block_length bytes followed
        # by `extra` bytes; return where the block goes, or NULL when not buffered.
        cdef SessionOut *s
        cdef size_t frame_len, need, cap
        cdef char *p
        cdef SbeHeader *h
        cdef bint sofh
        if sid >= self.max_sessions:
            return NULL
        s = &self.sessions[sid]
        if self.retain:
            # the store's canonical form: every message, framed, connected or not
            sofh = True
        elif not s.connected:
            return NULL
        else:
            sofh = s.sofh
        frame_len = SBE_HEADER_SIZE + block_length + extra + (SOFH_SIZE if sofh else 0)
        need = s.len + frame_len
        if need > s.cap:
            cap = s.cap if s.cap else 4096
            while cap < need:
                cap *= 2
            p = <char *>realloc(s.data, cap)
            if p == NULL:
                self.out_of_memory = True
                return NULL
            s.data = p
            s.cap = cap
        if s.len == 0:
            # _number() ran just before: this message carries last_seq
            s.first_seq = s.last_seq
        p = s.data + s.len
        if sofh:
            p[0] = <char>((frame_len >> 24) & 0xFF)
            p[1] = <char>((frame_len >> 16) & 0xFF)
            p[2] = <char>((frame_len >> 8) & 0xFF)
            p[3] = <char>(frame_len & 0xFF)
            p[4] = <char>0xEB
            p[5] = <char>0x50
            p += SOFH_SIZE
        h = <SbeHeader *>p
        h.block_length = <uint16_t>block_length
        h.template_id = template_id
        h.schema_id = SBE_SCHEMA_ID
        h.version = SBE_SCHEMA_VERSION
        s.len = need
        if not s.listed:
            s.listed = 1
            self.dirty_ids[self.n_dirty] = sid
            self.n_dirty += 1
        self.messages_out += 1
        self.bytes_out += frame_len
        return p + SBE_HEADER_SIZE

    cdef void _capture(self, const Event *ev) noexcept nogil:
        # numbered whether captured or not: the numbers must not depend on the configuration
        self.event_no += 1
        if not self.capture_on:
            return
        if self.capture_len == 0:
            self.capture_first = self.event_no
        if _append_record(&self.capture_buf, &self.capture_len, &self.capture_cap, ev) < 0:
            self.out_of_memory = True

    cdef void _md_tap(self, const Event *ev) noexcept nogil:
        # ev changed (or may have changed) the book of ev.symbol_id
        cdef uint32_t sym = ev.symbol_id
        if sym >= self.symbols.count:
            return
        if not self.md_touched[sym]:
            self.md_touched[sym] = 1
            self.md_touched_ids[self.n_md_touched] = sym
            self.n_md_touched += 1
        self.md_last_ts[sym] = ev.ts
        if ev.type == EVT_FILL and self.md_trades_on:
            if _append_record(&self.md_trades_buf, &self.md_trades_len, &self.md_trades_cap, ev) < 0:
                self.out_of_memory = True

    cdef void _event(self, const Event *ev, bint live) noexcept nogil:
        _encode_event(self, ev, live)

    cdef void _execution(self, const Event *ev, bint maker) noexcept nogil:
        _encode_execution(self, ev, maker)

    # -- scrape-time reads ------------------------------------------------------------------------
    def counters(self) -> dict:
        """Totals since start: {"events": {EventType: n}, "rejects": {RejectReason: n}
        (OrderRejected + CancelRejected), "cancels": {CancelReason: n}, "fills": n,
        "traded_qty": lots, "messages_out": n, "bytes_out": n, "unroutable": n}; the per-key
        dicts hold non-zero entries only; reasons >= 255 are counted under 255."""
        cdef int i
        return {
            "events": {i: self.events_by_type[i] for i in range(N_EVENT_TYPES) if self.events_by_type[i]},
            "rejects": {i: self.rejects_by_reason[i] for i in range(N_REASON_COUNTERS)
                        if self.rejects_by_reason[i]},
            "cancels": {i: self.cancels_by_reason[i] for i in range(N_REASON_COUNTERS)
                        if self.cancels_by_reason[i]},
            "fills": self.fills,
            "traded_qty": self.traded_qty,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "unroutable": self.unroutable,
        }

    def latency(self) -> tuple:
        """Order-to-ack latency histogram: (upper bounds in seconds, the last float("inf");
        CUMULATIVE counts per bound, as Prometheus buckets, the last = number of observations;
        sum of observations in seconds)."""
        return _latency(self)

    # -- order events and fills for the event log ----------------------------------------------
    # EVT_CANCEL_REJECTED and EVT_MASS_CANCEL_DONE are not order events: a refused cancel changes
    # no order, and a mass cancel's orders each get their own EVT_CANCELED (the summary would
    # count them twice); both stay in the sessions' message streams.
    def capture_events(self, bint enabled) -> None:
        """Copy every later order event (EVT_ACCEPTED, EVT_REJECTED, EVT_FILL, EVT_CANCELED any
        reason, EVT_REPLACED, EVT_TRIGGERED), raw 128 bytes, into the capture buffer for
        ``take_events``.  Turning capture off drops what is buffered.  Events are numbered
        either way."""
        self.capture_on = enabled
        if not enabled:
            self.capture_len = 0

    def take_events(self) -> tuple:
        """Return and clear the captured records: ``(first event number, n * 128 bytes)`` in
        event order, numbers first .. first+n-1; ``(event_state() + 1, b"")`` when none."""
        if self.capture_len == 0:
            return self.event_no + 1, b""
        return self.capture_first, _take_buffer(&self.capture_buf, &self.capture_len,
                                                &self.capture_cap)

    def event_state(self) -> int:
        """Number of the last order event numbered (0 before the first); the next gets this + 1."""
        return self.event_no

    def set_event_state(self, n: int) -> None:
        """Restore the event counter (from a snapshot): the next event is numbered n + 1.
        Raises ValueError for n < 0 or while captured records are buffered."""
        if n < 0:
            raise ValueError("event numbers start at 1")
        if self.capture_len:
            raise ValueError("captured events not taken yet")
        self.event_no = n

    # -- market-data tap ----------------------------------------------------------------------------
    def md_tap(self, bint touched, bint trades) -> None:
        """touched: note the symbols whose book an EVT_ACCEPTED / EVT_FILL / EVT_CANCELED /
        EVT_REPLACED may have changed (``take_md_touched``); trades: also copy every EVT_FILL record
        (``take_md_trades``; needs touched).  Turning one off drops what it had collected."""
        cdef uint32_t i
        self.md_touch_on = touched
        self.md_trades_on = touched and trades
        if not touched:
            for i in range(self.n_md_touched):
                self.md_touched[self.md_touched_ids[i]] = 0
            self.n_md_touched = 0
        if not self.md_trades_on:
            self.md_trades_len = 0

    def take_md_touched(self) -> list:
        """Return and clear the symbols touched since the last call: ``[(symbol_id, ts), ...]``
        in the order they were first touched; ts is the time stamp (ns since epoch) of the last
        event that touched the symbol."""
        cdef uint32_t i, sym
        out = []
        for i in range(self.n_md_touched):
            sym = self.md_touched_ids[i]
            self.md_touched[sym] = 0
            out.append((sym, self.md_last_ts[sym]))
        self.n_md_touched = 0
        return out

    def take_md_trades(self) -> bytes:
        """Return and clear the fill records copied by the tap (n * 128 bytes, in event order)."""
        return _take_buffer(&self.md_trades_buf, &self.md_trades_len, &self.md_trades_cap)
