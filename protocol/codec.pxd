# C layout of the hftgw v1 wire protocol (protocol/schema/hftgw-v1.xml, FIX SBE 1.0).
#
# Every SBE block is a packed struct read or written in place: SBE blocks have no padding and
# fields at any offset, and the host is little-endian (checked at import of protocol.codec), so a
# packed struct IS the wire layout.  protocol.codec.LAYOUT is built from these structs and
# tests/test_schema.py compares it with the XML, so a drift between this file and the schema fails
# the tests.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from matching.records cimport UNKNOWN_SYMBOL_ID

cdef enum:
    SOFH_SIZE = 6                 # uint32 BE frame length (SOFH included) + uint16 BE encoding type
    SOFH_ENCODING_SBE_LE = 0xEB50 # SOFH encoding type: SBE 1.0 little-endian
    SBE_HEADER_SIZE = 8
    GROUP_SIZE_SIZE = 4           # groupSizeEncoding
    VAR_LENGTH_SIZE = 2           # varStringEncoding.length
    MIN_FRAME = 14                # SOFH + message header
    MAX_FRAME = 65535
    SBE_SCHEMA_ID = 1
    SBE_SCHEMA_VERSION = 2

    TPL_LOGIN = 1
    TPL_LOGIN_ACCEPTED = 2
    TPL_LOGIN_REJECTED = 3
    TPL_HEARTBEAT = 4
    TPL_LOGOUT = 5
    TPL_SESSION_REJECT = 6
    TPL_NEW_ORDER = 10
    TPL_CANCEL_ORDER = 11
    TPL_REPLACE_ORDER = 12
    TPL_MASS_CANCEL = 13
    TPL_BOOK_QUERY = 14
    TPL_END_OF_SESSION = 15
    TPL_POSITION_QUERY = 16
    TPL_ORDER_ACCEPTED = 20
    TPL_ORDER_REJECTED = 21
    TPL_EXECUTION = 22
    TPL_ORDER_CANCELED = 23
    TPL_ORDER_REPLACED = 24
    TPL_CANCEL_REJECTED = 25
    TPL_MASS_CANCEL_DONE = 26
    TPL_BOOK_SNAPSHOT = 27
    TPL_ORDER_TRIGGERED = 28
    TPL_BBO = 40                  # market data (WebSocket subscribers)
    TPL_TRADE = 41
    TPL_DEPTH_SNAPSHOT = 42
    TPL_DEPTH_UPDATE = 43
    TPL_POSITION_REPORT = 44      # account reports (unsequenced)
    MAX_TEMPLATE_ID = 44

# Results of frame_at() and decode_orders() (Python: protocol.codec.DecodeStatus).
cdef enum:
    DEC_NEED_MORE = 0        # no complete frame at the offset
    DEC_SESSION_MESSAGE = 1  # a complete frame of a valid non-order template
    DEC_RING_FULL = 2
    DEC_MALFORMED = 3        # bad SOFH, schema id, blockLength, group or var-data length
    DEC_UNKNOWN_TEMPLATE = 4
    DEC_FRAME_OK = 5         # frame_at(): a complete, well-formed frame

ctypedef packed struct SbeHeader:
    uint16_t block_length
    uint16_t template_id
    uint16_t schema_id
    uint16_t version

ctypedef packed struct GroupSize:
    uint16_t block_length
    uint16_t num_in_group

ctypedef packed struct VarLength:
    uint16_t length

# -- session layer ------------------------------------------------------------------------------
ctypedef packed struct LoginBlock:
    uint32_t heartbeat_interval_ms
    uint64_t next_expected_seq_num
    uint8_t cancel_on_disconnect
    uint8_t default_stp_mode      # since version 2

ctypedef packed struct LoginAcceptedBlock:
    uint32_t session_id
    uint64_t next_seq_num
    uint32_t heartbeat_interval_ms

ctypedef packed struct LoginRejectedBlock:
    uint16_t reason

