# C layout of the hftgw v1 wire protocol (protocol/schema/hftgw-v1.xml, FIX SBE 1.0).
#
# Every SBE block is a packed struct read or written in place: SBE blocks have no padding and
# fields at any offset, and the host is little-endian (checked at import of protocol.codec), so a
# packed struct IS the wire layout.  protocol.framing.LAYOUT is built from these structs and
# tests/protocol/test_schema.py compares it with the XML, so a drift between this file and the schema fails
# the tests.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    SOFH_SIZE = 6                 # uint32 BE frame length (SOFH included) + uint16 BE encoding type
    SOFH_ENCODING_SBE_LE = 0xEB50  # SOFH encoding type: SBE 1.0 little-endian
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
