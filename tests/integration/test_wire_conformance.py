"""Issue 14's conformance findings, checked over real sockets with hand-written bytes: what goes
on the wire is built here with ``struct`` from docs/protocol.md's tables and what comes back is
compared byte for byte (or read at the documented offsets), so the project's own codec is not
the only judge of what the docs promise."""
from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

from support.gateway_harness import make_config, metric_value, raw_bytes, running_gateway, scrape
from websockets.asyncio.client import connect as ws_connect

from gateway.config.schema import Config
from gateway.security.auth import mint_token

SOFH = struct.Struct(">IH")          # messageLength (frame, SOFH included), encodingType
HEADER = struct.Struct("<HHHH")      # blockLength, templateId, schemaId, version
ENCODING = 0xEB50


def frame(template: int, block: bytes, version: int = 2, tail: bytes = b"") -> bytes:
    """A TCP frame: SOFH, message header with blockLength = len(block), root block, tail."""
    body = HEADER.pack(len(block), template, 1, version) + block + tail
    return SOFH.pack(SOFH.size + len(body), ENCODING) + body


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(templateId, version, root block) of each whole SOFH frame in ``data``, read by hand."""
    out = []
    pos = 0
    while pos + SOFH.size <= len(data):
        length, enc = SOFH.unpack_from(data, pos)
        assert enc == ENCODING and pos + length <= len(data), data[pos:pos + 16].hex()
        block_length, template, schema, version = HEADER.unpack_from(data, pos + SOFH.size)
        assert schema == 1
        start = pos + SOFH.size + HEADER.size
        out.append((template, version, data[start:start + block_length]))
        pos += length
    assert pos == len(data), "a partial frame at the end"
    return out


# -- findings 1 and 2: the login timeout, no heartbeats before login ------------------------------
#: Logout reason 7 (LOGIN_TIMEOUT), TCP framed: 16 bytes
LOGOUT_LOGIN_TIMEOUT = bytes.fromhex("00000010eb50" "0200" "0500" "0100" "0200" "0700")


async def test_a_silent_connection_gets_no_heartbeat_then_logout_login_timeout(tmp_path: Path) -> None:
    """A connection that sends nothing: with a 100 ms heartbeat interval (which used to give
    heartbeats and a HEARTBEAT_TIMEOUT logout at ~300 ms) the only bytes it ever receives are
    one Logout reason 7, after login_timeout_ms, counted by hftgw_login_timeouts_total."""
    cfg = make_config(tmp_path, login_timeout_ms=800, heartbeat_interval_ms=100)
    async with running_gateway(cfg):
        data, took = await raw_bytes(cfg, b"", 5.0)
        assert data == LOGOUT_LOGIN_TIMEOUT
        assert 0.75 < took < 3.0
        # heartbeats do not keep a connection alive before login either, nor make it get any
        beats = frame(4, b"") * 5
        data, took = await raw_bytes(cfg, beats, 5.0)
        assert data == LOGOUT_LOGIN_TIMEOUT and 0.75 < took < 3.0
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_login_timeouts_total") == 2
        assert metric_value(text, "hftgw_heartbeat_timeouts_total") == 0


# -- a logged-in raw connection ------------------------------------------------------------------
def login_bytes(cfg: Config, account: str) -> bytes:
    """Login (template 1, blockLength 14): heartbeat 1000 ms, no replay, no cancel on
    disconnect, STP NONE; then the token as var data (uint16 length + bytes)."""
    token = mint_token(cfg.jwt_secret, account).encode()
    block = struct.pack("<IQBB", 1000, 0, 0, 0)
    return frame(1, block, tail=struct.pack("<H", len(token)) + token)


def new_order(cl: int, symbol: bytes, side: int = 1, price: int = 1_000_000, qty: int = 10,
              ord_type: int = 1, stop_px: int = 0) -> bytes:
    """NewOrder (10, blockLength 53): GTC, no flags, STP NONE, not an iceberg."""
    return frame(10, struct.pack("<QqQ8sBBBBBqQ", cl, price, qty, symbol, side, ord_type, 1, 0, 0,
                                 stop_px, 0))


def book_query(request_id: int, symbol: bytes, depth: int) -> bytes:
    return frame(14, struct.pack("<Q8sH", request_id, symbol, depth))


def mass_cancel(cl: int, symbol: bytes = bytes(8), side: int = 0, scope: int = 0) -> bytes:
    return frame(13, struct.pack("<Q8sBB", cl, symbol, side, scope))


class RawSession:
    """A logged-in order-entry connection that writes bytes and reads frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""
        self.raw: list[bytes] = []         # every frame ``frames`` returned, whole

    @classmethod
    async def login(cls, cfg: Config, account: str) -> RawSession:
        host, port = cfg.listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        s = cls(reader, writer)
        writer.write(login_bytes(cfg, account))
        [(template, _, _)] = await s.frames(1)
        assert template == 2                     # LoginAccepted
        return s

    async def frames(self, n: int, timeout: float = 3.0) -> list[tuple[int, int, bytes]]:
        """The next ``n`` frames but heartbeats (templateId 4)."""
        out: list[tuple[int, int, bytes]] = []
        while len(out) < n:
            while True:
                if len(self.buf) >= SOFH.size:
                    length = SOFH.unpack_from(self.buf)[0]
                    if len(self.buf) >= length:
                        break
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
                assert chunk, "closed by the server"
                self.buf += chunk
            [f] = split_frames(self.buf[:length])
            if f[0] != 4:
                out.append(f)
                self.raw.append(self.buf[:length])
            self.buf = self.buf[length:]
        return out

    async def ask(self, data: bytes, n: int) -> list[tuple[int, int, bytes]]:
        self.writer.write(data)
        return await self.frames(n)

    def close(self) -> None:
        self.writer.close()


