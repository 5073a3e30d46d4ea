"""Market data over WebSocket against a real gateway on 127.0.0.1, with the real ``websockets``
client: snapshot + updates rebuild exactly the matching core's book (and the in-sequence book
query's), BBO and trades agree with the order path, gaps are detected and resynced, a slow
subscriber is conflated then disconnected while fast ones and the order path carry on, bad
control messages get errors and never a crash, tokens and paths are checked."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateway_harness import login, make_config, metric_value, running_gateway, scrape
from support.md_harness import Follower, OrderStream, same_trades, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.clients.md import MdClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from gateway.server import Gateway
from protocol.mdjson import ErrorReply, MdError, Response, server_decoder

SYMBOLS = ["AAPL", "MSFT"]


def md_url(cfg: object) -> str:
    return f"ws://{cfg.ws_listen}/md"  # type: ignore[attr-defined]


async def follow(cfg: object, channels: list[str], symbols: list[str], encoding: str, levels: int,
                 resync_on_gap: bool = False) -> Follower:
    """A subscribed client with its reader task started."""
    c = await MdClient.connect(md_url(cfg))
    await c.subscribe(channels, symbols, encoding, levels)
    return Follower(c, encoding, resync_on_gap)


def assert_follows_core(gw: Gateway, f: Follower, symbol: str, levels: int,
                        query: list[tuple[int, int, int]] | None = None, side: int = 0) -> None:
    sid = gw.engine.symbols.lookup(symbol)
    book = f.books[(symbol, levels)]
    for s in (1, 2):
        assert book.top(s) == gw.engine.core.book_levels(sid, s, levels), (symbol, levels, s)


async def caught_up(gw: Gateway, followers: list[tuple[Follower, int]], symbols: list[str]) -> None:
    def done() -> bool:
        for f, levels in followers:
            f.check()
            for sym in symbols:
                stream = gw.md.feeds[gw.engine.symbols.lookup(sym)].streams[levels]
                book = f.books.get((sym, levels))
                if book is None or book.last_seq != stream.last_seq:
                    return False
        return True
    await until(done, what="subscribers to reach the published depth sequence")


@pytest.mark.parametrize("seed", [11, 12])
async def test_snapshot_and_updates_rebuild_the_core_book(tmp_path: Path, seed: int) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        traders = [await login(cfg, f"trader{i}") for i in range(3)]
        stream = OrderStream(traders, SYMBOLS, seed)
        for _ in range(4):  # a book exists before anyone subscribes
            await stream.round()
        fj = await follow(cfg, ["depth", "bbo", "trades"], SYMBOLS, "json", 20)
        fb = await follow(cfg, ["depth", "bbo", "trades"], SYMBOLS, "binary", 5)
        f10 = await follow(cfg, ["depth"], ["AAPL"], "json", 10)
        trades_before = gw.engine.core.next_trade_id - 1
        for r in range(30):
            await stream.round()
            if r % 5 == 4:
                await caught_up(gw, [(fj, 20), (fb, 5)], SYMBOLS)
                await caught_up(gw, [(f10, 10)], ["AAPL"])
                for sym in SYMBOLS:
                    snap = await stream.book(sym, 20)
                    query = {1: [(lv.price, lv.size, lv.order_count) for lv in snap.bids],
                             2: [(lv.price, lv.size, lv.order_count) for lv in snap.asks]}
                    for f, levels in ((fj, 20), (fb, 5)) + (((f10, 10),) if sym == "AAPL" else ()):
                        book = f.books[(sym, levels)]
                        for side in (1, 2):
                            # the in-sequence book query, the core and the subscriber agree
                            assert book.top(side) == query[side][:levels], (sym, levels, side)
                        assert_follows_core(gw, f, sym, levels)
                    # the BBO is the top of that book
                    for f in (fj, fb):
                        _, bp, bs, ap, asz = f.bbo[sym]
                        top_b, top_a = query[1][:1], query[2][:1]
                        assert (bp, bs) == ((top_b[0][0], top_b[0][1]) if top_b else (0, 0))
                        assert (ap, asz) == ((top_a[0][0], top_a[0][1]) if top_a else (0, 0))
        assert stream.requests > 1000
        # every trade since the subscription, once, in order, as the takers saw them
        fills = [t for t in stream.taker_fills() if t[0] > trades_before]
        assert len(fills) > 50
        await until(lambda: len(fj.trades) == len(fills) and len(fb.trades) == len(fills),
                    what="all trades")
        assert same_trades(fj.trades, fills) and same_trades(fb.trades, fills)
        assert [t[0] for t in fills] == list(range(trades_before + 1, trades_before + 1 + len(fills)))
        # the updates did the work: one snapshot per stream, then only updates (no gap, no resync)
        assert (fj.snapshots, fb.snapshots, f10.snapshots) == (2, 2, 1)
        assert fj.updates > 30 and fb.updates > 10
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_subscribers") == 3
        assert metric_value(text, "hftgw_md_subscriptions", 'channel="depth"') == 5
        # JSON: one message per WebSocket message (binary ones may hold several)
        assert metric_value(text, "hftgw_md_messages_sent_total") >= len(fj.messages) + len(f10.messages)
        assert metric_value(text, "hftgw_md_messages_dropped_total") == 0
        assert metric_value(text, "hftgw_md_slow_disconnects_total") == 0
        for f in (fj, fb, f10):
            await f.stop()
        for t in traders:
            await t.logout()


async def test_gap_is_detected_and_resynced(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        traders = [await login(cfg, f"t{i}") for i in range(2)]
        stream = OrderStream(traders, ["AAPL"], seed=5)
        for encoding in ("json", "binary"):
            f = await follow(cfg, ["depth"], ["AAPL"], encoding, 10, resync_on_gap=True)
            for _ in range(3):
                await stream.round()
            await caught_up(gw, [(f, 10)], ["AAPL"])
            assert f.gaps == 0 and f.snapshots == 1
            f.drop_next_update = True  # this client "loses" one update
            for _ in range(8):
                await stream.round()
            await until(lambda: f.gaps == 1 and f.snapshots == 2, what="gap and resync")  # noqa: B023
            await stream.round()
            await caught_up(gw, [(f, 10)], ["AAPL"])
            assert_follows_core(gw, f, "AAPL", 10)
            # the resubscription got a reply and a snapshot whose lastSeq skips what was lost
            replies = [m for m in f.messages if isinstance(m, Response)]
            assert len(replies) == 1 and replies[0].result == "subscribed"
            await f.stop()
        for t in traders:
            await t.logout()


def slow_socket() -> socket.socket:
    """A client socket with a small receive buffer, so that not reading shows quickly."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


