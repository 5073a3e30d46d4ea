"""Differential tests: matching.core.MatchingCore against tests/reference_book.py.

Command streams over 3 sessions and 2 symbols (adds, cancels, replaces, IOC, FOK, market,
post-only, mass cancels, book queries and invalid commands) go through both; the event tuples
must be identical and the final books, live orders and id counters equal.  Hypothesis generates
short streams; a seeded 50k-command stream runs the same check at scale.
"""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_book import ReferenceCore

from matching.core import MatchingCore
from matching.records import (
    COMMAND_FIELDS,
    COMMAND_RECORD_SIZE,
    EVENT_STRUCT,
    UNKNOWN_SYMBOL,
    CommandType,
    pack_command,
)
from matching.ring import SpscRing

SYMBOLS = [(100, 40), (5, 25)]
SESSIONS = 3
CL_IDS = 12               # small ClOrdID space: duplicates, hits and misses are all common
KINDS = 16

# one command = a tuple of small ints, mapped to a record by make_command (so hypothesis can
# shrink it field by field and a seeded Random can draw the same shape)
FIELD_RANGES = (
    (0, KINDS - 1),       # kind
    (1, SESSIONS),        # session
    (0, 2),               # symbol: 0, 0, 1
    (1, CL_IDS),          # cl_ord_id
    (1, CL_IDS),          # orig_cl_ord_id / second id
    (1, 2),               # side
    (-4, 4),              # price level around 100 ticks (buys lower, sells higher)
    (1, 12),              # qty
    (0, 15),              # extra: variant selector
)


def make_command(seq: int, t: tuple[int, ...]) -> dict[str, int]:
    kind, session, sym, cl, cl2, side, plevel, qty, extra = t
    symbol = 0 if sym < 2 else 1
    tick = SYMBOLS[symbol][0]
    c = dict.fromkeys(COMMAND_FIELDS, 0)
    c.update(seq=seq, ts=1_000 + seq, session_id=session, symbol_id=symbol, cl_ord_id=cl,
             side=side, ord_type=1, tif=1, qty=qty,
             price=tick * (100 + plevel + (2 if side == 2 else -2)))   # sides overlap, books build up
    if kind <= 4:                                   # plain GTC limit
        c["type"] = CommandType.CMD_NEW
    elif kind == 5:
        c.update(type=CommandType.CMD_NEW, tif=3)   # IOC
    elif kind == 6:
        c.update(type=CommandType.CMD_NEW, tif=4, qty=qty * 2)   # FOK
    elif kind == 7:                                 # market, any tif
        c.update(type=CommandType.CMD_NEW, ord_type=2, tif=(1, 3, 4)[extra % 3], price=extra - 3)
    elif kind == 8:                                 # post-only (sometimes with IOC / market)
        c.update(type=CommandType.CMD_NEW, flags=1)
        if extra == 1:
            c["tif"] = 3
        elif extra == 2:
            c["ord_type"] = 2
    elif kind in (9, 10):
        c.update(type=CommandType.CMD_CANCEL, cl_ord_id=100 + cl, orig_cl_ord_id=cl2)
        if extra == 0:
            c["symbol_id"] = 1 - symbol
    elif kind in (11, 12):                          # replace: same id or a new one
        c.update(type=CommandType.CMD_REPLACE, orig_cl_ord_id=cl2,
                 cl_ord_id=cl2 if extra < 6 else cl, qty=qty + (extra % 4) * 10)
        if extra == 15:
            c["price"] += 1                          # off-tick
    elif kind == 13 and extra >= 5:                 # mostly more limit orders: deeper books
        c["type"] = CommandType.CMD_NEW
    elif kind == 13:                                # mass cancel: this symbol, all, disconnect
        c.update(type=CommandType.CMD_MASS_CANCEL, side=extra % 3, flags=1 if extra == 4 else 0)
        if extra >= 3:
            c.update(symbol_id=UNKNOWN_SYMBOL, depth=1 if extra == 3 else 0)
    elif kind == 14:
        # depth 1..3 keeps a snapshot within the smallest events ring used below (8 slots)
        c.update(type=CommandType.CMD_BOOK_QUERY, orig_cl_ord_id=cl, depth=1 + extra % 3)
    else:                                           # invalid / rare commands
        variant = extra % 8
        if variant == 0:
            c.update(type=CommandType.CMD_NEW, stp=1)
        elif variant == 1:
            c.update(type=CommandType.CMD_NEW, qty=SYMBOLS[symbol][1] + 1)
        elif variant == 2:
            c.update(type=CommandType.CMD_NEW, price=c["price"] + 1 if tick > 1 else -tick)
        elif variant == 3:
            c.update(type=CommandType.CMD_NEW, side=0)
        elif variant == 4:
            c.update(type=CommandType.CMD_NEW, symbol_id=2)
        elif variant == 5:
            c.update(type=77)
        elif variant == 6:
            c.update(type=CommandType.CMD_SESSION_OPEN)
        else:
            c.update(type=CommandType.CMD_BOOK_QUERY, symbol_id=UNKNOWN_SYMBOL, orig_cl_ord_id=cl)
    return c