ctypedef packed struct LogoutBlock:
    uint16_t reason

ctypedef packed struct SessionRejectBlock:
    uint16_t reason
    uint16_t ref_template_id

# -- order entry, client to server --------------------------------------------------------------
ctypedef packed struct NewOrderBlock:
    uint64_t cl_ord_id
    int64_t price
    uint64_t order_qty
    char symbol[8]
    uint8_t side
    uint8_t ord_type
    uint8_t time_in_force
    uint8_t flags
    uint8_t stp_mode
    int64_t stop_px               # since version 2
    uint64_t display_qty          # since version 2

ctypedef packed struct CancelOrderBlock:
    uint64_t cl_ord_id
    uint64_t orig_cl_ord_id
    char symbol[8]

ctypedef packed struct ReplaceOrderBlock:
    uint64_t cl_ord_id
    uint64_t orig_cl_ord_id
    int64_t price
    uint64_t order_qty
    char symbol[8]

ctypedef packed struct MassCancelBlock:
    uint64_t cl_ord_id
    char symbol[8]
    uint8_t side
    uint8_t scope                 # since version 2

ctypedef packed struct EndOfSessionBlock:    # template 15, since version 2
    uint64_t cl_ord_id
    char symbol[8]

ctypedef packed struct BookQueryBlock:
    uint64_t request_id
    char symbol[8]
    uint16_t depth

ctypedef packed struct PositionQueryBlock:    # template 16, since version 2
    uint64_t request_id
    char symbol[8]

# -- order entry, server to client --------------------------------------------------------------
ctypedef packed struct OrderAcceptedBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t order_id
    int64_t price
    uint64_t order_qty
    uint64_t leaves_qty
    char symbol[8]
    uint8_t side
    uint8_t ord_type
    uint8_t time_in_force

ctypedef packed struct OrderRejectedBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    char symbol[8]
    uint16_t reason

ctypedef packed struct ExecutionBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t order_id
    uint64_t trade_id
    int64_t last_px
    uint64_t last_qty
    uint64_t leaves_qty
    char symbol[8]
    uint8_t side
    uint8_t liquidity

ctypedef packed struct OrderCanceledBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t orig_cl_ord_id
    uint64_t order_id
    int64_t price
    uint64_t canceled_qty
    char symbol[8]
    uint8_t side
    uint16_t reason
    uint64_t leaves_qty           # since version 2

ctypedef packed struct OrderReplacedBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t orig_cl_ord_id
    uint64_t order_id
    int64_t price
    uint64_t order_qty
    uint64_t leaves_qty
    char symbol[8]
    uint8_t side

ctypedef packed struct CancelRejectedBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t orig_cl_ord_id
    uint16_t reason

ctypedef packed struct MassCancelDoneBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint32_t canceled_count

ctypedef packed struct BookSnapshotBlock:
    uint64_t seq_num
    uint64_t transact_time
    uint64_t request_id
    char symbol[8]

ctypedef packed struct PositionReportBlock:   # template 44, since version 2
    uint64_t request_id
    char symbol[8]
    int64_t net_position
    int64_t avg_price
    int64_t realized_pnl
    uint64_t open_buy_qty
    uint64_t open_sell_qty
    uint64_t bought_qty
    uint64_t sold_qty
    uint16_t report_index
    uint16_t report_count

ctypedef packed struct OrderTriggeredBlock:  # template 28, since version 2
    uint64_t seq_num
    uint64_t transact_time
    uint64_t cl_ord_id
    uint64_t order_id
    int64_t stop_px
    int64_t price
    uint64_t order_qty
    uint64_t leaves_qty
    char symbol[8]
    uint8_t side
    uint8_t ord_type

ctypedef packed struct BookLevelEntry:   # one entry of BookSnapshot / DepthSnapshot / DepthUpdate groups
    int64_t price
    uint64_t size
    uint32_t order_count

