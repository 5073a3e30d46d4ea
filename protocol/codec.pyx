# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""hftgw protocol codec (schema version 2): FIX Simple Binary Encoding 1.0 framed by SOFH (DESIGN §2).

The schema is ``protocol/schema/hftgw-v1.xml``; the C layout of every block is in ``codec.pxd``.

Framing: on TCP every SBE message is preceded by the Simple Open Framing Header (uint32 BIG-endian
frame length counting its own 6 bytes, uint16 BIG-endian encoding type 0xEB50); a frame is 14 to
65535 bytes.  With ``sofh=False`` (a WebSocket message) the buffer holds SBE messages back to back
and each message's length follows from its header, groups and varData.  As SBE allows, a
blockLength as short as the template's first version is accepted (the fields added later read as
0: ``SINCE_VERSION``), and a blockLength (or group entry blockLength) LONGER than ours is accepted
and the extra bytes skipped, and bytes after the known parts of a SOFH frame are ignored (a newer
schema version may add groups or varData there).

Two levels:

* Python: ``encode``, ``decode_message``, ``decode_frames``, ``decode_next``, ``message_length``
  work with the ``protocol.messages`` structs; they are for the session layer, clients and tests.
* Hot paths, no Python object per message: ``decode_orders`` writes order-entry messages straight
  into the inbound SpscRing as 96-byte Command records with the GIL released;
  ``scan_responses`` is the load generator's batch scan of server frames.
