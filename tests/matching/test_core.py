"""Unit tests of matching.core.MatchingCore, rule by rule (hftgw issue 2, item 3).

Every scenario runs through the real core over real SPSC rings and, in the same call, through
tests/support/reference_book.py; the two must produce identical event tuples.
"""
from __future__ import annotations

from typing import Any

import pytest
from support.core_harness import (
    BUY,
    CANCEL,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MASS,
    NEW,
    OPEN,
    QUERY,
    REPLACE,
    SELL,
    E,
    Harness,
    R,
    X,
    ev_dict,
    kinds,
    leaves,
)

from matching.core import MAX_BOOK_DEPTH
from matching.records import EVENT_FIELDS, UNKNOWN_SYMBOL


@pytest.fixture
def h() -> Harness:
    return Harness()


# -------------------------------------------------------------------------- new: rejects

def _each_value(reason: int, **values: tuple[int, ...]) -> list[tuple[dict[str, int], int]]:
    """One case per field value: (that field alone, the reject it draws)."""
    return [({name: v}, reason) for name, vs in values.items() for v in vs]


NEW_REJECTS = [
    *_each_value(R.REJ_UNKNOWN_SYMBOL, symbol_id=(2, UNKNOWN_SYMBOL)),
    *_each_value(R.REJ_INVALID_FIELD, side=(0, 3), ord_type=(0, 5), tif=(2, 5), flags=(2, 3), stp=(5,)),
    *_each_value(R.REJ_INVALID_QUANTITY, qty=(0, 1001)),
    *_each_value(R.REJ_INVALID_PRICE, price=(0, -100, 10050)),
    (dict(flags=1, tif=IOC), R.REJ_INVALID_FIELD),
    (dict(flags=1, tif=FOK), R.REJ_INVALID_FIELD),
    (dict(flags=1, ord_type=MARKET), R.REJ_INVALID_FIELD),          # empty opposite side
    # validation order: the first failing rule wins
    (dict(symbol_id=7, side=9, qty=0), R.REJ_UNKNOWN_SYMBOL),
    (dict(side=9, stp=1, qty=0), R.REJ_INVALID_FIELD),
    (dict(stp=7, qty=0, price=1), R.REJ_INVALID_FIELD),
    (dict(qty=0, price=1), R.REJ_INVALID_QUANTITY),
]


@pytest.mark.parametrize("fields,reason", NEW_REJECTS)
def test_new_reject(h: Harness, fields: dict[str, int], reason: int) -> None:
    c = dict(type=NEW, cl_ord_id=42, side=BUY, ord_type=LIMIT, tif=GTC, price=10000, qty=10)
    c.update(fields)
    evs = h.run(h.cmd(**c))
    assert kinds(evs) == [E.EVT_REJECTED]
    assert evs[0]["reason"] == reason and evs[0]["cl_ord_id"] == 42
    assert h.core.order_count() == 0 and h.core.next_order_id == 1


def test_market_order_ignores_price(h: Harness) -> None:
    h.new(1, SELL, 10000, 5)
    evs = h.new(2, BUY, -7, 5, ord_type=MARKET, tif=IOC)      # a bad price is not looked at
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL]
    assert evs[0]["price"] == 0 and evs[1]["price"] == 10000


def test_duplicate_live_cl_ord_id(h: Harness) -> None:
    h.new(7, BUY, 10000, 5)
    assert h.new(7, SELL, 20000, 5)[0]["reason"] == R.REJ_DUPLICATE_CL_ORD_ID
    assert kinds(h.new(7, BUY, 10000, 5, session=2)) == [E.EVT_ACCEPTED]      # other session
    h.new(8, SELL, 10000, 5)                                                    # fills 7 of session 1
    assert kinds(h.new(7, BUY, 9900, 5)) == [E.EVT_ACCEPTED]                    # no longer live


