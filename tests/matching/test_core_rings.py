"""MatchingCore at its edges: full rings and backpressure, growth of the pool, hash and levels,
memory, byte-identical determinism, the event tally (the order types are in test_core.py)."""
from __future__ import annotations

import pytest
from support.core_harness import (
    BUY,
    CANCEL,
    CMD_SIZE,
    GTC,
    IOC,
    LIMIT,
    MASS,
    NEW,
    QUERY,
    REPLACE,
    SELL,
    SYMBOLS,
    E,
    Harness,
    X,
    ev_dict,
    kinds,
)

from matching.core import EventTally, MatchingCore
from matching.records import EVENT_STRUCT, pack_command
from matching.ring import SpscRing

# ------------------------------------------------------------- rings and backpressure

def test_events_full_mid_command_calls_owner() -> None:
    h = Harness(events_capacity=4)
    calls = []

    def drain() -> None:
        calls.append(len(h.events))
        h._drain()

    h.core.on_events_full = drain
    for i in range(20):
        h.new(i + 1, SELL, 10000 + 100 * (i % 3), 1, session=2)
    evs = h.new(99, BUY, 10200, 20)          # 1 ack + 20 fills through a 4-slot ring
    assert kinds(evs) == [E.EVT_ACCEPTED] + [E.EVT_FILL] * 20
    assert calls and all(n == 4 for n in calls)
    assert [e["ref"] for e in evs[1:]] == list(range(1, 21))


def _rest_sells(core: MatchingCore, cq: SpscRing, eq: SpscRing, n: int) -> None:
    for i in range(n):
        cq.push(pack_command(type=NEW, session_id=2, cl_ord_id=i + 1, side=SELL, ord_type=LIMIT,
                             tif=GTC, price=10000, qty=1))
        assert core.process(cq, eq) == 1
        eq.pop()


def test_events_full_without_owner_raises() -> None:
    core = MatchingCore(SYMBOLS)
    cq, eq = SpscRing(16, CMD_SIZE), SpscRing(4, 128)
    _rest_sells(core, cq, eq, 4)
    cq.push(pack_command(type=NEW, session_id=1, cl_ord_id=9, side=BUY, ord_type=LIMIT, tif=GTC,
                         price=10000, qty=4))        # ack + 4 fills > 4 slots
    with pytest.raises(RuntimeError, match="on_events_full is None"):
        core.process(cq, eq)
    # the failed command counts as consumed, the events written so far are published, and the
    # book is consistent: 3 makers filled, the 4th untouched
    assert len(cq) == 0 and len(eq) == 4
    assert core.book_levels(0, SELL) == [(10000, 1, 1)] and core.order_count() == 1


def test_events_full_owner_frees_nothing_raises() -> None:
    core = MatchingCore(SYMBOLS)
    cq, eq = SpscRing(16, CMD_SIZE), SpscRing(2, 128)
    _rest_sells(core, cq, eq, 3)
    calls = []
    core.on_events_full = lambda: calls.append(1)
    cq.push(pack_command(type=NEW, session_id=1, cl_ord_id=9, side=BUY, ord_type=LIMIT, tif=GTC,
                         price=10000, qty=3))
    with pytest.raises(RuntimeError, match="did not free"):
        core.process(cq, eq)
    assert calls == [1] and len(eq) == 2


def test_stops_early_without_room_for_bounded_events() -> None:
    core = MatchingCore(SYMBOLS)
    cq, eq = SpscRing(16, CMD_SIZE), SpscRing(4, 128)
    for i in range(6):
        cq.push(pack_command(type=NEW, session_id=1, cl_ord_id=i + 1, side=BUY, ord_type=LIMIT,
                             tif=GTC, price=10000, qty=1))
    # each NEW needs room for 2 bounded events (ack + a possible cancel): 4 slots -> 3 commands
    assert core.process(cq, eq) == 3
    assert len(cq) == 3 and len(eq) == 3
    assert core.process(cq, eq) == 0                      # still only 1 free slot
    eq.pop()
    assert core.process(cq, eq) == 3 and len(eq) == 3
    assert core.order_count() == 6


