"""Messages of the hftgw protocol (schema version 2: session layer, order entry, market data),
one ``msgspec.Struct`` per SBE template.

The wire format is ``protocol/schema/hftgw-v1.xml`` (FIX Simple Binary Encoding 1.0); encode and
decode them with ``protocol.codec``.  Field order is the order of the fields in the SBE block
(the codec checks this at import); names are the schema's camelCase names in snake_case.

Units: prices are int64 in 1e-4 currency units (a multiple of the symbol's tick), quantities are
uint64 lots, times are uint64 ns since the Unix epoch, symbols are ASCII ``str`` of at most 8
characters.  Enum-typed fields are plain ints carrying the values of ``matching.records`` (Side,
OrdType, TimeInForce, StpMode, MassCancelScope, RejectReason, CancelReason, LoginRejectReason,
Liquidity), so that a value outside the enum still decodes and is refused by the layer that owns
the rule.  Fields added in version 2 have defaults (0), which is also what a version-1 message
without them decodes to.
"""
from __future__ import annotations

from typing import ClassVar

import msgspec


class ProtocolError(Exception):
    """A frame or message that cannot be decoded.

    reason: a ``RejectReason`` value (REJ_MALFORMED, or REJ_UNKNOWN_TEMPLATE for a template id
    this schema does not have); offset: where the bad frame starts in the buffer that was given;
    messages: the messages decoded before it by the same call (so a caller can still act on them).
    """

    def __init__(self, reason: int, offset: int, messages: list[Message] | None = None) -> None:
        super().__init__(f"protocol error, reason {int(reason)} at offset {offset}")
        self.reason = int(reason)
        self.offset = offset
        self.messages: list[Message] = messages if messages is not None else []


# -- session layer (unsequenced) ------------------------------------------------------------------
class Login(msgspec.Struct):
    """C->S, template 1.  token: the JWT (ASCII); cancel_on_disconnect: 0/1 (SBE BooleanType);
    default_stp_mode: StpMode applied to this session's NewOrders sent with stp_mode 0."""

    TEMPLATE_ID: ClassVar[int] = 1
    heartbeat_interval_ms: int
    next_expected_seq_num: int
    cancel_on_disconnect: int
    default_stp_mode: int = 0
    token: str = ""


class LoginAccepted(msgspec.Struct):
    """S->C, template 2.  next_seq_num: seqNum of the next business message the server sends."""

    TEMPLATE_ID: ClassVar[int] = 2
    session_id: int
    next_seq_num: int
    heartbeat_interval_ms: int


class LoginRejected(msgspec.Struct):
    """S->C, template 3.  reason: LoginRejectReason."""

    TEMPLATE_ID: ClassVar[int] = 3
    reason: int


class Heartbeat(msgspec.Struct):
    """Both ways, template 4 (empty block)."""

    TEMPLATE_ID: ClassVar[int] = 4


class Logout(msgspec.Struct):
    """Both ways, template 5.  reason: 0 = normal (server values in protocol.session.LogoutReason)."""

    TEMPLATE_ID: ClassVar[int] = 5
    reason: int = 0


class SessionReject(msgspec.Struct):
    """S->C, template 6, unsequenced.  reason: RejectReason; ref_template_id: the refused template."""

    TEMPLATE_ID: ClassVar[int] = 6
    reason: int
    ref_template_id: int


# -- order entry, client to server -----------------------------------------------------------------
class NewOrder(msgspec.Struct):
    """C->S, template 10.  ord_type: OrdType (LIMIT, MARKET, STOP, STOP_LIMIT); time_in_force:
    DAY, GTC, IOC, FOK; flags: bit 0 = post-only; stp_mode: StpMode (0 = the session default);
    stop_px: trigger price of STOP / STOP_LIMIT (else 0); display_qty: iceberg lots shown at a
    time (0 = all)."""

    TEMPLATE_ID: ClassVar[int] = 10
    cl_ord_id: int
    price: int
    order_qty: int
    symbol: str
    side: int
    ord_type: int
    time_in_force: int
    flags: int = 0
    stp_mode: int = 0
    stop_px: int = 0
    display_qty: int = 0


class CancelOrder(msgspec.Struct):
    """C->S, template 11."""

    TEMPLATE_ID: ClassVar[int] = 11
    cl_ord_id: int
    orig_cl_ord_id: int
    symbol: str


