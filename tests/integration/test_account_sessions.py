"""Several trading sessions of one account (a venue's several order-entry ports), end to end over
real sockets: self-trade prevention, mass cancel by account, positions and pre-trade risk are the
account's across its sessions, and the sessions-per-account limit counts trading sessions and
drop copies apart (hftgw issue 14, item 2)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from support.gateway_harness import make_config, running_gateway

from gateway.clients.tcp import LoginError, OrderClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching import records as rec
from protocol import messages as pm

BUY, SELL = rec.Side.SIDE_BUY, rec.Side.SIDE_SELL
PX = 1_500_000


def order(cl: int, side: int, qty: int, price: int = PX, **kw: Any) -> pm.NewOrder:
    return pm.NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol="AAPL", side=side,
                    ord_type=rec.OrdType.ORD_LIMIT, time_in_force=rec.TimeInForce.TIF_GTC, **kw)


async def port(cfg: Config, account: str, session: str = "", role: str = "trader",
               **kw: Any) -> OrderClient:
    """A login of ``account``'s trading session ``session`` (its order-entry port)."""
    host, p = cfg.listen.rsplit(":", 1)
    return await OrderClient.connect(host, int(p), mint_token(cfg.jwt_secret, account, role,
                                                              session=session), **kw)


async def until(c: OrderClient, kind: type, **match: Any) -> list[Any]:
    return await c.recv_until(lambda m: isinstance(m, kind)
                              and all(getattr(m, k) == v for k, v in match.items()))


async def refused(cfg: Config, account: str, session: str = "", role: str = "trader") -> int:
    with pytest.raises(LoginError) as e:
        c = await port(cfg, account, session, role)
        await c.close()
    return e.value.reason


async def positions(c: OrderClient) -> pm.PositionReport:
    c.send(pm.PositionQuery(request_id=5, symbol="AAPL"))
    r = (await until(c, pm.PositionReport))[-1]
    assert isinstance(r, pm.PositionReport)
    return r


