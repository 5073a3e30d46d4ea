"""``hftgw replay-lobster``: send a LOBSTER message file to a running gateway as binary orders.

LOBSTER (lobsterdata.com) files are rebuilt from Nasdaq TotalView-ITCH; prices are dollars x 10000,
which is exactly our price unit (1e-4), so prices go on the wire unchanged.  Rules (issue 2, §9):

* before message 0: a GTC limit sell at orderbook row 0's ask (price, size) and a GTC limit buy
  at its bid;
* type 1 -> GTC limit order (direction 1 buy, -1 sell), ClOrdID = the LOBSTER order id;
* type 2 -> reduce the named order by the size if it is still live (to zero = cancel), else skip;
* type 3 -> cancel the named order if live, else skip;
* type 4 -> IOC limit order on the opposite side at the message price for the message size;
* types 5, 6, 7 -> skipped;
* after each message, the in-sequence book query (depth 1), compared with the orderbook row.

"Still live" is decided from the responses to every earlier message: before a type 2 or 3 the
replay waits until all earlier messages are answered; everything else is pipelined.
"""
from __future__ import annotations

import asyncio
import csv
import time
from dataclasses import asdict, dataclass

from gateway.clients.tcp import OrderClient
from matching.records import Liquidity, OrdType, Side, StpMode, TimeInForce
from protocol import messages

EMPTY_ASK = (9999999999, 0)
EMPTY_BID = (-9999999999, 0)
IOC_ID_BASE = 1 << 48
CANCEL_ID_BASE = 2 << 48
SEED_ID_BASE = 3 << 48


@dataclass
class ReplayResult:
    """The figures ``replay-lobster`` prints (issue 2, §9)."""

    rows: int = 0
    new: int = 0
    cancel: int = 0
    reduce: int = 0
    ioc: int = 0
    skipped_unknown: int = 0
    skipped_other: int = 0
    fills: int = 0
    traded_qty: int = 0
    bbo_agree: int = 0
    resting_orders_at_end: int = 0
    rejects: int = 0
    elapsed_s: float = 0.0
    messages_per_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def read_lobster(message_csv: str, orderbook_csv: str, limit: int | None = None
                 ) -> tuple[list[tuple[int, int, int, int, int]], list[tuple[int, int, int, int]]]:
    """Rows of the two files: messages as (type, order id, size, price, direction) and books as
    (ask price, ask size, bid price, bid size).  Raises ValueError if the files differ in length
    or a row is malformed."""
    msgs: list[tuple[int, int, int, int, int]] = []
    books: list[tuple[int, int, int, int]] = []
    with open(message_csv, newline="") as fm, open(orderbook_csv, newline="") as fb:
        for i, (m, b) in enumerate(zip(csv.reader(fm), csv.reader(fb), strict=True)):
            if limit is not None and i >= limit:
                break
            if len(m) < 6 or len(b) < 4:
                raise ValueError(f"row {i}: expected 6 message and 4 orderbook columns")
            msgs.append((int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5])))
            books.append((int(b[0]), int(b[1]), int(b[2]), int(b[3])))
    return msgs, books


