# Fixed-size records that cross the rings (DESIGN §1).
#
# Units everywhere: prices are signed integers in the symbol's price unit (1e-4 currency units,
# as Nasdaq ITCH Price(4)), always a multiple of the symbol's tick; quantities are unsigned lots;
# times are nanoseconds since the Unix epoch.  Both structs are naturally aligned with no
# padding holes, so their byte layout is the same on every x86-64/aarch64 compiler; the sizes are
# asserted in records.pyx.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# -- enums shared by the codec, the core and the gateway (values are on the wire too) -----------
cpdef enum Side:
    SIDE_BUY = 1
    SIDE_SELL = 2

cpdef enum OrdType:
    # FIX tag 40 values
    ORD_LIMIT = 1
    ORD_MARKET = 2
    ORD_STOP = 3              # stop (market when triggered)
    ORD_STOP_LIMIT = 4        # stop-limit (limit when triggered)

cpdef enum TimeInForce:
    # FIX tag 59 values
    TIF_DAY = 0               # expires at the end-of-session command
    TIF_GTC = 1
    TIF_IOC = 3
    TIF_FOK = 4

cpdef enum OrderFlags:
    FLAG_POST_ONLY = 1

cpdef enum MassCancelScope:
    SCOPE_SESSION = 0         # the requesting session's orders
    SCOPE_ACCOUNT = 1         # every order of the requesting session's account, any session

cpdef enum StpMode:
    STP_NONE = 0
    STP_CANCEL_NEWEST = 1
    STP_CANCEL_OLDEST = 2
    STP_CANCEL_BOTH = 3
    STP_DECREMENT = 4

cpdef enum CommandType:
    CMD_NEW = 1
    CMD_CANCEL = 2
    CMD_REPLACE = 3
    CMD_MASS_CANCEL = 4
    CMD_BOOK_QUERY = 5
    CMD_END_OF_SESSION = 6    # expire DAY orders (admin)
    CMD_SESSION_OPEN = 10
    CMD_SYMBOL_ADD = 11       # define a symbol at run time (new book, or new tick/max_qty)
    CMD_SESSION_STATE = 12    # a session attached (flags: 1 attached, 2 cancel on disconnect)
                              # or detached (flags 0), for cancel on disconnect across a crash;
                              # the core ignores it
    # 20-29: gateway access control and pre-trade risk (gateway/risk/pretrade.pyx)
    CMD_RISK_REJECT = 20      # refused before the ring: the core answers EVT_REJECTED or
                              # EVT_CANCEL_REJECTED with reason = depth; stp = the original type
    CMD_ADMIN = 21            # halt/resume, kill switch, risk limit change; the core ignores it

cpdef enum EventType:
    EVT_ACCEPTED = 1
    EVT_REJECTED = 2
    EVT_FILL = 3
    EVT_CANCELED = 4
    EVT_REPLACED = 5
    EVT_CANCEL_REJECTED = 6
    EVT_MASS_CANCEL_DONE = 7
    EVT_BOOK_SNAPSHOT = 8
    EVT_BOOK_LEVEL = 9
    EVT_TRIGGERED = 10        # a stop order's trigger condition was met

cpdef enum RejectReason:
    # order / cancel / replace rejects (OrderRejected.reason, CancelRejected.reason)
    REJ_NONE = 0
    REJ_MALFORMED = 1
    REJ_UNKNOWN_TEMPLATE = 2
    REJ_NOT_LOGGED_IN = 3
    REJ_UNKNOWN_SYMBOL = 4
    REJ_INVALID_PRICE = 5
    REJ_INVALID_QUANTITY = 6
    REJ_DUPLICATE_CL_ORD_ID = 7
    REJ_UNKNOWN_ORDER = 8
    REJ_INVALID_FIELD = 9
    REJ_POST_ONLY_WOULD_TAKE = 10
    REJ_UNSUPPORTED = 11
    REJ_THROTTLED = 12
    REJ_NOT_AUTHORIZED = 13          # the session's role may not send this request
    # 33-63: gateway pre-trade risk (a block of its own, so that reasons appended to the core's
    # range cannot collide with these)
    REJ_PRICE_BAND = 33              # limit price too far from the reference price
    REJ_MAX_ORDER_QTY = 34           # above the account's or the symbol's maximum order quantity
    REJ_MAX_NOTIONAL = 35            # price x quantity above the account's or the symbol's maximum
    REJ_MAX_OPEN_ORDERS = 36         # the account has its maximum of open orders
    REJ_MAX_POSITION_NET = 37        # worst-case net position (open orders included) over the limit
    REJ_MAX_POSITION_GROSS = 38      # worst-case gross position over the limit
    REJ_ACCOUNT_BLOCKED = 39         # kill switch engaged for the account
    REJ_SYMBOL_HALTED = 40           # trading in the symbol is halted
    REJ_NO_REFERENCE_PRICE = 41      # a market order's notional cannot be checked: no reference price

