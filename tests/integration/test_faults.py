"""Fault tests with real processes (issue 4, item 6): kill -9 under load, PostgreSQL stopped
under load, the journal cut at every offset of its last record, SIGTERM under load.

Quick mode (CI) by default; ``-m slow`` runs the long variants (20 kills).
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from support.fault_harness import (
    SYMBOLS,
    ClientView,
    PrivatePostgres,
    ServerProcess,
    StreamingClient,
    connect_all,
    expected_books,
    stream_for,
)
from support.gateway_harness import make_config
from support.reference_book import ReferenceCore

from gateway.engine import Engine
from matching.records import COMMAND_RECORD_SIZE, EventType, Side, unpack_command
from persistence.journal import FRAME_SIZE, Journal
from protocol.session import LogoutReason

ACCOUNTS = ("alice", "bob", "carol")


async def check_books_and_close(clients: list[StreamingClient]) -> None:
    """The server's books (BookQuery) equal those the clients' messages imply; then the clients
    log out."""
    want = expected_books(c.view for c in clients)
    for i, sym in enumerate(SYMBOLS):
        assert await clients[0].levels(sym, 9000 + i) == want[sym], sym
    for c in clients:
        await c.close()


async def close_and_check_journal(clients: list[StreamingClient], journal_dir: Path,
                                  scratch: Path) -> None:
    for c in clients:
        await c.close()
    check_acknowledged_in_journal([c.view for c in clients], journal_dir, scratch)


def journal_outcome(journal_dir: Path, scratch: Path) -> tuple[set[tuple[int, int, int]], set[int]]:
    """Replay a copy of the journal through the plain-Python reference core: the accepted
    orders as (session_id, cl_ord_id, order_id) and the trade ids it implies."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(journal_dir, scratch)
    accepted: set[tuple[int, int, int]] = set()
    trades: set[int] = set()
    ref = ReferenceCore([])
    j = Journal(str(scratch))
    j.open()
    try:
        for chunk in j.replay():
            for off in range(0, len(chunk), COMMAND_RECORD_SIZE):
                for ev in ref.process(unpack_command(chunk, off)):
                    etype, sid, cl, oid, trade = ev[4], ev[2], ev[8], ev[9], ev[13]
                    if etype == EventType.EVT_ACCEPTED:
                        accepted.add((sid, cl, oid))
                    elif etype == EventType.EVT_FILL:
                        trades.add(trade)
    finally:
        j.close()
    return accepted, trades


def check_acknowledged_in_journal(views: list[ClientView], journal_dir: Path, scratch: Path) -> None:
    accepted, trades = journal_outcome(journal_dir, scratch)
    for v in views:
        missing = [a for a in v.acked.values() if (v.session_id, a.cl_ord_id, a.order_id) not in accepted]
        assert not missing, f"{v.account}: {len(missing)} acknowledged orders not in the journal"
        lost = set(v.fills) - trades
        assert not lost, f"{v.account}: fills {sorted(lost)[:5]} not in the journal"


# -- SIGTERM under load ----------------------------------------------------------------------------
def test_sigterm_under_load_exits_0_in_grace_period_and_loses_nothing(tmp_path: Path) -> None:
    grace = 5.0
    server = ServerProcess(tmp_path, {"HFTGW_DRAIN_TIMEOUT_S": str(grace)})

    async def main() -> None:
        server.start()
        clients = [StreamingClient(server, a, seed=i) for i, a in enumerate(ACCOUNTS)]
        await connect_all(clients)
        stop = asyncio.Event()
        streams = [asyncio.create_task(c.stream(stop)) for c in clients]
        await asyncio.sleep(0.8)
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        # the clients keep sending until the server logs them out
        await asyncio.gather(*streams)
        for c in clients:
            assert c.client is not None
            await asyncio.wait_for(c.client.closed.wait(), grace)
        rc = await asyncio.to_thread(server.wait, grace + 5)
        took = time.monotonic() - t0
        stop.set()
        assert rc == 0, server.log()
        assert took < grace + 1.0, f"exit took {took:.2f} s"
        log = server.log()
        assert "stopped in" in log and "journal synced" in log, log
        for c in clients:
            assert c.view.logouts == [LogoutReason.SERVER_SHUTDOWN], (c.view.account, c.view.logouts)
            assert c.view.acked, "no order acknowledged before the stop"
            assert c.view.gaps() == []
        await close_and_check_journal(clients, server.journal_dir, tmp_path / "copy")
        # restart: every acknowledged order is back in the books, nothing missed by anyone
        server.start()
        for c in clients:
            next_seq = await c.connect()
            assert next_seq == c.view.last_seq + 1, "messages the client never got"
        await check_books_and_close(clients)

    server.run(main)