async def test_slow_subscriber_is_conflated_then_disconnected(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, md_conflate_bytes=4 << 10, md_max_buffer_bytes=64 << 10,
                      md_socket_sndbuf=4096)
    async with running_gateway(cfg) as gw:
        traders = [await login(cfg, f"t{i}") for i in range(3)]
        stream = OrderStream(traders, SYMBOLS, seed=9)
        fast = await follow(cfg, ["depth", "bbo", "trades"], SYMBOLS, "json", 20)
        host, port = cfg.ws_listen.split(":")
        sock = slow_socket()
        sock.connect((host, int(port)))
        # max_queue=1: the client library stops reading the socket once one message waits
        slow = MdClient(await connect(md_url(cfg), sock=sock, max_queue=1, compression=None,
                                      max_size=None))
        await slow.subscribe(["depth", "bbo"], SYMBOLS, "json", 20)
        # phase 1: the slow one reads nothing; BBO and depth for it are conflated
        for _ in range(200):
            await stream.round(40)
            if gw.md.counters.dropped > 50 and gw.md.congested:
                break
        assert gw.md.congested and gw.md.counters.dropped > 50
        assert gw.md.counters.slow_disconnects == 0
        await caught_up(gw, [(fast, 20)], SYMBOLS)
        for sym in SYMBOLS:
            assert_follows_core(gw, fast, sym, 20)
        # phase 2: it reads again: what it gets ends with a fresh snapshot that matches the core
        fslow = Follower(slow, "json")
        await until(lambda: not gw.md.congested, what="the slow subscriber to catch up")
        await stream.round()
        await caught_up(gw, [(fslow, 20), (fast, 20)], SYMBOLS)
        for sym in SYMBOLS:
            assert_follows_core(gw, fslow, sym, 20)
        assert fslow.snapshots >= 3  # 2 at subscribe, at least one more after the conflation
        # phase 3: now it also takes trades, which are never conflated, and stops reading again
        fslow.task.cancel()
        await slow.request("subscribe", ["trades"], SYMBOLS)
        sent_before = stream.requests
        for _ in range(300):
            await stream.round(40)
            if gw.md.counters.slow_disconnects:
                break
        assert gw.md.counters.slow_disconnects == 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await slow.recv(5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason.startswith("slow consumer")
        # the order path and the fast subscriber were not held back
        assert stream.requests - sent_before > 500
        await stream.round()
        await caught_up(gw, [(fast, 20)], SYMBOLS)
        for sym in SYMBOLS:
            assert_follows_core(gw, fast, sym, 20)
        fills = stream.taker_fills()
        await until(lambda: len(fast.trades) == len(fills), what="fast subscriber trades")
        assert same_trades(fast.trades, fills)
        await until(lambda: len(gw.md.conns) == 1, what="the slow connection to go")
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_slow_disconnects_total") == 1
        assert metric_value(text, "hftgw_md_messages_dropped_total") > 50
        assert metric_value(text, "hftgw_md_subscribers") == 1
        await fast.stop()
        for t in traders:
            await t.logout()


BAD_CONTROL = [
    ("not json", MdError.BAD_REQUEST),
    ("[1, 2]", MdError.BAD_REQUEST),
    ('{"op": "subscribe", "id": "x"}', MdError.BAD_REQUEST),
    ('{"op": "subscribe", "id": 1, "what": 1}', MdError.BAD_REQUEST),
    ('{"op": "fly", "id": 2}', MdError.UNKNOWN_OP),
    ('{"op": "subscribe", "id": 3, "channels": [], "symbols": ["AAPL"]}', MdError.BAD_REQUEST),
    ('{"op": "subscribe", "id": 4, "channels": ["quotes"], "symbols": ["AAPL"]}', MdError.UNKNOWN_CHANNEL),
    ('{"op": "subscribe", "id": 5, "channels": ["bbo"], "symbols": ["AAPL", "NOPE"]}',
     MdError.UNKNOWN_SYMBOL),
    ('{"op": "subscribe", "id": 6, "channels": ["bbo"], "symbols": ["aapl"]}', MdError.UNKNOWN_SYMBOL),
    ('{"op": "subscribe", "id": 7, "channels": ["bbo"], "symbols": ["AAPL"], "encoding": "xml"}',
     MdError.BAD_ENCODING),
    ('{"op": "subscribe", "id": 8, "channels": ["depth"], "symbols": ["AAPL"], "levels": 7}',
     MdError.BAD_LEVELS),
    ('{"op": "subscribe", "id": 9, "channels": ["bbo", "trades", "depth"], "symbols": ["AAPL", "MSFT"]}',
     MdError.TOO_MANY_SUBSCRIPTIONS),
    ('{"op": "unsubscribe", "id": 10, "channels": ["bbo"], "symbols": ["ZZZZ"]}', MdError.UNKNOWN_SYMBOL),
    ('{"op": "subscribe", "id": 11, "channels": "bbo", "symbols": ["AAPL"]}', MdError.BAD_REQUEST),
    ("x" * 5000, MdError.BAD_REQUEST),
]


async def test_bad_control_messages_get_errors_never_a_crash(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, md_max_subscriptions=4, md_max_control_per_s=1000)
    async with running_gateway(cfg) as gw:
        async with connect(md_url(cfg)) as ws:
            for text, code in BAD_CONTROL:
                await ws.send(text)
                reply = server_decoder.decode(await asyncio.wait_for(ws.recv(), 5))
                assert isinstance(reply, ErrorReply), text
                assert (reply.code, reply.error) == (int(code), code.name), (text, reply)
                rid = json.loads(text).get("id") if text.startswith("{") else None
                assert reply.id == (rid if isinstance(rid, int) else None), text
            await ws.send(b"\x01\x02")  # binary on the control channel
            reply = server_decoder.decode(await ws.recv())
            assert isinstance(reply, ErrorReply) and reply.code == MdError.BAD_REQUEST
            # nothing of the refused requests was applied; the connection still works
            await ws.send('{"op": "list", "id": 20}')
            listed = server_decoder.decode(await ws.recv())
            assert isinstance(listed, Response) and listed.subscriptions == [] and listed.id == 20
            await ws.send('{"op": "subscribe", "id": 21, "channels": ["bbo", "trades"], '
                          '"symbols": ["AAPL", "MSFT"]}')
            ok = server_decoder.decode(await ws.recv())
            assert isinstance(ok, Response) and len(ok.subscriptions) == 4
            await ws.send('{"op": "unsubscribe", "id": 22, "channels": ["trades"], "symbols": ["MSFT"]}')
            msgs = [server_decoder.decode(await ws.recv()) for _ in range(3)]  # 2 BBOs, then the reply
            assert [type(m).__name__ for m in msgs] == ["JsonBbo", "JsonBbo", "Response"]
            assert len(msgs[2].subscriptions) == 3  # type: ignore[union-attr]
            await ws.send('{"op": "ping", "id": 23}')
            pong = server_decoder.decode(await ws.recv())
            assert isinstance(pong, Response) and pong.result == "pong"
        # invalid UTF-8 in a text frame: the websockets library closes with 1007, the server lives
        async with connect(md_url(cfg)) as ws:
            ws.protocol.send_frame(__import__("websockets").frames.Frame(
                __import__("websockets").frames.Opcode.TEXT, b"\xff\xfe"))
            ws.send_data()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_control_errors_total", 'error="bad_request"') == 8
        assert metric_value(text, "hftgw_md_control_errors_total", 'error="unknown_symbol"') == 3
        # still serving
        c = await MdClient.connect(md_url(cfg))
        assert isinstance(await c.request("ping"), Response)
        await c.close()
        assert gw.engine.ready


async def test_control_rate_limit(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, md_max_control_per_s=5)
    async with running_gateway(cfg):
        async with connect(md_url(cfg)) as ws:
            for i in range(40):
                await ws.send(json.dumps({"op": "ping", "id": i}))
            codes = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    m = server_decoder.decode(await asyncio.wait_for(ws.recv(), 5))
                    codes.append(m.code if isinstance(m, ErrorReply) else 0)
            assert codes[:5] == [0] * 5  # the burst allowance
            assert codes.count(MdError.RATE_LIMITED) >= 5
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "too many control messages"
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_control_errors_total", 'error="rate_limited"') >= 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["op", "id", "channels", "symbols", "encoding", "levels", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=10),
                              st.lists(st.sampled_from(["bbo", "depth", "AAPL", "?", ""]), max_size=4)),
                    max_size=6).map(json.dumps)))
