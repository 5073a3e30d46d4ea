"""A deliberately simple reference for matching.core.MatchingCore, in plain Python.

Same semantics as the Cython core (see its docstrings and hftgw issue 2, item 3), written for
clarity rather than speed: each book side is a Python list of price levels, best first, and each
level is a FIFO list of order objects.  ``process`` takes one command dict (the fields of
``matching.records.COMMAND_FIELDS``) and returns its events as tuples in
``matching.records.EVENT_FIELDS`` order, so they compare equal to
``EVENT_STRUCT.unpack`` of the records the core writes.

Later issues grow this into the full differential oracle; keep every rule here readable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matching.records import (
    EVENT_FIELDS,
    UNKNOWN_SYMBOL,
    CancelReason,
    CommandType,
    EventType,
    OrderFlags,
    OrdType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)

BUY, SELL = int(Side.SIDE_BUY), int(Side.SIDE_SELL)
LIMIT, MARKET = int(OrdType.ORD_LIMIT), int(OrdType.ORD_MARKET)
GTC, IOC, FOK = int(TimeInForce.TIF_GTC), int(TimeInForce.TIF_IOC), int(TimeInForce.TIF_FOK)
POST_ONLY = int(OrderFlags.FLAG_POST_ONLY)
DEFAULT_DEPTH, MAX_DEPTH = 10, 100

EventTuple = tuple[int, ...]


@dataclass
class Order:
    order_id: int
    cl_ord_id: int
    session_id: int
    symbol_id: int
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int          # total order quantity; cum qty = qty - leaves
    leaves: int


@dataclass
class Level:
    price: int
    orders: list[Order] = field(default_factory=list)   # oldest first

    @property
    def qty(self) -> int:
        return sum(o.leaves for o in self.orders)


@dataclass
class Book:
    tick: int
    max_qty: int
    bids: list[Level] = field(default_factory=list)     # best (highest) first
    asks: list[Level] = field(default_factory=list)     # best (lowest) first

    def side(self, side: int) -> list[Level]:
        return self.bids if side == BUY else self.asks

    def opposite(self, side: int) -> list[Level]:
        return self.asks if side == BUY else self.bids


def better_or_equal(side: int, a: int, b: int) -> bool:
    """Is price a at least as good as price b for a resting order of this side?"""
    return a >= b if side == BUY else a <= b


def crosses(taker_side: int, limit: int, maker_price: int) -> bool:
    return maker_price <= limit if taker_side == BUY else maker_price >= limit


class ReferenceCore:
    """Plain-Python twin of MatchingCore: ``ReferenceCore(symbols)`` with
    ``symbols[i] = (tick, max_qty)``."""

    def __init__(self, symbols: list[tuple[int, int]]) -> None:
        self.books = [Book(tick, max_qty) for tick, max_qty in symbols]
        self.live: dict[tuple[int, int], Order] = {}
        self.next_order_id = 1
        self.next_trade_id = 1

    # -- queries ----------------------------------------------------------------------------

    def book_levels(self, symbol_id: int, side: int, depth: int = 10) -> list[tuple[int, int, int]]:
        levels = self.books[symbol_id].side(side)[:depth]
        return [(lv.price, lv.qty, len(lv.orders)) for lv in levels]

    def level_orders(self, symbol_id: int, side: int, price: int) -> list[int]:
        for lv in self.books[symbol_id].side(side):
            if lv.price == price:
                return [o.order_id for o in lv.orders]
        return []

    def order_count(self) -> int:
        return len(self.live)

    def lookup(self, session_id: int, cl_ord_id: int) -> dict[str, int] | None:
        o = self.live.get((session_id, cl_ord_id))
        if o is None:
            return None
        return {"order_id": o.order_id, "side": o.side, "price": o.price, "qty": o.qty,
                "leaves": o.leaves, "symbol_id": o.symbol_id}

    # -- event construction -----------------------------------------------------------------

    def _event(self, cmd: dict[str, Any], etype: int, **fields: int) -> None:
        ev = dict.fromkeys(EVENT_FIELDS, 0)
        ev.update(seq=cmd["seq"], ts=cmd["ts"], recv_ts=cmd["ts"], session_id=cmd["session_id"],
                  symbol_id=cmd["symbol_id"], type=etype)
        ev.update(fields)
        self.out.append(tuple(ev[k] for k in EVENT_FIELDS))

    def _order_event(self, cmd: dict[str, Any], etype: int, o: Order, **fields: int) -> None:
        base = dict(session_id=o.session_id, symbol_id=o.symbol_id, side=o.side, ord_type=o.ord_type,
                    tif=o.tif, order_id=o.order_id, price=o.price)
        self._event(cmd, etype, **{**base, **fields})

    def _reject(self, cmd: dict[str, Any], reason: int, cl_ord_id: int | None = None) -> None:
        self._event(cmd, EventType.EVT_REJECTED, side=cmd["side"], ord_type=cmd["ord_type"],
                    tif=cmd["tif"], reason=reason,
                    cl_ord_id=cmd["cl_ord_id"] if cl_ord_id is None else cl_ord_id,
                    price=cmd["price"], qty=cmd["qty"])

    def _cancel_reject(self, cmd: dict[str, Any], reason: int, o: Order | None) -> None:
        self._event(cmd, EventType.EVT_CANCEL_REJECTED, side=cmd["side"], ord_type=cmd["ord_type"],
                    tif=cmd["tif"], reason=reason, cl_ord_id=cmd["cl_ord_id"],
                    ref=cmd["orig_cl_ord_id"], price=cmd["price"], qty=cmd["qty"],
                    order_id=o.order_id if o else 0, leaves=o.leaves if o else 0)

    def _canceled(self, cmd: dict[str, Any], o: Order, qty: int, reason: int) -> None:
        self._order_event(cmd, EventType.EVT_CANCELED, o, reason=reason, cl_ord_id=cmd["cl_ord_id"],
                          ref=o.cl_ord_id, qty=qty, leaves=0)

    # -- book mechanics ---------------------------------------------------------------------

    def _rest(self, o: Order) -> None:
        levels = self.books[o.symbol_id].side(o.side)
        i = 0
        while i < len(levels) and not better_or_equal(o.side, o.price, levels[i].price):
            i += 1
        if i < len(levels) and levels[i].price == o.price:
            levels[i].orders.append(o)
        else:
            levels.insert(i, Level(o.price, [o]))

    def _unlink(self, o: Order) -> None:
        levels = self.books[o.symbol_id].side(o.side)
        for i, lv in enumerate(levels):
            if lv.price == o.price:
                lv.orders.remove(o)
                if not lv.orders:
                    del levels[i]
                return
        raise AssertionError("resting order not in its book")

    def _match(self, cmd: dict[str, Any], t: Order) -> None:
        levels = self.books[t.symbol_id].opposite(t.side)
        while t.leaves > 0 and levels:
            lv = levels[0]
            if t.ord_type != MARKET and not crosses(t.side, t.price, lv.price):
                break
            while t.leaves > 0 and lv.orders:
                m = lv.orders[0]
                x = min(m.leaves, t.leaves)
                m.leaves -= x
                t.leaves -= x
                self._event(cmd, EventType.EVT_FILL, session_id=t.session_id, symbol_id=t.symbol_id,
                            side=t.side, ord_type=t.ord_type, tif=t.tif, cl_ord_id=t.cl_ord_id,
                            order_id=t.order_id, price=lv.price, qty=x, leaves=t.leaves,
                            ref=self.next_trade_id, contra_session=m.session_id,
                            contra_cl_ord_id=m.cl_ord_id, contra_order_id=m.order_id,
                            contra_leaves=m.leaves)
                self.next_trade_id += 1
                if m.leaves == 0:
                    lv.orders.pop(0)
                    del self.live[(m.session_id, m.cl_ord_id)]
            if not lv.orders:
                levels.pop(0)

    # -- commands ---------------------------------------------------------------------------

    def process(self, cmd: dict[str, Any]) -> list[EventTuple]:
        """Apply one command; returns its events."""
        self.out: list[EventTuple] = []
        handler = {
            CommandType.CMD_NEW: self._new,
            CommandType.CMD_CANCEL: self._cancel,
            CommandType.CMD_REPLACE: self._replace,
            CommandType.CMD_MASS_CANCEL: self._mass_cancel,
            CommandType.CMD_BOOK_QUERY: self._book_query,
            CommandType.CMD_SESSION_OPEN: lambda c: None,
            CommandType.CMD_ADMIN: lambda c: None,
            CommandType.CMD_RISK_REJECT: self._risk_reject,
        }.get(cmd["type"])
        if handler is None:
            self._reject(cmd, RejectReason.REJ_INVALID_FIELD)
        else:
            handler(cmd)
        return self.out

    def _new(self, c: dict[str, Any]) -> None:
        R = RejectReason
        if c["symbol_id"] >= len(self.books):
            return self._reject(c, R.REJ_UNKNOWN_SYMBOL)
        if (c["side"] not in (BUY, SELL) or c["ord_type"] not in (LIMIT, MARKET)
                or c["tif"] not in (GTC, IOC, FOK) or c["flags"] & ~POST_ONLY):
            return self._reject(c, R.REJ_INVALID_FIELD)
        if c["stp"] != StpMode.STP_NONE:
            return self._reject(c, R.REJ_UNSUPPORTED)
        book = self.books[c["symbol_id"]]
        if c["qty"] == 0 or c["qty"] > book.max_qty:
            return self._reject(c, R.REJ_INVALID_QUANTITY)
        market = c["ord_type"] == MARKET
        if not market and (c["price"] <= 0 or c["price"] % book.tick != 0):
            return self._reject(c, R.REJ_INVALID_PRICE)
        if (c["session_id"], c["cl_ord_id"]) in self.live:
            return self._reject(c, R.REJ_DUPLICATE_CL_ORD_ID)
        opp = book.opposite(c["side"])
        if c["flags"] & POST_ONLY:
            if opp and (market or crosses(c["side"], c["price"], opp[0].price)):
                return self._reject(c, R.REJ_POST_ONLY_WOULD_TAKE)
            if market or c["tif"] != GTC:
                return self._reject(c, R.REJ_INVALID_FIELD)

        t = Order(order_id=self.next_order_id, cl_ord_id=c["cl_ord_id"], session_id=c["session_id"],
                  symbol_id=c["symbol_id"], side=c["side"], ord_type=c["ord_type"], tif=c["tif"],
                  price=0 if market else c["price"], qty=c["qty"], leaves=c["qty"])
        self.next_order_id += 1
        self._order_event(c, EventType.EVT_ACCEPTED, t, cl_ord_id=t.cl_ord_id, qty=t.qty, leaves=t.qty)
        if t.tif == FOK:
            fillable = sum(lv.qty for lv in opp if market or crosses(t.side, t.price, lv.price))
            if fillable < t.qty:
                return self._canceled(c, t, t.qty, CancelReason.CXL_FOK_UNFILLED)
        self._match(c, t)
        if t.leaves == 0:
            return None
        if market:
            return self._canceled(c, t, t.leaves, CancelReason.CXL_NO_LIQUIDITY)
        if t.tif != GTC:
            return self._canceled(c, t, t.leaves, CancelReason.CXL_IOC_REMAINDER)
        self._rest(t)
        self.live[(t.session_id, t.cl_ord_id)] = t
        return None

    def _find(self, c: dict[str, Any]) -> Order | None:
        o = self.live.get((c["session_id"], c["orig_cl_ord_id"]))
        if o is None or o.symbol_id != c["symbol_id"]:
            return None
        return o

    def _cancel(self, c: dict[str, Any]) -> None:
        o = self._find(c)
        if o is None:
            return self._cancel_reject(c, RejectReason.REJ_UNKNOWN_ORDER, None)
        self._unlink(o)
        del self.live[(o.session_id, o.cl_ord_id)]
        self._canceled(c, o, o.leaves, CancelReason.CXL_USER)
        return None

    def _replace(self, c: dict[str, Any]) -> None:
        R = RejectReason
        o = self._find(c)
        if o is None:
            return self._cancel_reject(c, R.REJ_UNKNOWN_ORDER, None)
        book = self.books[o.symbol_id]
        if c["cl_ord_id"] != c["orig_cl_ord_id"] and (c["session_id"], c["cl_ord_id"]) in self.live:
            return self._cancel_reject(c, R.REJ_DUPLICATE_CL_ORD_ID, o)
        if c["price"] <= 0 or c["price"] % book.tick != 0:
            return self._cancel_reject(c, R.REJ_INVALID_PRICE, o)
        cum = o.qty - o.leaves
        if c["qty"] > book.max_qty or c["qty"] <= cum:
            return self._cancel_reject(c, R.REJ_INVALID_QUANTITY, o)
        new_leaves = c["qty"] - cum
        del self.live[(o.session_id, o.cl_ord_id)]
        o.cl_ord_id = c["cl_ord_id"]
        self.live[(o.session_id, o.cl_ord_id)] = o
        self._order_event(c, EventType.EVT_REPLACED, o, cl_ord_id=c["cl_ord_id"],
                          ref=c["orig_cl_ord_id"], price=c["price"], qty=c["qty"], leaves=new_leaves,
                          contra_leaves=o.leaves)
        if c["price"] == o.price and new_leaves <= o.leaves:
            o.leaves, o.qty = new_leaves, c["qty"]        # keeps its place in the queue
            return None
        self._unlink(o)                                    # loses priority
        o.price, o.qty, o.leaves = c["price"], c["qty"], new_leaves
        self._match(c, o)
        if o.leaves > 0:
            self._rest(o)
        else:
            del self.live[(o.session_id, o.cl_ord_id)]
        return None

    def _mass_cancel(self, c: dict[str, Any]) -> None:
        if c["side"] not in (0, BUY, SELL):
            return self._reject(c, RejectReason.REJ_INVALID_FIELD)
        reason = {1: CancelReason.CXL_DISCONNECT, 2: CancelReason.CXL_KILL_SWITCH}.get(
            c["flags"], CancelReason.CXL_MASS_CANCEL)
        if c["symbol_id"] == UNKNOWN_SYMBOL and (c["depth"] == 1 or c["flags"] in (1, 2)):
            symbols = range(len(self.books))
        elif c["symbol_id"] < len(self.books):
            symbols = range(c["symbol_id"], c["symbol_id"] + 1)
        else:
            return self._reject(c, RejectReason.REJ_UNKNOWN_SYMBOL)
        count = 0
        # symbol order, bids then asks, best level first, oldest first
        for sym in symbols:
            for side in (BUY, SELL):
                if c["side"] not in (0, side):
                    continue
                for lv in list(self.books[sym].side(side)):
                    for o in list(lv.orders):
                        if o.session_id == c["session_id"]:
                            self._canceled(c, o, o.leaves, reason)
                            self._unlink(o)
                            del self.live[(o.session_id, o.cl_ord_id)]
                            count += 1
        self._event(c, EventType.EVT_MASS_CANCEL_DONE, side=c["side"], cl_ord_id=c["cl_ord_id"],
                    reason=reason, count=count)
        return None

    def _risk_reject(self, c: dict[str, Any]) -> None:
        # refused by the gateway before the ring: the answer of the original request type
        if c["stp"] in (CommandType.CMD_CANCEL, CommandType.CMD_REPLACE):
            self._cancel_reject(c, c["depth"], None)
        elif c["stp"] == CommandType.CMD_BOOK_QUERY:
            self._reject(c, c["depth"], cl_ord_id=c["orig_cl_ord_id"])
        else:
            self._reject(c, c["depth"])

    def _book_query(self, c: dict[str, Any]) -> None:
        if c["symbol_id"] >= len(self.books):
            return self._reject(c, RejectReason.REJ_UNKNOWN_SYMBOL, cl_ord_id=c["orig_cl_ord_id"])
        depth = min(c["depth"] or DEFAULT_DEPTH, MAX_DEPTH)
        book = self.books[c["symbol_id"]]
        bids, asks = book.bids[:depth], book.asks[:depth]
        self._event(c, EventType.EVT_BOOK_SNAPSHOT, cl_ord_id=c["cl_ord_id"], ref=c["orig_cl_ord_id"],
                    count=len(bids), count2=len(asks))
        for flag, levels in ((0, bids), (1, asks)):
            for lv in levels:
                self._event(c, EventType.EVT_BOOK_LEVEL, cl_ord_id=c["cl_ord_id"],
                            ref=c["orig_cl_ord_id"], price=lv.price, qty=lv.qty,
                            count=len(lv.orders), flags=flag)
        return None
