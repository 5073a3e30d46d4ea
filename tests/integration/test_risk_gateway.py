"""Throttles, pre-trade risk, positions and the admin API through the real gateway on 127.0.0.1:
every risk reject code end to end, the accepted rate under a throttle, positions and limits
after a restart, the admin API (and its refusal of a trader token)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support.gateway_harness import make_config, metric_value, running_gateway, scrape

from gateway.clients.tcp import OrderClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import CancelReason, OrdType, RejectReason, Side, TimeInForce
from protocol.messages import (
    BookQuery,
    BookSnapshot,
    CancelOrder,
    CancelRejected,
    Execution,
    MassCancelDone,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PositionQuery,
    PositionReport,
    ReplaceOrder,
    SessionReject,
)

R = RejectReason
BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL

SYMBOLS = json.dumps([
    {"name": "AAPL", "tick": 100, "reference_price": 1_000_000, "price_band_ticks": 50,
     "max_order_qty": 1000, "max_notional": 50_000},              # $50,000 of price x qty
    {"name": "MSFT", "tick": 100, "reference_price": 2_000_000, "price_band_pct": 5.0},
    {"name": "GOOG", "tick": 100, "max_notional": 1_000_000},     # no reference price
])


def order(cl: int, side: int, price: int, qty: int, symbol: str = "AAPL", market: bool = False) -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=0 if market else price, order_qty=qty, symbol=symbol, side=side,
                    ord_type=OrdType.ORD_MARKET if market else OrdType.ORD_LIMIT,
                    time_in_force=TimeInForce.TIF_GTC)


async def connect(cfg: Config, account: str, role: str | list[str] = "trader") -> OrderClient:
    host, port = cfg.listen.rsplit(":", 1)
    return await OrderClient.connect(host, int(port), mint_token(cfg.jwt_secret, account, role))


async def answer(c: OrderClient, msg: Any) -> Any:
    c.send(msg)
    return await c.recv()


async def positions(c: OrderClient, symbol: str = "") -> dict[str, PositionReport]:
    c.send(PositionQuery(request_id=1, symbol=symbol))
    first = await c.recv()
    assert isinstance(first, PositionReport), first
    out = {first.symbol: first}
    for _ in range(first.report_count - 1):
        r = await c.recv()
        out[r.symbol] = r
    return out


def admin(cfg: Config, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://{cfg.metrics_listen}/admin{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def call_admin(cfg: Config, method: str, path: str, token: str | None,
                     body: Any = None) -> tuple[int, Any]:
    # the admin API hands work to this event loop: call it from another thread
    return await asyncio.to_thread(admin, cfg, method, path, token, body)


async def test_every_risk_reject_code_through_the_gateway(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, symbols=SYMBOLS,
                      risk=json.dumps({"max_open_orders": 4, "max_position_net": 300,
                                       "max_position_gross": 500,
                                       "accounts": {"carol": {"max_open_orders": 100}}}))
    async with running_gateway(cfg):
        a = await connect(cfg, "alice")
        cases = [
            (order(1, BUY, 1_005_100, 10), R.REJ_PRICE_BAND),        # 51 ticks over the reference
            (order(2, BUY, 2_100_100, 1, "MSFT"), R.REJ_PRICE_BAND),  # over 5 %
            (order(3, BUY, 1_000_000, 1001), R.REJ_MAX_ORDER_QTY),
            (order(4, BUY, 1_000_000, 501), R.REJ_MAX_NOTIONAL),       # $50,100 > $50,000
            (order(5, BUY, 0, 10, "GOOG", market=True), R.REJ_NO_REFERENCE_PRICE),
            (order(6, BUY, 1_000_000, 301), R.REJ_MAX_POSITION_NET),
        ]
        for msg, reason in cases:
            r = await answer(a, msg)
            assert isinstance(r, OrderRejected) and r.reason == reason, (msg, r)
        # worst case: resting buys count as if filled
        assert isinstance(await answer(a, order(10, BUY, 1_000_000, 200)), OrderAccepted)
        r = await answer(a, order(11, BUY, 999_900, 101))                 # 200 + 101 > 300
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_MAX_POSITION_NET
        assert isinstance(await answer(a, order(12, BUY, 999_900, 100)), OrderAccepted)
        r = await answer(a, order(13, SELL, 1_001_000, 201))              # gross 300 + 201 > 500
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_MAX_POSITION_GROSS
        r = await answer(a, order(14, SELL, 1_001_000, 100, "MSFT"))      # 50 % below the reference
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_PRICE_BAND
        assert isinstance(await answer(a, order(15, SELL, 2_001_000, 100, "MSFT")), OrderAccepted)
        assert isinstance(await answer(a, order(16, SELL, 2_002_000, 100, "MSFT")), OrderAccepted)
        r = await answer(a, order(17, SELL, 2_003_000, 1, "MSFT"))         # 5th open order
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_MAX_OPEN_ORDERS
        # a replace is checked on its new quantity and price; a cancel always passes
        r = await answer(a, ReplaceOrder(cl_ord_id=10, orig_cl_ord_id=10, price=1_000_000,
                                         order_qty=250, symbol="AAPL"))
        assert isinstance(r, CancelRejected) and r.reason == R.REJ_MAX_POSITION_NET
        r = await answer(a, ReplaceOrder(cl_ord_id=10, orig_cl_ord_id=10, price=1_006_000,
                                         order_qty=100, symbol="AAPL"))
        assert isinstance(r, CancelRejected) and r.reason == R.REJ_PRICE_BAND
        assert isinstance(await answer(a, CancelOrder(cl_ord_id=20, orig_cl_ord_id=15, symbol="MSFT")),
                          OrderCanceled)
        # a limit of the account overrides the default: carol may have more open orders
        c = await connect(cfg, "carol")
        for cl in range(1, 7):
            assert isinstance(await answer(c, order(cl, BUY, 999_000, 1)), OrderAccepted)
        _, text = scrape(cfg)
        for reason, n in (("price_band", 4), ("max_order_qty", 1), ("max_notional", 1),
                          ("no_reference_price", 1), ("max_position_net", 3),
                          ("max_position_gross", 1), ("max_open_orders", 1)):
            assert metric_value(text, "hftgw_rejects_total", f'reason="{reason}"') == n, reason
            assert metric_value(text, "hftgw_risk_rejects_total", f'reason="{reason}"') == n, reason
        assert metric_value(text, "hftgw_orders_received_total") == 20      # refused ones included
        await a.logout()
        await c.logout()


async def _rate_run(cfg: Config, seconds: float, per_tick: int) -> tuple[int, int, float]:
    """Offer ``per_tick`` orders every 50 ms for ``seconds``; (accepted, throttled, elapsed)."""
    c = await connect(cfg, "speedy")
    cl = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        c.send(*[order(cl + k, BUY, 990_000 - 100 * ((cl + k) % 20), 1) for k in range(1, per_tick + 1)])
        cl += per_tick
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    acc = rej = 0
    while acc + rej < cl:
        m = await c.recv()
        if isinstance(m, OrderAccepted):
            acc += 1
        else:
            assert isinstance(m, OrderRejected) and m.reason == R.REJ_THROTTLED, m
            rej += 1
    await c.logout()
    return acc, rej, elapsed


async def test_session_throttle_accepted_rate(tmp_path: Path) -> None:
    rate, burst = 200.0, 20.0
    cfg = make_config(tmp_path, throttle=json.dumps({"trader": {"session_rate": rate,
                                                                 "session_burst": burst}}))
    async with running_gateway(cfg):
        acc, rej, elapsed = await _rate_run(cfg, 2.0, 30)          # ~600/s offered
        expected = burst + rate * elapsed
        print(f"session throttle {rate}/s burst {burst}: accepted {acc} of {acc + rej} in "
              f"{elapsed:.2f} s, expected ~{expected:.0f} ({(acc - burst) / elapsed:.0f}/s after the burst)")
        assert abs(acc - expected) <= 0.1 * expected + 10
        assert rej > acc
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_throttled_total", 'scope="session"') == rej
        assert metric_value(text, "hftgw_rejects_total", 'reason="throttled"') == rej


async def test_account_throttle_binds_when_lower(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, throttle=json.dumps({"trader": {
        "session_rate": 1000, "session_burst": 50, "account_rate": 100, "account_burst": 10}}))
    async with running_gateway(cfg):
        acc, rej, elapsed = await _rate_run(cfg, 1.5, 20)           # ~400/s offered
        expected = 10 + 100 * elapsed
        assert abs(acc - expected) <= 0.1 * expected + 10
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_throttled_total", 'scope="account"') == rej
        assert metric_value(text, "hftgw_throttled_total", 'scope="session"') == 0


async def test_positions_and_limits_survive_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, risk=json.dumps({"max_open_orders": 3}))
    async with running_gateway(cfg):
        a, b = await connect(cfg, "alice"), await connect(cfg, "bob")
        for cl, px in ((1, 1_000_000), (2, 1_001_000)):
            assert isinstance(await answer(a, order(cl, SELL, px, 50)), OrderAccepted)
        b.send(order(1, BUY, 1_001_000, 70))
        await b.recv_until(lambda m: isinstance(m, Execution) and m.leaves_qty == 0)
        await a.recv_until(lambda m: isinstance(m, Execution) and m.cl_ord_id == 2)
        before_a, before_b = await positions(a), await positions(b, "AAPL")
        assert (before_a["AAPL"].net_position, before_a["AAPL"].open_sell_qty) == (-70, 30)
        assert before_a["AAPL"].avg_price == round((50 * 1_000_000 + 20 * 1_001_000) / 70)
        assert before_b["AAPL"].net_position == 70 and before_b["AAPL"].report_count == 1
        assert set(before_a) == {"AAPL", "AMZN", "GOOG", "INTC", "MSFT"}
        assert await answer(a, PositionQuery(request_id=2, symbol="NOPE")) == \
            SessionReject(reason=R.REJ_UNKNOWN_SYMBOL, ref_template_id=PositionQuery.TEMPLATE_ID)
        # an admin changes alice's open-order limit at run time (journaled)
        st, body = await call_admin(cfg, "POST", "/limits", mint_token(cfg.jwt_secret, "ops", "admin"),
                                    {"account": "alice", "limits": {"max_open_orders": 2}})
        assert st == 200 and body["applied"] == 1
        await a.logout()
        await b.logout()
    async with running_gateway(cfg) as gw:
        a, b = await connect(cfg, "alice"), await connect(cfg, "bob")
        after_a, after_b = await positions(a), await positions(b, "AAPL")
        assert after_a == before_a and after_b == before_b
        # alice has 1 live order and a limit of 2 from the journal: one more, then refused
        assert isinstance(await answer(a, order(3, SELL, 1_002_000, 1)), OrderAccepted)
        r = await answer(a, order(4, SELL, 1_002_000, 1))
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_MAX_OPEN_ORDERS
        assert gw.engine.risk.account_state("alice")["max_open_orders"] == 2
        await a.logout()
        await b.logout()


async def test_admin_api(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    admin_tok = mint_token(cfg.jwt_secret, "ops", "admin")
    trader_tok = mint_token(cfg.jwt_secret, "alice")
    async with running_gateway(cfg):
        # no token, a bad token, a trader token: refused
        assert (await call_admin(cfg, "GET", "/stats", None))[0] == 401
        assert (await call_admin(cfg, "GET", "/stats", "garbage"))[0] == 401
        st, body = await call_admin(cfg, "GET", "/stats", trader_tok)
        assert st == 403 and body["error"] == "forbidden"
        st, body = await call_admin(cfg, "POST", "/accounts/alice/kill", trader_tok)
        assert st == 403
        a, b = await connect(cfg, "alice"), await connect(cfg, "bob")
        for cl in (1, 2):
            assert isinstance(await answer(a, order(cl, BUY, 990_000 + cl * 100, 10)), OrderAccepted)
        st, stats = await call_admin(cfg, "GET", "/stats", admin_tok)
        assert st == 200
        assert stats["sessions"]["connected"] == 2 and stats["orders"]["resting"] == 2
        assert stats["orders"]["accepted"] == 2 and stats["sink"] == {"enabled": False}
        assert stats["orders"]["received"] == 2
        # halt / resume a symbol
        st, body = await call_admin(cfg, "POST", "/symbols/AAPL/halt", admin_tok)
        assert st == 200 and body["halted"] is True
        r = await answer(b, order(1, SELL, 1_000_000, 5))
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_SYMBOL_HALTED
        assert isinstance(await answer(b, BookQuery(request_id=1, symbol="AAPL")), BookSnapshot)
        assert (await call_admin(cfg, "POST", "/symbols/AAPL/resume", admin_tok))[1]["halted"] is False
        assert (await call_admin(cfg, "POST", "/symbols/NOPE/halt", admin_tok))[0] == 404
        # kill switch: alice's orders are canceled and new ones refused until released
        st, body = await call_admin(cfg, "POST", "/accounts/alice/kill", admin_tok)
        assert st == 200 and body == {"account": "alice", "blocked": True, "orders_canceled": 2}
        got = await a.recv_until(lambda m: isinstance(m, MassCancelDone))
        assert [(type(m).__name__, m.reason) for m in got[:-1]] == \
            [("OrderCanceled", CancelReason.CXL_KILL_SWITCH)] * 2
        r = await answer(a, order(3, BUY, 990_000, 1))
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_ACCOUNT_BLOCKED
        st, acct = await call_admin(cfg, "GET", "/accounts/alice", admin_tok)
        assert st == 200 and acct["blocked"] is True and acct["open_orders"] == 0
        assert (await call_admin(cfg, "GET", "/accounts/nobody", admin_tok))[0] == 404
        await call_admin(cfg, "POST", "/accounts/alice/release", admin_tok)
        assert isinstance(await answer(a, order(4, BUY, 990_000, 1)), OrderAccepted)
        # limits: validated as a whole before anything changes
        bad: Any
        for bad in ({"account": "alice", "limits": {"max_open_orders": -1}},
                    {"account": "alice", "limits": {"price_band_ticks": 3}},
                    {"symbol": "AAPL", "limits": {"max_open_orders": 3}},
                    {"symbol": "AAPL", "limits": {"reference_price": 1_000_050}},
                    {"account": "alice", "symbol": "AAPL", "limits": {"max_order_qty": 3}},
                    {"limits": {}}, {"account": "alice"}, "not an object"):
            st, body = await call_admin(cfg, "POST", "/limits", admin_tok, bad)
            assert st == 400, (bad, body)
        st, body = await call_admin(cfg, "POST", "/limits", admin_tok,
                                    {"symbol": "AAPL", "limits": {"reference_price": 1_000_000,
                                                                  "price_band_pct": 1.5}})
        assert st == 200 and body["applied"] == 2
        r = await answer(b, order(2, SELL, 1_015_100, 1))            # 1.51 % away
        assert isinstance(r, OrderRejected) and r.reason == R.REJ_PRICE_BAND
        st, syms = await call_admin(cfg, "GET", "/symbols", admin_tok)
        assert syms["symbols"]["AAPL"]["band_ppm"] == 15_000
        assert (await call_admin(cfg, "GET", "/nope", admin_tok))[0] == 404
        assert (await call_admin(cfg, "GET", "/accounts/alice/kill", admin_tok))[0] == 405
        await a.logout()
        await b.logout()
    audit = [json.loads(x) for x in (Path(cfg.journal_dir) / "audit.log").read_text().splitlines()]
    admin_lines = [x for x in audit if x["event"] == "admin"]
    # one line per request, reads included (issue 14, finding 7)
    done = [(x["method"], x["action"], x["account"]) for x in admin_lines if x["outcome"] == "ok"]
    assert done == [("GET", "stats", "ops"), ("POST", "halt", "ops"), ("POST", "resume", "ops"),
                    ("POST", "kill", "ops"), ("GET", "account", "ops"), ("POST", "release", "ops"),
                    ("POST", "limits", "ops"), ("GET", "symbols", "ops")]
    # refusals name the action the path asks for, and who asked when the token says so
    refused = [(x["status"], x["action"], x["account"]) for x in admin_lines if x["status"] in (401, 403)]
    assert refused == [(401, "stats", ""), (401, "stats", ""), (403, "stats", "alice"),
                       (403, "kill", "alice")]
    others = [(x["status"], x["action"], x["outcome"]) for x in admin_lines if x["status"] in (404, 405)]
    assert others == [(404, "halt", "unknown_symbol"), (404, "account", "unknown_account"),
                      (404, "unknown", "not_found"), (405, "kill", "method_not_allowed")]
    assert len(admin_lines) == len(done) + len(refused) + len(others) + 8     # and the 8 x 400
