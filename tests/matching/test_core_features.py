"""The issue-3 rules of matching.core one by one (each scenario also checked against the reference
book by the Harness of tests/support/core_harness.py), plus snapshot/restore, symbol add and the
timed processing hook.  The differential tests (test_core_property.py) cover the same rules on long
streams."""
from __future__ import annotations

from array import array

import pytest
from support.command_stream import SESSIONS, SYMBOLS, seeded_stream
from support.core_harness import CMD_SIZE, Differential, Harness, kinds

from matching.core import SNAPSHOT_VERSION, MatchingCore
from matching.records import (
    EVENT_STRUCT,
    UNKNOWN_SYMBOL,
    CancelReason,
    CommandType,
    EventType,
    RejectReason,
    StpMode,
    pack_command,
)
from matching.ring import SpscRing

E, X, R = EventType, CancelReason, RejectReason
BUY, SELL = 1, 2
LIMIT, MARKET, STOP, STOP_LIMIT = 1, 2, 3, 4
DAY, GTC, IOC, FOK = 0, 1, 3, 4
EOS = CommandType.CMD_END_OF_SESSION


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_stops_wait_then_trigger_in_stop_price_order(h: Harness) -> None:
    h.new(1, SELL, 10000, 1, session=2)
    h.new(2, SELL, 10100, 5, session=2)
    h.new(3, SELL, 10200, 5, session=2)
    # buy stops at 10100 (second) and 10000 (first), both market when triggered; no trade yet
    assert kinds(h.new(10, BUY, 0, 2, ord_type=STOP, stop_price=10100)) == [E.EVT_ACCEPTED]
    assert kinds(h.new(11, BUY, 0, 2, ord_type=STOP, stop_price=10000)) == [E.EVT_ACCEPTED]
    assert h.core.stop_orders(0, BUY) == [(10000, 5), (10100, 4)]
    assert h.core.last_trade_price(0) == 0
    evs = h.new(20, BUY, 10000, 1, session=3)              # trades at 10000: the 10000 stop fires,
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL,      # its trade at 10100 fires the other
                          E.EVT_TRIGGERED, E.EVT_FILL, E.EVT_TRIGGERED, E.EVT_FILL]
    assert [(e["cl_ord_id"], e["ref"]) for e in evs if e["type"] == E.EVT_TRIGGERED] == [(11, 10000),
                                                                                          (10, 10100)]
    assert [(e["price"], e["qty"]) for e in evs if e["type"] == E.EVT_FILL] == [(10000, 1), (10100, 2),
                                                                                 (10100, 2)]
    assert h.core.last_trade_price(0) == 10100 and h.core.stop_orders(0, BUY) == []


def test_stop_already_triggered_runs_at_once_and_stop_limit_rests(h: Harness) -> None:
    h.new(1, SELL, 10000, 1, session=2)
    h.new(2, BUY, 10000, 1, session=3)                     # last trade 10000
    h.new(3, SELL, 10300, 5, session=2)
    evs = h.new(10, BUY, 10200, 4, ord_type=STOP_LIMIT, stop_price=9900, tif=GTC)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_TRIGGERED]    # nothing at or under 10200: it rests
    assert h.levels(BUY) == [(10200, 4, 1)]
    lk = h.core.lookup(1, 10)
    assert lk is not None and lk["ord_type"] == STOP_LIMIT and lk["stop_price"] == 0


def test_iceberg_replenishes_to_the_back_and_fok_counts_the_reserve(h: Harness) -> None:
    h.new(1, SELL, 10000, 9, display_qty=3, session=2)
    h.new(2, SELL, 10000, 2, session=3)
    assert h.levels(SELL) == [(10000, 5, 2)]
    evs = h.new(10, BUY, 10000, 11, tif=FOK)               # 3 + 2 shown, but 11 fillable
    fills = [(e["contra_order_id"], e["qty"], e["contra_leaves"]) for e in evs if e["type"] == E.EVT_FILL]
    assert fills == [(1, 3, 6), (2, 2, 0), (1, 3, 3), (1, 3, 0)]
    assert h.levels(SELL) == []


def test_self_trade_decrement_reduces_the_reserve_first(h: Harness) -> None:
    # an order's account is its session's: sessions 7 and 8 belong to accounts 7 and 8
    h.new(1, SELL, 10000, 10, display_qty=4, session=7, account_id=7)
    evs = h.new(2, BUY, 10000, 5, session=7, account_id=7, stp=StpMode.STP_DECREMENT)
    assert [(e["ref"], e["qty"], e["leaves"], e["reason"]) for e in evs if e["type"] == E.EVT_CANCELED] == [
        (1, 5, 5, X.CXL_SELF_TRADE), (2, 5, 0, X.CXL_SELF_TRADE)]
    lk = h.core.lookup(7, 1)
    assert lk is not None and (lk["leaves"], lk["visible"]) == (5, 4)
    assert kinds(h.new(3, BUY, 10000, 5, session=8, account_id=8)) == [E.EVT_ACCEPTED] + [E.EVT_FILL] * 2