def test_any_control_text_gets_exactly_one_reply(
        junk: str, md_gateway: tuple[str, asyncio.AbstractEventLoop]) -> None:
    url, loop = md_gateway

    async def probe() -> object:
        async with connect(url) as ws:
            await ws.send(junk)
            first = server_decoder.decode(await asyncio.wait_for(ws.recv(), 5))
            await ws.send('{"op": "ping", "id": -1}')
            while True:  # market data for a valid subscription may come before the pong
                m = server_decoder.decode(await asyncio.wait_for(ws.recv(), 5))
                if isinstance(m, (Response, ErrorReply)):
                    assert isinstance(m, Response) and m.id == -1 and m.result == "pong"
                    return first
    first = asyncio.run_coroutine_threadsafe(probe(), loop).result(30)
    assert isinstance(first, (Response, ErrorReply))


@pytest.fixture(scope="module")
def md_gateway(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """One gateway in its own thread's event loop for the hypothesis fuzz test (whose examples
    are synchronous calls); yields its market-data URL and its loop."""
    cfg = make_config(tmp_path_factory.mktemp("md"), md_max_control_per_s=100_000)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Gateway] = {}

    async def main() -> None:
        gw = Gateway(cfg)
        await gw.start()
        holder["gw"] = gw
        started.set()
        await gw.serve_until_stopped()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(30)
    yield md_url(cfg), loop
    loop.call_soon_threadsafe(holder["gw"].stop)
    t.join(30)