def run_both(cmds: list[dict[str, int]], events_capacity: int, batch: int,
             cl_ids: int = CL_IDS) -> tuple[MatchingCore, ReferenceCore]:
    core = MatchingCore(SYMBOLS, initial_orders=4)
    ref = ReferenceCore(SYMBOLS)
    expected = []
    for c in cmds:
        expected.extend(ref.process(c))
    commands = SpscRing(1 << 16, COMMAND_RECORD_SIZE)
    events = SpscRing(events_capacity, 128)
    got: list[tuple[int, ...]] = []
    core.on_events_full = lambda: got.extend(EVENT_STRUCT.iter_unpack(events.pop()))
    blob = b"".join(pack_command(**c) for c in cmds)
    done = pos = 0
    while done < len(cmds):
        if pos < len(blob):
            pos += commands.push(blob[pos:pos + COMMAND_RECORD_SIZE * batch]) * COMMAND_RECORD_SIZE
        done += core.process(commands, events, batch)
        got.extend(EVENT_STRUCT.iter_unpack(events.pop()))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"event {i} differs"
    assert_same_state(core, ref, cl_ids)
    return core, ref


def assert_same_state(core: MatchingCore, ref: ReferenceCore, cl_ids: int) -> None:
    for sym in range(len(SYMBOLS)):
        for side in (1, 2):
            levels = core.book_levels(sym, side, 1000)
            assert levels == ref.book_levels(sym, side, 1000)
            for price, _, _ in levels:           # time priority inside every level
                assert core.level_orders(sym, side, price) == ref.level_orders(sym, side, price)
    assert core.order_count() == ref.order_count()
    for session in range(1, SESSIONS + 1):
        for cl in range(1, cl_ids + 1):
            assert core.lookup(session, cl) == ref.lookup(session, cl)
    assert core.next_order_id == ref.next_order_id
    assert core.next_trade_id == ref.next_trade_id


command_tuple = st.tuples(*(st.integers(lo, hi) for lo, hi in FIELD_RANGES))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command_tuple, max_size=150), st.sampled_from([8, 16, 4096]),
       st.sampled_from([1, 7, 1000]))
def test_core_matches_reference(tuples: list[tuple[int, ...]], events_capacity: int, batch: int) -> None:
    cmds = [make_command(i + 1, t) for i, t in enumerate(tuples)]
    run_both(cmds, events_capacity, batch)


def seeded_stream(n: int, seed: int, cl_ids: int) -> list[dict[str, int]]:
    rng = random.Random(seed)
    ranges = [(1, cl_ids) if k in (3, 4) else r for k, r in enumerate(FIELD_RANGES)]
    return [make_command(i + 1, tuple(rng.randint(lo, hi) for lo, hi in ranges)) for i in range(n)]


def test_seeded_50k_commands() -> None:
    cmds = seeded_stream(50_000, seed=20240601, cl_ids=60)
    core, ref = run_both(cmds, events_capacity=1 << 10, batch=4096, cl_ids=60)
    # the stream must actually exercise matching, not just rejects
    assert core.next_trade_id > 5_000 and core.next_order_id > 20_000