def test_fok_never_fills_when_a_self_trade_is_in_the_way(h: Harness) -> None:
    h.new(1, SELL, 10000, 5, session=1, account_id=1)
    h.new(2, SELL, 10000, 5, session=2, account_id=2)
    evs = h.new(3, BUY, 10000, 6, tif=FOK, session=2, account_id=2, stp=StpMode.STP_CANCEL_OLDEST)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_CANCELED] and evs[1]["reason"] == X.CXL_FOK_UNFILLED
    evs = h.new(4, BUY, 10000, 5, tif=FOK, session=2, account_id=2, stp=StpMode.STP_CANCEL_OLDEST)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL]      # filled before reaching its own order


def test_an_orders_account_is_its_sessions_latest(h: Harness) -> None:
    # The gateway stamps all of a session's commands with one account; the core keeps one
    # account per session, so STP and mass cancel by account follow the session's.
    h.new(1, SELL, 10000, 5, session=3, account_id=5)
    assert h.core.lookup(3, 1)["account_id"] == 5
    evs = h.new(2, BUY, 10000, 5, session=4, account_id=5, stp=StpMode.STP_CANCEL_NEWEST)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_CANCELED] and evs[1]["reason"] == X.CXL_SELF_TRADE
    h.new(3, BUY, 9000, 5, session=3, account_id=6)          # session 3 now is account 6's
    assert h.core.lookup(3, 1)["account_id"] == 6
    evs = h.new(4, BUY, 10000, 5, session=4, account_id=5, stp=StpMode.STP_CANCEL_NEWEST)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL]


def test_replace_of_post_only_that_would_cross_is_rejected(h: Harness) -> None:
    h.new(1, SELL, 10100, 5, session=2)
    h.new(2, BUY, 10000, 5, flags=1)
    evs = h.run(h.cmd(type=CommandType.CMD_REPLACE, cl_ord_id=2, orig_cl_ord_id=2, price=10100, qty=5))
    assert kinds(evs) == [E.EVT_CANCEL_REJECTED] and evs[0]["reason"] == R.REJ_POST_ONLY_WOULD_TAKE
    assert h.levels(BUY) == [(10000, 5, 1)]


def test_end_of_session_expires_day_orders_only(h: Harness) -> None:
    h.new(1, BUY, 9900, 1, tif=DAY)
    h.new(2, BUY, 9800, 1, tif=GTC)
    h.new(3, SELL, 0, 1, ord_type=STOP, stop_price=9000, tif=DAY, session=2)
    h.new(4, BUY, 50, 1, tif=DAY, symbol=1)
    evs = h.run(h.cmd(type=EOS, cl_ord_id=99, symbol_id=0, session_id=5))
    assert [(e["session_id"], e["cl_ord_id"], e["reason"]) for e in evs[:-1]] == [
        (1, 1, X.CXL_EXPIRED), (2, 3, X.CXL_EXPIRED)]
    assert evs[-1]["type"] == E.EVT_MASS_CANCEL_DONE and evs[-1]["count"] == 2 and evs[-1]["session_id"] == 5
    evs = h.run(h.cmd(type=EOS, cl_ord_id=100, symbol_id=UNKNOWN_SYMBOL, depth=1))
    assert evs[-1]["count"] == 1
    assert h.run(h.cmd(type=EOS, symbol_id=9))[0]["reason"] == R.REJ_UNKNOWN_SYMBOL


def test_emptied_levels_are_kept_reused_and_compacted(h: Harness) -> None:
    for i in range(40):
        h.new(i + 1, BUY, 5000 + 100 * i, 1)
    h.new(100, SELL, 20000, 1)
    for i in range(0, 38, 2):                              # empty every other level below the best
        h.run(h.cmd(type=CommandType.CMD_CANCEL, cl_ord_id=500 + i, orig_cl_ord_id=i + 1))
    assert len(h.levels(BUY, depth=100)) == 21
    assert h.core.memory_stats()["levels"] == 22
    snap = h.run(h.cmd(type=CommandType.CMD_BOOK_QUERY, orig_cl_ord_id=1, depth=5))
    assert snap[0]["count"] == 5 and [e["price"] for e in snap[1:6]] == [8900, 8800, 8700, 8500, 8300]
    h.new(300, BUY, 5200, 2)                               # back into an emptied level
    assert (5200, 2, 1) in h.levels(BUY, depth=100)
    for i in range(40, 80):                                # new levels: the empty ones get squeezed out
        h.new(i + 1, BUY, 100 * (i - 39), 1)
    assert len(h.levels(BUY, depth=1000)) == 62
    evs = h.new(200, SELL, 5000, 100)                      # sweeps the 22 bids >= 5000, skipping
    assert kinds(evs).count(E.EVT_FILL) == 22              # the emptied levels
    assert len(h.levels(BUY, depth=1000)) == 40 and h.levels(SELL)[0] == (5000, 77, 1)