async def test_token_and_paths(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, md_require_token="true")
    async with running_gateway(cfg):
        with pytest.raises(InvalidStatus) as refused:
            await MdClient.connect(md_url(cfg))
        assert refused.value.response.status_code == 401
        trader = mint_token(cfg.jwt_secret, "alice", "trader")
        with pytest.raises(InvalidStatus) as refused:
            await MdClient.connect(md_url(cfg), token=trader)
        assert refused.value.response.status_code == 401
        md_token = mint_token(cfg.jwt_secret, "viewer", "md")
        c = await MdClient.connect(md_url(cfg), token=md_token)  # Authorization: Bearer
        assert isinstance(await c.request("ping"), Response)
        await c.close()
        async with connect(md_url(cfg) + "?token=" + md_token) as ws:  # the browser way
            await ws.send('{"op": "ping", "id": 1}')
            assert isinstance(server_decoder.decode(await ws.recv()), Response)
        with pytest.raises(InvalidStatus) as refused:
            await MdClient.connect(f"ws://{cfg.ws_listen}/nowhere")
        assert refused.value.response.status_code == 404
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_auth_failures_total") == 2
    # every refused handshake and every one with a verified token is audited (issue 14, finding 7)
    got = [(x["outcome"], x["reason"], x["account"], x["status"]) for x in md_audit(cfg)]
    assert got == [("rejected", "bad_token", "", 401), ("rejected", "role_not_allowed", "alice", 401),
                   ("accepted", "", "viewer", 101), ("accepted", "", "viewer", 101)]


