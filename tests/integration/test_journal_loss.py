"""Recovery reconciles the logs derived from the journal with it (issue 16, item 0).

A journal that lost acknowledged records (a power loss under durability=os, an older journal
restored) must never let the message store, the event log or PostgreSQL keep numbers that new
commands would reuse with other content: the start refuses with one line, ``hftgw repair``
says what it would move, ``--apply`` moves it aside, and the next start serves a history in
which every session message, event and trade id has one content only.  Real processes, the
real PostgreSQL, the files as the gateway wrote them.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from support.fault_harness import (
    SEGMENT_RE,
    WORKTREE,
    ServerProcess,
    StreamingClient,
    connect_all,
    expected_books,
    stream_for,
)
from support.gateway_harness import make_config, metric_value, scrape

from gateway.clients.tcp import LoginError
from gateway.engine import Engine
from matching.records import EventType, LoginRejectReason, unpack_event
from persistence.event_log import EVENT_SIZE
from persistence.journal import FRAME_SIZE
from persistence.message_store import MessageStore

ACCOUNTS = ("alice", "bob")
Books = dict[str, tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]]
ENV = {"HFTGW_SYMBOLS": '[{"name": "AAPL"}, {"name": "MSFT"}]'}


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=server.env,
                          cwd=WORKTREE, capture_output=True, text=True, timeout=60)


def cut_journal(server: ServerProcess, keep_fraction: float) -> int:
    """Keep the first ``keep_fraction`` of the journal's records (what a power loss leaves of
    unsynced writes); returns the records kept."""
    (only,) = server.journal_files()
    records = only.stat().st_size // FRAME_SIZE
    keep = int(records * keep_fraction)
    with open(only, "r+b") as f:
        f.truncate(keep * FRAME_SIZE)
    return keep


@contextlib.contextmanager
def regenerated(server: ServerProcess, scratch: Path) -> Iterator[Engine]:
    """An engine that replayed a copy of the journal alone (no snapshot, store or event log):
    the one history the journal explains."""
    scratch.mkdir()
    for p in server.journal_dir.iterdir():
        if SEGMENT_RE.match(p.name):
            shutil.copy(p, scratch / p.name)
    eng = Engine(make_config(scratch, pg_dsn="postgresql://unused@127.0.0.1:9/none",
                             symbols=ENV["HFTGW_SYMBOLS"]))
    eng.recover()
    try:
        yield eng
    finally:
        eng.close()
        eng.audit.close()


def journal_fills(ref: Engine) -> dict[int, tuple[int, int]]:
    """trade id -> (price, qty) of every fill in the regenerated engine's event log."""
    assert ref.event_log is not None
    no, data = ref.event_log.read(1, 1 << 30)
    assert no == 1
    events = (unpack_event(data, off) for off in range(0, len(data), EVENT_SIZE))
    return {ev["ref"]: (ev["price"], ev["qty"]) for ev in events if ev["type"] == EventType.EVT_FILL}


def store_bytes(directory: Path, sessions: list[int]) -> dict[int, bytes]:
    store = MessageStore(str(directory))
    store.open()
    try:
        return {sid: store.read(sid, 1)[0] for sid in sessions}
    finally:
        store.close()


