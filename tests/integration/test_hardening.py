"""Hostile input through real sockets: oversized length fields, frames split one byte at a time,
a client that never logs in, a client that sends but never reads, floods of connections.  Each
gets a clean reject or disconnect with a reason code and a metric, and the gateway keeps
serving everyone else."""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

from support.gateway_harness import login, make_config, metric_value, raw_exchange, running_gateway, scrape

from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import OrdType, RejectReason, Side, TimeInForce
from protocol import codec
from protocol.messages import BookQuery, Heartbeat, Login, Logout, NewOrder, OrderAccepted
from protocol.session import LogoutReason

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL


def order(cl: int, side: int, price: int, qty: int = 1) -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol="AAPL", side=side,
                    ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC)


def login_frame(cfg: Config, account: str) -> bytes:
    return codec.encode(Login(heartbeat_interval_ms=1000, next_expected_seq_num=0,
                              cancel_on_disconnect=0, token=mint_token(cfg.jwt_secret, account)))


async def test_oversized_and_inconsistent_length_fields(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        hdr = struct.Struct("<HHHH")
        cases = [
            struct.pack(">IH", 0xFFFFFFFF, 0xEB50),                      # 4 GB frame
            struct.pack(">IH", 65536, 0xEB50) + bytes(100),              # one over the maximum
            struct.pack(">IH", 13, 0xEB50) + bytes(7),                    # under the minimum
            # a blockLength running past its frame, and a token length past its frame
            struct.pack(">IH", 30, 0xEB50) + hdr.pack(60000, 10, 1, 1) + bytes(16),
            struct.pack(">IH", 6 + 8 + 13 + 2, 0xEB50) + hdr.pack(13, 1, 1, 1) + bytes(13)
            + struct.pack("<H", 65000),
            # a repeating group that claims 65535 entries (a server template sent by a client)
            struct.pack(">IH", 6 + 8 + 32 + 4, 0xEB50) + hdr.pack(32, 27, 1, 1) + bytes(32)
            + struct.pack("<HH", 20, 65535),
        ]
        for data in cases:
            msgs, took = await raw_exchange(cfg, data)
            assert [type(m).__name__ for m in msgs] == ["SessionReject", "Logout"], data[:16]
            assert msgs[0].reason == RejectReason.REJ_MALFORMED
            assert msgs[1].reason == LogoutReason.PROTOCOL_ERROR
            assert took < 1.0                         # answered at once, nothing awaited
        # the same after login: the session ends, the rest of the gateway does not notice
        msgs, _ = await raw_exchange(cfg, login_frame(cfg, "eve") + cases[0])
        assert [type(m).__name__ for m in msgs] == ["LoginAccepted", "SessionReject", "Logout"]
        c = await login(cfg, "alice")
        c.send(order(1, BUY, 1_000_000))
        assert isinstance(await c.recv(), OrderAccepted)
        await c.logout()
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_rejects_total", 'reason="malformed"') == len(cases) + 1
        assert gw.engine.ready


async def test_frames_split_one_byte_at_a_time(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        host, port = cfg.listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = login_frame(cfg, "trickle") + b"".join(codec.encode(order(i, BUY, 1_000_000 - i * 100))
                                                      for i in range(1, 4))
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            if i % 8 == 0:
                await asyncio.sleep(0.001)           # let each byte arrive on its own
        buf = b""
        while True:
            buf += await asyncio.wait_for(reader.read(65536), 3.0)
            msgs, _ = codec.decode_frames(buf)
            if len(msgs) >= 4:
                break
        assert [type(m).__name__ for m in msgs] == ["LoginAccepted"] + ["OrderAccepted"] * 3
        assert [m.cl_ord_id for m in msgs[1:]] == [1, 2, 3]
        writer.close()


async def test_a_client_that_never_logs_in_is_dropped(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, login_timeout_ms=400)
    async with running_gateway(cfg):
        # heartbeats keep a connection alive, but not without a login
        host, port = cfg.listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        t0 = time.monotonic()
        buf = b""

        async def beat() -> None:
            while True:
                writer.write(codec.encode(Heartbeat()))
                await asyncio.sleep(0.1)

        beating = asyncio.create_task(beat())
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 3.0):
                buf += chunk
        finally:
            beating.cancel()
            writer.close()
        took = time.monotonic() - t0
        msgs, _ = codec.decode_frames(buf)
        assert isinstance(msgs[-1], Logout) and msgs[-1].reason == LogoutReason.LOGIN_TIMEOUT
        assert 0.35 < took < 2.0
        # half a frame announced as 65535 bytes, then silence: the same end, bounded memory
        msgs, took = await raw_exchange(cfg, struct.pack(">IH", 65535, 0xEB50) + bytes(1000))
        assert [type(m).__name__ for m in msgs] == ["Logout"] and msgs[0].reason == LogoutReason.LOGIN_TIMEOUT
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_login_timeouts_total") == 2


async def test_a_client_that_never_reads_is_paused_then_disconnected(tmp_path: Path) -> None:
    high = 64 * 1024
    cfg = make_config(tmp_path, write_buffer_high=high, slow_consumer_timeout_ms=600,
                      heartbeat_interval_ms=200)
    async with running_gateway(cfg) as gw:
        # a deep book, so that each 32-byte BookQuery costs the server a ~4 KB answer
        mm = await login(cfg, "maker")
        mm.send(*[order(i, BUY, 900_000 + 100 * i) for i in range(1, 101)])
        mm.send(*[order(1000 + i, SELL, 1_100_000 + 100 * i) for i in range(1, 101)])
        await mm.recv_until(lambda m: getattr(m, "cl_ord_id", 0) == 1100)
        host, port = cfg.listen.rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(login_frame(cfg, "hog"))
        await asyncio.sleep(0.1)
        query = codec.encode(BookQuery(request_id=1, symbol="AAPL", depth=100))
        peak = 0
        closed_at = 0.0
        t0 = time.monotonic()
        for _ in range(400):                           # never read a byte
            if writer.transport.get_write_buffer_size() < (1 << 20):
                writer.write(query * 200)
            conns = [c for c in gw.connections if c.session is not None and c.session.session_id
                     and c.peer.endswith(str(sock.getsockname()[1]))]
            if not conns:
                closed_at = time.monotonic() - t0
                break
            t = conns[0].transport
            assert t is not None
            peak = max(peak, t.get_write_buffer_size())
            # everyone else is served meanwhile
            mm.send(BookQuery(request_id=2, symbol="MSFT", depth=1))
            await mm.recv()
            await asyncio.sleep(0.02)
        assert closed_at, "the non-reading client was never disconnected"
        # bounded: reading stopped near the high-water mark (plus one read's worth of answers)
        assert peak < high + 2 * 1024 * 1024, peak
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_read_pauses_total") >= 1
        assert metric_value(text, "hftgw_slow_consumer_disconnects_total") == 1
        assert metric_value(text, "hftgw_heartbeat_timeouts_total") == 0
        writer.close()
        await mm.logout()


async def test_connection_flood_total_limit(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_connections=30, max_connections_per_address=1000)
    async with running_gateway(cfg) as gw:
        host, port = cfg.listen.rsplit(":", 1)
        conns = await asyncio.gather(*[asyncio.open_connection(host, int(port)) for _ in range(200)])
        await asyncio.sleep(0.3)
        reasons: list[int] = []
        for reader, _ in conns:
            try:
                data = await asyncio.wait_for(reader.read(64), 0.05)
            except TimeoutError:
                continue                                 # admitted: waits for a Login
            msgs, _ = codec.decode_frames(data)
            if msgs and isinstance(msgs[0], Logout):
                reasons.append(msgs[0].reason)
        assert reasons == [LogoutReason.CONNECTION_LIMIT] * 170
        assert gw.engine.addresses.total == 30
        for _, w in conns:
            w.close()
        await asyncio.sleep(0.2)
        assert gw.engine.addresses.total == 0
        c = await login(cfg, "after")                     # serves again once they are gone
        c.send(order(1, SELL, 1_000_000))
        assert isinstance(await c.recv(), OrderAccepted)
        await c.logout()
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_connections_refused_total", 'limit="total"') == 170