def test_post_only(h: Harness) -> None:
    h.new(1, SELL, 10100, 5)
    assert h.new(2, BUY, 10100, 5, flags=1)[0]["reason"] == R.REJ_POST_ONLY_WOULD_TAKE
    assert h.new(3, BUY, 10200, 5, flags=1)[0]["reason"] == R.REJ_POST_ONLY_WOULD_TAKE
    # the would-take rule is checked before the market / IOC combination rule
    assert h.new(4, BUY, 0, 5, flags=1, ord_type=MARKET)[0]["reason"] == R.REJ_POST_ONLY_WOULD_TAKE
    assert h.new(5, BUY, 10000, 5, flags=1, tif=IOC)[0]["reason"] == R.REJ_INVALID_FIELD
    evs = h.new(6, BUY, 10000, 5, flags=1)
    assert kinds(evs) == [E.EVT_ACCEPTED]
    assert h.levels(BUY) == [(10000, 5, 1)]


# ----------------------------------------------------------------------- new: matching

def test_accept_fields_and_ids(h: Harness) -> None:
    c = h.cmd(type=NEW, cl_ord_id=11, side=BUY, ord_type=LIMIT, tif=GTC, price=10000, qty=3,
              session_id=9, symbol_id=1, seq=77, ts=123456789)
    c["price"] = 10005
    (ev,) = h.run(c)
    assert ev == ev_dict(tuple({**dict.fromkeys(EVENT_FIELDS, 0), **dict(
        seq=77, ts=123456789, recv_ts=123456789, session_id=9, symbol_id=1, type=E.EVT_ACCEPTED,
        side=BUY, cl_ord_id=11, order_id=1, price=10005, qty=3, leaves=3, ord_type=LIMIT,
        tif=GTC)}[k] for k in EVENT_FIELDS))
    assert h.core.next_order_id == 2 and h.core.next_trade_id == 1
    assert h.core.lookup(9, 11) == {"order_id": 1, "side": BUY, "price": 10005, "qty": 3,
                                    "leaves": 3, "symbol_id": 1, "account_id": 0, "ord_type": LIMIT,
                                    "tif": GTC, "visible": 3, "stop_price": 0}


def test_price_time_priority_and_fill_fields(h: Harness) -> None:
    h.new(1, SELL, 10100, 5, session=2)      # order 1
    h.new(2, SELL, 10000, 3, session=3)      # order 2, better price
    h.new(3, SELL, 10000, 4, session=2)      # order 3, same price, later
    evs = h.new(9, BUY, 10100, 10)           # order 4
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL, E.EVT_FILL, E.EVT_FILL]
    f = evs[1:]
    assert [(e["contra_order_id"], e["price"], e["qty"]) for e in f] == [(2, 10000, 3), (3, 10000, 4),
                                                                          (1, 10100, 3)]
    assert [e["leaves"] for e in f] == [7, 3, 0]
    assert [e["contra_leaves"] for e in f] == [0, 0, 2]
    assert [e["ref"] for e in f] == [1, 2, 3]
    assert [e["contra_session"] for e in f] == [3, 2, 2]
    assert {(e["session_id"], e["cl_ord_id"], e["order_id"], e["side"]) for e in f} == {(1, 9, 4, BUY)}
    assert h.levels(SELL) == [(10100, 2, 1)] and h.levels(BUY) == []
    assert h.core.order_count() == 1 and h.core.next_trade_id == 4


def test_gtc_remainder_rests(h: Harness) -> None:
    h.new(1, SELL, 10000, 3)
    evs = h.new(2, BUY, 10100, 10)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL]
    assert h.levels(BUY) == [(10100, 7, 1)]
    assert leaves(h, 1, 2) == 7


def test_ioc_remainder_canceled(h: Harness) -> None:
    h.new(1, SELL, 10000, 3)
    h.new(2, SELL, 10200, 3)
    evs = h.new(3, BUY, 10100, 10, tif=IOC)
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL, E.EVT_CANCELED]
    cx = evs[-1]
    assert (cx["reason"], cx["qty"], cx["leaves"], cx["cl_ord_id"], cx["ref"], cx["price"]) == (
        X.CXL_IOC_REMAINDER, 7, 0, 3, 3, 10100)
    assert h.levels(BUY) == [] and h.core.lookup(1, 3) is None


