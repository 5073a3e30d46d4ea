"""The gateway end to end over real TCP sockets on 127.0.0.1: login, orders, acks and fills,
every reject code, heartbeats, restart from the journal, metrics and probes."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import jwt
import pytest
from support.gateway_harness import (
    limit,
    login,
    make_config,
    metric_value,
    raw_exchange,
    running_gateway,
    scrape,
)

from gateway.clients.tcp import LoginError
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import (
    CancelReason,
    Liquidity,
    LoginRejectReason,
    OrdType,
    RejectReason,
    Side,
    TimeInForce,
)
from protocol import codec, messages

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL
GTC, IOC = TimeInForce.TIF_GTC, TimeInForce.TIF_IOC


async def test_order_ack_fill_and_book(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        alice = await login(cfg, "alice")
        bob = await login(cfg, "bob")
        assert alice.session_id != bob.session_id
        alice.send(limit(1, SELL, 1_500_000, 100))
        ack = await alice.recv()
        assert isinstance(ack, messages.OrderAccepted)
        assert (ack.seq_num, ack.cl_ord_id, ack.leaves_qty, ack.price) == (1, 1, 100, 1_500_000)
        bob.send(limit(7, BUY, 1_500_100, 60))
        b_ack, b_fill = await bob.recv(), await bob.recv()
        assert isinstance(b_ack, messages.OrderAccepted) and b_ack.seq_num == 1
        assert isinstance(b_fill, messages.Execution)
        assert (b_fill.seq_num, b_fill.cl_ord_id, b_fill.last_px, b_fill.last_qty,
                b_fill.leaves_qty, b_fill.liquidity) == (2, 7, 1_500_000, 60, 0, Liquidity.LIQ_TAKER)
        a_fill = await alice.recv()
        assert isinstance(a_fill, messages.Execution)
        assert (a_fill.seq_num, a_fill.cl_ord_id, a_fill.last_qty, a_fill.leaves_qty,
                a_fill.liquidity, a_fill.trade_id) == (2, 1, 60, 40, Liquidity.LIQ_MAKER, b_fill.trade_id)
        # the in-sequence book query sees the book right after the commands before it
        alice.send(messages.BookQuery(request_id=9, symbol="AAPL", depth=5))
        snap = await alice.recv()
        assert isinstance(snap, messages.BookSnapshot) and snap.request_id == 9
        assert [(lv.price, lv.size, lv.order_count) for lv in snap.asks] == [(1_500_000, 40, 1)]
        assert snap.bids == []
        # replace down keeps the order, cancel ends it
        alice.send(messages.ReplaceOrder(cl_ord_id=1, orig_cl_ord_id=1, price=1_500_000, order_qty=80,
                                         symbol="AAPL"))
        rep = await alice.recv()
        assert isinstance(rep, messages.OrderReplaced) and rep.leaves_qty == 20
        alice.send(messages.CancelOrder(cl_ord_id=2, orig_cl_ord_id=1, symbol="AAPL"))
        cxl = await alice.recv()
        assert isinstance(cxl, messages.OrderCanceled)
        assert (cxl.orig_cl_ord_id, cxl.canceled_qty, cxl.reason) == (1, 20, CancelReason.CXL_USER)
        status, text = scrape(cfg)
        assert status == 200
        assert metric_value(text, "hftgw_orders_received_total") == 2
        assert metric_value(text, "hftgw_fills_total") == 1
        assert metric_value(text, "hftgw_traded_quantity_total") == 60
        assert metric_value(text, "hftgw_sessions_open") == 2
        assert metric_value(text, "hftgw_order_ack_latency_seconds_count") == 2
        await alice.logout()
        await bob.logout()


async def test_every_order_reject_code(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        c = await login(cfg, "carol")
        cases = [
            (limit(1, BUY, 1_000_000, 10, symbol="NOPE"), RejectReason.REJ_UNKNOWN_SYMBOL),
            (limit(2, BUY, 1_000_050, 10), RejectReason.REJ_INVALID_PRICE),   # not a tick multiple
            (limit(3, BUY, -100, 10), RejectReason.REJ_INVALID_PRICE),         # not positive
            (limit(4, BUY, 1_000_000, 0), RejectReason.REJ_INVALID_QUANTITY),
            (limit(5, BUY, 1_000_000, 10_000_001), RejectReason.REJ_INVALID_QUANTITY),
            (limit(6, 9, 1_000_000, 10), RejectReason.REJ_INVALID_FIELD),
        ]
        for msg, reason in cases:
            c.send(msg)
            r = await c.recv()
            assert isinstance(r, messages.OrderRejected), (msg, r)
            assert (r.cl_ord_id, r.reason) == (msg.cl_ord_id, reason)
        stp = messages.NewOrder(cl_ord_id=7, price=1_000_000, order_qty=10, symbol="AAPL", side=BUY,
                                ord_type=OrdType.ORD_LIMIT, time_in_force=GTC, stp_mode=9)   # no such mode
        c.send(stp)
        r = await c.recv()
        assert isinstance(r, messages.OrderRejected) and r.reason == RejectReason.REJ_INVALID_FIELD
        c.send(limit(10, BUY, 1_000_000, 10))
        assert isinstance(await c.recv(), messages.OrderAccepted)
        c.send(limit(8, SELL, 1_000_000, 5, flags=1))  # post-only that would take
        r = await c.recv()
        assert isinstance(r, messages.OrderRejected) and r.reason == RejectReason.REJ_POST_ONLY_WOULD_TAKE
        c.send(limit(10, BUY, 1_000_000, 10))
        dup = await c.recv()
        assert isinstance(dup, messages.OrderRejected) and dup.reason == RejectReason.REJ_DUPLICATE_CL_ORD_ID
        c.send(messages.CancelOrder(cl_ord_id=11, orig_cl_ord_id=999, symbol="AAPL"))
        cr = await c.recv()
        assert isinstance(cr, messages.CancelRejected) and cr.reason == RejectReason.REJ_UNKNOWN_ORDER
        c.send(messages.ReplaceOrder(cl_ord_id=12, orig_cl_ord_id=998, price=1_000_000, order_qty=5,
                                     symbol="AAPL"))
        rr = await c.recv()
        assert isinstance(rr, messages.CancelRejected) and rr.reason == RejectReason.REJ_UNKNOWN_ORDER
        c.send(messages.MassCancel(cl_ord_id=13, symbol="", side=0))
        mc = await c.recv_until(lambda x: isinstance(x, messages.MassCancelDone))
        assert [type(x).__name__ for x in mc] == ["OrderCanceled", "MassCancelDone"]
        assert mc[0].reason == CancelReason.CXL_MASS_CANCEL and mc[-1].canceled_count == 1
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_rejects_total", 'reason="unknown_symbol"') == 1
        assert metric_value(text, "hftgw_rejects_total", 'reason="invalid_price"') == 2
        assert metric_value(text, "hftgw_rejects_total", 'reason="unknown_order"') == 2
        await c.logout()


async def _raw(cfg: Config, data: bytes, read_until_close: bool = True) -> list[messages.Message]:
    return (await raw_exchange(cfg, data, until_close=read_until_close))[0]


async def test_session_level_rejects_and_disconnects(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        # an order before login: SessionReject NOT_LOGGED_IN, the connection stays usable
        msgs = await _raw(cfg, codec.encode(limit(1, BUY, 1_000_000, 1)), read_until_close=False)
        assert isinstance(msgs[0], messages.SessionReject)
        assert msgs[0].reason == RejectReason.REJ_NOT_LOGGED_IN and msgs[0].ref_template_id == 10
        # malformed framing (bad encoding type): reject, then Logout and close
        msgs = await _raw(cfg, struct.pack(">IH", 20, 0x1234) + bytes(14))
        assert isinstance(msgs[0], messages.SessionReject) and msgs[0].reason == RejectReason.REJ_MALFORMED
        assert isinstance(msgs[-1], messages.Logout)
        # unknown template after login: reject + disconnect
        tok = mint_token(cfg.jwt_secret, "dave")
        bogus = struct.pack("<HHHH", 0, 999, 1, 1)
        frame = struct.pack(">IH", 6 + len(bogus), 0xEB50) + bogus
        msgs = await _raw(cfg, codec.encode(messages.Login(heartbeat_interval_ms=1000,
                                                           next_expected_seq_num=0,
                                                           cancel_on_disconnect=0, token=tok)) + frame)
        assert [type(m).__name__ for m in msgs] == ["LoginAccepted", "SessionReject", "Logout"]
        assert msgs[1].reason == RejectReason.REJ_UNKNOWN_TEMPLATE
        # bad tokens
        for token, reason in [
            ("not-a-jwt", LoginRejectReason.LOGIN_BAD_TOKEN),
            (mint_token("another-secret-another-secret-000", "eve"), LoginRejectReason.LOGIN_BAD_TOKEN),
            (mint_token(cfg.jwt_secret, "eve", ttl_s=1, now=1000), LoginRejectReason.LOGIN_TOKEN_EXPIRED),
            (jwt.encode({"sub": "eve", "exp": 2**40}, key=None, algorithm="none"),  # type: ignore[arg-type]
             LoginRejectReason.LOGIN_BAD_TOKEN),
        ]:
            msgs = await _raw(cfg, codec.encode(messages.Login(heartbeat_interval_ms=1000,
                                                               next_expected_seq_num=0,
                                                               cancel_on_disconnect=0, token=token)))
            assert isinstance(msgs[0], messages.LoginRejected) and msgs[0].reason == reason, token
        # one live session per account
        first = await login(cfg, "frank")
        with pytest.raises(LoginError) as e:
            await login(cfg, "frank")
        assert e.value.reason == LoginRejectReason.LOGIN_SESSION_IN_USE
        # asking to resume beyond the end is refused
        await first.logout()
        with pytest.raises(LoginError) as e:
            await login(cfg, "frank", next_expected_seq_num=50)
        assert e.value.reason == LoginRejectReason.LOGIN_INVALID_SEQUENCE
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_rejects_total", 'reason="not_logged_in"') == 1
        assert metric_value(text, "hftgw_rejects_total", 'reason="malformed"') == 1
        assert metric_value(text, "hftgw_login_failures_total", 'reason="token_expired"') == 1
        assert gw.engine.ready


async def test_garbage_never_crashes_the_server(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        import random

        rnd = random.Random(7)
        for _ in range(30):
            blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
            await _raw(cfg, blob + b"\x00" * 8)
        c = await login(cfg, "gina")
        c.send(limit(1, BUY, 1_000_000, 5))
        assert isinstance(await c.recv(), messages.OrderAccepted)
        await c.logout()


async def test_heartbeats_and_timeout(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, heartbeat_interval_ms=200)
    async with running_gateway(cfg):
        host, port = cfg.listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(codec.encode(messages.Login(heartbeat_interval_ms=200, next_expected_seq_num=0,
                                                 cancel_on_disconnect=0,
                                                 token=mint_token(cfg.jwt_secret, "hank"))))
        # stay silent: the server heartbeats, then logs us out after ~3 intervals
        buf = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5.0)
            if not chunk:
                break
            buf += chunk
        msgs, _ = codec.decode_frames(buf)
        names = [type(m).__name__ for m in msgs]
        assert names[0] == "LoginAccepted"
        assert names.count("Heartbeat") >= 2
        assert isinstance(msgs[-1], messages.Logout) and msgs[-1].reason == 1  # HEARTBEAT_TIMEOUT
        writer.close()
        # a client that heartbeats stays connected past the timeout
        c = await login(cfg, "ivan", heartbeat_ms=200)
        await asyncio.sleep(1.0)
        assert not c.closed.is_set()
        await c.logout()


async def test_ioc_remainder_and_cancel_on_disconnect(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        m = await login(cfg, "maker", cancel_on_disconnect=True)
        m.send(limit(1, SELL, 2_000_000, 10, symbol="MSFT"))
        assert isinstance(await m.recv(), messages.OrderAccepted)
        t = await login(cfg, "taker")
        t.send(limit(5, BUY, 2_000_000, 25, symbol="MSFT", tif=IOC))
        got = await t.recv_until(lambda x: isinstance(x, messages.OrderCanceled))
        assert [type(x).__name__ for x in got] == ["OrderAccepted", "Execution", "OrderCanceled"]
        assert got[-1].canceled_qty == 15 and got[-1].reason == CancelReason.CXL_IOC_REMAINDER
        m.send(limit(2, SELL, 2_000_100, 10, symbol="MSFT"))
        await m.recv_until(lambda x: isinstance(x, messages.OrderAccepted))
        await m.close()  # drop the connection: its resting order must go
        for _ in range(50):
            if gw.engine.core.order_count() == 0:
                break
            await asyncio.sleep(0.02)
        assert gw.engine.core.order_count() == 0
        await t.logout()


async def test_restart_restores_books_and_sequence_numbers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        a = await login(cfg, "alice")
        b = await login(cfg, "bob")
        for i in range(20):
            a.send(limit(100 + i, SELL, 1_000_000 + 100 * (i % 5), 10 + i))
        b.send(limit(1, BUY, 1_000_200, 100))
        await a.recv_until(lambda x: isinstance(x, messages.OrderAccepted) and x.cl_ord_id == 119)
        await b.recv_until(lambda x: isinstance(x, messages.Execution) and x.leaves_qty == 0)
        a.send(messages.BookQuery(request_id=1, symbol="AAPL", depth=10))
        before = (await a.recv_until(lambda x: isinstance(x, messages.BookSnapshot)))[-1]
        a.send(messages.Heartbeat())
        await a.logout()
        await b.logout()
    async with running_gateway(cfg):
        a = await login(cfg, "alice")
        assert a.next_seq_num == before.seq_num + 1
        a.send(messages.BookQuery(request_id=2, symbol="AAPL", depth=10))
        after = await a.recv()
        assert isinstance(after, messages.BookSnapshot)
        assert after.seq_num == before.seq_num + 1
        assert after.bids == before.bids and after.asks == before.asks
        assert len(after.asks) > 0
        # ClOrdIDs still live after the restart are still duplicates
        a.send(limit(119, SELL, 1_000_400, 1))
        dup = await a.recv()
        assert isinstance(dup, messages.OrderRejected) and dup.reason == RejectReason.REJ_DUPLICATE_CL_ORD_ID
        await a.logout()


async def test_health_and_ready(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        status, body = scrape(cfg, "/ready")
        assert status == 200 and '"ok"' in body
        status, body = scrape(cfg, "/health")
        assert status == 200 and '"sink": "off"' in body
        status, _ = scrape(cfg, "/nope")
        assert status == 404