async def test_sessions_of_one_account_are_apart_but_one_for_stp(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        a1 = await port(cfg, "firm", "port1")
        a2 = await port(cfg, "firm", "port2")
        other = await port(cfg, "rival")
        assert len({a1.session_id, a2.session_id, other.session_id}) == 3
        # each port is one connection at a time
        assert await refused(cfg, "firm", "port1") == rec.LoginRejectReason.LOGIN_SESSION_IN_USE
        # ClOrdIDs are per session: both ports may use 1
        a1.send(order(1, SELL, 10))
        await until(a1, pm.OrderAccepted, cl_ord_id=1)
        # STP across the account's sessions: port2's crossing buy does not trade with port1's sell
        a2.send(order(1, BUY, 4, stp_mode=rec.StpMode.STP_CANCEL_NEWEST))
        got = await until(a2, pm.OrderCanceled, orig_cl_ord_id=1)
        assert [type(m).__name__ for m in got] == ["OrderAccepted", "OrderCanceled"]
        assert (got[1].reason, got[1].canceled_qty) == (rec.CancelReason.CXL_SELF_TRADE, 4)
        # CANCEL_OLDEST: the resting order of the other session goes, and its owner is told
        a2.send(order(2, BUY, 4, stp_mode=rec.StpMode.STP_CANCEL_OLDEST))
        await until(a2, pm.OrderAccepted, cl_ord_id=2)
        gone = (await until(a1, pm.OrderCanceled, orig_cl_ord_id=1))[-1]
        assert (gone.reason, gone.canceled_qty) == (rec.CancelReason.CXL_SELF_TRADE, 10)
        # another account does trade with it
        other.send(order(1, SELL, 4))
        fill = (await until(other, pm.Execution, cl_ord_id=1))[-1]
        assert fill.last_qty == 4
        await until(a2, pm.Execution, cl_ord_id=2)
        for c in (a1, a2, other):
            await c.logout()


async def test_mass_cancel_by_account_reaches_every_session(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        a1 = await port(cfg, "firm", "port1")
        a2 = await port(cfg, "firm", "port2")
        other = await port(cfg, "rival")
        a1.send(order(1, SELL, 10, PX + 100), order(2, SELL, 10, PX + 200))
        await until(a1, pm.OrderAccepted, cl_ord_id=2)
        a2.send(order(7, BUY, 5, PX - 100))
        await until(a2, pm.OrderAccepted, cl_ord_id=7)
        other.send(order(1, BUY, 5, PX - 200))
        await until(other, pm.OrderAccepted, cl_ord_id=1)
        # scope SESSION from port2 leaves port1's orders alone
        a2.send(pm.MassCancel(cl_ord_id=50, scope=rec.MassCancelScope.SCOPE_SESSION))
        done = (await until(a2, pm.MassCancelDone))[-1]
        assert done.canceled_count == 1
        a2.send(order(8, BUY, 5, PX - 100))
        await until(a2, pm.OrderAccepted, cl_ord_id=8)
        # scope ACCOUNT from port2: port1's two orders too, each owner told of its own
        a2.send(pm.MassCancel(cl_ord_id=51, scope=rec.MassCancelScope.SCOPE_ACCOUNT))
        got = await until(a2, pm.MassCancelDone)
        assert got[-1].canceled_count == 3
        # the requester's own order: the request's ClOrdID; another session's: the order's own
        assert [(m.cl_ord_id, m.orig_cl_ord_id) for m in got if isinstance(m, pm.OrderCanceled)] == [
            (51, 8)]
        c1 = [await a1.recv(), await a1.recv()]
        assert sorted((m.cl_ord_id, m.orig_cl_ord_id, m.reason) for m in c1) == [
            (1, 1, rec.CancelReason.CXL_MASS_CANCEL), (2, 2, rec.CancelReason.CXL_MASS_CANCEL)]
        assert gw.engine.core.order_count() == 1       # the rival's buy
        for c in (a1, a2, other):
            await c.logout()


async def test_positions_and_risk_limits_are_the_accounts(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, risk=json.dumps({"max_open_orders": 3, "max_position_net": 50}))
    async with running_gateway(cfg):
        a1 = await port(cfg, "firm", "port1")
        a2 = await port(cfg, "firm", "port2")
        other = await port(cfg, "rival")
        # open orders: two from port1 and one from port2 are the account's three
        a1.send(order(1, BUY, 10, PX - 100), order(2, BUY, 10, PX - 200))
        await until(a1, pm.OrderAccepted, cl_ord_id=2)
        a2.send(order(1, BUY, 10, PX - 300))
        await until(a2, pm.OrderAccepted, cl_ord_id=1)
        a2.send(order(2, BUY, 1, PX - 400))
        r = (await until(a2, pm.OrderRejected))[-1]
        assert r.reason == rec.RejectReason.REJ_MAX_OPEN_ORDERS
        # worst-case net position: 30 lots resting on port1 + port2; 21 more would be 51 > 50
        a2.send(pm.MassCancel(cl_ord_id=9, scope=rec.MassCancelScope.SCOPE_SESSION))
        await until(a2, pm.MassCancelDone)
        a2.send(order(3, BUY, 31, PX - 300))
        r = (await until(a2, pm.OrderRejected))[-1]
        assert r.reason == rec.RejectReason.REJ_MAX_POSITION_NET
        # port1's fill shows in the account's position, asked on either session
        other.send(order(1, SELL, 10, PX - 100))
        await until(other, pm.Execution, cl_ord_id=1)
        await until(a1, pm.Execution, cl_ord_id=1)
        for c in (a1, a2):
            p = await positions(c)
            assert (p.net_position, p.bought_qty, p.open_buy_qty) == (10, 10, 10)
        for c in (a1, a2, other):
            await c.logout()


async def test_session_limit_counts_trading_sessions_and_drop_copies_apart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_sessions_per_account=2, max_dropcopy_per_account=1)
    async with running_gateway(cfg):
        t1 = await port(cfg, "firm", "port1")
        d1 = await port(cfg, "firm", role="dropcopy")
        t2 = await port(cfg, "firm", "port2")           # the drop copy took no trading slot
        assert await refused(cfg, "firm", "port3") == rec.LoginRejectReason.LOGIN_SESSION_LIMIT
        assert await refused(cfg, "firm", role="dropcopy") == rec.LoginRejectReason.LOGIN_SESSION_LIMIT
        # the drop copy sees both ports' messages
        t1.send(order(1, SELL, 1))
        t2.send(order(1, SELL, 1, PX + 100))
        seen = [await d1.recv(), await d1.recv()]
        assert sorted((m.cl_ord_id, m.price) for m in seen if isinstance(m, pm.OrderAccepted)) == [
            (1, PX), (1, PX + 100)]
        await t1.logout()
        await asyncio.sleep(0.05)
        t3 = await port(cfg, "firm", "port3")           # a trading slot is free again
        for c in (t2, t3, d1):
            await c.logout()


@pytest.mark.parametrize("snapshot", [False, True])
async def test_named_sessions_survive_a_restart(tmp_path: Path, snapshot: bool) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        a1 = await port(cfg, "firm", "port1")
        a2 = await port(cfg, "firm", "port2")
        ids = (a1.session_id, a2.session_id)
        a2.send(order(1, SELL, 1))
        await until(a2, pm.OrderAccepted, cl_ord_id=1)
        for c in (a1, a2):
            await c.logout()
        if snapshot:
            # the names come back from the snapshot's engine part, not the journal's records
            assert gw.engine.write_snapshot(False)
    async with running_gateway(cfg):
        b2 = await port(cfg, "firm", "port2", next_expected_seq_num=1)
        b1 = await port(cfg, "firm", "port1")
        assert (b1.session_id, b2.session_id) == ids
        again = await b2.recv()
        assert isinstance(again, pm.OrderAccepted) and again.seq_num == 1
        for c in (b1, b2):
            await c.logout()


async def test_a_bad_session_claim_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        for bad in (7, "", "x" * 17, "tab\there"):
            token = jwt.encode({"sub": "firm", "exp": 2**40, "session": bad}, cfg.jwt_secret,
                               algorithm="HS256")
            host, p = cfg.listen.rsplit(":", 1)
            with pytest.raises(LoginError) as e:
                await OrderClient.connect(host, int(p), token)
            assert e.value.reason == rec.LoginRejectReason.LOGIN_BAD_TOKEN, bad
