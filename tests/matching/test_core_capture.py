"""CoreCapture (matching/core_capture.pxi, issue 12): the state of a core at one instant,
copied page by page copy-on-write while the core goes on processing commands, gives the
bytes ``snapshot()`` gave at that instant."""
from __future__ import annotations

import random
import threading

import pytest
from support.command_stream import SESSIONS, SYMBOLS, seeded_stream
from test_core_property import Differential

from matching.core import CoreCapture, MatchingCore
from matching.records import COMMAND_RECORD_SIZE, CommandType, OrdType, Side, TimeInForce, pack_command
from matching.ring import SpscRing

NEW, CANCEL = CommandType.CMD_NEW, CommandType.CMD_CANCEL
BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL
ONE = [(1, 1000)]


class Feeder:
    """A bare core fed command records in slices (no reference book: the state is compared
    through snapshots)."""

    def __init__(self, core: MatchingCore) -> None:
        self.core = core
        self.commands = SpscRing(1 << 12, COMMAND_RECORD_SIZE)
        self.events = SpscRing(1 << 14, 128)
        core.on_events_full = self.events.pop
        self.seq = 0

    def run(self, cmds: list[dict[str, int]], between: object = None) -> None:
        for off in range(0, len(cmds), 256):
            recs = []
            for c in cmds[off:off + 256]:
                self.seq += 1
                recs.append(pack_command(seq=self.seq, **c))
            assert self.commands.push(b"".join(recs)) == len(recs)
            while len(self.commands):
                self.core.process(self.commands, self.events)
                self.events.pop()
            if callable(between):
                between()


def deep_book(n: int) -> list[dict[str, int]]:
    # resting orders of 4 sessions over 400 prices a side, none crossing
    return [dict(type=NEW, session_id=1 + i % 4, side=BUY if i % 2 else SELL, ord_type=OrdType.ORD_LIMIT,
                 tif=TimeInForce.TIF_GTC, cl_ord_id=i + 1, qty=1 + i % 7,
                 price=(100 + i % 400) if i % 2 else (1000 + i % 400)) for i in range(n)]


def churn(n: int, live: int, rng: random.Random, first_id: int) -> list[dict[str, int]]:
    # cancels of orders anywhere in the pool (pages everywhere written), takers at the touch
    # and new resting orders
    out: list[dict[str, int]] = []
    for k in range(n):
        r = rng.random()
        if r < 0.5:
            i = rng.randrange(live)
            out.append(dict(type=CANCEL, session_id=1 + i % 4, cl_ord_id=first_id + k, orig_cl_ord_id=i + 1))
        elif r < 0.7:
            out.append(dict(type=NEW, session_id=5, side=BUY, ord_type=OrdType.ORD_LIMIT,
                            tif=TimeInForce.TIF_IOC, cl_ord_id=first_id + k, qty=3, price=1010))
        else:
            out.append(dict(type=NEW, session_id=6, side=SELL, ord_type=OrdType.ORD_LIMIT,
                            tif=TimeInForce.TIF_GTC, cl_ord_id=first_id + k, qty=2,
                            price=1000 + rng.randrange(400)))
    return out


def test_capture_while_processing_is_the_state_at_its_instant() -> None:
    f = Feeder(MatchingCore(ONE, initial_orders=1 << 10))
    f.run(deep_book(60_000))
    want = f.core.snapshot()
    cap = CoreCapture(f.core)
    assert cap.pool_bytes > 2_000_000 and not cap.done     # hundreds of pages
    steps = []
    f.run(churn(30_000, 60_000, random.Random(3), 10**6), between=lambda: steps.append(cap.step(4096)))
    assert steps and not steps[0]               # the copy went on while commands were processed
    cap.finish()
    got = cap.to_bytes()
    cap.close()
    assert got == want
    # and the core itself went on correctly: its state equals the same commands replayed on a
    # restored copy of the instant
    again = Feeder(MatchingCore.restore(got))
    again.seq = 60_000
    again.run(churn(30_000, 60_000, random.Random(3), 10**6))
    assert again.core.snapshot() == f.core.snapshot()


def test_capture_of_the_mixed_stream_and_restore() -> None:
    cmds = seeded_stream(30_000, seed=11)
    d = Differential(SYMBOLS, 4096, 512)
    d.feed(cmds[:15_000])
    want = d.core.snapshot()
    cap = CoreCapture(d.core)
    for off in range(15_000, 30_000, 512):
        d.feed(cmds[off:off + 512])         # every event still checked against the reference
        cap.step(1)
    cap.finish()
    assert cap.to_bytes() == want
    cap.close()
    d.assert_same_state(SESSIONS, range(1, 40))
    assert MatchingCore.restore(want).snapshot() == want


def test_pool_growth_completes_the_copy_first() -> None:
    f = Feeder(MatchingCore(ONE, initial_orders=1 << 16))
    f.run(deep_book((1 << 16) - 100))
    want = f.core.snapshot()
    cap = CoreCapture(f.core)
    assert not cap.done
    f.run([dict(c, cl_ord_id=c["cl_ord_id"] + 10**6) for c in deep_book(1000)])  # the pool grows
    assert cap.done and cap.to_bytes() == want
    cap.close()
    assert f.core.order_count() == (1 << 16) - 100 + 1000


def test_to_bytes_on_a_thread_while_the_core_runs() -> None:
    f = Feeder(MatchingCore(ONE, initial_orders=1 << 10))
    f.run(deep_book(20_000))
    want = f.core.snapshot()
    cap = CoreCapture(f.core)
    f.run(churn(2000, 20_000, random.Random(5), 10**6), between=lambda: cap.step(1 << 16))
    cap.finish()
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(cap.to_bytes()))
    t.start()
    f.run(churn(5000, 20_000, random.Random(6), 2 * 10**6))
    t.join()
    assert out == [want]
    view = cap.view()                            # the same bytes, in a buffer the capture owns
    assert view == want and cap.view() == want
    cap.close()                                  # freed only once the views are released
    assert bytes(view[:8]) == b"HFTGWCOR" and view == want
    del view


def test_one_capture_at_a_time_and_close_before_done() -> None:
    f = Feeder(MatchingCore(ONE, initial_orders=1 << 10))
    f.run(deep_book(20_000))
    cap = CoreCapture(f.core)
    with pytest.raises(RuntimeError, match="under way"):
        CoreCapture(f.core)
    with pytest.raises(RuntimeError, match="not complete"):
        cap.to_bytes()
    cap.close()                                  # abandoned: the pool is writable again
    with pytest.raises(RuntimeError, match="closed"):
        cap.step(1)
    f.run(churn(5000, 20_000, random.Random(7), 10**6))
    second = CoreCapture(f.core)
    second.finish()
    assert second.to_bytes() == f.core.snapshot()
    second.close()
