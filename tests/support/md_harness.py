"""Helpers for the market-data tests: a subscriber that keeps books with the documented rule,
and a seeded random order stream over real TCP sessions."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from gateway.clients.md import DepthBook, GapError, MdClient
from matching.records import Liquidity, OrdType, Side, TimeInForce
from protocol.mdjson import JsonBbo, JsonDepthSnapshot, JsonDepthUpdate, JsonTrades
from protocol.messages import (
    Bbo,
    BookQuery,
    BookSnapshot,
    CancelOrder,
    DepthSnapshot,
    DepthUpdate,
    Execution,
    NewOrder,
    ReplaceOrder,
    Trade,
)

DEPTH_TYPES = (DepthSnapshot, DepthUpdate, JsonDepthSnapshot, JsonDepthUpdate)


class Follower:
    """Reads one MdClient in a task: depth books per (symbol, levels) kept with DepthBook, the
    last BBO per symbol, every trade.  With ``resync_on_gap`` a gap re-subscribes the stream
    (counted in ``gaps``); without, the task ends with the GapError."""

    def __init__(self, client: MdClient, encoding: str, resync_on_gap: bool = False) -> None:
        self.client = client
        self.encoding = encoding
        self.resync_on_gap = resync_on_gap
        self.books: dict[tuple[str, int], DepthBook] = {}
        self.bbo: dict[str, tuple[int, int, int, int, int]] = {}  # book_seq, bid px/size, ask px/size
        # (trade id, price, qty, aggressor side, symbol) in arrival order
        self.trades: list[tuple[int, int, int, int, str]] = []
        self.snapshots = 0
        self.updates = 0
        self.gaps = 0
        self.drop_next_update = False
        self.messages: list[Any] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.on(await self.client.recv(None))

    def on(self, m: Any) -> None:
        self.messages.append(m)
        if isinstance(m, DEPTH_TYPES):
            key = (m.symbol, m.levels)
            book = self.books.setdefault(key, DepthBook(m.symbol))
            if isinstance(m, (DepthSnapshot, JsonDepthSnapshot)):
                self.snapshots += 1
            else:
                self.updates += 1
                if self.drop_next_update and book.last_seq is not None and m.last_seq > book.last_seq:
                    self.drop_next_update = False  # lose this one on purpose: a gap follows
                    return
            try:
                book.apply(m)
            except GapError:
                if not self.resync_on_gap:
                    raise
                self.gaps += 1
                self.books[key] = DepthBook(m.symbol)  # ignore updates until the new snapshot
                self.client.send_request("subscribe", ["depth"], [m.symbol], self.encoding, m.levels)
        elif isinstance(m, (Bbo, JsonBbo)):
            self.bbo[m.symbol] = (m.book_seq, m.bid_price, m.bid_size, m.ask_price, m.ask_size)
        elif isinstance(m, Trade):
            self.trades.append((m.trade_id, m.price, m.qty, m.aggressor_side, m.symbol))
        elif isinstance(m, JsonTrades):
            self.trades.extend((t.trade_id, t.price, t.qty, 1 if t.aggressor_side == "BUY" else 2,
                                m.symbol) for t in m.trades)

    def check(self) -> None:
        """Raise what ended the reader task, if anything."""
        if self.task.done():
            self.task.result()

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass
        await self.client.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


MID = 1_500_000
TICK = 100


class OrderStream:
    """A seeded random order flow from several TCP sessions: GTC limits around the mid on both
    sides (so that about half cross), IOC and market orders, cancels and replaces of the
    session's live orders.  Every response is kept; ``taker_fills`` are the TAKER Executions."""

    def __init__(self, clients: list[Any], symbols: list[str], seed: int) -> None:
        self.clients = clients
        self.symbols = symbols
        self.rnd = random.Random(seed)
        self.next_cl = [1] * len(clients)
        self.live: list[dict[int, str]] = [{} for _ in clients]  # cl_ord_id -> symbol
        self.responses: list[list[Any]] = [[] for _ in clients]
        self.requests = 0
        self.snapshots: dict[int, BookSnapshot] = {}  # (request ids are unique across sessions)
        self.answered: set[int] = set()  # cl_ord_ids with a response
        self._waiting: dict[int, asyncio.Future[None]] = {}
        for i, c in enumerate(clients):
            c.on_message = self._receiver(i)

    def _receiver(self, i: int) -> Callable[[Any], None]:
        def on_message(m: Any) -> None:
            self.responses[i].append(m)
            cl = getattr(m, "cl_ord_id", None)
            if cl is not None:
                self.answered.add(cl)
                w = self._waiting.pop(cl, None)
                if w is not None and not w.done():
                    w.set_result(None)
            if isinstance(m, BookSnapshot):
                self.snapshots[m.request_id] = m
        return on_message

    def _cl(self, i: int) -> int:
        self.next_cl[i] += 1
        return self.next_cl[i] * 8 + i  # unique across sessions too

    def one(self, i: int) -> Any:
        r = self.rnd
        sym = r.choice(self.symbols)
        live = self.live[i]
        x = r.random()
        if x < 0.15 and live:
            orig = r.choice(list(live))
            return CancelOrder(cl_ord_id=self._cl(i), orig_cl_ord_id=orig, symbol=live.pop(orig))
        if x < 0.25 and live:
            orig = r.choice(list(live))
            cl = self._cl(i)
            s = live.pop(orig)
            live[cl] = s
            return ReplaceOrder(cl_ord_id=cl, orig_cl_ord_id=orig,
                                price=MID + r.randint(-6, 6) * TICK, order_qty=r.randint(1, 60), symbol=s)
        side = r.choice((Side.SIDE_BUY, Side.SIDE_SELL))
        cl = self._cl(i)
        if x < 0.30:
            return NewOrder(cl_ord_id=cl, price=0, order_qty=r.randint(1, 30), symbol=sym, side=side,
                            ord_type=OrdType.ORD_MARKET, time_in_force=TimeInForce.TIF_IOC)
        # buyers lean up, sellers down: about half the limits cross
        lean = 2 if side == Side.SIDE_BUY else -2
        price = MID + (r.randint(-6, 6) + lean) * TICK
        tif = TimeInForce.TIF_IOC if x < 0.38 else TimeInForce.TIF_GTC
        if tif == TimeInForce.TIF_GTC:
            live[cl] = sym
        return NewOrder(cl_ord_id=cl, price=price, order_qty=r.randint(1, 50), symbol=sym, side=side,
                        ord_type=OrdType.ORD_LIMIT, time_in_force=tif)

    async def round(self, max_burst: int = 25) -> None:
        """Every session sends a burst (no waiting), then a BookQuery; returns once every
        session has its BookSnapshot, i.e. every command of the round is matched."""
        marks = []
        for i, c in enumerate(self.clients):
            burst = [self.one(i) for _ in range(self.rnd.randint(1, max_burst))]
            rid = self._cl(i)
            c.send(*burst, BookQuery(request_id=rid, symbol=self.symbols[0], depth=1))
            self.requests += len(burst)
            marks.append(rid)
        await until(lambda: all(rid in self.snapshots for rid in marks), what="the round's book queries")

    async def step(self, i: int) -> None:
        """Session i sends one request and waits for its first answer, so that every request is
        sequenced after the previous one (a deterministic global order)."""
        req = self.one(i)
        answered = self._waiting[req.cl_ord_id] = asyncio.get_running_loop().create_future()
        self.clients[i].send(req)
        self.requests += 1
        await asyncio.wait_for(answered, 10)

    async def book(self, symbol: str, depth: int = 20) -> BookSnapshot:
        """The in-sequence book query, from the first session."""
        rid = self._cl(0)
        self.clients[0].send(BookQuery(request_id=rid, symbol=symbol, depth=depth))
        await until(lambda: rid in self.snapshots, what="book query")
        return self.snapshots[rid]

    def taker_fills(self) -> list[tuple[int, int, int, int, str]]:
        """(trade id, price, qty, taker side, symbol) of every trade, by trade id."""
        return sorted((m.trade_id, m.last_px, m.last_qty, m.side, m.symbol) for resp in self.responses
                      for m in resp if isinstance(m, Execution) and m.liquidity == Liquidity.LIQ_TAKER)


TradeRow = tuple[int, int, int, int, str]


def same_trades(got: list[TradeRow], want: list[TradeRow]) -> bool:
    """The market-data trades are the takers' fills: all of them, once, and in trade order per
    symbol (batches of different symbols in one server tick may come in symbol order)."""
    if sorted(got) != want:
        return False
    for sym in {t[4] for t in want}:
        ids = [t[0] for t in got if t[4] == sym]
        if ids != sorted(ids):
            return False
    return True