def test_book_snapshot_needs_contiguous_room() -> None:
    h = Harness(events_capacity=8)
    for i in range(9):
        h.new(i + 1, BUY, 10000 - 100 * i, 1)
    q = h.cmd(type=QUERY, orig_cl_ord_id=1, symbol_id=0, depth=3)
    h.commands.push(pack_command(**q))
    h.events.push(bytes(128) * 6)                         # 6 slots busy, snapshot needs 4
    assert h.core.process(h.commands, h.events) == 0
    h.events.pop(3)
    assert h.core.process(h.commands, h.events) == 1
    h.events.pop(3)
    assert [ev_dict(t)["type"] for t in EVENT_STRUCT.iter_unpack(h.events.pop())] == [
        E.EVT_BOOK_SNAPSHOT] + [E.EVT_BOOK_LEVEL] * 3
    q = h.cmd(type=QUERY, orig_cl_ord_id=2, symbol_id=0, depth=20)   # 10 records > 8 slots
    h.commands.push(pack_command(**q))
    with pytest.raises(RuntimeError, match="cannot hold"):
        h.core.process(h.commands, h.events)


def test_max_commands_and_reentrancy() -> None:
    h = Harness()
    for i in range(5):
        h.commands.push(pack_command(**h.cmd(type=NEW, cl_ord_id=i + 1, side=BUY, ord_type=LIMIT,
                                             tif=GTC, price=10000, qty=1)))
    assert h.core.process(h.commands, h.events, 2) == 2
    assert h.core.process(h.commands, h.events, 0) == 0
    assert h.core.process(h.commands, h.events) == 3
    h.events.pop()
    # on_events_full may not call process again
    errors = []

    def reenter() -> None:
        try:
            h.core.process(h.commands, h.events)
        except RuntimeError as exc:
            errors.append(str(exc))
        h._drain()

    small = SpscRing(2, 128)

    def on_full() -> None:
        reenter()
        small.pop()

    h.core.on_events_full = on_full
    h.commands.push(pack_command(**h.cmd(type=NEW, cl_ord_id=9, side=SELL, ord_type=LIMIT, tif=GTC,
                                         price=10000, qty=5)))
    assert h.core.process(h.commands, small) == 1
    assert errors and "reentrant" in errors[0]


def test_wrong_ring_shapes_and_symbol_table() -> None:
    core = MatchingCore(SYMBOLS)
    with pytest.raises(ValueError):
        core.process(SpscRing(4, 128), SpscRing(4, 128))
    with pytest.raises(ValueError):
        core.process(SpscRing(4, CMD_SIZE), SpscRing(4, CMD_SIZE))
    with pytest.raises(ValueError):
        MatchingCore([(0, 10)])
    with pytest.raises(ValueError):
        MatchingCore([(1, 0)])
    with pytest.raises(ValueError):
        MatchingCore(SYMBOLS, initial_orders=0)
    with pytest.raises(ValueError):
        core.book_levels(2, BUY, 5)
    with pytest.raises(ValueError):
        core.book_levels(0, 3, 5)


# ------------------------------------------------------------------- growth, memory

def test_pool_and_hash_growth() -> None:
    h = Harness(initial_orders=1, events_capacity=1 << 13)
    cmds = [h.cmd(type=NEW, cl_ord_id=i, side=BUY if i % 2 else SELL, ord_type=LIMIT, tif=GTC,
                  price=(100 + i % 50) * 100 if i % 2 else (200 + i % 50) * 100, qty=1 + i % 7,
                  session_id=1 + i % 3) for i in range(3000)]
    for k in range(0, len(cmds), 1000):
        h.run(*cmds[k:k + 1000])
    st = h.core.memory_stats()
    assert st["resting_orders"] == 3000 == h.core.order_count()
    assert st["pool_capacity"] >= 3000 and st["hash_capacity"] * 3 >= 3000 * 4
    assert st["order_struct_bytes"] == 48
    assert st["levels"] == 50
    for i in range(0, 3000, 37):
        assert h.core.lookup(1 + i % 3, i) == h.ref.lookup(1 + i % 3, i)
    assert h.core.lookup(1, 3001) is None
    # cancel everything of session 2, then every other order of session 1
    h.run(h.cmd(type=MASS, cl_ord_id=1, symbol_id=0, session_id=2))
    h.run(*[h.cmd(type=CANCEL, cl_ord_id=9, orig_cl_ord_id=i, session_id=1) for i in range(0, 3000, 6)])
    assert h.core.order_count() == h.ref.order_count() == 1500
    assert h.levels(BUY) and h.levels(SELL)