class _Tracker:
    """Order state as told by the gateway's responses."""

    def __init__(self, books: list[tuple[int, int, int, int]], result: ReplayResult) -> None:
        self.books = books
        self.r = result
        self.leaves: dict[int, int] = {}   # live ClOrdID -> leaves qty
        self.total: dict[int, int] = {}    # live ClOrdID -> order qty (FIX OrderQty)
        self.answered = -1                 # highest book query answered (requests are in order)
        self.waiter: asyncio.Future[None] | None = None
        self.wait_for = -1
        self.errors: list[str] = []

    def on_message(self, m: messages.Message) -> None:
        if isinstance(m, messages.Execution):
            if m.liquidity == Liquidity.LIQ_TAKER:
                self.r.fills += 1
                self.r.traded_qty += m.last_qty
            if m.leaves_qty:
                self.leaves[m.cl_ord_id] = m.leaves_qty
            else:
                self.leaves.pop(m.cl_ord_id, None)
                self.total.pop(m.cl_ord_id, None)
        elif isinstance(m, messages.OrderAccepted):
            if m.time_in_force == TimeInForce.TIF_GTC:
                self.leaves[m.cl_ord_id] = m.leaves_qty
                self.total[m.cl_ord_id] = m.order_qty
        elif isinstance(m, messages.OrderCanceled):
            self.leaves.pop(m.orig_cl_ord_id, None)
            self.total.pop(m.orig_cl_ord_id, None)
        elif isinstance(m, messages.OrderReplaced):
            self.leaves[m.cl_ord_id] = m.leaves_qty
            self.total[m.cl_ord_id] = m.order_qty
        elif isinstance(m, messages.BookSnapshot):
            i = m.request_id
            ask = (m.asks[0].price, m.asks[0].size) if m.asks else EMPTY_ASK
            bid = (m.bids[0].price, m.bids[0].size) if m.bids else EMPTY_BID
            if (ask[0], ask[1], bid[0], bid[1]) == self.books[i]:
                self.r.bbo_agree += 1
            self.answered = i
            if self.waiter is not None and i >= self.wait_for and not self.waiter.done():
                self.waiter.set_result(None)
        elif isinstance(m, (messages.OrderRejected, messages.CancelRejected)):
            self.r.rejects += 1
            if len(self.errors) < 10:
                self.errors.append(repr(m))

    async def wait_answered(self, i: int, timeout: float) -> None:
        if self.answered >= i:
            return
        self.wait_for = i
        self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.waiter, timeout)
        self.waiter = None


async def replay(client: OrderClient, msgs: list[tuple[int, int, int, int, int]],
                 books: list[tuple[int, int, int, int]], symbol: str = "AMZN",
                 timeout: float = 60.0) -> ReplayResult:
    """Replay ``msgs`` through a logged-in ``client``; returns the figures.  Raises
    asyncio.TimeoutError if the gateway stops answering, ConnectionError if it disconnects."""
    r = ReplayResult(rows=len(msgs))
    tr = _Tracker(books, r)
    client.on_message = tr.on_message
    send = client.send_raw
    from protocol.codec import encode

    def new(cl: int, side: int, price: int, qty: int, tif: int) -> bytes:
        return encode(messages.NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol=symbol,
                                        side=side, ord_type=OrdType.ORD_LIMIT, time_in_force=tif,
                                        flags=0, stp_mode=StpMode.STP_NONE))

    t0 = time.perf_counter()
    if books:
        ask_p, ask_q, bid_p, bid_q = books[0]
        send(new(SEED_ID_BASE + 1, Side.SIDE_SELL, ask_p, ask_q, TimeInForce.TIF_GTC)
             + new(SEED_ID_BASE + 2, Side.SIDE_BUY, bid_p, bid_q, TimeInForce.TIF_GTC))
    for i, (typ, oid, size, price, direction) in enumerate(msgs):
        out = b""
        side = Side.SIDE_BUY if direction == 1 else Side.SIDE_SELL
        if typ == 1:
            r.new += 1
            out = new(oid, side, price, size, TimeInForce.TIF_GTC)
        elif typ in (2, 3):
            await client.drain()
            await tr.wait_answered(i - 1, timeout)
            leaves = tr.leaves.get(oid)
            if leaves is None:
                r.skipped_unknown += 1
            elif typ == 3 or size >= leaves:
                r.cancel += typ == 3
                r.reduce += typ == 2
                out = encode(messages.CancelOrder(cl_ord_id=CANCEL_ID_BASE + i, orig_cl_ord_id=oid,
                                                  symbol=symbol))
            else:
                r.reduce += 1
                out = encode(messages.ReplaceOrder(cl_ord_id=oid, orig_cl_ord_id=oid, price=price,
                                                   order_qty=tr.total[oid] - size, symbol=symbol))
        elif typ == 4:
            r.ioc += 1
            opp = Side.SIDE_SELL if side == Side.SIDE_BUY else Side.SIDE_BUY
            out = new(IOC_ID_BASE + i, opp, price, size, TimeInForce.TIF_IOC)
        else:
            r.skipped_other += 1
        send(out + encode(messages.BookQuery(request_id=i, symbol=symbol, depth=1)))
        if i % 512 == 0:
            await client.drain()
    await client.drain()
    if msgs:
        await tr.wait_answered(len(msgs) - 1, timeout)
    r.elapsed_s = time.perf_counter() - t0
    r.messages_per_s = r.rows / r.elapsed_s if r.elapsed_s > 0 else 0.0
    r.resting_orders_at_end = len(tr.leaves)
    return r