"""
import re
import struct
import sys
from array import array
from enum import IntEnum

import msgspec

from cpython cimport array as carray
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from matching.records cimport (
    CMD_BOOK_QUERY,
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    REJ_MALFORMED,
    REJ_UNKNOWN_TEMPLATE,
    UNKNOWN_SYMBOL_ID,
    Command,
)
from matching.ring cimport SpscRing

from protocol.messages import MESSAGE_TYPES, BookLevel, ProtocolError

if sys.byteorder != "little":
    # the packed structs in codec.pxd are the little-endian wire layout only on such a host
    raise ImportError("protocol.codec needs a little-endian host")

__all__ = [
    "DecodeStatus", "NEED_MORE", "SESSION_MESSAGE", "RING_FULL", "MALFORMED", "UNKNOWN_TEMPLATE",
    "LAYOUT", "GROUPS", "VAR_DATA", "SCHEMA_ID", "SCHEMA_VERSION", "SOFH_ENCODING", "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "ProtocolError", "SymbolTable", "encode", "decode_message", "decode_frames", "decode_next",
    "message_length", "decode_orders", "scan_responses", "UNKNOWN_SYMBOL", "is_order_template",
]


class DecodeStatus(IntEnum):
    """Why ``decode_orders`` returned."""

    NEED_MORE = DEC_NEED_MORE                # no complete frame left
    SESSION_MESSAGE = DEC_SESSION_MESSAGE    # the next frame is a valid non-order template
    RING_FULL = DEC_RING_FULL                # the inbound ring has no free slot
    MALFORMED = DEC_MALFORMED                # bad framing at the returned offset
    UNKNOWN_TEMPLATE = DEC_UNKNOWN_TEMPLATE  # a template id this schema does not have


NEED_MORE = DecodeStatus.NEED_MORE
SESSION_MESSAGE = DecodeStatus.SESSION_MESSAGE
RING_FULL = DecodeStatus.RING_FULL
MALFORMED = DecodeStatus.MALFORMED
UNKNOWN_TEMPLATE = DecodeStatus.UNKNOWN_TEMPLATE

SCHEMA_ID = SBE_SCHEMA_ID
SCHEMA_VERSION = SBE_SCHEMA_VERSION
SOFH_ENCODING = SOFH_ENCODING_SBE_LE
MAX_FRAME_SIZE = MAX_FRAME
MIN_FRAME_SIZE = MIN_FRAME
UNKNOWN_SYMBOL = <uint32_t>UNKNOWN_SYMBOL_ID


# -- layout tables, built from the packed structs of codec.pxd --------------------------------------
cdef tuple _f(str name, const void *base, const void *field, size_t size, str primitive):
    return (name, <Py_ssize_t>(<const char *>field - <const char *>base), <Py_ssize_t>size, primitive)


cdef LoginBlock _lg
cdef LoginAcceptedBlock _la
cdef LoginRejectedBlock _lr
cdef LogoutBlock _lo
cdef SessionRejectBlock _sr
cdef NewOrderBlock _no
cdef CancelOrderBlock _co
cdef ReplaceOrderBlock _ro
cdef MassCancelBlock _mc
cdef BookQueryBlock _bq
cdef OrderAcceptedBlock _oa
cdef OrderRejectedBlock _oj
cdef ExecutionBlock _ex
cdef OrderCanceledBlock _oc
cdef OrderReplacedBlock _orp
cdef CancelRejectedBlock _cr
cdef MassCancelDoneBlock _md
cdef BookSnapshotBlock _bs
cdef BookLevelEntry _bl
cdef EndOfSessionBlock _eo
cdef OrderTriggeredBlock _ot
cdef BboBlock _bbo
cdef TradeBlock _tr
cdef DepthSnapshotBlock _ds
cdef DepthUpdateBlock _du
cdef PositionQueryBlock _pq
cdef PositionReportBlock _pr

#: template id -> (name, blockLength, [(field name, offset, size, primitive type)]) of the root
#: block, in schema order; names and primitive types as in the XML schema.
LAYOUT = {
    TPL_LOGIN: ("Login", sizeof(LoginBlock), [
        _f("heartbeatIntervalMs", &_lg, &_lg.heartbeat_interval_ms, sizeof(_lg.heartbeat_interval_ms), "uint32"),
        _f("nextExpectedSeqNum", &_lg, &_lg.next_expected_seq_num, sizeof(_lg.next_expected_seq_num), "uint64"),
        _f("cancelOnDisconnect", &_lg, &_lg.cancel_on_disconnect, sizeof(_lg.cancel_on_disconnect), "uint8"),
        _f("defaultStpMode", &_lg, &_lg.default_stp_mode, sizeof(_lg.default_stp_mode), "uint8"),
    ]),
    TPL_LOGIN_ACCEPTED: ("LoginAccepted", sizeof(LoginAcceptedBlock), [
        _f("sessionId", &_la, &_la.session_id, sizeof(_la.session_id), "uint32"),
        _f("nextSeqNum", &_la, &_la.next_seq_num, sizeof(_la.next_seq_num), "uint64"),
        _f("heartbeatIntervalMs", &_la, &_la.heartbeat_interval_ms, sizeof(_la.heartbeat_interval_ms), "uint32"),
    ]),
    TPL_LOGIN_REJECTED: ("LoginRejected", sizeof(LoginRejectedBlock), [
        _f("reason", &_lr, &_lr.reason, sizeof(_lr.reason), "uint16"),
    ]),
    TPL_HEARTBEAT: ("Heartbeat", 0, []),
    TPL_LOGOUT: ("Logout", sizeof(LogoutBlock), [
        _f("reason", &_lo, &_lo.reason, sizeof(_lo.reason), "uint16"),
    ]),
    TPL_SESSION_REJECT: ("SessionReject", sizeof(SessionRejectBlock), [
        _f("reason", &_sr, &_sr.reason, sizeof(_sr.reason), "uint16"),
        _f("refTemplateId", &_sr, &_sr.ref_template_id, sizeof(_sr.ref_template_id), "uint16"),
    ]),
    TPL_NEW_ORDER: ("NewOrder", sizeof(NewOrderBlock), [
        _f("clOrdId", &_no, &_no.cl_ord_id, sizeof(_no.cl_ord_id), "uint64"),
        _f("price", &_no, &_no.price, sizeof(_no.price), "int64"),
        _f("orderQty", &_no, &_no.order_qty, sizeof(_no.order_qty), "uint64"),
        _f("symbol", &_no, &_no.symbol, sizeof(_no.symbol), "char"),
        _f("side", &_no, &_no.side, sizeof(_no.side), "uint8"),
        _f("ordType", &_no, &_no.ord_type, sizeof(_no.ord_type), "uint8"),
        _f("timeInForce", &_no, &_no.time_in_force, sizeof(_no.time_in_force), "uint8"),
        _f("flags", &_no, &_no.flags, sizeof(_no.flags), "uint8"),
        _f("stpMode", &_no, &_no.stp_mode, sizeof(_no.stp_mode), "uint8"),
        _f("stopPx", &_no, &_no.stop_px, sizeof(_no.stop_px), "int64"),
        _f("displayQty", &_no, &_no.display_qty, sizeof(_no.display_qty), "uint64"),
    ]),
    TPL_CANCEL_ORDER: ("CancelOrder", sizeof(CancelOrderBlock), [
        _f("clOrdId", &_co, &_co.cl_ord_id, sizeof(_co.cl_ord_id), "uint64"),
        _f("origClOrdId", &_co, &_co.orig_cl_ord_id, sizeof(_co.orig_cl_ord_id), "uint64"),
        _f("symbol", &_co, &_co.symbol, sizeof(_co.symbol), "char"),
    ]),
    TPL_REPLACE_ORDER: ("ReplaceOrder", sizeof(ReplaceOrderBlock), [
        _f("clOrdId", &_ro, &_ro.cl_ord_id, sizeof(_ro.cl_ord_id), "uint64"),
        _f("origClOrdId", &_ro, &_ro.orig_cl_ord_id, sizeof(_ro.orig_cl_ord_id), "uint64"),
        _f("price", &_ro, &_ro.price, sizeof(_ro.price), "int64"),
        _f("orderQty", &_ro, &_ro.order_qty, sizeof(_ro.order_qty), "uint64"),
        _f("symbol", &_ro, &_ro.symbol, sizeof(_ro.symbol), "char"),
    ]),
    TPL_MASS_CANCEL: ("MassCancel", sizeof(MassCancelBlock), [
        _f("clOrdId", &_mc, &_mc.cl_ord_id, sizeof(_mc.cl_ord_id), "uint64"),
        _f("symbol", &_mc, &_mc.symbol, sizeof(_mc.symbol), "char"),
        _f("side", &_mc, &_mc.side, sizeof(_mc.side), "uint8"),
        _f("scope", &_mc, &_mc.scope, sizeof(_mc.scope), "uint8"),
    ]),
    TPL_BOOK_QUERY: ("BookQuery", sizeof(BookQueryBlock), [
        _f("requestId", &_bq, &_bq.request_id, sizeof(_bq.request_id), "uint64"),
        _f("symbol", &_bq, &_bq.symbol, sizeof(_bq.symbol), "char"),
        _f("depth", &_bq, &_bq.depth, sizeof(_bq.depth), "uint16"),
    ]),
    TPL_END_OF_SESSION: ("EndOfSession", sizeof(EndOfSessionBlock), [
        _f("clOrdId", &_eo, &_eo.cl_ord_id, sizeof(_eo.cl_ord_id), "uint64"),
        _f("symbol", &_eo, &_eo.symbol, sizeof(_eo.symbol), "char"),
    ]),
    TPL_ORDER_ACCEPTED: ("OrderAccepted", sizeof(OrderAcceptedBlock), [
        _f("seqNum", &_oa, &_oa.seq_num, sizeof(_oa.seq_num), "uint64"),
        _f("transactTime", &_oa, &_oa.transact_time, sizeof(_oa.transact_time), "uint64"),
        _f("clOrdId", &_oa, &_oa.cl_ord_id, sizeof(_oa.cl_ord_id), "uint64"),
        _f("orderId", &_oa, &_oa.order_id, sizeof(_oa.order_id), "uint64"),
        _f("price", &_oa, &_oa.price, sizeof(_oa.price), "int64"),
        _f("orderQty", &_oa, &_oa.order_qty, sizeof(_oa.order_qty), "uint64"),
        _f("leavesQty", &_oa, &_oa.leaves_qty, sizeof(_oa.leaves_qty), "uint64"),
        _f("symbol", &_oa, &_oa.symbol, sizeof(_oa.symbol), "char"),
        _f("side", &_oa, &_oa.side, sizeof(_oa.side), "uint8"),
        _f("ordType", &_oa, &_oa.ord_type, sizeof(_oa.ord_type), "uint8"),
        _f("timeInForce", &_oa, &_oa.time_in_force, sizeof(_oa.time_in_force), "uint8"),
    ]),
    TPL_ORDER_REJECTED: ("OrderRejected", sizeof(OrderRejectedBlock), [
        _f("seqNum", &_oj, &_oj.seq_num, sizeof(_oj.seq_num), "uint64"),
        _f("transactTime", &_oj, &_oj.transact_time, sizeof(_oj.transact_time), "uint64"),
        _f("clOrdId", &_oj, &_oj.cl_ord_id, sizeof(_oj.cl_ord_id), "uint64"),
        _f("symbol", &_oj, &_oj.symbol, sizeof(_oj.symbol), "char"),
        _f("reason", &_oj, &_oj.reason, sizeof(_oj.reason), "uint16"),
    ]),
    TPL_EXECUTION: ("Execution", sizeof(ExecutionBlock), [
        _f("seqNum", &_ex, &_ex.seq_num, sizeof(_ex.seq_num), "uint64"),
        _f("transactTime", &_ex, &_ex.transact_time, sizeof(_ex.transact_time), "uint64"),
        _f("clOrdId", &_ex, &_ex.cl_ord_id, sizeof(_ex.cl_ord_id), "uint64"),
        _f("orderId", &_ex, &_ex.order_id, sizeof(_ex.order_id), "uint64"),
        _f("tradeId", &_ex, &_ex.trade_id, sizeof(_ex.trade_id), "uint64"),
        _f("lastPx", &_ex, &_ex.last_px, sizeof(_ex.last_px), "int64"),
        _f("lastQty", &_ex, &_ex.last_qty, sizeof(_ex.last_qty), "uint64"),
        _f("leavesQty", &_ex, &_ex.leaves_qty, sizeof(_ex.leaves_qty), "uint64"),
        _f("symbol", &_ex, &_ex.symbol, sizeof(_ex.symbol), "char"),
        _f("side", &_ex, &_ex.side, sizeof(_ex.side), "uint8"),
        _f("liquidity", &_ex, &_ex.liquidity, sizeof(_ex.liquidity), "uint8"),
    ]),
    TPL_ORDER_CANCELED: ("OrderCanceled", sizeof(OrderCanceledBlock), [
        _f("seqNum", &_oc, &_oc.seq_num, sizeof(_oc.seq_num), "uint64"),
        _f("transactTime", &_oc, &_oc.transact_time, sizeof(_oc.transact_time), "uint64"),
        _f("clOrdId", &_oc, &_oc.cl_ord_id, sizeof(_oc.cl_ord_id), "uint64"),
        _f("origClOrdId", &_oc, &_oc.orig_cl_ord_id, sizeof(_oc.orig_cl_ord_id), "uint64"),
        _f("orderId", &_oc, &_oc.order_id, sizeof(_oc.order_id), "uint64"),
        _f("price", &_oc, &_oc.price, sizeof(_oc.price), "int64"),
        _f("canceledQty", &_oc, &_oc.canceled_qty, sizeof(_oc.canceled_qty), "uint64"),
        _f("symbol", &_oc, &_oc.symbol, sizeof(_oc.symbol), "char"),
        _f("side", &_oc, &_oc.side, sizeof(_oc.side), "uint8"),
        _f("reason", &_oc, &_oc.reason, sizeof(_oc.reason), "uint16"),
        _f("leavesQty", &_oc, &_oc.leaves_qty, sizeof(_oc.leaves_qty), "uint64"),
    ]),
    TPL_ORDER_REPLACED: ("OrderReplaced", sizeof(OrderReplacedBlock), [
        _f("seqNum", &_orp, &_orp.seq_num, sizeof(_orp.seq_num), "uint64"),
        _f("transactTime", &_orp, &_orp.transact_time, sizeof(_orp.transact_time), "uint64"),
        _f("clOrdId", &_orp, &_orp.cl_ord_id, sizeof(_orp.cl_ord_id), "uint64"),
        _f("origClOrdId", &_orp, &_orp.orig_cl_ord_id, sizeof(_orp.orig_cl_ord_id), "uint64"),
        _f("orderId", &_orp, &_orp.order_id, sizeof(_orp.order_id), "uint64"),
        _f("price", &_orp, &_orp.price, sizeof(_orp.price), "int64"),
        _f("orderQty", &_orp, &_orp.order_qty, sizeof(_orp.order_qty), "uint64"),
        _f("leavesQty", &_orp, &_orp.leaves_qty, sizeof(_orp.leaves_qty), "uint64"),
        _f("symbol", &_orp, &_orp.symbol, sizeof(_orp.symbol), "char"),
        _f("side", &_orp, &_orp.side, sizeof(_orp.side), "uint8"),
    ]),
    TPL_CANCEL_REJECTED: ("CancelRejected", sizeof(CancelRejectedBlock), [
        _f("seqNum", &_cr, &_cr.seq_num, sizeof(_cr.seq_num), "uint64"),
        _f("transactTime", &_cr, &_cr.transact_time, sizeof(_cr.transact_time), "uint64"),
        _f("clOrdId", &_cr, &_cr.cl_ord_id, sizeof(_cr.cl_ord_id), "uint64"),
        _f("origClOrdId", &_cr, &_cr.orig_cl_ord_id, sizeof(_cr.orig_cl_ord_id), "uint64"),
        _f("reason", &_cr, &_cr.reason, sizeof(_cr.reason), "uint16"),
    ]),
    TPL_MASS_CANCEL_DONE: ("MassCancelDone", sizeof(MassCancelDoneBlock), [
        _f("seqNum", &_md, &_md.seq_num, sizeof(_md.seq_num), "uint64"),
        _f("transactTime", &_md, &_md.transact_time, sizeof(_md.transact_time), "uint64"),
        _f("clOrdId", &_md, &_md.cl_ord_id, sizeof(_md.cl_ord_id), "uint64"),
        _f("canceledCount", &_md, &_md.canceled_count, sizeof(_md.canceled_count), "uint32"),
    ]),
    TPL_BOOK_SNAPSHOT: ("BookSnapshot", sizeof(BookSnapshotBlock), [
        _f("seqNum", &_bs, &_bs.seq_num, sizeof(_bs.seq_num), "uint64"),
        _f("transactTime", &_bs, &_bs.transact_time, sizeof(_bs.transact_time), "uint64"),
        _f("requestId", &_bs, &_bs.request_id, sizeof(_bs.request_id), "uint64"),
        _f("symbol", &_bs, &_bs.symbol, sizeof(_bs.symbol), "char"),
    ]),
    TPL_ORDER_TRIGGERED: ("OrderTriggered", sizeof(OrderTriggeredBlock), [
        _f("seqNum", &_ot, &_ot.seq_num, sizeof(_ot.seq_num), "uint64"),
        _f("transactTime", &_ot, &_ot.transact_time, sizeof(_ot.transact_time), "uint64"),
        _f("clOrdId", &_ot, &_ot.cl_ord_id, sizeof(_ot.cl_ord_id), "uint64"),
        _f("orderId", &_ot, &_ot.order_id, sizeof(_ot.order_id), "uint64"),
        _f("stopPx", &_ot, &_ot.stop_px, sizeof(_ot.stop_px), "int64"),
        _f("price", &_ot, &_ot.price, sizeof(_ot.price), "int64"),
        _f("orderQty", &_ot, &_ot.order_qty, sizeof(_ot.order_qty), "uint64"),
        _f("leavesQty", &_ot, &_ot.leaves_qty, sizeof(_ot.leaves_qty), "uint64"),
        _f("symbol", &_ot, &_ot.symbol, sizeof(_ot.symbol), "char"),
        _f("side", &_ot, &_ot.side, sizeof(_ot.side), "uint8"),
        _f("ordType", &_ot, &_ot.ord_type, sizeof(_ot.ord_type), "uint8"),
    ]),
    TPL_BBO: ("Bbo", sizeof(BboBlock), [
        _f("symbol", &_bbo, &_bbo.symbol, sizeof(_bbo.symbol), "char"),
        _f("transactTime", &_bbo, &_bbo.transact_time, sizeof(_bbo.transact_time), "uint64"),
        _f("bookSeq", &_bbo, &_bbo.book_seq, sizeof(_bbo.book_seq), "uint64"),
        _f("bidPrice", &_bbo, &_bbo.bid_price, sizeof(_bbo.bid_price), "int64"),
        _f("bidSize", &_bbo, &_bbo.bid_size, sizeof(_bbo.bid_size), "uint64"),
        _f("askPrice", &_bbo, &_bbo.ask_price, sizeof(_bbo.ask_price), "int64"),
        _f("askSize", &_bbo, &_bbo.ask_size, sizeof(_bbo.ask_size), "uint64"),
    ]),
    TPL_TRADE: ("Trade", sizeof(TradeBlock), [
        _f("symbol", &_tr, &_tr.symbol, sizeof(_tr.symbol), "char"),
        _f("transactTime", &_tr, &_tr.transact_time, sizeof(_tr.transact_time), "uint64"),
        _f("tradeId", &_tr, &_tr.trade_id, sizeof(_tr.trade_id), "uint64"),
        _f("price", &_tr, &_tr.price, sizeof(_tr.price), "int64"),
        _f("qty", &_tr, &_tr.qty, sizeof(_tr.qty), "uint64"),
        _f("aggressorSide", &_tr, &_tr.aggressor_side, sizeof(_tr.aggressor_side), "uint8"),
    ]),
    TPL_DEPTH_SNAPSHOT: ("DepthSnapshot", sizeof(DepthSnapshotBlock), [
        _f("symbol", &_ds, &_ds.symbol, sizeof(_ds.symbol), "char"),
        _f("transactTime", &_ds, &_ds.transact_time, sizeof(_ds.transact_time), "uint64"),
        _f("lastSeq", &_ds, &_ds.last_seq, sizeof(_ds.last_seq), "uint64"),
        _f("levels", &_ds, &_ds.levels, sizeof(_ds.levels), "uint16"),
    ]),
    TPL_DEPTH_UPDATE: ("DepthUpdate", sizeof(DepthUpdateBlock), [
        _f("symbol", &_du, &_du.symbol, sizeof(_du.symbol), "char"),
        _f("transactTime", &_du, &_du.transact_time, sizeof(_du.transact_time), "uint64"),
        _f("firstSeq", &_du, &_du.first_seq, sizeof(_du.first_seq), "uint64"),
        _f("lastSeq", &_du, &_du.last_seq, sizeof(_du.last_seq), "uint64"),
        _f("levels", &_du, &_du.levels, sizeof(_du.levels), "uint16"),
    ]),
    TPL_POSITION_QUERY: ("PositionQuery", sizeof(PositionQueryBlock), [
        _f("requestId", &_pq, &_pq.request_id, sizeof(_pq.request_id), "uint64"),
        _f("symbol", &_pq, &_pq.symbol, sizeof(_pq.symbol), "char"),
    ]),
    TPL_POSITION_REPORT: ("PositionReport", sizeof(PositionReportBlock), [
        _f("requestId", &_pr, &_pr.request_id, sizeof(_pr.request_id), "uint64"),
        _f("symbol", &_pr, &_pr.symbol, sizeof(_pr.symbol), "char"),
        _f("netPosition", &_pr, &_pr.net_position, sizeof(_pr.net_position), "int64"),
        _f("avgPrice", &_pr, &_pr.avg_price, sizeof(_pr.avg_price), "int64"),
        _f("realizedPnl", &_pr, &_pr.realized_pnl, sizeof(_pr.realized_pnl), "int64"),
        _f("openBuyQty", &_pr, &_pr.open_buy_qty, sizeof(_pr.open_buy_qty), "uint64"),
        _f("openSellQty", &_pr, &_pr.open_sell_qty, sizeof(_pr.open_sell_qty), "uint64"),
        _f("boughtQty", &_pr, &_pr.bought_qty, sizeof(_pr.bought_qty), "uint64"),
        _f("soldQty", &_pr, &_pr.sold_qty, sizeof(_pr.sold_qty), "uint64"),
        _f("reportIndex", &_pr, &_pr.report_index, sizeof(_pr.report_index), "uint16"),
        _f("reportCount", &_pr, &_pr.report_count, sizeof(_pr.report_count), "uint16"),
    ]),
}

_BOOK_LEVEL_FIELDS = [
    _f("price", &_bl, &_bl.price, sizeof(_bl.price), "int64"),
    _f("size", &_bl, &_bl.size, sizeof(_bl.size), "uint64"),
    _f("orderCount", &_bl, &_bl.order_count, sizeof(_bl.order_count), "uint32"),
]
#: template id -> [(group name, entry blockLength, [fields as in LAYOUT])], in schema order; every
#: group uses groupSizeEncoding {blockLength uint16, numInGroup uint16}.
_BOOK_SIDES = [("bids", sizeof(BookLevelEntry), _BOOK_LEVEL_FIELDS),
               ("asks", sizeof(BookLevelEntry), _BOOK_LEVEL_FIELDS)]
GROUPS = {
    TPL_BOOK_SNAPSHOT: _BOOK_SIDES,
    TPL_DEPTH_SNAPSHOT: _BOOK_SIDES,
    TPL_DEPTH_UPDATE: _BOOK_SIDES,
}
#: template id -> [(varData name, primitive type of its length)] (varStringEncoding), in order.
VAR_DATA = {TPL_LOGIN: [("token", "uint16")]}
#: schema version that added each template and each field appended to an older template (as
#: the XML's sinceVersion); everything not listed is from version 1.  A block as short as the
#: template's first version is accepted; fields it lacks decode as 0.
SINCE_VERSION = {
    "templates": {TPL_END_OF_SESSION: 2, TPL_ORDER_TRIGGERED: 2, TPL_BBO: 2, TPL_TRADE: 2,
                  TPL_DEPTH_SNAPSHOT: 2, TPL_DEPTH_UPDATE: 2, TPL_POSITION_QUERY: 2,
                  TPL_POSITION_REPORT: 2},
    "fields": {TPL_LOGIN: {"defaultStpMode": 2}, TPL_NEW_ORDER: {"stopPx": 2, "displayQty": 2},
               TPL_MASS_CANCEL: {"scope": 2}, TPL_ORDER_CANCELED: {"leavesQty": 2}},
}

_ORDER_TEMPLATES = (TPL_NEW_ORDER, TPL_CANCEL_ORDER, TPL_REPLACE_ORDER, TPL_MASS_CANCEL, TPL_BOOK_QUERY)

cdef TemplateInfo TEMPLATES[MAX_TEMPLATE_ID + 1]
cdef uint16_t SYMBOL_OFFSET[MAX_TEMPLATE_ID + 1]   # order templates: offset of `symbol` in the block


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check_fields(str where, list fields, Py_ssize_t block_length):
    # SBE blocks have no padding: the listed fields must tile the block exactly.
    cdef Py_ssize_t pos = 0
    for name, offset, size, _ in fields:
        if offset != pos:
            raise ImportError(f"{where}.{name} at offset {offset}, expected {pos}")
        pos += size
    if pos != block_length:
        raise ImportError(f"{where}: fields cover {pos} bytes of a {block_length}-byte block")


def _build_templates():
    memset(TEMPLATES, 0, sizeof(TEMPLATES))
    memset(SYMBOL_OFFSET, 0, sizeof(SYMBOL_OFFSET))
    for tid, (name, block_length, fields) in LAYOUT.items():
        _check_fields(name, fields, block_length)
        groups = GROUPS.get(tid, [])
        var_data = VAR_DATA.get(tid, [])
        for gname, entry_length, gfields in groups:
            _check_fields(f"{name}.{gname}", gfields, entry_length)
            if entry_length != groups[0][1]:
                raise ImportError(f"{name}: groups of different entry sizes are not supported")
        cls = MESSAGE_TYPES.get(tid)
        if cls is None or cls.__name__ != name:
            raise ImportError(f"template {tid} is {name} in the codec, {cls} in protocol.messages")
        expected = (tuple(_snake(f[0]) for f in fields) + tuple(g[0] for g in groups)
                    + tuple(v[0] for v in var_data))
        if cls.__struct_fields__ != expected:
            raise ImportError(f"{name} fields {cls.__struct_fields__} != codec {expected}")
        TEMPLATES[tid].known = 1
        TEMPLATES[tid].block_length = block_length
        later = SINCE_VERSION["fields"].get(tid, {})
        TEMPLATES[tid].min_block_length = min([f[1] for f in fields if f[0] in later] + [block_length])
        if any(f[0] in later for f in fields if f[1] < TEMPLATES[tid].min_block_length):
            raise ImportError(f"{name}: a field of a later version before an older one")
        TEMPLATES[tid].is_order = tid in _ORDER_TEMPLATES
        TEMPLATES[tid].n_groups = len(groups)
        TEMPLATES[tid].entry_length = groups[0][1] if groups else 0
        TEMPLATES[tid].n_var_data = len(var_data)
        if tid in _ORDER_TEMPLATES:
            SYMBOL_OFFSET[tid] = [f[1] for f in fields if f[0] == "symbol"][0]
    # scan_responses reads seqNum and clOrdId through OrderAcceptedBlock for every S->C template
    for tid in range(TPL_ORDER_ACCEPTED, TPL_ORDER_TRIGGERED + 1):
        fields = LAYOUT[tid][2]
        if fields[0][:2] != ("seqNum", 0) or (tid != TPL_BOOK_SNAPSHOT and fields[2][:2] != ("clOrdId", 16)):
            raise ImportError(f"{LAYOUT[tid][0]} does not start with seqNum, transactTime, clOrdId")


_build_templates()


def is_order_template(int template_id) -> bool:
    """True for the order-entry templates ``decode_orders`` writes into the ring (10-14)."""
    return 0 <= template_id <= MAX_TEMPLATE_ID and TEMPLATES[template_id].is_order == 1


# -- framing --------------------------------------------------------------------------------------
cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef int frame_at(const uint8_t *p, Py_ssize_t avail, bint sofh, FrameInfo *fi) noexcept nogil:
    """Inspect the frame (sofh) or bare SBE message at p, with avail bytes readable.

    Returns DEC_FRAME_OK with *fi filled, DEC_NEED_MORE, DEC_MALFORMED or DEC_UNKNOWN_TEMPLATE.
    With SOFH the whole frame is awaited before its content is judged (its length is known);
    without, each part is judged as soon as it has arrived.
    """
    cdef Py_ssize_t frame_len = 0, limit, need
    cdef const uint8_t *m = p
    cdef int short_status = DEC_NEED_MORE     # what running past `limit` means
    cdef const SbeHeader *h
    cdef const TemplateInfo *t
    cdef const GroupSize *g
    cdef int i
    if sofh:
        if avail < 4:
            return DEC_NEED_MORE
        frame_len = (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]
        if frame_len < MIN_FRAME or frame_len > MAX_FRAME:
            return DEC_MALFORMED
        if avail < SOFH_SIZE:
            return DEC_NEED_MORE
        if ((<uint16_t>p[4] << 8) | p[5]) != SOFH_ENCODING_SBE_LE:
            return DEC_MALFORMED
        if avail < frame_len:
            return DEC_NEED_MORE
        m = p + SOFH_SIZE
        limit = frame_len - SOFH_SIZE
        short_status = DEC_MALFORMED
    else:
        limit = avail
        if limit < SBE_HEADER_SIZE:
            return DEC_NEED_MORE
    h = <const SbeHeader *>m
    if h.schema_id != SBE_SCHEMA_ID:
        return DEC_MALFORMED
    if h.template_id > MAX_TEMPLATE_ID or not TEMPLATES[h.template_id].known:
        return DEC_UNKNOWN_TEMPLATE
    t = &TEMPLATES[h.template_id]
    if h.block_length < t.min_block_length:
        return DEC_MALFORMED
    need = SBE_HEADER_SIZE + h.block_length
    for i in range(t.n_groups):
        if need + GROUP_SIZE_SIZE > limit:
            return short_status
        g = <const GroupSize *>(m + need)
        if g.block_length < t.entry_length:
            return DEC_MALFORMED
        need += GROUP_SIZE_SIZE + <Py_ssize_t>g.block_length * g.num_in_group
    for i in range(t.n_var_data):
        if need + VAR_LENGTH_SIZE > limit:
            return short_status
        need += VAR_LENGTH_SIZE + _u16(m + need)
    if need > limit:
        return short_status
    fi.template_id = h.template_id
    fi.block_length = h.block_length
    fi.msg_len = need
    if sofh:
        fi.msg_offset = SOFH_SIZE
        fi.frame_len = frame_len
    else:
        fi.msg_offset = 0
        fi.frame_len = need
    return DEC_FRAME_OK


cdef inline int _reason(int status) noexcept:
    return REJ_UNKNOWN_TEMPLATE if status == DEC_UNKNOWN_TEMPLATE else REJ_MALFORMED


# -- symbols --------------------------------------------------------------------------------------
def _symbol_wire(name) -> bytes:
    """The 8 NUL-padded wire bytes of a symbol name.  Raises TypeError (not a str), ValueError
    (not ASCII, > 8 bytes)."""
    if not isinstance(name, str):
        raise TypeError(f"symbol must be a str, not {type(name).__name__}")
    raw = name.encode("ascii")
    if len(raw) > 8:
        raise ValueError(f"symbol {name!r} is longer than 8 bytes")
    return raw.ljust(8, b"\0")


cdef class SymbolTable:
    """Symbol name <-> uint32 symbol id (the index in ``names``), for the order path.

    names: distinct ASCII names of 1 to 8 characters, without NUL and not ending in a space
    (on the wire they are NUL- or space-padded to 8 bytes).  Raises ValueError otherwise.
    ``add`` appends a symbol at run time (the next id).  Lookups of the raw 8 wire bytes run in
    C (open addressing) without the GIL.
    """

    def __cinit__(self, names):
        names = list(names)
        self._names = []
        self.count = 0
        self._alloc(16, 16)
        for name in names:
            self.add(name)

    cdef int _alloc(self, uint64_t cap, uint32_t id_cap) except -1:
        # (Re)build the hash with ``cap`` slots (power of two) and room for ``id_cap`` ids.
        cdef uint64_t *keys = <uint64_t *>calloc(cap, sizeof(uint64_t))
        cdef uint32_t *ids = <uint32_t *>calloc(cap, sizeof(uint32_t))
        cdef uint64_t *by_id = <uint64_t *>calloc(id_cap + 1, sizeof(uint64_t))
        cdef uint32_t i
        if keys == NULL or ids == NULL or by_id == NULL:
            free(keys)
            free(ids)
            free(by_id)
            raise MemoryError()
        if self.keys_by_id != NULL:
            memcpy(by_id, self.keys_by_id, self.count * sizeof(uint64_t))
        free(self.slot_keys)
        free(self.slot_ids)
        free(self.keys_by_id)
        self.slot_keys = keys
        self.slot_ids = ids
        self.keys_by_id = by_id
        self.id_cap = id_cap
        self.mask = cap - 1
        self.shift = 64
        while (<uint64_t>1 << (64 - self.shift)) < cap:
            self.shift -= 1
        for i in range(self.count):
            self._insert(self.keys_by_id[i], i)
        return 0

    def add(self, name) -> int:
        """Give ``name`` the next symbol id and return it.  Raises ValueError for a bad or
        duplicate name, MemoryError."""
        cdef uint64_t k
        cdef bytes raw
        if not isinstance(name, str) or not name or "\0" in name or name.endswith(" "):
            raise ValueError(f"bad symbol name {name!r}")
        raw = _symbol_wire(name)
        k = symbol_key(raw)
        if self.lookup_key(k) != UNKNOWN_SYMBOL_ID:
            raise ValueError(f"duplicate symbol {name!r}")
        if 2 * (<uint64_t>self.count + 1) > self.mask + 1 or self.count + 1 > self.id_cap:
            self._alloc(2 * (self.mask + 1), 2 * self.id_cap)
        self._insert(k, self.count)
        self.keys_by_id[self.count] = k
        self._names.append(name)
        self.count += 1
        return self.count - 1

    cdef void _insert(self, uint64_t k, uint32_t symbol_id) noexcept:
        cdef uint64_t i = (k * <uint64_t>0x9E3779B97F4A7C15) >> self.shift
        while self.slot_keys[i] != 0:
            i = (i + 1) & self.mask
        self.slot_keys[i] = k
        self.slot_ids[i] = symbol_id

    def __dealloc__(self):
        free(self.slot_keys)
        free(self.slot_ids)
        free(self.keys_by_id)

    def __len__(self):
        return self.count

    @property
    def names(self) -> list:
        return list(self._names)

    def lookup(self, symbol) -> int:
        """Symbol id of a name (str) or of wire bytes (at most 8, NUL or space padded);
        UNKNOWN_SYMBOL (0xFFFFFFFF) when absent."""
        cdef bytes raw
        if isinstance(symbol, str):
            try:
                raw = _symbol_wire(symbol)
            except ValueError:
                return <uint32_t>UNKNOWN_SYMBOL_ID
        else:
            raw = bytes(symbol)
            if len(raw) > 8:
                return <uint32_t>UNKNOWN_SYMBOL_ID
            raw = raw.ljust(8, b"\0")
        return self.lookup_raw(raw)

    def name(self, uint32_t symbol_id) -> str:
        """The name of a symbol id.  Raises IndexError for an id outside the table."""
        if symbol_id >= self.count:
            raise IndexError(symbol_id)
        return self._names[symbol_id]


# -- Python-level encode / decode ------------------------------------------------------------------
_HEADER = struct.Struct("<HHHH")
_GROUP_SIZE = struct.Struct("<HH")
_VAR_LENGTH = struct.Struct("<H")
_SOFH = struct.Struct(">IH")
_FORMAT = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q", "int64": "q"}


def _block_struct(fields) -> struct.Struct:
    return struct.Struct("<" + "".join(f"{size}s" if prim == "char" else _FORMAT[prim]
                                       for _, _, size, prim in fields))


class _Template:
    __slots__ = ("tid", "cls", "block_length", "block", "n_fields", "symbols", "groups", "n_var")

    def __init__(self, tid: int) -> None:
        name, block_length, fields = LAYOUT[tid]
        self.tid = tid
        self.cls = MESSAGE_TYPES[tid]
        self.block_length = block_length
        self.block = _block_struct(fields)
        self.n_fields = len(fields)
        self.symbols = tuple(i for i, f in enumerate(fields) if f[3] == "char")
        self.groups = [(_block_struct(gf), entry_length) for _, entry_length, gf in GROUPS.get(tid, [])]
        self.n_var = len(VAR_DATA.get(tid, []))


_BY_TID = {tid: _Template(tid) for tid in LAYOUT}
_BY_CLASS = {t.cls: t for t in _BY_TID.values()}
_astuple = msgspec.structs.astuple


def encode(msg, bint sofh=True) -> bytes:
    """Encode one message (a ``protocol.messages`` struct) as SBE, with the SOFH prefix when
    ``sofh``.  Symbols are NUL-padded.

    Raises TypeError for an object that is not a message or a symbol that is not a str, ValueError
    for a value that does not fit its field (negative or too large integer, symbol not ASCII or
    longer than 8 bytes, token not ASCII or longer than 65535 bytes, more than 65535 group
    entries, frame over 65535 bytes).
    """
    t = _BY_CLASS.get(type(msg))
    if t is None:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    values = _astuple(msg)
    block = list(values[:t.n_fields])
    cdef Py_ssize_t k = t.n_fields
    try:
        for i in t.symbols:
            block[i] = _symbol_wire(block[i])
        parts = [_HEADER.pack(t.block_length, t.tid, SBE_SCHEMA_ID, SBE_SCHEMA_VERSION), t.block.pack(*block)]
        for entry, entry_length in t.groups:
            entries = values[k]
            k += 1
            parts.append(_GROUP_SIZE.pack(entry_length, len(entries)))
            for e in entries:
                parts.append(entry.pack(*(e if isinstance(e, tuple) else _astuple(e))))
        for _ in range(t.n_var):
            data = values[k].encode("ascii")
            k += 1
            parts.append(_VAR_LENGTH.pack(len(data)))
            parts.append(data)
    except struct.error as exc:
        raise ValueError(f"{type(msg).__name__}: {exc}") from None
    body = b"".join(parts)
    if not sofh:
        return body
    if len(body) + SOFH_SIZE > MAX_FRAME:
        raise ValueError(f"{type(msg).__name__}: frame of {len(body) + SOFH_SIZE} bytes exceeds {MAX_FRAME}")
    return _SOFH.pack(len(body) + SOFH_SIZE, SOFH_ENCODING_SBE_LE) + body


cdef object _decode_at(object buf, Py_ssize_t off, FrameInfo *fi):
    # off: start of a message frame_at() has validated, so every read below is in bounds
    t = _BY_TID[fi.template_id]
    if fi.block_length >= t.block_length:
        values = list(t.block.unpack_from(buf, off + SBE_HEADER_SIZE))
    else:                      # an older version's block: the fields it lacks are 0
        raw = bytes(buf[off + SBE_HEADER_SIZE:off + SBE_HEADER_SIZE + fi.block_length])
        values = list(t.block.unpack(raw + bytes(t.block_length - fi.block_length)))
    for i in t.symbols:
        values[i] = values[i].rstrip(b"\0 ").decode("latin-1")
    cdef Py_ssize_t pos = off + SBE_HEADER_SIZE + fi.block_length, j
    cdef Py_ssize_t entry_length, num
    for entry, _ in t.groups:
        entry_length, num = _GROUP_SIZE.unpack_from(buf, pos)
        pos += GROUP_SIZE_SIZE
        # BookLevel is the entry type of every repeating group of v1 (bids/asks of BookSnapshot,
        # DepthSnapshot, DepthUpdate)
        values.append([BookLevel(*entry.unpack_from(buf, pos + j * entry_length)) for j in range(num)])
        pos += entry_length * num
    for _ in range(t.n_var):
        num = _VAR_LENGTH.unpack_from(buf, pos)[0]
        pos += VAR_LENGTH_SIZE
        values.append(bytes(buf[pos:pos + num]).decode("latin-1"))
        pos += num
    return t.cls(*values)


def decode_message(buf):
    """Decode one SBE message (no SOFH) at the start of a bytes-like object; bytes after it are
    ignored.  Symbols come back without padding; symbol and token bytes map 1:1 to characters.

    Raises ProtocolError(REJ_MALFORMED, 0) for a truncated or malformed message, a wrong schema id
    or a blockLength shorter than the template's; ProtocolError(REJ_UNKNOWN_TEMPLATE, 0) for a
    template this schema does not have.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        st = frame_at(<const uint8_t *>view.buf, view.len, False, &fi)
        if st == DEC_NEED_MORE:
            st = DEC_MALFORMED
        if st != DEC_FRAME_OK:
            raise ProtocolError(_reason(st), 0)
        return _decode_at(buf, 0, &fi)
    finally:
        PyBuffer_Release(&view)


