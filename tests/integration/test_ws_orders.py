"""Order entry over WebSocket (``/orders``) with the real ``websockets`` client: the same order
flow over TCP, over WebSocket and mixed gives the same executions; login, rejects, sequencing,
heartbeats, slow/malformed input and cancel-on-disconnect behave as on TCP."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.gateway_harness import login, make_config, metric_value, running_gateway, scrape
from support.md_harness import OrderStream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.clients.tcp import LoginError
from gateway.clients.ws import WsOrderClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import LoginRejectReason, OrdType, RejectReason, Side, TimeInForce
from protocol import codec
from protocol.messages import (
    BookQuery,
    BookSnapshot,
    Heartbeat,
    Login,
    LoginAccepted,
    Logout,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    SessionReject,
)
from protocol.session import LogoutReason


def orders_url(cfg: Any) -> str:
    return f"ws://{cfg.ws_listen}/orders"


async def ws_login(cfg: Any, account: str, **kw: Any) -> WsOrderClient:
    return await WsOrderClient.connect(orders_url(cfg), mint_token(cfg.jwt_secret, account), **kw)


def new(cl: int, side: int, price: int, qty: int, symbol: str = "AAPL") -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol=symbol, side=side,
                    ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC)


def timeless(msgs: list[Any]) -> list[Any]:
    return [msgspec.structs.replace(m, transact_time=0) if hasattr(m, "transact_time") else m
            for m in msgs]


async def run_flow(tmp: Path, transports: list[str]) -> list[list[Any]]:
    """The same seeded flow of 400 requests from three accounts, each over the given transport;
    returns every session's responses."""
    cfg = make_config(tmp)
    async with running_gateway(cfg):
        clients: list[Any] = []
        for i, t in enumerate(transports):
            clients.append(await (login(cfg, f"acct{i}") if t == "tcp" else ws_login(cfg, f"acct{i}")))
        stream = OrderStream(clients, ["AAPL", "MSFT"], seed=77)
        for k in range(400):
            await stream.step(k % 3)
        for i, c in enumerate(clients):  # a barrier: everything of the flow has arrived
            c.send(BookQuery(request_id=10**9 + i, symbol="AAPL", depth=20))
        await asyncio.wait_for(asyncio.gather(*(
            _wait_for(lambda i=i: 10**9 + i in stream.snapshots) for i in range(3))), 10)
        for c in clients:
            await c.logout()
        return [timeless(r) for r in stream.responses]


async def _wait_for(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.005)


async def test_same_flow_over_tcp_and_websocket_gives_the_same_executions(tmp_path: Path) -> None:
    tcp = await run_flow(tmp_path / "tcp", ["tcp", "tcp", "tcp"])
    ws = await run_flow(tmp_path / "ws", ["ws", "ws", "ws"])
    mixed = await run_flow(tmp_path / "mixed", ["ws", "tcp", "ws"])
    assert sum(len(r) for r in tcp) > 600
    executions = sum(1 for r in tcp for m in r if type(m).__name__ == "Execution")
    assert executions > 100
    assert ws == tcp
    assert mixed == tcp
    for r in ws:  # sequenced without gaps, as on TCP
        seqs = [m.seq_num for m in r if hasattr(m, "seq_num")]
        assert seqs == list(range(1, len(seqs) + 1))


async def _refused_before_login(url: str) -> None:
    # an order before login: SessionReject, the connection stays
    async with connect(url) as ws:
        await ws.send(codec.encode(new(1, Side.SIDE_BUY, 1_000_000, 1), sofh=False))
        (rej,), _ = codec.decode_frames(await ws.recv(), sofh=False)
        assert rej == SessionReject(reason=RejectReason.REJ_NOT_LOGGED_IN, ref_template_id=10)
        # a bad token: LoginRejected, then the server closes
        await ws.send(codec.encode(Login(heartbeat_interval_ms=0, next_expected_seq_num=0,
                                         cancel_on_disconnect=0, token="x.y.z"), sofh=False))
        msgs, _ = codec.decode_frames(await ws.recv(), sofh=False)
        assert msgs[0].reason == LoginRejectReason.LOGIN_BAD_TOKEN  # type: ignore[union-attr]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def _malformed_input_logs_out(cfg: Config) -> None:
    # a WebSocket message that ends inside an SBE message: SessionReject MALFORMED, Logout
    bob = await ws_login(cfg, "bob")
    bob.send_raw(codec.encode(new(1, Side.SIDE_BUY, 1_000_000, 1), sofh=False)[:-3])
    rej, out = await bob.recv(), await bob.recv()
    assert rej == SessionReject(reason=RejectReason.REJ_MALFORMED, ref_template_id=10)
    assert out == Logout(reason=LogoutReason.PROTOCOL_ERROR)
    await asyncio.wait_for(bob.closed.wait(), 5)
    assert bob.ws.close_code == 1008
    await bob.close()
    # a text message: the same
    carol = await ws_login(cfg, "carol")
    carol.send_raw("hello")
    assert await carol.recv() == SessionReject(reason=RejectReason.REJ_MALFORMED, ref_template_id=0)
    assert await carol.recv() == Logout(reason=LogoutReason.PROTOCOL_ERROR)
    await carol.close()


