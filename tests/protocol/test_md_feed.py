"""Market-data building blocks without sockets: the outbound encoder's market-data tap, the C
trade encoder (binary against the SBE codec, JSON against msgspec), the level diff and the
client-side sequence rule."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clients.md import DepthBook, GapError
from gateway.marketdata.topics import diff_levels
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    CommandType,
    EventType,
    OrdType,
    Side,
    TimeInForce,
    pack_command,
    pack_event,
)
from matching.ring import SpscRing
from protocol import codec
from protocol.mdfeed import TRADE_MESSAGE_SIZE, encode_trades
from protocol.mdjson import JsonDepthSnapshot, JsonDepthUpdate, JsonTrades, server_decoder, trades_prefix
from protocol.messages import BookLevel, DepthSnapshot, DepthUpdate, Trade
from protocol.outbound import Outbound

SYMBOLS = ["AAPL", "MSFT", 'Q"\\X']  # the last needs JSON escaping


def _new(ring: SpscRing, sid: int, cl: int, side: int, price: int, qty: int, ts: int, sym: int = 0,
         tif: int = TimeInForce.TIF_GTC) -> None:
    ring.push(pack_command(type=CommandType.CMD_NEW, session_id=sid, symbol_id=sym, side=side,
                           ord_type=OrdType.ORD_LIMIT, tif=tif, cl_ord_id=cl, price=price, qty=qty,
                           ts=ts))


def test_outbound_tap_lists_touched_symbols_and_copies_fills() -> None:
    core = MatchingCore([(100, 1_000_000)] * 3)
    inbound, events = SpscRing(1024, COMMAND_RECORD_SIZE), SpscRing(1024, EVENT_RECORD_SIZE)
    ob = Outbound(SYMBOLS, 16)
    ob.capture_events(True)  # the event log's capture keeps working next to the tap
    _new(inbound, 1, 1, Side.SIDE_SELL, 1_500_000, 100, ts=10)
    core.process(inbound, events)
    ob.drain(events, 0)
    assert ob.take_md_touched() == [] and ob.take_md_trades() == b""  # tap off
    ob.take_events()
    ob.md_tap(True, False)
    _new(inbound, 2, 1, Side.SIDE_BUY, 1_500_000, 30, ts=20)             # trades AAPL
    _new(inbound, 2, 2, Side.SIDE_BUY, 100, 5, ts=30, sym=1)              # rests on MSFT
    _new(inbound, 2, 3, Side.SIDE_BUY, 1_000_050, 5, ts=40, sym=2)        # rejected: off tick
    _new(inbound, 2, 4, Side.SIDE_BUY, 1_500_000, 20, ts=50)              # trades AAPL again
    core.process(inbound, events)
    ob.drain(events, 0)
    assert ob.take_md_touched() == [(0, 50), (1, 30)]   # first-touch order, last time stamp
    assert ob.take_md_touched() == []
    assert ob.take_md_trades() == b""                    # trades were not asked for
    ob.md_tap(True, True)
    _new(inbound, 2, 5, Side.SIDE_BUY, 1_500_000, 7, ts=60)
    core.process(inbound, events)
    ob.drain(events, 0)
    fills = ob.take_md_trades()
    assert len(fills) == 128 and fills == ob.take_events()[1][-128:]
    assert ob.take_md_touched() == [(0, 60)]
    _new(inbound, 2, 6, Side.SIDE_BUY, 1_500_000, 1, ts=70)
    core.process(inbound, events)
    ob.drain(events, 0)
    ob.md_tap(False, False)  # off drops what was collected
    assert ob.take_md_touched() == [] and ob.take_md_trades() == b""


FILL = int(EventType.EVT_FILL)


@st.composite
def fill_records(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, int, int, int, int]]]:
    n = draw(st.integers(0, 40))
    recs, fills = [], []
    for i in range(n):
        typ = draw(st.sampled_from([FILL, FILL, FILL, int(EventType.EVT_ACCEPTED)]))
        sym = draw(st.integers(0, len(SYMBOLS)))  # == len: outside the table, skipped
        price = draw(st.integers(-2**63, 2**63 - 1))
        qty = draw(st.integers(0, 2**64 - 1))
        ts = draw(st.integers(0, 2**64 - 1))
        side = draw(st.sampled_from([1, 2]))
        recs.append(pack_event(type=typ, symbol_id=sym, price=price, qty=qty, ts=ts, side=side,
                               ref=i + 1))
        if typ == FILL and sym < len(SYMBOLS):
            fills.append((sym, ts, i + 1, price, qty, side))
    return b"".join(recs), fills


@settings(max_examples=150, deadline=None)
@given(data=fill_records())
def test_encode_trades_binary_and_json_agree_with_the_codecs(
        data: tuple[bytes, list[tuple[int, int, int, int, int, int]]]) -> None:
    raw, fills = data
    table = codec.SymbolTable(SYMBOLS)
    out = encode_trades(raw, table)
    assert set(out) == {f[0] for f in fills}
    for sym, (sbe, js) in out.items():
        want = [f for f in fills if f[0] == sym]   # trade order kept per symbol
        assert sbe is not None and js is not None
        assert len(sbe) == len(want) * TRADE_MESSAGE_SIZE
        msgs, used = codec.decode_frames(sbe, sofh=False)
        assert used == len(sbe)
        assert msgs == [Trade(SYMBOLS[sym], ts, tid, px, q, side) for _, ts, tid, px, q, side in want]
        doc = server_decoder.decode(trades_prefix(SYMBOLS[sym]) + js + b"]}")
        assert isinstance(doc, JsonTrades) and doc.symbol == SYMBOLS[sym]
        assert [(t.transact_time, t.trade_id, t.price, t.qty, t.aggressor_side) for t in doc.trades] == [
            (ts, tid, px, q, "BUY" if side == 1 else "SELL") for _, ts, tid, px, q, side in want]


def test_encode_trades_options_and_errors() -> None:
    table = codec.SymbolTable(SYMBOLS)
    rec = pack_event(type=FILL, symbol_id=1, price=5, qty=6, ts=7, side=2, ref=8)
    assert encode_trades(rec, table, binary=False) == {1: (None, msgspec.json.encode(
        {"tradeId": 8, "price": 5, "qty": 6, "aggressorSide": "SELL", "transactTime": 7}))}
    assert encode_trades(rec, table, json=False)[1][1] is None
    assert encode_trades(b"", table) == {}
    with pytest.raises(ValueError):
        encode_trades(rec[:-1], table)


levels = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 9), st.integers(1, 3)), max_size=20,
                  unique_by=lambda t: t[0]).map(lambda ls: sorted(ls, reverse=True))


@given(old=levels, new=levels)
def test_diff_levels_turns_old_into_new(old: list[tuple[int, int, int]],
                                        new: list[tuple[int, int, int]]) -> None:
    d = diff_levels(old, new)
    book = {p: (q, c) for p, q, c in old}
    for p, q, c in d:
        if q:
            book[p] = (q, c)
        else:
            assert p in book
            del book[p]
    assert sorted(((p, *v) for p, v in book.items()), reverse=True) == new
    assert (d == []) == (old == new)
    assert len({p for p, _, _ in d}) == len(d)


def test_depth_book_sequence_rule() -> None:
    b = DepthBook("AAPL")
    upd = DepthUpdate("AAPL", 0, 1, 1, 5, [BookLevel(100, 5, 1)], [])
    assert not b.apply(upd)  # before a snapshot: ignored
    assert b.apply(DepthSnapshot("AAPL", 0, 7, 5, [BookLevel(100, 5, 1), BookLevel(99, 1, 1)],
                                 [BookLevel(101, 3, 2)]))
    assert b.last_seq == 7
    assert not b.apply(DepthUpdate("AAPL", 0, 6, 7, 5, [BookLevel(100, 0, 0)], []))  # old
    # the first update may start before lastSeq + 1 as long as it covers it
    assert b.apply(JsonDepthUpdate("AAPL", 0, 5, 8, 5, [(100, 0, 0), (98, 4, 1)], [(101, 2, 1)]))
    assert b.top(1) == [(99, 1, 1), (98, 4, 1)] and b.top(2) == [(101, 2, 1)]
    assert b.apply(DepthUpdate("AAPL", 0, 9, 12, 5, [], [BookLevel(102, 1, 1)]))
    with pytest.raises(GapError) as gap:
        b.apply(DepthUpdate("AAPL", 0, 14, 14, 5, [], []))
    assert (gap.value.last_seq, gap.value.first_seq) == (12, 14)
    assert b.apply(JsonDepthSnapshot("AAPL", 0, 20, 5, [], [(103, 1, 1)]))  # resync
    assert (b.last_seq, b.top(1), b.top(2)) == (20, [], [(103, 1, 1)])
    with pytest.raises(TypeError):
        b.apply(Trade("AAPL", 0, 1, 1, 1, 1))


def test_tap_follows_symbols_added_at_run_time() -> None:
    # the gateway starts with no symbols and defines them from the journal: the per-symbol tap
    # arrays must grow with the table (they once stayed at their first size and overran)
    ob = Outbound([], 8)
    ob.md_tap(True, True)
    for i in range(40):
        assert ob.add_symbol(f"S{i}") == i
    events = SpscRing(64, EVENT_RECORD_SIZE)
    for sym in (39, 7, 39):
        events.push(pack_event(type=EventType.EVT_ACCEPTED, symbol_id=sym, session_id=1, ts=100 + sym))
    ob.drain(events, 0)
    assert ob.take_md_touched() == [(39, 139), (7, 107)]
    assert ob.take_md_touched() == []