def test_ioc_fully_filled_has_no_cancel(h: Harness) -> None:
    h.new(1, SELL, 10000, 10)
    assert kinds(h.new(2, BUY, 10000, 10, tif=IOC)) == [E.EVT_ACCEPTED, E.EVT_FILL]


def test_market_remainder_no_liquidity(h: Harness) -> None:
    h.new(1, BUY, 9000, 2)
    h.new(2, BUY, 8000, 2)
    evs = h.new(3, SELL, 0, 10, ord_type=MARKET, tif=GTC)     # market GTC is treated as IOC
    assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_FILL, E.EVT_FILL, E.EVT_CANCELED]
    assert [e["price"] for e in evs[1:3]] == [9000, 8000]
    assert (evs[-1]["reason"], evs[-1]["qty"]) == (X.CXL_NO_LIQUIDITY, 6)
    assert kinds(h.new(4, SELL, 0, 1, ord_type=MARKET, tif=IOC)) == [E.EVT_ACCEPTED, E.EVT_CANCELED]
    assert h.core.order_count() == 0


@pytest.mark.parametrize("limit,qty,fills", [
    (10200, 9, True),     # exactly the liquidity up to 10200
    (10200, 10, False),   # one lot short
    (10100, 6, False),    # liquidity exists, but beyond the limit
    (10100, 5, True),
    (0, 9, True),         # market FOK: any price
    (0, 10, False),
])
def test_fok_is_all_or_nothing(h: Harness, limit: int, qty: int, fills: bool) -> None:
    h.new(1, SELL, 10000, 2)
    h.new(2, SELL, 10100, 3)
    h.new(3, SELL, 10200, 4)
    before = h.levels(SELL)
    ord_type = MARKET if limit == 0 else LIMIT
    evs = h.new(9, BUY, limit, qty, tif=FOK, ord_type=ord_type)
    if fills:
        assert kinds(evs)[0] == E.EVT_ACCEPTED and set(kinds(evs)[1:]) == {E.EVT_FILL}
        assert sum(e["qty"] for e in evs[1:]) == qty
    else:
        assert kinds(evs) == [E.EVT_ACCEPTED, E.EVT_CANCELED]
        assert (evs[1]["reason"], evs[1]["qty"], evs[1]["leaves"]) == (X.CXL_FOK_UNFILLED, qty, 0)
        assert h.levels(SELL) == before
    assert h.levels(BUY) == []


# ---------------------------------------------------------------------------- cancel

def test_cancel(h: Harness) -> None:
    h.new(5, BUY, 10000, 4)
    h.new(6, BUY, 10000, 6)
    evs = h.run(h.cmd(type=CANCEL, cl_ord_id=50, orig_cl_ord_id=5))
    assert kinds(evs) == [E.EVT_CANCELED]
    e = evs[0]
    assert (e["reason"], e["cl_ord_id"], e["ref"], e["order_id"], e["qty"], e["leaves"], e["price"],
            e["side"]) == (X.CXL_USER, 50, 5, 1, 4, 0, 10000, BUY)
    assert h.levels(BUY) == [(10000, 6, 1)] and h.core.order_count() == 1


@pytest.mark.parametrize("session,symbol,orig", [
    (1, 0, 99),            # no such order
    (2, 0, 5),             # another session's ClOrdID
    (1, 1, 5),             # the order is on symbol 0
    (1, UNKNOWN_SYMBOL, 5),
])
def test_cancel_miss(h: Harness, session: int, symbol: int, orig: int) -> None:
    h.new(5, BUY, 10000, 4)
    evs = h.run(h.cmd(type=CANCEL, cl_ord_id=51, orig_cl_ord_id=orig, session_id=session,
                      symbol_id=symbol))
    assert kinds(evs) == [E.EVT_CANCEL_REJECTED]
    assert (evs[0]["reason"], evs[0]["cl_ord_id"], evs[0]["ref"]) == (R.REJ_UNKNOWN_ORDER, 51, orig)
    assert h.core.order_count() == 1


