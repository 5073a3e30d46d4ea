"""A matching core and the reference book (tests/support/reference_book.py) fed the same commands.

``Harness`` runs a few commands at a time and returns the events as dicts (the rule-by-rule tests in
tests/matching/); ``Differential`` feeds long streams in batches and compares the final state too.
The short names below are the ones those tests write their scenarios in.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from matching.core import MatchingCore
from matching.records import (
    COMMAND_FIELDS,
    COMMAND_RECORD_SIZE,
    EVENT_FIELDS,
    EVENT_STRUCT,
    CancelReason,
    CommandType,
    EventType,
    RejectReason,
    pack_command,
)
from matching.ring import SpscRing
from support.reference_book import ReferenceCore

NEW, CANCEL, REPLACE = CommandType.CMD_NEW, CommandType.CMD_CANCEL, CommandType.CMD_REPLACE
MASS, QUERY, OPEN = CommandType.CMD_MASS_CANCEL, CommandType.CMD_BOOK_QUERY, CommandType.CMD_SESSION_OPEN
E = EventType
R = RejectReason
CMD_SIZE = COMMAND_RECORD_SIZE
X = CancelReason
BUY, SELL = 1, 2
LIMIT, MARKET = 1, 2
GTC, IOC, FOK = 1, 3, 4
SYMBOLS = [(100, 1000), (5, 50)]        # symbol 0: tick $0.01, symbol 1: tick 5 units


def ev_dict(t: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(EVENT_FIELDS, t, strict=True))


class Harness:
    """One core and one reference fed the same commands; ``run`` returns the core's events as
    dicts after asserting the reference produced the same tuples."""

    def __init__(self, symbols: list[tuple[int, int]] = SYMBOLS, events_capacity: int = 1 << 12,
                 initial_orders: int = 64) -> None:
        self.core = MatchingCore(symbols, initial_orders=initial_orders)
        self.ref = ReferenceCore(symbols)
        self.commands = SpscRing(1 << 12, CMD_SIZE)
        self.events = SpscRing(events_capacity, 128)
        self.seq = 0
        self.core.on_events_full = self._drain
        self.drained: list[tuple[int, ...]] = []

    def _drain(self) -> None:
        raw = self.events.pop()
        self.drained.extend(EVENT_STRUCT.iter_unpack(raw))

    def cmd(self, **kw: Any) -> dict[str, int]:
        self.seq += 1
        c = dict.fromkeys(COMMAND_FIELDS, 0)
        c.update(seq=self.seq, ts=1_700_000_000_000_000_000 + self.seq * 1000, session_id=1)
        c.update(kw)
        return c

    def run(self, *cmds: dict[str, int]) -> list[dict[str, int]]:
        expected: list[tuple[int, ...]] = []
        for c in cmds:
            expected.extend(self.ref.process(c))
            assert self.commands.push(pack_command(**c)) == 1
        self.drained = []
        consumed = self.core.process(self.commands, self.events)
        assert consumed == len(cmds)
        self._drain()
        got = self.drained
        assert got == expected
        return [ev_dict(t) for t in got]

    def new(self, cl: int, side: int, price: int, qty: int, session: int = 1, symbol: int = 0,
            ord_type: int = LIMIT, tif: int = GTC, **kw: Any) -> list[dict[str, int]]:
        return self.run(self.cmd(type=NEW, cl_ord_id=cl, side=side, price=price, qty=qty,
                                 session_id=session, symbol_id=symbol, ord_type=ord_type, tif=tif, **kw))

    def levels(self, side: int, symbol: int = 0, depth: int = 100) -> list[tuple[int, int, int]]:
        got = self.core.book_levels(symbol, side, depth)
        assert got == self.ref.book_levels(symbol, side, depth)
        return got


def leaves(h: Harness, session: int, cl_ord_id: int) -> int:
    o = h.core.lookup(session, cl_ord_id)
    assert o is not None and o == h.ref.lookup(session, cl_ord_id)
    return o["leaves"]


def kinds(events: list[dict[str, int]]) -> list[int]:
    return [e["type"] for e in events]


class Differential:
    """A core and a reference fed the same commands in batches; every event compared."""

    def __init__(self, symbols: list[tuple[int, int]], events_capacity: int, batch: int,
                 core: MatchingCore | None = None) -> None:
        self.core = core if core is not None else MatchingCore(symbols, initial_orders=4)
        self.ref = ReferenceCore(symbols)
        self.commands = SpscRing(1 << 14, COMMAND_RECORD_SIZE)
        self.events = SpscRing(events_capacity, 128)
        self.batch = min(batch, self.commands.capacity)
        self.got: list[tuple[int, ...]] = []
        self.core.on_events_full = self._drain
        self.n_events = 0
        self.counts: dict[int, int] = {}

    def _drain(self) -> None:
        self.got.extend(EVENT_STRUCT.iter_unpack(self.events.pop()))

    def feed(self, cmds: Iterable[dict[str, int]]) -> None:
        it = iter(cmds)
        while True:
            chunk = list(itertools.islice(it, self.batch))
            if not chunk:
                return
            expected = [e for c in chunk for e in self.ref.process(c)]
            blob = b"".join(pack_command(**c) for c in chunk)
            assert self.commands.push(blob) == len(chunk)
            self.got = []
            done = 0
            while done < len(chunk):
                done += self.core.process(self.commands, self.events)
                self._drain()
            assert len(self.got) == len(expected), (chunk[0]["seq"], len(self.got), len(expected))
            for i, (g, e) in enumerate(zip(self.got, expected, strict=True)):
                assert g == e, f"event {i} of the batch from seq {chunk[0]['seq']} differs"
            for g in self.got:
                self.counts[g[4]] = self.counts.get(g[4], 0) + 1
            self.n_events += len(self.got)

    def assert_same_state(self, sessions: int, cl_ids: Iterable[int]) -> None:
        core, ref = self.core, self.ref
        assert core.n_symbols == ref.n_symbols
        for sym in range(ref.n_symbols):
            assert core.last_trade_price(sym) == ref.last_trade_price(sym)
            for side in (1, 2):
                levels = core.book_levels(sym, side, 100_000)
                assert levels == ref.book_levels(sym, side, 100_000)
                for price, _, _ in levels:           # time priority inside every level
                    assert core.level_orders(sym, side, price) == ref.level_orders(sym, side, price)
                assert core.stop_orders(sym, side) == ref.stop_orders(sym, side)
        assert core.order_count() == ref.order_count()
        for key, o in ref.live.items():
            assert core.lookup(*key) == ref.lookup(*key), (key, o)
        ids = list(cl_ids)
        for session in range(1, sessions + 1):
            for cl in ids:
                assert core.lookup(session, cl) == ref.lookup(session, cl)
        assert core.next_order_id == ref.next_order_id
        assert core.next_trade_id == ref.next_trade_id