class ReplaceOrder(msgspec.Struct):
    """C->S, template 12.  order_qty: the new TOTAL order quantity (filled quantity included)."""

    TEMPLATE_ID: ClassVar[int] = 12
    cl_ord_id: int
    orig_cl_ord_id: int
    price: int
    order_qty: int
    symbol: str


class MassCancel(msgspec.Struct):
    """C->S, template 13.  symbol "" = every symbol; side 0 = both; scope: MassCancelScope
    (0 this session's orders, 1 every order of the session's account)."""

    TEMPLATE_ID: ClassVar[int] = 13
    cl_ord_id: int
    symbol: str = ""
    side: int = 0
    scope: int = 0


class BookQuery(msgspec.Struct):
    """C->S, template 14.  depth: levels per side, 0 = 10, at most 100 (above: OrderRejected
    INVALID_FIELD)."""

    TEMPLATE_ID: ClassVar[int] = 14
    request_id: int
    symbol: str
    depth: int = 0


class EndOfSession(msgspec.Struct):
    """C->S, template 15 (admin role only): expire the DAY orders of ``symbol`` ("" = every
    symbol); answered by MassCancelDone."""

    TEMPLATE_ID: ClassVar[int] = 15
    cl_ord_id: int
    symbol: str = ""


class PositionQuery(msgspec.Struct):
    """C->S, template 16: the session's account's positions.  symbol "" = every symbol.  Answered,
    unsequenced, by one PositionReport per symbol that reflects every Execution sent before it."""

    TEMPLATE_ID: ClassVar[int] = 16
    request_id: int
    symbol: str = ""


# -- order entry, server to client (sequenced) -----------------------------------------------------
class OrderAccepted(msgspec.Struct):
    """S->C, template 20."""

    TEMPLATE_ID: ClassVar[int] = 20
    seq_num: int
    transact_time: int
    cl_ord_id: int
    order_id: int
    price: int
    order_qty: int
    leaves_qty: int
    symbol: str
    side: int
    ord_type: int
    time_in_force: int


class OrderRejected(msgspec.Struct):
    """S->C, template 21.  reason: RejectReason."""

    TEMPLATE_ID: ClassVar[int] = 21
    seq_num: int
    transact_time: int
    cl_ord_id: int
    symbol: str
    reason: int


class Execution(msgspec.Struct):
    """S->C, template 22: the receiver's side of one trade.  liquidity: 1 maker, 2 taker."""

    TEMPLATE_ID: ClassVar[int] = 22
    seq_num: int
    transact_time: int
    cl_ord_id: int
    order_id: int
    trade_id: int
    last_px: int
    last_qty: int
    leaves_qty: int
    symbol: str
    side: int
    liquidity: int


class OrderCanceled(msgspec.Struct):
    """S->C, template 23.  cl_ord_id: the request that caused it (the order's own ClOrdID when
    its session did not ask); reason: CancelReason; leaves_qty > 0: a partial cancel (self-trade
    prevention DECREMENT), the order lives on with that quantity."""

    TEMPLATE_ID: ClassVar[int] = 23
    seq_num: int
    transact_time: int
    cl_ord_id: int
    orig_cl_ord_id: int
    order_id: int
    price: int
    canceled_qty: int
    symbol: str
    side: int
    reason: int
    leaves_qty: int = 0


class OrderReplaced(msgspec.Struct):
    """S->C, template 24."""

    TEMPLATE_ID: ClassVar[int] = 24
    seq_num: int
    transact_time: int
    cl_ord_id: int
    orig_cl_ord_id: int
    order_id: int
    price: int
    order_qty: int
    leaves_qty: int
    symbol: str
    side: int


class CancelRejected(msgspec.Struct):
    """S->C, template 25.  reason: RejectReason."""

    TEMPLATE_ID: ClassVar[int] = 25
    seq_num: int
    transact_time: int
    cl_ord_id: int
    orig_cl_ord_id: int
    reason: int


class MassCancelDone(msgspec.Struct):
    """S->C, template 26."""

    TEMPLATE_ID: ClassVar[int] = 26
    seq_num: int
    transact_time: int
    cl_ord_id: int
    canceled_count: int


class BookLevel(msgspec.Struct):
    """One entry of the BookSnapshot groups: price, total size (lots), resting orders."""

    price: int
    size: int
    order_count: int


class BookSnapshot(msgspec.Struct):
    """S->C, template 27: the answer to BookQuery; bids and asks best level first."""

    TEMPLATE_ID: ClassVar[int] = 27
    seq_num: int
    transact_time: int
    request_id: int
    symbol: str
    bids: list[BookLevel] = msgspec.field(default_factory=list)
    asks: list[BookLevel] = msgspec.field(default_factory=list)


