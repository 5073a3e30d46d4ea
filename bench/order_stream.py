"""Pre-encoded order streams of the TCP benches (e2e_bench, md_fanout_bench, partition_bench).

A stream is the concatenated wire bytes of its requests (ClOrdID = 1..n) and each request's byte
end offset, so that a load generator sends any run of requests as one slice and spends no Python
per request on the hot path.
"""
from __future__ import annotations

import random
import sys
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matching.records import OrdType, Side, TimeInForce  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import CancelOrder, NewOrder  # noqa: E402

MID = 1_000_000
TICK = 100

#: price of a new order from (is a buy, a draw of randrange(10)); each bench keeps its own spread
PriceOf = Callable[[bool, int], int]


def frames(encoded: Iterable[bytes]) -> tuple[bytes, array[int]]:
    """The stream of these encoded requests: their bytes joined, and each one's end offset."""
    parts: list[bytes] = []
    ends = array("Q")
    off = 0
    for b in encoded:
        parts.append(b)
        off += len(b)
        ends.append(off)
    return b"".join(parts), ends


def mixed_stream(n: int, seed: int, symbol: str, price: PriceOf) -> tuple[bytes, array[int]]:
    """n requests: GTC limit orders on both sides at ``price``, and every third request (after
    the 30th) a cancel of the order sent 30 requests earlier (filled by then or not)."""
    rnd = random.Random(seed)

    def one(cl: int) -> bytes:
        if cl % 3 == 0 and cl > 30:
            return codec.encode(CancelOrder(cl_ord_id=cl, orig_cl_ord_id=cl - 30, symbol=symbol))
        buy = rnd.random() < 0.5
        px = price(buy, rnd.randrange(10))
        return codec.encode(NewOrder(cl_ord_id=cl, price=px, order_qty=1 + rnd.randrange(10),
                                     symbol=symbol, side=Side.SIDE_BUY if buy else Side.SIDE_SELL,
                                     ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC))

    return frames(one(cl) for cl in range(1, n + 1))


def resting_stream(n: int, symbol: str, gap_ticks: int = 50, levels: int = 1000
                   ) -> tuple[bytes, array[int]]:
    """n GTC limit orders that never cross, alternately buys below and sells above the mid, at
    least ``gap_ticks`` away from it over ``levels`` price levels per side: a deep book to rest."""

    def one(cl: int) -> bytes:
        buy = cl % 2 == 0
        away = (gap_ticks + (cl // 2) % levels) * TICK
        return codec.encode(NewOrder(cl_ord_id=cl, price=MID - away if buy else MID + away,
                                     order_qty=1 + cl % 7, symbol=symbol,
                                     side=Side.SIDE_BUY if buy else Side.SIDE_SELL,
                                     ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC))

    return frames(one(cl) for cl in range(1, n + 1))
