"""A deliberately simple reference for matching.core.MatchingCore, in plain Python: the oracle of
the differential tests (hftgw issue 3, item 2).

Same semantics as the Cython core (its module docstring states the rules), written for clarity
rather than speed: each book side is a Python list of price levels, best first, each level a FIFO
list of order objects; pending stop orders are a list per side in trigger order.  Where the core
is clever (FOK answered from level totals, stops kept in sorted arrays, iceberg reserves in a side
table) this file does the obvious thing instead (FOK by a dry run of the match, a sort, fields on
the order), so that the two agree only if the rules are implemented the same way twice.

``process`` takes one command dict (the fields of ``matching.records.COMMAND_FIELDS``) and returns
its events as tuples in ``matching.records.EVENT_FIELDS`` order, so they compare equal to
``EVENT_STRUCT.unpack`` of the records the core writes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from matching.records import (
    EVENT_FIELDS,
    UNKNOWN_SYMBOL,
    CancelReason,
    CommandType,
    EventType,
    MassCancelScope,
    OrderFlags,
    OrdType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)

BUY, SELL = int(Side.SIDE_BUY), int(Side.SIDE_SELL)
LIMIT, MARKET = int(OrdType.ORD_LIMIT), int(OrdType.ORD_MARKET)
STOP, STOP_LIMIT = int(OrdType.ORD_STOP), int(OrdType.ORD_STOP_LIMIT)
DAY, GTC, IOC, FOK = (int(TimeInForce.TIF_DAY), int(TimeInForce.TIF_GTC), int(TimeInForce.TIF_IOC),
                      int(TimeInForce.TIF_FOK))
POST_ONLY = int(OrderFlags.FLAG_POST_ONLY)
STP_NONE, STP_NEWEST, STP_OLDEST, STP_BOTH, STP_DECREMENT = (int(m) for m in StpMode)
DEFAULT_DEPTH, MAX_DEPTH = 10, 100
MAX_SYMBOLS = 0xFFFF
X = CancelReason

EventTuple = tuple[int, ...]
MAX_ORDER_QTY = (1 << 32) - 1   # the core's orders hold 32-bit quantities: larger maxima are capped


@dataclass(eq=False)
class Order:
    order_id: int
    cl_ord_id: int
    session_id: int
    account_id: int
    symbol_id: int
    side: int
    ord_type: int
    tif: int
    price: int        # limit price; 0 for market and stop (market) orders
    qty: int          # total order quantity; cum qty = qty - leaves
    leaves: int       # total remaining quantity (shown + hidden)
    post_only: bool = False
    stp: int = 0
    display: int = 0  # iceberg: lots shown at a time (0 = not an iceberg)
    visible: int = 0  # lots shown in the book now (== leaves unless an iceberg)
    stop_price: int = 0
    pending: bool = False   # a stop order waiting for its trigger

    @property
    def is_market(self) -> bool:
        return self.ord_type in (MARKET, STOP)


@dataclass
class Level:
    price: int
    orders: list[Order] = field(default_factory=list)   # oldest first

    @property
    def qty(self) -> int:
        return sum(o.visible for o in self.orders)


@dataclass
class Book:
    tick: int
    max_qty: int
    bids: list[Level] = field(default_factory=list)     # best (highest) first
    asks: list[Level] = field(default_factory=list)     # best (lowest) first
    stops: dict[int, list[Order]] = field(default_factory=lambda: {BUY: [], SELL: []})
    last_px: int | None = None                          # last trade price, None before the first

    def side(self, side: int) -> list[Level]:
        return self.bids if side == BUY else self.asks

    def opposite(self, side: int) -> list[Level]:
        return self.asks if side == BUY else self.bids


def better_or_equal(side: int, a: int, b: int) -> bool:
    """Is price a at least as good as price b for a resting order of this side?"""
    return a >= b if side == BUY else a <= b


def crosses(taker_side: int, limit: int, maker_price: int) -> bool:
    return maker_price <= limit if taker_side == BUY else maker_price >= limit


def stop_met(side: int, stop_price: int, trade_price: int) -> bool:
    """A buy stop triggers at a trade at or above its stop price, a sell stop at or below."""
    return trade_price >= stop_price if side == BUY else trade_price <= stop_price


class ReferenceCore:
    """Plain-Python twin of MatchingCore: ``ReferenceCore(symbols)`` with
    ``symbols[i] = (tick, max_qty)``."""

    def __init__(self, symbols: list[tuple[int, int]]) -> None:
        self.books = [Book(tick, min(max_qty, MAX_ORDER_QTY)) for tick, max_qty in symbols]
        self.live: dict[tuple[int, int], Order] = {}
        self.accounts: dict[int, int] = {}
        self.next_order_id = 1
        self.next_trade_id = 1
        self.out: list[EventTuple] = []
        self.trades: list[int] = []     # prices traded by the current command (stop triggers)

    # -- queries ----------------------------------------------------------------------------

    def book_levels(self, symbol_id: int, side: int, depth: int = 10) -> list[tuple[int, int, int]]:
        levels = self.books[symbol_id].side(side)[:depth]
        return [(lv.price, lv.qty, len(lv.orders)) for lv in levels]

    def level_orders(self, symbol_id: int, side: int, price: int) -> list[int]:
        for lv in self.books[symbol_id].side(side):
            if lv.price == price:
                return [o.order_id for o in lv.orders]
        return []

    def stop_orders(self, symbol_id: int, side: int) -> list[tuple[int, int]]:
        return [(o.stop_price, o.order_id) for o in self.books[symbol_id].stops[side]]

    def last_trade_price(self, symbol_id: int) -> int:
        px = self.books[symbol_id].last_px
        return 0 if px is None else px

    def order_count(self) -> int:
        return len(self.live)

    def lookup(self, session_id: int, cl_ord_id: int) -> dict[str, int] | None:
        o = self.live.get((session_id, cl_ord_id))
        if o is None:
            return None
        return {"order_id": o.order_id, "side": o.side, "price": o.price, "qty": o.qty,
                "leaves": o.leaves, "symbol_id": o.symbol_id, "account_id": o.account_id,
                "ord_type": o.ord_type, "tif": o.tif, "visible": 0 if o.pending else o.visible,
                "stop_price": o.stop_price if o.pending else 0}

    @property
    def n_symbols(self) -> int:
        return len(self.books)

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
                    price=cmd["price"], qty=cmd["qty"],
                    # the name sent, which an unknown symbol's id cannot give back
                    ref=cmd.get("reserved", 0) if cmd["symbol_id"] == UNKNOWN_SYMBOL else 0)

    def _cancel_reject(self, cmd: dict[str, Any], reason: int, o: Order | None) -> None:
        self._event(cmd, EventType.EVT_CANCEL_REJECTED, side=cmd["side"], ord_type=cmd["ord_type"],
                    tif=cmd["tif"], reason=reason, cl_ord_id=cmd["cl_ord_id"],
                    ref=cmd["orig_cl_ord_id"], price=cmd["price"], qty=cmd["qty"],
                    order_id=o.order_id if o else 0, leaves=o.leaves if o else 0)

    def _canceled(self, cmd: dict[str, Any], o: Order, qty: int, reason: int, cl_ord_id: int,
                  leaves: int = 0) -> None:
        """EVT_CANCELED of qty lots of o; cl_ord_id: the request of o's session that caused it
        (o's own ClOrdID when o's session did not ask); leaves > 0: a partial cancel."""
        self._order_event(cmd, EventType.EVT_CANCELED, o, reason=reason, cl_ord_id=cl_ord_id,
                          ref=o.cl_ord_id, qty=qty, leaves=leaves)

    # -- book mechanics ---------------------------------------------------------------------

    def _rest(self, o: Order) -> None:
        """Put o (leaves > 0) at the back of its price level; an iceberg shows one slice."""
        o.visible = min(o.display, o.leaves) if o.display else o.leaves
        levels = self.books[o.symbol_id].side(o.side)
        i = 0
        while i < len(levels) and not better_or_equal(o.side, o.price, levels[i].price):
            i += 1
        if i < len(levels) and levels[i].price == o.price:
            levels[i].orders.append(o)
        else:
            levels.insert(i, Level(o.price, [o]))
        self.live[(o.session_id, o.cl_ord_id)] = o

    def _unlink(self, o: Order) -> None:
        """Take o out of the book (its level or its stop list); it stays in ``live``."""
        book = self.books[o.symbol_id]
        if o.pending:
            book.stops[o.side].remove(o)
            return
        levels = book.side(o.side)
        for i, lv in enumerate(levels):
            if lv.price == o.price:
                lv.orders.remove(o)
                if not lv.orders:
                    del levels[i]
                return
        raise AssertionError("resting order not in its book")

    def _remove(self, o: Order) -> None:
        self._unlink(o)
        del self.live[(o.session_id, o.cl_ord_id)]

    def _add_stop(self, o: Order) -> None:
        """Pending stops in trigger order: nearest stop price first (buy: lowest, sell: highest),
        arrival order among equal stop prices."""
        stops = self.books[o.symbol_id].stops[o.side]
        stops.append(o)
        stops.sort(key=lambda s: s.stop_price if s.side == BUY else -s.stop_price)  # stable
        o.pending = True
        self.live[(o.session_id, o.cl_ord_id)] = o

    # -- matching ---------------------------------------------------------------------------

    def _self_trade(self, cmd: dict[str, Any], t: Order, m: Order, lv: Level) -> bool:
        """Apply t's self-trade prevention against maker m (same account).  Returns True when
        the taker is done."""
        mode = t.stp
        if mode == STP_NEWEST:
            self._canceled(cmd, t, t.leaves, X.CXL_SELF_TRADE, t.cl_ord_id)
            t.leaves = 0
            return True
        if mode in (STP_OLDEST, STP_BOTH):
            self._canceled(cmd, m, m.leaves, X.CXL_SELF_TRADE, m.cl_ord_id)
            self._remove(m)
            if mode == STP_BOTH:
                self._canceled(cmd, t, t.leaves, X.CXL_SELF_TRADE, t.cl_ord_id)
                t.leaves = 0
                return True
            return False
        # DECREMENT: both lose the smaller of the two quantities; an order left with none is
        # canceled, the other goes on (the maker keeps its place, shown quantity last to go)
        x = min(t.leaves, m.leaves)
        m.leaves -= x
        m.visible = min(m.visible, m.leaves)
        self._canceled(cmd, m, x, X.CXL_SELF_TRADE, m.cl_ord_id, leaves=m.leaves)
        if m.leaves == 0:
            self._remove(m)
        t.leaves -= x
        self._canceled(cmd, t, x, X.CXL_SELF_TRADE, t.cl_ord_id, leaves=t.leaves)
        return t.leaves == 0

    def _match(self, cmd: dict[str, Any], t: Order) -> None:
        book = self.books[t.symbol_id]
        levels = book.opposite(t.side)
        while t.leaves > 0 and levels:
            lv = levels[0]
            if not t.is_market and not crosses(t.side, t.price, lv.price):
                break
            while t.leaves > 0 and lv.orders:
                m = lv.orders[0]
                if t.stp != STP_NONE and m.account_id == t.account_id:
                    if self._self_trade(cmd, t, m, lv):
                        break
                    continue
                x = min(m.visible, t.leaves)
                m.visible -= x
                m.leaves -= x
                t.leaves -= x
                self._event(cmd, EventType.EVT_FILL, session_id=t.session_id, symbol_id=t.symbol_id,
                            side=t.side, ord_type=t.ord_type, tif=t.tif, cl_ord_id=t.cl_ord_id,
                            order_id=t.order_id, price=lv.price, qty=x, leaves=t.leaves,
                            ref=self.next_trade_id, contra_session=m.session_id,
                            contra_cl_ord_id=m.cl_ord_id, contra_order_id=m.order_id,
                            contra_leaves=m.leaves)
                self.next_trade_id += 1
                book.last_px = lv.price
                self.trades.append(lv.price)
                if m.visible == 0:
                    lv.orders.pop(0)
                    if m.leaves > 0:          # iceberg: the next slice joins the back of the queue
                        m.visible = min(m.display, m.leaves)
                        lv.orders.append(m)
                    else:
                        del self.live[(m.session_id, m.cl_ord_id)]
            if not lv.orders and levels and levels[0] is lv:
                levels.pop(0)

    def _fok_fillable(self, t: Order) -> bool:
        """Would t fill completely, right now, with no self-trade prevention action?  Answered
        by a dry run of the match on copies of the opposite side's orders."""
        need = t.leaves
        for lv in self.books[t.symbol_id].opposite(t.side):
            if not t.is_market and not crosses(t.side, t.price, lv.price):
                break
            queue = deque([o.visible, o.leaves, o.display, o.account_id] for o in lv.orders)
            while queue and need > 0:
                visible, leaves, display, account = queue.popleft()
                if t.stp != STP_NONE and account == t.account_id:
                    return False
                x = min(visible, need)
                need -= x
                visible -= x
                leaves -= x
                if visible == 0 and leaves > 0:
                    queue.append([min(display, leaves), leaves, display, account])
            if need == 0:
                return True
        return need == 0

    def _execute(self, c: dict[str, Any], t: Order) -> None:
        """Run t as the taker (a new order, or a stop just triggered): FOK check, match, then
        rest the remainder or cancel it.  t is in ``live`` only if it was a triggered stop."""
        if t.tif == FOK and not self._fok_fillable(t):
            self._canceled(c, t, t.leaves, X.CXL_FOK_UNFILLED, t.cl_ord_id)
            t.leaves = 0
        else:
            self._match(c, t)
        if t.leaves > 0:
            if t.is_market:
                self._canceled(c, t, t.leaves, X.CXL_NO_LIQUIDITY, t.cl_ord_id)
                t.leaves = 0
            elif t.tif in (IOC, FOK):
                self._canceled(c, t, t.leaves, X.CXL_IOC_REMAINDER, t.cl_ord_id)
                t.leaves = 0
        if t.leaves > 0:
            self._rest(t)
        else:
            self.live.pop((t.session_id, t.cl_ord_id), None)

    def _run_stops(self, c: dict[str, Any], book: Book) -> None:
        """Trigger stops while any is triggered by a price traded during this command: the buy
        stop with the lowest stop price first, else the sell stop with the highest; each runs
        as a taker at once, and its own trades may trigger more."""
        while self.trades:
            hi, lo = max(self.trades), min(self.trades)
            buys, sells = book.stops[BUY], book.stops[SELL]
            if buys and stop_met(BUY, buys[0].stop_price, hi):
                s = buys.pop(0)
            elif sells and stop_met(SELL, sells[0].stop_price, lo):
                s = sells.pop(0)
            else:
                return
            s.pending = False
            self._order_event(c, EventType.EVT_TRIGGERED, s, cl_ord_id=s.cl_ord_id, qty=s.qty,
                              leaves=s.leaves, ref=s.stop_price)
            del self.live[(s.session_id, s.cl_ord_id)]
            self._execute(c, s)

    # -- commands ---------------------------------------------------------------------------

    def _set_account(self, session_id: int, account_id: int) -> None:
        # an order's account is its session's latest, as in the core
        if self.accounts.get(session_id) == account_id:
            return
        self.accounts[session_id] = account_id
        for o in self.live.values():
            if o.session_id == session_id:
                o.account_id = account_id

    def process(self, cmd: dict[str, Any]) -> list[EventTuple]:
        """Apply one command; returns its events."""
        self.out = []
        self.trades = []
        handler = {
            CommandType.CMD_NEW: self._new,
            CommandType.CMD_CANCEL: self._cancel,
            CommandType.CMD_REPLACE: self._replace,
            CommandType.CMD_MASS_CANCEL: self._mass_cancel,
            CommandType.CMD_BOOK_QUERY: self._book_query,
            CommandType.CMD_END_OF_SESSION: self._end_of_session,
            CommandType.CMD_SYMBOL_ADD: self._symbol_add,
            CommandType.CMD_SESSION_OPEN: lambda c: self._set_account(c["session_id"], c["account_id"]),
            CommandType.CMD_ADMIN: lambda c: None,
            CommandType.CMD_SESSION_STATE: lambda c: None,
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
        if (c["side"] not in (BUY, SELL) or c["ord_type"] not in (LIMIT, MARKET, STOP, STOP_LIMIT)
                or c["tif"] not in (DAY, GTC, IOC, FOK) or c["flags"] & ~POST_ONLY
                or c["stp"] > STP_DECREMENT):
            return self._reject(c, R.REJ_INVALID_FIELD)
        book = self.books[c["symbol_id"]]
        if c["qty"] == 0 or c["qty"] > book.max_qty:
            return self._reject(c, R.REJ_INVALID_QUANTITY)
        ord_type = c["ord_type"]
        has_limit = ord_type in (LIMIT, STOP_LIMIT)
        is_stop = ord_type in (STOP, STOP_LIMIT)
        if has_limit and (c["price"] <= 0 or c["price"] % book.tick != 0):
            return self._reject(c, R.REJ_INVALID_PRICE)
        if is_stop and (c["stop_price"] <= 0 or c["stop_price"] % book.tick != 0):
            return self._reject(c, R.REJ_INVALID_PRICE)
        if not is_stop and c["stop_price"] != 0:
            return self._reject(c, R.REJ_INVALID_FIELD)
        if c["display_qty"]:
            if ord_type != LIMIT or c["tif"] not in (GTC, DAY):
                return self._reject(c, R.REJ_INVALID_FIELD)
            if c["display_qty"] >= c["qty"]:
                return self._reject(c, R.REJ_INVALID_QUANTITY)
        if (c["session_id"], c["cl_ord_id"]) in self.live:
            return self._reject(c, R.REJ_DUPLICATE_CL_ORD_ID)
        opp = book.opposite(c["side"])
        if c["flags"] & POST_ONLY:
            if is_stop:
                return self._reject(c, R.REJ_INVALID_FIELD)
            if opp and (ord_type == MARKET or crosses(c["side"], c["price"], opp[0].price)):
                return self._reject(c, R.REJ_POST_ONLY_WOULD_TAKE)
            if ord_type == MARKET or c["tif"] not in (GTC, DAY):
                return self._reject(c, R.REJ_INVALID_FIELD)

        self._set_account(c["session_id"], c["account_id"])
        t = Order(order_id=self.next_order_id, cl_ord_id=c["cl_ord_id"], session_id=c["session_id"],
                  account_id=c["account_id"], symbol_id=c["symbol_id"], side=c["side"],
                  ord_type=ord_type, tif=c["tif"], price=c["price"] if has_limit else 0,
                  qty=c["qty"], leaves=c["qty"], post_only=bool(c["flags"] & POST_ONLY),
                  stp=c["stp"], display=c["display_qty"], stop_price=c["stop_price"] if is_stop else 0)
        self.next_order_id += 1
        self._order_event(c, EventType.EVT_ACCEPTED, t, cl_ord_id=t.cl_ord_id, qty=t.qty, leaves=t.qty)
        if is_stop:
            self._add_stop(t)
            if book.last_px is not None and stop_met(t.side, t.stop_price, book.last_px):
                self.trades.append(book.last_px)     # already triggered: runs at once
        else:
            self._execute(c, t)
        self._run_stops(c, book)
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
        self._remove(o)
        self._canceled(c, o, o.leaves, X.CXL_USER, c["cl_ord_id"])
        return None

    def _replace(self, c: dict[str, Any]) -> None:
        R = RejectReason
        o = self._find(c)
        if o is None:
            return self._cancel_reject(c, R.REJ_UNKNOWN_ORDER, None)
        book = self.books[o.symbol_id]
        if c["cl_ord_id"] != c["orig_cl_ord_id"] and (c["session_id"], c["cl_ord_id"]) in self.live:
            return self._cancel_reject(c, R.REJ_DUPLICATE_CL_ORD_ID, o)
        price = c["price"] if o.ord_type != STOP else 0       # a stop (market) order has no price
        if o.ord_type != STOP and (price <= 0 or price % book.tick != 0):
            return self._cancel_reject(c, R.REJ_INVALID_PRICE, o)
        cum = o.qty - o.leaves
        if c["qty"] > book.max_qty or c["qty"] <= cum:
            return self._cancel_reject(c, R.REJ_INVALID_QUANTITY, o)
        opp = book.opposite(o.side)
        if o.post_only and opp and crosses(o.side, price, opp[0].price):
            return self._cancel_reject(c, R.REJ_POST_ONLY_WOULD_TAKE, o)
        new_leaves = c["qty"] - cum
        del self.live[(o.session_id, o.cl_ord_id)]
        o.cl_ord_id = c["cl_ord_id"]
        self.live[(o.session_id, o.cl_ord_id)] = o
        self._order_event(c, EventType.EVT_REPLACED, o, cl_ord_id=c["cl_ord_id"],
                          ref=c["orig_cl_ord_id"], price=price, qty=c["qty"], leaves=new_leaves,
                          contra_leaves=o.leaves)                # the leaves before (risk bookkeeping)
        keeps_priority = price == o.price and new_leaves <= o.leaves
        if o.pending:
            o.price, o.qty, o.leaves = price, c["qty"], new_leaves
            if not keeps_priority:                       # to the back of its stop price
                stops = book.stops[o.side]
                stops.remove(o)
                self._add_stop(o)
            return None
        if keeps_priority:                               # keeps its place in the queue
            o.qty, o.leaves = c["qty"], new_leaves
            o.visible = min(o.visible, o.leaves)         # an iceberg's hidden part goes first
            return None
        self._remove(o)                                  # loses priority
        o.price, o.qty, o.leaves = price, c["qty"], new_leaves
        self._match(c, o)
        if o.leaves > 0:
            self._rest(o)
        self._run_stops(c, book)
        return None

    def _cancel_many(self, c: dict[str, Any], symbols: range, wanted: Any, reason: int,
                     own_request: bool) -> int:
        """Cancel every live order of ``symbols`` for which ``wanted(o)`` holds, in book order:
        symbol by symbol, bids then asks (best level first, time priority), then buy stops and
        sell stops (trigger order)."""
        count = 0
        for sym in symbols:
            book = self.books[sym]
            orders = [o for side in (BUY, SELL) for lv in book.side(side) for o in lv.orders]
            orders += book.stops[BUY] + book.stops[SELL]
            for o in orders:
                if wanted(o):
                    cl = c["cl_ord_id"] if own_request and o.session_id == c["session_id"] else o.cl_ord_id
                    self._canceled(c, o, o.leaves, reason, cl)
                    self._remove(o)
                    count += 1
        return count

    def _symbols(self, c: dict[str, Any]) -> range | None:
        if c["symbol_id"] == UNKNOWN_SYMBOL and c["depth"] == 1:
            return range(len(self.books))
        if c["symbol_id"] < len(self.books):
            return range(c["symbol_id"], c["symbol_id"] + 1)
        return None

    def _mass_cancel(self, c: dict[str, Any]) -> None:
        if c["side"] not in (0, BUY, SELL) or c["scope"] not in (0, 1):
            return self._reject(c, RejectReason.REJ_INVALID_FIELD)
        # flags 1 = cancel on disconnect, 2 = kill switch: all symbols
        reason = {1: X.CXL_DISCONNECT, 2: X.CXL_KILL_SWITCH}.get(c["flags"], X.CXL_MASS_CANCEL)
        if c["flags"] in (1, 2) and c["symbol_id"] == UNKNOWN_SYMBOL:
            symbols: range | None = range(len(self.books))
        else:
            symbols = self._symbols(c)
        if symbols is None:
            return self._reject(c, RejectReason.REJ_UNKNOWN_SYMBOL)
        if c["scope"] == MassCancelScope.SCOPE_ACCOUNT:
            def mine(o: Order) -> bool:
                return o.account_id == c["account_id"]
        else:
            def mine(o: Order) -> bool:
                return o.session_id == c["session_id"]

        count = self._cancel_many(c, symbols, lambda o: c["side"] in (0, o.side) and mine(o), reason,
                                  own_request=True)
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

    def _end_of_session(self, c: dict[str, Any]) -> None:
        symbols = self._symbols(c)
        if symbols is None:
            return self._reject(c, RejectReason.REJ_UNKNOWN_SYMBOL)
        count = self._cancel_many(c, symbols, lambda o: o.tif == DAY, X.CXL_EXPIRED, own_request=False)
        self._event(c, EventType.EVT_MASS_CANCEL_DONE, cl_ord_id=c["cl_ord_id"], reason=X.CXL_EXPIRED,
                    count=count)
        return None

    def _symbol_add(self, c: dict[str, Any]) -> None:
        if c["price"] <= 0 or c["qty"] == 0 or c["symbol_id"] > len(self.books):
            return self._reject(c, RejectReason.REJ_INVALID_FIELD)
        if c["symbol_id"] < len(self.books):          # a redefinition: resting orders stay
            book = self.books[c["symbol_id"]]
            book.tick, book.max_qty = c["price"], min(c["qty"], MAX_ORDER_QTY)
            return None
        if len(self.books) >= MAX_SYMBOLS:
            return self._reject(c, RejectReason.REJ_INVALID_FIELD)
        self.books.append(Book(c["price"], c["qty"]))
        return None

    def _book_query(self, c: dict[str, Any]) -> None:
        if c["symbol_id"] >= len(self.books):
            return self._reject(c, RejectReason.REJ_UNKNOWN_SYMBOL, cl_ord_id=c["orig_cl_ord_id"])
        if c["depth"] > MAX_DEPTH:
            return self._reject(c, RejectReason.REJ_INVALID_FIELD, cl_ord_id=c["orig_cl_ord_id"])
        depth = c["depth"] or DEFAULT_DEPTH
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
