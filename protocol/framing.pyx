# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The layout tables of the hftgw wire protocol, built from the packed structs of codec.pxd.

``LAYOUT``, ``GROUPS``, ``VAR_DATA`` and ``SINCE_VERSION`` describe every template of
protocol/schema/hftgw-v1.xml (tests/protocol/test_schema.py compares them with the XML); at import they are
checked against ``protocol.messages`` and compiled into the per-template C table that
``frame_at`` (framing.pxd) reads.  Raises ImportError when the structs, the tables and the
message classes disagree.
"""
import re

from libc.string cimport memset

from protocol.codec cimport (
    MAX_TEMPLATE_ID,
    TPL_BBO,
    TPL_BOOK_QUERY,
    TPL_BOOK_SNAPSHOT,
    TPL_CANCEL_ORDER,
    TPL_CANCEL_REJECTED,
    TPL_DEPTH_SNAPSHOT,
    TPL_DEPTH_UPDATE,
    TPL_END_OF_SESSION,
    TPL_EXECUTION,
    TPL_HEARTBEAT,
    TPL_LOGIN,
    TPL_LOGIN_ACCEPTED,
    TPL_LOGIN_REJECTED,
    TPL_LOGOUT,
    TPL_MASS_CANCEL,
    TPL_MASS_CANCEL_DONE,
    TPL_NEW_ORDER,
    TPL_ORDER_ACCEPTED,
    TPL_ORDER_CANCELED,
    TPL_ORDER_REJECTED,
    TPL_ORDER_REPLACED,
    TPL_ORDER_TRIGGERED,
    TPL_POSITION_QUERY,
    TPL_POSITION_REPORT,
    TPL_REPLACE_ORDER,
    TPL_SESSION_REJECT,
    TPL_TRADE,
    BboBlock,
    BookLevelEntry,
    BookQueryBlock,
    BookSnapshotBlock,
    CancelOrderBlock,
    CancelRejectedBlock,
    DepthSnapshotBlock,
    DepthUpdateBlock,
    EndOfSessionBlock,
    ExecutionBlock,
    LoginAcceptedBlock,
    LoginBlock,
    LoginRejectedBlock,
    LogoutBlock,
    MassCancelBlock,
    MassCancelDoneBlock,
    NewOrderBlock,
    OrderAcceptedBlock,
    OrderCanceledBlock,
    OrderRejectedBlock,
    OrderReplacedBlock,
    OrderTriggeredBlock,
    PositionQueryBlock,
    PositionReportBlock,
    ReplaceOrderBlock,
    SessionRejectBlock,
    TradeBlock,
)

from protocol.messages import MESSAGE_TYPES

__all__ = ["LAYOUT", "GROUPS", "VAR_DATA", "SINCE_VERSION", "is_order_template"]


# -- layout tables, built from the packed structs of codec.pxd ------------------------------------
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
        _f("heartbeatIntervalMs", &_lg, &_lg.heartbeat_interval_ms,
           sizeof(_lg.heartbeat_interval_ms), "uint32"),
        _f("nextExpectedSeqNum", &_lg, &_lg.next_expected_seq_num,
           sizeof(_lg.next_expected_seq_num), "uint64"),
        _f("cancelOnDisconnect", &_lg, &_lg.cancel_on_disconnect, sizeof(_lg.cancel_on_disconnect), "uint8"),
        _f("defaultStpMode", &_lg, &_lg.default_stp_mode, sizeof(_lg.default_stp_mode), "uint8"),
    ]),
    TPL_LOGIN_ACCEPTED: ("LoginAccepted", sizeof(LoginAcceptedBlock), [
        _f("sessionId", &_la, &_la.session_id, sizeof(_la.session_id), "uint32"),
        _f("nextSeqNum", &_la, &_la.next_seq_num, sizeof(_la.next_seq_num), "uint64"),
        _f("heartbeatIntervalMs", &_la, &_la.heartbeat_interval_ms,
           sizeof(_la.heartbeat_interval_ms), "uint32"),
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
            TEMPLATES[tid].symbol_offset = [f[1] for f in fields if f[0] == "symbol"][0]
    # scan_responses reads seqNum and clOrdId through OrderAcceptedBlock for every S->C template
    for tid in range(TPL_ORDER_ACCEPTED, TPL_ORDER_TRIGGERED + 1):
        fields = LAYOUT[tid][2]
        if fields[0][:2] != ("seqNum", 0) or (tid != TPL_BOOK_SNAPSHOT and fields[2][:2] != ("clOrdId", 16)):
            raise ImportError(f"{LAYOUT[tid][0]} does not start with seqNum, transactTime, clOrdId")


_build_templates()


def is_order_template(int template_id) -> bool:
    """True for the order-entry templates ``decode_orders`` writes into the ring (10-14)."""
    return 0 <= template_id <= MAX_TEMPLATE_ID and TEMPLATES[template_id].is_order == 1


cdef const TemplateInfo *template_table() noexcept nogil:
    return TEMPLATES