ORDER_REJECTED = struct.Struct("<QQQ8sH")      # seqNum, transactTime, clOrdId, symbol, reason


# -- finding 3: OrderRejected UNKNOWN_SYMBOL echoes the symbol ------------------------------------
async def test_an_unknown_symbol_reject_echoes_the_symbol_sent(tmp_path: Path) -> None:
    """NewOrder, BookQuery and MassCancel for a symbol the gateway does not list: OrderRejected
    reason UNKNOWN_SYMBOL (4) whose symbol field holds the name sent, NUL-padded (a
    space-padded name comes back NUL-padded, as every symbol the server sends)."""
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        s = await RawSession.login(cfg, "alice")
        try:
            got = await s.ask(new_order(7, b"NOPE\0\0\0\0") + book_query(8, b"ZZZ     ", 5)
                              + mass_cancel(9, b"QQQQQQQQ"), 3)
            assert [(t, v) for t, v, _ in got] == [(21, 2)] * 3          # OrderRejected, version 2
            rows = [ORDER_REJECTED.unpack(block) for _, _, block in got]
            assert [(seq, cl, sym, reason) for seq, _, cl, sym, reason in rows] == [
                (1, 7, b"NOPE\0\0\0\0", 4), (2, 8, b"ZZZ\0\0\0\0\0", 4), (3, 9, b"QQQQQQQQ", 4)]
            # a known symbol's reject carries its name as before
            [(t, _, block)] = await s.ask(new_order(10, b"AAPL\0\0\0\0", qty=0), 1)
            assert t == 21 and ORDER_REJECTED.unpack(block)[3:] == (b"AAPL\0\0\0\0", 6)
        finally:
            s.close()


# -- finding 5: the maximum BookQuery depth, the order of a MassCancel's reports ----------------------
ORDER_CANCELED = struct.Struct("<QQQQQqQ8sBH")  # ... origClOrdId, orderId, price, qty, symbol, side, reason
AAPL = b"AAPL\0\0\0\0"


