"""Message store and re-login replay (SoupBinTCP semantics) over real sockets and real server
processes: missed messages come back exactly once, across reconnects, clean restarts and kill -9;
cancel-on-disconnect orders are canceled after a crash."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from support.gateway_harness import (
    limit,
    login,
    make_config,
    metric_value,
    running_gateway,
    scrape,
    serve_process,
)

from gateway.clients.tcp import LoginError, OrderClient
from gateway.clients.ws import WsOrderClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import (
    EVENT_RECORD_SIZE,
    CancelReason,
    EventType,
    LoginRejectReason,
    Side,
    pack_event,
)
from matching.ring import SpscRing
from persistence.message_store import MessageStore
from protocol import codec
from protocol.messages import (
    BookQuery,
    BookSnapshot,
    Execution,
    MassCancelDone,
    OrderAccepted,
    OrderCanceled,
)
from protocol.outbound import Outbound

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL


def frames(msgs: list[Any]) -> bytes:
    return b"".join(codec.encode(m) for m in msgs)


def seqs(msgs: list[Any]) -> list[int]:
    return [m.seq_num for m in msgs]


async def recv_n(c: Any, n: int, timeout: float = 10.0) -> list[Any]:
    return [await c.recv(timeout) for _ in range(n)]


async def no_more(c: Any, wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await c.recv(wait)


# -- the store itself -----------------------------------------------------------------------------

def msg_frames(first: int, n: int) -> bytes:
    return frames([OrderAccepted(seq_num=s, transact_time=s, cl_ord_id=s * 10, order_id=s,
                                 price=100, order_qty=1, leaves_qty=1, symbol="AAPL", side=1,
                                 ord_type=2, time_in_force=1) for s in range(first, first + n)])


def test_sofh_helpers() -> None:
    data = msg_frames(1, 5)
    assert codec.sofh_scan(data) == (5, 0)
    one = len(msg_frames(1, 1))
    assert codec.sofh_scan(data, 2) == (5, 2 * one)
    assert codec.sofh_scan(data, 9) == (5, len(data))
    assert codec.strip_sofh(data) == b"".join(codec.encode(m, sofh=False)
                                              for m in codec.decode_frames(data)[0])
    assert codec.strip_sofh(b"") == b""
    with pytest.raises(ValueError, match="offset 0"):
        codec.strip_sofh(data[:-1][-one + 1:])
    with pytest.raises(ValueError, match=f"offset {4 * one}"):
        codec.sofh_scan(data[:-1])


def test_message_store_skips_regenerated_and_reads_from_any_seq(tmp_path: Path) -> None:
    st = MessageStore(str(tmp_path), segment_bytes=400)
    st.open()
    assert st.append(3, 1, msg_frames(1, 4)) == 4
    assert st.append(3, 5, msg_frames(5, 3), 3) == 3
    assert st.append(4, 1, msg_frames(1, 2)) == 2
    # a journal replay offering 1..9 again: only 8 and 9 are new
    assert st.append(3, 1, msg_frames(1, 9)) == 2
    assert st.append(3, 5, msg_frames(5, 2)) == 0
    with pytest.raises(ValueError, match="gap"):
        st.append(3, 11, msg_frames(11, 1))
    assert (st.end_seq(3), st.end_seq(4), st.end_seq(5)) == (9, 2, 0)
    for start in range(1, 10):
        assert st.read(3, start) == (msg_frames(start, 10 - start), 10)
    assert st.read(3, 10) == (b"", 10)
    data, nxt = st.read(3, 2, max_bytes=1)         # stops after the first stored frame
    assert (data, nxt) == (msg_frames(2, 3), 5)
    st.close()
    assert len(list(tmp_path.glob("messages-*.log"))) > 1      # rolled
    st2 = MessageStore(str(tmp_path), segment_bytes=400)
    st2.open()
    assert st2.sessions() == [3, 4] and st2.end_seq(3) == 9
    assert st2.read(3, 1)[0] == msg_frames(1, 9)
    st2.close()


def test_outbound_retain_encodes_disconnected_sessions_with_sofh() -> None:
    def accepted(sid: int, cl: int) -> bytes:
        return pack_event(type=EventType.EVT_ACCEPTED, session_id=sid, symbol_id=0, ts=5,
                          cl_ord_id=cl, order_id=cl, price=100, qty=1, leaves=1, side=1,
                          ord_type=2, tif=1)

    def drain(ob: Outbound, *events: bytes) -> None:
        ring = SpscRing(16, EVENT_RECORD_SIZE)
        for e in events:
            ring.push(e)
        ob.drain(ring, 0)

    ob = Outbound(["AAPL"], 8)
    assert ob.take_seq(3) == (1, b"")
    drain(ob, accepted(3, 1))                      # not retained, not connected: numbered, dropped
    assert ob.take_seq(3) == (2, b"")
    ob.retain = True
    ob.set_session(3, False, False)    # disconnected, and would be unframed: ignored in retain
    ob.set_next_seq(3, 7)
    assert ob.take_seq(3) == (7, b"")
    drain(ob, accepted(3, 70), accepted(4, 1), accepted(3, 71))
    first, data = ob.take_seq(3)
    msgs, end = codec.decode_frames(data)           # SOFH framed
    assert first == 7 and end == len(data)
    assert [(m.seq_num, m.cl_ord_id) for m in msgs] == [(7, 70), (8, 71)]
    assert ob.take_seq(4)[0] == 1 and ob.next_seq(3) == 9


# -- over the wire --------------------------------------------------------------------------------

async def _rest_and_fill(cfg: Config) -> tuple[list[Any], int]:
    """alice rests three sells (acks seq 1-3), logs out; bob fills two of them while she is away
    (her Executions seq 4, 5).  Returns alice's messages seen before leaving, and her session."""
    alice = await login(cfg, "alice")
    alice.send(*(limit(i, SELL, 1_000_000 + 100 * i, 10) for i in (1, 2, 3)))
    seen = await recv_n(alice, 3)
    assert seqs(seen) == [1, 2, 3]
    sid = alice.session_id
    await alice.logout()
    bob = await login(cfg, "bob")
    bob.send(limit(9, BUY, 1_000_200, 20))
    got = await bob.recv_until(lambda m: isinstance(m, Execution) and m.leaves_qty == 0)
    assert sum(m.last_qty for m in got if isinstance(m, Execution)) == 20
    await bob.logout()
    return seen, sid