class OrderTriggered(msgspec.Struct):
    """S->C, template 28: a stop order's trigger price traded; it now executes (Executions and
    an OrderCanceled for a remainder that cannot rest follow).  price: its limit (0 for STOP)."""

    TEMPLATE_ID: ClassVar[int] = 28
    seq_num: int
    transact_time: int
    cl_ord_id: int
    order_id: int
    stop_px: int
    price: int
    order_qty: int
    leaves_qty: int
    symbol: str
    side: int
    ord_type: int



# -- market data, server to WebSocket subscribers ----------------------------------------------------
class Bbo(msgspec.Struct, rename="camel"):
    """S->C market data, template 40: best bid and offer.  A side without orders has price 0 and
    size 0; book_seq: the symbol's book sequence number this state reflects.  camelCase (the
    schema's names) in JSON, where it is protocol.mdjson.JsonBbo: msgspec renames a field only in
    the class that declares it."""

    TEMPLATE_ID: ClassVar[int] = 40
    symbol: str
    transact_time: int
    book_seq: int
    bid_price: int
    bid_size: int
    ask_price: int
    ask_size: int


class Trade(msgspec.Struct):
    """S->C market data, template 41: one trade.  aggressor_side: Side of the taker."""

    TEMPLATE_ID: ClassVar[int] = 41
    symbol: str
    transact_time: int
    trade_id: int
    price: int
    qty: int
    aggressor_side: int


class DepthSnapshot(msgspec.Struct):
    """S->C market data, template 42: the top ``levels`` levels per side at book sequence
    ``last_seq``; bids and asks best first."""

    TEMPLATE_ID: ClassVar[int] = 42
    symbol: str
    transact_time: int
    last_seq: int
    levels: int
    bids: list[BookLevel] = msgspec.field(default_factory=list)
    asks: list[BookLevel] = msgspec.field(default_factory=list)


class DepthUpdate(msgspec.Struct):
    """S->C market data, template 43: the levels that changed over book sequence numbers
    first_seq..last_seq; an entry with size 0 removes its price level."""

    TEMPLATE_ID: ClassVar[int] = 43
    symbol: str
    transact_time: int
    first_seq: int
    last_seq: int
    levels: int
    bids: list[BookLevel] = msgspec.field(default_factory=list)
    asks: list[BookLevel] = msgspec.field(default_factory=list)


# -- account reports, server to client (unsequenced) -------------------------------------------------
class PositionReport(msgspec.Struct):
    """S->C, template 44, unsequenced: one symbol of the account's book-keeping.

    net_position: lots, > 0 long; avg_price: price units, average cost of the open position (0
    when flat); realized_pnl: price units x lots (1e-4 currency), average-cost method;
    open_buy_qty / open_sell_qty: leaves of live orders; bought_qty / sold_qty: filled lots;
    report_index: 1 .. report_count within the answer to one PositionQuery.
    """

    TEMPLATE_ID: ClassVar[int] = 44
    request_id: int
    symbol: str
    net_position: int
    avg_price: int
    realized_pnl: int
    open_buy_qty: int
    open_sell_qty: int
    bought_qty: int
    sold_qty: int
    report_index: int
    report_count: int


Message = (Login | LoginAccepted | LoginRejected | Heartbeat | Logout | SessionReject | NewOrder
           | CancelOrder | ReplaceOrder | MassCancel | BookQuery | EndOfSession | PositionQuery
           | OrderAccepted | OrderRejected | Execution | OrderCanceled | OrderReplaced | CancelRejected
           | MassCancelDone | BookSnapshot | OrderTriggered | Bbo | Trade | DepthSnapshot
           | DepthUpdate | PositionReport)

#: template id -> message class, every template of the schema
MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TEMPLATE_ID: cls
    for cls in (Login, LoginAccepted, LoginRejected, Heartbeat, Logout, SessionReject, NewOrder,
                CancelOrder, ReplaceOrder, MassCancel, BookQuery, EndOfSession, PositionQuery,
                OrderAccepted, OrderRejected, Execution, OrderCanceled, OrderReplaced, CancelRejected,
                MassCancelDone, BookSnapshot, OrderTriggered, Bbo, Trade, DepthSnapshot, DepthUpdate,
                PositionReport)
}