def decode_frames(buf, Py_ssize_t start=0, bint sofh=True):
    """Decode every complete frame (sofh) or SBE message (not sofh) from ``start``.

    Returns (messages, offset after the last complete one); a partial tail is left for the next
    read.  Raises ProtocolError(reason, offset of the bad frame) for a bad encoding type, a frame
    length < 14 or > 65535, a wrong schema id, a blockLength shorter than the template's
    (REJ_MALFORMED), or an unknown template (REJ_UNKNOWN_TEMPLATE); the messages decoded before it
    are in the exception's ``messages``.  Raises ValueError for a start outside the buffer.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start
    msgs = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or start > view.len:
            raise ValueError(f"start {start} outside a buffer of {view.len} bytes")
        while True:
            st = frame_at(<const uint8_t *>view.buf + off, view.len - off, sofh, &fi)
            if st == DEC_NEED_MORE:
                break
            if st != DEC_FRAME_OK:
                raise ProtocolError(_reason(st), off, msgs)
            msgs.append(_decode_at(buf, off + fi.msg_offset, &fi))
            off += fi.frame_len
    finally:
        PyBuffer_Release(&view)
    return msgs, off


def decode_next(buf, Py_ssize_t start=0, bint sofh=True):
    """Decode the one frame (sofh) or SBE message at ``start``.

    Returns (message, offset after it), or (None, start) when it is not complete yet.  Raises
    ProtocolError / ValueError as ``decode_frames``.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or start > view.len:
            raise ValueError(f"start {start} outside a buffer of {view.len} bytes")
        st = frame_at(<const uint8_t *>view.buf + start, view.len - start, sofh, &fi)
        if st == DEC_NEED_MORE:
            return None, start
        if st != DEC_FRAME_OK:
            raise ProtocolError(_reason(st), start)
        return _decode_at(buf, start + fi.msg_offset, &fi), start + fi.frame_len
    finally:
        PyBuffer_Release(&view)