async def pg_rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def wait_sink_caught_up(server: ServerProcess, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = scrape(server.cfg, "/metrics")[1]
        if (metric_value(body, "hftgw_sink_connected") == 1
                and metric_value(body, "hftgw_sink_lag_events") == 0):
            return
        time.sleep(0.1)
    raise AssertionError("sink did not catch up:\n" + server.log())


def test_journal_behind_store_event_log_and_postgres(tmp_path: Path, pg_dsn: str) -> None:
    server = ServerProcess(tmp_path / "gw", {**ENV, "HFTGW_PG_DSN": pg_dsn,
                                             # keep the event log whole for the checks below
                                             "HFTGW_SNAPSHOT_INTERVAL_COMMANDS": "0"})
    server.start()

    before = asyncio.run(stream_for(server, 0.6, ACCOUNTS, seed=3))
    wait_sink_caught_up(server)
    server.kill()
    sessions = sorted(c.view.session_id for c in before)
    fills_before = asyncio.run(pg_rows(pg_dsn, "SELECT trade_id, price, qty FROM fills"))
    assert len(fills_before) > 20
    store_files = sorted(p for p in server.journal_dir.iterdir() if p.name.startswith("messages-"))
    sizes = {p: p.stat().st_size for p in store_files}

    # a power loss: the journal kept 60 % of its records, the store, event log and PostgreSQL
    # kept theirs
    cut_journal(server, 0.6)

    # 1. the start refuses in one line that names the folders and the repair; no traceback
    out = cli(server, "serve")
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    refusal = [ln for ln in text.splitlines() if "cannot start" in ln]
    assert len(refusal) == 1 and str(server.journal_dir) in refusal[0], text
    assert "message store" in refusal[0] and "event log" in refusal[0], refusal
    assert "hftgw repair" in refusal[0], refusal

    # 2. repair without --apply says what it found and changes nothing
    dry = cli(server, "repair")
    assert dry.returncode == 3, dry.stdout + dry.stderr
    assert "found: the message store holds" in dry.stdout and "--apply" in dry.stdout, dry.stdout
    assert {p: p.stat().st_size for p in store_files} == sizes
    assert not list(server.journal_dir.glob("lost-*"))

    # 3. --apply moves the excess aside (nothing deleted) and PostgreSQL's rows past the journal
    done = cli(server, "repair", "--apply")
    assert done.returncode == 0, done.stdout + done.stderr
    (lost,) = server.journal_dir.glob("lost-*")
    assert list(lost.glob("messages-*.log")) and list(lost.glob("events-*.log")), done.stdout
    assert "moved" in done.stdout and "fills_lost" in done.stdout, done.stdout
    again = cli(server, "repair")
    assert again.returncode == 0 and "nothing to repair" in again.stdout, again.stdout

    # a client whose view is ahead of the journal is told so: its next seq is past the end
    server.start()

    async def second_day() -> list[StreamingClient]:
        ahead = StreamingClient(server, ACCOUNTS[0], seed=0)
        ahead.view = before[0].view
        try:
            await ahead.connect()
            raise AssertionError("a login past the journal's end was accepted")
        except LoginError as exc:
            assert exc.reason == LoginRejectReason.LOGIN_INVALID_SEQUENCE, exc
        return await stream_for(server, 0.4, ACCOUNTS, seed=11)

    after = asyncio.run(second_day())
    wait_sink_caught_up(server)
    code, _ = server.terminate()
    assert code == 0, server.log()

    # the store, event log and PostgreSQL now hold exactly the history the journal explains
    with regenerated(server, tmp_path / "ref-2") as ref:
        sessions = sorted(set(sessions) | {c.view.session_id for c in after})
        assert store_bytes(server.journal_dir, sessions) == {
            sid: ref.store.read(sid, 1)[0] for sid in sessions}
        want_fills = journal_fills(ref)
    # every trade id in fills has the content the journal gives it; the rows of the lost
    # history are in fills_lost as they were, none dropped
    rows = asyncio.run(pg_rows(pg_dsn, "SELECT trade_id, price, qty FROM fills"))
    assert {r[0]: (r[1], r[2]) for r in rows} == want_fills
    old: dict[int, tuple[int, int]] = {r[0]: (r[1], r[2]) for r in fills_before}
    moved: dict[int, tuple[int, int]] = {r[0]: (r[1], r[2]) for r in
             asyncio.run(pg_rows(pg_dsn, "SELECT trade_id, price, qty FROM fills_lost"))}
    assert moved and all(old[t] == v for t, v in moved.items())
    kept = {t: v for t, v in old.items() if t not in moved}
    assert kept and min(moved) > max(kept)
    assert all(want_fills[t] == v for t, v in kept.items())


def test_journal_behind_shutdown_snapshot_refuses_then_continues_from_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "gw", ENV)
    server.start()

    async def day() -> tuple[list[StreamingClient], Books]:
        clients = await stream_for(server, 0.5, ACCOUNTS, seed=5)
        return clients, expected_books(c.view for c in clients)

    clients, books = asyncio.run(day())
    code, _ = server.terminate()       # a clean stop: the shutdown snapshot holds everything
    assert code == 0, server.log()
    kept = cut_journal(server, 0.8)    # then the journal's tail is damaged (or an older copy)

    out = cli(server, "serve")
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text
    refusal = [ln for ln in text.splitlines() if "cannot start" in ln]
    assert len(refusal) == 1 and "snapshot" in refusal[0] and f"seq {kept}" in refusal[0], text
    assert "hftgw repair --apply" in refusal[0], refusal

    done = cli(server, "repair", "--apply")
    assert done.returncode == 0, done.stdout + done.stderr
    (lost,) = server.journal_dir.glob("lost-*")
    assert [p.name for p in lost.iterdir()] == ["journal-00000001.log"], done.stdout

    server.start()

    async def check() -> None:
        # fresh views: every message from seq 1 is replayed, the same as sent live
        fresh = [StreamingClient(server, c.view.account, seed=20 + i) for i, c in enumerate(clients)]
        await connect_all(fresh)
        for f, c in zip(fresh, clients, strict=True):
            await f.settle(0.2)
            assert f.view.by_seq == c.view.by_seq, f.view.account
        for i, sym in enumerate(("AAPL", "MSFT")):
            assert await fresh[0].levels(sym, 50 + i) == books[sym], sym
        # and the stream goes on after the snapshot's numbers
        last = fresh[0].view.last_seq
        stop = asyncio.Event()
        task = asyncio.create_task(fresh[0].stream(stop, batch=5))
        await asyncio.sleep(0.2)
        stop.set()
        await task
        await fresh[0].settle(0.2)
        assert fresh[0].view.last_seq > last and not fresh[0].view.gaps()
        assert not fresh[0].view.duplicates
        for f in fresh:
            await f.close()

    asyncio.run(check())
    server.close()