def test_cancel_twice(h: Harness) -> None:
    h.new(5, SELL, 10000, 4)
    c = dict(type=CANCEL, cl_ord_id=50, orig_cl_ord_id=5)
    assert kinds(h.run(h.cmd(**c), h.cmd(**c))) == [E.EVT_CANCELED, E.EVT_CANCEL_REJECTED]


# --------------------------------------------------------------------------- replace

def replace(h: Harness, orig: int, new: int, price: int, qty: int, **kw: Any) -> list[dict[str, int]]:
    return h.run(h.cmd(type=REPLACE, cl_ord_id=new, orig_cl_ord_id=orig, price=price, qty=qty, **kw))


def queue(h: Harness, side: int, price: int) -> list[int]:
    """Order ids at one price of symbol 0, next to match first."""
    got = h.core.level_orders(0, side, price)
    assert got == h.ref.level_orders(0, side, price)
    return got


def test_replace_rejects(h: Harness) -> None:
    h.new(1, BUY, 10000, 10)
    h.new(2, BUY, 10000, 10)
    h.new(3, SELL, 10000, 4)                     # order 1 now has cum 4, leaves 6
    cases = [
        (dict(orig=9, new=10, price=10000, qty=5), R.REJ_UNKNOWN_ORDER),
        (dict(orig=1, new=10, price=10000, qty=5, symbol_id=1), R.REJ_UNKNOWN_ORDER),
        (dict(orig=1, new=10, price=10000, qty=5, session_id=2), R.REJ_UNKNOWN_ORDER),
        (dict(orig=1, new=2, price=10000, qty=5), R.REJ_DUPLICATE_CL_ORD_ID),
        (dict(orig=1, new=10, price=10001, qty=5), R.REJ_INVALID_PRICE),
        (dict(orig=1, new=10, price=0, qty=5), R.REJ_INVALID_PRICE),
        (dict(orig=1, new=10, price=10000, qty=4), R.REJ_INVALID_QUANTITY),     # == cum qty
        (dict(orig=1, new=10, price=10000, qty=0), R.REJ_INVALID_QUANTITY),
        (dict(orig=1, new=10, price=10000, qty=1001), R.REJ_INVALID_QUANTITY),
        (dict(orig=1, new=2, price=0, qty=0), R.REJ_DUPLICATE_CL_ORD_ID),        # first rule wins
    ]
    for kw, reason in cases:
        evs = replace(h, kw.pop("orig"), kw.pop("new"), kw.pop("price"), kw.pop("qty"), **kw)
        assert kinds(evs) == [E.EVT_CANCEL_REJECTED], kw
        assert evs[0]["reason"] == reason, kw
    assert leaves(h, 1, 1) == 6 and h.levels(BUY) == [(10000, 16, 2)]


def test_replace_qty_down_keeps_priority(h: Harness) -> None:
    h.new(1, BUY, 10000, 10)
    h.new(2, BUY, 10000, 10)
    h.new(3, SELL, 10000, 4)                     # order 1: cum 4, leaves 6
    evs = replace(h, 1, 1, 10000, 7)             # same id, total 7 -> leaves 3
    assert kinds(evs) == [E.EVT_REPLACED]
    e = evs[0]
    assert (e["cl_ord_id"], e["ref"], e["order_id"], e["price"], e["qty"], e["leaves"]) == (
        1, 1, 1, 10000, 7, 3)
    assert queue(h, BUY, 10000) == [1, 2] and h.levels(BUY) == [(10000, 13, 2)]
    evs = replace(h, 1, 11, 10000, 10)           # leaves back up to 6: loses priority
    assert queue(h, BUY, 10000) == [2, 1]
    assert h.core.lookup(1, 1) is None and leaves(h, 1, 11) == 6
    assert h.levels(BUY) == [(10000, 16, 2)]
    # the next taker hits order 2 first
    evs = h.new(4, SELL, 10000, 1)
    assert evs[1]["contra_order_id"] == 2