def test_second_sigterm_cuts_the_drain_short_and_exits_0(tmp_path: Path) -> None:
    # PostgreSQL unreachable: the sink cannot drain, so only the second signal ends the wait
    server = ServerProcess(tmp_path, {"HFTGW_DRAIN_TIMEOUT_S": "30",
                                      "HFTGW_PG_DSN": "postgresql://postgres@127.0.0.1:9/x"})

    async def main() -> None:
        server.start()
        clients = [StreamingClient(server, a, seed=i) for i, a in enumerate(ACCOUNTS[:2])]
        await connect_all(clients)
        stop = asyncio.Event()
        streams = [asyncio.create_task(c.stream(stop)) for c in clients]
        await asyncio.sleep(0.4)
        server.signal(signal.SIGTERM)
        await asyncio.gather(*streams)
        assert any(c.view.fills for c in clients)
        await asyncio.sleep(0.5)
        assert server.proc is not None and server.proc.poll() is None, "did not wait for the sink"
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        rc = await asyncio.to_thread(server.wait, 10)
        assert rc == 0
        assert time.monotonic() - t0 < 3.0
        assert "second stop signal" in server.log() and "not yet in PostgreSQL" in server.log()
        for c in clients:
            await c.close()

    server.run(main)


# -- kill -9 at random moments -------------------------------------------------------------------------
def run_kills(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    server = ServerProcess(tmp_path)

    async def main() -> None:
        clients = [StreamingClient(server, a, seed=seed * 10 + i) for i, a in enumerate(ACCOUNTS)]
        for k in range(kills + 1):
            server.start()
            await connect_all(clients)
            for c in clients:
                await c.settle(0.15)  # the re-login replay of what the kill cut off
                assert c.view.duplicates == [], f"kill {k}: {c.view.account} got a seq twice, differently"
                # needs the message store's re-login replay (i4-store) when a kill cut off
                # messages the journal had already produced
                assert c.view.gaps() == [], (f"kill {k}: {c.view.account} misses seqs "
                                             f"{c.view.gaps()[:10]} after re-login; "
                                             f"logins {c.view.logins[-3:]}")
            if k == kills:
                break
            stop = asyncio.Event()
            streams = [asyncio.create_task(c.stream(stop)) for c in clients]
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            server.kill()
            await asyncio.gather(*streams)
            await close_and_check_journal(clients, server.journal_dir, tmp_path / "copy")
        assert all(c.view.acked and c.view.fills for c in clients)
        await check_books_and_close(clients)

    server.run(main)


def test_kill9_while_streaming_loses_nothing_acknowledged(tmp_path: Path) -> None:
    run_kills(tmp_path, kills=5, seed=1)


@pytest.mark.slow
def test_kill9_while_streaming_slow(tmp_path: Path) -> None:
    run_kills(tmp_path, kills=20, seed=2)


# -- PostgreSQL stopped under load ----------------------------------------------------------------------
def test_postgres_stopped_under_load_every_fill_lands_once(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    pg.start()
    server = ServerProcess(tmp_path, {"HFTGW_PG_DSN": pg.dsn, "HFTGW_DRAIN_TIMEOUT_S": "10"})

    async def count_rows() -> tuple[int, set[int]]:
        conn = await asyncpg.connect(pg.dsn, timeout=5)
        try:
            rows = await conn.fetch("SELECT trade_id FROM fills")
        finally:
            await conn.close()
        ids = [r["trade_id"] for r in rows]
        return len(ids), set(ids)

    async def accepted_rows() -> list[tuple[str, int, int]]:
        conn = await asyncpg.connect(pg.dsn, timeout=5)
        try:
            rows = await conn.fetch("SELECT account, cl_ord_id, order_id FROM order_events "
                                    "WHERE type = 'accepted'")
        finally:
            await conn.close()
        return [(r["account"], r["cl_ord_id"], r["order_id"]) for r in rows]

    async def main() -> None:
        server.start()
        clients = [StreamingClient(server, a, seed=20 + i) for i, a in enumerate(ACCOUNTS)]
        await connect_all(clients)
        stop = asyncio.Event()
        streams = [asyncio.create_task(c.stream(stop)) for c in clients]
        await asyncio.sleep(0.4)
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(0.8)   # order entry goes on meanwhile
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(0.4)
        stop.set()
        await asyncio.gather(*streams)
        for c in clients:
            await c.settle(0.2)
        seen = set().union(*(c.view.fills for c in clients))
        assert seen
        deadline = time.monotonic() + 20
        while True:
            try:
                n, ids = await count_rows()
            except (OSError, asyncpg.PostgresError):
                n, ids = 0, set()
            if ids >= seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert n == len(ids), "a fill landed twice"
        assert ids == seen, f"{len(seen - ids)} fills missing, {len(ids - seen)} unknown"
        # order events (the event log's sink): every acknowledged order accepted exactly once
        acks = sorted((c.view.account, a.cl_ord_id, a.order_id)
                      for c in clients for a in c.view.acked.values())
        deadline = time.monotonic() + 10
        while sorted(rows := await accepted_rows()) != acks and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert sorted(rows) == acks, f"{len(rows)} accepted rows for {len(acks)} acknowledged orders"
        for c in clients:
            await c.close()

    try:
        asyncio.run(main())
        rc, _ = server.terminate()
        assert rc == 0
    finally:
        server.close()
        pg.close()


# -- the journal cut at every offset of its last record ---------------------------------------------------
def test_truncated_last_record_keeps_every_earlier_one(tmp_path: Path) -> None:
    # small segments: the last record is in the last of several segment files
    server = ServerProcess(tmp_path / "src", {"HFTGW_JOURNAL_SEGMENT_BYTES": "4096"})

    server.start()
    clients = asyncio.run(stream_for(server, 0.3, ACCOUNTS[:2], seed=40))
    # a torn tail comes from a crash: a clean stop would leave a shutdown snapshot that already
    # holds the last record (and retention would have removed the segments before it)
    server.kill()
    files = server.journal_files()
    last, size = files[-1], files[-1].stat().st_size
    records = sum(f.stat().st_size for f in files) // FRAME_SIZE
    assert len(files) > 2 and size % FRAME_SIZE == 0 and size >= FRAME_SIZE

    # in process, every offset: Engine.recover is the start's code path
    cfg_dir = tmp_path / "cut"
    want_last = records - 1   # seq of the last whole record left (seq numbers start at 1)
    shutil.copytree(server.journal_dir, cfg_dir)
    data = last.read_bytes()
    for cut in range(size - FRAME_SIZE, size):
        (cfg_dir / last.name).write_bytes(data[:cut])
        cfg = make_config(cfg_dir, symbols='[{"name": "AAPL"}, {"name": "MSFT"}]',
                          journal_segment_bytes=4096)
        eng = Engine(cfg)
        try:
            stats = eng.recover()
            assert stats.commands == want_last, cut
            # recover may journal after them (a session the cut left attached is detached),
            # but every whole record before the cut is kept as it was
            assert eng.sequencer.next_seq - 1 >= want_last, cut
            whole = cut - cut % FRAME_SIZE
            assert (cfg_dir / last.name).read_bytes()[:whole] == data[:whole], cut
        finally:
            eng.close()
            eng.audit.close()
    # the whole-record cut's books equal those of the full journal minus its last command
    full = ReferenceCore([])
    j = Journal(str(server.journal_dir))
    j.open()
    cmds = [unpack_command(ch, off) for ch in j.replay() for off in range(0, len(ch), COMMAND_RECORD_SIZE)]
    j.close()
    for c in cmds[:-1]:
        full.process(c)

    # a few offsets through a real process: it starts, serves, and re-login is consistent
    for cut in (size - FRAME_SIZE, size - FRAME_SIZE + 9, size - 1):
        work = tmp_path / f"proc-{cut}"
        proc = ServerProcess(work, {"HFTGW_JOURNAL_SEGMENT_BYTES": "4096"})
        shutil.rmtree(proc.journal_dir)
        shutil.copytree(server.journal_dir, proc.journal_dir)
        with open(proc.journal_dir / last.name, "r+b") as f:
            f.truncate(cut)
        proc.start()
        try:
            if cut % FRAME_SIZE:
                assert "torn" in proc.log() or "cut" in proc.log(), proc.log()

            async def check(proc: ServerProcess = proc, cut: int = cut) -> None:
                c = StreamingClient(proc, ACCOUNTS[0], seed=0)
                await connect_all([c])
                for i, sym in enumerate(SYMBOLS):
                    sym_id = i  # AAPL and MSFT were defined first, in this order
                    want = (full.book_levels(sym_id, int(Side.SIDE_BUY), 100),
                            full.book_levels(sym_id, int(Side.SIDE_SELL), 100))
                    assert await c.levels(sym, 100 + i) == want, (cut, sym)
                await c.close()

            asyncio.run(check())
        finally:
            proc.close()
    del clients


@pytest.fixture(autouse=True)
def _symbols_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # two symbols only: small books, quick BookQuery checks, ids 0 and 1 in this order
    monkeypatch.setitem(os.environ, "HFTGW_SYMBOLS", '[{"name": "AAPL"}, {"name": "MSFT"}]')
