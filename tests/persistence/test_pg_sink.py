"""Binary COPY payloads, the event log and the exactly-once PostgreSQL sink (real PostgreSQL)."""
from __future__ import annotations

import asyncio
import socket
import struct
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from support.tcp_proxy import TcpProxy

from matching.records import EventType, Side, pack_event, unpack_event
from persistence.copy_binary import (
    FILL_COLUMNS,
    ORDER_EVENT_COLUMNS,
    events_info,
    fill_batch_info,
    fills_to_copy,
    first_after,
    order_events_to_copy,
    session_ids,
)
from persistence.event_log import EventLog, EventLogGap
from persistence.pg_sink import SCHEMA_SQL, EventSink
from persistence.segment_log import SegmentLogCorrupt

SYMBOLS = ["AAPL", "MSFT", "Zürich"]
ACCOUNTS = {1: "alice", 2: "bob", 3: "désirée", 4: "x" * 32}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_700_000_000_123_456_789


def fill(tid: int, **kw: int) -> bytes:
    f = dict(type=EventType.EVT_FILL, ref=tid, seq=1000 + 2 * tid, ts=T0 + 1_001 * tid,
             session_id=1 + tid % 4, contra_session=1 + (tid + 1) % 4, symbol_id=tid % 3,
             side=Side.SIDE_BUY if tid % 3 else Side.SIDE_SELL, price=100 * (1000 + tid % 17),
             qty=1 + tid % 500, order_id=10_000 + tid, contra_order_id=20_000 + tid,
             cl_ord_id=7, contra_cl_ord_id=8, leaves=3, contra_leaves=4, recv_ts=T0)
    f.update(kw)
    return pack_event(**f)


def fills(first: int, last: int) -> bytes:
    return b"".join(fill(t) for t in range(first, last + 1))