async def _idle_and_silent_heartbeats(url: str, cfg: Config) -> None:
    # heartbeats: an idle session gets them; a silent one is logged out
    async with connect(url) as ws:
        await ws.send(codec.encode(Login(heartbeat_interval_ms=200, next_expected_seq_num=0,
                                         cancel_on_disconnect=0,
                                         token=mint_token(cfg.jwt_secret, "dave")), sofh=False))
        got: list[Any] = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.extend(codec.decode_frames(await asyncio.wait_for(ws.recv(), 5), sofh=False)[0])
        assert isinstance(got[0], LoginAccepted)
        assert any(isinstance(m, Heartbeat) for m in got)
        assert got[-1] == Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)


async def test_websocket_session_rules(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, heartbeat_interval_ms=200)
    async with running_gateway(cfg) as gw:
        url = orders_url(cfg)
        await _refused_before_login(url)
        # a batch of 300 orders in one WebSocket message: 300 acks, numbered 1..300
        alice = await ws_login(cfg, "alice", cancel_on_disconnect=True)
        assert alice.next_seq_num == 1
        alice.send(*[new(cl, Side.SIDE_SELL, 1_500_000 + cl * 100, 1) for cl in range(1, 301)])
        acks = [await alice.recv() for _ in range(300)]
        assert all(isinstance(a, OrderAccepted) for a in acks)
        assert [a.seq_num for a in acks] == list(range(1, 301))
        # the account is in use: a second login over TCP is refused
        with pytest.raises(LoginError) as refused:
            await login(cfg, "alice")
        assert refused.value.reason == LoginRejectReason.LOGIN_SESSION_IN_USE
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_ws_order_connections") == 1
        assert metric_value(text, "hftgw_sessions_open") == 1
        # cancel on disconnect: closing the WebSocket cancels alice's 300 orders
        await alice.close()
        await _wait_for(lambda: gw.engine.core.order_count() == 0)
        # re-login resumes the numbering: the 300 cancels and the MassCancelDone were numbered
        # while she was away
        alice = await ws_login(cfg, "alice", next_expected_seq_num=602)
        assert alice.next_seq_num == 602
        await alice.logout()
        with pytest.raises(LoginError) as refused:
            await ws_login(cfg, "alice", next_expected_seq_num=700)
        assert refused.value.reason == LoginRejectReason.LOGIN_INVALID_SEQUENCE
        await _malformed_input_logs_out(cfg)
        await _idle_and_silent_heartbeats(url, cfg)
        # orders over TCP and WebSocket meet in one book
        erin = await login(cfg, "erin")
        frank = await ws_login(cfg, "frank")
        erin.send(new(1, Side.SIDE_SELL, 2_000_000, 10, "MSFT"))
        assert isinstance(await erin.recv(), OrderAccepted)
        frank.send(new(1, Side.SIDE_BUY, 2_000_000, 4, "MSFT"),
                   BookQuery(request_id=5, symbol="MSFT", depth=1))
        got = await frank.recv_until(lambda m: isinstance(m, BookSnapshot))
        assert [type(m).__name__ for m in got] == ["OrderAccepted", "Execution", "BookSnapshot"]
        assert got[2].asks[0].size == 6
        maker = await erin.recv()
        assert type(maker).__name__ == "Execution" and maker.last_qty == 4
        await erin.logout()
        await frank.logout()


async def test_websocket_sessions_get_the_same_access_control_and_risk_gate(tmp_path: Path) -> None:
    """/orders goes through what TCP does: the pre-trade risk gate on every decoded batch, role
    checks (a drop copy's order is NOT_AUTHORIZED, an md token cannot log in), and the peer
    address in the audit log."""
    cfg = make_config(tmp_path, risk='{"max_order_qty": 10}', max_role_violations=5)
    async with running_gateway(cfg):
        c = await ws_login(cfg, "wsrisk")
        c.send(new(1, Side.SIDE_BUY, 1_000_000, 11), new(2, Side.SIDE_BUY, 1_000_000, 10))
        rej, acc = await c.recv(), await c.recv()
        assert isinstance(rej, OrderRejected) and rej.reason == RejectReason.REJ_MAX_ORDER_QTY
        assert isinstance(acc, OrderAccepted) and acc.cl_ord_id == 2
        dc = await WsOrderClient.connect(orders_url(cfg), mint_token(cfg.jwt_secret, "wsrisk", "dropcopy"))
        dc.send(new(3, Side.SIDE_BUY, 1_000_000, 1))
        sr = await dc.recv()
        assert isinstance(sr, SessionReject) and sr.reason == RejectReason.REJ_NOT_AUTHORIZED
        with pytest.raises(LoginError) as refused:
            await WsOrderClient.connect(orders_url(cfg), mint_token(cfg.jwt_secret, "feed", "md"))
        assert refused.value.reason == LoginRejectReason.LOGIN_NOT_AUTHORIZED
        await dc.logout()
        await c.logout()
        await asyncio.sleep(0.05)
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_risk_rejects_total", 'reason="max_order_qty"') == 1
        assert metric_value(text, "hftgw_role_violations_total") == 1
    audit = [msgspec.json.decode(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    logins = [a for a in audit if a["event"] == "login" and a["account"] in ("wsrisk", "feed")]
    assert [(a["account"], a["role"], a["outcome"]) for a in logins] == [
        ("wsrisk", "trader", "accepted"), ("wsrisk", "dropcopy", "accepted"), ("feed", "md", "rejected")]
    assert all(a["address"].startswith("127.0.0.1:") for a in logins)