def test_many_levels_any_order() -> None:
    """Hundreds of levels added and removed in random order: the level search (touch, short
    walk, binary search) and the per-order level hints must keep both sides sorted."""
    import random

    rng = random.Random(3)
    h = Harness(symbols=[(1, 1000)], events_capacity=1 << 12)
    live: list[tuple[int, int]] = []
    cl = 0
    for _ in range(8):
        cmds = []
        for _ in range(400):
            cl += 1
            side = rng.choice([BUY, SELL])
            price = rng.randint(1, 300) if side == BUY else rng.randint(301, 600)
            cmds.append(h.cmd(type=NEW, cl_ord_id=cl, side=side, ord_type=LIMIT, tif=GTC,
                              price=price, qty=rng.randint(1, 5), session_id=1 + cl % 2))
            live.append((1 + cl % 2, cl))
        h.run(*cmds)
        rng.shuffle(live)
        gone, live = live[:250], live[250:]
        h.run(*[h.cmd(type=CANCEL, cl_ord_id=0, orig_cl_ord_id=c, session_id=s) for s, c in gone])
        bids, asks = h.levels(BUY, depth=1000), h.levels(SELL, depth=1000)
        assert [p for p, _, _ in bids] == sorted((p for p, _, _ in bids), reverse=True)
        assert [p for p, _, _ in asks] == sorted(p for p, _, _ in asks)
        for p, _, _ in bids[::7]:
            assert h.core.level_orders(0, BUY, p) == h.ref.level_orders(0, BUY, p)
    assert len(bids) > 200 and len(asks) > 200


def test_determinism_byte_identical() -> None:
    import random

    rng = random.Random(7)
    recs = []
    for seq in range(1, 3001):
        t = rng.choice([NEW, NEW, NEW, CANCEL, REPLACE])
        recs.append(pack_command(seq=seq, ts=seq * 10, session_id=rng.randint(1, 3), symbol_id=0,
                                 type=t, side=rng.choice([BUY, SELL]), ord_type=LIMIT,
                                 tif=rng.choice([GTC, GTC, IOC]), cl_ord_id=rng.randint(1, 200),
                                 orig_cl_ord_id=rng.randint(1, 200), price=100 * rng.randint(90, 110),
                                 qty=rng.randint(1, 20)))
    blob = b"".join(recs)
    outs = []
    for _ in range(2):
        core = MatchingCore(SYMBOLS, initial_orders=16)
        cq, eq = SpscRing(1 << 12, CMD_SIZE), SpscRing(1 << 10, 128)
        out = bytearray()
        core.on_events_full = lambda eq=eq, out=out: out.extend(eq.pop())
        assert cq.push(blob) == 3000
        done = 0
        while done < 3000:          # process stops early when the ring lacks room for a command
            done += core.process(cq, eq)
            out.extend(eq.pop())
        outs.append(bytes(out))
    assert outs[0] == outs[1] and len(outs[0]) > 3000 * 128


def test_event_tally() -> None:
    h = Harness()
    h.new(1, SELL, 10000, 5)
    h.new(2, SELL, 10000, 5)
    cmds = [h.cmd(type=NEW, cl_ord_id=3, side=BUY, ord_type=LIMIT, tif=IOC, price=10000, qty=12),
            h.cmd(type=CANCEL, cl_ord_id=4, orig_cl_ord_id=1)]
    for c in cmds:
        h.commands.push(pack_command(**c))
    assert h.core.process(h.commands, h.events) == 2
    tally = EventTally()
    assert tally.drain(h.events) == 5 and len(h.events) == 0
    assert (tally.events, tally.fills, tally.fill_qty) == (5, 2, 10)
    assert tally.count(E.EVT_ACCEPTED) == 1 and tally.count(E.EVT_CANCEL_REJECTED) == 1
    assert tally.canceled(X.CXL_IOC_REMAINDER) == 1 and tally.canceled(X.CXL_USER) == 0