async def test_book_query_depth_above_100_is_rejected_100_is_answered(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        s = await RawSession.login(cfg, "alice")
        try:
            got = await s.ask(book_query(1, AAPL, 100) + book_query(2, AAPL, 101)
                              + book_query(3, AAPL, 65535) + book_query(4, AAPL, 0), 4)
            assert [t for t, _, _ in got] == [27, 21, 21, 27]     # BookSnapshot, OrderRejected
            # OrderRejected INVALID_FIELD (9), clOrdId = the requestId, the symbol echoed
            assert [ORDER_REJECTED.unpack(b)[2:] for _, _, b in got[1:3]] == [(2, AAPL, 9), (3, AAPL, 9)]
            # BookSnapshot: seqNum, transactTime, requestId at 16
            assert [struct.unpack_from("<Q", b, 16)[0] for _, _, b in (got[0], got[3])] == [1, 4]
        finally:
            s.close()


async def test_mass_cancel_reports_in_book_order(tmp_path: Path) -> None:
    """The documented order of a MassCancel's OrderCanceled messages: bids best price first
    (time priority within a price), then asks best first, then pending buy stops in trigger
    order (lowest stop price first), then sell stops (highest first); then MassCancelDone."""
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        s = await RawSession.login(cfg, "alice")
        try:
            orders = [(1, 1, 1_000_000), (2, 1, 1_010_000), (3, 1, 1_000_000),     # bids
                      (4, 2, 1_050_000), (5, 2, 1_040_000), (6, 2, 1_050_000)]     # asks
            stops = [(7, 1, 1_100_000), (8, 1, 1_080_000), (11, 1, 1_080_000),     # buy stops
                     (9, 2, 900_000), (10, 2, 950_000)]                            # sell stops
            data = b"".join(new_order(cl, AAPL, side, price) for cl, side, price in orders)
            data += b"".join(new_order(cl, AAPL, side, 0, ord_type=3, stop_px=px) for cl, side, px in stops)
            got = await s.ask(data, 11)
            assert [t for t, _, _ in got] == [20] * 11                            # OrderAccepted
            got = await s.ask(mass_cancel(99), 12)
            assert [t for t, _, _ in got] == [23] * 11 + [26]                     # ..., MassCancelDone
            rows = [ORDER_CANCELED.unpack_from(b) for _, _, b in got[:11]]
            assert {(r[2], r[9]) for r in rows} == {(99, 4)}                      # clOrdId, MASS_CANCEL
            assert [r[3] for r in rows] == [2, 1, 3, 5, 4, 6, 8, 11, 7, 10, 9]    # origClOrdId
            assert struct.unpack("<QQQI", got[11][2])[2:] == (99, 11)             # clOrdId, count
        finally:
            s.close()


# -- finding 6: the clOrdId echo rule as documented -------------------------------------------------
async def test_a_makers_execution_carries_the_makers_clordid(tmp_path: Path) -> None:
    """The taker's Execution carries its request's clOrdId; the maker's (no request of the
    maker's session caused it) the resting order's own; both the same tradeId."""
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        maker, taker = await RawSession.login(cfg, "alice"), await RawSession.login(cfg, "bob")
        try:
            [(t, _, _)] = await maker.ask(new_order(5, AAPL, side=2, price=1_500_000, qty=10), 1)
            assert t == 20
            got = await taker.ask(new_order(9, AAPL, side=1, price=1_500_000, qty=4), 2)
            assert [t for t, _, _ in got] == [20, 22]                  # OrderAccepted, Execution
            [(t, _, made)] = await maker.frames(1)
            assert t == 22
            took = got[1][2]
            # clOrdId at 16, tradeId at 32, lastQty at 48, liquidity at 73
            assert struct.unpack_from("<Q", took, 16)[0] == 9 and took[73] == 2     # TAKER
            assert struct.unpack_from("<Q", made, 16)[0] == 5 and made[73] == 1     # MAKER
            assert struct.unpack_from("<Q", took, 32) == struct.unpack_from("<Q", made, 32)
            assert struct.unpack_from("<Q", made, 48)[0] == 4
        finally:
            maker.close()
            taker.close()


def md_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(templateId, version, root block) of each SBE message of a binary market-data WebSocket
    message: bare messages back to back, their lengths from the header and the groups."""
    out = []
    pos = 0
    while pos < len(data):
        block_length, template, schema, version = HEADER.unpack_from(data, pos)
        assert schema == 1
        start = pos + HEADER.size
        out.append((template, version, data[start:start + block_length]))
        pos = start + block_length
        if template in (42, 43):                         # bids, asks: groupSizeEncoding + entries
            for _ in range(2):
                entry, n = struct.unpack_from("<HH", data, pos)
                pos += 4 + entry * n
    assert pos == len(data)
    return out


async def test_book_seq_moves_only_with_subscribers_and_bbo_comes_before_its_depth_update(
        tmp_path: Path) -> None:
    """Two book changes with nobody subscribed do not move bookSeq (the subscription's first
    read numbers the book 1); after subscribing with ["bbo", "depth"]: DepthSnapshot, then Bbo,
    then for a change the Bbo with bookSeq N before the DepthUpdate covering N."""
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        s = await RawSession.login(cfg, "alice")
        try:
            await s.ask(new_order(1, AAPL, 1, 1_000_000), 1)
            await s.ask(new_order(2, AAPL, 1, 1_010_000), 1)
            async with ws_connect(f"ws://{cfg.ws_listen}/md") as ws:
                await ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": ["bbo", "depth"],
                                          "symbols": ["AAPL"], "encoding": "binary", "levels": 5}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 3))["result"] == "subscribed"
                got: list[tuple[int, int, bytes]] = []
                while len(got) < 2:
                    got += md_messages(await asyncio.wait_for(ws.recv(), 3))    # type: ignore[arg-type]
                # DepthSnapshot lastSeq (16), Bbo bookSeq (16): 1, and the version-2 header
                assert [(t, v, struct.unpack_from("<Q", b, 16)[0]) for t, v, b in got] == [
                    (42, 2, 1), (40, 2, 1)]
                await s.ask(new_order(3, AAPL, 1, 1_020_000), 1)
                got = []
                while len(got) < 2:
                    got += md_messages(await asyncio.wait_for(ws.recv(), 3))    # type: ignore[arg-type]
                # Bbo bookSeq 2 and bidPrice (24), then DepthUpdate firstSeq, lastSeq (16, 24)
                assert [t for t, _, _ in got] == [40, 43]
                assert struct.unpack_from("<Qq", got[0][2], 16) == (2, 1_020_000)
                assert struct.unpack_from("<QQ", got[1][2], 16) == (2, 2)
        finally:
            s.close()


# -- finding 4: the acting version is the header's ----------------------------------------------------
def login_v(cfg: Config, account: str, block: bytes, version: int) -> bytes:
    token = mint_token(cfg.jwt_secret, account).encode()
    return frame(1, block, version=version, tail=struct.pack("<H", len(token)) + token)


def bid_levels(snapshot_frame: bytes) -> list[tuple[int, int, int]]:
    """(price, size, orderCount) of a TCP-framed BookSnapshot's bids group."""
    pos = SOFH.size + HEADER.size + 32
    entry, n = struct.unpack_from("<HH", snapshot_frame, pos)
    return [struct.unpack_from("<qQI", snapshot_frame, pos + 4 + i * entry) for i in range(n)]


async def test_fields_above_the_headers_version_are_ignored_whatever_the_block_length(
        tmp_path: Path) -> None:
    """Version-1 headers on version-2-sized blocks: Login's defaultStpMode 9 (invalid: with a
    version-2 header the session's NewOrders are rejected INVALID_FIELD), NewOrder's displayQty
    (version 2: an iceberg showing 10 of 100) and MassCancel's scope 7 (version 2: rejected
    INVALID_FIELD) are absent, i.e. their documented defaults."""
    cfg = make_config(tmp_path)
    stp9 = struct.pack("<IQBB", 1000, 0, 0, 9)                                  # 14 bytes
    iceberg = [struct.pack("<QqQ8sBBBBBqQ", cl, px, 100, AAPL, 1, 1, 1, 0, 0, 0, 10)
               for cl, px in ((1, 1_000_000), (2, 990_000))]                   # 53 bytes
    async with running_gateway(cfg):
        host, port = cfg.listen.rsplit(":", 1)
        s = RawSession(*await asyncio.open_connection(host, int(port)))
        try:
            s.writer.write(login_v(cfg, "alice", stp9, 1))
            assert [t for t, _, _ in await s.frames(1)] == [2]                    # LoginAccepted
            got = await s.ask(frame(10, iceberg[0], version=1) + frame(10, iceberg[1]), 2)
            assert [t for t, _, _ in got] == [20, 20]   # accepted: the Login's StpMode 9 is absent
            assert [t for t, _, _ in await s.ask(book_query(5, AAPL, 2), 1)] == [27]
            # version 1: a plain limit order of 100; version 2: an iceberg showing 10
            assert bid_levels(s.raw[-1]) == [(1_000_000, 100, 1), (990_000, 10, 1)]
            got = await s.ask(frame(13, struct.pack("<Q8sBB", 3, AAPL, 0, 7), version=1)
                              + frame(13, struct.pack("<Q8sBB", 4, AAPL, 0, 7)), 4)
            # version 1: scope absent (SESSION), both orders canceled, MassCancelDone; then
            # version 2: scope 7 -> OrderRejected INVALID_FIELD
            assert [t for t, _, _ in got] == [23, 23, 26, 21]
            assert ORDER_REJECTED.unpack(got[3][2])[2:] == (4, AAPL, 9)
        finally:
            s.close()
        # the same Login with a version-2 header: defaultStpMode 9 applies, the order is refused
        s = RawSession(*await asyncio.open_connection(host, int(port)))
        try:
            s.writer.write(login_v(cfg, "bob", stp9, 2))
            assert [t for t, _, _ in await s.frames(1)] == [2]
            [(t, _, rej)] = await s.ask(new_order(1, AAPL), 1)
            assert t == 21 and ORDER_REJECTED.unpack(rej)[4] == 9                # INVALID_FIELD
        finally:
            s.close()
