"""Every order type, instruction and self-trade prevention mode end to end: a real gateway on
127.0.0.1, real TCP clients (gateway.clients.tcp.OrderClient), the responses decoded from the
wire (hftgw issue 3, item 1).  tests/integration/test_cli.py drives the same through the ``hftgw
client`` command."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from support.gateway_harness import login, make_config, metric_value, running_gateway, scrape, trading

from gateway.clients.tcp import OrderClient
from gateway.security.auth import mint_token
from matching.records import (
    CancelReason,
    Liquidity,
    OrdType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)
from protocol.messages import (
    BookQuery,
    BookSnapshot,
    CancelRejected,
    EndOfSession,
    Execution,
    MassCancel,
    MassCancelDone,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderReplaced,
    ReplaceOrder,
    SessionReject,
)

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL
LIMIT, MARKET, STOP, STOP_LIMIT = (OrdType.ORD_LIMIT, OrdType.ORD_MARKET, OrdType.ORD_STOP,
                                   OrdType.ORD_STOP_LIMIT)
DAY, GTC, IOC, FOK = TimeInForce.TIF_DAY, TimeInForce.TIF_GTC, TimeInForce.TIF_IOC, TimeInForce.TIF_FOK
X = CancelReason
PX = 1_500_000          # $150.00


def order(cl: int, side: int, qty: int, price: int = PX, *, symbol: str = "AAPL", ord_type: int = LIMIT,
          tif: int = GTC, **kw: Any) -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol=symbol, side=side, ord_type=ord_type,
                    time_in_force=tif, **kw)


def names(msgs: list[Any]) -> list[str]:
    return [type(m).__name__ for m in msgs]


async def until(c: OrderClient, kind: type, **match: Any) -> list[Any]:
    """Messages up to the first of type kind whose fields equal match."""
    return await c.recv_until(lambda m: isinstance(m, kind)
                              and all(getattr(m, k) == v for k, v in match.items()))


async def book(c: OrderClient, symbol: str = "AAPL") -> BookSnapshot:
    c.send(BookQuery(request_id=77, symbol=symbol, depth=10))
    snap = (await until(c, BookSnapshot))[-1]
    assert isinstance(snap, BookSnapshot)
    return snap


async def test_limit_market_ioc_fok_and_post_only(tmp_path: Path) -> None:
    async with trading(tmp_path, "maker", "taker") as (cfg, (mk, tk)):
        mk.send(order(1, SELL, 10, PX), order(2, SELL, 10, PX + 100))
        await until(mk, OrderAccepted, cl_ord_id=2)
        # FOK for more than there is within its limit: nothing trades
        tk.send(order(10, BUY, 15, PX, tif=FOK))
        got = await until(tk, OrderCanceled)
        assert names(got) == ["OrderAccepted", "OrderCanceled"]
        assert (got[1].reason, got[1].canceled_qty) == (X.CXL_FOK_UNFILLED, 15)
        # FOK that can fill: all of it at once, over two levels
        tk.send(order(11, BUY, 15, PX + 100, tif=FOK))
        got = await until(tk, Execution, leaves_qty=0)
        assert [(m.last_px, m.last_qty) for m in got if isinstance(m, Execution)] == [(PX, 10), (PX + 100, 5)]
        # IOC: fills what crosses, cancels the rest
        tk.send(order(12, BUY, 8, PX + 100, tif=IOC))
        got = await until(tk, OrderCanceled)
        assert names(got) == ["OrderAccepted", "Execution", "OrderCanceled"]
        assert (got[2].reason, got[2].canceled_qty) == (X.CXL_IOC_REMAINDER, 3)
        # market with no liquidity left: the remainder is canceled
        tk.send(order(13, BUY, 4, 0, ord_type=MARKET))
        got = await until(tk, OrderCanceled)
        assert names(got) == ["OrderAccepted", "OrderCanceled"]
        assert got[1].reason == X.CXL_NO_LIQUIDITY and got[0].price == 0
        # post-only: rests when passive, rejected when it would take, replace to cross refused
        mk.send(order(3, SELL, 5, PX + 500))
        await until(mk, OrderAccepted, cl_ord_id=3)
        tk.send(order(14, BUY, 5, PX + 500, flags=1), order(15, BUY, 5, PX + 400, flags=1))
        got = await until(tk, OrderAccepted, cl_ord_id=15)
        assert isinstance(got[0], OrderRejected) and got[0].reason == RejectReason.REJ_POST_ONLY_WOULD_TAKE
        tk.send(ReplaceOrder(cl_ord_id=15, orig_cl_ord_id=15, price=PX + 500, order_qty=5, symbol="AAPL"))
        rej = (await until(tk, CancelRejected))[-1]
        assert rej.reason == RejectReason.REJ_POST_ONLY_WOULD_TAKE
        assert [(lv.price, lv.size) for lv in (await book(tk)).bids] == [(PX + 400, 5)]


async def test_replace_priority_and_clean_rejects(tmp_path: Path) -> None:
    async with trading(tmp_path, "anna", "ben") as (cfg, (a, b)):
        a.send(order(1, SELL, 10), order(2, SELL, 10))
        await until(a, OrderAccepted, cl_ord_id=2)
        # quantity down keeps priority, quantity up loses it
        a.send(ReplaceOrder(cl_ord_id=1, orig_cl_ord_id=1, price=PX, order_qty=6, symbol="AAPL"))
        rep = (await until(a, OrderReplaced))[-1]
        assert rep.leaves_qty == 6
        b.send(order(20, BUY, 6))
        fills = [m for m in await until(b, Execution, leaves_qty=0) if isinstance(m, Execution)]
        assert [f.last_qty for f in fills] == [6]                       # order 1 still first
        a.send(ReplaceOrder(cl_ord_id=22, orig_cl_ord_id=2, price=PX, order_qty=12, symbol="AAPL"))
        await until(a, OrderReplaced)
        a.send(order(3, SELL, 1))
        await until(a, OrderAccepted, cl_ord_id=3)
        b.send(order(21, BUY, 1))
        f = [m for m in await until(b, Execution) if isinstance(m, Execution)][-1]
        assert f.order_id != rep.order_id and f.last_qty == 1            # order 3 now before 22
        # replace of a filled order and of an unknown one: clean rejects, the session goes on
        a.send(ReplaceOrder(cl_ord_id=30, orig_cl_ord_id=1, price=PX, order_qty=5, symbol="AAPL"),
               ReplaceOrder(cl_ord_id=31, orig_cl_ord_id=999, price=PX, order_qty=5, symbol="AAPL"))
        got = await until(a, CancelRejected, cl_ord_id=31)
        rejects = [m for m in got if isinstance(m, CancelRejected)]
        assert [r.reason for r in rejects] == [RejectReason.REJ_UNKNOWN_ORDER] * 2


async def test_iceberg_shows_a_slice_and_requeues(tmp_path: Path) -> None:
    async with trading(tmp_path, "ice", "other", "taker2") as (cfg, (a, b, t)):
        a.send(order(1, SELL, 30, display_qty=10))
        b.send(order(1, SELL, 5))
        await until(a, OrderAccepted)
        await until(b, OrderAccepted)
        snap = await book(t)
        assert [(lv.price, lv.size, lv.order_count) for lv in snap.asks] == [(PX, 15, 2)]
        t.send(order(5, BUY, 20))
        fills = [m for m in await until(t, Execution, leaves_qty=0) if isinstance(m, Execution)]
        # the iceberg's first slice, then the plain order (the new slice went to the back), then 5 more
        assert [f.last_qty for f in fills] == [10, 5, 5]
        maker = [m for m in await until(a, Execution, leaves_qty=15) if isinstance(m, Execution)]
        assert [(m.last_qty, m.leaves_qty, m.liquidity) for m in maker] == [
            (10, 20, Liquidity.LIQ_MAKER), (5, 15, Liquidity.LIQ_MAKER)]
        assert [(lv.price, lv.size) for lv in (await book(t)).asks] == [(PX, 5)]
        # an iceberg showing its whole quantity or more is refused
        a.send(order(2, SELL, 10, display_qty=10))
        assert (await until(a, OrderRejected))[-1].reason == RejectReason.REJ_INVALID_QUANTITY


async def test_stop_and_stop_limit_trigger_on_trades(tmp_path: Path) -> None:
    async with trading(tmp_path, "stopper", "mm") as (cfg, (s, m)):
        m.send(order(1, SELL, 5, PX), order(2, SELL, 5, PX + 200), order(3, BUY, 5, PX - 300))
        await until(m, OrderAccepted, cl_ord_id=3)
        # buy stop at 150.00 (market when triggered), sell stop-limit at 149.90 limit 149.70
        s.send(order(1, BUY, 3, 0, ord_type=STOP, stop_px=PX),
               order(2, SELL, 2, PX - 300, ord_type=STOP_LIMIT, stop_px=PX - 100, tif=DAY))
        got = await until(s, OrderAccepted, cl_ord_id=2)
        assert [g.ord_type for g in got] == [STOP, STOP_LIMIT]
        assert (await book(s)).asks[0].price == PX                     # pending stops are not in the book
        m.send(order(4, BUY, 2, PX))                                   # trades 2 at 150.00
        got = await until(s, Execution, cl_ord_id=1, leaves_qty=0)
        assert names(got) == ["OrderTriggered", "Execution"]
        trig, fill = got
        assert (trig.cl_ord_id, trig.stop_px, trig.ord_type, trig.price) == (1, PX, STOP, 0)
        assert (fill.last_px, fill.last_qty, fill.liquidity) == (PX, 3, Liquidity.LIQ_TAKER)
        # the sell stop-limit fires on a trade at or below 149.90 and trades at its limit or better
        m.send(order(5, SELL, 1, PX - 300))
        got = await until(s, Execution, cl_ord_id=2)
        assert names(got) == ["OrderTriggered", "Execution"]
        assert got[0].stop_px == PX - 100 and got[1].last_px == PX - 300


async def test_self_trade_prevention_every_mode(tmp_path: Path) -> None:
    async with trading(tmp_path, "selfie", "someone") as (cfg, (a, other)):
        cl = iter(range(100, 1000))

        async def resting(qty: int) -> int:
            c = next(cl)
            a.send(order(c, SELL, qty))
            await until(a, OrderAccepted, cl_ord_id=c)
            return c

        async def taker(qty: int, stp: int, **kw: Any) -> list[Any]:
            c = next(cl)
            a.send(order(c, BUY, qty, stp_mode=stp, **kw))
            return await a.recv_until(lambda m: isinstance(m, OrderCanceled) and m.orig_cl_ord_id == c
                                      and m.leaves_qty == 0 or isinstance(m, OrderAccepted)
                                      and m.cl_ord_id == c and stp == StpMode.STP_CANCEL_OLDEST)

        # CANCEL_NEWEST: the taker goes, the resting order stays
        r1 = await resting(10)
        got = await taker(4, StpMode.STP_CANCEL_NEWEST)
        assert names(got) == ["OrderAccepted", "OrderCanceled"]
        assert (got[1].reason, got[1].canceled_qty) == (X.CXL_SELF_TRADE, 4)
        # CANCEL_BOTH: the resting order first, then the taker
        got = await taker(4, StpMode.STP_CANCEL_BOTH)
        assert names(got) == ["OrderAccepted", "OrderCanceled", "OrderCanceled"]
        assert [(m.orig_cl_ord_id, m.canceled_qty) for m in got[1:]] == [(r1, 10), (got[0].cl_ord_id, 4)]
        # DECREMENT: both lose the smaller quantity; the bigger one lives on
        r2 = await resting(10)
        got = await taker(4, StpMode.STP_DECREMENT)
        assert [(m.orig_cl_ord_id, m.canceled_qty, m.leaves_qty) for m in got[1:]] == [
            (r2, 4, 6), (got[0].cl_ord_id, 4, 0)]
        assert [(lv.size, lv.order_count) for lv in (await book(a)).asks] == [(6, 1)]
        # CANCEL_OLDEST: the resting order goes and the taker trades with the next one
        other.send(order(1, SELL, 3))
        await until(other, OrderAccepted)
        c = next(cl)
        a.send(order(c, BUY, 3, stp_mode=StpMode.STP_CANCEL_OLDEST))
        got = await until(a, Execution, cl_ord_id=c, leaves_qty=0)
        assert names(got) == ["OrderAccepted", "OrderCanceled", "Execution"]
        assert (got[1].orig_cl_ord_id, got[1].reason) == (r2, X.CXL_SELF_TRADE)
        assert got[2].last_qty == 3
        # no STP (NONE): the account may trade with itself
        r3 = await resting(2)
        c = next(cl)
        a.send(order(c, BUY, 2))
        got = await until(a, Execution, cl_ord_id=r3)
        assert names(got).count("Execution") == 2                       # taker's and maker's
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_cancels_total", 'reason="self_trade"') == 6


async def test_session_default_stp_applies_to_orders_without_one(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        host, port = cfg.listen.rsplit(":", 1)
        a = await OrderClient.connect(host, int(port), mint_token(cfg.jwt_secret, "dflt"),
                                      default_stp_mode=StpMode.STP_CANCEL_NEWEST)
        a.send(order(1, SELL, 5), order(2, BUY, 5))
        got = await until(a, OrderCanceled)
        assert names(got) == ["OrderAccepted", "OrderAccepted", "OrderCanceled"]
        assert got[-1].orig_cl_ord_id == 2 and got[-1].reason == X.CXL_SELF_TRADE
        # the order's own mode wins over the default
        a.send(order(3, BUY, 5, stp_mode=StpMode.STP_CANCEL_OLDEST))
        got = await until(a, OrderCanceled)
        assert got[-1].orig_cl_ord_id == 1
        await a.logout()


async def test_mass_cancel_by_side_symbol_and_account(tmp_path: Path) -> None:
    async with trading(tmp_path, "massy") as (cfg, [a]):
        a.send(order(1, BUY, 1, PX - 100), order(2, SELL, 1, PX + 100),
               order(3, BUY, 1, PX - 100, symbol="MSFT"), order(4, SELL, 1, PX + 100, symbol="MSFT"),
               order(5, BUY, 1, 0, ord_type=STOP, stop_px=PX + 900))       # a pending stop counts too
        await until(a, OrderAccepted, cl_ord_id=5)
        a.send(MassCancel(cl_ord_id=10, symbol="AAPL", side=BUY))
        got = await until(a, MassCancelDone)
        assert [m.orig_cl_ord_id for m in got if isinstance(m, OrderCanceled)] == [1, 5]
        assert got[-1].canceled_count == 2
        a.send(MassCancel(cl_ord_id=11, symbol="", side=0, scope=1))      # the whole account
        got = await until(a, MassCancelDone)
        assert sorted(m.orig_cl_ord_id for m in got if isinstance(m, OrderCanceled)) == [2, 3, 4]
        assert all(m.reason == X.CXL_MASS_CANCEL for m in got if isinstance(m, OrderCanceled))


async def test_day_orders_expire_at_end_of_session_admin_only(tmp_path: Path) -> None:
    async with trading(tmp_path, "dayt") as (cfg, [t]):
        t.send(order(1, BUY, 5, PX - 100, tif=DAY), order(2, BUY, 5, PX - 200),
               order(3, SELL, 5, 0, ord_type=STOP, stop_px=PX - 900, tif=DAY),
               order(4, SELL, 5, PX + 100, symbol="MSFT", tif=DAY))
        await until(t, OrderAccepted, cl_ord_id=4)
        # a trader may not end the session
        t.send(EndOfSession(cl_ord_id=9, symbol="AAPL"))
        rej = (await until(t, SessionReject))[-1]
        assert (rej.reason, rej.ref_template_id) == (RejectReason.REJ_NOT_AUTHORIZED, 15)
        host, port = cfg.listen.rsplit(":", 1)
        admin = await OrderClient.connect(host, int(port), mint_token(cfg.jwt_secret, "ops", role="admin"))
        admin.send(EndOfSession(cl_ord_id=50, symbol="AAPL"))
        done = (await until(admin, MassCancelDone))[-1]
        assert (done.cl_ord_id, done.canceled_count) == (50, 2)
        got = await until(t, OrderCanceled, orig_cl_ord_id=3)
        assert [(m.cl_ord_id, m.reason) for m in got if isinstance(m, OrderCanceled)] == [
            (1, X.CXL_EXPIRED), (3, X.CXL_EXPIRED)]
        assert [(lv.price, lv.size) for lv in (await book(t)).bids] == [(PX - 200, 5)]    # GTC stays
        admin.send(EndOfSession(cl_ord_id=51, symbol=""))                                # every symbol
        assert (await until(admin, MassCancelDone))[-1].canceled_count == 1
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_rejects_total", 'reason="not_authorized"') == 1
        assert metric_value(text, "hftgw_cancels_total", 'reason="expired"') == 3
        await admin.logout()


async def test_restart_keeps_stops_icebergs_and_day_orders(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        a = await login(cfg, "keeper")
        a.send(order(1, SELL, 20, display_qty=5), order(2, BUY, 3, 0, ord_type=STOP, stop_px=PX),
               order(3, BUY, 1, PX - 500, tif=DAY))
        await until(a, OrderAccepted, cl_ord_id=3)
        await a.logout()
    async with running_gateway(cfg) as gw:
        assert gw.engine.core.stop_orders(0, BUY) == [(PX, 2)]
        assert gw.engine.account_ids == {"keeper": 1}               # rebuilt from the journal
        a = await login(cfg, "keeper")
        b = await login(cfg, "buyer")
        b.send(order(1, BUY, 1))                    # trades at 150.00: the stop fires and takes 3
        await until(b, Execution)
        got = await until(a, Execution, cl_ord_id=2, leaves_qty=0)
        assert "OrderTriggered" in names(got)
        assert [(lv.size, lv.order_count) for lv in (await book(a)).asks] == [(1, 1)]     # 20 - 1 - 3 shown 1
        lk = gw.engine.core.lookup(a.session_id, 1)
        assert lk is not None and lk["leaves"] == 16 and lk["visible"] == 1 and lk["account_id"] == 1
        assert gw.engine.account_ids == {"keeper": 1, "buyer": 2}
        await a.logout()
        await b.logout()