def message_length(buf, Py_ssize_t pos=0) -> int:
    """Length in bytes of the unframed SBE message at ``pos`` (header + block + groups +
    varData), or 0 when the buffer does not hold all of it yet.  Raises ProtocolError as
    ``decode_frames``, ValueError for a pos outside the buffer."""
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if pos < 0 or pos > view.len:
            raise ValueError(f"pos {pos} outside a buffer of {view.len} bytes")
        st = frame_at(<const uint8_t *>view.buf + pos, view.len - pos, False, &fi)
        if st == DEC_NEED_MORE:
            return 0
        if st != DEC_FRAME_OK:
            raise ProtocolError(_reason(st), pos)
        return fi.msg_len
    finally:
        PyBuffer_Release(&view)


# -- hot path: order-entry messages straight into the inbound ring ---------------------------------
cdef inline void _to_command(Command *c, const char *m, uint16_t tid, uint32_t session_id,
                             uint32_t symbol_id, bint blank_symbol, uint64_t recv_ts,
                             uint32_t account_id, uint8_t stp_default) noexcept nogil:
    # every field is written: ring slots are reused
    cdef const NewOrderBlock *no
    cdef const CancelOrderBlock *co
    cdef const ReplaceOrderBlock *ro
    cdef const MassCancelBlock *mc
    cdef const BookQueryBlock *bq
    c.seq = 0
    c.ts = recv_ts
    c.session_id = session_id
    c.symbol_id = symbol_id
    c.side = 0
    c.ord_type = 0
    c.tif = 0
    c.flags = 0
    c.stp = 0
    c.depth = 0
    c.orig_cl_ord_id = 0
    c.price = 0
    c.qty = 0
    c.stop_price = 0
    c.display_qty = 0
    c.account_id = account_id
    c.scope = 0
    c.pad0 = 0
    c.pad1 = 0
    c.reserved = 0
    if tid == TPL_NEW_ORDER:
        no = <const NewOrderBlock *>m
        c.type = CMD_NEW
        c.side = no.side
        c.ord_type = no.ord_type
        c.tif = no.time_in_force
        c.flags = no.flags
        c.stp = no.stp_mode if no.stp_mode != 0 else stp_default
        c.cl_ord_id = no.cl_ord_id
        c.price = no.price
        c.qty = no.order_qty
        c.stop_price = no.stop_px
        c.display_qty = no.display_qty
    elif tid == TPL_CANCEL_ORDER:
        co = <const CancelOrderBlock *>m
        c.type = CMD_CANCEL
        c.cl_ord_id = co.cl_ord_id
        c.orig_cl_ord_id = co.orig_cl_ord_id
    elif tid == TPL_REPLACE_ORDER:
        ro = <const ReplaceOrderBlock *>m
        c.type = CMD_REPLACE
        c.cl_ord_id = ro.cl_ord_id
        c.orig_cl_ord_id = ro.orig_cl_ord_id
        c.price = ro.price
        c.qty = ro.order_qty
    elif tid == TPL_MASS_CANCEL:
        mc = <const MassCancelBlock *>m
        c.type = CMD_MASS_CANCEL
        c.cl_ord_id = mc.cl_ord_id
        c.side = mc.side
        c.scope = mc.scope
        c.depth = 1 if blank_symbol else 0   # records.pxd: UNKNOWN_SYMBOL_ID + depth 1 = all symbols
    else:  # TPL_BOOK_QUERY
        bq = <const BookQueryBlock *>m
        c.type = CMD_BOOK_QUERY
        c.cl_ord_id = bq.request_id
        c.orig_cl_ord_id = bq.request_id
        c.depth = bq.depth