def test_postgres_ahead_of_the_journal_stops_the_sink_until_repaired(tmp_path: Path,
                                                                      pg_dsn: str) -> None:
    server = ServerProcess(tmp_path / "gw", {**ENV, "HFTGW_PG_DSN": pg_dsn,
                                             "HFTGW_SNAPSHOT_INTERVAL_COMMANDS": "0"})
    server.start()

    asyncio.run(stream_for(server, 0.4, ACCOUNTS, seed=7))
    wait_sink_caught_up(server)
    server.kill()
    # the journal, the store and the event log lost the same tail: nothing local is ahead, but
    # PostgreSQL committed events the journal no longer explains
    cut_journal(server, 0.5)
    for p in server.journal_dir.iterdir():
        if p.name.startswith(("messages-", "events-")):
            p.unlink()
    count = "SELECT (SELECT count(*) FROM fills), (SELECT count(*) FROM order_events)"
    rows_before = asyncio.run(pg_rows(pg_dsn, count))[0]

    server.start()
    asyncio.run(stream_for(server, 0.4, ACCOUNTS, seed=9))   # order entry goes on
    deadline = time.monotonic() + 10
    while metric_value(scrape(server.cfg)[1], "hftgw_sink_diverged") != 1:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    status, body = scrape(server.cfg, "/health")
    assert status == 200 and '"sink":"diverged"' in body.replace(" ", ""), body
    assert "hftgw repair" in body
    assert asyncio.run(pg_rows(pg_dsn, count))[0] == rows_before, "the sink wrote while diverged"
    code, _ = server.terminate()
    assert code == 0, server.log()

    done = cli(server, "repair", "--apply")
    assert done.returncode == 0 and "fills_lost" in done.stdout, done.stdout + done.stderr
    server.start()
    wait_sink_caught_up(server)
    assert metric_value(scrape(server.cfg)[1], "hftgw_sink_diverged") == 0
    server.close()
    with regenerated(server, tmp_path / "ref") as ref:
        want = journal_fills(ref)
    rows = asyncio.run(pg_rows(pg_dsn, "SELECT trade_id, price, qty FROM fills"))
    assert {r[0]: (r[1], r[2]) for r in rows} == want
