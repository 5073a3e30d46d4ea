# Outbound encoder: Event records (matching/records.pxd) -> per-session SBE byte buffers.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from matching.records cimport Event
from matching.ring cimport SpscRing
from protocol.symbols cimport SymbolTable

cdef enum:
    N_LATENCY_BOUNDS = 19            # finite bucket bounds; one more bucket for +Inf
    N_REASON_COUNTERS = 256          # reasons >= 255 are counted under 255
    N_EVENT_TYPES = 256

# A C-level consumer that sees every event the encoder drains, in the same pass (for the
# gateway's risk state): fn(ctx, ev), published by its owner through a PyCapsule named
# "hftgw.EventObserver" (see Outbound.set_observer).
ctypedef void (*EventHook)(void *ctx, const Event *ev) noexcept nogil
ctypedef struct EventObserver:
    EventHook fn
    void *ctx

# Acknowledgements encoded for a session but not yet written to its connection: requests read
# at one receive time (one data_received) share a run, so a batch costs one entry, not one per
# order (the order-to-ack histogram is observed per run when the session's bytes are written).
ctypedef struct AckRun:
    uint64_t recv_ts
    uint64_t count

ctypedef struct SessionOut:
    char *data                       # malloc'd, grows by doubling; NULL until first use
    size_t len
    size_t cap
    uint64_t last_seq                # seqNum of the last message numbered for the session
    uint64_t first_seq               # seqNum of the first message in data (while len > 0)
    uint8_t connected
    uint8_t sofh
    uint8_t listed                   # its id is in Outbound.dirty_ids
    AckRun *acks                     # malloc'd; runs of acks buffered in data, not yet written
    uint32_t n_acks
    uint32_t acks_cap


cdef class Outbound:
    cdef SessionOut *sessions
    cdef readonly uint32_t max_sessions
    cdef SymbolTable symbols
    cdef uint32_t *dirty_ids
    cdef uint32_t n_dirty
    cdef uint64_t events_by_type[N_EVENT_TYPES]
    cdef uint64_t rejects_by_reason[N_REASON_COUNTERS]
    cdef uint64_t cancels_by_reason[N_REASON_COUNTERS]
    cdef uint64_t fills
    cdef uint64_t traded_qty
    cdef uint64_t messages_out
    cdef uint64_t bytes_out
    cdef uint64_t unroutable         # messages for a session id >= max_sessions (not numbered)
    cdef uint64_t latency_counts[N_LATENCY_BOUNDS + 1]
    cdef uint64_t latency_sum_ns
    # order events and fills for the event log (persistence/event_log.py): every EVT_ACCEPTED,
    # EVT_REJECTED, EVT_FILL, EVT_CANCELED, EVT_REPLACED, EVT_TRIGGERED gets the next event number,
    # captured or not, so the numbering is a function of the journal alone
    cdef uint64_t event_no           # number of the last such event (0: none yet)
    cdef bint capture_on
    cdef uint64_t capture_first      # event number of the first record in capture_buf
    cdef char *capture_buf
    cdef size_t capture_len
    cdef size_t capture_cap
    cdef bint out_of_memory
    cdef public bint retain          # encode every session's messages, SOFH-framed (message store)
    cdef EventObserver observer
    cdef object _observer_owner
    # market-data tap (gateway/marketdata/fanout.py): symbols whose book an event changed since the last
    # take_md_touched(), with the time stamp of the last such event, and raw EVT_FILL records
    cdef bint md_touch_on
    cdef bint md_trades_on
    cdef uint8_t *md_touched         # per symbol id: 1 while listed in md_touched_ids
    cdef uint32_t *md_touched_ids
    cdef uint32_t n_md_touched
    cdef uint32_t md_cap             # symbol slots allocated in the three md_* arrays
    cdef uint64_t *md_last_ts        # per symbol id
    cdef char *md_trades_buf
    cdef size_t md_trades_len
    cdef size_t md_trades_cap

    cdef SessionOut *_session(self, sid) except NULL
    cdef uint64_t _number(self, uint32_t sid) noexcept nogil
    cdef char *_reserve(self, uint32_t sid, uint16_t template_id, size_t block_length,
                        size_t extra) noexcept nogil
    cdef void _capture(self, const Event *ev) noexcept nogil
    cdef void _md_tap(self, const Event *ev) noexcept nogil
    cdef int _grow_md(self, uint32_t cap) except -1
    cdef void _event(self, const Event *ev, bint live) noexcept nogil
    cdef void _execution(self, const Event *ev, bint maker) noexcept nogil