# -- market data, server to WebSocket subscribers ---------------------------------------------------
ctypedef packed struct BboBlock:
    char symbol[8]
    uint64_t transact_time
    uint64_t book_seq
    int64_t bid_price
    uint64_t bid_size
    int64_t ask_price
    uint64_t ask_size

ctypedef packed struct TradeBlock:
    char symbol[8]
    uint64_t transact_time
    uint64_t trade_id
    int64_t price
    uint64_t qty
    uint8_t aggressor_side

ctypedef packed struct DepthSnapshotBlock:
    char symbol[8]
    uint64_t transact_time
    uint64_t last_seq
    uint16_t levels

ctypedef packed struct DepthUpdateBlock:
    char symbol[8]
    uint64_t transact_time
    uint64_t first_seq
    uint64_t last_seq
    uint16_t levels

# What frame_at() found at an offset.
ctypedef struct FrameInfo:
    Py_ssize_t frame_len     # bytes to skip to the next frame (SOFH included when framed)
    Py_ssize_t msg_offset    # offset of the SBE header inside the frame (6 with SOFH, else 0)
    Py_ssize_t msg_len       # header + block + groups + varData, as this schema reads them
    uint16_t template_id
    uint16_t block_length    # as sent (may exceed ours: newer schema version)

# Per-template facts the framing walk needs; indexed by template id.
ctypedef struct TemplateInfo:
    uint16_t block_length    # 0 with known=0: not a template of this schema
    uint16_t min_block_length  # the shortest root block accepted: that of the template's first
                               # version (fields added later read as 0 when absent)
    uint16_t entry_length    # root-level repeating groups: our entry blockLength
    uint8_t known
    uint8_t is_order         # decoded into a Command by decode_orders
    uint8_t n_groups
    uint8_t n_var_data

cdef int frame_at(const uint8_t *p, Py_ssize_t avail, bint sofh, FrameInfo *fi) noexcept nogil


cdef inline uint64_t symbol_key(const char *p) noexcept nogil:
    # The 8 symbol bytes as a little-endian integer with trailing NUL/space padding cleared, so
    # that "AAPL\0\0\0\0" and "AAPL    " map to the same key; all blank -> 0.
    cdef uint64_t k
    cdef int i
    cdef uint64_t b
    memcpy(&k, p, 8)
    for i in range(7, -1, -1):
        b = (k >> (8 * i)) & 0xFF
        if b != 0 and b != 0x20:
            break
        k &= ~((<uint64_t>0xFF) << (8 * i))
    return k


cdef class SymbolTable:
    cdef uint64_t *slot_keys       # open addressing, linear probing; key 0 = empty slot
    cdef uint32_t *slot_ids
    cdef uint64_t *keys_by_id      # symbol id -> key, i.e. the NUL-padded wire bytes
    cdef uint64_t mask
    cdef int shift
    cdef uint32_t id_cap           # ids keys_by_id has room for
    cdef readonly uint32_t count
    cdef list _names

    cdef int _alloc(self, uint64_t cap, uint32_t id_cap) except -1
    cdef void _insert(self, uint64_t k, uint32_t symbol_id) noexcept

    cdef inline uint32_t lookup_key(self, uint64_t k) noexcept nogil:
        cdef uint64_t i
        if k == 0:
            return UNKNOWN_SYMBOL_ID
        i = (k * <uint64_t>0x9E3779B97F4A7C15) >> self.shift
        while self.slot_keys[i] != 0:
            if self.slot_keys[i] == k:
                return self.slot_ids[i]
            i = (i + 1) & self.mask
        return UNKNOWN_SYMBOL_ID

    cdef inline uint32_t lookup_raw(self, const char *p) noexcept nogil:
        return self.lookup_key(symbol_key(p))

    cdef inline uint64_t key_of(self, uint32_t symbol_id) noexcept nogil:
        # the wire bytes of a symbol id; 0 (all NUL) for an id outside the table
        if symbol_id < self.count:
            return self.keys_by_id[symbol_id]
        return 0