def decode_orders(buffer, Py_ssize_t start, Py_ssize_t end, SpscRing ring not None,
                  uint32_t session_id, SymbolTable symbols not None, uint64_t recv_ts, bint sofh=True,
                  uint32_t account_id=0, uint8_t stp_default=0):
    """Decode complete order-entry frames of ``buffer[start:end]`` into 96-byte Command records
    (matching/records.pxd) written straight into ``ring`` and published once at the end.

    NewOrder -> CMD_NEW, CancelOrder -> CMD_CANCEL, ReplaceOrder -> CMD_REPLACE, MassCancel ->
    CMD_MASS_CANCEL (an all-blank symbol -> symbol_id UNKNOWN_SYMBOL and depth 1; scope), BookQuery ->
    CMD_BOOK_QUERY (request id in orig_cl_ord_id and cl_ord_id).  symbol_id comes from
    ``symbols`` (UNKNOWN_SYMBOL when absent), ts = recv_ts (ns), seq = 0 (the sequencer stamps
    it), account_id = ``account_id`` (the session's account); a NewOrder with stpMode 0 gets
    ``stp_default`` (the session's default StpMode: the order's own value wins when set).
    Business fields are not validated here (the matching core does that).

    Returns (offset, commands written, status): status NEED_MORE (no complete frame left),
    SESSION_MESSAGE (offset is at a complete frame of another valid template, for the caller to
    handle before calling again), RING_FULL, MALFORMED or UNKNOWN_TEMPLATE (offset at the bad
    frame).  sofh=False: the buffer holds SBE messages back to back (a WebSocket message).
    Raises ValueError for a start/end outside the buffer or a ring whose slots are not Command
    records.
    The inner loop runs without the GIL.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start
    cdef uint64_t n = 0, free_n, wpos, key
    cdef const uint8_t *base
    cdef const char *m
    cdef char short_block[64]   # an older version's shorter block, zero-extended
    cdef uint16_t tid
    if ring.slot_size != sizeof(Command):
        raise ValueError(f"ring slots are {ring.slot_size} bytes, Command records {sizeof(Command)}")
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or end < start or end > view.len:
            raise ValueError(f"[{start}, {end}) outside a buffer of {view.len} bytes")
        base = <const uint8_t *>view.buf
        with nogil:
            wpos = ring.write_pos()
            free_n = ring.free_slots()
            while True:
                st = frame_at(base + off, end - off, sofh, &fi)
                if st != DEC_FRAME_OK:
                    break
                tid = fi.template_id
                if not TEMPLATES[tid].is_order:
                    st = DEC_SESSION_MESSAGE
                    break
                if n == free_n:
                    free_n = ring.free_slots()   # the consumer may have freed slots meanwhile
                    if n == free_n:
                        st = DEC_RING_FULL
                        break
                m = <const char *>(base + off + fi.msg_offset + SBE_HEADER_SIZE)
                if fi.block_length < TEMPLATES[tid].block_length:
                    memset(short_block, 0, sizeof(short_block))
                    memcpy(short_block, m, fi.block_length)
                    m = short_block
                key = symbol_key(m + SYMBOL_OFFSET[tid])
                _to_command(<Command *>ring.slot(wpos + n), m, tid, session_id,
                            symbols.lookup_key(key), key == 0, recv_ts, account_id, stp_default)
                n += 1
                off += fi.frame_len
            if n:
                ring.publish(n)
    finally:
        PyBuffer_Release(&view)
    return off, n, st


# -- client side: batch scan of server responses ---------------------------------------------------
def scan_responses(buf, Py_ssize_t start=0):
    """Scan every complete SOFH frame from ``start`` without building message objects (for load
    generators).

    Returns (array('Q') of (templateId, seqNum or 0, clOrdId or 0) triples, offset after the last
    complete frame).  seqNum is set for templates 20-28, clOrdId for 20-26 and 28.  Raises ProtocolError
    as ``decode_frames``.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start, k = 0
    cdef const uint8_t *m
    cdef const OrderAcceptedBlock *b
    cdef uint64_t *out
    cdef carray.array result = array("Q")
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or start > view.len:
            raise ValueError(f"start {start} outside a buffer of {view.len} bytes")
        carray.resize(result, 3 * 64)
        while True:
            st = frame_at(<const uint8_t *>view.buf + off, view.len - off, True, &fi)
            if st == DEC_NEED_MORE:
                break
            if st != DEC_FRAME_OK:
                raise ProtocolError(_reason(st), off)
            if k + 3 > len(result):
                carray.resize(result, 2 * len(result))
            out = <uint64_t *>result.data.as_ulonglongs
            m = <const uint8_t *>view.buf + off + fi.msg_offset + SBE_HEADER_SIZE
            b = <const OrderAcceptedBlock *>m
            out[k] = fi.template_id
            out[k + 1] = b.seq_num if TPL_ORDER_ACCEPTED <= fi.template_id <= TPL_ORDER_TRIGGERED else 0
            out[k + 2] = (b.cl_ord_id if TPL_ORDER_ACCEPTED <= fi.template_id <= TPL_MASS_CANCEL_DONE
                          or fi.template_id == TPL_ORDER_TRIGGERED else 0)
            k += 3
            off += fi.frame_len
    finally:
        PyBuffer_Release(&view)
    carray.resize(result, k)
    return result, off