def test_symbol_add_command_and_python_path() -> None:
    h = Harness()
    ADD = CommandType.CMD_SYMBOL_ADD
    assert kinds(h.run(h.cmd(type=ADD, symbol_id=5, price=10, qty=100))) == [E.EVT_REJECTED]   # not next id
    assert kinds(h.run(h.cmd(type=ADD, symbol_id=2, price=0, qty=100))) == [E.EVT_REJECTED]    # tick 0
    assert h.run(h.cmd(type=ADD, symbol_id=2, price=10, qty=100)) == []
    assert h.core.n_symbols == 3
    assert kinds(h.new(1, BUY, 20, 5, symbol=2)) == [E.EVT_ACCEPTED]
    assert h.new(2, BUY, 25, 5, symbol=2)[0]["reason"] == R.REJ_INVALID_PRICE       # tick 10
    rec = pack_command(type=ADD, symbol_id=3, price=1, qty=9, symbol="NEWSYM")
    assert rec[32:40] == b"NEWSYM\0\0" and len(rec) == CMD_SIZE
    core = MatchingCore([(1, 10)])
    assert core.add_symbol(5, 50) == 1 and core.n_symbols == 2
    with pytest.raises(ValueError):
        core.add_symbol(0, 50)


def test_snapshot_restore_long_stream_and_size() -> None:
    cmds = seeded_stream(20_000, seed=5)
    whole = Differential(SYMBOLS, 4096, 4096)
    whole.feed(cmds[:12_000])
    blob = whole.core.snapshot()
    live = whole.core.order_count()
    nlev = sum(len(whole.core.book_levels(s, side, 10**6)) for s in range(whole.core.n_symbols)
               for side in (1, 2))
    assert len(blob) == 64 + 48 * whole.core.n_symbols + 16 * nlev + 72 * live + 8
    restored = Differential(SYMBOLS, 4096, 4096, core=MatchingCore.restore(blob))
    restored.ref = whole.ref
    assert restored.core.snapshot() == blob                  # a snapshot of the copy is the same
    restored.feed(cmds[12_000:])
    restored.assert_same_state(SESSIONS, range(1, 40))


def test_snapshot_rejects_damage() -> None:
    core = MatchingCore([(1, 100)])
    cq, eq = SpscRing(16, CMD_SIZE), SpscRing(64, 128)
    cq.push(pack_command(seq=1, type=1, session_id=1, side=1, ord_type=1, tif=1, cl_ord_id=1, price=5, qty=3))
    core.process(cq, eq)
    blob = core.snapshot()
    assert blob[:8] == b"HFTGWCOR" and int.from_bytes(blob[8:12], "little") == SNAPSHOT_VERSION
    MatchingCore.restore(blob)
    for bad, what in [(b"X" + blob[1:], "magic"), (blob[:-1], "length"),
                      (blob[:100] + bytes([blob[100] ^ 1]) + blob[101:], "CRC32C"),
                      (blob[:8] + (9).to_bytes(4, "little") + blob[12:], "version"), (b"", "short")]:
        with pytest.raises(ValueError, match=what):
            MatchingCore.restore(bad)


def test_process_timed_reports_batches() -> None:
    core = MatchingCore([(1, 1000)])
    cq, eq = SpscRing(1024, CMD_SIZE), SpscRing(4096, 128)
    cq.push(b"".join(pack_command(seq=i + 1, type=1, session_id=1, side=1 + i % 2, ord_type=1, tif=1,
                                  cl_ord_id=i + 1, price=100 + i % 2, qty=1) for i in range(100)))
    out = array("Q", bytes(8 * 4))
    assert core.process_timed(cq, eq, 16, out) == (64, 4)            # stops when out is full
    assert all(ns > 0 for ns in out)
    out = array("Q", bytes(8 * 64))
    assert core.process_timed(cq, eq, 16, out) == (36, 3)
    evs = [EVENT_STRUCT.unpack(eq.pop(1)) for _ in range(len(eq))]
    assert len(evs) == 100 and all(e[4] == E.EVT_ACCEPTED for e in evs)
    with pytest.raises(ValueError):
        core.process_timed(cq, eq, 0, out)


def test_order_quantities_are_capped_at_32_bits() -> None:
    # the pool holds 32-bit quantities: a symbol's larger maximum is capped at 2**32 - 1
    hb = Harness([(1, 1 << 40)])
    assert kinds(hb.new(1, BUY, 100, (1 << 32) - 1)) == [E.EVT_ACCEPTED]
    evs = hb.new(2, BUY, 100, 1 << 32)
    assert kinds(evs) == [E.EVT_REJECTED] and evs[0]["reason"] == R.REJ_INVALID_QUANTITY
    lk = hb.core.lookup(1, 1)
    assert lk is not None and lk["qty"] == lk["leaves"] == (1 << 32) - 1
