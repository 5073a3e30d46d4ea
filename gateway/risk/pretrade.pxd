# Pre-trade risk, throttles, kill switch and positions: C state of gateway/risk/pretrade.pyx.
#
# Units: prices int64 in 1e-4 currency units (multiples of the symbol tick); quantities uint64
# lots; notional and P&L in price units x lots (1e-4 currency); times ns since the epoch.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from matching.core cimport MatchingCore
from matching.records cimport Command
from matching.ring cimport SpscRing
from protocol.outbound cimport EventObserver

cdef enum:
    N_RISK_REASONS = 64          # reject counters indexed by RejectReason (< 64)

# One token bucket: ``rate`` tokens per second up to ``burst``; rate 0 = unlimited.
ctypedef struct Bucket:
    double tokens
    double rate
    double burst
    uint64_t last_ts

ctypedef struct SymbolRisk:
    int64_t tick
    int64_t ref_price            # configured reference before the first trade; 0 = none
    int64_t last_px              # last trade price; 0 = no trade yet
    uint64_t band_ticks          # 0 = no tick band
    uint64_t band_ppm            # band in millionths of the reference (1 % = 10000); 0 = none
    uint64_t max_order_qty       # 0 = no limit
    uint64_t max_notional        # price units x lots; 0 = no limit
    uint8_t halted

# One account's book-keeping in one symbol.
ctypedef struct Position:
    int64_t net                  # lots, > 0 long
    int64_t cost                 # price units x lots of the open position (cost long, proceeds short)
    int64_t realized             # realized P&L, price units x lots
    uint64_t open_buy            # leaves of the account's live buy orders (committed by the core)
    uint64_t open_sell
    uint64_t pend_buy            # checked here, not yet processed by the core; valid only while
    uint64_t pend_sell           # pend_gen == RiskEngine.gen (clear_pending bumps gen)
    uint64_t pend_gen
    uint64_t bought              # filled lots
    uint64_t sold
    uint64_t max_net             # 0 = no limit
    uint64_t max_gross

ctypedef struct AccountRisk:
    Position *pos                # RiskEngine.sym_cap entries
    uint64_t open_orders         # live orders (committed by the core)
    uint64_t pend_orders         # new orders checked here, not yet processed (pend_gen as above)
    uint64_t pend_gen
    uint64_t max_order_qty       # 0 = no limit
    uint64_t max_notional
    uint64_t max_open_orders
    Bucket bucket
    uint8_t blocked              # kill switch

ctypedef struct SessionRisk:
    AccountRisk *ar              # NULL = not bound (accounts never move: allocated one by one)
    Bucket bucket


# What the per-event update needs, for the encoder's drain pass (C pointers only: no GIL)
ctypedef struct EventView:
    SessionRisk *ses
    SymbolRisk *sym
    uint32_t max_sessions
    uint32_t n_symbols


@cython.final      # direct (inlinable) calls of the cdef methods, no vtable on the order path
cdef class RiskEngine:
    cdef SymbolRisk *sym         # sym_cap entries (symbols are defined at run time, journaled)
    cdef readonly uint32_t n_symbols
    cdef uint32_t sym_cap        # entries allocated in sym and in every account's pos
    cdef AccountRisk **acc       # by account index
    cdef uint32_t n_acc
    cdef uint32_t acc_cap
    cdef SessionRisk *ses
    cdef readonly uint32_t max_sessions
    cdef MatchingCore core
    cdef uint64_t gen            # generation of the in-flight quantities (see Position)
    cdef uint64_t ev_seen        # absolute events-ring position observed up to
    cdef EventView view
    cdef EventObserver obs
    cdef public bint enabled
    cdef uint64_t checked
    cdef uint64_t rejected[N_RISK_REASONS]
    cdef uint64_t throttled_session
    cdef uint64_t throttled_account
    cdef uint64_t refused_new          # NewOrders among the refused (for "orders received")
    cdef public uint64_t skipped_admin   # journaled CMD_ADMIN records that no longer apply
    cdef dict _index             # account name -> index
    cdef list _names             # index -> account name
    cdef object _account_limits  # callable(name) -> dict of the configured limits
    cdef dict _limits            # account name -> its limits (for symbols defined later)
    cdef list _sym_names         # symbol id -> name (per-symbol limits are keyed by name)
    cdef list _admin_log         # every CMD_ADMIN record applied (96 bytes each), for snapshots

    cdef AccountRisk *_account(self, str name) except NULL
    cdef int _grow_symbols(self, uint32_t need) except -1
    cdef void _symbol_limits(self, AccountRisk *a, dict lim, uint32_t s)
    cdef uint64_t _check(self, SpscRing ring, uint64_t first, uint64_t n) noexcept nogil
    cdef uint64_t _observe(self, SpscRing events) noexcept nogil