async def test_relogin_replays_exactly_the_missed_messages(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        seen, sid = await _rest_and_fill(cfg)
        # N = 3: messages 3..5 (one already seen, two produced while disconnected), then live
        alice = await login(cfg, "alice", next_expected_seq_num=3)
        assert alice.next_seq_num == 3
        replay = await recv_n(alice, 3)
        assert seqs(replay) == [3, 4, 5]
        assert replay[0] == seen[2]
        assert [type(m) for m in replay[1:]] == [Execution, Execution]
        assert [m.cl_ord_id for m in replay[1:]] == [1, 2]
        alice.send(limit(4, SELL, 1_001_000, 1))
        live = await alice.recv()
        assert isinstance(live, OrderAccepted) and live.seq_num == 6
        await no_more(alice)
        await alice.logout()
        # N = 0: no replay, the live stream from the next seq
        alice = await login(cfg, "alice", next_expected_seq_num=0)
        assert alice.next_seq_num == 7
        await no_more(alice)
        await alice.logout()
        # N = next: nothing to replay either
        alice = await login(cfg, "alice", next_expected_seq_num=7)
        assert alice.next_seq_num == 7
        await no_more(alice)
        await alice.logout()
        # N > next: refused with a reason
        with pytest.raises(LoginError) as e:
            await login(cfg, "alice", next_expected_seq_num=8)
        assert e.value.reason == LoginRejectReason.LOGIN_INVALID_SEQUENCE
        assert gw.engine.store.end_seq(sid) == 6
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_replayed_messages_total") == 3
        assert metric_value(text, "hftgw_message_store_bytes") > 0


async def test_replay_across_a_clean_restart_is_byte_identical(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        seen, _ = await _rest_and_fill(cfg)
        alice = await login(cfg, "alice", next_expected_seq_num=1)
        before = await recv_n(alice, 5)
        await alice.logout()
    assert before[:3] == seen
    async with running_gateway(cfg):
        alice = await login(cfg, "alice", next_expected_seq_num=1)
        after = await recv_n(alice, 5)
        assert frames(after) == frames(before)
        alice.send(limit(5, SELL, 1_002_000, 1))
        assert (await alice.recv()).seq_num == 6
        await no_more(alice)
        await alice.logout()


async def test_large_replay_is_written_in_chunks_not_as_a_slow_consumer(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_write_buffer=65536, write_buffer_high=16384)
    n = 3000
    async with running_gateway(cfg):
        alice = await login(cfg, "alice")
        for base in range(0, n, 500):
            alice.send(*(limit(base + i + 1, SELL, 2_000_000 + 100 * (base + i), 1) for i in range(500)))
            await recv_n(alice, 500)
        await alice.logout()
        alice = await login(cfg, "alice", next_expected_seq_num=1)
        replay = await recv_n(alice, n)
        assert seqs(replay) == list(range(1, n + 1))
        alice.send(limit(n + 1, SELL, 3_000_000, 1))
        assert (await alice.recv()).seq_num == n + 1
        await alice.logout()


async def test_websocket_replay_equals_tcp_minus_sofh(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg) as gw:
        _, sid = await _rest_and_fill(cfg)
        tcp = await login(cfg, "alice", next_expected_seq_num=1)
        via_tcp = await recv_n(tcp, 5)
        await tcp.logout()
        ws = await WsOrderClient.connect(f"ws://{cfg.ws_listen}/orders",
                                         mint_token(cfg.jwt_secret, "alice"), next_expected_seq_num=2)
        assert ws.next_seq_num == 2
        via_ws = await recv_n(ws, 4)
        assert via_ws == via_tcp[1:]
        stored, _ = gw.engine.store.read(sid, 2)
        assert b"".join(codec.encode(m, sofh=False) for m in via_ws) == codec.strip_sofh(stored)
        # live messages after the replay, unframed as always on WebSocket
        ws.send(limit(7, SELL, 1_003_000, 1))
        live = await ws.recv()
        assert isinstance(live, OrderAccepted) and live.seq_num == 6
        await ws.logout()


def _book_asks(cfg: Config) -> list[tuple[int, int]]:
    async def q() -> list[tuple[int, int]]:
        c = await login(cfg, "observer")
        c.send(BookQuery(request_id=1, symbol="AAPL", depth=20))
        snap = await c.recv_until(lambda m: isinstance(m, BookSnapshot))
        await c.logout()
        return [(lv.price, lv.size) for lv in snap[-1].asks]
    return asyncio.run(q())


def test_kill9_restart_replays_and_cancels_cod_orders(tmp_path: Path) -> None:
    async def before(cfg: Config) -> list[Any]:
        carol = await login(cfg, "carol", cancel_on_disconnect=True)
        carol.send(*(limit(i, SELL, 1_100_000 + 100 * i, 5) for i in (1, 2)))
        seen = await recv_n(carol, 2)
        dave = await login(cfg, "dave")            # no cancel on disconnect
        dave.send(limit(1, SELL, 1_200_000, 7))
        await dave.recv()
        # both stay connected: the process dies under them
        return seen

    async def after(cfg: Config, seen: list[Any]) -> None:
        carol = await login(cfg, "carol", next_expected_seq_num=1)
        got = await recv_n(carol, 5)
        assert got[:2] == seen
        assert seqs(got) == [1, 2, 3, 4, 5]
        assert all(isinstance(m, OrderCanceled) and m.reason == CancelReason.CXL_DISCONNECT
                   for m in got[2:4])
        assert sorted(m.orig_cl_ord_id for m in got[2:4]) == [1, 2]
        assert isinstance(got[4], MassCancelDone) and got[4].canceled_count == 2
        await no_more(carol)
        await carol.logout()

    with serve_process(tmp_path) as (cfg, proc):
        seen = asyncio.run(before(cfg))
        proc.kill()
        proc.wait()
    with serve_process(tmp_path) as (cfg, proc):
        asyncio.run(after(cfg, seen))
        # dave's order rests still; carol's are gone
        assert _book_asks(cfg) == [(1_200_000, 7)]
    # a second restart does not cancel again (the detach was journaled)
    with serve_process(tmp_path) as (cfg, proc):
        async def again() -> None:
            carol = await login(cfg, "carol", next_expected_seq_num=6)
            assert carol.next_seq_num == 6
            await no_more(carol)
            await carol.logout()
        asyncio.run(again())


def test_kill9_mid_stream_then_relogin_has_no_gap(tmp_path: Path) -> None:
    async def stream(cfg: Config) -> list[Any]:
        erin = await login(cfg, "erin")
        erin.send(*(limit(i, BUY, 900_000 + 100 * i, 1) for i in range(1, 201)))
        return await recv_n(erin, 200)

    with serve_process(tmp_path) as (cfg, proc):
        seen = asyncio.run(stream(cfg))
        proc.kill()
        proc.wait()
    with serve_process(tmp_path) as (cfg, proc):
        async def relogin() -> None:
            erin = await login(cfg, "erin", next_expected_seq_num=150)
            got = await recv_n(erin, 51)
            assert got == seen[149:]
            await no_more(erin)
            erin.send(limit(999, BUY, 800_000, 1))
            assert (await erin.recv()).seq_num == 201
            await erin.logout()
        asyncio.run(relogin())


def test_order_client_connect_signature() -> None:
    # the clients ask for a seq through this keyword (used above)
    import inspect
    assert "next_expected_seq_num" in inspect.signature(OrderClient.connect).parameters
    assert "next_expected_seq_num" in inspect.signature(WsOrderClient.connect).parameters


async def test_websocket_drop_copy_of_a_tcp_session_gets_its_own_framing(tmp_path: Path) -> None:
    # the engine's bytes are SOFH-framed (the store's form); a WebSocket drop copy gets bare SBE
    # messages and a TCP trader framed ones, each decodable by its own client
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        trader = await login(cfg, "frank")
        dc = await WsOrderClient.connect(f"ws://{cfg.ws_listen}/orders",
                                         mint_token(cfg.jwt_secret, "frank", "dropcopy"))
        trader.send(limit(1, BUY, 990_000, 3), limit(2, BUY, 980_000, 4))
        mine = await recv_n(trader, 2)
        copy = await recv_n(dc, 2)
        assert copy == mine and seqs(copy) == [1, 2]
        await dc.logout()
        await trader.logout()


async def test_cli_client_next_seq_prints_the_replay(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        await _rest_and_fill(cfg)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "client", "--connect", cfg.listen, "--account",
            "alice", "--next-seq", "4", "book", "AAPL", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0, err.decode()
        assert "next seq 4" in text, text
        answers = [line.split()[1:3] for line in text.splitlines() if line.startswith("< seq=")]
        # the replay (4, 5), then the live answer to this connection's BookQuery
        assert answers == [["seq=4", "Execution"], ["seq=5", "Execution"],
                           ["seq=6", "BookSnapshot"]], text