cpdef enum CancelReason:
    CXL_USER = 1
    CXL_IOC_REMAINDER = 2
    CXL_NO_LIQUIDITY = 3
    CXL_MASS_CANCEL = 4
    CXL_FOK_UNFILLED = 5
    CXL_DISCONNECT = 6
    CXL_SELF_TRADE = 7        # self-trade prevention (Binance EXPIRED_IN_MATCH)
    CXL_EXPIRED = 8           # DAY order at the end-of-session command
    CXL_KILL_SWITCH = 32      # the account's kill switch was engaged by an admin

cpdef enum LoginRejectReason:
    LOGIN_BAD_TOKEN = 1
    LOGIN_TOKEN_EXPIRED = 2
    LOGIN_SESSION_IN_USE = 3
    LOGIN_INVALID_SEQUENCE = 4
    LOGIN_NOT_AUTHORIZED = 5
    LOGIN_ALREADY_LOGGED_IN = 6
    LOGIN_RATE_LIMITED = 32     # too many login attempts from the source address
    LOGIN_SESSION_LIMIT = 33    # the account has its maximum of open sessions

cpdef enum Liquidity:
    LIQ_MAKER = 1
    LIQ_TAKER = 2

# Symbol id for a symbol not in the table: the core answers REJ_UNKNOWN_SYMBOL.
cdef enum:
    UNKNOWN_SYMBOL_ID = 0xFFFFFFFF
    COMMAND_SIZE = 96
    EVENT_SIZE = 128

# One sequenced command (gateway -> inbound ring -> journal -> core).  96 bytes, naturally aligned.
ctypedef struct Command:
    uint64_t seq              # 0   global command sequence number, stamped by the sequencer
    uint64_t ts               # 8   receive time, ns since epoch (monotonic per stream after stamping)
    uint32_t session_id       # 16
    uint32_t symbol_id        # 20  index into the symbol table, UNKNOWN_SYMBOL_ID if not found
    uint8_t type              # 24  CommandType
    uint8_t side              # 25  Side (CMD_MASS_CANCEL: 0 = both)
    uint8_t ord_type          # 26  OrdType
    uint8_t tif               # 27  TimeInForce
    uint8_t flags             # 28  OrderFlags; CMD_MASS_CANCEL: 1 = cancel on disconnect
    uint8_t stp               # 29  StpMode (the session default already applied)
    uint16_t depth            # 30  levels per side, CMD_BOOK_QUERY; 1 = all symbols, mass cancel / EOS
    uint64_t cl_ord_id        # 32  ClOrdID of this request
    uint64_t orig_cl_ord_id   # 40  target ClOrdID (cancel/replace); request id (book query)
    int64_t price             # 48  price units
    uint64_t qty              # 56  lots (replace: the new total order quantity)
    int64_t stop_price        # 64  ORD_STOP / ORD_STOP_LIMIT trigger price, price units; else 0
    uint64_t display_qty      # 72  iceberg: lots shown at a time; 0 = not an iceberg
    uint32_t account_id       # 80  the session's account, stamped by the gateway (STP, mass cancel)
    uint8_t scope             # 84  CMD_MASS_CANCEL: MassCancelScope
    uint8_t pad0              # 85
    uint16_t pad1             # 86
    uint64_t reserved         # 88  symbol_id UNKNOWN_SYMBOL_ID: the symbol's 8 bytes as sent
                              #     (NUL-padded, 0 = blank; the reject echoes them); else 0