def test_replace_same_leaves_keeps_priority(h: Harness) -> None:
    h.new(1, SELL, 10000, 5)
    h.new(2, SELL, 10000, 5)
    replace(h, 1, 21, 10000, 5)
    assert queue(h, SELL, 10000) == [1, 2]


def test_replace_price_change_loses_priority(h: Harness) -> None:
    h.new(1, SELL, 10000, 5)
    h.new(2, SELL, 10100, 5)
    replace(h, 1, 1, 10100, 3)                   # qty down but price changed
    assert queue(h, SELL, 10100) == [2, 1]
    assert h.levels(SELL) == [(10100, 8, 2)]


def test_replace_crossing_matches_as_taker(h: Harness) -> None:
    h.new(1, SELL, 10200, 5, session=2)
    h.new(2, SELL, 10300, 5, session=2)
    h.new(3, BUY, 10000, 8)
    evs = replace(h, 3, 33, 10200, 10)           # new leaves 10, crosses 10200 only
    assert kinds(evs) == [E.EVT_REPLACED, E.EVT_FILL]
    f = evs[1]
    assert (f["cl_ord_id"], f["order_id"], f["qty"], f["leaves"], f["contra_order_id"], f["price"]) == (
        33, 3, 5, 5, 1, 10200)
    assert h.levels(BUY) == [(10200, 5, 1)] and leaves(h, 1, 33) == 5
    evs = replace(h, 33, 34, 10300, 10)          # cum 5, new leaves 5, fills it completely
    assert kinds(evs) == [E.EVT_REPLACED, E.EVT_FILL]
    assert evs[1]["leaves"] == 0 and h.core.lookup(1, 34) is None
    assert h.core.order_count() == 0 and h.levels(BUY) == [] and h.levels(SELL) == []


# ----------------------------------------------------------------------- mass cancel

def test_mass_cancel(h: Harness) -> None:
    h.new(1, BUY, 10000, 1)
    h.new(2, BUY, 10100, 2)
    h.new(3, SELL, 10300, 3)
    h.new(4, BUY, 10100, 4, session=2)
    h.new(5, BUY, 1005, 5, symbol=1)
    evs = h.run(h.cmd(type=MASS, cl_ord_id=70, symbol_id=0, side=0))
    assert kinds(evs) == [E.EVT_CANCELED] * 3 + [E.EVT_MASS_CANCEL_DONE]
    # book order: bids best first, then asks
    assert [e["ref"] for e in evs[:3]] == [2, 1, 3]
    assert {(e["reason"], e["cl_ord_id"]) for e in evs[:3]} == {(X.CXL_MASS_CANCEL, 70)}
    assert (evs[-1]["count"], evs[-1]["cl_ord_id"]) == (3, 70)
    assert h.levels(BUY) == [(10100, 4, 1)] and h.levels(BUY, symbol=1) == [(1005, 5, 1)]


def test_mass_cancel_side_and_all_symbols(h: Harness) -> None:
    h.new(1, BUY, 10000, 1)
    h.new(2, SELL, 10300, 3)
    h.new(3, BUY, 1005, 5, symbol=1)
    h.new(4, SELL, 1010, 5, symbol=1)
    evs = h.run(h.cmd(type=MASS, cl_ord_id=71, symbol_id=UNKNOWN_SYMBOL, depth=1, side=SELL))
    assert [e["ref"] for e in evs if e["type"] == E.EVT_CANCELED] == [2, 4]
    assert evs[-1]["count"] == 2
    evs = h.run(h.cmd(type=MASS, cl_ord_id=72, symbol_id=UNKNOWN_SYMBOL, side=0, flags=1))
    assert [(e["ref"], e["reason"]) for e in evs[:-1]] == [(1, X.CXL_DISCONNECT), (3, X.CXL_DISCONNECT)]
    assert (evs[-1]["type"], evs[-1]["count"], evs[-1]["reason"]) == (E.EVT_MASS_CANCEL_DONE, 2,
                                                                     X.CXL_DISCONNECT)
    assert h.core.order_count() == 0
    evs = h.run(h.cmd(type=MASS, cl_ord_id=73, symbol_id=0))
    assert kinds(evs) == [E.EVT_MASS_CANCEL_DONE] and evs[0]["count"] == 0


