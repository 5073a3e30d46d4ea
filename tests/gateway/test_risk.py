"""The pre-trade risk pass in isolation (gateway/risk/pretrade.pyx) against a real matching core and real
rings: every reject code, the worst-case position count, throttles, positions and P&L from
fills, admin records."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.risk.pretrade import AdminAction, RiskEngine, RiskField, admin_record, parse_admin
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_STRUCT,
    CommandType,
    EventType,
    OrdType,
    RejectReason,
    Side,
    TimeInForce,
    pack_command,
    unpack_event,
)
from matching.ring import SpscRing

R = RejectReason
BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL
TICK = 100
SYMBOLS = [(TICK, 1_000_000), (TICK, 1_000_000)]   # (tick, max qty) for the core
SEC = 1_000_000_000


class Pipe:
    """ring -> risk check -> core -> events observed by risk, as the engine runs them."""

    def __init__(self, symbols: list[dict[str, int]] | None = None,
                 limits: dict[str, dict[str, Any]] | None = None,
                 core_symbols: list[tuple[int, int]] | None = None) -> None:
        self.core = MatchingCore(core_symbols or SYMBOLS)
        lim = limits or {}
        self.risk = RiskEngine(symbols or [{"tick": TICK}, {"tick": TICK}], self.core, 64,
                               lambda name: lim.get(name, {}))
        self.inbound = SpscRing(1024, COMMAND_RECORD_SIZE)
        self.events = SpscRing(4096, 128)
        self.seq = 0
        for sid, name in ((1, "alice"), (2, "bob"), (3, "alice")):
            self.risk.bind_session(sid, name)

    def send(self, *cmds: dict[str, Any], ts: int = SEC) -> list[dict[str, int]]:
        """Push commands, check them as one batch, match; returns the events."""
        recs = []
        for c in cmds:
            self.seq += 1
            c = {"seq": self.seq, "ts": ts, "symbol_id": 0, **c}
            recs.append(pack_command(**c))
        assert self.inbound.push(b"".join(recs)) == len(recs)
        self.risk.check_recent(self.inbound, len(recs))
        self.core.process(self.inbound, self.events)
        self.risk.observe_events(self.events)
        self.risk.clear_pending()
        return [dict(zip(unpack_event(b).keys(), t, strict=True))
                for b in [self.events.pop()] for t in EVENT_STRUCT.iter_unpack(b)]


def new(cl: int, side: int, price: int, qty: int, sid: int = 1, sym: int = 0,
        market: bool = False, tif: int = TimeInForce.TIF_GTC) -> dict[str, Any]:
    return dict(type=CommandType.CMD_NEW, session_id=sid, symbol_id=sym, cl_ord_id=cl, side=side,
                ord_type=OrdType.ORD_MARKET if market else OrdType.ORD_LIMIT, tif=tif,
                price=0 if market else price, qty=qty)


def reasons(events: list[dict[str, int]]) -> list[int]:
    return [e["reason"] for e in events if e["type"] in (EventType.EVT_REJECTED,
                                                          EventType.EVT_CANCEL_REJECTED)]


def kinds(events: list[dict[str, int]]) -> list[str]:
    return [EventType(e["type"]).name.removeprefix("EVT_") for e in events]


def test_price_band_in_ticks_and_percent_against_reference_then_last_trade() -> None:
    p = Pipe([{"tick": TICK, "reference_price": 1_000_000, "band_ticks": 10},
              {"tick": TICK, "reference_price": 1_000_000, "band_ppm": 50_000}])   # 5 %
    ev = p.send(new(1, BUY, 1_001_000, 5), new(2, BUY, 1_001_100, 5), new(3, SELL, 998_900, 5))
    assert reasons(ev) == [R.REJ_PRICE_BAND, R.REJ_PRICE_BAND]      # 11 ticks away: refused
    assert kinds(ev)[0] == "ACCEPTED"
    ev = p.send(new(4, BUY, 1_050_000, 1, sym=1), new(5, BUY, 1_050_100, 1, sym=1))
    assert kinds(ev) == ["ACCEPTED", "REJECTED"] and reasons(ev) == [R.REJ_PRICE_BAND]
    # a trade moves the reference: the band now centres on the last trade price
    ev = p.send(new(6, SELL, 1_001_000, 5, sid=2))
    assert "FILL" in kinds(ev)
    assert p.risk.symbol_state(0)["last_price"] == 1_001_000
    ev = p.send(new(7, BUY, 1_002_000, 1))
    assert kinds(ev) == ["ACCEPTED"]


def test_quantity_and_notional_limits_of_symbol_and_account() -> None:
    p = Pipe([{"tick": TICK, "max_order_qty": 100, "max_notional": 150 * 1_000_000},
              {"tick": TICK}],
             {"bob": {"max_order_qty": 10, "max_notional": 5 * 1_000_000}})
    ev = p.send(new(1, BUY, 1_000_000, 100), new(2, BUY, 1_000_000, 101))
    assert reasons(ev) == [R.REJ_MAX_ORDER_QTY]
    ev = p.send(new(3, BUY, 2_000_000, 90))                    # 180 M > 150 M price units x lots
    assert reasons(ev) == [R.REJ_MAX_NOTIONAL]
    ev = p.send(new(4, BUY, 1_000_000, 11, sid=2, sym=1), new(5, BUY, 1_000_000, 6, sid=2, sym=1),
                new(6, BUY, 1_000_000, 5, sid=2, sym=1))
    assert reasons(ev) == [R.REJ_MAX_ORDER_QTY, R.REJ_MAX_NOTIONAL]
    assert kinds(ev)[-1] == "ACCEPTED"


def test_market_order_notional_uses_the_reference_and_needs_one() -> None:
    p = Pipe([{"tick": TICK, "max_notional": 10 * 1_000_000}, {"tick": TICK}])
    ev = p.send(new(1, BUY, 0, 5, market=True))
    assert reasons(ev) == [R.REJ_NO_REFERENCE_PRICE]
    p.risk.apply_admin(admin_record(AdminAction.SET_SYMBOL_LIMIT, symbol_id=0,
                                    field=RiskField.REFERENCE_PRICE, value=1_000_000))
    ev = p.send(new(2, BUY, 0, 11, market=True), new(3, BUY, 0, 10, market=True))
    assert reasons(ev) == [R.REJ_MAX_NOTIONAL]
    assert kinds(ev)[1:] == ["ACCEPTED", "CANCELED"]              # no liquidity: canceled


def test_max_open_orders_counts_live_and_in_flight_orders() -> None:
    p = Pipe(limits={"alice": {"max_open_orders": 3}})
    ev = p.send(*[new(i, BUY, 1_000_000 - i * TICK, 1) for i in range(1, 5)])
    assert kinds(ev) == ["ACCEPTED"] * 3 + ["REJECTED"]            # 4th refused in the same batch
    assert reasons(ev) == [R.REJ_MAX_OPEN_ORDERS]
    ev = p.send(new(9, BUY, 990_000, 1))
    assert reasons(ev) == [R.REJ_MAX_OPEN_ORDERS]                  # 3 resting
    # a fill that completes an order and a cancel each free a slot; session 3 is alice too
    p.send(new(20, SELL, 999_900, 1, sid=2))                       # fills cl 1 (best bid)
    ev = p.send(new(10, BUY, 990_000, 1, sid=3))
    assert kinds(ev) == ["ACCEPTED"]
    p.send(dict(type=CommandType.CMD_CANCEL, session_id=1, cl_ord_id=50, orig_cl_ord_id=2))
    assert kinds(p.send(new(11, BUY, 990_000, 1))) == ["ACCEPTED"]
    assert p.risk.account_state("alice")["open_orders"] == 3
    assert p.risk.pending() == (0, 0)


def test_worst_case_position_counts_open_orders() -> None:
    p = Pipe(limits={"alice": {"max_position_net": 100, "max_position_gross": 150}})
    # two resting buys of 60 would be a long of 120 if both filled: the second is refused
    ev = p.send(new(1, BUY, 990_000, 60), new(2, BUY, 980_000, 60))
    assert kinds(ev) == ["ACCEPTED", "REJECTED"] and reasons(ev) == [R.REJ_MAX_POSITION_NET]
    ev = p.send(new(3, BUY, 980_000, 40))                           # 60 + 40 = 100: at the limit
    assert kinds(ev) == ["ACCEPTED"]
    # a sell of 60 adds to the short side (0 + 60 < 100) but gross = 100 + 60 > 150
    ev = p.send(new(4, SELL, 1_010_000, 60))
    assert reasons(ev) == [R.REJ_MAX_POSITION_GROSS]
    assert kinds(p.send(new(5, SELL, 1_010_000, 50))) == ["ACCEPTED"]
    # fills turn open buys into position: the worst case does not change, so still refused
    p.send(new(30, SELL, 990_000, 60, sid=2))
    assert p.risk.position("alice", 0)["net"] == 60
    assert reasons(p.send(new(6, BUY, 900_000, 1))) == [R.REJ_MAX_POSITION_NET]
    # the other symbol has its own limits (same defaults), empty
    assert kinds(p.send(new(7, BUY, 900_000, 100, sym=1))) == ["ACCEPTED"]


def test_replace_is_checked_on_its_quantity_increase() -> None:
    p = Pipe(limits={"alice": {"max_position_net": 100}})
    p.send(new(1, BUY, 990_000, 80))
    rep = dict(type=CommandType.CMD_REPLACE, session_id=1, cl_ord_id=1, orig_cl_ord_id=1, price=990_000)
    ev = p.send({**rep, "qty": 101})
    assert kinds(ev) == ["CANCEL_REJECTED"] and reasons(ev) == [R.REJ_MAX_POSITION_NET]
    assert kinds(p.send({**rep, "qty": 100})) == ["REPLACED"]
    assert kinds(p.send({**rep, "qty": 50})) == ["REPLACED"]      # decreases always pass
    assert p.risk.position("alice", 0)["open_buy"] == 50
    # a new order and a replace of it in one batch: the replace counts on both sides
    ev = p.send(new(2, SELL, 1_100_000, 10),
                dict(type=CommandType.CMD_REPLACE, session_id=1, cl_ord_id=2, orig_cl_ord_id=2,
                     price=1_100_000, qty=60))
    assert kinds(ev) == ["ACCEPTED", "CANCEL_REJECTED"]           # 50 + 60 > 100 on the buy side


def test_throttle_per_session_and_account_and_cancels_never_throttled() -> None:
    p = Pipe()
    p.risk.set_session_throttle(1, 10, 5)            # 10/s, burst 5
    p.risk.set_account_throttle("bob", 2, 3)         # 2/s, burst 3
    ev = p.send(*[new(i, BUY, 900_000, 1) for i in range(1, 9)], ts=SEC)
    assert kinds(ev) == ["ACCEPTED"] * 5 + ["REJECTED"] * 3
    assert set(reasons(ev)) == {R.REJ_THROTTLED}
    ev = p.send(dict(type=CommandType.CMD_CANCEL, session_id=1, cl_ord_id=99, orig_cl_ord_id=1), ts=SEC)
    assert kinds(ev) == ["CANCELED"]
    ev = p.send(*[new(i, BUY, 900_000, 1) for i in range(10, 14)], ts=SEC + SEC // 5)  # +0.2 s: 2 tokens
    assert kinds(ev) == ["ACCEPTED"] * 2 + ["REJECTED"] * 2
    ev = p.send(*[new(i, SELL, 1_100_000, 1, sid=2) for i in range(1, 6)], ts=SEC)
    assert kinds(ev) == ["ACCEPTED"] * 3 + ["REJECTED"] * 2
    c = p.risk.counters()
    assert (c["throttled_session"], c["throttled_account"]) == (5, 2)


def test_halt_and_kill_switch_block_new_orders_not_cancels() -> None:
    p = Pipe()
    p.send(new(1, BUY, 990_000, 5))
    p.risk.apply_admin(admin_record(AdminAction.HALT, symbol_id=0))
    assert reasons(p.send(new(2, BUY, 990_000, 5))) == [R.REJ_SYMBOL_HALTED]
    assert kinds(p.send(new(3, BUY, 990_000, 5, sym=1))) == ["ACCEPTED"]
    p.risk.apply_admin(admin_record(AdminAction.RESUME, symbol_id=0))
    p.risk.apply_admin(admin_record(AdminAction.BLOCK, account="alice"))
    assert p.risk.blocked() == ["alice"]
    assert reasons(p.send(new(4, BUY, 990_000, 5))) == [R.REJ_ACCOUNT_BLOCKED]
    assert reasons(p.send(new(5, BUY, 990_000, 5, sid=3))) == [R.REJ_ACCOUNT_BLOCKED]  # every session
    assert kinds(p.send(new(6, BUY, 990_000, 5, sid=2))) == ["ACCEPTED"]               # bob trades
    ev = p.send(dict(type=CommandType.CMD_MASS_CANCEL, session_id=1, symbol_id=0xFFFFFFFF,
                     flags=2, cl_ord_id=7))
    assert kinds(ev) == ["CANCELED", "CANCELED", "MASS_CANCEL_DONE"]
    p.risk.apply_admin(admin_record(AdminAction.RELEASE, account="alice"))
    assert kinds(p.send(new(8, BUY, 990_000, 5))) == ["ACCEPTED"]


def test_positions_average_price_and_realized_pnl() -> None:
    p = Pipe()
    p.send(new(1, SELL, 1_000_000, 10, sid=2), new(2, SELL, 1_010_000, 10, sid=2))
    p.send(new(3, BUY, 1_010_000, 15))                     # buys 10 @ 100.00 and 5 @ 101.00
    pos = p.risk.position("alice", 0)
    assert (pos["net"], pos["avg_price"], pos["bought"]) == (15, 1_003_333, 15)
    assert p.risk.position("bob", 0)["net"] == -15
    p.send(new(4, BUY, 1_005_000, 10, sid=2))              # bob bids 100.50
    p.send(new(5, SELL, 1_005_000, 20))                    # alice sells 10 there, 10 rest
    pos = p.risk.position("alice", 0)
    # closed 10 of a 15-lot long that cost 15_050_000: 10_033_333 of the cost
    assert (pos["net"], pos["realized_pnl"]) == (5, 10 * 1_005_000 - 10_033_333)
    assert (pos["open_sell"], pos["sold"]) == (10, 10)
    p.send(new(6, BUY, 1_005_000, 10, sid=2))              # takes alice's 10: she goes short 5
    pos = p.risk.position("alice", 0)
    assert (pos["net"], pos["avg_price"], pos["open_sell"]) == (-5, 1_005_000, 0)
    assert pos["realized_pnl"] == 16_667 + 5 * 1_005_000 - 5_016_667
    assert p.risk.position("bob", 0)["net"] == 5
    assert p.risk.account_state("bob")["open_orders"] == 1     # his ask of 5 @ 101 rests


def test_symbols_defined_at_run_time_grow_every_per_symbol_array() -> None:
    """The gateway starts with no symbols and defines them from the journal: the symbol array and
    the positions of accounts that already exist grow (past the first allocation), limits given
    by symbol name apply, and the events of the new symbols update them."""
    p = Pipe(limits={"alice": {"max_position_net": 50, "symbols": {"S39": {"max_position_net": 5}}}},
             core_symbols=[(TICK, 1_000_000)] * 40)
    assert p.risk.n_symbols == 2 and p.risk.has_account("alice") and p.risk.has_account("bob")
    for i in range(2, 40):
        p.risk.define_symbol(i, {"name": f"S{i}", "tick": TICK, "max_order_qty": 7 if i == 39 else 0})
    assert p.risk.n_symbols == 40
    with pytest.raises(ValueError):
        p.risk.define_symbol(41, {"name": "GAP", "tick": TICK})
    ev = p.send(new(1, BUY, 1_000_000, 8, sym=39), new(2, BUY, 1_000_000, 6, sym=39),
                new(3, BUY, 1_000_000, 5, sym=39))
    assert reasons(ev) == [R.REJ_MAX_ORDER_QTY, R.REJ_MAX_POSITION_NET]   # symbol's, alice's by name
    assert kinds(ev)[-1] == "ACCEPTED"
    ev = p.send(new(4, SELL, 1_000_000, 5, sid=2, sym=39))
    assert "FILL" in kinds(ev)
    assert p.risk.position("alice", 39)["net"] == 5 and p.risk.position("bob", 39)["net"] == -5
    assert p.risk.position("alice", 38)["max_position_net"] == 50        # the account's own limit
    assert p.risk.symbol_state(39)["last_price"] == 1_000_000
    p.risk.define_symbol(39, {"name": "S39", "tick": 2 * TICK})           # a redefinition: tick only
    assert p.risk.symbol_state(39)["max_order_qty"] == 7
    p.risk.bind_session(4, "carol")                                       # a new account sees them all
    assert p.risk.position("carol", 39)["net"] == 0


def test_admin_records_round_trip_and_validation() -> None:
    rec = admin_record(AdminAction.SET_ACCOUNT_LIMIT, account="alice", symbol_id=1,
                       field=RiskField.MAX_POSITION_NET, value=42, ts=5)
    assert len(rec) == COMMAND_RECORD_SIZE
    assert parse_admin(rec) == {"action": 6, "field": 4, "value": 42, "ts": 5, "symbol_id": 1,
                                "account": "alice"}
    p = Pipe()
    assert p.risk.observe_commands(rec + pack_command(type=CommandType.CMD_NEW)) == 1
    assert p.risk.position("alice", 1)["max_position_net"] == 42
    assert p.risk.position("alice", 0)["max_position_net"] == 0
    for bad in (admin_record(AdminAction.HALT),                                     # no symbol
                admin_record(AdminAction.HALT, symbol_id=7),                        # unknown symbol
                admin_record(AdminAction.BLOCK),                                    # no account
                admin_record(AdminAction.SET_SYMBOL_LIMIT, symbol_id=0, field=RiskField.MAX_OPEN_ORDERS,
                             value=1),
                admin_record(AdminAction.SET_ACCOUNT_LIMIT, account="a", field=RiskField.MAX_OPEN_ORDERS,
                             value=-1),
                admin_record(AdminAction.SET_SYMBOL_LIMIT, symbol_id=0, field=RiskField.REFERENCE_PRICE,
                             value=150),                                            # off tick
                admin_record(99, account="a")):
        with pytest.raises(ValueError):
            p.risk.apply_admin(bad)
    with pytest.raises(ValueError):
        admin_record(AdminAction.BLOCK, account="x" * 33)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([BUY, SELL]), st.integers(-5, 5), st.integers(1, 30),
                          st.integers(1, 2), st.booleans()), min_size=1, max_size=60))
def test_open_quantities_and_positions_follow_the_book(orders: list[tuple[int, int, int, int, bool]]) -> None:
    """Whatever the flow, the kept open quantities equal the core's resting leaves, and net
    positions of the two accounts sum to zero and equal bought - sold."""
    p = Pipe(limits={"alice": {"max_position_net": 10_000}})
    for i, (side, lvl, qty, sid, cancel) in enumerate(orders, start=1):
        p.send(new(i, side, 1_000_000 + lvl * TICK, qty, sid=sid))
        if cancel and i > 3:
            p.send(dict(type=CommandType.CMD_CANCEL, session_id=sid, cl_ord_id=10_000 + i,
                        orig_cl_ord_id=i - 3))
    for account, sid in (("alice", 1), ("bob", 2)):
        pos = p.risk.position(account, 0)
        buys = sells = 0
        for cl in range(1, len(orders) + 1):
            o = p.core.lookup(sid, cl)
            if o is not None:
                if o["side"] == BUY:
                    buys += o["leaves"]
                else:
                    sells += o["leaves"]
        assert (pos["open_buy"], pos["open_sell"]) == (buys, sells)
        assert pos["net"] == pos["bought"] - pos["sold"]
        assert p.risk.account_state(account)["open_orders"] == sum(
            p.core.lookup(sid, cl) is not None for cl in range(1, len(orders) + 1))
    assert p.risk.position("alice", 0)["net"] + p.risk.position("bob", 0)["net"] == 0


def test_encoder_pass_observer_equals_a_separate_pass() -> None:
    """Outbound.set_observer: the risk state kept in the encoder's drain pass is the state a
    separate observe_events pass keeps, event for event."""
    from protocol.outbound import Outbound

    a, b = Pipe(), Pipe()
    ob = Outbound(["AAPL", "MSFT"], 64)
    ob.set_observer(b.risk)
    cmds = [new(1, SELL, 1_000_000, 10, sid=2), new(2, BUY, 1_000_100, 4),
            dict(type=CommandType.CMD_REPLACE, session_id=2, cl_ord_id=1, orig_cl_ord_id=1,
                 price=1_000_000, qty=8),
            new(3, BUY, 1_000_000, 9, sid=3), dict(type=CommandType.CMD_CANCEL, session_id=3,
                                                  cl_ord_id=4, orig_cl_ord_id=3)]
    for c in cmds:
        a.send(c)
        rec = pack_command(**{"seq": 1, "ts": SEC, "symbol_id": 0, **c})
        b.inbound.push(rec)
        b.risk.check_recent(b.inbound, 1)
        b.core.process(b.inbound, b.events)
        ob.drain(b.events, 0)
        b.risk.clear_pending()
    for acct in ("alice", "bob"):
        assert a.risk.position(acct, 0) == b.risk.position(acct, 0)
        assert a.risk.account_state(acct) == b.risk.account_state(acct)
    assert b.risk.position("alice", 0)["net"] == 8 and b.risk.position("alice", 0)["open_buy"] == 0
    ob.set_observer(None)
    b.send(new(5, SELL, 1_000_000, 3, sid=2), new(6, BUY, 1_000_000, 3))   # observe_events pass only
    assert b.risk.position("alice", 0)["net"] == 11