# -- SOFH framing of stored messages (persistence/message_store.py, WebSocket delivery) ------------
cdef Py_ssize_t _sofh_len(const uint8_t *p, Py_ssize_t avail) noexcept nogil:
    # length of the SOFH frame at p (its 6 header bytes included), or -1 if it is not one that
    # fits in avail bytes
    cdef Py_ssize_t n
    if avail < SOFH_SIZE:
        return -1
    n = (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]
    if n < MIN_FRAME or n > avail or ((<uint16_t>p[4] << 8) | p[5]) != SOFH_ENCODING_SBE_LE:
        return -1
    return n


def strip_sofh(data) -> bytes:
    """The SBE messages of ``data`` (whole SOFH frames back to back) without their 6-byte SOFH
    headers, back to back (the WebSocket framing).  One pass.  Raises ValueError naming the
    offset of a bad or truncated frame."""
    cdef Py_buffer view
    cdef Py_ssize_t off = 0, n, k = 0
    cdef const uint8_t *p
    cdef char *dst
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        dst = PyBytes_AS_STRING(out)
        p = <const uint8_t *>view.buf
        while off < view.len:
            n = _sofh_len(p + off, view.len - off)
            if n < 0:
                raise ValueError(f"bad SOFH frame at byte offset {off} of {view.len}")
            memcpy(dst + k, p + off + SOFH_SIZE, n - SOFH_SIZE)
            k += n - SOFH_SIZE
            off += n
    finally:
        PyBuffer_Release(&view)
    return out[:k] if k != view.len else out


def sofh_scan(data, Py_ssize_t skip=0) -> tuple:
    """Walk the SOFH frames of ``data`` (whole frames back to back): returns (number of frames,
    byte offset just after the first ``skip`` frames; len(data) when skip >= the count).
    Raises ValueError naming the offset of a bad or truncated frame."""
    cdef Py_buffer view
    cdef Py_ssize_t off = 0, n, count = 0, after = -1
    cdef const uint8_t *p
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        while off < view.len:
            if count == skip:
                after = off
            n = _sofh_len(p + off, view.len - off)
            if n < 0:
                raise ValueError(f"bad SOFH frame at byte offset {off} of {view.len}")
            off += n
            count += 1
    finally:
        PyBuffer_Release(&view)
    return count, (after if after >= 0 else off)