# CMD_SESSION_OPEN carries the account name, NUL-padded ASCII, in the 32 bytes from offset 32, and
#   the account id the gateway gave it in account_id, and the session's name (the token's
#   `session` claim; "" = the account's default session) NUL-padded in the 16 bytes from offset 64.
# CMD_MASS_CANCEL, CMD_END_OF_SESSION: symbol_id UNKNOWN_SYMBOL_ID with depth=1 = all symbols.
# CMD_SYMBOL_ADD defines symbol id `symbol_id` (the next free id: a new book; an existing id: new
#   tick/max_qty for it): tick in `price`, max_qty in `qty`, the name's 8 NUL-padded bytes from
#   offset 32 (the place of `cl_ord_id`).  Journaled like any command, so replay rebuilds the same ids.
# CMD_MASS_CANCEL: flags 1 = cancel on disconnect (all symbols, CXL_DISCONNECT), 2 = kill switch
#   (all symbols, CXL_KILL_SWITCH; the gateway sends it with scope ACCOUNT).
# CMD_RISK_REJECT: the request's own fields as decoded, with type rewritten, depth = RejectReason
#   and stp = the original CommandType (CMD_CANCEL/CMD_REPLACE -> EVT_CANCEL_REJECTED, else
#   EVT_REJECTED; CMD_BOOK_QUERY echoes the request id).
# CMD_ADMIN (gateway/risk/pretrade.pyx): side = AdminAction, ord_type = RiskField, the int64 value in the
#   8 bytes at offset 16 (over session_id + symbol_id), depth = symbol id + 1 (0 = none), the
#   account name NUL-padded in the 32 bytes from offset 32 (empty for symbol actions).

# One event (core -> outbound ring -> session writers, market data, sink, metrics).  128 bytes.
ctypedef struct Event:
    uint64_t seq              # 0   seq of the command that caused it
    uint64_t ts               # 8   that command's time stamp (ns since epoch)
    uint32_t session_id       # 16  owner session (taker for a fill)
    uint32_t symbol_id        # 20
    uint8_t type              # 24  EventType
    uint8_t side              # 25  side of the owner's order (taker side = aggressor for a fill)
    uint16_t reason           # 26  RejectReason / CancelReason
    uint32_t contra_session   # 28  FILL: maker session
    uint64_t cl_ord_id        # 32  owner's ClOrdID (taker for a fill)
    uint64_t order_id         # 40  owner's exchange order id
    int64_t price             # 48  ACCEPTED/REPLACED: order price; FILL: trade price; BOOK_LEVEL: level price
    uint64_t qty              # 56  ACCEPTED/TRIGGERED: order qty; FILL: traded qty; CANCELED: canceled qty;
                              #     REPLACED: new total qty; BOOK_LEVEL: level size
    uint64_t leaves           # 64  owner's leaves qty after the event (CANCELED: > 0 for the partial
                              #     cancel of self-trade prevention DECREMENT; the order lives on)
    uint64_t ref              # 72  FILL: trade id; REPLACED/CANCEL_REJECTED/CANCELED: orig ClOrdID;
                              #     BOOK_SNAPSHOT: request id; TRIGGERED: the stop price;
                              #     REJECTED for an unknown symbol: the command's reserved (the name)
    uint64_t contra_cl_ord_id  # 80  FILL: maker ClOrdID
    uint64_t contra_order_id  # 88  FILL: maker order id
    uint64_t contra_leaves    # 96  FILL: maker leaves after the fill; REPLACED: leaves before
    uint32_t count            # 104 BOOK_LEVEL: orders at level; BOOK_SNAPSHOT: bid levels;
                              #     MASS_CANCEL_DONE: orders canceled (or expired, end of session)
    uint32_t count2           # 108 BOOK_SNAPSHOT: ask levels
    uint8_t ord_type          # 112
    uint8_t tif               # 113
    uint8_t flags             # 114 BOOK_LEVEL: 0 bid, 1 ask
    uint8_t pad0              # 115
    uint32_t pad1             # 116
    uint64_t recv_ts          # 120 gateway receive time of the command (ns), for order-to-ack latency