def expected_row(rec: bytes, partition: str, accounts: Mapping[int, str | None] = ACCOUNTS) -> tuple:
    e = unpack_event(rec)
    return (partition, e["ref"], e["seq"], SYMBOLS[e["symbol_id"]], e["price"], e["qty"],
            e["contra_order_id"], accounts.get(e["contra_session"]), e["order_id"],
            accounts.get(e["session_id"]), "B" if e["side"] == Side.SIDE_BUY else "S",
            EPOCH + timedelta(microseconds=e["ts"] // 1000), e["ts"])


def records_of(data: bytes) -> list[bytes]:
    return [data[i:i + 128] for i in range(0, len(data), 128)]


async def read_fills(dsn: str, partition: str | None = None) -> list[tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        where = "" if partition is None else "WHERE partition = $1"
        args = () if partition is None else (partition,)
        rows = await conn.fetch(f"SELECT {', '.join(FILL_COLUMNS)} FROM fills {where} "
                                "ORDER BY partition, trade_id", *args)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def checkpoint(dsn: str, partition: str) -> tuple[int, int] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT last_trade_id, last_seq FROM sink_checkpoint "
                                  "WHERE partition = $1", partition)
    finally:
        await conn.close()
    return None if row is None else (row[0], row[1])


async def wait_for(pred, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- copy_binary ------------------------------------------------------------------------------

def parse_pgcopy(buf: bytes) -> list[list[bytes | None]]:
    """Independent reader of the PostgreSQL binary COPY format (docs: COPY, Binary Format)."""
    assert buf[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, ext = struct.unpack_from(">ii", buf, 11)
    assert flags == 0 and ext == 0
    pos = 19
    rows: list[list[bytes | None]] = []
    while True:
        (nf,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        if nf == -1:
            assert pos == len(buf)
            return rows
        row: list[bytes | None] = []
        for _ in range(nf):
            (ln,) = struct.unpack_from(">i", buf, pos)
            pos += 4
            if ln == -1:
                row.append(None)
            else:
                row.append(buf[pos:pos + ln])
                pos += ln
        rows.append(row)


def test_fills_to_copy_format() -> None:
    recs = fills(1, 9) + fill(10, ts=946_684_800_000_000_999, session_id=99)   # 2000-01-01 + 999 ns
    accounts = {**ACCOUNTS, 99: None}
    payload = fills_to_copy(recs, SYMBOLS, accounts, "p-é")
    rows = parse_pgcopy(payload)
    assert len(rows) == 10
    for raw, rec in zip(rows, records_of(recs), strict=True):
        e = unpack_event(rec)
        def q(b: bytes | None) -> int:
            assert b is not None
            return int(struct.unpack(">q", b)[0])
        assert len(raw) == len(FILL_COLUMNS) == 13
        assert raw[0] == "p-é".encode()
        assert [q(raw[i]) for i in (1, 2, 4, 5, 6, 8, 12)] == [
            e["ref"], e["seq"], e["price"], e["qty"], e["contra_order_id"], e["order_id"], e["ts"]]
        assert raw[3] == SYMBOLS[e["symbol_id"]].encode()
        acc = accounts.get(e["contra_session"]), accounts.get(e["session_id"])
        assert (raw[7], raw[9]) == tuple(None if a is None else a.encode() for a in acc)
        assert raw[10] == (b"B" if e["side"] == Side.SIDE_BUY else b"S")
        assert q(raw[11]) == e["ts"] // 1000 - 946_684_800_000_000
    assert rows[-1][11] == bytes(8)          # the PostgreSQL epoch itself
    assert rows[-1][9] is None
    # rows at or before a checkpoint are left out
    assert [int.from_bytes(r[1] or b"", "big") for r in parse_pgcopy(
        fills_to_copy(recs, SYMBOLS, accounts, "p", after_trade_id=7))] == [8, 9, 10]
    assert parse_pgcopy(fills_to_copy(b"", SYMBOLS, {}, "p")) == []


def test_many_sessions() -> None:
    # thousands of distinct sessions, including 0 and the largest uint32: the C map grows
    sids = [0, 2**32 - 1] + list(range(1, 3000))
    recs = b"".join(fill(t + 1, session_id=sid, contra_session=sids[-1 - t])
                    for t, sid in enumerate(sids))
    assert session_ids(recs) == set(sids)
    accounts = {sid: f"a{sid}" for sid in sids}
    rows = parse_pgcopy(fills_to_copy(recs, SYMBOLS, accounts, "p"))
    assert [(r[9], r[7]) for r in rows] == [(f"a{sid}".encode(), f"a{sids[-1 - t]}".encode())
                                           for t, sid in enumerate(sids)]


def test_fill_helpers_and_errors() -> None:
    recs = fills(5, 24)
    assert fill_batch_info(recs, 3) == (20, 5, 24, 1000 + 48)
    assert fill_batch_info(b"", 3) == (0, 0, 0, 0)
    assert [first_after(recs, t) for t in (0, 4, 5, 10, 24, 99)] == [0, 0, 1, 6, 20, 20]
    assert session_ids(recs) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="not EVT_FILL"):
        fill_batch_info(fills(1, 2) + fill(3, type=EventType.EVT_ACCEPTED), 3)
    with pytest.raises(ValueError, match="trade id"):
        fill_batch_info(fills(3, 4) + fill(2), 3)
    with pytest.raises(ValueError, match="symbol"):
        fill_batch_info(fill(1, symbol_id=3), 3)
    with pytest.raises(ValueError, match="side"):
        fill_batch_info(fill(1, side=0), 3)
    with pytest.raises(ValueError):
        fill_batch_info(b"x" * 129, 3)
    with pytest.raises(ValueError):
        fills_to_copy(fill(1, symbol_id=5), SYMBOLS, ACCOUNTS, "p")
    with pytest.raises(KeyError):
        fills_to_copy(fill(1, session_id=77), SYMBOLS, ACCOUNTS, "p")


async def test_copy_binary_round_trip(pg_dsn: str) -> None:
    recs = (fills(1, 300) + fill(301, price=2**62, qty=2**63 - 1, ts=2**63 - 1, seq=2**63 - 1)
            + fill(302, ts=0, session_id=5))
    accounts: dict[int, str | None] = {**ACCOUNTS, 5: None}
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(SCHEMA_SQL)
        await conn.copy_to_table("fills", source=memoryview(fills_to_copy(recs, SYMBOLS, accounts, "rt")),
                                 columns=list(FILL_COLUMNS), format="binary")
    finally:
        await conn.close()
    got = await read_fills(pg_dsn)
    assert got == [expected_row(r, "rt", accounts) for r in records_of(recs)]
    assert got[-1][11] == EPOCH and got[-1][9] is None


# -- order events -----------------------------------------------------------------------------

OE_TYPES = {EventType.EVT_ACCEPTED: "accepted", EventType.EVT_REJECTED: "rejected",
            EventType.EVT_CANCELED: "canceled", EventType.EVT_REPLACED: "replaced",
            EventType.EVT_TRIGGERED: "triggered"}
CYCLE = [EventType.EVT_ACCEPTED, EventType.EVT_FILL, EventType.EVT_REJECTED, EventType.EVT_CANCELED,
         EventType.EVT_FILL, EventType.EVT_REPLACED, EventType.EVT_TRIGGERED]


def event(no: int) -> bytes:
    """Event number ``no`` of a synthetic stream: every kind of order event, fills with trade
    ids increasing with the number, a reject of an unknown symbol, an invalid side."""
    t = CYCLE[no % len(CYCLE)]
    if t == EventType.EVT_FILL:
        return fill(no)
    return pack_event(type=t, seq=5000 + no, ts=T0 + 7 * no, session_id=1 + no % 4,
                      symbol_id=(no % 3) if no % 11 else 99, side=(1, 2, 0)[no % 3],
                      reason=no % 5, cl_ord_id=no * 10, order_id=0 if t == EventType.EVT_REJECTED
                      else 900 + no, price=-5 if no % 13 == 0 else 100 * no, qty=no % 9 + 1,
                      leaves=no % 4, ref=no + 77, ord_type=no % 3 + 1, tif=no % 4, recv_ts=T0)


def events(first: int, last: int) -> bytes:
    return b"".join(event(n) for n in range(first, last + 1))


def expected_event_row(no: int, partition: str) -> tuple:
    e = unpack_event(event(no))
    t = e["type"]
    return (partition, no, e["seq"], OE_TYPES[t], ACCOUNTS.get(e["session_id"]),
            e["order_id"] or None, e["cl_ord_id"],
            e["ref"] if t in (EventType.EVT_CANCELED, EventType.EVT_REPLACED) else None,
            SYMBOLS[e["symbol_id"]] if e["symbol_id"] < len(SYMBOLS) else None,
            {1: "B", 2: "S"}.get(e["side"]), e["ord_type"], e["tif"], e["price"], e["qty"],
            e["leaves"], e["ref"] if t == EventType.EVT_TRIGGERED else None, e["reason"],
            EPOCH + timedelta(microseconds=e["ts"] // 1000), e["ts"])


def is_fill(no: int) -> bool:
    return CYCLE[no % len(CYCLE)] == EventType.EVT_FILL


async def read_table(dsn: str, table: str, columns: Iterable[str], key: str) -> list[tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY partition, {key}")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


def test_order_events_to_copy_and_info() -> None:
    recs = events(1, 30)
    rows = parse_pgcopy(order_events_to_copy(recs, 1, SYMBOLS, ACCOUNTS, "p"))
    want = [n for n in range(1, 31) if not is_fill(n)]
    assert [struct.unpack(">q", r[1] or b"")[0] for r in rows] == want
    assert all(len(r) == len(ORDER_EVENT_COLUMNS) == 19 for r in rows)
    fills_n = sum(is_fill(n) for n in range(1, 31))
    last_fill = max(n for n in range(1, 31) if is_fill(n))
    assert events_info(recs) == (30, fills_n, fills_n, last_fill, 1000 + 2 * last_fill)
    assert events_info(recs, after_trade_id=last_fill - 1) == (30, fills_n, 1, last_fill,
                                                               1000 + 2 * last_fill)
    assert events_info(b"") == (0, 0, 0, 0, 0)
    # fills of a mixed batch, the others skipped
    assert [struct.unpack(">q", r[1] or b"")[0] for r in parse_pgcopy(
        fills_to_copy(recs, SYMBOLS, ACCOUNTS, "p", 0, True))] == [n for n in range(1, 31) if is_fill(n)]
    with pytest.raises(ValueError, match="not an order event"):
        events_info(recs + fill(99, type=EventType.EVT_BOOK_LEVEL))
    with pytest.raises(ValueError, match="not an order event"):
        order_events_to_copy(fill(1, type=EventType.EVT_MASS_CANCEL_DONE), 1, SYMBOLS, ACCOUNTS, "p")


async def test_order_events_round_trip(pg_dsn: str) -> None:
    recs = events(1, 200)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(SCHEMA_SQL)
        await conn.copy_to_table("order_events", source=memoryview(
            order_events_to_copy(recs, 1, SYMBOLS, ACCOUNTS, "rt")),
            columns=list(ORDER_EVENT_COLUMNS), format="binary")
    finally:
        await conn.close()
    got = await read_table(pg_dsn, "order_events", ORDER_EVENT_COLUMNS, "event_no")
    assert got == [expected_event_row(n, "rt") for n in range(1, 201) if not is_fill(n)]


# -- EventLog ---------------------------------------------------------------------------------

def test_event_log(tmp_path: Path) -> None:
    d = str(tmp_path / "ev")
    el = EventLog(d, segment_bytes=40 * 128)
    el.open()
    assert (el.start_no, el.end_no) == (1, 0) and el.read(1, 10) == (1, b"")
    assert el.append(1, events(1, 10)) == 10
    assert el.append(5, events(5, 12)) == 2                  # a replay: 5..10 skipped
    assert el.append(1, events(1, 12)) == 0
    with pytest.raises(EventLogGap):
        el.append(14, events(14, 15))
    with pytest.raises(ValueError):
        el.append(13, b"x" * 100)
    for k in range(13, 200, 7):                             # many frames, several segments
        el.append(k, events(k, k + 6))
    assert el.end_no == 201 and len(el.segments()) > 3
    for start in (1, 2, 10, 11, 12, 13, 39, 40, 41, 150, 201):
        for mx in (1, 3, 50, 500):
            first, data = el.read(start, mx)
            assert first == start and 0 < len(data) <= 128 * mx
            assert data == events(start, start + len(data) // 128 - 1)
    # reading everything in bounded steps gives every event once, in order
    got, no = b"", 1
    while no <= el.end_no:
        first, data = el.read(no, 17)
        assert first == no
        got += data
        no += len(data) // 128
    assert got == events(1, 201)
    assert el.read(203, 5) == (203, b"")
    removed = el.remove_through(100)
    assert removed and el.start_no <= 101 and el.read(el.start_no, 1)[0] == el.start_no
    first, _ = el.read(1, 5)
    assert first == el.start_no                             # removed events: the number says so
    el.close()

    again = EventLog(d, segment_bytes=40 * 128)
    again.open()
    assert (again.start_no, again.end_no) == (el.start_no, 201)
    assert again.append(150, events(150, 210)) == 9
    assert again.read(200, 20) == (200, events(200, 210))
    again.close()

    # a torn tail of the last segment is cut at the last whole frame; those events come back
    # from the journal replay through append
    last = sorted((tmp_path / "ev").glob("events-*.log"))[-1]
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(size - 100)
    torn = EventLog(d, segment_bytes=40 * 128)
    torn.open()
    assert torn.end_no < 210 and torn.append(torn.end_no + 1 - 3, events(torn.end_no - 2, 210)) > 0
    assert torn.read(205, 10) == (205, events(205, 210))
    torn.close()

    # damage in a closed segment stops the start with the file and offset
    first_seg = sorted((tmp_path / "ev").glob("events-*.log"))[0]
    with open(first_seg, "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xff")
    broken = EventLog(d, segment_bytes=40 * 128)
    with pytest.raises(SegmentLogCorrupt, match=first_seg.name):
        broken.open()


def test_event_log_empty_start_takes_any_number(tmp_path: Path) -> None:
    el = EventLog(str(tmp_path), segment_bytes=1 << 20)
    el.open()
    assert el.append(500, events(500, 510)) == 11           # e.g. enabled after a snapshot
    assert (el.start_no, el.end_no) == (500, 510)
    assert el.read(1, 5) == (500, events(500, 504))
    el.close()


# -- EventSink --------------------------------------------------------------------------------

def open_log(path: Path, segment_bytes: int = 1 << 20) -> EventLog:
    el = EventLog(str(path), segment_bytes)
    el.open()
    return el


def make_sink(dsn: str, el: EventLog, partition: str = "p1", **kw) -> EventSink:
    kw.setdefault("retry_initial_s", 0.01)
    kw.setdefault("retry_max_s", 0.1)
    kw.setdefault("poll_s", 0.05)
    return EventSink(dsn, partition, el, SYMBOLS, ACCOUNTS.get, **kw)


async def assert_tables(dsn: str, last: int, partition: str = "p1") -> None:
    fills_got = await read_table(dsn, "fills", FILL_COLUMNS, "trade_id")
    assert fills_got == [expected_row(event(n), partition) for n in range(1, last + 1) if is_fill(n)]
    got = await read_table(dsn, "order_events", ORDER_EVENT_COLUMNS, "event_no")
    assert got == [expected_event_row(n, partition) for n in range(1, last + 1) if not is_fill(n)]


async def checkpoint_no(dsn: str, partition: str = "p1") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT last_event_no FROM sink_checkpoint WHERE partition = $1",
                                       partition))
    finally:
        await conn.close()


async def test_events_land_exactly_once_and_resume(tmp_path: Path, pg_dsn: str) -> None:
    el = open_log(tmp_path, segment_bytes=64 * 128)
    sink = make_sink(pg_dsn, el, batch_rows=37)
    task = asyncio.create_task(sink.run())
    for k in range(1, 301, 20):
        el.append(k, events(k, k + 19))
        sink.notify()
        await asyncio.sleep(0)
    await wait_for(lambda: sink.last_event_no == 300)
    assert sink.lag_events == 0 and sink.errors == 0
    assert sink.rows_written == sum(is_fill(n) for n in range(1, 301))
    assert sink.order_events_written == 300 - sink.rows_written
    assert len(el.segments()) <= 2                          # committed segments deleted
    await sink.close()
    assert task.done() and task.exception() is None
    await assert_tables(pg_dsn, 300)
    # a new sink on the same log (a restart) resumes at the checkpoint: the replay's events
    # are skipped by the log, nothing lands twice
    el.append(250, events(250, 400))
    again = make_sink(pg_dsn, el, batch_rows=1000)
    assert await again.start() == 300
    await again.close(flush_timeout=10)                     # close() flushes without run()
    assert again.last_event_no == 400 and again.order_events_written + again.rows_written == 100
    await assert_tables(pg_dsn, 400)
    el.close()


async def test_checkpoint_moved_by_a_lost_commit_reply(tmp_path: Path, pg_dsn: str) -> None:
    # events 1..10 committed with their checkpoint, but this sink never heard back (as if the
    # connection dropped during COMMIT): the locked checkpoint read in the transaction decides
    el = open_log(tmp_path)
    el.append(1, events(1, 60))
    sink = make_sink(pg_dsn, el, batch_rows=25)
    await sink.start()
    data = events(1, 10)
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await conn.copy_to_table("fills", source=memoryview(fills_to_copy(
                data, SYMBOLS, ACCOUNTS, "p1", 0, True)), columns=list(FILL_COLUMNS), format="binary")
            await conn.copy_to_table("order_events", source=memoryview(order_events_to_copy(
                data, 1, SYMBOLS, ACCOUNTS, "p1")), columns=list(ORDER_EVENT_COLUMNS), format="binary")
            last_fill = max(n for n in range(1, 11) if is_fill(n))
            await conn.execute("UPDATE sink_checkpoint SET last_event_no = 10, last_trade_id = $1 "
                               "WHERE partition = 'p1'", last_fill)
    finally:
        await conn.close()
    task = asyncio.create_task(sink.run())
    await wait_for(lambda: sink.last_event_no == 60)
    assert sink.errors == 0
    await sink.close()
    assert task.exception() is None
    await assert_tables(pg_dsn, 60)


async def test_old_fills_only_tables_are_migrated(tmp_path: Path, pg_dsn: str) -> None:
    # a database written by the fills-only sink: no order_events, no last_event_no, fills in
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(SCHEMA_SQL.split("CREATE TABLE IF NOT EXISTS order_events")[0])
        await conn.execute("CREATE TABLE sink_checkpoint (partition text PRIMARY KEY, last_trade_id "
                           "bigint NOT NULL, last_seq bigint NOT NULL, updated_at timestamptz NOT "
                           "NULL DEFAULT now())")
        old = b"".join(event(n) for n in range(1, 41) if is_fill(n))
        await conn.copy_to_table("fills", source=memoryview(fills_to_copy(old, SYMBOLS, ACCOUNTS, "p1")),
                                 columns=list(FILL_COLUMNS), format="binary")
        last = unpack_event(old[-128:])
        await conn.execute("INSERT INTO sink_checkpoint VALUES ('p1', $1, $2)", last["ref"], last["seq"])
    finally:
        await conn.close()
    el = open_log(tmp_path)
    el.append(1, events(1, 80))        # the journal replay regenerates the old fills too
    sink = make_sink(pg_dsn, el)
    await sink.close(flush_timeout=10)
    assert sink.last_event_no == 80 and sink.errors == 0
    await assert_tables(pg_dsn, 80)    # no duplicate fill, every order event
    el.close()


async def test_backend_killed_mid_load(tmp_path: Path, pg_dsn: str) -> None:
    n = 30_000
    el = open_log(tmp_path, segment_bytes=256 * 1024)
    sink = make_sink(pg_dsn, el, batch_rows=1500)
    task = asyncio.create_task(sink.run())
    admin = await asyncpg.connect(pg_dsn)
    kills = 0
    try:
        pos = 1
        while pos <= n or sink.lag_events:
            if pos <= n:
                el.append(pos, events(pos, min(n, pos + 499)))
                sink.notify()
                pos += 500
            if sink.connected and sink.lag_events and kills < 6 and pos > kills * n // 8:
                kills += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            await asyncio.sleep(0.002)
            assert not task.done()
            if sink.errors > 100:
                raise AssertionError(f"sink keeps failing: {sink.last_error}")
        total, distinct, hi = await admin.fetchrow(
            "SELECT count(*), count(DISTINCT event_no), max(event_no) FROM order_events")
    finally:
        await admin.close()
    assert kills >= 3 and sink.errors >= 3
    n_fills = sum(is_fill(k) for k in range(1, n + 1))
    assert (total, distinct, hi) == (n - n_fills, n - n_fills,
                                     max(k for k in range(1, n + 1) if not is_fill(k)))
    await sink.close()
    assert task.exception() is None
    fills_got = await read_table(pg_dsn, "fills", ("trade_id",), "trade_id")
    assert [r[0] for r in fills_got] == [k for k in range(1, n + 1) if is_fill(k)]
    assert await checkpoint_no(pg_dsn) == n
    el.close()


async def test_postgres_down_comes_back_and_network_cut(tmp_path: Path, pg_dsn: str) -> None:
    u = urllib.parse.urlsplit(pg_dsn)
    port = free_port()
    proxy = TcpProxy(port, (u.hostname or "127.0.0.1", u.port or 5432))
    dsn = urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}@127.0.0.1:{port}"))
    el = open_log(tmp_path, segment_bytes=128 * 1024)
    sink = make_sink(dsn, el, batch_rows=2000, retry_initial_s=0.02, retry_max_s=0.05)
    with pytest.raises(TimeoutError):
        await sink.start(timeout=0.05)             # nothing listens yet
    task = asyncio.create_task(sink.run())
    lags = []
    for k in range(10):
        el.append(500 * k + 1, events(500 * k + 1, 500 * k + 500))   # the engine never waits
        sink.notify()
        lags.append(sink.lag_events)
        await asyncio.sleep(0.02)
    assert lags == [500 * (k + 1) for k in range(10)]
    assert sink.degraded and sink.errors >= 2 and not task.done()
    assert "refused" in (sink.last_error or "").lower()
    await proxy.start()                            # PostgreSQL "comes back": the sink catches up
    await wait_for(lambda: sink.last_event_no == 5000)
    assert not sink.degraded and sink.lag_events == 0

    cuts = 0
    for start in range(5001, 30_001, 5000):
        el.append(start, events(start, start + 4999))
        sink.notify()
        await wait_for(lambda: sink.connected and sink.lag_events > 0)
        await asyncio.sleep(0.003 * cuts)          # cut at different points of the COPY/COMMIT
        await proxy.stop()
        cuts += 1
        await asyncio.sleep(0.03)
        await proxy.start()
    await wait_for(lambda: sink.last_event_no == 30_000, timeout=30)
    await sink.close()
    await proxy.stop()
    assert task.exception() is None and sink.errors >= cuts
    await assert_tables(pg_dsn, 30_000)
    el.close()