@pytest.mark.parametrize("fields,reason", [
    (dict(symbol_id=UNKNOWN_SYMBOL, depth=0), R.REJ_UNKNOWN_SYMBOL),   # a symbol not in the table
    (dict(symbol_id=5), R.REJ_UNKNOWN_SYMBOL),
    (dict(symbol_id=0, side=3), R.REJ_INVALID_FIELD),
])
def test_mass_cancel_rejects(h: Harness, fields: dict[str, int], reason: int) -> None:
    h.new(1, BUY, 10000, 1)
    evs = h.run(h.cmd(type=MASS, cl_ord_id=74, **fields))
    assert kinds(evs) == [E.EVT_REJECTED] and evs[0]["reason"] == reason
    assert h.core.order_count() == 1


# ------------------------------------------------------------------------ book query

def test_book_query(h: Harness) -> None:
    for i in range(12):
        h.new(100 + i, BUY, 10000 - 100 * i, 1 + i)
    h.new(200, SELL, 11000, 3)
    h.new(201, SELL, 11000, 4, session=2)
    evs = h.run(h.cmd(type=QUERY, orig_cl_ord_id=555, symbol_id=0, depth=0))
    assert evs[0]["type"] == E.EVT_BOOK_SNAPSHOT
    assert (evs[0]["ref"], evs[0]["count"], evs[0]["count2"]) == (555, 10, 1)
    assert kinds(evs[1:]) == [E.EVT_BOOK_LEVEL] * 11
    assert [(e["price"], e["qty"], e["count"], e["flags"]) for e in evs[1:3]] == [
        (10000, 1, 1, 0), (9900, 2, 1, 0)]
    assert (evs[-1]["price"], evs[-1]["qty"], evs[-1]["count"], evs[-1]["flags"]) == (11000, 7, 2, 1)
    evs = h.run(h.cmd(type=QUERY, orig_cl_ord_id=556, symbol_id=0, depth=2))
    assert (evs[0]["count"], evs[0]["count2"], len(evs)) == (2, 1, 4)
    evs = h.run(h.cmd(type=QUERY, orig_cl_ord_id=557, symbol_id=1, depth=5))
    assert (evs[0]["count"], evs[0]["count2"], len(evs)) == (0, 0, 1)


def test_book_query_depth_up_to_the_maximum_is_answered_above_it_rejected(h: Harness) -> None:
    for i in range(MAX_BOOK_DEPTH + 5):
        h.new(i + 1, SELL, 20000 + 100 * i, 1)
    evs = h.run(h.cmd(type=QUERY, orig_cl_ord_id=1, symbol_id=0, depth=MAX_BOOK_DEPTH))
    assert (evs[0]["count"], evs[0]["count2"], len(evs)) == (0, MAX_BOOK_DEPTH, MAX_BOOK_DEPTH + 1)
    for depth in (MAX_BOOK_DEPTH + 1, 500, 65535):
        evs = h.run(h.cmd(type=QUERY, orig_cl_ord_id=2, symbol_id=0, depth=depth))
        assert kinds(evs) == [E.EVT_REJECTED]
        assert (evs[0]["reason"], evs[0]["cl_ord_id"]) == (R.REJ_INVALID_FIELD, 2)


def test_book_query_unknown_symbol(h: Harness) -> None:
    evs = h.run(h.cmd(type=QUERY, cl_ord_id=0, orig_cl_ord_id=558, symbol_id=UNKNOWN_SYMBOL))
    assert kinds(evs) == [E.EVT_REJECTED]
    assert (evs[0]["reason"], evs[0]["cl_ord_id"]) == (R.REJ_UNKNOWN_SYMBOL, 558)


def test_session_open_and_unknown_command(h: Harness) -> None:
    assert h.run(h.cmd(type=OPEN)) == []
    evs = h.run(h.cmd(type=99, cl_ord_id=5))
    assert kinds(evs) == [E.EVT_REJECTED] and evs[0]["reason"] == R.REJ_INVALID_FIELD