def md_audit(cfg: Config) -> list[dict[str, Any]]:
    lines = (Path(cfg.journal_dir) / "audit.log").read_text().splitlines()
    return [x for x in map(json.loads, lines) if x["event"] == "md_handshake"]


async def test_connection_limit(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, md_max_connections=2)
    async with running_gateway(cfg) as gw:
        a = await MdClient.connect(md_url(cfg))
        b = await MdClient.connect(md_url(cfg))
        with pytest.raises(InvalidStatus) as refused:
            await MdClient.connect(md_url(cfg))
        assert refused.value.response.status_code == 503
        await a.close()
        await until(lambda: len(gw.md.conns) == 1, what="the closed connection to go")
        c = await MdClient.connect(md_url(cfg))  # a slot is free again
        await c.close()
        await b.close()
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_md_connections_refused_total") == 1
        assert metric_value(text, "hftgw_md_connections_total") == 3
    [line] = md_audit(cfg)                        # no token required: only the refusal
    assert (line["outcome"], line["reason"], line["status"]) == ("rejected", "connection_limit", 503)
    assert line["address"].startswith("127.0.0.1:")


async def test_many_subscribers_across_fanout_slices(tmp_path: Path) -> None:
    """A 1 us slice budget: every sweep takes many slices, with orders matched in between;
    every subscriber still gets every trade once and ends on the core's BBO and book."""
    cfg = make_config(tmp_path, md_slice_us=1)
    async with running_gateway(cfg) as gw:
        followers = []
        for i in range(60):
            encoding = "binary" if i % 2 else "json"
            followers.append(await follow(cfg, ["bbo", "trades", "depth"], ["AAPL"], encoding, 5))
        traders = [await login(cfg, f"t{i}") for i in range(2)]
        stream = OrderStream(traders, ["AAPL"], seed=21)
        for _ in range(15):
            await stream.round()
        fills = stream.taker_fills()
        assert len(fills) > 20
        await until(lambda: all(len(f.trades) == len(fills) for f in followers), what="all trades")
        await caught_up(gw, [(f, 5) for f in followers], ["AAPL"])
        top = (gw.engine.core.book_levels(0, 1, 1), gw.engine.core.book_levels(0, 2, 1))
        want_bbo = ((top[0][0][0], top[0][0][1]) if top[0] else (0, 0)) + (
            (top[1][0][0], top[1][0][1]) if top[1] else (0, 0))
        await until(lambda: all(f.bbo["AAPL"][1:] == want_bbo for f in followers), what="the last BBO")
        for f in followers:
            assert same_trades(f.trades, fills)
            assert_follows_core(gw, f, "AAPL", 5)
        c = gw.md.counters
        assert c.slices > 2 * c.sweeps > 0  # sweeps were cut into slices
        # once quiet, every log has been read by everyone and trimmed
        assert gw.md.log_topics and all(not t.log and t.base > 0 for t in gw.md.log_topics)
        for f in followers:
            await f.stop()
        for t in traders:
            await t.logout()


async def test_keepalive_pings_drop_a_silent_peer(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.3)
    async with running_gateway(cfg) as gw:
        live = await MdClient.connect(md_url(cfg))  # the library answers pings by itself
        host, port = cfg.ws_listen.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /md HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        await until(lambda: len(gw.md.conns) == 2, what="both connections")
        # this one never answers: a ping arrives, then the server gives up on it
        data = await asyncio.wait_for(reader.read(2), 5)
        assert data[0] & 0x0F == 0x9  # a ping frame
        await until(lambda: len(gw.md.conns) == 1, timeout=5, what="the silent peer to be dropped")
        assert isinstance(await live.request("ping"), Response)  # the other one is still there
        await live.close()
        writer.close()
